// Package buildinfo says which meshid this is: its version, the commit it
// was built from and the Go toolchain that built it. It owns nothing else;
// `meshid version` prints it and the daemon exports it as
// meshid_build_info.
//
// Where each comes from, first that has it:
//   - Version: -ldflags "-X github.com/meshid/meshid/internal/buildinfo.Version=..."
//     (make build and make dist set `git describe`); else the module
//     version Go records when it builds meshid as a module at a version
//     (go install github.com/meshid/meshid/cmd/meshid@v1.2.3); else "dev".
//   - Commit: -X ...buildinfo.Commit=...; else the VCS stamp Go writes into
//     binaries built inside a checkout ("-dirty" when the tree had
//     changes); else "unknown" (a module build has none).
//   - GoVersion: the toolchain's, always known.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version and Commit are set at link time (-ldflags -X); empty means "ask
// the build info" (see the package comment).
var (
	Version string
	Commit  string
)

// Info is one build's description.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
	Platform  string `json:"platform"` // GOOS/GOARCH
}

// Read returns this binary's build description.
func Read() Info {
	bi, _ := debug.ReadBuildInfo()
	return read(Version, Commit, bi)
}

func read(version, commit string, bi *debug.BuildInfo) Info {
	info := Info{Version: version, Commit: commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi != nil {
		if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			info.Version = bi.Main.Version
		}
		if info.Commit == "" {
			info.Commit = vcsCommit(bi)
		}
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	if info.Commit == "" {
		info.Commit = "unknown"
	}
	return info
}

func vcsCommit(bi *debug.BuildInfo) string {
	var revision, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision != "" && modified == "true" {
		return revision + "-dirty"
	}
	return revision
}

// String is what `meshid version` prints.
func (i Info) String() string {
	return fmt.Sprintf("meshid %s\ncommit %s\ngo     %s %s\n", i.Version, i.Commit, i.GoVersion, i.Platform)
}

// Collector is meshid_build_info: always 1, its labels say which build
// runs, so that a dashboard can join any series with the version behind it.
func Collector(i Info) prometheus.Collector {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "meshid_build_info",
		Help:        "Always 1; the labels are the running meshid's version, commit and Go version.",
		ConstLabels: prometheus.Labels{"version": i.Version, "commit": i.Commit, "go_version": i.GoVersion},
	})
	g.Set(1)
	return g
}
