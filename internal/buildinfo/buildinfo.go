// Package buildinfo says which meshid this is: the version the build was
// given, the commit it was built from and the Go toolchain that built it.
// It owns nothing else; cmd/meshid sets Version, and the daemon exports
// all three as meshid_build_info.
package buildinfo

import (
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Version is meshid's version as the build set it (cmd/meshid copies its
// -ldflags "-X main.version=..." here at start); empty reads as the
// module's version, or "dev".
var Version string

// Info is one build's description.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"` // "unknown" when built without VCS information
	GoVersion string `json:"go_version"`
}

// Read returns this binary's build description. The commit comes from the
// VCS stamp Go writes into binaries built inside a checkout (with
// "-dirty" when the tree had changes), so no build flag is needed for it.
func Read() Info {
	info := Info{Version: Version, Commit: "unknown", GoVersion: runtime.Version()}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		if info.Version == "" {
			info.Version = "dev"
		}
		return info
	}
	if info.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}
	if info.Version == "" {
		info.Version = "dev"
	}
	var revision, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	if revision != "" {
		info.Commit = revision
		if modified == "true" {
			info.Commit += "-dirty"
		}
	}
	return info
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
