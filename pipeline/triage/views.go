package triage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ReferenceCounts are the rows in the reference tables the reports join
// (the API's ClickHouse user may not read the patients table).
type ReferenceCounts struct {
	Users      uint64 `json:"users"`
	Encounters uint64 `json:"encounters"`
}

// NoCare reports whether no care relationship can explain an access: the
// encounters table (whose care teams and departments explain accesses) is
// empty.
func (c ReferenceCounts) NoCare() bool { return c.Encounters == 0 }

// ReferenceCounts counts the rows of users and encounters.
func (s *Store) ReferenceCounts(ctx context.Context) (ReferenceCounts, error) {
	var c ReferenceCounts
	if err := s.conn.QueryRow(ctx, `SELECT (SELECT count() FROM users), (SELECT count() FROM encounters)`).
		Scan(&c.Users, &c.Encounters); err != nil {
		return ReferenceCounts{}, fmt.Errorf("count reference rows: %w", err)
	}
	return c, nil
}

// UserAccessSummary is one user's accesses in a patient access report.
type UserAccessSummary struct {
	UserID      string    `json:"user_id"`
	UserName    string    `json:"user_name"`
	Role        string    `json:"role"`
	Department  string    `json:"department"`
	Accesses    int       `json:"accesses"`
	Explained   int       `json:"explained"`
	Unexplained int       `json:"unexplained"`
	BreakGlass  int       `json:"break_glass"`
	Flagged     int       `json:"flagged"`
	First       time.Time `json:"first"`
	Last        time.Time `json:"last"`
	// By counts the explanations ("care_team", "department",
	// "unexplained").
	By map[string]int `json:"by"`
	// Days are the accesses per UTC day of the report's range, for the
	// per-user timeline; Days[0] is the day of From.
	Days []DayCount `json:"days"`
}

// DayCount is one day of a user's timeline.
type DayCount struct {
	Explained   int  `json:"explained"`
	Unexplained int  `json:"unexplained"`
	BreakGlass  bool `json:"break_glass,omitempty"`
}

// AccessSummary sums a patient access report by user.
type AccessSummary struct {
	Accesses    int                 `json:"accesses"`
	Explained   int                 `json:"explained"`
	Unexplained int                 `json:"unexplained"`
	BreakGlass  int                 `json:"break_glass"`
	Users       []UserAccessSummary `json:"users"`
	// DayStart is the first day of the timelines (From, truncated to a
	// UTC day); NumDays their length.
	DayStart time.Time `json:"day_start"`
	NumDays  int       `json:"num_days"`
}

// maxTimelineDays bounds the timeline; longer ranges are cut at the end.
const maxTimelineDays = 400

// Summarize sums the report's rows by user, most unexplained first (then
// most accesses, then user id).
func (r *Report) Summarize() AccessSummary {
	start := r.From.UTC().Truncate(24 * time.Hour)
	days := int(r.To.Sub(start)/(24*time.Hour)) + 1
	if r.To.Sub(start)%(24*time.Hour) == 0 {
		days--
	}
	days = max(1, min(days, maxTimelineDays))
	sum := AccessSummary{DayStart: start, NumDays: days, Users: []UserAccessSummary{}}
	idx := map[string]int{}
	for _, row := range r.Rows {
		i, ok := idx[row.UserID]
		if !ok {
			i = len(sum.Users)
			idx[row.UserID] = i
			sum.Users = append(sum.Users, UserAccessSummary{UserID: row.UserID, UserName: row.UserName, Role: row.UserRole,
				Department: row.UserDepartment, First: row.Time, By: map[string]int{}, Days: make([]DayCount, days)})
		}
		u := &sum.Users[i]
		u.Accesses++
		sum.Accesses++
		by := "unexplained"
		if row.Care.Explained {
			u.Explained++
			sum.Explained++
			by = row.Care.By
		} else {
			u.Unexplained++
			sum.Unexplained++
		}
		u.By[by]++
		if row.BreakGlass {
			u.BreakGlass++
			sum.BreakGlass++
		}
		if len(row.Findings) > 0 {
			u.Flagged++
		}
		u.First, u.Last = minTime(u.First, row.Time), maxTime(u.Last, row.Time)
		if d := int(row.Time.Sub(start) / (24 * time.Hour)); d >= 0 && d < days {
			if row.Care.Explained {
				u.Days[d].Explained++
			} else {
				u.Days[d].Unexplained++
			}
			u.Days[d].BreakGlass = u.Days[d].BreakGlass || row.BreakGlass
		}
	}
	slices.SortStableFunc(sum.Users, func(a, b UserAccessSummary) int {
		if a.Unexplained != b.Unexplained {
			return b.Unexplained - a.Unexplained
		}
		if a.Accesses != b.Accesses {
			return b.Accesses - a.Accesses
		}
		return strings.Compare(a.UserID, b.UserID)
	})
	return sum
}

// Disclosure is one line of an accounting of disclosures (HIPAA §164.528
// style): when, who (name, role, department), what, and the purpose where
// ehrwatch knows it.
type Disclosure struct {
	Time       time.Time `json:"time"`
	LocalTime  string    `json:"local_time,omitempty"`
	UserID     string    `json:"user_id"`
	UserName   string    `json:"user_name"`
	Role       string    `json:"role"`
	Department string    `json:"department"`
	Action     string    `json:"action"`
	Resource   string    `json:"resource,omitempty"`
	Purpose    string    `json:"purpose"`
	BreakGlass bool      `json:"break_glass,omitempty"`
}

// Disclosures lists the report's rows as an accounting of disclosures.
// The purpose is the break-glass reason, else the care relationship that
// explains the access, else the encounter the EHR logged, else "not
// documented".
func (r *Report) Disclosures() []Disclosure {
	out := make([]Disclosure, 0, len(r.Rows))
	for _, row := range r.Rows {
		d := Disclosure{Time: row.Time, LocalTime: row.LocalTime, UserID: row.UserID, UserName: row.UserName, Role: row.UserRole,
			Department: row.UserDepartment, Action: row.Action, Resource: row.Resource, BreakGlass: row.BreakGlass}
		switch {
		case row.BreakGlass && row.BreakGlassReason != "":
			d.Purpose = "Emergency access (break-glass): " + row.BreakGlassReason
		case row.BreakGlass:
			d.Purpose = "Emergency access (break-glass), no reason given"
		case row.Care.Explained:
			d.Purpose = "Treatment: " + row.Care.Explanation()
		case row.EncounterID != "":
			d.Purpose = "Logged against encounter " + row.EncounterID
		default:
			d.Purpose = "Not documented"
		}
		out = append(out, d)
	}
	return out
}

// PatientAccessSummary is one patient in a user activity report.
type PatientAccessSummary struct {
	PatientID   string    `json:"patient_id"`
	Accesses    int       `json:"accesses"`
	Explained   int       `json:"explained"`
	Unexplained int       `json:"unexplained"`
	BreakGlass  int       `json:"break_glass"`
	Flagged     int       `json:"flagged"`
	Last        time.Time `json:"last"`
	// Explanations are the distinct explanations of the accesses
	// (Care.Explanation), in first-seen order.
	Explanations []string `json:"explanations"`
}

// ByPatient sums a user activity report by patient, most unexplained
// first.
func (r *Report) ByPatient() []PatientAccessSummary {
	idx := map[string]int{}
	out := []PatientAccessSummary{}
	for _, row := range r.Rows {
		i, ok := idx[row.PatientID]
		if !ok {
			i = len(out)
			idx[row.PatientID] = i
			out = append(out, PatientAccessSummary{PatientID: row.PatientID})
		}
		p := &out[i]
		p.Accesses++
		if row.Care.Explained {
			p.Explained++
		} else {
			p.Unexplained++
		}
		if row.BreakGlass {
			p.BreakGlass++
		}
		if len(row.Findings) > 0 {
			p.Flagged++
		}
		p.Last = maxTime(p.Last, row.Time)
		if ex := row.Care.Explanation(); !slices.Contains(p.Explanations, ex) {
			p.Explanations = append(p.Explanations, ex)
		}
	}
	slices.SortStableFunc(out, func(a, b PatientAccessSummary) int {
		if a.Unexplained != b.Unexplained {
			return b.Unexplained - a.Unexplained
		}
		if a.Accesses != b.Accesses {
			return b.Accesses - a.Accesses
		}
		return strings.Compare(a.PatientID, b.PatientID)
	})
	return out
}

// Heatmap is a user's accesses by local day of week (Monday first) and
// hour of day, in a period and in the baseline before it.
type Heatmap struct {
	UserID string    `json:"user_id"`
	From   time.Time `json:"from"`
	To     time.Time `json:"to"`
	// BaselineFrom is From minus the baseline length; the baseline is
	// [BaselineFrom, From).
	BaselineFrom time.Time `json:"baseline_from"`
	// Period counts the accesses in [From, To).
	Period [7][24]int `json:"period"`
	// Baseline is the mean accesses per week in the baseline.
	Baseline [7][24]float64 `json:"baseline"`
	// PeriodTotal and BaselineTotal count accesses (the baseline's total,
	// not its weekly mean).
	PeriodTotal   int `json:"period_total"`
	BaselineTotal int `json:"baseline_total"`
	// TimeZone names the zone the hours are in ("UTC" when the facilities'
	// zones are unknown; mixed facilities each use their own).
	TimeZone string `json:"time_zone"`
}

// UserHeatmap counts userID's accesses per local hour of week in [from, to)
// and in the baselineDays before from (default 28), from access_events.
func (s *Store) UserHeatmap(ctx context.Context, userID string, from, to time.Time, baselineDays int) (Heatmap, error) {
	hc, err := NewHeatmapCounter(userID, from, to, baselineDays)
	if err != nil {
		return Heatmap{}, err
	}
	p := params{}
	p.str("user", userID)
	p.time("bfrom", hc.BaselineFrom())
	p.time("to", to)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT toStartOfHour(event_time) AS h, facility_id, count()
FROM access_events FINAL
WHERE user_id = {user:String} AND event_time >= {bfrom:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}
GROUP BY h, facility_id`)
	if err != nil {
		return Heatmap{}, fmt.Errorf("read user activity: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var at time.Time
		var facility string
		var n uint64
		if err := rows.Scan(&at, &facility, &n); err != nil {
			return Heatmap{}, fmt.Errorf("read user activity: %w", err)
		}
		hc.Add(at, s.location(facility), int(n))
	}
	if err := rows.Err(); err != nil {
		return Heatmap{}, fmt.Errorf("read user activity: %w", err)
	}
	return hc.Heatmap(), nil
}

// HeatmapCounter buckets a user's accesses into a Heatmap (UserHeatmap's
// rule, for stores that count accesses themselves).
type HeatmapCounter struct {
	h     Heatmap
	days  int
	base  [7][24]int
	zones map[string]bool
}

// NewHeatmapCounter validates the user and range of a heat map over
// [from, to) with a baseline of baselineDays before from (<= 0: 28).
func NewHeatmapCounter(userID string, from, to time.Time, baselineDays int) (*HeatmapCounter, error) {
	if err := CheckID("user_id", userID); err != nil {
		return nil, err
	}
	if err := CheckRange(from, to, 0); err != nil {
		return nil, err
	}
	if baselineDays <= 0 {
		baselineDays = 28
	}
	return &HeatmapCounter{days: baselineDays, zones: map[string]bool{},
		h: Heatmap{UserID: userID, From: from.UTC(), To: to.UTC(), BaselineFrom: from.UTC().AddDate(0, 0, -baselineDays), TimeZone: "UTC"}}, nil
}

// BaselineFrom is where the accesses to count start (they end at To).
func (c *HeatmapCounter) BaselineFrom() time.Time { return c.h.BaselineFrom }

// Add counts n accesses in the UTC hour of at, at a facility in zone loc
// (nil: unknown, UTC). Accesses outside [BaselineFrom, To) are the
// caller's to leave out.
func (c *HeatmapCounter) Add(at time.Time, loc *time.Location, n int) {
	at = at.UTC().Truncate(time.Hour)
	local := at
	if loc != nil {
		local = local.In(loc)
		c.zones[loc.String()] = true
	} else {
		c.zones["UTC"] = true
	}
	dow := (int(local.Weekday()) + 6) % 7 // Monday = 0
	if at.Before(c.h.From) {
		c.base[dow][local.Hour()] += n
		c.h.BaselineTotal += n
	} else {
		c.h.Period[dow][local.Hour()] += n
		c.h.PeriodTotal += n
	}
}

// Heatmap returns the counts, the baseline as a weekly mean.
func (c *HeatmapCounter) Heatmap() Heatmap {
	h := c.h
	weeks := float64(c.days) / 7
	for d := range c.base {
		for hr := range c.base[d] {
			h.Baseline[d][hr] = float64(c.base[d][hr]) / weeks
		}
	}
	if len(c.zones) > 0 {
		names := make([]string, 0, len(c.zones))
		for z := range c.zones {
			names = append(names, z)
		}
		slices.Sort(names)
		h.TimeZone = strings.Join(names, ", ")
	}
	return h
}
