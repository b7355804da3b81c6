package detectors

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

func newBulkExportT(t testing.TB, mut func(*BulkExportConfig)) *BulkExport {
	t.Helper()
	cfg := DefaultBulkExportConfig()
	if mut != nil {
		mut(cfg)
	}
	d, err := NewBulkExport(cfg, testEnv(nil))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// prints returns n actions by user, `every` apart from start, alternating
// print/export when mixed.
func prints(user, prefix string, start time.Time, n int, every time.Duration, mixed bool) []*schemas.AccessEvent {
	var evs []*schemas.AccessEvent
	for i := range n {
		a := schemas.ActionPrint
		if mixed && i%2 == 1 {
			a = schemas.ActionExport
		}
		evs = append(evs, mkEvent(fmt.Sprintf("%s%03d", prefix, i), user, start.Add(time.Duration(i)*every),
			withAction(a), withRole("clerk", "registration")))
	}
	return evs
}

func TestBulkExportScenarios(t *testing.T) {
	t0 := time.Date(2026, 2, 17, 19, 0, 0, 0, time.UTC) // 14:00 EST
	tests := []struct {
		name   string
		events func() []*schemas.AccessEvent
		want   []string // first event id of each finding
	}{
		{
			name:   "20 prints in under 10 minutes fire once",
			events: func() []*schemas.AccessEvent { return prints("B1", "a", t0, 20, 15*time.Second, false) },
			want:   []string{"a000"},
		},
		{
			name:   "19 prints do not fire",
			events: func() []*schemas.AccessEvent { return prints("B1", "a", t0, 19, 15*time.Second, false) },
		},
		{
			name: "20 prints spanning exactly 10 minutes do not fire; 9m59s does",
			events: func() []*schemas.AccessEvent {
				evs := prints("B1", "a", t0, 19, 30*time.Second, false) // a000..a018 over 9m
				evs = append(evs, mkEvent("a019", "B1", t0.Add(10*time.Minute), withAction(schemas.ActionPrint)))
				evs = append(evs, prints("B2", "b", t0, 19, 30*time.Second, false)...)
				evs = append(evs, mkEvent("b019", "B2", t0.Add(10*time.Minute-time.Second), withAction(schemas.ActionPrint)))
				return sortEvents(evs)
			},
			want: []string{"b000"},
		},
		{
			name: "a continuing burst does not re-fire; a new burst after the window empties does",
			events: func() []*schemas.AccessEvent {
				evs := prints("B1", "a", t0, 50, 20*time.Second, false)                                                   // 16m40s of steady printing
				evs = append(evs, prints("B1", "b", t0.Add(49*20*time.Second+10*time.Minute), 20, time.Second, false)...) // exactly 10 min later
				return evs
			},
			want: []string{"a000", "b000"},
		},
		{
			name: "a gap just under the window keeps the burst going",
			events: func() []*schemas.AccessEvent {
				evs := prints("B1", "a", t0, 20, time.Second, false)
				return append(evs, prints("B1", "b", t0.Add(19*time.Second+10*time.Minute-time.Nanosecond), 20, time.Second, false)...)
			},
			want: []string{"a000"},
		},
		{
			name: "views and queries do not count",
			events: func() []*schemas.AccessEvent {
				evs := prints("B1", "a", t0, 19, time.Second, false)
				for i := range 30 {
					evs = append(evs, mkEvent(fmt.Sprintf("v%02d", i), "B1", t0.Add(time.Duration(i)*time.Second), withAction(schemas.ActionView)))
				}
				return sortEvents(evs)
			},
		},
		{
			name: "out-of-order arrivals are placed by event time",
			events: func() []*schemas.AccessEvent {
				evs := prints("B1", "a", t0, 20, 10*time.Second, false)
				slices.Reverse(evs[5:15])
				return evs
			},
			want: []string{"a000"},
		},
		{
			name: "users are independent",
			events: func() []*schemas.AccessEvent {
				return sortEvents(append(prints("B1", "a", t0, 10, time.Second, false), prints("B2", "b", t0, 20, time.Second, false)...))
			},
			want: []string{"b000"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &driver{det: newBulkExportT(t, nil), lateness: time.Minute}
			d.feed(t, tc.events()...)
			got := d.finish(t)
			var firsts []string
			for _, f := range got {
				firsts = append(firsts, f.EventIDs[0])
			}
			if !slices.Equal(firsts, tc.want) {
				t.Fatalf("findings start at %v, want %v\n%s", firsts, tc.want, findingsJSON(t, got))
			}
		})
	}
}

func TestBulkExportFinding(t *testing.T) {
	t0 := time.Date(2026, 2, 17, 19, 0, 0, 0, time.UTC)
	d := &driver{det: newBulkExportT(t, nil), lateness: time.Minute}
	d.feed(t, prints("B1", "a", t0, 25, 15*time.Second, true)...)
	got := d.finish(t)
	if len(got) != 1 {
		t.Fatalf("got %d findings", len(got))
	}
	f := got[0]
	want := "user B1 (clerk, registration) printed 10 and exported 10 patient records within 4m45s starting 2026-02-17 14:00:00 EST (threshold: 20 within 10m)"
	if f.Explanation != want {
		t.Errorf("explanation\n got %q\nwant %q", f.Explanation, want)
	}
	wantIDs := make([]string, 20)
	for i := range wantIDs {
		wantIDs[i] = fmt.Sprintf("a%03d", i)
	}
	if !slices.Equal(f.EventIDs, wantIDs) {
		t.Errorf("event ids %v", f.EventIDs)
	}
	if f.WindowStart != t0 || f.WindowEnd != t0.Add(10*time.Minute) ||
		f.FindingID != schemas.FindingID("bulk_export", []string{"B1"}, t0, t0.Add(10*time.Minute)) {
		t.Errorf("window/id: %s [%s, %s)", f.FindingID, f.WindowStart, f.WindowEnd)
	}
	if f.Severity != schemas.SeverityHigh || f.Score != 70 || // 60 + 19·(1 − 285s/600s)
		f.Evidence.Observed != 20 || f.Evidence.Threshold != 20 ||
		f.Evidence.Facts["span_seconds"] != "285" || f.Evidence.Facts["prints"] != "10" || f.Evidence.Facts["exports"] != "10" {
		t.Errorf("finding = %+v", f)
	}
	if f.PatientID != "" || f.FacilityID != facNY {
		t.Errorf("patient %q facility %q", f.PatientID, f.FacilityID)
	}
}

func TestBulkExportEvictionAndLateEvents(t *testing.T) {
	b := newBulkExportT(t, nil)
	t0 := time.Date(2026, 2, 17, 19, 0, 0, 0, time.UTC)
	d := &driver{det: b, lateness: time.Minute}
	d.feed(t, prints("B1", "a", t0, 5, time.Second, false)...)
	d.feed(t, mkEvent("other", "X", t0.Add(30*time.Minute), withAction(schemas.ActionExport)))
	if _, ok := b.users["B1"]; ok {
		t.Fatal("B1's window emptied 20 minutes ago; its state should be gone")
	}
	if _, ok := b.users["X"]; !ok {
		t.Fatal("X forgotten")
	}
	// A late event for B1, older than the watermark: starts a fresh buffer.
	d.feed(t, mkEvent("late", "B1", t0.Add(10*time.Second), withAction(schemas.ActionPrint)))
	if u := b.users["B1"]; u == nil || len(u.entries) != 1 {
		t.Fatalf("late event state = %+v", u)
	}
	if len(d.finish(t)) != 0 {
		t.Fatal("no burst here")
	}
}

func TestBulkExportSnapshotRestore(t *testing.T) {
	t0 := time.Date(2026, 2, 17, 19, 0, 0, 0, time.UTC)
	evs := slices.Concat(
		prints("B1", "a", t0, 45, 20*time.Second, true),
		prints("B2", "b", t0.Add(2*time.Minute), 20, 5*time.Second, false),
		prints("B1", "c", t0.Add(44*20*time.Second+11*time.Minute), 20, time.Second, false),
		prints("B3", "d", t0.Add(time.Hour), 20, time.Minute/2, false),
	)
	evs = sortEvents(evs)
	// Late events: one for B2 after its state was forgotten, one for B1 just
	// behind the watermark inside its second burst.
	evs = slices.Insert(evs, len(evs)-5, mkEvent("late-b", "B2", t0.Add(time.Minute), withAction(schemas.ActionPrint)))
	evs = slices.Insert(evs, 100, mkEvent("late-c", "B1", evs[99].EventTime.Add(-2*time.Minute), withAction(schemas.ActionPrint)))
	var splits []int
	for i := range len(evs) + 1 {
		splits = append(splits, i)
	}
	mk := func() snapshotter { return newBulkExportT(t, nil) }
	out := checkSnapshotEquivalence(t, mk, time.Minute, evs, splits)
	if n := strings.Count(out, "\n"); n != 4 {
		t.Fatalf("want 4 bursts (B1 twice, B2, B3), got %d:\n%s", n, out)
	}
}

func TestBulkExportConfigValidate(t *testing.T) {
	if err := DefaultBulkExportConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		mut  func(*BulkExportConfig)
		want string
	}{
		{func(c *BulkExportConfig) { c.Count = 1 }, "count: must be between 2 and 10000"},
		{func(c *BulkExportConfig) { c.Window = 0 }, "window: must be between 1s and 24h"},
		{func(c *BulkExportConfig) { c.Actions = nil }, "actions: must list at least one action"},
		{func(c *BulkExportConfig) { c.Actions = []schemas.Action{"fax"} }, "actions[0]: must be one of"},
	}
	for _, tc := range tests {
		c := DefaultBulkExportConfig()
		tc.mut(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
		if _, err := NewBulkExport(c, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "detectors.bulk_export."+tc.want) {
			t.Errorf("NewBulkExport error = %v, want it to name detectors.bulk_export.%s", err, tc.want)
		}
	}
}

// BenchmarkBulkExport: 1000 users, 1 in 10 events a print, with a flush
// per event.
func BenchmarkBulkExport(b *testing.B) {
	d, err := NewBulkExport(DefaultBulkExportConfig(), testEnv(nil))
	if err != nil {
		b.Fatal(err)
	}
	users := benchIDs("U", 1000)
	ev := mkEvent("E", "", time.Time{})
	start := time.Date(2026, 2, 2, 13, 0, 0, 0, time.UTC)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		ev.EventTime = start.Add(time.Duration(i) * 50 * time.Millisecond)
		ev.UserID = users[i%len(users)]
		ev.Action = schemas.ActionView
		if i%10 == 0 {
			ev.Action = schemas.ActionPrint
		}
		if _, err := d.Detect(ctx, ev); err != nil {
			b.Fatal(err)
		}
		if _, err := d.FlushUntil(ctx, ev.EventTime.Add(-time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}
