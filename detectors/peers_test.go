package detectors_test

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
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

// TestDeferredBreakGlassSnapshot: with DeferPeers, break_glass keeps the
// open UTC day's activity for the PeerStage; a snapshot taken in the
// middle of the day carries it, so the restored engine hands over the
// whole day.
func TestDeferredBreakGlassSnapshot(t *testing.T) {
	var factories []detectors.Factory
	for _, f := range detectors.Registry() {
		if f.Name == "break_glass" {
			factories = append(factories, f)
		}
	}
	newEngine := func() *detectors.Engine {
		e, err := detectors.NewEngine(detectors.DefaultEngineConfig(factories), factories, detectors.Env{})
		if err != nil {
			t.Fatal(err)
		}
		e.DeferPeers()
		return e
	}
	ctx := context.Background()
	day := time.Date(2026, 4, 1, 8, 0, 0, 0, time.UTC)
	ev := func(id, user string, at time.Time, bg bool) *schemas.AccessEvent {
		return &schemas.AccessEvent{EventID: id, EventTime: at, UserID: user, UserRole: "nurse",
			PatientID: "p-" + id, FacilityID: "F1", Action: schemas.ActionView, BreakGlass: bg, BreakGlassReason: "trauma bay, unconscious patient"}
	}
	a := newEngine()
	for _, e := range []*schemas.AccessEvent{ev("1", "u-a", day, true), ev("2", "u-b", day.Add(time.Hour), false)} {
		if _, err := a.Process(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	if b := a.TakePeers(); len(b.BreakGlass) != 1 || len(b.Activity) != 0 {
		t.Fatalf("before the day ends: %d break-glass findings, %d activity records; want 1, 0", len(b.BreakGlass), len(b.Activity))
	}
	var snap bytes.Buffer
	if err := a.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	b := newEngine()
	if err := b.Restore(&snap); err != nil {
		t.Fatal(err)
	}
	if _, err := b.Process(ctx, ev("3", "u-c", day.Add(24*time.Hour), false)); err != nil {
		t.Fatal(err)
	}
	got := b.TakePeers().Activity
	want := []detectors.PeerActivity{
		{User: "u-a", Role: "nurse", Day: day.Unix() / 86400, BreakGlass: 1},
		{User: "u-b", Role: "nurse", Day: day.Unix() / 86400},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("activity handed over after the restore = %v, want %v", got, want)
	}
}
