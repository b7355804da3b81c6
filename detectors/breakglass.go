package detectors

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// BreakGlassConfig configures the break_glass detector.
//
// Every break-the-glass access yields a finding at the base severity (default
// low), raised one level for each of: a reason that is empty, a placeholder
// or too short; a user outside the emergency roles and departments; no care
// relationship; and a user whose break-glass count over the last
// peer_window_days is far above their role peers'.
type BreakGlassConfig struct {
	BaseConfig `yaml:",inline"`
	// PlaceholderReasons are reasons that justify nothing ("n/a", "test",
	// "security override"). They are compared after lower-casing and
	// removing punctuation, so "N/A." matches "n/a".
	PlaceholderReasons []string `yaml:"placeholder_reasons"`
	// MinReasonLength is the shortest reason, in characters after trimming,
	// that counts as substantive.
	MinReasonLength int `yaml:"min_reason_length"`
	// EmergencyCategories are the vocabulary categories (see Vocabulary) of
	// roles and departments where breaking the glass is part of the job: a
	// user whose department or role maps to one of them works in an
	// emergency context.
	EmergencyCategories []string `yaml:"emergency_categories"`
	// PeerWindowDays is the rolling window, in UTC days, over which a user's
	// break-glass accesses are counted and compared with peers (users of the
	// same role seen in the same partition in that window).
	PeerWindowDays int `yaml:"peer_window_days"`
	// PeerFactor: a user is an outlier when their count exceeds PeerFactor
	// times the peers' mean …
	PeerFactor float64 `yaml:"peer_factor"`
	// PeerMinCount … and is at least PeerMinCount …
	PeerMinCount int `yaml:"peer_min_count"`
	// PeerMinPeers … and there are at least PeerMinPeers peers to compare.
	PeerMinPeers int `yaml:"peer_min_peers"`
	// MaxTrackedUsers bounds the users whose counts are kept; users beyond it
	// still get findings, without the peer comparison.
	MaxTrackedUsers int `yaml:"max_tracked_users"`
}

// DefaultBreakGlassConfig returns the defaults.
func DefaultBreakGlassConfig() *BreakGlassConfig {
	return &BreakGlassConfig{
		BaseConfig: BaseConfig{Enabled: true, Severity: schemas.SeverityLow},
		PlaceholderReasons: []string{
			"n/a", "na", "none", "test", "testing", "asdf", "x", "xx", "xxx", "abc", "123", "other", "see note",
			"emergency", "emergent", "urgent", "override", "security override", "break glass", "btg", "care", "patient care",
		},
		MinReasonLength:     10,
		EmergencyCategories: []string{string(CategoryEmergency), string(CategoryCriticalCare), string(CategoryAnesthesia)},
		PeerWindowDays:      30,
		PeerFactor:          3,
		PeerMinCount:        5,
		PeerMinPeers:        3,
		MaxTrackedUsers:     100000,
	}
}

// Validate checks the configuration.
func (c *BreakGlassConfig) Validate() error {
	var errs []error
	errs = append(errs, c.BaseConfig.Validate())
	if _, err := categoryList(c.EmergencyCategories).set("emergency_categories"); err != nil {
		errs = append(errs, err)
	}
	if c.MinReasonLength < 0 {
		errs = append(errs, fieldErrorf("min_reason_length", "must be ≥ 0 (got %d)", c.MinReasonLength))
	}
	if c.PeerWindowDays < 1 || c.PeerWindowDays > 366 {
		errs = append(errs, fieldErrorf("peer_window_days", "must be between 1 and 366 (got %d)", c.PeerWindowDays))
	}
	if c.PeerFactor < 1 {
		errs = append(errs, fieldErrorf("peer_factor", "must be ≥ 1 (got %g)", c.PeerFactor))
	}
	if c.PeerMinCount < 1 {
		errs = append(errs, fieldErrorf("peer_min_count", "must be ≥ 1 (got %d)", c.PeerMinCount))
	}
	if c.PeerMinPeers < 1 {
		errs = append(errs, fieldErrorf("peer_min_peers", "must be ≥ 1 (got %d)", c.PeerMinPeers))
	}
	if c.MaxTrackedUsers < 0 {
		errs = append(errs, fieldErrorf("max_tracked_users", "must be ≥ 0 (got %d)", c.MaxTrackedUsers))
	}
	return errors.Join(errs...)
}

// ReasonClass classifies a break-glass reason without keeping its text.
type ReasonClass string

// The reason classes.
const (
	ReasonEmpty       ReasonClass = "empty"
	ReasonPlaceholder ReasonClass = "placeholder"
	ReasonTooShort    ReasonClass = "too_short"
	ReasonSubstantive ReasonClass = "substantive"
)

// BreakGlass is the break_glass detector. Its state (per-user daily
// break-glass counts and the day each user was last seen) survives restarts
// through Snapshot and Restore, and is evicted once a user has been silent
// for the whole window.
type BreakGlass struct {
	cfg          BreakGlassConfig
	env          Env
	placeholders map[string]struct{}
	emergency    CategorySet
	users        map[string]*bgUser
	byRole       map[string]map[string]*bgUser
	sweptDay     int64 // last watermark day evicted up to

	// deferred (Engine.DeferPeers): the peer comparison is left to a
	// PeerStage; act holds this partition's users per open UTC day, handed
	// over (pending) once the watermark passes the day.
	deferred  bool
	act       map[int64]map[string]*PeerActivity
	published int64 // UTC days before this one have been handed over
	pendAct   []PeerActivity
	pendBG    []PeerBreakGlass
}

var (
	_ Detector         = (*BreakGlass)(nil)
	_ Snapshotter      = (*BreakGlass)(nil)
	_ WatermarkFlusher = (*BreakGlass)(nil)
)

// bgUser is one user's break-glass history: count per UTC day in a ring of
// PeerWindowDays slots (allocated at the first break-glass).
type bgUser struct {
	role     string
	lastSeen int64 // UTC day index
	days     []int64
	counts   []uint32
}

// NewBreakGlass builds the detector.
func NewBreakGlass(cfg *BreakGlassConfig, env Env) (*BreakGlass, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	emergency, _ := categoryList(cfg.EmergencyCategories).set("emergency_categories") // validated
	d := &BreakGlass{
		cfg:          *cfg,
		env:          env,
		placeholders: map[string]struct{}{},
		emergency:    emergency,
		users:        map[string]*bgUser{},
		byRole:       map[string]map[string]*bgUser{},
	}
	for _, p := range cfg.PlaceholderReasons {
		d.placeholders[strings.Join(normalizedWords(p), "")] = struct{}{}
	}
	return d, nil
}

// ClassifyReason classifies a break-glass reason.
func (d *BreakGlass) ClassifyReason(reason string) ReasonClass {
	// Words are joined without spaces, so "Security Over-ride" matches the
	// placeholder "security override".
	norm := strings.Join(normalizedWords(reason), "")
	switch {
	case norm == "":
		return ReasonEmpty
	case hasKey(d.placeholders, norm):
		return ReasonPlaceholder
	case utf8.RuneCountInString(strings.TrimSpace(reason)) < d.cfg.MinReasonLength:
		return ReasonTooShort
	}
	return ReasonSubstantive
}

func hasKey(m map[string]struct{}, k string) bool { _, ok := m[k]; return ok }

func dayIndex(t time.Time) int64 {
	s := t.Unix()
	if s < 0 {
		return (s+1)/86400 - 1
	}
	return s / 86400
}

// Detect tracks the user and, for a break-glass access, returns a finding.
// The free-text reason never leaves this method: only its class and length
// go into the finding.
func (d *BreakGlass) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	day := dayIndex(ev.EventTime)
	ref := refOf(d.env)
	var u *schemas.User
	if ev.BreakGlass || ev.UserRole == "" {
		u, _ = eventUser(d.env, ref, ev)
	}
	st := d.track(ev.UserID, userRole(ev, u), day)
	if d.deferred {
		d.noteActivity(ev.UserID, userRole(ev, u), day, ev.BreakGlass)
	}
	if !ev.BreakGlass {
		return nil, nil
	}

	loc := locationOf(d.env, ev.FacilityID)
	class := d.ClassifyReason(ev.BreakGlassReason)
	role, dept := userRole(ev, u), userDepartment(ev, u)
	emergency := "none"
	vocab := vocabOf(ref)
	switch {
	case vocab.Department(dept).Categories.Intersects(d.emergency):
		emergency = "department"
	case vocab.Role(role).Categories.Intersects(d.emergency):
		emergency = "role"
	}
	care := careOf(d.env, ref, ev)

	raise := 0
	var why []string
	if class != ReasonSubstantive {
		raise++
	}
	if emergency == "none" {
		raise++
	}
	if !care.Explained {
		raise++
	}

	f := newAccessFinding(breakGlassName, ev, loc, d.cfg.Severity)
	facts := f.Evidence.Facts
	facts["reason_class"] = string(class)
	facts["reason_length"] = strconv.Itoa(utf8.RuneCountInString(strings.TrimSpace(ev.BreakGlassReason)))
	facts["emergency_context"] = emergency
	if care.Explained {
		facts["care"] = "explained"
		facts["encounter_id"] = care.EncounterID
	} else {
		facts["care"] = "unexplained"
		f.Evidence.WouldExplain = care.Reason
	}

	switch class {
	case ReasonSubstantive:
		why = append(why, fmt.Sprintf("the reason given was substantive (%s characters)", facts["reason_length"]))
	case ReasonEmpty:
		why = append(why, "no reason was given")
	case ReasonPlaceholder:
		why = append(why, fmt.Sprintf("the reason given was a placeholder (%s characters)", facts["reason_length"]))
	case ReasonTooShort:
		why = append(why, fmt.Sprintf("the reason given was too short to justify anything (%s characters, fewer than %d)", facts["reason_length"], d.cfg.MinReasonLength))
	}
	switch emergency {
	case "department":
		why = append(why, "the user works in an emergency department ("+dept+")")
	case "role":
		why = append(why, "the user has an emergency role ("+role+")")
	default:
		why = append(why, "the user's role and department are not emergency ones")
	}
	why = append(why, careSentence(care))

	var pending *PeerBreakGlass
	if st != nil {
		count, peers, peerMean := d.peerStats(ev.UserID, st, day)
		facts["break_glass_in_window"] = strconv.Itoa(count)
		facts["peer_window_days"] = strconv.Itoa(d.cfg.PeerWindowDays)
		f.Evidence.Observed = float64(count)
		if d.deferred {
			pending = &PeerBreakGlass{Role: strings.Clone(role), Day: day, Count: count}
		} else {
			facts["peers"] = strconv.Itoa(peers)
		}
		if !d.deferred && peers >= d.cfg.PeerMinPeers {
			threshold := d.cfg.PeerFactor * peerMean
			f.Evidence.PeerValue = peerMean
			f.Evidence.Threshold = max(threshold, float64(d.cfg.PeerMinCount))
			facts["peer_mean"] = strconv.FormatFloat(peerMean, 'f', 2, 64)
			if count >= d.cfg.PeerMinCount && float64(count) > threshold {
				raise++
				facts["peer_outlier"] = "true"
				why = append(why, fmt.Sprintf("the user broke the glass %d times in the last %d days, against a mean of %.2f among %d peers with role %s", count, d.cfg.PeerWindowDays, peerMean, peers, role))
			}
		}
	}

	f.Severity = RaiseSeverity(d.cfg.Severity, raise)
	f.Score = f.Severity.DefaultScore()
	f.Explanation = describeAccess(ev, u, loc) + " after breaking the glass; " + strings.Join(why, "; ") + "."
	if pending != nil {
		// The PeerStage adds the comparison with the whole peer group as a
		// later version of this finding.
		pending.Finding, pending.Raise = f, raise
		d.pendBG = append(d.pendBG, *pending)
	}
	return []schemas.Finding{f}, nil
}

// noteActivity records that userID (with role) was active on UTC day, and
// whether with a break-glass access, for the PeerStage. A day already
// handed over is not reopened (the event is more than allowed_lateness
// behind the day's end).
func (d *BreakGlass) noteActivity(userID, role string, day int64, breakGlass bool) {
	if day < d.published {
		return
	}
	if d.act == nil {
		d.act = map[int64]map[string]*PeerActivity{}
	}
	m := d.act[day]
	if m == nil {
		m = map[string]*PeerActivity{}
		d.act[day] = m
	}
	a := m[userID]
	if a == nil {
		a = &PeerActivity{User: strings.Clone(userID), Day: day}
		m[a.User] = a
	}
	if a.Role != role {
		a.Role = strings.Clone(role)
	}
	if breakGlass {
		a.BreakGlass++
	}
}

// publish hands over the UTC days that end at or before watermark.
func (d *BreakGlass) publish(watermark time.Time) {
	until := dayIndex(watermark) // days before this one have ended
	if watermark.Equal(EndOfTime) {
		until = math.MaxInt64
	}
	days := make([]int64, 0, len(d.act))
	for day := range d.act {
		if day < until {
			days = append(days, day)
		}
	}
	slices.Sort(days)
	for _, day := range days {
		m := d.act[day]
		delete(d.act, day)
		start := len(d.pendAct)
		for _, a := range m {
			d.pendAct = append(d.pendAct, *a)
		}
		slices.SortFunc(d.pendAct[start:], func(a, b PeerActivity) int { return strings.Compare(a.User, b.User) })
	}
	if until != math.MaxInt64 {
		d.published = max(d.published, until)
	}
}

// track records that userID was seen on day with role, and for a
// break-glass access counts it. It returns nil when the user is not tracked
// (MaxTrackedUsers reached).
func (d *BreakGlass) track(userID, role string, day int64) *bgUser {
	st := d.users[userID]
	if st == nil {
		if len(d.users) >= d.cfg.MaxTrackedUsers {
			return nil
		}
		// Clone: decoded events share one backing array for all their
		// strings, and this key outlives the event.
		userID, role = strings.Clone(userID), strings.Clone(role)
		st = &bgUser{role: role, lastSeen: day}
		d.users[userID] = st
		d.roleSet(role)[userID] = st
	}
	if st.role != role {
		if m := d.byRole[st.role]; m != nil {
			delete(m, userID)
			if len(m) == 0 {
				delete(d.byRole, st.role)
			}
		}
		st.role = strings.Clone(role)
		d.roleSet(st.role)[strings.Clone(userID)] = st
	}
	if day > st.lastSeen {
		st.lastSeen = day
	}
	return st
}

func (d *BreakGlass) roleSet(role string) map[string]*bgUser {
	m := d.byRole[role]
	if m == nil {
		m = map[string]*bgUser{}
		d.byRole[role] = m
	}
	return m
}

// peerStats counts this break-glass access into st and returns the user's
// count over the window ending on day, the number of peers (same role, seen
// in the window) and the peers' mean count.
func (d *BreakGlass) peerStats(userID string, st *bgUser, day int64) (count, peers int, mean float64) {
	w := int64(d.cfg.PeerWindowDays)
	if st.days == nil {
		st.days = make([]int64, w)
		st.counts = make([]uint32, w)
		for i := range st.days {
			st.days[i] = -1 << 62
		}
	}
	slot := ((day % w) + w) % w
	switch {
	case st.days[slot] == day:
		st.counts[slot]++
	case st.days[slot] < day:
		st.days[slot], st.counts[slot] = day, 1
	default:
		// The slot holds a day a whole window newer: this access is too old
		// to count.
	}
	from := day - w + 1
	count = st.sum(from, day)
	total := 0
	for id, p := range d.byRole[st.role] {
		if id == userID || p.lastSeen < from {
			continue
		}
		peers++
		total += p.sum(from, day)
	}
	if peers > 0 {
		mean = float64(total) / float64(peers)
	}
	return count, peers, mean
}

func (u *bgUser) sum(from, to int64) int {
	n := 0
	for i, dd := range u.days {
		if dd >= from && dd <= to {
			n += int(u.counts[i])
		}
	}
	return n
}

// FlushUntil emits nothing; it evicts users silent for a whole window
// before the watermark, at most once per watermark day.
func (d *BreakGlass) FlushUntil(_ context.Context, watermark time.Time) ([]schemas.Finding, error) {
	wd := dayIndex(watermark)
	if d.deferred {
		d.publish(watermark)
	}
	if watermark.Equal(EndOfTime) || wd <= d.sweptDay {
		return nil, nil
	}
	d.sweptDay = wd
	from := wd - int64(d.cfg.PeerWindowDays) + 1
	for id, st := range d.users {
		if st.lastSeen < from {
			delete(d.users, id)
			if m := d.byRole[st.role]; m != nil {
				delete(m, id)
				if len(m) == 0 {
					delete(d.byRole, st.role)
				}
			}
		}
	}
	return nil, nil
}

// breakGlassSnapshotVersion 2 adds the open UTC days' activity kept for a
// PeerStage (DeferPeers); version 1 snapshots still restore.
const breakGlassSnapshotVersion = 2

type bgSnapshot struct {
	Version  int            `json:"version"`
	SweptDay int64          `json:"swept_day"`
	Users    []bgUserRecord `json:"users"`
	// Activity and Published: the deferred mode's open UTC days (sorted by
	// day and user) and the first day not handed over yet.
	Activity  []PeerActivity `json:"activity,omitempty"`
	Published int64          `json:"published,omitempty"`
}

type bgUserRecord struct {
	UserID   string     `json:"user_id"`
	Role     string     `json:"role"`
	LastSeen int64      `json:"last_seen_day"`
	Days     [][2]int64 `json:"days,omitempty"` // [day, count], ascending
}

// Snapshot writes the tracked users as JSON, sorted by user id.
func (d *BreakGlass) Snapshot(w io.Writer) error {
	s := bgSnapshot{Version: breakGlassSnapshotVersion, SweptDay: d.sweptDay, Users: make([]bgUserRecord, 0, len(d.users))}
	for id, st := range d.users {
		rec := bgUserRecord{UserID: id, Role: st.role, LastSeen: st.lastSeen}
		for i, dd := range st.days {
			if st.counts[i] > 0 {
				rec.Days = append(rec.Days, [2]int64{dd, int64(st.counts[i])})
			}
		}
		slices.SortFunc(rec.Days, func(a, b [2]int64) int { return cmp.Compare(a[0], b[0]) })
		s.Users = append(s.Users, rec)
	}
	slices.SortFunc(s.Users, func(a, b bgUserRecord) int { return strings.Compare(a.UserID, b.UserID) })
	for _, m := range d.act {
		for _, a := range m {
			s.Activity = append(s.Activity, *a)
		}
	}
	slices.SortFunc(s.Activity, func(a, b PeerActivity) int {
		if c := cmp.Compare(a.Day, b.Day); c != 0 {
			return c
		}
		return strings.Compare(a.User, b.User)
	})
	s.Published = d.published
	return json.NewEncoder(w).Encode(&s)
}

// Restore replaces the state with a snapshot.
func (d *BreakGlass) Restore(r io.Reader) error {
	var s bgSnapshot
	if err := json.NewDecoder(r).Decode(&s); err != nil {
		return fmt.Errorf("decoding break_glass snapshot: %w", err)
	}
	if s.Version != 1 && s.Version != breakGlassSnapshotVersion {
		return fmt.Errorf("break_glass snapshot version %d, want 1 or %d", s.Version, breakGlassSnapshotVersion)
	}
	d.act, d.published = nil, s.Published
	for _, a := range s.Activity {
		if d.act == nil {
			d.act = map[int64]map[string]*PeerActivity{}
		}
		m := d.act[a.Day]
		if m == nil {
			m = map[string]*PeerActivity{}
			d.act[a.Day] = m
		}
		m[a.User] = &a
	}
	d.users = make(map[string]*bgUser, len(s.Users))
	d.byRole = map[string]map[string]*bgUser{}
	d.sweptDay = s.SweptDay
	w := int64(d.cfg.PeerWindowDays)
	for _, rec := range s.Users {
		st := &bgUser{role: rec.Role, lastSeen: rec.LastSeen}
		for _, dc := range rec.Days {
			if st.days == nil {
				st.days = make([]int64, w)
				st.counts = make([]uint32, w)
				for i := range st.days {
					st.days[i] = -1 << 62
				}
			}
			slot := ((dc[0] % w) + w) % w
			if dc[0] > st.days[slot] {
				st.days[slot], st.counts[slot] = dc[0], uint32(dc[1])
			}
		}
		d.users[rec.UserID] = st
		d.roleSet(rec.Role)[rec.UserID] = st
	}
	return nil
}
