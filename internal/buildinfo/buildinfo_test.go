package buildinfo

import (
	"runtime"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRead(t *testing.T) {
	stamped := &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshid/meshid", Version: "v1.4.0"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"}}}
	devel := &debug.BuildInfo{Main: debug.Module{Path: "github.com/meshid/meshid", Version: "(devel)"},
		Settings: []debug.BuildSetting{{Key: "vcs.revision", Value: "def456"}}}
	for _, tt := range []struct {
		name            string
		version, commit string
		bi              *debug.BuildInfo
		want            Info
	}{
		{"ldflags win", "v2.0.0-3-gabc", "fff", stamped, Info{Version: "v2.0.0-3-gabc", Commit: "fff"}},
		{"go install at a version", "", "", &debug.BuildInfo{Main: debug.Module{Version: "v1.4.0"}}, Info{Version: "v1.4.0", Commit: "unknown"}},
		{"a dirty checkout", "", "", stamped, Info{Version: "v1.4.0", Commit: "abc123-dirty"}},
		{"go build in a checkout", "", "", devel, Info{Version: "dev", Commit: "def456"}},
		{"no build info", "", "", nil, Info{Version: "dev", Commit: "unknown"}},
	} {
		got := read(tt.version, tt.commit, tt.bi)
		if got.Version != tt.want.Version || got.Commit != tt.want.Commit || got.GoVersion != runtime.Version() || got.Platform != runtime.GOOS+"/"+runtime.GOARCH {
			t.Errorf("%s: %+v, want %s %s", tt.name, got, tt.want.Version, tt.want.Commit)
		}
	}
	if s := (Info{Version: "v1", Commit: "c", GoVersion: "go1.99", Platform: "linux/arm64"}).String(); s != "meshid v1\ncommit c\ngo     go1.99 linux/arm64\n" {
		t.Errorf("String = %q", s)
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
