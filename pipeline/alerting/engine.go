package alerting

import (
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// engine is the pure state machine behind Manager.Observe: findings in,
// alerts out, no I/O and no wall clock. It is not safe for concurrent use.
type engine struct {
	cfg    Config
	rules  []*ruleSpec
	groups map[string]*group // by alert id
	risk   map[string]*userRisk
	surge  map[string]*patientSurge

	// watermark is the newest finding time seen; state behind it by more
	// than its window plus limits.lateness expires.
	watermark time.Time
	lastSweep time.Time

	evictions map[string]int // kind → count since the last drain
	tooLate   int            // rule applications skipped as too late, since the last drain

	// persistent: the state lives in a StateStore and the maps above are
	// only the working set of one Observe, loaded before and written back
	// after it. Nothing then expires by watermark and nothing is too late.
	persistent                         bool
	versions                           map[string]uint64 // kind+"\x00"+key → loaded version
	dirtyGroups, dirtyRisk, dirtySurge map[string]bool
	members                            []Membership // findings newly counted in a group
}

type ruleSpec struct {
	cfg                                   RuleConfig
	byUser, byDetector, byPatient, byFacl bool
	detectors                             map[string]bool
	minCount                              uint32
}

func newEngine(cfg Config) *engine {
	e := &engine{
		cfg:       cfg,
		groups:    map[string]*group{},
		risk:      map[string]*userRisk{},
		surge:     map[string]*patientSurge{},
		evictions: map[string]int{},
		versions:  map[string]uint64{},

		dirtyGroups: map[string]bool{},
		dirtyRisk:   map[string]bool{},
		dirtySurge:  map[string]bool{},
	}
	for _, r := range cfg.Rules {
		s := &ruleSpec{cfg: r, minCount: uint32(max(r.MinCount, 1))}
		for _, g := range r.GroupBy {
			switch g {
			case GroupByUser:
				s.byUser = true
			case GroupByDetector:
				s.byDetector = true
			case GroupByPatient:
				s.byPatient = true
			case GroupByFacility:
				s.byFacl = true
			}
		}
		if len(r.Detectors) > 0 {
			s.detectors = map[string]bool{}
			for _, d := range r.Detectors {
				s.detectors[strings.TrimSpace(d)] = true
			}
		}
		e.rules = append(e.rules, s)
	}
	return e
}

// groupKind tells the rule groups from the built-in accumulators.
type groupKind uint8

const (
	kindRule groupKind = iota
	kindRisk
	kindSurge
)

// idAt is a finding id with its time, for the sorted id list.
type idAt struct {
	ms int64
	id string
}

// group is the state of one (future) alert.
type group struct {
	id     string
	rule   string
	kind   groupKind
	spec   *ruleSpec // kindRule only
	repeat time.Duration

	// Key values; empty when the rule does not group by them.
	userID, detector, patientID, facilityID string

	windowStart, windowEnd time.Time
	firstSeen, lastSeen    time.Time
	count                  uint32
	severity               schemas.Severity
	score                  uint8

	seen      map[string]struct{} // finding ids counted (capped)
	ids       []idAt              // earliest finding ids (capped)
	patients  map[string]struct{} // capped
	users     map[string]struct{} // capped
	detectors map[string]struct{} // capped
	// more*: a cap was hit, so the matching count is a lower bound.
	morePatients, moreUsers bool

	// first is the earliest finding: its explanation ends the alert's.
	firstMs       int64
	firstID       string
	firstExpl     string
	firstFacility string

	// user_risk: the peak risk and the sentence describing it.
	riskPeak     float64
	riskSentence string

	raised       bool
	notified     bool
	notifiedAt   time.Time
	notifiedRank int
	// notifiedVersion is the version last handed to the outputs: the
	// idempotency key of that notification (alert id + version).
	notifiedVersion uint64
	written         uint64 // version last emitted
	writtenRank     int
}

func (e *engine) newGroup(id, rule string, kind groupKind, start time.Time, window time.Duration) *group {
	return &group{
		id:          id,
		rule:        rule,
		kind:        kind,
		windowStart: start,
		windowEnd:   start.Add(window),
		seen:        map[string]struct{}{},
		patients:    map[string]struct{}{},
		users:       map[string]struct{}{},
		detectors:   map[string]struct{}{},
	}
}

// openGroup returns the group id, creating it (set fills in what the kind
// of group keeps) when its window has not expired; nil when it has, so a
// late finding cannot reopen a window already closed.
func (e *engine) openGroup(id, rule string, kind groupKind, start time.Time, window, repeat time.Duration, set func(*group)) *group {
	if g := e.groups[id]; g != nil {
		return g
	}
	if e.expired(start, window) {
		return nil
	}
	g := e.newGroup(id, rule, kind, start, window)
	g.repeat = repeat
	set(g)
	e.addGroup(g)
	return g
}

// observation is a finding with its derived time.
type observation struct {
	f  *schemas.Finding
	t  time.Time
	ms int64
}

// result of one observe call.
type observeResult struct {
	alerts     []Alert
	suppressed int
	invalid    int
	observed   int
}

// observe feeds a batch of findings through every rule and returns the
// alerts that changed. Findings are processed in finding-time order (ties
// by id), so the outcome does not depend on the order within a batch.
func (e *engine) observe(findings []schemas.Finding) observeResult {
	var res observeResult
	obs := make([]observation, 0, len(findings))
	for i := range findings {
		f := &findings[i]
		if f.FindingID == "" || !f.Severity.Valid() || f.WindowEnd.IsZero() || (f.UserID == "" && f.PatientID == "") {
			res.invalid++
			continue
		}
		if f.Suppressed {
			res.suppressed++
			continue
		}
		t := findingTime(f)
		obs = append(obs, observation{f: f, t: t, ms: t.UnixMilli()})
	}
	sort.SliceStable(obs, func(i, j int) bool {
		if obs[i].ms != obs[j].ms {
			return obs[i].ms < obs[j].ms
		}
		return obs[i].f.FindingID < obs[j].f.FindingID
	})
	touched := map[*group]struct{}{}
	var order []*group
	touch := func(g *group) {
		if _, ok := touched[g]; !ok {
			touched[g] = struct{}{}
			order = append(order, g)
		}
		e.dirtyGroups[g.id] = true
	}
	for _, o := range obs {
		res.observed++
		if o.t.After(e.watermark) {
			e.watermark = o.t
		}
		for _, spec := range e.rules {
			if g := e.applyRule(spec, o); g != nil {
				touch(g)
			}
		}
		if e.cfg.UserRisk.Enabled {
			for _, g := range e.applyRisk(o) {
				touch(g)
			}
		}
		if e.cfg.PatientSurge.Enabled {
			if g := e.applySurge(o); g != nil {
				touch(g)
			}
		}
	}
	for _, g := range order {
		if a, ok := e.emit(g); ok {
			res.alerts = append(res.alerts, a)
		}
	}
	if !e.persistent {
		e.maybeSweep()
	}
	return res
}

// --- rules -----------------------------------------------------------------

// ruleGroupID is the id of the group of rule s that finding f (at time t)
// joins; ok is false when the rule does not take f.
func (e *engine) ruleGroupID(s *ruleSpec, f *schemas.Finding, t time.Time) (string, bool) {
	if f.Severity.Rank() < s.cfg.MinSeverity.Rank() {
		return "", false
	}
	if s.detectors != nil && !s.detectors[f.Detector] {
		return "", false
	}
	if (s.byUser && f.UserID == "") || (s.byPatient && f.PatientID == "") {
		return "", false
	}
	var key []string
	if s.byUser {
		key = append(key, "user="+f.UserID)
	}
	if s.byDetector {
		key = append(key, "detector="+f.Detector)
	}
	if s.byPatient {
		key = append(key, "patient="+f.PatientID)
	}
	if s.byFacl {
		key = append(key, "facility="+f.FacilityID)
	}
	return AlertID(s.cfg.Name, key, windowStart(t, s.cfg.Window)), true
}

func (e *engine) applyRule(s *ruleSpec, o observation) *group {
	f := o.f
	if f.Severity.Rank() < s.cfg.MinSeverity.Rank() {
		return nil
	}
	if s.detectors != nil && !s.detectors[f.Detector] {
		return nil
	}
	if (s.byUser && f.UserID == "") || (s.byPatient && f.PatientID == "") {
		return nil
	}
	var key []string
	var user, det, pat, fac string
	if s.byUser {
		user = f.UserID
		key = append(key, "user="+user)
	}
	if s.byDetector {
		det = f.Detector
		key = append(key, "detector="+det)
	}
	if s.byPatient {
		pat = f.PatientID
		key = append(key, "patient="+pat)
	}
	if s.byFacl {
		fac = f.FacilityID
		key = append(key, "facility="+fac)
	}
	start := windowStart(o.t, s.cfg.Window)
	id := AlertID(s.cfg.Name, key, start)
	g := e.openGroup(id, s.cfg.Name, kindRule, start, s.cfg.Window, s.cfg.RepeatInterval, func(g *group) {
		g.spec = s
		g.userID, g.detector, g.patientID, g.facilityID = user, det, pat, fac
	})
	if g == nil {
		return nil
	}
	if !e.addFinding(g, o) {
		return nil
	}
	if g.count >= s.minCount {
		g.raised = true
	}
	return g
}

// addFinding adds o to g; it reports whether g changed. A finding already
// counted only raises the severity or score.
func (e *engine) addFinding(g *group, o observation) bool {
	f := o.f
	lim := &e.cfg.Limits
	if _, dup := g.seen[f.FindingID]; dup {
		changed := false
		if f.Severity.Rank() > g.severity.Rank() {
			g.severity = f.Severity
			changed = true
		}
		if f.Score > g.score {
			g.score = f.Score
			changed = true
		}
		return changed
	}
	if len(g.seen) < lim.MaxTrackedFindings {
		g.seen[f.FindingID] = struct{}{}
	}
	if e.persistent {
		e.members = append(e.members, Membership{FindingID: f.FindingID, AlertID: g.id, Rule: g.rule})
	}
	if g.count < math.MaxUint32 {
		g.count++
	}
	if g.firstSeen.IsZero() || o.t.Before(g.firstSeen) {
		g.firstSeen = o.t
	}
	if o.t.After(g.lastSeen) {
		g.lastSeen = o.t
	}
	if f.Severity.Rank() > g.severity.Rank() {
		g.severity = f.Severity
	}
	if f.Score > g.score {
		g.score = f.Score
	}
	g.ids = insertID(g.ids, idAt{o.ms, f.FindingID}, lim.MaxFindingIDs)
	if f.PatientID != "" {
		g.morePatients = addCapped(g.patients, f.PatientID, lim.MaxTrackedEntities) || g.morePatients
	}
	if f.UserID != "" {
		g.moreUsers = addCapped(g.users, f.UserID, lim.MaxTrackedEntities) || g.moreUsers
	}
	addCapped(g.detectors, f.Detector, lim.MaxTrackedEntities)
	if g.firstID == "" || o.ms < g.firstMs || (o.ms == g.firstMs && f.FindingID < g.firstID) {
		g.firstMs, g.firstID, g.firstExpl, g.firstFacility = o.ms, f.FindingID, f.Explanation, f.FacilityID
	}
	return true
}

// expired reports whether a group of the window starting at start has
// expired (or would expire at once). A finding for it is too late:
// counting it in a fresh group would re-notify an alert already raised.
func (e *engine) expired(start time.Time, window time.Duration) bool {
	if e.persistent {
		return false // the group, if it ever existed, was loaded
	}
	if start.Add(window + e.cfg.Limits.Lateness).Before(e.watermark) {
		e.tooLate++
		return true
	}
	return false
}

// riskScore places accumulated risk in the band of the alert's severity
// (schemas/score.go): below the critical threshold, from the bottom of the
// band at the threshold to its top at the critical threshold (or twice the
// threshold when none is set); at or above it, from the bottom of the
// critical band at the critical threshold to its top at twice that.
func riskScore(total float64, c *UserRiskConfig, sev schemas.Severity) uint8 {
	lo, top := c.Threshold, c.CriticalThreshold
	if top <= c.Threshold {
		top = 2 * c.Threshold
	}
	if sev == schemas.SeverityCritical && c.CriticalThreshold > 0 {
		lo, top = c.CriticalThreshold, 2*c.CriticalThreshold
	}
	return schemas.ScoreWithin(sev, (total-lo)/(top-lo))
}

// insertID keeps ids sorted by (time, id) and at most n long.
func insertID(ids []idAt, x idAt, n int) []idAt {
	i := sort.Search(len(ids), func(i int) bool {
		return ids[i].ms > x.ms || (ids[i].ms == x.ms && ids[i].id >= x.id)
	})
	if i < len(ids) && ids[i] == x {
		return ids
	}
	if len(ids) >= n {
		if i >= n {
			return ids
		}
		ids = ids[:n-1]
	}
	return slices.Insert(ids, i, x)
}

// addCapped adds v to set unless the set is full; it reports whether v was
// left out.
func addCapped(set map[string]struct{}, v string, n int) bool {
	if _, ok := set[v]; ok {
		return false
	}
	if len(set) >= n {
		return true
	}
	set[v] = struct{}{}
	return false
}

// --- emit ------------------------------------------------------------------

// emit turns a changed group into an Alert and decides whether it is
// notified: when first raised, when its severity rises above the last
// notified one, or when the repeat interval has passed in finding time.
func (e *engine) emit(g *group) (Alert, bool) {
	if !g.raised {
		return Alert{}, false
	}
	v := alertVersion(g.count, g.lastSeen)
	rank := g.severity.Rank()
	change, notify := ChangeUpdated, false
	switch {
	case !g.notified:
		change, notify = ChangeNew, true
	case rank > g.notifiedRank:
		change, notify = ChangeEscalated, true
	case g.repeat > 0 && !g.lastSeen.Before(g.notifiedAt.Add(g.repeat)):
		change, notify = ChangeRepeated, true
	}
	if !notify && v == g.written && rank == g.writtenRank {
		return Alert{}, false
	}
	if notify {
		g.notified, g.notifiedAt, g.notifiedRank, g.notifiedVersion = true, g.lastSeen, rank, v
	}
	g.written, g.writtenRank = v, rank
	a := g.alert(e)
	a.Version, a.Change, a.Notify, a.NotifiedVersion = v, change, notify, g.notifiedVersion
	return a, true
}

// alert renders the group's current state.
func (g *group) alert(e *engine) Alert {
	a := Alert{
		AlertID:      g.id,
		Rule:         g.rule,
		Severity:     g.severity,
		Score:        g.score,
		FacilityID:   g.facilityID,
		UserID:       g.userID,
		PatientID:    g.patientID,
		FirstSeen:    g.firstSeen,
		LastSeen:     g.lastSeen,
		FindingCount: g.count,
		FindingIDs:   make([]string, len(g.ids)),
	}
	for i, x := range g.ids {
		a.FindingIDs[i] = x.id
	}
	if a.FacilityID == "" {
		a.FacilityID = g.firstFacility
	}
	// A rule that groups by detector names it; otherwise the rule's name
	// stands in, so the column is stable over the alert's life.
	a.Detector = g.rule
	if g.kind == kindRule && g.spec.byDetector {
		a.Detector = g.detector
	}
	switch g.kind {
	case kindRule:
		a.Summary = g.ruleSentence(false) + "."
		a.Explanation = joinExplanation(g.ruleSentence(true), "first", g.firstExpl)
	case kindRisk:
		a.Summary = g.riskSentence + "."
		a.Explanation = a.Summary
	case kindSurge:
		a.Summary = g.surgeSentence(e, false) + "."
		a.Explanation = g.surgeSentence(e, true) + "."
	}
	return a
}

func countPhrase(n int, more bool, word string) string {
	if more {
		return "at least " + plural(n, word)
	}
	return plural(n, word)
}

// detectorList returns the group's detectors, sorted.
func (g *group) detectorList() []string {
	ds := make([]string, 0, len(g.detectors))
	for d := range g.detectors {
		ds = append(ds, d)
	}
	sort.Strings(ds)
	return ds
}

// ruleSentence renders the group sentence; withPatient names the patient
// of patient-keyed groups.
func (g *group) ruleSentence(withPatient bool) string {
	n := int(g.count)
	ds := g.detectorList()
	findings := plural(n, "finding")
	switch {
	case len(ds) == 1:
		findings = plural(n, ds[0]+" finding")
	case len(ds) > 1:
		findings += " from " + plural(len(ds), "detector") + " (" + strings.Join(ds, ", ") + ")"
	}
	span := formatSpan(g.firstSeen, g.lastSeen)
	switch {
	case g.userID != "":
		s := "User " + g.userID + " triggered " + findings
		if np := len(g.patients); np > 0 {
			s += " on " + countPhrase(np, g.morePatients, "patient")
		}
		return s + " " + span
	case g.patientID != "":
		subject := "The record of patient " + g.patientID
		if !withPatient {
			subject = "One patient's record"
		}
		return subject + " drew " + findings + " from " + countPhrase(len(g.users), g.moreUsers, "user") + " " + span
	default:
		return "Findings: " + findings + " " + span
	}
}

// --- user risk -------------------------------------------------------------

type riskEntry struct {
	ms       int64
	id       string
	detector string
	score    float64
	facility string
}

type userRisk struct {
	entries []riskEntry // sorted by ms
}

// applyRisk adds o to its user's risk entries and evaluates the risk at
// the time of every entry whose window (Window up to and including it)
// holds o: the sum at an entry's time counts the entries up to it only.
// So the risk alerts are a function of the set of findings, not of the
// order in which they reach alerting (the peer stage's volume and
// break_glass findings arrive after later findings of the same user,
// by however much the slowest partition lags): a late finding is
// evaluated with the entries before it, and the entries after it are
// evaluated again with it. Entries are kept Window plus Limits.Lateness
// behind the user's newest without a StateStore (as the groups are), and
// up to Limits.MaxRiskEntriesPerUser with one, so no late finding is
// evaluated short.
func (e *engine) applyRisk(o observation) []*group {
	c := &e.cfg.UserRisk
	f := o.f
	if f.UserID == "" || f.Severity.Rank() < c.MinFindingSeverity.Rank() {
		return nil
	}
	u := e.risk[f.UserID]
	if u == nil {
		u = &userRisk{}
		e.risk[f.UserID] = u
		if len(e.risk) > e.cfg.Limits.MaxRiskUsers {
			e.evictRiskUsers()
		}
	}
	// The finding's score on the one scale (schemas/score.go): a finding
	// never contributes more than the top of its severity's band.
	score := float64(schemas.ClampScore(f.Severity, f.Score))
	if c.PerFindingCap > 0 && score > c.PerFindingCap {
		score = c.PerFindingCap
	}
	if !u.add(riskEntry{ms: o.ms, id: f.FindingID, detector: f.Detector, score: score, facility: f.FacilityID}, e.cfg.Limits.MaxRiskEntriesPerUser) {
		return nil
	}
	e.dirtyRisk[f.UserID] = true
	if !e.persistent {
		u.prune(u.entries[len(u.entries)-1].ms - (c.Window + e.cfg.Limits.Lateness).Milliseconds())
	}
	var changed []*group
	win := c.Window.Milliseconds()
	for j := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].ms >= o.ms }); j < len(u.entries) && u.entries[j].ms < o.ms+win; j++ {
		at := u.entries[j].ms
		if j+1 < len(u.entries) && u.entries[j+1].ms == at {
			continue // evaluated once, with every entry of that time
		}
		if g := e.evaluateRisk(f.UserID, u, at); g != nil && !slices.Contains(changed, g) {
			changed = append(changed, g)
		}
	}
	return changed
}

// evaluateRisk applies the user's risk at time at (ms, an entry's time):
// the decayed, capped sum of the entries in (at-Window, at]. Over the
// threshold it raises or updates the risk alert of at's alert window with
// those entries; it returns the group when it changed.
func (e *engine) evaluateRisk(user string, u *userRisk, at int64) *group {
	c := &e.cfg.UserRisk
	total, perDet, contributing := u.total(at, c)
	if total < c.Threshold {
		return nil
	}
	tEval := time.UnixMilli(at).UTC()
	start := windowStart(tEval, c.AlertWindow)
	id := AlertID(RuleUserRisk, []string{"user=" + user}, start)
	g := e.openGroup(id, RuleUserRisk, kindRisk, start, c.AlertWindow, c.RepeatInterval, func(g *group) { g.userID = user })
	if g == nil {
		return nil
	}
	changed := false
	for _, en := range contributing {
		fo := schemas.Finding{FindingID: en.id, Detector: en.detector, Severity: c.Severity, UserID: user, FacilityID: en.facility}
		if e.addFinding(g, observation{f: &fo, t: time.UnixMilli(en.ms).UTC(), ms: en.ms}) {
			changed = true
		}
	}
	sev := c.Severity
	if c.CriticalThreshold > 0 && total >= c.CriticalThreshold {
		sev = schemas.SeverityCritical
	}
	if sev.Rank() > g.severity.Rank() {
		g.severity = sev
		changed = true
	}
	if total > g.riskPeak {
		g.riskPeak = total
		g.score = riskScore(total, c, g.severity)
		g.riskSentence = riskSentence(user, total, c, tEval, len(contributing), perDet)
		changed = true
	}
	if g.riskSentence == "" {
		g.riskSentence = riskSentence(user, total, c, tEval, len(contributing), perDet)
	}
	g.raised = true
	if !changed {
		return nil
	}
	return g
}

// add inserts en, keeping entries sorted by time and id; it reports
// whether anything changed (a re-observed finding only counts if its
// score rose).
func (u *userRisk) add(en riskEntry, max int) bool {
	i := sort.Search(len(u.entries), func(i int) bool {
		return u.entries[i].ms > en.ms || (u.entries[i].ms == en.ms && u.entries[i].id >= en.id)
	})
	if i < len(u.entries) && u.entries[i].ms == en.ms && u.entries[i].id == en.id {
		if en.score > u.entries[i].score {
			u.entries[i].score = en.score
			return true
		}
		return false
	}
	u.entries = slices.Insert(u.entries, i, en)
	if len(u.entries) > max {
		u.entries = slices.Delete(u.entries, 0, len(u.entries)-max)
	}
	return true
}

// prune drops entries at or before cutoff (ms).
func (u *userRisk) prune(cutoff int64) {
	i := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].ms > cutoff })
	if i > 0 {
		u.entries = slices.Delete(u.entries, 0, i)
	}
}

type detContribution struct {
	detector string
	value    float64
}

// total sums the decayed, capped contributions at time at (ms) of the
// entries in (at-Window, at], which it also returns.
func (u *userRisk) total(at int64, c *UserRiskConfig) (float64, []detContribution, []riskEntry) {
	lo := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].ms > at-c.Window.Milliseconds() })
	hi := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].ms > at })
	in := u.entries[lo:hi]
	per := map[string]float64{}
	for _, en := range in {
		v := en.score
		if c.HalfLife > 0 {
			age := float64(at-en.ms) / float64(c.HalfLife.Milliseconds())
			v *= math.Exp2(-age)
		}
		per[en.detector] += v
	}
	out := make([]detContribution, 0, len(per))
	for d, v := range per {
		if c.PerDetectorCap > 0 && v > c.PerDetectorCap {
			v = c.PerDetectorCap
		}
		out = append(out, detContribution{d, v})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].value != out[j].value {
			return out[i].value > out[j].value
		}
		return out[i].detector < out[j].detector
	})
	var total float64 // summed in a fixed order, so equal sets give equal sums
	for _, p := range out {
		total += p.value
	}
	return total, out, in
}

func riskSentence(user string, total float64, c *UserRiskConfig, at time.Time, n int, per []detContribution) string {
	parts := make([]string, len(per))
	for i, p := range per {
		parts[i] = p.detector + " " + strconv.FormatFloat(math.Round(p.value), 'f', 0, 64)
	}
	return "User " + user + "'s accumulated risk reached " + strconv.FormatFloat(math.Round(total), 'f', 0, 64) +
		" (threshold " + strconv.FormatFloat(c.Threshold, 'f', -1, 64) + ") in the " + schemas.FormatDuration(c.Window) +
		" to " + at.Format("2006-01-02 15:04") + " UTC from " + plural(n, "finding") + " by " +
		plural(len(per), "detector") + " (" + strings.Join(parts, ", ") + ")"
}

// --- patient surge ---------------------------------------------------------

// surgeRef is one counted access: a user's unexplained finding on the
// patient.
type surgeRef struct {
	ms       int64
	id       string
	detector string
	sev      schemas.Severity
	score    uint8
	facility string
}

const maxRefsPerUser = 4

type patientSurge struct {
	users  map[string][]surgeRef // user → refs sorted by ms, at most maxRefsPerUser
	latest int64
}

// explained reports whether f's evidence says a care relationship
// explains the access.
func (e *engine) explained(f *schemas.Finding) bool {
	for k, v := range e.cfg.PatientSurge.ExplainedFacts {
		if got, ok := f.Evidence.Facts[k]; ok && strings.EqualFold(got, v) {
			return true
		}
	}
	return false
}

func (e *engine) applySurge(o observation) *group {
	c := &e.cfg.PatientSurge
	f := o.f
	if f.PatientID == "" || f.UserID == "" || f.Severity.Rank() < c.MinFindingSeverity.Rank() || e.explained(f) {
		return nil
	}
	p := e.surge[f.PatientID]
	if p == nil {
		p = &patientSurge{users: map[string][]surgeRef{}}
		e.surge[f.PatientID] = p
		if len(e.surge) > e.cfg.Limits.MaxSurgePatients {
			e.evictSurgePatients(f.PatientID)
		}
	}
	refs := p.users[f.UserID]
	for _, r := range refs {
		if r.id == f.FindingID {
			return nil // re-observed
		}
	}
	ref := surgeRef{ms: o.ms, id: f.FindingID, detector: f.Detector, sev: f.Severity, score: f.Score, facility: f.FacilityID}
	i := sort.Search(len(refs), func(i int) bool { return refs[i].ms > ref.ms })
	refs = slices.Insert(refs, i, ref)
	if len(refs) > maxRefsPerUser {
		refs = refs[len(refs)-maxRefsPerUser:]
	}
	if _, ok := p.users[f.UserID]; !ok && len(p.users) >= e.cfg.Limits.MaxSurgeUsersPerPatient {
		p.evictOldestUser()
		e.evictions["surge_user"]++
	}
	p.users[f.UserID] = refs
	e.dirtySurge[f.PatientID] = true
	if o.ms > p.latest {
		p.latest = o.ms
	}
	best := p.bestWindow(o.ms, c.Window.Milliseconds())
	if len(best) < c.MinUsers {
		return nil
	}
	start := windowStart(o.t, c.AlertWindow)
	id := AlertID(RulePatientSurge, []string{"patient=" + f.PatientID}, start)
	g := e.openGroup(id, RulePatientSurge, kindSurge, start, c.AlertWindow, c.RepeatInterval, func(g *group) { g.patientID = f.PatientID })
	if g == nil {
		return nil
	}
	changed := false
	for _, r := range best {
		fo := schemas.Finding{FindingID: r.id, Detector: r.detector, Severity: r.sev, Score: r.score, UserID: r.user, PatientID: f.PatientID, FacilityID: r.facility}
		if e.addFinding(g, observation{f: &fo, t: time.UnixMilli(r.ms).UTC(), ms: r.ms}) {
			changed = true
		}
	}
	if c.Severity.Rank() > g.severity.Rank() {
		g.severity = c.Severity
		changed = true
	}
	if s := g.severity.DefaultScore(); s > g.score {
		g.score = s
	}
	g.raised = true
	if !changed {
		return nil
	}
	return g
}

type userRef struct {
	surgeRef
	user string
}

// bestWindow finds, among the windows of length w that contain time t,
// the one with the most distinct users, and returns each of its users'
// latest access in it, ordered by time then user. Findings may arrive out
// of order, so the window may end after t.
func (p *patientSurge) bestWindow(t, w int64) []userRef {
	var refs []userRef
	for u, rs := range p.users {
		for _, r := range rs {
			if r.ms >= t-w && r.ms <= t+w {
				refs = append(refs, userRef{r, u})
			}
		}
	}
	sortRefs(refs)
	counts := map[string]int{}
	bestLo, bestHi, bestN := 0, -1, 0
	lo := 0
	for hi := range refs {
		counts[refs[hi].user]++
		for refs[hi].ms-refs[lo].ms > w {
			if counts[refs[lo].user]--; counts[refs[lo].user] == 0 {
				delete(counts, refs[lo].user)
			}
			lo++
		}
		if refs[lo].ms <= t && refs[hi].ms >= t && len(counts) > bestN {
			bestLo, bestHi, bestN = lo, hi, len(counts)
		}
	}
	latest := map[string]userRef{}
	for _, r := range refs[bestLo : bestHi+1] {
		latest[r.user] = r // refs are in time order: the last one wins
	}
	out := make([]userRef, 0, len(latest))
	for _, r := range latest {
		out = append(out, r)
	}
	sortRefs(out)
	return out
}

func sortRefs(refs []userRef) {
	sort.Slice(refs, func(i, j int) bool {
		if refs[i].ms != refs[j].ms {
			return refs[i].ms < refs[j].ms
		}
		if refs[i].user != refs[j].user {
			return refs[i].user < refs[j].user
		}
		return refs[i].id < refs[j].id
	})
}

func (p *patientSurge) evictOldestUser() {
	var oldest string
	var oldestMs int64 = math.MaxInt64
	for u, refs := range p.users {
		if last := refs[len(refs)-1].ms; last < oldestMs || (last == oldestMs && u < oldest) {
			oldest, oldestMs = u, last
		}
	}
	delete(p.users, oldest)
}

// surgeSentence describes a surge; withPatient names the patient.
func (g *group) surgeSentence(e *engine, withPatient bool) string {
	subject := "One patient's record"
	if withPatient {
		subject = "The record of patient " + g.patientID
	}
	users := make([]string, 0, len(g.users))
	for u := range g.users {
		users = append(users, u)
	}
	sort.Strings(users)
	const show = 5
	list := strings.Join(users[:min(show, len(users))], ", ")
	if len(users) > show {
		list += " and " + strconv.Itoa(len(users)-show) + " more"
	}
	return subject + " was opened by " + countPhrase(len(g.users), g.moreUsers, "unrelated user") +
		" (" + list + ") within " + schemas.FormatDuration(e.cfg.PatientSurge.Window) + " " + formatSpan(g.firstSeen, g.lastSeen) +
		", with " + plural(int(g.count), "finding") + " from " + strings.Join(g.detectorList(), ", ") +
		" and no care relationship explaining any of them"
}

// --- bounded state -----------------------------------------------------------

// addGroup inserts g, evicting the least recently updated groups when the
// cap is exceeded.
func (e *engine) addGroup(g *group) {
	e.groups[g.id] = g
	if len(e.groups) <= e.cfg.Limits.MaxGroups {
		return
	}
	e.sweep()
	if len(e.groups) <= e.cfg.Limits.MaxGroups {
		return
	}
	// Evict a tenth of the cap at once so eviction cost is amortized.
	ids := oldestFirst(e.groups, func(_ string, x *group) bool { return x == g },
		func(x *group) int64 { return x.lastSeen.UnixMilli() })
	n := len(e.groups) - e.cfg.Limits.MaxGroups + max(1, e.cfg.Limits.MaxGroups/10)
	for _, id := range ids[:min(n, len(ids))] {
		delete(e.groups, id)
		e.evictions["group"]++
	}
}

func (e *engine) evictRiskUsers() {
	e.sweep()
	over := len(e.risk) - e.cfg.Limits.MaxRiskUsers
	if over <= 0 {
		return
	}
	users := oldestFirst(e.risk, nil, func(r *userRisk) int64 {
		if len(r.entries) == 0 {
			return math.MaxInt64 // just created, no entries yet
		}
		return r.entries[len(r.entries)-1].ms
	})
	n := over + max(1, e.cfg.Limits.MaxRiskUsers/10)
	for _, u := range users[:min(n, len(users)-1)] {
		delete(e.risk, u)
		e.evictions["risk_user"]++
	}
}

func (e *engine) evictSurgePatients(keep string) {
	e.sweep()
	over := len(e.surge) - e.cfg.Limits.MaxSurgePatients
	if over <= 0 {
		return
	}
	patients := oldestFirst(e.surge, func(id string, _ *patientSurge) bool { return id == keep },
		func(p *patientSurge) int64 { return p.latest })
	n := over + max(1, e.cfg.Limits.MaxSurgePatients/10)
	for _, p := range patients[:min(n, len(patients))] {
		delete(e.surge, p)
		e.evictions["surge_patient"]++
	}
}

// oldestFirst returns the keys of m, but those skip (when set) names,
// least recently active first (by the milliseconds at returns, then by
// key): the eviction order of the bounded state.
func oldestFirst[V any](m map[string]V, skip func(string, V) bool, at func(V) int64) []string {
	type cand struct {
		ms  int64
		key string
	}
	cands := make([]cand, 0, len(m))
	for k, v := range m {
		if skip != nil && skip(k, v) {
			continue
		}
		cands = append(cands, cand{at(v), k})
	}
	sort.Slice(cands, func(i, j int) bool {
		if cands[i].ms != cands[j].ms {
			return cands[i].ms < cands[j].ms
		}
		return cands[i].key < cands[j].key
	})
	keys := make([]string, len(cands))
	for i, c := range cands {
		keys[i] = c.key
	}
	return keys
}

// sweepEvery is how far the watermark must advance between sweeps.
const sweepEvery = time.Minute

func (e *engine) maybeSweep() {
	if e.watermark.Sub(e.lastSweep) >= sweepEvery {
		e.sweep()
	}
}

// sweep expires state the watermark has left behind by more than its
// window plus the allowed lateness.
func (e *engine) sweep() {
	if e.persistent {
		return // the working set is one Observe's; the store keeps the rest
	}
	e.lastSweep = e.watermark
	late := e.cfg.Limits.Lateness
	wm := e.watermark
	for id, g := range e.groups {
		if g.windowEnd.Add(late).Before(wm) {
			delete(e.groups, id)
			e.evictions["group_expired"]++
		}
	}
	if e.cfg.UserRisk.Enabled {
		cutoff := wm.Add(-e.cfg.UserRisk.Window - late).UnixMilli()
		for u, r := range e.risk {
			r.prune(cutoff)
			if len(r.entries) == 0 {
				delete(e.risk, u)
			}
		}
	}
	if e.cfg.PatientSurge.Enabled {
		cutoff := wm.Add(-e.cfg.PatientSurge.Window - late).UnixMilli()
		for id, p := range e.surge {
			for u, refs := range p.users {
				i := sort.Search(len(refs), func(i int) bool { return refs[i].ms >= cutoff })
				if i == len(refs) {
					delete(p.users, u)
				} else if i > 0 {
					p.users[u] = refs[i:]
				}
			}
			if len(p.users) == 0 {
				delete(e.surge, id)
			}
		}
	}
}

// stateSizes reports the entries held, for the state gauge.
func (e *engine) stateSizes() map[string]int {
	return map[string]int{"groups": len(e.groups), "risk_users": len(e.risk), "surge_patients": len(e.surge)}
}
