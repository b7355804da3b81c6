package detectors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // tests must not depend on the host's zoneinfo

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ---------------------------------------------------------------------------
// Shared helpers for the windowed detectors' tests (volume, bulk_export,
// off_hours).

// windowRef is a minimal Reference: users by id, and the patients whose
// accesses a care relationship explains.
type windowRef struct {
	users     map[string]*schemas.User
	explained map[string]bool // patient id → explained
}

func (r *windowRef) User(id string) (*schemas.User, bool) {
	u, ok := r.users[id]
	return u, ok
}

func (r *windowRef) Patient(string) (*schemas.Patient, bool) { return nil, false }

func (r *windowRef) Care(ev *schemas.AccessEvent) CareRelationship {
	if r.explained[ev.PatientID] {
		return CareRelationship{Explained: true, EncounterID: "E-" + ev.PatientID, Reason: "encounter E-" + ev.PatientID}
	}
	return CareRelationship{Reason: "an encounter of the patient in the user's department"}
}

// Facilities used throughout the tests.
const (
	facNY = "F-NY" // America/New_York
	facLA = "F-LA" // America/Los_Angeles
	facHV = "F-HV" // America/Havana: DST starts at local midnight
)

func mustLoc(t testing.TB, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return loc
}

var (
	locNY, _ = time.LoadLocation("America/New_York")
	locLA, _ = time.LoadLocation("America/Los_Angeles")
	locHV, _ = time.LoadLocation("America/Havana")
)

func testLocations(fac string) *time.Location {
	switch fac {
	case facNY:
		return locNY
	case facLA:
		return locLA
	case facHV:
		return locHV
	}
	return nil // UTC
}

func testEnv(ref *windowRef) Env {
	if ref == nil {
		ref = &windowRef{}
	}
	return Env{Reference: func() Reference { return ref }, Location: testLocations}
}

// local builds a facility-local time; "2026-03-04 14:05" style.
func local(t testing.TB, loc *time.Location, s string) time.Time {
	t.Helper()
	tt, err := time.ParseInLocation("2006-01-02 15:04", s, loc)
	if err != nil {
		t.Fatalf("parse %q: %v", s, err)
	}
	return tt
}

type evOpt func(*schemas.AccessEvent)

func withRole(role, dept string) evOpt {
	return func(e *schemas.AccessEvent) { e.UserRole, e.UserDepartment = role, dept }
}
func withAction(a schemas.Action) evOpt { return func(e *schemas.AccessEvent) { e.Action = a } }
func withFacility(f string) evOpt       { return func(e *schemas.AccessEvent) { e.FacilityID = f } }
func withPatient(p string) evOpt        { return func(e *schemas.AccessEvent) { e.PatientID = p } }

func mkEvent(id, user string, at time.Time, opts ...evOpt) *schemas.AccessEvent {
	ev := &schemas.AccessEvent{
		EventID: id, EventTime: at.UTC(), Source: "test", FacilityID: facNY, UserID: user,
		UserRole: "nurse", UserDepartment: "cardiology", WorkstationID: "WS1",
		PatientID: "P-" + id, Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess,
	}
	for _, o := range opts {
		o(ev)
	}
	return ev
}

// driver plays the Engine: Detect each event, then advance the watermark
// to max event time − lateness and flush.
type driver struct {
	det      Detector
	lateness time.Duration
	maxT     time.Time
	out      []schemas.Finding
}

func (d *driver) feed(t testing.TB, evs ...*schemas.AccessEvent) {
	t.Helper()
	ctx := context.Background()
	for _, ev := range evs {
		fs, err := d.det.Detect(ctx, ev)
		if err != nil {
			t.Fatalf("Detect(%s): %v", ev.EventID, err)
		}
		d.out = append(d.out, fs...)
		if ev.EventTime.After(d.maxT) {
			d.maxT = ev.EventTime
		}
		d.flush(t, d.maxT.Add(-d.lateness))
	}
}

func (d *driver) flush(t testing.TB, wm time.Time) {
	t.Helper()
	if f, ok := d.det.(WatermarkFlusher); ok {
		fs, err := f.FlushUntil(context.Background(), wm)
		if err != nil {
			t.Fatalf("FlushUntil: %v", err)
		}
		d.out = append(d.out, fs...)
	}
}

// finish flushes everything still open (end of input).
func (d *driver) finish(t testing.TB) []schemas.Finding {
	t.Helper()
	d.flush(t, d.maxT.Add(72*time.Hour))
	return d.out
}

func findingsJSON(t testing.TB, fs []schemas.Finding) string {
	t.Helper()
	var b bytes.Buffer
	for _, f := range fs {
		line, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(line)
		b.WriteByte('\n')
	}
	return b.String()
}

func sortEvents(evs []*schemas.AccessEvent) []*schemas.AccessEvent {
	slices.SortStableFunc(evs, func(a, b *schemas.AccessEvent) int { return a.EventTime.Compare(b.EventTime) })
	return evs
}

// snapshotter is what the restart tests need of a detector.
type snapshotter interface {
	Detector
	Snapshotter
}

// checkSnapshotEquivalence runs evs uninterrupted, then again split at each
// index in splits with a snapshot/restore into a fresh instance in between,
// and requires byte-identical findings. It also requires that a restored
// instance snapshots to the same bytes.
func checkSnapshotEquivalence(t *testing.T, mk func() snapshotter, lateness time.Duration, evs []*schemas.AccessEvent, splits []int) string {
	t.Helper()
	full := &driver{det: mk(), lateness: lateness}
	full.feed(t, evs...)
	want := findingsJSON(t, full.finish(t))
	for _, k := range splits {
		first := &driver{det: mk(), lateness: lateness}
		first.feed(t, evs[:k]...)
		var snap bytes.Buffer
		if err := first.det.(Snapshotter).Snapshot(&snap); err != nil {
			t.Fatalf("split %d: Snapshot: %v", k, err)
		}
		restored := mk()
		if err := restored.Restore(bytes.NewReader(snap.Bytes())); err != nil {
			t.Fatalf("split %d: Restore: %v", k, err)
		}
		var again bytes.Buffer
		if err := restored.Snapshot(&again); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(snap.Bytes(), again.Bytes()) {
			t.Fatalf("split %d: snapshot of the restored state differs from the original", k)
		}
		second := &driver{det: restored, lateness: lateness, maxT: first.maxT, out: first.out}
		second.feed(t, evs[k:]...)
		if got := findingsJSON(t, second.finish(t)); got != want {
			t.Fatalf("split %d: findings differ after restore\n got: %s\nwant: %s", k, got, want)
		}
	}
	return want
}

// ---------------------------------------------------------------------------
// Volume scenario helpers

type dayPlan struct {
	user, role, dept, fac string
	date                  string // local YYYY-MM-DD
	n                     int    // distinct patients, one access each
}

// planEvents spreads each plan's n accesses over 08:00–18:00 local.
func planEvents(t testing.TB, plans ...dayPlan) []*schemas.AccessEvent {
	t.Helper()
	var evs []*schemas.AccessEvent
	for _, p := range plans {
		loc := testLocations(p.fac)
		start := local(t, loc, p.date+" 08:00")
		for i := range p.n {
			at := start.Add(time.Duration(i) * 10 * time.Hour / time.Duration(p.n))
			id := fmt.Sprintf("%s-%s-%s-%03d", p.user, p.fac, p.date, i)
			evs = append(evs, mkEvent(id, p.user, at, withRole(p.role, p.dept), withFacility(p.fac),
				withPatient(fmt.Sprintf("P-%s-%d", p.date, i))))
		}
	}
	return evs
}

// dates returns n consecutive local dates starting at from.
func dates(from string, n int) []string {
	d, err := time.Parse(time.DateOnly, from)
	if err != nil {
		panic(err)
	}
	out := make([]string, n)
	for i := range out {
		out[i] = d.AddDate(0, 0, i).Format(time.DateOnly)
	}
	return out
}

// history plans `counts` for user on consecutive days from `from`.
func history(user, role, dept, fac, from string, counts ...int) []dayPlan {
	var out []dayPlan
	for i, d := range dates(from, len(counts)) {
		out = append(out, dayPlan{user, role, dept, fac, d, counts[i]})
	}
	return out
}

func newVolumeT(t testing.TB, mut func(*VolumeConfig), ref *windowRef) *Volume {
	t.Helper()
	cfg := DefaultVolumeConfig()
	if mut != nil {
		mut(cfg)
	}
	v, err := NewVolume(cfg, testEnv(ref))
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// cardiologyTeam: U1 plus four peers with steady history 2026-02-02..13.
func cardiologyTeam() []dayPlan {
	var p []dayPlan
	p = append(p, history("U1", "nurse", "cardiology", facNY, "2026-02-02", 20, 21, 19, 20, 22, 20, 18, 21, 20, 19)...)
	for i, base := range []int{18, 20, 20, 22} {
		c := make([]int, 10)
		for j := range c {
			c[j] = base + (j+i)%3 - 1
		}
		p = append(p, history(fmt.Sprintf("U%d", i+2), "nurse", "cardiology", facNY, "2026-02-02", c...)...)
	}
	return p
}

func peersOn(date string, counts ...int) []dayPlan {
	var p []dayPlan
	for i, c := range counts {
		p = append(p, dayPlan{fmt.Sprintf("U%d", i+2), "nurse", "cardiology", facNY, date, c})
	}
	return p
}

// ---------------------------------------------------------------------------
// Volume tests

func TestVolumeScenarios(t *testing.T) {
	type want struct {
		user, date, explanation string
		sev                     schemas.Severity
		observed                float64
		peerScope               string
	}
	tests := []struct {
		name  string
		cfg   func(*VolumeConfig)
		plans []dayPlan
		want  []want
	}{
		{
			name:  "typical spike fires against own and peer baselines",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22), []dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 60}}),
			want: []want{{user: "U1", date: "2026-02-16", sev: schemas.SeverityMedium, observed: 60, peerScope: "role_department",
				explanation: "user U1 (nurse, cardiology) opened 60 distinct patient charts on 2026-02-16; their usual is 20 ± 4 and their peers' 20"}},
		},
		{
			name:  "normal day does not fire",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22), []dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 24}}),
		},
		{
			name: "above own baseline but below self_factor × median does not fire",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 10, 10, 10, 10),
				[]dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 39}}),
		},
		{
			name: "busy day for everyone: own baseline exceeded, peers just as high",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 45, 46, 50, 47),
				[]dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 48}}),
		},
		{
			name: "warm-up: new users are compared with peers only, with the higher factor",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22), []dayPlan{
				{"U1", "nurse", "cardiology", facNY, "2026-02-16", 20},
				{"N1", "nurse", "cardiology", facNY, "2026-02-16", 64}, // > 3 × 20
				{"N2", "nurse", "cardiology", facNY, "2026-02-16", 50}, // > 2 × 20 but ≤ 3 × 20
			}),
			want: []want{{user: "N1", date: "2026-02-16", sev: schemas.SeverityMedium, observed: 64, peerScope: "role_department",
				explanation: "user N1 (nurse, cardiology) opened 64 distinct patient charts on 2026-02-16; with 0 worked days of history (too few for a personal baseline), their peers' that day is 20"}},
		},
		{
			name: "warm-up: new user without peers never fires",
			plans: []dayPlan{
				{"N1", "clerk", "registration", facNY, "2026-02-16", 64},
			},
		},
		{
			name: "history but too few days counts as warm-up",
			plans: slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22),
				history("N3", "nurse", "cardiology", facNY, "2026-02-11", 20, 20, 20),
				[]dayPlan{{"N3", "nurse", "cardiology", facNY, "2026-02-16", 55}}), // > 2×20 but ≤ 3×20
		},
		{
			name: "small department falls back to role peers across departments",
			plans: slices.Concat(
				history("C1", "nurse", "cardiology", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
				history("C2", "nurse", "cardiology", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
				[]dayPlan{
					{"C1", "nurse", "cardiology", facNY, "2026-02-09", 64},
					{"C2", "nurse", "cardiology", facNY, "2026-02-09", 20},
					{"O1", "nurse", "oncology", facNY, "2026-02-09", 22},
					{"O2", "nurse", "oncology", facNY, "2026-02-09", 18},
					{"O3", "nurse", "oncology", facNY, "2026-02-09", 20},
					{"D1", "physician", "cardiology", facNY, "2026-02-09", 200}, // other role: not a peer
				}),
			want: []want{{user: "C1", date: "2026-02-09", sev: schemas.SeverityMedium, observed: 64, peerScope: "role",
				explanation: "user C1 (nurse, cardiology) opened 64 distinct patient charts on 2026-02-09; their usual is 20 ± 4 and their peers' 20"}},
		},
		{
			name: "no peer group: personal baseline alone decides",
			plans: slices.Concat(history("S1", "coder", "him", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
				[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 64}}),
			want: []want{{user: "S1", date: "2026-02-09", sev: schemas.SeverityMedium, observed: 64, peerScope: "none",
				explanation: "user S1 (coder, him) opened 64 distinct patient charts on 2026-02-09; their usual is 20 ± 4 (no peer group large enough to compare)"}},
		},
		{
			name: "no peer group and require_peers: silent",
			cfg:  func(c *VolumeConfig) { c.RequirePeers = true },
			plans: slices.Concat(history("S1", "coder", "him", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
				[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 64}}),
		},
		{
			name: "below min_count never fires",
			cfg:  func(c *VolumeConfig) { c.MinCount = 100 },
			plans: slices.Concat(history("S1", "coder", "him", facNY, "2026-02-02", 5, 5, 5, 5, 5, 5),
				[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 64}}),
		},
		{
			name: "accesses metric",
			cfg:  func(c *VolumeConfig) { c.Metric = VolumeMetricAccesses },
			plans: slices.Concat(history("S1", "coder", "him", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
				[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 64}}),
			want: []want{{user: "S1", date: "2026-02-09", sev: schemas.SeverityMedium, observed: 64, peerScope: "none",
				explanation: "user S1 (coder, him) made 64 chart accesses on 2026-02-09; their usual is 20 ± 4 (no peer group large enough to compare)"}},
		},
		{
			name: "history older than history_days is forgotten: back to warm-up",
			plans: slices.Concat(history("S1", "coder", "him", facNY, "2026-01-02", 20, 20, 21, 19, 20, 20),
				[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 64}}),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v := newVolumeT(t, tc.cfg, nil)
			d := &driver{det: v, lateness: time.Hour}
			d.feed(t, sortEvents(planEvents(t, tc.plans...))...)
			got := d.finish(t)
			if len(got) != len(tc.want) {
				t.Fatalf("got %d findings, want %d:\n%s", len(got), len(tc.want), findingsJSON(t, got))
			}
			for i, w := range tc.want {
				f := got[i]
				if f.UserID != w.user || f.Evidence.Facts["local_date"] != w.date || f.Severity != w.sev ||
					f.Explanation != w.explanation || f.Evidence.Observed != w.observed || f.Evidence.Facts["peer_group"] != w.peerScope {
					t.Errorf("finding %d:\n got %s %s %s obs=%v peers=%s %q\nwant %s %s %s obs=%v peers=%s %q", i,
						f.UserID, f.Evidence.Facts["local_date"], f.Severity, f.Evidence.Observed, f.Evidence.Facts["peer_group"], f.Explanation,
						w.user, w.date, w.sev, w.observed, w.peerScope, w.explanation)
				}
				if f.Detector != "volume" || f.FacilityID != facNY || f.PatientID != "" || f.Suppressed {
					t.Errorf("finding %d: unexpected header %+v", i, f)
				}
				if len(f.EventIDs) != 10 || !strings.HasPrefix(f.EventIDs[0], w.user+"-"+facNY+"-"+w.date+"-000") {
					t.Errorf("finding %d: event ids %v, want the day's first 10", i, f.EventIDs)
				}
				wantID := schemas.FindingID("volume", []string{w.user, facNY}, f.WindowStart, f.WindowEnd)
				if f.FindingID != wantID {
					t.Errorf("finding id %s, want %s", f.FindingID, wantID)
				}
			}
		})
	}
}

func TestVolumeEvidenceAndSeverity(t *testing.T) {
	plans := slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22),
		[]dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 60}})
	d := &driver{det: newVolumeT(t, nil, nil), lateness: time.Hour}
	d.feed(t, sortEvents(planEvents(t, plans...))...)
	got := d.finish(t)
	if len(got) != 1 {
		t.Fatalf("got %d findings", len(got))
	}
	ev := got[0].Evidence
	// median 20; MAD 1 → 1.48, floored at √20 = 4.47; threshold max(20+3·4.47, 2·20, 2·20 peers) = 40.
	if ev.Observed != 60 || ev.Baseline != 20 || ev.Spread != 4.47 || ev.PeerValue != 20 || ev.Threshold != 40 {
		t.Errorf("evidence = %+v", ev)
	}
	if got[0].Score != 55 { // 40 + 19·log(60/20)/log(4): 3× on the 1×–4× log scale of the medium band
		t.Errorf("score = %d, want 55", got[0].Score)
	}
	for _, k := range []string{"metric", "local_date", "time_zone", "distinct_patients", "accesses", "history_days", "peer_group", "peers", "role", "department"} {
		if _, ok := ev.Facts[k]; !ok {
			t.Errorf("fact %q missing: %v", k, ev.Facts)
		}
	}
	if ev.Facts["history_days"] != "10" || ev.Facts["peers"] != "4" || ev.Facts["time_zone"] != "America/New_York" {
		t.Errorf("facts = %v", ev.Facts)
	}

	// A 212-patient day is past the exact range: the sketch estimate is
	// within a few percent, and the ratio (>10× usual) makes it critical.
	plans = slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22),
		[]dayPlan{{"U1", "nurse", "cardiology", facNY, "2026-02-16", 212}})
	d = &driver{det: newVolumeT(t, nil, nil), lateness: time.Hour}
	d.feed(t, sortEvents(planEvents(t, plans...))...)
	got = d.finish(t)
	if len(got) != 1 {
		t.Fatalf("got %d findings", len(got))
	}
	if obs := got[0].Evidence.Observed; math.Abs(obs-212) > 212*0.05 {
		t.Errorf("observed %v, want 212 ± 5%%", obs)
	}
	if got[0].Severity != schemas.SeverityCritical || got[0].Evidence.Facts["accesses"] != "212" {
		t.Errorf("severity %s, accesses %s", got[0].Severity, got[0].Evidence.Facts["accesses"])
	}
	// 100 patients: 5× the median → high.
	plans[len(plans)-1].n = 100
	d = &driver{det: newVolumeT(t, nil, nil), lateness: time.Hour}
	d.feed(t, sortEvents(planEvents(t, plans...))...)
	if got = d.finish(t); len(got) != 1 || got[0].Severity != schemas.SeverityHigh {
		t.Fatalf("100 patients: %s", findingsJSON(t, got))
	}
}

func TestVolumeLateEvents(t *testing.T) {
	v := newVolumeT(t, nil, nil)
	d := &driver{det: v, lateness: time.Hour}
	plans := slices.Concat(history("S1", "coder", "him", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
		[]dayPlan{{"S1", "coder", "him", facNY, "2026-02-09", 20}})
	d.feed(t, sortEvents(planEvents(t, plans...))...)
	// 02:00 on the 10th: watermark 01:00 closes the 9th.
	d.feed(t, mkEvent("next-1", "S1", local(t, locNY, "2026-02-10 02:00"), withRole("coder", "him")))
	if len(v.users[volKey{"S1", facNY}].open) != 1 {
		t.Fatalf("want only the 10th open")
	}
	// A late flood for the closed 9th: dropped, not counted anywhere, no finding.
	var late []*schemas.AccessEvent
	for i := range 100 {
		late = append(late, mkEvent(fmt.Sprintf("late-%d", i), "S1", local(t, locNY, "2026-02-09 23:00"), withRole("coder", "him")))
	}
	d.feed(t, late...)
	if v.LateEvents() != 100 {
		t.Errorf("LateEvents = %d, want 100", v.LateEvents())
	}
	// Older than the watermark but in a day still open (00:30 on the 10th):
	// counted.
	d.feed(t, mkEvent("next-0", "S1", local(t, locNY, "2026-02-10 00:30"), withRole("coder", "him")))
	if v.LateEvents() != 100 {
		t.Errorf("an event in an open day was dropped")
	}
	w := v.users[volKey{"S1", facNY}].open[0]
	if w.accesses != 2 || w.day.String() != "2026-02-10" {
		t.Errorf("open window = %s with %d accesses, want 2026-02-10 with 2", w.day, w.accesses)
	}
	if got := d.finish(t); len(got) != 0 {
		t.Fatalf("late events must not produce findings: %s", findingsJSON(t, got))
	}
	h := v.users[volKey{"S1", facNY}].hist
	if last := h[len(h)-1]; last.day.String() != "2026-02-10" || last.accesses != 2 {
		t.Errorf("history tail = %+v", last)
	}
	if h[len(h)-2].accesses != 20 {
		t.Errorf("closed day changed after close: %+v", h[len(h)-2])
	}
}

func TestLocalDayBounds(t *testing.T) {
	tests := []struct {
		loc        *time.Location
		date       string
		start, end string
		hours      float64
	}{
		{locNY, "2026-11-01", "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25}, // fall back
		{locNY, "2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23}, // spring forward
		{locNY, "2026-03-09", "2026-03-09T04:00:00Z", "2026-03-10T04:00:00Z", 24},
		{locLA, "2026-02-16", "2026-02-16T08:00:00Z", "2026-02-17T08:00:00Z", 24},
		{locLA, "2026-11-01", "2026-11-01T07:00:00Z", "2026-11-02T08:00:00Z", 25},
		// Havana skips 00:00–01:00 on 2026-03-08: the day starts at 01:00 CDT.
		{locHV, "2026-03-08", "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23},
		{locHV, "2026-03-07", "2026-03-07T05:00:00Z", "2026-03-08T05:00:00Z", 24},
		{mustLoc(t, "America/Santiago"), "2026-09-06", "2026-09-06T04:00:00Z", "2026-09-07T03:00:00Z", 23},
		{mustLoc(t, "Asia/Kolkata"), "2026-02-16", "2026-02-15T18:30:00Z", "2026-02-16T18:30:00Z", 24},
	}
	for _, tc := range tests {
		d, _ := parseCivilDay(tc.date)
		s, e := localDayBounds(d, tc.loc)
		if got := s.UTC().Format(time.RFC3339); got != tc.start {
			t.Errorf("%s %s: start %s, want %s", tc.loc, tc.date, got, tc.start)
		}
		if got := e.UTC().Format(time.RFC3339); got != tc.end {
			t.Errorf("%s %s: end %s, want %s", tc.loc, tc.date, got, tc.end)
		}
		if h := e.Sub(s).Hours(); h != tc.hours {
			t.Errorf("%s %s: %v hours, want %v", tc.loc, tc.date, h, tc.hours)
		}
		if civilDayOf(s.In(tc.loc)) != d || civilDayOf(e.Add(-1).In(tc.loc)) != d {
			t.Errorf("%s %s: bounds not inside the day", tc.loc, tc.date)
		}
	}
}

func TestLocalHourStart(t *testing.T) {
	for _, tc := range []struct {
		loc      *time.Location
		at, want string // UTC
	}{
		{mustLoc(t, "Asia/Kolkata"), "2026-02-16T03:20:00Z", "2026-02-16T02:30:00Z"}, // 08:50 IST → 08:00 IST
		{locNY, "2026-11-01T05:59:59Z", "2026-11-01T05:00:00Z"},                      // 01:59:59 EDT
		{locNY, "2026-11-01T06:00:00Z", "2026-11-01T06:00:00Z"},                      // 01:00 EST, the second 01:00
		{locNY, "2026-03-08T07:10:00Z", "2026-03-08T07:00:00Z"},                      // 03:10 EDT
	} {
		at, _ := time.Parse(time.RFC3339, tc.at)
		if got := localHourStart(at.In(tc.loc)).UTC().Format(time.RFC3339); got != tc.want {
			t.Errorf("%s in %s: %s, want %s", tc.at, tc.loc, got, tc.want)
		}
	}
}

func TestVolumeDST(t *testing.T) {
	tests := []struct {
		name, from, day string
		start, end      string
		extra           []string // UTC instants that belong to `day` in New York
	}{
		{
			name: "fall back: 25-hour day, 01:30 twice", from: "2026-10-22", day: "2026-11-01",
			start: "2026-11-01T04:00:00Z", end: "2026-11-02T05:00:00Z",
			// 00:10 EDT, 01:30 EDT, 01:30 EST, 23:50 EST
			extra: []string{"2026-11-01T04:10:00Z", "2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z", "2026-11-02T04:50:00Z"},
		},
		{
			name: "spring forward: 23-hour day", from: "2026-02-27", day: "2026-03-08",
			start: "2026-03-08T05:00:00Z", end: "2026-03-09T04:00:00Z",
			// 00:10 EST, 01:59 EST, 03:00 EDT, 23:50 EDT
			extra: []string{"2026-03-08T05:10:00Z", "2026-03-08T06:59:00Z", "2026-03-08T07:00:00Z", "2026-03-09T03:50:00Z"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plans := slices.Concat(history("S1", "coder", "him", facNY, tc.from, 20, 20, 21, 19, 20, 20, 20, 20, 20),
				[]dayPlan{{"S1", "coder", "him", facNY, tc.day, 60}})
			evs := planEvents(t, plans...)
			for i, s := range tc.extra {
				at, _ := time.Parse(time.RFC3339, s)
				evs = append(evs, mkEvent(fmt.Sprintf("edge-%d", i), "S1", at, withRole("coder", "him")))
			}
			// Just outside the day on both sides.
			before, _ := time.Parse(time.RFC3339, tc.start)
			after, _ := time.Parse(time.RFC3339, tc.end)
			evs = append(evs, mkEvent("before", "S1", before.Add(-time.Minute), withRole("coder", "him")),
				mkEvent("after", "S1", after, withRole("coder", "him")))
			d := &driver{det: newVolumeT(t, nil, nil), lateness: time.Hour}
			d.feed(t, sortEvents(evs)...)
			got := d.finish(t)
			if len(got) != 1 {
				t.Fatalf("got %d findings: %s", len(got), findingsJSON(t, got))
			}
			f := got[0]
			if f.WindowStart.Format(time.RFC3339) != tc.start || f.WindowEnd.Format(time.RFC3339) != tc.end {
				t.Errorf("window [%s, %s), want [%s, %s)", f.WindowStart, f.WindowEnd, tc.start, tc.end)
			}
			if f.Evidence.Observed != 64 || f.Evidence.Facts["accesses"] != "64" || f.Evidence.Facts["local_date"] != tc.day {
				t.Errorf("observed %v accesses %s date %s, want 64 / 64 / %s", f.Evidence.Observed, f.Evidence.Facts["accesses"], f.Evidence.Facts["local_date"], tc.day)
			}
		})
	}
}

func TestVolumeTwoFacilitiesTwoZones(t *testing.T) {
	// U1 works in New York and Los Angeles; each facility is its own series
	// with its own local days.
	plans := slices.Concat(
		history("U1", "nurse", "float", facNY, "2026-02-02", 20, 20, 21, 19, 20, 20),
		history("U1", "nurse", "float", facLA, "2026-02-02", 20, 20, 21, 19, 20, 20),
		[]dayPlan{{"U1", "nurse", "float", facNY, "2026-02-09", 20}, {"U1", "nurse", "float", facLA, "2026-02-09", 60}},
	)
	evs := planEvents(t, plans...)
	// 23:30 PST on the 9th is 02:30 EST on the 10th: it belongs to LA's 9th.
	evs = append(evs, mkEvent("la-late-evening", "U1", local(t, locLA, "2026-02-09 23:30"), withRole("nurse", "float"), withFacility(facLA)))
	d := &driver{det: newVolumeT(t, nil, nil), lateness: 30 * time.Minute}
	d.feed(t, sortEvents(evs)...)
	got := d.finish(t)
	if len(got) != 1 {
		t.Fatalf("got %d findings: %s", len(got), findingsJSON(t, got))
	}
	f := got[0]
	if f.FacilityID != facLA || f.WindowStart.Format(time.RFC3339) != "2026-02-09T08:00:00Z" || f.WindowEnd.Format(time.RFC3339) != "2026-02-10T08:00:00Z" {
		t.Errorf("finding %s [%s, %s)", f.FacilityID, f.WindowStart, f.WindowEnd)
	}
	if f.Evidence.Observed != 61 || f.Evidence.Facts["time_zone"] != "America/Los_Angeles" {
		t.Errorf("observed %v tz %s, want 61 in America/Los_Angeles", f.Evidence.Observed, f.Evidence.Facts["time_zone"])
	}
	if f.FindingID == schemas.FindingID("volume", []string{"U1", facNY}, f.WindowStart, f.WindowEnd) {
		t.Error("finding id must include the facility")
	}
}

func TestVolumeSnapshotRestore(t *testing.T) {
	plans := slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22), []dayPlan{
		{"U1", "nurse", "cardiology", facNY, "2026-02-16", 60},
		{"N1", "nurse", "cardiology", facNY, "2026-02-16", 64},
		{"U1", "nurse", "cardiology", facNY, "2026-02-17", 150}, // past the exact range: sketch state
	})
	evs := sortEvents(planEvents(t, plans...))
	// Put an event exactly at end-of-day + lateness so the watermark lands
	// exactly on the 16th's end, closing it at that event.
	const lateness = time.Hour
	boundary := local(t, locNY, "2026-02-17 00:00").Add(lateness)
	var bi int
	for bi = range evs {
		if evs[bi].EventTime.After(boundary) {
			break
		}
	}
	edge := mkEvent("boundary", "U3", boundary)
	evs = slices.Insert(evs, bi, edge)
	// A late event right after the boundary, for the just-closed day.
	evs = slices.Insert(evs, bi+1, mkEvent("late-after-boundary", "U2", boundary.Add(-2*time.Hour)))

	mk := func() snapshotter { return newVolumeT(t, nil, nil) }
	splits := []int{0, 1, bi, bi + 1, bi + 2, len(evs) / 3, len(evs) / 2, len(evs) - 1, len(evs)}
	for k := 0; k < len(evs); k += 37 {
		splits = append(splits, k)
	}
	out := checkSnapshotEquivalence(t, mk, lateness, evs, splits)
	if strings.Count(out, "\n") != 3 {
		t.Fatalf("scenario should produce 3 findings (U1 and N1 on the 16th, U1 on the 17th), got:\n%s", out)
	}

	// At the boundary split, the 16th is closed before the snapshot and its
	// findings are already out: the restored instance must not re-emit them.
	first := &driver{det: mk(), lateness: lateness}
	first.feed(t, evs[:bi+1]...)
	if len(first.out) != 2 {
		t.Fatalf("the boundary event should have closed the 16th (2 findings), got %d", len(first.out))
	}
}

func TestVolumeSnapshotErrors(t *testing.T) {
	v := newVolumeT(t, nil, nil)
	if err := v.Restore(strings.NewReader("garbage")); err == nil {
		t.Error("Restore(garbage) succeeded")
	}
	var b bytes.Buffer
	o, _ := NewOffHours(DefaultOffHoursConfig(), testEnv(nil))
	if err := o.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	if err := v.Restore(bytes.NewReader(b.Bytes())); err == nil || !strings.Contains(err.Error(), "off_hours") {
		t.Errorf("restoring another detector's snapshot: %v", err)
	}
	d := &driver{det: v, lateness: time.Hour}
	d.feed(t, sortEvents(planEvents(t, cardiologyTeam()...))...)
	b.Reset()
	if err := v.Snapshot(&b); err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{b.Len() / 2, b.Len() - 1} {
		if err := v.Restore(bytes.NewReader(b.Bytes()[:n])); err == nil {
			t.Errorf("truncated snapshot (%d of %d bytes) restored", n, b.Len())
		}
		if len(v.users) != 0 {
			t.Error("failed Restore left state behind")
		}
	}
	if err := v.Restore(bytes.NewReader(append(slices.Clone(b.Bytes()), 0))); err == nil {
		t.Error("snapshot with trailing data restored")
	}
}

func TestVolumeDeterministic(t *testing.T) {
	plans := slices.Concat(cardiologyTeam(), peersOn("2026-02-16", 18, 20, 20, 22), []dayPlan{
		{"U1", "nurse", "cardiology", facNY, "2026-02-16", 212},
		{"N1", "nurse", "cardiology", facNY, "2026-02-16", 64},
	})
	var outs []string
	for range 3 {
		d := &driver{det: newVolumeT(t, nil, nil), lateness: time.Hour}
		d.feed(t, sortEvents(planEvents(t, plans...))...)
		outs = append(outs, findingsJSON(t, d.finish(t)))
	}
	if outs[0] != outs[1] || outs[1] != outs[2] || strings.Count(outs[0], "\n") != 2 {
		t.Fatalf("runs differ or wrong count:\n%s", strings.Join(outs, "---\n"))
	}
}

func TestVolumeEviction(t *testing.T) {
	v := newVolumeT(t, nil, nil)
	d := &driver{det: v, lateness: time.Hour}
	d.feed(t, sortEvents(planEvents(t, history("S1", "coder", "him", facNY, "2026-02-02", 20, 20, 20, 20, 20, 20)...))...)
	// Closing the 20th: the 21st's baseline looks back to the 7th, S1 stays
	// with only that day.
	d.feed(t, mkEvent("x", "S2", local(t, locNY, "2026-02-20 09:00")), mkEvent("x2", "S2", local(t, locNY, "2026-02-21 09:00")))
	if u, ok := v.users[volKey{"S1", facNY}]; !ok || len(u.hist) != 1 || u.hist[0].day.String() != "2026-02-07" {
		t.Fatalf("S1 forgotten too early, or old days kept: %+v", u)
	}
	// Closing the 21st: S1 has nothing left within reach.
	d.feed(t, mkEvent("y", "S2", local(t, locNY, "2026-02-22 09:00")))
	if _, ok := v.users[volKey{"S1", facNY}]; ok {
		t.Error("S1, idle for more than 14 days, should be forgotten")
	}
	// The end-of-input flush (year 9999) closes everything and keeps
	// histories.
	fs, err := v.FlushUntil(context.Background(), time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC))
	if err != nil || len(fs) != 0 {
		t.Fatalf("end-of-input flush: %v %v", fs, err)
	}
	if u := v.users[volKey{"S2", facNY}]; u == nil || len(u.open) != 0 || len(u.hist) != 3 {
		t.Fatalf("after end-of-input flush S2 = %+v", u)
	}
}

func TestVolumeConfigValidate(t *testing.T) {
	if err := DefaultVolumeConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		mut  func(*VolumeConfig)
		want string
	}{
		{func(c *VolumeConfig) { c.PeerFactor = 1 }, "peer_factor: must be > 1"},
		{func(c *VolumeConfig) { c.Metric = "charts" }, "metric: must be"},
		{func(c *VolumeConfig) { c.HistoryDays = 1 }, "history_days: must be between 2 and 60"},
		{func(c *VolumeConfig) { c.MinHistoryDays = 20 }, "min_history_days: must be between 1 and history_days"},
		{func(c *VolumeConfig) { c.NewUserPeerFactor = 1.5 }, "new_user_peer_factor: must be ≥ peer_factor"},
		{func(c *VolumeConfig) { c.SampleEventIDs = 51 }, "sample_event_ids: must be between 0 and 50"},
		{func(c *VolumeConfig) { c.CriticalRatio = 2 }, "critical_ratio: must be ≥ high_ratio"},
		{func(c *VolumeConfig) { c.Severity = "urgent" }, "severity: must be one of"},
	}
	for _, tc := range tests {
		c := DefaultVolumeConfig()
		tc.mut(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
		if _, err := NewVolume(c, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "detectors.volume."+tc.want) {
			t.Errorf("NewVolume error = %v, want it to name detectors.volume.%s", err, tc.want)
		}
	}
}

// TestWindowedConfigsFromYAML decodes the three windowed detectors'
// configurations through the real loader: keys, durations, nested
// calendars, and errors named by their full key.
func TestWindowedConfigsFromYAML(t *testing.T) {
	decode := func(src string) (Configs, error) {
		var node yaml.Node
		if err := yaml.Unmarshal([]byte(src), &node); err != nil {
			t.Fatal(err)
		}
		return DecodeConfigs(&node, Registry())
	}
	cfgs, err := decode(`
volume:
  peer_factor: 2.5
  history_days: 21
  metric: accesses
bulk_export:
  window: 15m
  count: 30
  actions: [export]
off_hours:
  severity: low
  session_gap: 90m
  holidays: ["2026-12-25"]
  role_calendars:
    clerk: {weekdays: [mon, fri], start_hour: 8, end_hour: 17}
`)
	if err != nil {
		t.Fatal(err)
	}
	v := cfgs["volume"].(*VolumeConfig)
	if v.PeerFactor != 2.5 || v.HistoryDays != 21 || v.Metric != VolumeMetricAccesses || v.MinHistoryDays != 5 || !v.Enabled {
		t.Errorf("volume = %+v", v)
	}
	b := cfgs["bulk_export"].(*BulkExportConfig)
	if b.Window != 15*time.Minute || b.Count != 30 || !slices.Equal(b.Actions, []schemas.Action{schemas.ActionExport}) {
		t.Errorf("bulk_export = %+v", b)
	}
	o := cfgs["off_hours"].(*OffHoursConfig)
	if o.Severity != schemas.SeverityLow || o.SessionGap != 90*time.Minute || o.RoleCalendars["clerk"].EndHour != 17 ||
		!slices.Equal(o.RoleCalendars["clerk"].Weekdays, []string{"mon", "fri"}) || o.MinShare != 0.02 {
		t.Errorf("off_hours = %+v", o)
	}
	for src, want := range map[string]string{
		"volume:\n  peer_factor: 1\n":                                           "detectors.volume.peer_factor: must be > 1",
		"volume:\n  peer_factr: 2\n":                                            "detectors.volume.peer_factr",
		"bulk_export:\n  window: 0s\n":                                          "detectors.bulk_export.window: must be between 1s and 24h",
		"off_hours:\n  user_calendars:\n    U1: {start_hour: 8, end_hour: 8}\n": "detectors.off_hours.user_calendars.U1.end_hour: must differ",
	} {
		if _, err := decode(src); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want %q", src, err, want)
		}
	}
}

func TestPatientSetAccuracy(t *testing.T) {
	for _, n := range []int{1, 10, 64, 65, 100, 212, 1000, 5000} {
		var p patientSet
		for i := range n {
			p.add(hashID(fmt.Sprintf("P%07d", i)))
			p.add(hashID(fmt.Sprintf("P%07d", i))) // repeats do not count
		}
		got := float64(p.count())
		if n <= distinctExactMax && got != float64(n) {
			t.Errorf("n=%d: exact mode counted %v", n, got)
		}
		if math.Abs(got-float64(n)) > 0.06*float64(n) {
			t.Errorf("n=%d: estimate %v off by more than 6%%", n, got)
		}
		if len(p.words) > distinctExactMax {
			t.Errorf("n=%d: %d words, want ≤ %d", n, len(p.words), distinctExactMax)
		}
	}
}

func TestMedianHelpers(t *testing.T) {
	xs := []float64{5, 1, 3, 2, 4, 100}
	med, mad, _ := medianMAD(xs, nil)
	if med != 3.5 || mad != 1.5 {
		t.Errorf("median %v mad %v, want 3.5 1.5", med, mad)
	}
	sorted := []float64{1, 2, 3, 4, 5}
	for v, want := range map[float64]float64{1: 3.5, 3: 3, 5: 2.5} {
		if got := medianWithout(sorted, v); got != want {
			t.Errorf("medianWithout(%v) = %v, want %v", v, got, want)
		}
	}
}

// ---------------------------------------------------------------------------
// Benchmarks

// BenchmarkVolume measures the hot path: 1000 users × 40 patients per day
// with a flush per event as the Engine does.
func BenchmarkVolume(b *testing.B) {
	v, err := NewVolume(DefaultVolumeConfig(), testEnv(nil))
	if err != nil {
		b.Fatal(err)
	}
	users, patients := benchIDs("U", 1000), benchIDs("P", 40)
	ev := mkEvent("E", "", time.Time{})
	start := time.Date(2026, 2, 2, 13, 0, 0, 0, time.UTC)
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		// 40 000 events per simulated day, ~2 s apart.
		ev.EventTime = start.Add(time.Duration(i) * 2160 * time.Millisecond)
		ev.UserID = users[i%len(users)]
		ev.PatientID = patients[(i/len(users))%len(patients)]
		if _, err := v.Detect(ctx, ev); err != nil {
			b.Fatal(err)
		}
		if _, err := v.FlushUntil(ctx, ev.EventTime.Add(-time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
}

func benchIDs(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s%06d", prefix, i)
	}
	return out
}

// heapInUse returns the live heap after a full GC.
func heapInUse() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkStateMemory builds the state of 100 000 active users — 14 days of
// volume history, an open day with 30 distinct patients and its sample ids,
// and an off_hours histogram — and reports the bytes each user costs. The
// bulk_export figure is per user mid-burst (only users printing have state).
func BenchmarkStateMemory(b *testing.B) {
	const users = 100_000
	ids := benchIDs("U", users)
	patients := benchIDs("P", 30)
	ctx := context.Background()
	day0 := time.Date(2026, 2, 2, 14, 0, 0, 0, time.UTC)
	for range b.N {
		before := heapInUse()
		v, _ := NewVolume(DefaultVolumeConfig(), testEnv(nil))
		ev := mkEvent("E", "", time.Time{})
		for d := range 14 {
			for _, u := range ids {
				ev.UserID, ev.EventTime, ev.PatientID = u, day0.AddDate(0, 0, d), patients[0]
				v.Detect(ctx, ev)
			}
			v.FlushUntil(ctx, day0.AddDate(0, 0, d+1))
		}
		for p := range patients {
			for _, u := range ids {
				ev.UserID, ev.EventTime, ev.PatientID = u, day0.AddDate(0, 0, 14).Add(time.Duration(p)*time.Minute), patients[p]
				ev.EventID = u + "-" + patients[p] + "-0123456789abcdef" // ~36-byte ids
				v.Detect(ctx, ev)
			}
		}
		afterVolume := heapInUse()

		o, _ := NewOffHours(DefaultOffHoursConfig(), testEnv(nil))
		for _, u := range ids {
			ev.UserID, ev.EventTime = u, day0
			o.Detect(ctx, ev)
		}
		afterOff := heapInUse()

		bx, _ := NewBulkExport(DefaultBulkExportConfig(), testEnv(nil))
		ev.Action = schemas.ActionPrint
		for k := range 19 {
			for _, u := range ids[:users/10] {
				ev.UserID, ev.EventTime, ev.EventID = u, day0.Add(time.Duration(k)*time.Second), u+"-print-0123456789abcdef"
				bx.Detect(ctx, ev)
			}
		}
		afterBulk := heapInUse()

		volPer := float64(afterVolume-before) / users
		offPer := float64(afterOff-afterVolume) / users
		bulkPer := float64(afterBulk-afterOff) / (users / 10)
		b.ReportMetric(volPer, "volume-B/user")
		b.ReportMetric(offPer, "offhours-B/user")
		b.ReportMetric(bulkPer, "bulk-B/printing-user")
		b.ReportMetric(volPer+offPer, "B/active-user")
		runtime.KeepAlive(v)
		runtime.KeepAlive(o)
		runtime.KeepAlive(bx)
	}
}
