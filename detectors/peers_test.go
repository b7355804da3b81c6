package detectors_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
)

// TestPeerStageWaitsForEveryPartition: a facility-day is judged only once
// every source partition's watermark has passed its end, against the days
// of every partition.
func TestPeerStageWaitsForEveryPartition(t *testing.T) {
	stage, err := detectors.NewPeerStage(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Env{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	start := time.Date(2026, 2, 16, 0, 0, 0, 0, time.UTC)
	end := start.Add(24 * time.Hour)
	day := func(user string, value float64) detectors.PeerDay {
		return detectors.PeerDay{Facility: "F1", User: user, Role: "nurse", Department: "cardiology",
			Day: int32(start.Unix() / 86400), Start: start.UnixNano(), End: end.UnixNano(),
			Distinct: uint32(value), Accesses: uint32(value), Value: value}
	}
	// Partition 0: the new nurse (no history) with 70 charts, and two peers.
	stage.Add(0, detectors.PeerBatch{Days: []detectors.PeerDay{day("u-new", 70), day("p0a", 20), day("p0b", 22)}}, end.Add(time.Minute))
	// Partition 1 has not passed the day's end yet.
	stage.Add(1, detectors.PeerBatch{}, end.Add(-time.Minute))
	if fs := stage.Ready(); len(fs) != 0 || stage.Pending() != 1 {
		t.Fatalf("judged before partition 1 passed the day: %d findings, %d pending", len(fs), stage.Pending())
	}
	// Partition 1 closes the day with two more peers: four peers (≥
	// min_peers 3), median 21; 70 > 3 × 21 fires.
	stage.Add(1, detectors.PeerBatch{Days: []detectors.PeerDay{day("p1a", 20), day("p1b", 24)}}, end)
	fs := stage.Ready()
	if len(fs) != 1 || stage.Pending() != 0 {
		t.Fatalf("got %d findings, %d pending; want 1, 0", len(fs), stage.Pending())
	}
	f := fs[0]
	if got := fmt.Sprint(f.UserID, " ", f.Evidence.PeerValue, " ", f.Evidence.Facts["peers"], " ", f.Evidence.Facts["peer_group"]); got != "u-new 21 4 role_department" {
		t.Errorf("finding = %s, want u-new judged against 4 peers of both partitions (median 21)", got)
	}
}
