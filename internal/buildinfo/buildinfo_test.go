package buildinfo

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestReadTakesTheSetVersion(t *testing.T) {
	old := Version
	t.Cleanup(func() { Version = old })
	Version = "1.2.3"
	i := Read()
	if i.Version != "1.2.3" {
		t.Errorf("Version = %q, want 1.2.3", i.Version)
	}
	if i.GoVersion != runtime.Version() {
		t.Errorf("GoVersion = %q, want %q", i.GoVersion, runtime.Version())
	}
	if i.Commit == "" {
		t.Error("Commit is empty; want a revision or \"unknown\"")
	}
	Version = ""
	if v := Read().Version; v == "" {
		t.Error("an unset Version reads empty; want the module's version or dev")
	}
}

func TestCollectorExportsOneSeriesWithTheLabels(t *testing.T) {
	reg := prometheus.NewRegistry()
	reg.MustRegister(Collector(Info{Version: "1.2.3", Commit: "abc", GoVersion: "go1.99"}))
	want := `# HELP meshid_build_info Always 1; the labels are the running meshid's version, commit and Go version.
# TYPE meshid_build_info gauge
meshid_build_info{commit="abc",go_version="go1.99",version="1.2.3"} 1
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "meshid_build_info"); err != nil {
		t.Error(err)
	}
}
