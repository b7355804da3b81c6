package detectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

const offHoursName = "off_hours"

// ShiftCalendar is a configured working schedule in facility-local time:
// the hours [StartHour, EndHour) on the listed weekdays. A shift with
// EndHour ≤ StartHour runs past midnight and belongs to the weekday it
// starts on (a Friday 19–07 shift covers Saturday 03:00).
type ShiftCalendar struct {
	// Weekdays lists the days shifts start on: mon, tue, wed, thu, fri,
	// sat, sun. Empty means every day.
	Weekdays []string `yaml:"weekdays"`
	// StartHour is the local hour the shift starts, 0–23.
	StartHour int `yaml:"start_hour"`
	// EndHour is the local hour it ends (exclusive), 0–24; ≤ StartHour
	// wraps past midnight. Equal to StartHour is rejected.
	EndHour int `yaml:"end_hour"`
	// Holidays says whether shifts also run on configured holidays.
	Holidays bool `yaml:"holidays"`
}

// OffHoursConfig configures the off_hours detector.
type OffHoursConfig struct {
	BaseConfig `yaml:",inline"`
	// MinShare: an access fires when the share of the user's learned active
	// hours that fall in that local hour of the day is below it.
	// 0 < min_share < 1.
	MinShare float64 `yaml:"min_share"`
	// MinEvents and MinHistoryDays are the warm-up: a user's histogram is
	// trusted after this many events spread over at least this many local
	// days. Users in warm-up fire only outside a configured calendar.
	MinEvents      int `yaml:"min_events"`
	MinHistoryDays int `yaml:"min_history_days"`
	// HalfLifeDays is the histogram's decay half-life in local days, so a
	// changed schedule is learned: after one half-life the old pattern
	// weighs half. ≥ 1.
	HalfLifeDays float64 `yaml:"half_life_days"`
	// NeighborWeight smooths the histogram across adjacent hours: the share
	// of hour h is (c[h] + w·(c[h-1]+c[h+1])) / ((1+2w)·total), so staying
	// an hour past the usual end does not fire. 0 disables; 0–1.
	NeighborWeight float64 `yaml:"neighbor_weight"`
	// SessionGap merges off-hours accesses into one finding while each
	// follows the previous one within this gap, so one night session yields
	// one finding. 0 leaves only the once-per-local-hour dedupe.
	SessionGap time.Duration `yaml:"session_gap"`
	// ForgetAfterDays drops users not seen for this many local days. ≥ 1.
	ForgetAfterDays int `yaml:"forget_after_days"`
	// Holidays are local dates (YYYY-MM-DD) that are learned and judged as
	// weekend days, at every facility.
	Holidays []string `yaml:"holidays"`
	// RoleCalendars and UserCalendars are configured schedules by role and
	// by user id (a user's own calendar wins). An access inside the
	// calendar never fires; outside it fires if the learned share is low,
	// or at once for users still in warm-up.
	RoleCalendars map[string]ShiftCalendar `yaml:"role_calendars"`
	UserCalendars map[string]ShiftCalendar `yaml:"user_calendars"`
}

// DefaultOffHoursConfig returns the off_hours detector's defaults.
func DefaultOffHoursConfig() *OffHoursConfig {
	return &OffHoursConfig{
		BaseConfig:      BaseConfig{Enabled: true, Severity: schemas.SeverityMedium},
		MinShare:        0.02,
		MinEvents:       200,
		MinHistoryDays:  7,
		HalfLifeDays:    28,
		NeighborWeight:  0.5,
		SessionGap:      time.Hour,
		ForgetAfterDays: 90,
	}
}

var weekdayNames = map[string]time.Weekday{
	"sun": time.Sunday, "mon": time.Monday, "tue": time.Tuesday, "wed": time.Wednesday,
	"thu": time.Thursday, "fri": time.Friday, "sat": time.Saturday,
}

// Validate checks the configuration; keys are relative to the detector's
// (the config loader prefixes "detectors.off_hours.").
func (c *OffHoursConfig) Validate() error {
	errs := []error{c.BaseConfig.Validate()}
	check := func(ok bool, key, format string, args ...any) {
		if !ok {
			errs = append(errs, fieldErrorf(key, format, args...))
		}
	}
	check(c.MinShare > 0 && c.MinShare < 1, "min_share", "must be > 0 and < 1 (got %g)", c.MinShare)
	check(c.MinEvents >= 1, "min_events", "must be ≥ 1 (got %d)", c.MinEvents)
	check(c.MinHistoryDays >= 0, "min_history_days", "must be ≥ 0 (got %d)", c.MinHistoryDays)
	check(c.HalfLifeDays >= 1, "half_life_days", "must be ≥ 1 (got %g)", c.HalfLifeDays)
	check(c.NeighborWeight >= 0 && c.NeighborWeight <= 1, "neighbor_weight", "must be between 0 and 1 (got %g)", c.NeighborWeight)
	check(c.SessionGap >= 0, "session_gap", "must be ≥ 0 (got %s)", c.SessionGap)
	check(c.ForgetAfterDays >= 1, "forget_after_days", "must be ≥ 1 (got %d)", c.ForgetAfterDays)
	for i, h := range c.Holidays {
		if _, err := parseCivilDay(h); err != nil {
			errs = append(errs, fieldErrorf(fmt.Sprintf("holidays[%d]", i), "must be a date YYYY-MM-DD (got %q)", h))
		}
	}
	for _, name := range sortedKeys(c.RoleCalendars) {
		errs = append(errs, c.RoleCalendars[name].validate("role_calendars."+name))
	}
	for _, name := range sortedKeys(c.UserCalendars) {
		errs = append(errs, c.UserCalendars[name].validate("user_calendars."+name))
	}
	return errors.Join(errs...)
}

func (s ShiftCalendar) validate(key string) error {
	var errs []error
	for i, d := range s.Weekdays {
		if _, ok := weekdayNames[strings.ToLower(d)]; !ok {
			errs = append(errs, fieldErrorf(fmt.Sprintf("%s.weekdays[%d]", key, i), "must be one of mon, tue, wed, thu, fri, sat, sun (got %q)", d))
		}
	}
	if s.StartHour < 0 || s.StartHour > 23 {
		errs = append(errs, fieldErrorf(key+".start_hour", "must be between 0 and 23 (got %d)", s.StartHour))
	}
	if s.EndHour < 0 || s.EndHour > 24 {
		errs = append(errs, fieldErrorf(key+".end_hour", "must be between 0 and 24 (got %d)", s.EndHour))
	}
	if s.EndHour == s.StartHour || (s.StartHour == 0 && s.EndHour == 24) {
		errs = append(errs, fieldErrorf(key+".end_hour", "must differ from start_hour and not cover the whole day (got %d–%d)", s.StartHour, s.EndHour))
	}
	return errors.Join(errs...)
}

// calendar is a compiled ShiftCalendar.
type calendar struct {
	days       [7]bool // by time.Weekday: shifts start that day
	start, end int
	holidays   bool
	scope      string // "role" or "user", for the evidence
}

func compileCalendar(s ShiftCalendar, scope string) *calendar {
	c := &calendar{start: s.StartHour, end: s.EndHour, holidays: s.Holidays, scope: scope}
	if len(s.Weekdays) == 0 {
		c.days = [7]bool{true, true, true, true, true, true, true}
	}
	for _, d := range s.Weekdays {
		c.days[weekdayNames[strings.ToLower(d)]] = true
	}
	return c
}

// allows reports whether local hour h on weekday wd (holiday: whether that
// date, or for the after-midnight part of a shift the previous date, is a
// holiday) falls inside a shift.
func (c *calendar) allows(wd time.Weekday, h int, holiday, prevHoliday bool) bool {
	if c.start < c.end {
		return h >= c.start && h < c.end && c.days[wd] && (c.holidays || !holiday)
	}
	if h >= c.start {
		return c.days[wd] && (c.holidays || !holiday)
	}
	if h < c.end {
		prev := (wd + 6) % 7
		return c.days[prev] && (c.holidays || !prevHoliday)
	}
	return false
}

// OffHours flags accesses in local hours where the user rarely works, when
// no care relationship explains them.
//
// # Learned working hours
//
// Each user has a 48-bucket histogram: local hour of day × {weekday,
// weekend-or-holiday}, in the time zone of the facility where each access
// happened (ev.EventTime.In(loc), so DST changes never shift a bucket; the
// repeated 01:00 hour of a fall-back night counts twice into bucket 01).
// The histogram counts active hours, not accesses: each local clock hour
// in which the user made any access adds one, however many accesses it
// held, so a single busy session cannot teach the detector a new hour
// (with raw access counts, one 2-hour night session of 13 accesses already
// lifts that hour above a 2 % share). The warm-up still counts accesses.
// Counts decay exponentially by local day with half-life half_life_days
// (fixed-point integer arithmetic, so results are identical on every
// platform), which lets a changed schedule replace the old one. The share
// of an hour is judged against the day type's own profile when that day
// type holds at least 10 % of the user's decayed activity, otherwise
// against the combined 24-hour profile (a weekday worker's rare Saturday
// shift is judged by their hours, not flagged because it is a Saturday).
// Every access, fired or not, explained or not, is learned after it is
// judged. Only the last learned hour is remembered, so accesses that
// alternate between two hours out of order count each switch (rare).
//
// # Firing
//
// An access fires when the user is out of warm-up (min_events events over
// min_history_days days), the smoothed share of its local hour is below
// min_share, it is outside any configured calendar, and
// Reference.Care(ev) does not explain it. Users in warm-up fire only when
// a calendar applies and the access is outside it. At most one finding per
// user per local clock hour, and accesses within session_gap of the
// previous unexplained off-hours access continue that finding's session
// instead of firing again. Findings are emitted immediately; the window is
// the local clock hour of the first access.
//
// # Memory
//
// About 300 bytes per user seen in the last forget_after_days days: a
// 192-byte histogram, counters and the map entry.
//
// OffHours is not safe for concurrent use.
type OffHours struct {
	cfg      OffHoursConfig
	env      Env
	locs     locationCache
	holidays map[civilDay]struct{}
	roleCals map[string]*calendar
	userCals map[string]*calendar
	decay1   uint64 // one day's decay factor, Q16

	users  map[string]*ohUser
	maxDay civilDay // latest local day seen, drives forgetting
}

// ohUnit is one access in histogram units (Q10 fixed point).
const ohUnit = 1 << 10

type ohUser struct {
	hist       [48]uint32 // [0,24): weekday hours, [24,48): weekend/holiday hours
	events     uint32     // raw events seen, saturating
	firstDay   civilDay
	lastDay    civilDay // last day decay was applied for
	lastOff    int64    // unix ns of the latest unexplained off-hours access; 0 none
	lastBucket int64    // unix ns start of the local hour of the latest finding; 0 none
	lastSlot   int64    // unix ns start of the last local hour learned; 0 none
}

// NewOffHours builds an off_hours detector. Env.Reference is required: an
// off-hours access is only reported when no care relationship explains it.
func NewOffHours(cfg *OffHoursConfig, env Env) (*OffHours, error) {
	if cfg == nil {
		cfg = DefaultOffHoursConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, prefixErrors("detectors."+offHoursName, err)
	}
	if env.Reference == nil {
		return nil, errors.New("detectors.off_hours: needs Env.Reference to check care relationships")
	}
	d := &OffHours{
		cfg:      *cfg,
		env:      env,
		locs:     newLocationCache(env.Location),
		holidays: make(map[civilDay]struct{}, len(cfg.Holidays)),
		roleCals: make(map[string]*calendar, len(cfg.RoleCalendars)),
		userCals: make(map[string]*calendar, len(cfg.UserCalendars)),
		decay1:   uint64(math.Round(65536 * math.Exp2(-1/cfg.HalfLifeDays))),
		users:    make(map[string]*ohUser),
	}
	for _, h := range cfg.Holidays {
		day, _ := parseCivilDay(h)
		d.holidays[day] = struct{}{}
	}
	for name, c := range cfg.RoleCalendars {
		d.roleCals[name] = compileCalendar(c, "role")
	}
	for name, c := range cfg.UserCalendars {
		d.userCals[name] = compileCalendar(c, "user")
	}
	return d, nil
}

// Name returns "off_hours".
func (d *OffHours) Name() string { return offHoursName }

func (d *OffHours) isHoliday(day civilDay) bool {
	if len(d.holidays) == 0 {
		return false
	}
	_, ok := d.holidays[day]
	return ok
}

// Detect judges ev against the user's learned hours, then learns it.
func (d *OffHours) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	if ev.UserID == "" {
		return nil, nil
	}
	loc := d.locs.get(ev.FacilityID)
	lt := ev.EventTime.In(loc)
	day := civilDayOf(lt)
	hour := lt.Hour()
	wd := lt.Weekday()
	holiday := d.isHoliday(day)
	weekend := wd == time.Saturday || wd == time.Sunday || holiday

	if day > d.maxDay {
		if d.maxDay != 0 {
			d.forget(day)
		}
		d.maxDay = day
	}
	u := d.users[ev.UserID]
	if u == nil {
		u = &ohUser{firstDay: day, lastDay: day}
		d.users[strings.Clone(ev.UserID)] = u
	}
	if day < u.firstDay {
		u.firstDay = day
	}
	d.decay(u, day)

	slot := localHourStart(lt)
	var out []schemas.Finding
	if f, ok := d.judge(u, ev, lt, slot, day, hour, wd, holiday, weekend); ok {
		out = []schemas.Finding{f}
	}

	if s := eventNanos(slot); s != u.lastSlot {
		u.lastSlot = s
		i := hour
		if weekend {
			i += 24
		}
		u.hist[i] = uint32(min(uint64(u.hist[i])+ohUnit, math.MaxUint32))
	}
	if u.events < math.MaxUint32 {
		u.events++
	}
	return out, nil
}

// decay ages u's histogram to local day `day`. Events from earlier days
// (out of order, or at a facility in a zone behind) add without decay.
func (d *OffHours) decay(u *ohUser, day civilDay) {
	if day <= u.lastDay {
		return
	}
	n := int(day - u.lastDay)
	u.lastDay = day
	if float64(n) > 32*d.cfg.HalfLifeDays { // < 2⁻³² of the old weight left
		u.hist = [48]uint32{}
		return
	}
	m := uint64(1 << 16)
	for range n {
		m = (m*d.decay1 + 1<<15) >> 16
	}
	for i, c := range u.hist {
		u.hist[i] = uint32((uint64(c)*m + 1<<15) >> 16)
	}
}

// share returns the smoothed share of local hour h (weekend profile or
// not), and whether the weekend/weekday split was used.
func (d *OffHours) share(u *ohUser, h int, weekend bool) (float64, bool) {
	var typ, all uint64
	base := 0
	if weekend {
		base = 24
	}
	for i := range 24 {
		typ += uint64(u.hist[base+i])
		all += uint64(u.hist[i]) + uint64(u.hist[24+i])
	}
	if all == 0 {
		return 0, false
	}
	split := typ*10 >= all
	c := func(h int) float64 {
		h = (h + 24) % 24
		if split {
			return float64(u.hist[base+h])
		}
		return float64(u.hist[h]) + float64(u.hist[24+h])
	}
	total := float64(all)
	if split {
		total = float64(typ)
	}
	w := d.cfg.NeighborWeight
	num := c(h) + float64(w*(c(h-1)+c(h+1)))
	return num / float64((1+2*w)*total), split
}

func (d *OffHours) calendarFor(ev *schemas.AccessEvent) *calendar {
	if len(d.userCals) > 0 {
		if c, ok := d.userCals[ev.UserID]; ok {
			return c
		}
	}
	if len(d.roleCals) == 0 {
		return nil
	}
	role := ev.UserRole
	if role == "" {
		if ref := d.env.Reference(); ref != nil {
			if u, ok := eventUser(d.env, ref, ev); ok {
				role = u.Role
			}
		}
	}
	return d.roleCals[role]
}

func (d *OffHours) judge(u *ohUser, ev *schemas.AccessEvent, lt, bucket time.Time, day civilDay, hour int, wd time.Weekday, holiday, weekend bool) (schemas.Finding, bool) {
	cfg := &d.cfg
	cal := d.calendarFor(ev)
	if cal != nil && cal.allows(wd, hour, holiday, d.isHoliday(day-1)) {
		return schemas.Finding{}, false
	}
	warm := int(u.events) >= cfg.MinEvents && int(day-u.firstDay) >= cfg.MinHistoryDays
	share, split := d.share(u, hour, weekend)
	switch {
	case warm:
		if share >= cfg.MinShare {
			return schemas.Finding{}, false
		}
	case cal == nil:
		return schemas.Finding{}, false
	}
	t := eventNanos(ev.EventTime)
	if cfg.SessionGap > 0 && u.lastOff != 0 {
		if gap := t - u.lastOff; gap <= int64(cfg.SessionGap) && gap >= -int64(cfg.SessionGap) {
			if d.explained(ev) {
				return schemas.Finding{}, false
			}
			u.lastOff = max(u.lastOff, t)
			return schemas.Finding{}, false
		}
	}
	if eventNanos(bucket) == u.lastBucket {
		return schemas.Finding{}, false
	}
	if d.explained(ev) {
		return schemas.Finding{}, false
	}
	u.lastOff = t
	u.lastBucket = eventNanos(bucket)
	return d.finding(u, ev, lt, bucket, day, warm, cal, share, split, holiday, weekend), true
}

func (d *OffHours) explained(ev *schemas.AccessEvent) bool {
	return careOf(d.env, refOf(d.env), ev).Explained
}

func (d *OffHours) finding(u *ohUser, ev *schemas.AccessEvent, lt, bucket time.Time, day civilDay, warm bool, cal *calendar, share float64, split, holiday, weekend bool) schemas.Finding {
	cfg := &d.cfg
	start, end := bucket.UTC(), bucket.Add(time.Hour).UTC()
	dayType := "weekday"
	switch {
	case holiday:
		dayType = "holiday"
	case weekend:
		dayType = "weekend"
	}
	profile := "all_days"
	if split {
		profile = dayType
		if holiday {
			profile = "weekend"
		}
	}
	facts := map[string]string{
		"local_time":     lt.Format("2006-01-02T15:04:05-07:00"),
		"local_hour":     strconv.Itoa(lt.Hour()),
		"day_type":       dayType,
		"time_zone":      lt.Location().String(),
		"learned_events": strconv.FormatUint(uint64(u.events), 10),
		"action":         string(ev.Action),
	}
	// The learned share is evidence only when the user is out of warm-up;
	// a calendar finding in warm-up rests on the calendar alone.
	observed, threshold := 0.0, 0.0
	if warm {
		facts["profile"] = profile
		observed, threshold = roundTo(share, 4), cfg.MinShare
	}
	sev := cfg.Severity
	var score uint8
	var b strings.Builder
	fmt.Fprintf(&b, "user %s", ev.UserID)
	ru, _ := refOf(d.env).User(ev.UserID)
	if role := userRole(ev, ru); role != "" {
		fmt.Fprintf(&b, " (%s)", role)
	}
	fmt.Fprintf(&b, " opened a patient chart at %s on %s %s", lt.Format("15:04 MST"), lt.Weekday(), day)
	if holiday {
		b.WriteString(" (a holiday)")
	}
	if warm {
		score = schemas.ScoreWithin(sev, 1-share/cfg.MinShare)
		fmt.Fprintf(&b, "; only %s%% of their learned active hours fall in that hour of the day (threshold %s%%)",
			strconv.FormatFloat(share*100, 'f', 1, 64), strconv.FormatFloat(cfg.MinShare*100, 'f', 1, 64))
	} else {
		score = sev.DefaultScore()
		fmt.Fprintf(&b, "; outside their %s shift calendar (%02d–%02d) and too little history to have learned their hours", cal.scope, cal.start, cal.end)
	}
	if cal != nil {
		facts["calendar"] = cal.scope
	}
	b.WriteString(", and no care relationship explains it")
	return schemas.Finding{
		FindingID:   schemas.FindingID(offHoursName, []string{ev.UserID, ev.FacilityID}, start, end),
		Detector:    offHoursName,
		Severity:    sev,
		Score:       score,
		FacilityID:  ev.FacilityID,
		UserID:      ev.UserID,
		PatientID:   ev.PatientID,
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    []string{ev.EventID},
		Explanation: b.String(),
		Evidence: schemas.Evidence{
			Observed:     observed,
			Threshold:    threshold,
			Facts:        facts,
			WouldExplain: "an encounter of this patient in the user's department, or with the user on its care team, around the time of access",
		},
	}
}

// forget drops users whose last activity is more than forget_after_days
// before today.
func (d *OffHours) forget(today civilDay) {
	for k, u := range d.users {
		if u.lastDay < today-civilDay(d.cfg.ForgetAfterDays) {
			delete(d.users, k)
		}
	}
}

const offHoursSnapshotVersion = 1

// Snapshot writes every user's histogram and session state.
func (d *OffHours) Snapshot(w io.Writer) error {
	s := newSnapWriter(w, offHoursName, offHoursSnapshotVersion)
	s.varint(int64(d.maxDay))
	keys := sortedKeys(d.users)
	s.uvarint(uint64(len(keys)))
	for _, k := range keys {
		u := d.users[k]
		s.str(k)
		for _, c := range u.hist {
			s.uvarint(uint64(c))
		}
		s.uvarint(uint64(u.events))
		s.varint(int64(u.firstDay))
		s.varint(int64(u.lastDay))
		s.varint(u.lastOff)
		s.varint(u.lastBucket)
		s.varint(u.lastSlot)
	}
	return s.finish()
}

// Restore replaces the state with a snapshot written by Snapshot. On error
// the state is left empty.
func (d *OffHours) Restore(r io.Reader) error {
	d.users = make(map[string]*ohUser)
	d.maxDay = 0
	s, version := newSnapReader(r, offHoursName)
	if s.err == nil && version != offHoursSnapshotVersion {
		return fmt.Errorf("off_hours snapshot version %d not supported (want %d)", version, offHoursSnapshotVersion)
	}
	d.maxDay = civilDay(s.varint())
	n := s.count(1 << 32)
	for i := 0; i < n && s.err == nil; i++ {
		k := s.str()
		u := &ohUser{}
		for j := range u.hist {
			u.hist[j] = uint32(s.uvarint())
		}
		u.events = uint32(s.uvarint())
		u.firstDay = civilDay(s.varint())
		u.lastDay = civilDay(s.varint())
		u.lastOff = s.varint()
		u.lastBucket = s.varint()
		u.lastSlot = s.varint()
		d.users[k] = u
	}
	if err := s.end(); err != nil {
		d.users = make(map[string]*ohUser)
		d.maxDay = 0
		return fmt.Errorf("restore off_hours: %w", err)
	}
	return nil
}
