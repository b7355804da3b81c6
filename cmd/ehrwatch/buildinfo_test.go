package main

import (
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestBuildInfo(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(buildInfoCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "ehrwatch_build_info" {
		t.Fatalf("gathered %v", mfs)
	}
	m := mfs[0].GetMetric()[0]
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	if m.GetGauge().GetValue() != 1 || labels["version"] != version || labels["goversion"] != runtime.Version() || labels["revision"] == "" {
		t.Fatalf("ehrwatch_build_info = %v %v", m.GetGauge().GetValue(), labels)
	}
	if s := currentBuild().String(); !strings.HasPrefix(s, "ehrwatch "+version+" (commit ") || !strings.Contains(s, runtime.Version()) {
		t.Fatalf("version line %q", s)
	}
}
