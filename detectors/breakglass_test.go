package detectors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestBreakGlassClassifyReason(t *testing.T) {
	d, err := detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), detectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		reason string
		want   detectors.ReasonClass
	}{
		{"", detectors.ReasonEmpty},
		{"   ", detectors.ReasonEmpty},
		{".", detectors.ReasonEmpty},
		{"N/A", detectors.ReasonPlaceholder},
		{"n/a.", detectors.ReasonPlaceholder},
		{"TEST", detectors.ReasonPlaceholder},
		{"asdf", detectors.ReasonPlaceholder},
		{"Emergency", detectors.ReasonPlaceholder},
		{"Security Over-ride", detectors.ReasonPlaceholder},
		{"pt care", detectors.ReasonTooShort},
		{"seizure", detectors.ReasonTooShort},
		{"Chest pain, unresponsive on arrival", detectors.ReasonSubstantive},
		{"Emergency: patient coding in bay 4", detectors.ReasonSubstantive},
	}
	for _, tc := range tests {
		if got := d.ClassifyReason(tc.reason); got != tc.want {
			t.Errorf("ClassifyReason(%q) = %s, want %s", tc.reason, got, tc.want)
		}
	}
}

func breakGlassFixture(t testing.TB) refFixture {
	return refFixture{
		users: []schemas.User{
			{UserID: "u-ed", Role: "physician", Department: "Emergency", Status: schemas.UserActive},
			{UserID: "u-crna", Role: "CRNA", Department: "Surgery", Status: schemas.UserActive},
			{UserID: "u-card", Role: "nurse", Department: "Cardiology", Status: schemas.UserActive},
		},
		patients: []schemas.Patient{{PatientID: "p-ed"}, {PatientID: "p-card"}, {PatientID: "p-none"}},
		encounters: []schemas.Encounter{
			{EncounterID: "e-ed", PatientID: "p-ed", Department: "emergency", Start: mustTime(t, "2026-03-10T13:00:00Z")},
			{EncounterID: "e-card", PatientID: "p-card", Department: "cardiology", Start: mustTime(t, "2026-03-10T13:00:00Z")},
			{EncounterID: "e-surg", PatientID: "p-ed", Department: "surgery", Start: mustTime(t, "2026-03-10T13:00:00Z")},
		},
	}
}

func TestBreakGlassSeverity(t *testing.T) {
	fx := breakGlassFixture(t)
	const good = "Unresponsive on arrival, chest pain work-up"
	bg := func(id, user, role, dept, patient, reason string) *schemas.AccessEvent {
		return with(access(id, "2026-03-10T14:00:00Z", user, role, dept, patient), func(e *schemas.AccessEvent) {
			e.BreakGlass, e.BreakGlassReason = true, reason
		})
	}
	tests := []struct {
		name string
		ev   *schemas.AccessEvent
		want schemas.Severity
	}{
		{"ED, real reason, encounter", bg("e1", "u-ed", "physician", "Emergency", "p-ed", good), schemas.SeverityLow},
		{"emergency role outside ED, encounter", bg("e2", "u-crna", "CRNA", "Surgery", "p-ed", good), schemas.SeverityLow},
		{"ED, placeholder", bg("e3", "u-ed", "physician", "Emergency", "p-ed", "n/a"), schemas.SeverityMedium},
		{"ED, real reason, no care relationship", bg("e4", "u-ed", "physician", "Emergency", "p-none", good), schemas.SeverityMedium},
		{"cardiology, real reason, encounter", bg("e5", "u-card", "nurse", "Cardiology", "p-card", good), schemas.SeverityMedium},
		{"cardiology, no care", bg("e6", "u-card", "nurse", "Cardiology", "p-none", good), schemas.SeverityHigh},
		{"cardiology, empty, no care", bg("e7", "u-card", "nurse", "Cardiology", "p-none", ""), schemas.SeverityCritical},
		{"not break-glass", access("e8", "2026-03-10T14:00:00Z", "u-card", "nurse", "Cardiology", "p-none"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d, err := detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			f := detectOne(t, d, tc.ev)
			wantFinding(t, f, tc.want)
			if f == nil {
				return
			}
			js, _ := json.Marshal(f)
			if r := tc.ev.BreakGlassReason; len(r) > 3 && bytes.Contains(bytes.ToLower(js), []byte(strings.ToLower(r))) {
				t.Errorf("finding carries the reason text: %s", js)
			}
			if f.Evidence.Facts["reason_length"] != fmt.Sprint(len(tc.ev.BreakGlassReason)) {
				t.Errorf("reason_length %q, want %d", f.Evidence.Facts["reason_length"], len(tc.ev.BreakGlassReason))
			}
		})
	}
}

// peerScenario: four ICU nurses; u1 breaks the glass once a day on six
// days, u2 once, u3 and u4 never.
func peerScenario(t testing.TB) []*schemas.AccessEvent {
	var evs []*schemas.AccessEvent
	for i, u := range []string{"u2", "u3", "u4"} {
		evs = append(evs, access(fmt.Sprint("peer", i), fmt.Sprintf("2026-04-01T0%d:00:00Z", i+1), u, "nurse", "ICU", "p0"))
	}
	evs = append(evs, with(access("peer-bg", "2026-04-01T05:00:00Z", "u2", "nurse", "ICU", "p0"), func(e *schemas.AccessEvent) {
		e.BreakGlass, e.BreakGlassReason = true, "Rapid response for desaturation"
	}))
	for k := 0; k < 6; k++ {
		evs = append(evs, with(access(fmt.Sprint("bg", k), fmt.Sprintf("2026-04-%02dT10:00:00Z", k+2), "u1", "nurse", "ICU", fmt.Sprint("p", k)), func(e *schemas.AccessEvent) {
			e.BreakGlass, e.BreakGlassReason = true, "Covering for a colleague during a code"
		}))
	}
	return evs
}

func TestBreakGlassPeerOutlier(t *testing.T) {
	d, err := detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), detectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	var outliers []string
	for _, ev := range peerScenario(t) {
		if f := detectOne(t, d, ev); f != nil && f.Evidence.Facts["peer_outlier"] == "true" {
			outliers = append(outliers, ev.EventID)
		}
	}
	// Counts 5 and 6 exceed max(peer_min_count 5, 3 × mean 1/3).
	if got := strings.Join(outliers, ","); got != "bg4,bg5" {
		t.Errorf("outliers %s, want bg4,bg5", got)
	}
}

// TestBreakGlassSnapshotRestore: stopping after any event, snapshotting
// and restoring into a fresh detector gives the same findings as an
// uninterrupted run.
func TestBreakGlassSnapshotRestore(t *testing.T) {
	evs := peerScenario(t)
	run := func(split int) string {
		d, _ := detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), detectors.Env{})
		var out []schemas.Finding
		for i, ev := range evs {
			if i == split {
				var buf bytes.Buffer
				if err := d.Snapshot(&buf); err != nil {
					t.Fatal(err)
				}
				d, _ = detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), detectors.Env{})
				if err := d.Restore(&buf); err != nil {
					t.Fatal(err)
				}
			}
			fs, err := d.Detect(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fs...)
		}
		js, _ := json.Marshal(out)
		return string(js)
	}
	want := run(-1)
	for split := 0; split <= len(evs); split++ {
		if got := run(split); got != want {
			t.Fatalf("split at %d differs:\n%s\nwant\n%s", split, got, want)
		}
	}
}

func TestBreakGlassEvictsSilentUsers(t *testing.T) {
	d, _ := detectors.NewBreakGlass(detectors.DefaultBreakGlassConfig(), detectors.Env{})
	ctx := context.Background()
	for _, ev := range peerScenario(t) {
		if _, err := d.Detect(ctx, ev); err != nil {
			t.Fatal(err)
		}
	}
	snapshotUsers := func() int {
		var buf bytes.Buffer
		if err := d.Snapshot(&buf); err != nil {
			t.Fatal(err)
		}
		var s struct{ Users []json.RawMessage }
		if err := json.Unmarshal(buf.Bytes(), &s); err != nil {
			t.Fatal(err)
		}
		return len(s.Users)
	}
	if n := snapshotUsers(); n != 4 {
		t.Fatalf("%d users tracked, want 4", n)
	}
	// u2–u4 were last seen 2026-04-01, u1 on 2026-04-07; a 30-day window
	// ending 2026-05-01 keeps only u1.
	if _, err := d.FlushUntil(ctx, mustTime(t, "2026-05-01T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if n := snapshotUsers(); n != 1 {
		t.Errorf("%d users tracked after eviction, want 1", n)
	}
	if _, err := d.FlushUntil(ctx, mustTime(t, "2026-06-01T00:00:00Z")); err != nil {
		t.Fatal(err)
	}
	if n := snapshotUsers(); n != 0 {
		t.Errorf("%d users tracked after eviction, want 0", n)
	}
}

func TestBreakGlassMaxTrackedUsers(t *testing.T) {
	cfg := detectors.DefaultBreakGlassConfig()
	cfg.MaxTrackedUsers = 1
	d, _ := detectors.NewBreakGlass(cfg, detectors.Env{})
	at := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC).Format(time.RFC3339)
	detectOne(t, d, access("a", at, "u1", "nurse", "ICU", "p1"))
	f := detectOne(t, d, with(access("b", at, "u2", "nurse", "ICU", "p1"), func(e *schemas.AccessEvent) { e.BreakGlass = true }))
	if f == nil {
		t.Fatal("untracked user's break-glass produced no finding")
	}
	if _, ok := f.Evidence.Facts["break_glass_in_window"]; ok {
		t.Error("untracked user got a peer comparison")
	}
}
