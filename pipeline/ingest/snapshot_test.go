package ingest

import (
	"testing"
	"time"
)

// TestSnapshotterDue: snapshot_events and snapshot_interval both count
// on new events; while a warm-up re-reads, only the interval does (when
// set), and the first new event after one of snapshot_events or more
// snapshots the rebuilt state.
func TestSnapshotterDue(t *testing.T) {
	newSnap := func(events int, interval time.Duration, sinceLast time.Duration) *snapshotter {
		return &snapshotter{p: &Pipeline{cfg: Config{SnapshotEvents: events, SnapshotInterval: interval}}, last: time.Now().Add(-sinceLast)}
	}
	firstDue := func(s *snapshotter, warm bool, max int) int {
		for i := 1; i <= max; i++ {
			if s.due(warm) {
				return i
			}
		}
		return 0
	}
	if n := firstDue(newSnap(10, time.Hour, 0), false, 100); n != 10 {
		t.Errorf("new events: due at event %d, want 10 (snapshot_events)", n)
	}
	s := newSnap(10, time.Hour, 0)
	if n := firstDue(s, true, 5000); n != 0 {
		t.Errorf("warm-up within the interval: due at event %d, want never", n)
	}
	if !s.due(false) {
		t.Error("the first new event after a warm-up of 5 000 events: not due, want a snapshot of the rebuilt state")
	}
	if n := firstDue(newSnap(10, time.Hour, 2*time.Hour), true, 5000); n == 0 || n > 1024 {
		t.Errorf("warm-up past the interval: due at event %d, want within 1 024 events", n)
	}
	if n := firstDue(newSnap(10, 0, 0), true, 100); n != 10 {
		t.Errorf("warm-up without an interval: due at event %d, want 10 (snapshot_events)", n)
	}
	if n := firstDue(newSnap(0, time.Hour, 2*time.Hour), false, 10); n != 1 {
		t.Errorf("new events past the interval: due at event %d, want 1", n)
	}
}
