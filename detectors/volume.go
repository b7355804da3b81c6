package detectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

const volumeName = "volume"

// Volume metrics: what the volume detector counts per user and day.
const (
	VolumeMetricDistinctPatients = "distinct_patients"
	VolumeMetricAccesses         = "accesses"
)

// VolumeConfig configures the volume detector. A day's count fires only when
// it clears every applicable bar:
//
//   - the user's own baseline: count > median + mad_factor·spread and
//     count ≥ self_factor·median, where median and spread come from the days
//     the user worked in the last history_days days (spread is the MAD scaled
//     to a standard deviation, floored at √median);
//   - the peer baseline: count > peer_factor·(median of the same day's counts
//     of the user's peers), peers being users of the same role and department
//     at the same facility (role only when the department has fewer than
//     min_peers others);
//   - count ≥ min_count.
//
// Users with fewer than min_history_days worked days are judged against
// peers only, with new_user_peer_factor.
type VolumeConfig struct {
	BaseConfig `yaml:",inline"`
	// Metric is what is counted per day: "distinct_patients" (default) or
	// "accesses".
	Metric string `yaml:"metric"`
	// HistoryDays is how many local days back the personal baseline looks
	// (only days the user worked count). 2–60.
	HistoryDays int `yaml:"history_days"`
	// MinHistoryDays is how many worked days the personal baseline needs;
	// with fewer the user is compared with peers only. 1 ≤ n ≤ history_days.
	MinHistoryDays int `yaml:"min_history_days"`
	// MADFactor is k in median + k·spread. > 0.
	MADFactor float64 `yaml:"mad_factor"`
	// SelfFactor: the count must also be at least this multiple of the
	// user's median. ≥ 1.
	SelfFactor float64 `yaml:"self_factor"`
	// PeerFactor: the count must exceed this multiple of the peers' median.
	// > 1.
	PeerFactor float64 `yaml:"peer_factor"`
	// NewUserPeerFactor replaces PeerFactor for users without enough
	// history; ≥ peer_factor.
	NewUserPeerFactor float64 `yaml:"new_user_peer_factor"`
	// MinPeers is the smallest peer group (excluding the user) worth
	// comparing with. ≥ 1.
	MinPeers int `yaml:"min_peers"`
	// RequirePeers makes a missing peer group block findings; when false a
	// user with history and no peer group is judged on the personal
	// baseline alone.
	RequirePeers bool `yaml:"require_peers"`
	// MinCount is the smallest count that can ever fire. ≥ 1.
	MinCount int `yaml:"min_count"`
	// HighRatio and CriticalRatio escalate the severity when the count is at
	// least this multiple of the baseline (the user's median, or the peers'
	// for users without history). 1 < high_ratio ≤ critical_ratio.
	HighRatio     float64 `yaml:"high_ratio"`
	CriticalRatio float64 `yaml:"critical_ratio"`
	// SampleEventIDs is how many event ids (the day's first) a finding
	// carries, 0–50. Each costs about 40 bytes per active user-day.
	SampleEventIDs int `yaml:"sample_event_ids"`
}

// DefaultVolumeConfig returns the volume detector's defaults.
func DefaultVolumeConfig() *VolumeConfig {
	return &VolumeConfig{
		BaseConfig:        BaseConfig{Enabled: true, Severity: schemas.SeverityMedium},
		Metric:            VolumeMetricDistinctPatients,
		HistoryDays:       14,
		MinHistoryDays:    5,
		MADFactor:         3,
		SelfFactor:        2,
		PeerFactor:        2,
		NewUserPeerFactor: 3,
		MinPeers:          3,
		MinCount:          20,
		HighRatio:         4,
		CriticalRatio:     10,
		SampleEventIDs:    10,
	}
}

// Validate checks the configuration; keys are relative to the detector's
// (the config loader prefixes "detectors.volume.").
func (c *VolumeConfig) Validate() error {
	errs := []error{c.BaseConfig.Validate()}
	check := func(ok bool, key, format string, args ...any) {
		if !ok {
			errs = append(errs, fieldErrorf(key, format, args...))
		}
	}
	check(c.Metric == VolumeMetricDistinctPatients || c.Metric == VolumeMetricAccesses,
		"metric", "must be %q or %q (got %q)", VolumeMetricDistinctPatients, VolumeMetricAccesses, c.Metric)
	check(c.HistoryDays >= 2 && c.HistoryDays <= 60, "history_days", "must be between 2 and 60 (got %d)", c.HistoryDays)
	check(c.MinHistoryDays >= 1 && c.MinHistoryDays <= c.HistoryDays, "min_history_days",
		"must be between 1 and history_days (%d) (got %d)", c.HistoryDays, c.MinHistoryDays)
	check(c.MADFactor > 0, "mad_factor", "must be > 0 (got %g)", c.MADFactor)
	check(c.SelfFactor >= 1, "self_factor", "must be ≥ 1 (got %g)", c.SelfFactor)
	check(c.PeerFactor > 1, "peer_factor", "must be > 1 (got %g)", c.PeerFactor)
	check(c.NewUserPeerFactor >= c.PeerFactor, "new_user_peer_factor", "must be ≥ peer_factor (%g) (got %g)", c.PeerFactor, c.NewUserPeerFactor)
	check(c.MinPeers >= 1, "min_peers", "must be ≥ 1 (got %d)", c.MinPeers)
	check(c.MinCount >= 1, "min_count", "must be ≥ 1 (got %d)", c.MinCount)
	check(c.HighRatio > 1, "high_ratio", "must be > 1 (got %g)", c.HighRatio)
	check(c.CriticalRatio >= c.HighRatio, "critical_ratio", "must be ≥ high_ratio (%g) (got %g)", c.HighRatio, c.CriticalRatio)
	check(c.SampleEventIDs >= 0 && c.SampleEventIDs <= schemas.MaxFindingEventIDs, "sample_event_ids",
		"must be between 0 and %d (got %d)", schemas.MaxFindingEventIDs, c.SampleEventIDs)
	return errors.Join(errs...)
}

// Volume flags users who open far more patient charts in a local day than
// both their own recent days and their peers on the same day.
//
// # Windows and time
//
// A window is one user's local calendar day at one facility, in that
// facility's time zone: 00:00 to the next 00:00, so 23 or 25 hours on DST
// change days (where DST skips local midnight, the day starts at the
// transition). Windows close in FlushUntil once the watermark reaches the
// day's end; findings are emitted then. An event whose day has already
// closed (its day ends at or before the last watermark) is dropped and
// counted in LateEvents: a closed window is never reopened and the late
// event is not carried into another day.
//
// # Baselines
//
// The personal baseline is the median and MAD of the user's counts on the
// days they worked in the previous history_days local days (days without
// events are not zeros). It is not hour-of-week aware. Users without enough
// history and without a peer group never fire.
//
// The peer baseline is the median count, on the same local day, of the
// other users of the same role and department at the same facility who
// worked that day, falling back to the same role across departments when
// the department group is smaller than min_peers. Comparing with the same
// day makes a busy day for everyone (a surge in the ED) not fire. One
// Volume sees one Kafka partition, so on its own its peers are the random
// subset of the real peer group whose users hash to that partition: with
// P partitions a department of D users yields about D/P peers, and small
// departments often fall back to role-only or to no peer check. After
// Engine.DeferPeers it judges nothing itself: each closed day, with the
// user's personal baseline, goes to a PeerStage shared by every
// partition, which judges it against the whole peer group.
//
// # Memory
//
// Per (user, facility) with activity in the last history_days days: the
// map entry and state (~120 B), one 12-byte record per worked day in the
// history (≤ 170 B at 14 days), and while the day is open a window of
// ~90 B plus the distinct counter (4 B per patient up to 64 patients, then
// a fixed 256-byte sketch) and the sample ids (~40 B each, 10 by default):
// about 1 KB for an active user with the defaults (BenchmarkStateMemory
// measures 977 B with 14 days of history, 30 patients and 10 ids of 36
// bytes), ~300 B for a user who worked recently but not today. Users with no activity for history_days
// days are forgotten. A user has at most 8 open days; events for a further
// day are dropped (counted in LateEvents).
//
// Volume is not safe for concurrent use; the Engine calls it from one
// goroutine.
type Volume struct {
	cfg  VolumeConfig
	env  Env
	locs locationCache

	users   map[volKey]*volUser
	buckets map[volBucketKey]*volBucket
	groups  map[volGroup]*volGroup // interned (role, department) pairs

	watermark int64 // last watermark passed to FlushUntil (unix ns); math.MinInt64 before the first
	nextClose int64 // earliest end among open windows; math.MaxInt64 when none
	late      uint64

	// deferred: closed days are kept in days for a PeerStage (see
	// Engine.DeferPeers) instead of being judged against this partition's
	// peers.
	deferred bool
	days     []PeerDay

	// scratch, reused across flushes
	histScratch []float64
	devScratch  []float64
	freeSets    [][]uint32
}

// volKey identifies one user's series: a day is local to a facility.
type volKey struct{ user, facility string }

type volGroup struct{ role, department string }

// volUser is one (user, facility) series.
type volUser struct {
	key  volKey
	hist []volDay    // worked days, oldest first, all within the last history_days days
	open []volWindow // open day windows, oldest first
}

// volDay is a closed worked day.
type volDay struct {
	day      civilDay
	distinct uint32
	accesses uint32
}

// volWindow is an open day.
type volWindow struct {
	day        civilDay
	start, end int64 // unix ns, [start, end)
	group      *volGroup
	accesses   uint32
	patients   patientSet
	ids        idSample
}

type volBucketKey struct {
	facility string
	day      civilDay
}

// volBucket lists the users with an open window for one facility-day, so
// a flush touches only the windows it closes.
type volBucket struct {
	key   volBucketKey
	end   int64
	users []*volUser
}

const volMaxOpenDays = 8

// NewVolume builds a volume detector from a validated configuration.
func NewVolume(cfg *VolumeConfig, env Env) (*Volume, error) {
	if cfg == nil {
		cfg = DefaultVolumeConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, prefixErrors("detectors."+volumeName, err)
	}
	v := &Volume{cfg: *cfg, env: env, locs: newLocationCache(env.Location)}
	v.reset()
	return v, nil
}

func (v *Volume) reset() {
	v.users = make(map[volKey]*volUser)
	v.buckets = make(map[volBucketKey]*volBucket)
	v.groups = make(map[volGroup]*volGroup)
	v.watermark = math.MinInt64
	v.nextClose = math.MaxInt64
	v.late = 0
}

// Name returns "volume".
func (v *Volume) Name() string { return volumeName }

// LateEvents returns how many events were dropped because their local day
// had already closed (or the user had too many open days).
func (v *Volume) LateEvents() uint64 { return v.late }

// Detect counts ev into its user's local-day window. It never returns
// findings; they come from FlushUntil when the day closes.
func (v *Volume) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	if ev.UserID == "" {
		return nil, nil
	}
	t := eventNanos(ev.EventTime)
	u := v.users[volKey{ev.UserID, ev.FacilityID}]
	var w *volWindow
	if u != nil {
		for i := range u.open {
			if o := &u.open[i]; o.start <= t && t < o.end {
				w = o
				break
			}
		}
	}
	if w == nil {
		w = v.openWindow(u, ev)
		if w == nil {
			v.late++
			return nil, nil
		}
	}
	if w.accesses < math.MaxUint32 {
		w.accesses++
	}
	if ev.PatientID != "" {
		w.patients.add(hashID(ev.PatientID))
	}
	w.ids.add(ev.EventID, v.cfg.SampleEventIDs)
	return nil, nil
}

// openWindow opens the window for ev's local day (creating the user if
// needed), or returns nil when that day has already closed.
func (v *Volume) openWindow(u *volUser, ev *schemas.AccessEvent) *volWindow {
	loc := v.locs.get(ev.FacilityID)
	day := civilDayOf(ev.EventTime.In(loc))
	start, end := localDayBounds(day, loc)
	if eventNanos(end) <= v.watermark {
		return nil
	}
	if u == nil {
		k := volKey{strings.Clone(ev.UserID), strings.Clone(ev.FacilityID)}
		u = &volUser{key: k}
		v.users[k] = u
	}
	if len(u.open) >= volMaxOpenDays {
		return nil
	}
	for i := range u.open {
		if u.open[i].day == day { // unreachable unless bounds disagree; keep one window per day
			return &u.open[i]
		}
	}
	w := volWindow{day: day, start: eventNanos(start), end: eventNanos(end), group: v.groupOf(ev)}
	if n := len(v.freeSets); n > 0 {
		w.patients.words = v.freeSets[n-1]
		v.freeSets = v.freeSets[:n-1]
	}
	i, _ := slices.BinarySearchFunc(u.open, day, func(o volWindow, d civilDay) int { return int(o.day - d) })
	u.open = slices.Insert(u.open, i, w)
	v.addToBucket(u, day, w.end)
	return &u.open[i]
}

func (v *Volume) addToBucket(u *volUser, day civilDay, end int64) {
	bk := volBucketKey{u.key.facility, day}
	b := v.buckets[bk]
	if b == nil {
		b = &volBucket{key: bk, end: end}
		v.buckets[bk] = b
	}
	b.users = append(b.users, u)
	if end < v.nextClose {
		v.nextClose = end
	}
}

// groupOf interns the event's (role, department), falling back to the
// reference user when the event carries none.
func (v *Volume) groupOf(ev *schemas.AccessEvent) *volGroup {
	g := volGroup{ev.UserRole, ev.UserDepartment}
	if (g.role == "" || g.department == "") && v.env.Reference != nil {
		if ref := v.env.Reference(); ref != nil {
			if u, ok := eventUser(v.env, ref, ev); ok {
				if g.role == "" {
					g.role = u.Role
				}
				if g.department == "" {
					g.department = u.Department
				}
			}
		}
	}
	return v.intern(g)
}

func (v *Volume) intern(g volGroup) *volGroup {
	if p, ok := v.groups[g]; ok {
		return p
	}
	p := &volGroup{strings.Clone(g.role), strings.Clone(g.department)}
	v.groups[*p] = p
	return p
}

// FlushUntil closes every day window that ends at or before watermark and
// returns their findings, ordered by day end, facility, then user.
func (v *Volume) FlushUntil(_ context.Context, watermark time.Time) ([]schemas.Finding, error) {
	wm := eventNanos(watermark)
	if wm <= v.watermark {
		return nil, nil
	}
	v.watermark = wm
	if wm < v.nextClose {
		return nil, nil
	}
	var closing []*volBucket
	for _, b := range v.buckets {
		if b.end <= wm {
			closing = append(closing, b)
		}
	}
	slices.SortFunc(closing, func(a, b *volBucket) int {
		if a.end != b.end {
			return cmpInt64(a.end, b.end)
		}
		return strings.Compare(a.key.facility, b.key.facility)
	})
	var out []schemas.Finding
	closed := map[string]civilDay{} // latest day closed now, per facility
	for _, b := range closing {
		delete(v.buckets, b.key)
		out = v.closeBucket(b, out)
		closed[b.key.facility] = max(closed[b.key.facility], b.key.day)
	}
	v.nextClose = math.MaxInt64
	for _, b := range v.buckets {
		v.nextClose = min(v.nextClose, b.end)
	}
	v.evict(closed)
	return out, nil
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// closeBucket closes one facility-day: every user's window is removed and
// summarised as a PeerDay (the day's counts and the user's personal
// baseline from the days before it), the day is added to the user's
// history, and the PeerDays are judged against the same day's peers of
// this partition, or kept for a PeerStage when deferred.
func (v *Volume) closeBucket(b *volBucket, out []schemas.Finding) []schemas.Finding {
	slices.SortFunc(b.users, func(x, y *volUser) int { return strings.Compare(x.key.user, y.key.user) })
	days := make([]PeerDay, 0, len(b.users))
	for _, u := range b.users {
		i := slices.IndexFunc(u.open, func(w volWindow) bool { return w.day == b.key.day })
		if i < 0 {
			continue
		}
		w := u.open[i]
		u.open = slices.Delete(u.open, i, i+1)
		days = append(days, v.peerDay(u, &w))
		u.addHistory(volDay{day: w.day, distinct: w.patients.count(), accesses: w.accesses}, v.cfg.HistoryDays)
		if words := w.patients.words; cap(words) >= distinctExactMax && len(v.freeSets) < 1024 {
			v.freeSets = append(v.freeSets, words[:0])
		}
	}
	if v.deferred {
		v.days = append(v.days, days...)
		return out
	}
	return judgeDays(&v.cfg, days, v.locs.get(b.key.facility), out)
}

// peerDay summarises a closed window with the user's personal baseline
// over the worked days in [day-history_days, day-1] (computed only when the
// day's count reaches min_count: below it nothing fires).
func (v *Volume) peerDay(u *volUser, w *volWindow) PeerDay {
	d := PeerDay{
		Facility: u.key.facility, User: u.key.user, Role: w.group.role, Department: w.group.department,
		Day: int32(w.day), Start: w.start, End: w.end,
		Distinct: w.patients.count(), Accesses: w.accesses, Value: float64(v.metric(w)),
		EventIDs: w.ids.strings(),
	}
	if d.Value < float64(v.cfg.MinCount) {
		return d
	}
	hist := v.histScratch[:0]
	for _, h := range u.hist {
		if h.day < w.day && h.day >= w.day-civilDay(v.cfg.HistoryDays) {
			hist = append(hist, h.metric(v.cfg.Metric == VolumeMetricAccesses))
		}
	}
	var mad float64
	d.Median, mad, v.devScratch = medianMAD(hist, v.devScratch)
	v.histScratch = hist
	d.Spread = max(float64(madToSigma*mad), math.Sqrt(d.Median))
	d.HistoryDays = len(hist)
	return d
}

func (v *Volume) metric(w *volWindow) uint32 {
	if v.cfg.Metric == VolumeMetricAccesses {
		return w.accesses
	}
	return w.patients.count()
}

func (d volDay) metric(accesses bool) float64 {
	if accesses {
		return float64(d.accesses)
	}
	return float64(d.distinct)
}

// addHistory appends a closed day and drops days older than historyDays.
func (u *volUser) addHistory(d volDay, historyDays int) {
	i, _ := slices.BinarySearchFunc(u.hist, d.day, func(h volDay, x civilDay) int { return int(h.day - x) })
	if i < len(u.hist) && u.hist[i].day == d.day {
		u.hist[i] = d // cannot happen: one window per day
	} else {
		if u.hist == nil {
			u.hist = make([]volDay, 0, min(historyDays, 16))
		}
		u.hist = slices.Insert(u.hist, i, d)
	}
	u.prune(u.hist[len(u.hist)-1].day, historyDays)
}

// prune drops history days before latest-historyDays: a window for day
// latest or later never looks further back.
func (u *volUser) prune(latest civilDay, historyDays int) {
	cut := 0
	for cut < len(u.hist) && u.hist[cut].day < latest-civilDay(historyDays) {
		cut++
	}
	if cut > 0 {
		u.hist = slices.Delete(u.hist, 0, cut)
	}
}

// judgeDays judges one facility-day's closed user-days against each other
// as peers (days must all be of that facility and day, sorted by user) and
// appends the findings, in the order of days.
func judgeDays(cfg *VolumeConfig, days []PeerDay, loc *time.Location, out []schemas.Finding) []schemas.Finding {
	// Peer groups for this facility-day: by (role, department) and by role.
	type roleDept struct{ role, department string }
	byGroup := map[roleDept][]float64{}
	byRole := map[string][]float64{}
	for i := range days {
		d := &days[i]
		byGroup[roleDept{d.Role, d.Department}] = append(byGroup[roleDept{d.Role, d.Department}], d.Value)
		byRole[d.Role] = append(byRole[d.Role], d.Value)
	}
	for _, xs := range byGroup {
		slices.Sort(xs)
	}
	for _, xs := range byRole {
		slices.Sort(xs)
	}
	for i := range days {
		d := &days[i]
		if f, ok := judge(cfg, d, byGroup[roleDept{d.Role, d.Department}], byRole[d.Role], loc); ok {
			out = append(out, f)
		}
	}
	return out
}

// judge decides whether one closed user-day fires, given the same day's
// values of its (role, department) and role groups (sorted, d's included).
func judge(cfg *VolumeConfig, d *PeerDay, group, role []float64, loc *time.Location) (schemas.Finding, bool) {
	value := d.Value
	if value < float64(cfg.MinCount) {
		return schemas.Finding{}, false
	}
	med, spread := d.Median, d.Spread
	haveHistory := d.HistoryDays >= cfg.MinHistoryDays

	// Peer baseline: same day, same facility, excluding the user.
	peerScope, peerN, peerMed := "none", 0, 0.0
	switch {
	case len(group)-1 >= cfg.MinPeers:
		peerScope, peerN, peerMed = "role_department", len(group)-1, medianWithout(group, value)
	case len(role)-1 >= cfg.MinPeers:
		peerScope, peerN, peerMed = "role", len(role)-1, medianWithout(role, value)
	}
	havePeers := peerN > 0

	var threshold, reference float64
	if haveHistory {
		selfThr := max(med+float64(cfg.MADFactor*spread), float64(cfg.SelfFactor*med))
		if value <= selfThr {
			return schemas.Finding{}, false
		}
		threshold = selfThr
		if havePeers {
			peerThr := float64(cfg.PeerFactor * peerMed)
			if value <= peerThr {
				return schemas.Finding{}, false
			}
			threshold = max(threshold, peerThr)
		} else if cfg.RequirePeers {
			return schemas.Finding{}, false
		}
		reference = med
	} else {
		if !havePeers {
			return schemas.Finding{}, false
		}
		peerThr := float64(cfg.NewUserPeerFactor * peerMed)
		if value <= peerThr {
			return schemas.Finding{}, false
		}
		threshold = peerThr
		reference = peerMed
	}
	threshold = max(threshold, float64(cfg.MinCount))

	ratio := value / max(reference, 1)
	sev := cfg.Severity
	// The score places the finding in its severity's band by where its
	// ratio lies, on a log scale, within the ratios that give that severity:
	// [1, high_ratio) for the base severity, [high_ratio, critical_ratio)
	// for high, and critical_ratio up to 10× critical_ratio for critical.
	lo, hi := 1.0, cfg.HighRatio
	if ratio >= cfg.CriticalRatio {
		sev = sevMax(sev, schemas.SeverityCritical)
		lo, hi = cfg.CriticalRatio, 10*cfg.CriticalRatio
	} else if ratio >= cfg.HighRatio {
		sev = sevMax(sev, schemas.SeverityHigh)
		lo, hi = cfg.HighRatio, cfg.CriticalRatio
	}
	score := schemas.ScoreWithin(sev, logPosition(ratio, lo, hi))

	start, end := time.Unix(0, d.Start).UTC(), time.Unix(0, d.End).UTC()
	facts := map[string]string{
		"metric":            cfg.Metric,
		"local_date":        civilDay(d.Day).String(),
		"time_zone":         loc.String(),
		"distinct_patients": strconv.FormatUint(uint64(d.Distinct), 10),
		"accesses":          strconv.FormatUint(uint64(d.Accesses), 10),
		"history_days":      strconv.Itoa(d.HistoryDays),
		"peer_group":        peerScope,
		"peers":             strconv.Itoa(peerN),
	}
	if d.Role != "" {
		facts["role"] = d.Role
	}
	if d.Department != "" {
		facts["department"] = d.Department
	}
	f := schemas.Finding{
		FindingID:   schemas.FindingID(volumeName, []string{d.User, d.Facility}, start, end),
		Detector:    volumeName,
		Severity:    sev,
		Score:       score,
		FacilityID:  d.Facility,
		UserID:      d.User,
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    slices.Clone(d.EventIDs),
		Explanation: explainVolume(cfg, d, peerMed, haveHistory, havePeers),
		Evidence: schemas.Evidence{
			Observed:  value,
			Baseline:  roundTo(med, 2),
			Spread:    roundTo(spread, 2),
			PeerValue: roundTo(peerMed, 2),
			Threshold: roundTo(threshold, 2),
			Facts:     facts,
		},
	}
	return f, true
}

// logPosition is where x lies between lo and hi on a log scale: 0 at lo
// (or below), 1 at hi (or above); 1 when hi ≤ lo.
func logPosition(x, lo, hi float64) float64 {
	if hi <= lo {
		return 1
	}
	return math.Log(max(x, lo)/lo) / math.Log(hi/lo)
}

func roundTo(x float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(x*p) / p
}

// explainVolume renders e.g. "user U123 (nurse, cardiology) opened 212
// distinct patient charts on 2026-03-04; their usual is 31 ± 6 and their
// peers' 28".
func explainVolume(cfg *VolumeConfig, d *PeerDay, peerMed float64, haveHistory, havePeers bool) string {
	var b strings.Builder
	b.WriteString("user ")
	b.WriteString(d.User)
	switch {
	case d.Role != "" && d.Department != "":
		fmt.Fprintf(&b, " (%s, %s)", d.Role, d.Department)
	case d.Role != "":
		fmt.Fprintf(&b, " (%s)", d.Role)
	case d.Department != "":
		fmt.Fprintf(&b, " (%s)", d.Department)
	}
	day := civilDay(d.Day)
	if cfg.Metric == VolumeMetricAccesses {
		fmt.Fprintf(&b, " made %s chart accesses on %s", fmtNum(d.Value), day)
	} else {
		fmt.Fprintf(&b, " opened %s distinct patient charts on %s", fmtNum(d.Value), day)
	}
	switch {
	case haveHistory && havePeers:
		fmt.Fprintf(&b, "; their usual is %s ± %s and their peers' %s", fmtNum(math.Round(d.Median)), fmtNum(math.Round(d.Spread)), fmtNum(math.Round(peerMed)))
	case haveHistory:
		fmt.Fprintf(&b, "; their usual is %s ± %s (no peer group large enough to compare)", fmtNum(math.Round(d.Median)), fmtNum(math.Round(d.Spread)))
	default:
		fmt.Fprintf(&b, "; with %d worked days of history (too few for a personal baseline), their peers' that day is %s", d.HistoryDays, fmtNum(math.Round(peerMed)))
	}
	return b.String()
}

// evict forgets users with no open window whose history cannot matter any
// more: every later window at their facility is for a day after the latest
// closed one, and looks back history_days from there. Keying this on closed
// days rather than on the watermark keeps histories through the Engine's
// end-of-input Flush (watermark = year 9999).
func (v *Volume) evict(closed map[string]civilDay) {
	for k, u := range v.users {
		last, ok := closed[k.facility]
		if !ok || len(u.open) > 0 {
			continue
		}
		u.prune(last+1, v.cfg.HistoryDays)
		if len(u.hist) == 0 {
			delete(v.users, k)
		}
	}
}

// volumeSnapshotVersion is bumped whenever the snapshot layout changes.
const volumeSnapshotVersion = 1

// Snapshot writes the detector's whole state (watermark, histories, open
// windows) in a compact versioned binary form.
func (v *Volume) Snapshot(w io.Writer) error {
	s := newSnapWriter(w, volumeName, volumeSnapshotVersion)
	s.varint(v.watermark)
	s.uvarint(v.late)
	keys := make([]volKey, 0, len(v.users))
	for k := range v.users {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b volKey) int {
		if c := strings.Compare(a.user, b.user); c != 0 {
			return c
		}
		return strings.Compare(a.facility, b.facility)
	})
	s.uvarint(uint64(len(keys)))
	for _, k := range keys {
		u := v.users[k]
		s.str(k.user)
		s.str(k.facility)
		s.uvarint(uint64(len(u.hist)))
		for _, h := range u.hist {
			s.varint(int64(h.day))
			s.uvarint(uint64(h.distinct))
			s.uvarint(uint64(h.accesses))
		}
		s.uvarint(uint64(len(u.open)))
		for i := range u.open {
			o := &u.open[i]
			s.varint(int64(o.day))
			s.varint(o.start)
			s.varint(o.end)
			s.str(o.group.role)
			s.str(o.group.department)
			s.uvarint(uint64(o.accesses))
			s.patientSet(&o.patients)
			s.uvarint(uint64(o.ids.n))
			s.bytes(o.ids.buf)
		}
	}
	return s.finish()
}

// Restore replaces the detector's state with a snapshot written by
// Snapshot. On error the state is left empty.
func (v *Volume) Restore(r io.Reader) error {
	v.reset()
	s, version := newSnapReader(r, volumeName)
	if s.err == nil && version != volumeSnapshotVersion {
		return fmt.Errorf("volume snapshot version %d not supported (want %d)", version, volumeSnapshotVersion)
	}
	v.watermark = s.varint()
	v.late = s.uvarint()
	n := s.count(1 << 32)
	for i := 0; i < n && s.err == nil; i++ {
		u := &volUser{key: volKey{s.str(), s.str()}}
		nh := s.count(uint64(v.cfg.HistoryDays) + 64)
		for j := 0; j < nh && s.err == nil; j++ {
			u.hist = append(u.hist, volDay{day: civilDay(s.varint()), distinct: uint32(s.uvarint()), accesses: uint32(s.uvarint())})
		}
		no := s.count(volMaxOpenDays)
		for j := 0; j < no && s.err == nil; j++ {
			w := volWindow{day: civilDay(s.varint()), start: s.varint(), end: s.varint()}
			w.group = v.intern(volGroup{s.str(), s.str()})
			w.accesses = uint32(s.uvarint())
			w.patients = s.patientSet()
			w.ids.n = uint8(s.count(math.MaxUint8))
			w.ids.buf = s.bytes()
			u.open = append(u.open, w)
		}
		if s.err != nil {
			break
		}
		v.users[u.key] = u
		for j := range u.open {
			v.addToBucket(u, u.open[j].day, u.open[j].end)
		}
	}
	if err := s.end(); err != nil {
		v.reset()
		return fmt.Errorf("restore volume: %w", err)
	}
	return nil
}
