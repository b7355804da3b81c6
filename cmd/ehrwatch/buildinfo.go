package main

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// build describes the running binary: the release version (set with
// -ldflags "-X main.version=…"), the VCS revision Go stamps into the
// binary, and the Go version.
type build struct {
	Version, Revision, GoVersion string
	Modified                     bool
}

func currentBuild() build {
	b := build{Version: version, Revision: "unknown", GoVersion: runtime.Version()}
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			switch s.Key {
			case "vcs.revision":
				b.Revision = s.Value
			case "vcs.modified":
				b.Modified = s.Value == "true"
			}
		}
	}
	return b
}

// String is what `ehrwatch version` prints.
func (b build) String() string {
	rev := b.Revision
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if b.Modified {
		rev += "+modified"
	}
	return fmt.Sprintf("ehrwatch %s (commit %s, %s)", b.Version, rev, b.GoVersion)
}

// buildInfoCollector is ehrwatch_build_info: always 1, labelled with the
// version, revision and Go version, so dashboards and alerts can tell
// which build each instance runs.
func buildInfoCollector() prometheus.Collector {
	b := currentBuild()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ehrwatch_build_info",
		Help: "Build of the running ehrwatch binary (always 1): version, VCS revision, Go version.",
		ConstLabels: prometheus.Labels{
			"version": b.Version, "revision": b.Revision, "goversion": b.GoVersion,
		},
	})
	g.Set(1)
	return g
}
