package main

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehrwatch/ehrwatch/detectors"
)

func TestPeersConfigValidate(t *testing.T) {
	if err := DefaultPeersConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := PeersConfig{Mode: "cluster", StallAfter: -time.Second}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad mode and stall_after accepted")
	}
	for _, want := range []string{"mode", "stall_after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	c = PeersConfig{Mode: "group", StallAfter: time.Minute}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "topic") {
		t.Errorf("mode group without a topic: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Peers.Mode = "bogus"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "peers.mode") {
		t.Errorf("Config.Validate: %v, want an error naming peers.mode", err)
	}
}

// TestPeerJudgeNamesTheSlowPartitions: with a day waiting and the slowest
// watermark unmoved for stall_after, /readyz's detail names the partitions
// holding it back (here one that never handed anything over).
func TestPeerJudgeNamesTheSlowPartitions(t *testing.T) {
	stage, err := detectors.NewPeerStage(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Env{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 10, 26, 0, 0, 0, 0, time.UTC)
	stage.Add(0, detectors.PeerBatch{Days: []detectors.PeerDay{{Facility: "f", User: "u1", Day: int32(day.Unix() / 86400),
		Start: day.UnixNano(), End: day.Add(24 * time.Hour).UnixNano(), Distinct: 30, Accesses: 30, Value: 30}}}, day.Add(25*time.Hour))
	if fs := stage.Ready(); len(fs) != 0 || stage.Pending() == 0 {
		t.Fatalf("judged %d findings with partition 1 silent; pending %d", len(fs), stage.Pending())
	}
	m, err := newPeerMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	j := &peerJudge{cfg: PeersConfig{StallAfter: 30 * time.Minute}, metrics: m, names: []string{"ehr/0", "ehr/1"},
		stage: stage, wms: []time.Time{day.Add(25 * time.Hour), {}}, movedAt: time.Now()}
	if d := j.detail(); d != "" {
		t.Errorf("detail %q before stall_after", d)
	}
	j.movedAt = time.Now().Add(-time.Hour)
	d := j.detail()
	if !strings.Contains(d, "ehr/1") || strings.Contains(d, "ehr/0") {
		t.Errorf("detail %q, want it to name ehr/1 only", d)
	}
}
