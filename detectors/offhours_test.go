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

// shift describes a learned routine: `hours` consecutive local hours from
// startHour (past midnight allowed), perHour accesses each, on the days
// `on` accepts.
type shift struct {
	user, role, fac string
	from            string
	days            int
	startHour       int
	hours           int
	perHour         int
	on              func(time.Weekday) bool
}

func everyDay(time.Weekday) bool   { return true }
func weekdays(d time.Weekday) bool { return d != time.Saturday && d != time.Sunday }
func weekends(d time.Weekday) bool { return !weekdays(d) }

func (s shift) events(t testing.TB) []*schemas.AccessEvent {
	t.Helper()
	loc := testLocations(s.fac)
	if loc == nil {
		loc = time.UTC
	}
	on := s.on
	if on == nil {
		on = everyDay
	}
	var evs []*schemas.AccessEvent
	n := 0
	for _, date := range dates(s.from, s.days) {
		d0 := local(t, loc, date+" 00:00")
		if !on(d0.Weekday()) {
			continue
		}
		y, m, dd := d0.Date()
		for h := range s.hours {
			for j := range s.perHour {
				at := time.Date(y, m, dd, s.startHour+h, j*60/s.perHour, 0, 0, loc)
				n++
				evs = append(evs, mkEvent(fmt.Sprintf("%s-h%05d", s.user, n), s.user, at,
					withRole(s.role, "dept"), withFacility(s.fac), withPatient(fmt.Sprintf("PH-%s-%d", s.user, n%50))))
			}
		}
	}
	return evs
}

func newOffHoursT(t testing.TB, mut func(*OffHoursConfig), ref *windowRef) *OffHours {
	t.Helper()
	cfg := DefaultOffHoursConfig()
	if mut != nil {
		mut(cfg)
	}
	d, err := NewOffHours(cfg, testEnv(ref))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// probe is an access judged after the history.
type probe struct {
	id, user, role, fac, at string // at: facility-local "2006-01-02 15:04"
	patient                 string
}

func (p probe) event(t testing.TB) *schemas.AccessEvent {
	loc := testLocations(p.fac)
	if loc == nil {
		loc = time.UTC
	}
	role := p.role
	if role == "" {
		role = "nurse"
	}
	patient := p.patient
	if patient == "" {
		patient = "PX-" + p.id
	}
	return mkEvent(p.id, p.user, local(t, loc, p.at), withRole(role, "dept"), withFacility(p.fac), withPatient(patient))
}

var (
	dayNurse   = shift{user: "D1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 7, hours: 12, perHour: 2}
	nightNurse = shift{user: "N1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 19, hours: 12, perHour: 2}
	physician  = shift{user: "M1", role: "physician", fac: facNY, from: "2026-02-02", days: 14, startHour: 8, hours: 10, perHour: 3, on: weekdays}
)

func TestOffHoursScenarios(t *testing.T) {
	ref := &windowRef{explained: map[string]bool{"P-ENC": true}}
	tests := []struct {
		name    string
		cfg     func(*OffHoursConfig)
		history []shift
		probes  []probe
		want    []string // ids of the probes that fire, in order
	}{
		{
			name:    "day nurse at 03:00 fires, at 10:00 does not",
			history: []shift{dayNurse},
			probes:  []probe{{id: "p1", user: "D1", fac: facNY, at: "2026-02-17 10:00"}, {id: "p2", user: "D1", fac: facNY, at: "2026-02-17 03:00"}},
			want:    []string{"p2"},
		},
		{
			name:    "night-shift nurse at 03:00 does not fire; at noon does",
			history: []shift{nightNurse},
			probes:  []probe{{id: "p1", user: "N1", fac: facNY, at: "2026-02-17 03:00"}, {id: "p2", user: "N1", fac: facNY, at: "2026-02-17 12:00"}},
			want:    []string{"p2"},
		},
		{
			name:    "on-call physician at night with an encounter explaining it does not fire",
			history: []shift{physician},
			probes: []probe{
				{id: "p1", user: "M1", role: "physician", fac: facNY, at: "2026-02-17 02:10", patient: "P-ENC"},
				{id: "p2", user: "M1", role: "physician", fac: facNY, at: "2026-02-18 02:10"},
			},
			want: []string{"p2"},
		},
		{
			name:    "one hour past the usual end is smoothed away; three hours is not",
			history: []shift{dayNurse},
			probes:  []probe{{id: "p1", user: "D1", fac: facNY, at: "2026-02-17 19:20"}, {id: "p2", user: "D1", fac: facNY, at: "2026-02-17 22:20"}},
			want:    []string{"p2"},
		},
		{
			name:    "weekday-only worker on a Saturday daytime does not fire (combined profile)",
			history: []shift{physician},
			probes:  []probe{{id: "p1", user: "M1", role: "physician", fac: facNY, at: "2026-02-21 11:00"}},
		},
		{
			name:    "warm-up: too few events, never fires",
			history: []shift{{user: "W1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 9, hours: 4, perHour: 3}}, // 168 events
			probes:  []probe{{id: "p1", user: "W1", fac: facNY, at: "2026-02-17 03:00"}},
		},
		{
			name:    "warm-up: too few days, never fires",
			history: []shift{{user: "W2", role: "nurse", fac: facNY, from: "2026-02-12", days: 5, startHour: 7, hours: 12, perHour: 5}}, // 300 events in 5 days
			probes:  []probe{{id: "p1", user: "W2", fac: facNY, at: "2026-02-17 03:00"}},
		},
		{
			name: "warm-up with a role calendar: outside fires, inside does not",
			cfg: func(c *OffHoursConfig) {
				c.RoleCalendars = map[string]ShiftCalendar{"clerk": {Weekdays: []string{"mon", "tue", "wed", "thu", "fri"}, StartHour: 8, EndHour: 17}}
			},
			probes: []probe{
				{id: "p1", user: "C1", role: "clerk", fac: facNY, at: "2026-02-17 10:00"},
				{id: "p2", user: "C1", role: "clerk", fac: facNY, at: "2026-02-17 03:00"},
				{id: "p3", user: "C1", role: "clerk", fac: facNY, at: "2026-02-21 10:00"}, // Saturday
				{id: "p4", user: "C2", role: "nurse", fac: facNY, at: "2026-02-17 03:00"}, // no calendar, warm-up
			},
			want: []string{"p2", "p3"},
		},
		{
			name: "night calendar wraps midnight and belongs to its start day",
			cfg: func(c *OffHoursConfig) {
				c.UserCalendars = map[string]ShiftCalendar{"C3": {Weekdays: []string{"fri"}, StartHour: 19, EndHour: 7}}
			},
			probes: []probe{
				{id: "p1", user: "C3", fac: facNY, at: "2026-02-20 22:00"}, // Friday night
				{id: "p2", user: "C3", fac: facNY, at: "2026-02-21 03:00"}, // Saturday early: Friday's shift
				{id: "p3", user: "C3", fac: facNY, at: "2026-02-22 03:00"}, // Sunday early: Saturday not listed
			},
			want: []string{"p3"},
		},
		{
			name: "a user calendar allows learned-rare hours",
			cfg: func(c *OffHoursConfig) {
				c.UserCalendars = map[string]ShiftCalendar{"D1": {StartHour: 23, EndHour: 19}} // 23:00–19:00 daily
			},
			history: []shift{dayNurse},
			probes:  []probe{{id: "p1", user: "D1", fac: facNY, at: "2026-02-17 03:00"}, {id: "p2", user: "D1", fac: facNY, at: "2026-02-18 22:00"}},
			want:    []string{"p2"},
		},
		{
			name: "holiday judged against the weekend profile",
			cfg:  func(c *OffHoursConfig) { c.Holidays = []string{"2026-02-20"} }, // a Friday
			history: []shift{
				{user: "H1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 8, hours: 8, perHour: 2, on: weekdays},
				{user: "H1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 20, hours: 4, perHour: 4, on: weekends},
			},
			probes: []probe{{id: "p1", user: "H1", fac: facNY, at: "2026-02-19 10:00"}, {id: "p2", user: "H1", fac: facNY, at: "2026-02-20 10:00"}},
			want:   []string{"p2"},
		},
		{
			name: "holiday not configured: the same Friday is a weekday",
			history: []shift{
				{user: "H1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 8, hours: 8, perHour: 2, on: weekdays},
				{user: "H1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 20, hours: 4, perHour: 4, on: weekends},
			},
			probes: []probe{{id: "p2", user: "H1", fac: facNY, at: "2026-02-20 10:00"}},
		},
		{
			name: "two facilities, each access judged in its own local time",
			history: []shift{
				{user: "T1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 9, hours: 8, perHour: 3},
			},
			probes: []probe{
				{id: "p1", user: "T1", fac: facLA, at: "2026-02-17 10:00"}, // 13:00 in New York, 10:00 local: normal
				{id: "p2", user: "T1", fac: facLA, at: "2026-02-17 06:00"}, // 09:00 in New York, but 06:00 local
			},
			want: []string{"p2"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &driver{det: newOffHoursT(t, tc.cfg, ref)}
			var evs []*schemas.AccessEvent
			for _, s := range tc.history {
				evs = append(evs, s.events(t)...)
			}
			d.feed(t, sortEvents(evs)...)
			if len(d.out) != 0 {
				t.Fatalf("history fired: %s", findingsJSON(t, d.out))
			}
			for _, p := range tc.probes {
				d.feed(t, p.event(t))
			}
			var got []string
			for _, f := range d.out {
				got = append(got, f.EventIDs[0])
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fired %v, want %v\n%s", got, tc.want, findingsJSON(t, d.out))
			}
		})
	}
}

func TestOffHoursFinding(t *testing.T) {
	d := &driver{det: newOffHoursT(t, nil, &windowRef{})}
	d.feed(t, sortEvents(dayNurse.events(t))...)
	d.feed(t, probe{id: "p1", user: "D1", fac: facNY, at: "2026-02-17 03:12", patient: "P77"}.event(t))
	if len(d.out) != 1 {
		t.Fatalf("got %d findings", len(d.out))
	}
	f := d.out[0]
	wantExpl := "user D1 (nurse) opened a patient chart at 03:12 EST on Tuesday 2026-02-17; only 0.0% of their learned active hours fall in that hour of the day (threshold 2.0%), and no care relationship explains it"
	if f.Explanation != wantExpl {
		t.Errorf("explanation\n got %q\nwant %q", f.Explanation, wantExpl)
	}
	if f.Detector != "off_hours" || f.UserID != "D1" || f.PatientID != "P77" || f.FacilityID != facNY ||
		f.Severity != schemas.SeverityMedium || f.Score != 59 || // the top of the medium band
		!slices.Equal(f.EventIDs, []string{"p1"}) {
		t.Errorf("finding = %+v", f)
	}
	if f.WindowStart.Format(time.RFC3339) != "2026-02-17T08:00:00Z" || f.WindowEnd.Format(time.RFC3339) != "2026-02-17T09:00:00Z" {
		t.Errorf("window [%s, %s), want the local 03:00 hour", f.WindowStart, f.WindowEnd)
	}
	if f.FindingID != schemas.FindingID("off_hours", []string{"D1", facNY}, f.WindowStart, f.WindowEnd) {
		t.Error("finding id")
	}
	wantFacts := map[string]string{
		"local_time": "2026-02-17T03:12:00-05:00", "local_hour": "3", "day_type": "weekday", "time_zone": "America/New_York",
		"profile": "weekday", "learned_events": "336", "action": "view",
	}
	if fmt.Sprint(f.Evidence.Facts) != fmt.Sprint(wantFacts) {
		t.Errorf("facts = %v\nwant %v", f.Evidence.Facts, wantFacts)
	}
	if f.Evidence.Observed != 0 || f.Evidence.Threshold != 0.02 || f.Evidence.WouldExplain == "" {
		t.Errorf("evidence = %+v", f.Evidence)
	}
}

func TestOffHoursSessionDedupe(t *testing.T) {
	// An unexplained night session 02:00–03:50, one access every 10 minutes,
	// with an explained access in the middle.
	session := func(t *testing.T) []*schemas.AccessEvent {
		var evs []*schemas.AccessEvent
		start := local(t, locNY, "2026-02-17 02:00")
		for i := range 12 {
			evs = append(evs, mkEvent(fmt.Sprintf("s%02d", i), "D1", start.Add(time.Duration(i)*10*time.Minute), withRole("nurse", "dept")))
		}
		evs = append(evs, mkEvent("enc", "D1", start.Add(25*time.Minute), withRole("nurse", "dept"), withPatient("P-ENC")))
		return sortEvents(evs)
	}
	ref := &windowRef{explained: map[string]bool{"P-ENC": true}}
	tests := []struct {
		name string
		gap  time.Duration
		want []string
	}{
		{"session gap merges the night into one finding", time.Hour, []string{"s00"}},
		{"without a session gap: once per local hour", 0, []string{"s00", "s06"}},
		{"a gap shorter than the spacing splits per access, still once per hour", 5 * time.Minute, []string{"s00", "s06"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := &driver{det: newOffHoursT(t, func(c *OffHoursConfig) { c.SessionGap = tc.gap }, ref)}
			d.feed(t, sortEvents(dayNurse.events(t))...)
			d.feed(t, session(t)...)
			var got []string
			for _, f := range d.out {
				got = append(got, f.EventIDs[0])
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("fired %v, want %v", got, tc.want)
			}
		})
	}
	// A second session the next night fires again.
	d := &driver{det: newOffHoursT(t, nil, ref)}
	d.feed(t, sortEvents(dayNurse.events(t))...)
	d.feed(t, session(t)...)
	d.feed(t, mkEvent("next-night", "D1", local(t, locNY, "2026-02-18 02:30"), withRole("nurse", "dept")))
	if len(d.out) != 2 || d.out[1].EventIDs[0] != "next-night" {
		t.Fatalf("next night: %s", findingsJSON(t, d.out))
	}
}

func TestOffHoursDST(t *testing.T) {
	tests := []struct {
		name    string
		from    string
		probes  []string // UTC instants
		windows []string // expected finding windows "start/end" in UTC
		hours   []string // expected local_hour facts
	}{
		{
			name: "fall back: 01:30 EDT and 01:30 EST are two hour buckets, both local hour 1",
			from: "2026-10-18", probes: []string{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"},
			windows: []string{"2026-11-01T05:00:00Z/2026-11-01T06:00:00Z", "2026-11-01T06:00:00Z/2026-11-01T07:00:00Z"},
			hours:   []string{"1", "1"},
		},
		{
			name: "spring forward: 01:30 EST then 03:30 EDT (02:00 does not exist)",
			from: "2026-02-22", probes: []string{"2026-03-08T06:30:00Z", "2026-03-08T07:30:00Z"},
			windows: []string{"2026-03-08T06:00:00Z/2026-03-08T07:00:00Z", "2026-03-08T07:00:00Z/2026-03-08T08:00:00Z"},
			hours:   []string{"1", "3"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := newOffHoursT(t, func(c *OffHoursConfig) { c.SessionGap = 0 }, &windowRef{})
			d := &driver{det: o}
			s := dayNurse
			s.from = tc.from
			d.feed(t, sortEvents(s.events(t))...)
			for i, p := range tc.probes {
				at, _ := time.Parse(time.RFC3339, p)
				d.feed(t, mkEvent(fmt.Sprintf("p%d", i), "D1", at, withRole("nurse", "dept")))
			}
			if len(d.out) != len(tc.windows) {
				t.Fatalf("got %d findings: %s", len(d.out), findingsJSON(t, d.out))
			}
			for i, f := range d.out {
				if got := f.WindowStart.Format(time.RFC3339) + "/" + f.WindowEnd.Format(time.RFC3339); got != tc.windows[i] {
					t.Errorf("finding %d window %s, want %s", i, got, tc.windows[i])
				}
				if f.Evidence.Facts["local_hour"] != tc.hours[i] {
					t.Errorf("finding %d local hour %s, want %s", i, f.Evidence.Facts["local_hour"], tc.hours[i])
				}
			}
			// Both fall-back 01:xx accesses were learned into weekend/weekday hour 1.
			u := o.users["D1"]
			if tc.hours[0] == "1" && tc.hours[1] == "1" && u.hist[24+1] != 2*ohUnit { // 2026-11-01 is a Sunday
				t.Errorf("hour-1 weekend bucket = %d, want %d", u.hist[25], 2*ohUnit)
			}
		})
	}
	// With the default session gap the two 01:30s are one session.
	d := &driver{det: newOffHoursT(t, nil, &windowRef{})}
	s := dayNurse
	s.from = "2026-10-18"
	d.feed(t, sortEvents(s.events(t))...)
	for i, p := range []string{"2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"} {
		at, _ := time.Parse(time.RFC3339, p)
		d.feed(t, mkEvent(fmt.Sprintf("p%d", i), "D1", at, withRole("nurse", "dept")))
	}
	if len(d.out) != 1 {
		t.Fatalf("default session gap: %d findings", len(d.out))
	}
}

func TestOffHoursLearnsScheduleChange(t *testing.T) {
	o := newOffHoursT(t, func(c *OffHoursConfig) { c.SessionGap = 0 }, &windowRef{})
	d := &driver{det: o}
	days := shift{user: "S1", role: "nurse", fac: facNY, from: "2026-01-05", days: 28, startHour: 7, hours: 12, perHour: 2}
	d.feed(t, sortEvents(days.events(t))...)
	fired := func(id string) bool {
		for _, f := range d.out {
			if f.EventIDs[0] == id {
				return true
			}
		}
		return false
	}
	// First night after the switch: unusual.
	d.feed(t, mkEvent("first-night", "S1", local(t, locNY, "2026-02-02 02:30"), withRole("nurse", "dept")))
	if !fired("first-night") {
		t.Fatal("first night after days did not fire")
	}
	nights := shift{user: "S1", role: "nurse", fac: facNY, from: "2026-02-02", days: 14, startHour: 19, hours: 12, perHour: 2}
	d.feed(t, sortEvents(nights.events(t))...)
	n := len(d.out)
	d.feed(t, mkEvent("night-15", "S1", local(t, locNY, "2026-02-17 02:30"), withRole("nurse", "dept")))
	if len(d.out) != n {
		t.Fatalf("after two weeks of nights, 02:30 still fires: %s", findingsJSON(t, d.out[n:]))
	}
	// Twelve weeks of nights: the old day hours have decayed to 1/8.
	nights = shift{user: "S1", role: "nurse", fac: facNY, from: "2026-02-17", days: 70, startHour: 19, hours: 12, perHour: 2}
	d.feed(t, sortEvents(nights.events(t))...)
	d.feed(t, mkEvent("old-day-hours", "S1", local(t, locNY, "2026-04-28 11:00"), withRole("nurse", "dept")))
	if !fired("old-day-hours") {
		t.Fatalf("11:00 after twelve weeks of nights should be unusual now")
	}
}

func TestOffHoursSnapshotRestore(t *testing.T) {
	ref := &windowRef{explained: map[string]bool{"P-ENC": true}}
	var evs []*schemas.AccessEvent
	for _, s := range []shift{dayNurse, nightNurse, physician} {
		evs = append(evs, s.events(t)...)
	}
	probes := []probe{
		{id: "a", user: "D1", fac: facNY, at: "2026-02-17 03:00"}, // exactly on an hour boundary
		{id: "b", user: "D1", fac: facNY, at: "2026-02-17 03:40"},
		{id: "c", user: "D1", fac: facNY, at: "2026-02-17 04:00"}, // next hour, same session
		{id: "d", user: "M1", role: "physician", fac: facNY, at: "2026-02-17 02:00", patient: "P-ENC"},
		{id: "e", user: "M1", role: "physician", fac: facNY, at: "2026-02-18 02:00"},
		{id: "f", user: "N1", fac: facLA, at: "2026-02-18 12:00"},
		{id: "g", user: "D1", fac: facNY, at: "2026-02-19 23:59"},
		{id: "h", user: "D1", fac: facNY, at: "2026-02-20 00:00"}, // day boundary: decay step
	}
	for _, p := range probes {
		evs = append(evs, p.event(t))
	}
	evs = sortEvents(evs)
	var splits []int
	for i, ev := range evs {
		if len(ev.EventID) == 1 { // around each probe
			splits = append(splits, i, i+1)
		}
	}
	for k := 0; k < len(evs); k += 97 {
		splits = append(splits, k)
	}
	splits = append(splits, len(evs))
	for _, gap := range []time.Duration{time.Hour, 0} {
		mk := func() snapshotter { return newOffHoursT(t, func(c *OffHoursConfig) { c.SessionGap = gap }, ref) }
		out := checkSnapshotEquivalence(t, mk, 0, evs, splits)
		if n := strings.Count(out, "\n"); n < 3 {
			t.Fatalf("gap %s: scenario too quiet (%d findings):\n%s", gap, n, out)
		}
	}
}

func TestOffHoursConfigValidate(t *testing.T) {
	if err := DefaultOffHoursConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		mut  func(*OffHoursConfig)
		want string
	}{
		{func(c *OffHoursConfig) { c.MinShare = 0 }, "min_share: must be > 0 and < 1"},
		{func(c *OffHoursConfig) { c.HalfLifeDays = 0.5 }, "half_life_days: must be ≥ 1"},
		{func(c *OffHoursConfig) { c.NeighborWeight = 2 }, "neighbor_weight: must be between 0 and 1"},
		{func(c *OffHoursConfig) { c.SessionGap = -time.Second }, "session_gap: must be ≥ 0"},
		{func(c *OffHoursConfig) { c.Holidays = []string{"2026-12-25", "25/12/2026"} }, "holidays[1]: must be a date YYYY-MM-DD"},
		{func(c *OffHoursConfig) {
			c.RoleCalendars = map[string]ShiftCalendar{"clerk": {Weekdays: []string{"monday"}, StartHour: 8, EndHour: 17}}
		}, "role_calendars.clerk.weekdays[0]: must be one of"},
		{func(c *OffHoursConfig) { c.UserCalendars = map[string]ShiftCalendar{"U1": {StartHour: 8, EndHour: 8}} }, "user_calendars.U1.end_hour: must differ"},
		{func(c *OffHoursConfig) { c.UserCalendars = map[string]ShiftCalendar{"U1": {StartHour: 24, EndHour: 8}} }, "user_calendars.U1.start_hour: must be between 0 and 23"},
	}
	for _, tc := range tests {
		c := DefaultOffHoursConfig()
		tc.mut(c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Validate() = %v, want %q", err, tc.want)
		}
		if _, err := NewOffHours(c, testEnv(nil)); err == nil || !strings.Contains(err.Error(), "detectors.off_hours."+tc.want) {
			t.Errorf("NewOffHours error = %v, want it to name detectors.off_hours.%s", err, tc.want)
		}
	}
	if _, err := NewOffHours(DefaultOffHoursConfig(), Env{}); err == nil {
		t.Error("NewOffHours without a Reference must fail")
	}
}

// BenchmarkOffHours: 1000 users, one access every ~2 s of event time,
// mostly in learned hours; the rare off-hours ones consult the Reference.
func BenchmarkOffHours(b *testing.B) {
	o, err := NewOffHours(DefaultOffHoursConfig(), testEnv(&windowRef{}))
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
		ev.EventTime = start.Add(time.Duration(i) * 2160 * time.Millisecond)
		ev.UserID = users[i%len(users)]
		if _, err := o.Detect(ctx, ev); err != nil {
			b.Fatal(err)
		}
	}
}
