package detectors

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// explainer is the Engine's answer to "what explains this access?", shared
// by its detectors: the reference care relationship, extended by
// continuity of care (ExplanationConfig); and what it learns from the
// answers: each user's breadth of access (for the chance ranking, chance.go),
// the related patients a user opened without explanation on more than one
// day, and coverage counters (Engine.Coverage).
//
// The Engine computes the answer once per event, before its detectors run
// (begin), and records it after they ran (end), so every detector sees the
// state as of the events before this one. Its state is part of the Engine's
// snapshot; the coverage counters, like EngineStats, are not.
type explainer struct {
	cfg   ExplanationConfig
	state explainerState

	cur    *schemas.AccessEvent
	care   CareRelationship
	reason bool // care.Reason is filled in
	ref    Reference
	// The reference's user and patient of cur, looked up once per event
	// for every detector (eventUser, eventPatient); the patient on first
	// use.
	evUser             *schemas.User
	userOK             bool
	patient            *schemas.Patient
	patientOK, patDone bool

	mu     sync.Mutex
	byIdx  [numExplainedBy]uint64
	byDept map[string]*[numExplainedBy]uint64
	byRole map[string]*[numExplainedBy]uint64
}

const numExplainedBy = 5

func explainedByIndex(by string) int {
	switch by {
	case ExplainedByCareTeam:
		return 0
	case ExplainedByDepartmentEncounter:
		return 1
	case ExplainedByOwnContinuity:
		return 2
	case ExplainedByDepartmentInvolvement:
		return 3
	}
	return 4
}

// explainerState is the explainer's snapshotted state. JSON encodes maps
// with sorted keys, so equal states give equal bytes.
type explainerState struct {
	Users    map[string]*userExplain `json:"users,omitempty"`
	PruneDay int64                   `json:"prune_day,omitempty"`
}

// userExplain is what the explainer keeps per user.
type userExplain struct {
	// Own maps a patient (the FNV-1a hash of the id, as Breadth.Today)
	// to the user's latest access to them that an encounter explained.
	// Keyed by hash with the record inline, an entry takes a map slot and
	// nothing else: it is most of the Engine's state per user
	// (docs/benchmarks.md §3).
	Own map[uint64]ownAccess `json:"own_h,omitempty"`
	// LegacyOwn is Own as version 1 snapshots hold it, keyed by patient
	// id; Restore moves it into Own.
	LegacyOwn map[string]ownAccess `json:"own,omitempty"`
	// Related maps a related patient (employee, VIP, relative, deceased) to
	// the days the user opened their chart unexplained.
	Related map[string]relatedSeen `json:"related,omitempty"`
	Breadth breadth                `json:"breadth"`
}

type relatedSeen struct {
	Days    int   `json:"days"`
	LastDay int64 `json:"last_day"`
}

// breadth is a user's learned breadth of access: distinct charts per
// active (UTC) day, and how many of them nothing explained. The current
// day counts once the user's next active day begins.
type breadth struct {
	Day         int64           `json:"day"`             // current day (days since 1970, UTC)
	Today       map[uint64]bool `json:"today,omitempty"` // patient (FNV-1a hash of the id) → explained at least once today
	Days        int             `json:"days"`            // completed active days
	Charts      float64         `json:"charts"`          // mean distinct charts per active day
	Unexplained float64         `json:"unexplained"`     // mean distinct unexplained charts per active day
}

// breadthMemoryDays is the horizon of the breadth means: a plain mean over
// the first days, then an exponentially weighted one.
const breadthMemoryDays = 28

// relatedMemoryDays is how long a related patient's unexplained days are
// remembered.
const relatedMemoryDays = 30

func newExplainer(cfg ExplanationConfig) *explainer {
	return &explainer{cfg: cfg, state: explainerState{Users: map[string]*userExplain{}},
		byDept: map[string]*[numExplainedBy]uint64{}, byRole: map[string]*[numExplainedBy]uint64{}}
}

func dayOf(t time.Time) int64 {
	s := t.Unix()
	d := s / 86400
	if s < 0 && s%86400 != 0 {
		d--
	}
	return d
}

// begin computes what explains ev.
func (x *explainer) begin(ev *schemas.AccessEvent, ref Reference) {
	var care CareRelationship
	h, quick := ref.(careHistory)
	if quick {
		care = h.care1(ev, false) // the reason text is built only if a detector asks (careOf)
	} else {
		care = ref.Care(ev)
	}
	x.reason = !quick
	x.evUser, x.userOK = ref.User(ev.UserID)
	x.patient, x.patientOK, x.patDone = nil, false, false
	if care.Explained && care.By == "" {
		care.By = ExplainedByCareTeam
	}
	if !care.Explained && x.cfg.OwnHorizon > 0 {
		if us := x.state.Users[ev.UserID]; us != nil {
			if prev, ok := us.Own[fnv64a(ev.PatientID)]; ok {
				t := ev.EventTime.UnixNano()
				if prev.At <= t && t-prev.At <= int64(x.cfg.OwnHorizon) {
					care = CareRelationship{Explained: true, EncounterID: prev.EncounterID, By: ExplainedByOwnContinuity,
						Reason: continuityReason(ev.UserID, prev, x.cfg.OwnHorizon)}
					x.reason = true
				}
			}
		}
	}
	if !care.Explained && x.cfg.DepartmentHorizon > 0 {
		if quick {
			if dept := userDepartment(ev, x.evUser); dept != "" {
				if e, ok := h.departmentInvolved(ev.PatientID, dept, ev.EventTime, x.cfg.DepartmentHorizon); ok {
					care = CareRelationship{Explained: true, EncounterID: e.id, By: ExplainedByDepartmentInvolvement,
						Reason: "encounter " + e.id + " (" + e.dept + "), in or with a member of " + dept + " on its care team, within " +
							humanDuration(x.cfg.DepartmentHorizon) + " (the department is involved in the patient's care)"}
					x.reason = true
				}
			}
		}
	}
	x.cur, x.care, x.ref = ev, care, ref
}

// end records what begin found.
func (x *explainer) end(ev *schemas.AccessEvent, ref Reference) {
	care, u := x.care, x.evUser
	x.cur, x.evUser, x.patient = nil, nil, nil
	by := care.By
	if !care.Explained {
		by = Unexplained
	}
	x.count(by, userDepartment(ev, u), userRole(ev, u))

	us := x.user(ev.UserID)
	if us == nil {
		return
	}
	pk := fnv64a(ev.PatientID)
	if by == ExplainedByCareTeam || by == ExplainedByDepartmentEncounter {
		// The encounter id is the reference index's, not the event's.
		t := ev.EventTime.UnixNano()
		if prev, ok := us.Own[pk]; !ok || t > prev.At {
			if us.Own == nil {
				us.Own = map[uint64]ownAccess{}
			}
			us.Own[pk] = ownAccess{At: t, EncounterID: care.EncounterID}
		}
	}
	b := &us.Breadth
	day := dayOf(ev.EventTime)
	if day > b.Day {
		if len(b.Today) > 0 {
			var unexplained int
			for _, ok := range b.Today {
				if !ok {
					unexplained++
				}
			}
			b.Days++
			n := float64(min(b.Days, breadthMemoryDays))
			b.Charts += (float64(len(b.Today)) - b.Charts) / n
			b.Unexplained += (float64(unexplained) - b.Unexplained) / n
		}
		b.Day = day
		clear(b.Today)
	}
	if day == b.Day {
		if b.Today == nil {
			b.Today = map[uint64]bool{}
		}
		if was, ok := b.Today[pk]; !ok || (!was && care.Explained) {
			b.Today[pk] = care.Explained
		}
	}
}

// upgradeOwn moves a version 1 snapshot's own continuity, keyed by
// patient id, into Own; of two ids with one hash (never seen), the later
// access wins.
func (us *userExplain) upgradeOwn() {
	if len(us.LegacyOwn) == 0 {
		us.LegacyOwn = nil
		return
	}
	if us.Own == nil {
		us.Own = make(map[uint64]ownAccess, len(us.LegacyOwn))
	}
	for pid, o := range us.LegacyOwn {
		k := fnv64a(pid)
		if prev, ok := us.Own[k]; !ok || o.At > prev.At {
			us.Own[k] = o
		}
	}
	us.LegacyOwn = nil
}

// user returns the user's state, creating it while below MaxTrackedUsers.
func (x *explainer) user(userID string) *userExplain {
	us := x.state.Users[userID]
	if us == nil && len(x.state.Users) < x.cfg.MaxTrackedUsers {
		us = &userExplain{}
		x.state.Users[strings.Clone(userID)] = us
	}
	return us
}

// breadthOf returns the user's learned breadth, or nil.
func (x *explainer) breadthOf(userID string) *breadth {
	if us := x.state.Users[userID]; us != nil {
		return &us.Breadth
	}
	return nil
}

// repeat records an unexplained access by the user to a related patient on
// ev's day and returns on how many distinct days they did so.
func (x *explainer) repeat(ev *schemas.AccessEvent) int {
	us := x.user(ev.UserID)
	if us == nil {
		return 1
	}
	day := dayOf(ev.EventTime)
	if us.Related == nil {
		us.Related = map[string]relatedSeen{}
	}
	r := us.Related[ev.PatientID]
	if r.Days == 0 || day > r.LastDay {
		r.Days++
		r.LastDay = day
		us.Related[strings.Clone(ev.PatientID)] = r
	}
	return r.Days
}

// prune forgets, once per watermark day, continuity older than the horizon
// and related patients older than relatedMemoryDays, with a day of margin
// for late events.
func (x *explainer) prune(wm time.Time) {
	day := dayOf(wm)
	if day <= x.state.PruneDay {
		return
	}
	x.state.PruneDay = day
	ownCut := wm.Add(-x.cfg.OwnHorizon - 24*time.Hour).UnixNano()
	relCut := day - relatedMemoryDays - 1
	for _, us := range x.state.Users {
		for p, o := range us.Own {
			if o.At < ownCut {
				delete(us.Own, p)
			}
		}
		for p, r := range us.Related {
			if r.LastDay < relCut {
				delete(us.Related, p)
			}
		}
	}
}

// careOf returns what explains ev: the Engine's answer when the detector
// runs in one, else the reference's.
func careOf(env Env, ref Reference, ev *schemas.AccessEvent) CareRelationship {
	if x := env.explain; x != nil && x.cur == ev {
		if !x.reason {
			full := ref.Care(ev)
			x.care.Reason, x.reason = full.Reason, true
		}
		return x.care
	}
	return ref.Care(ev)
}

// eventUser returns ref.User(ev.UserID): the Engine's lookup when the
// detector runs in one, made once per event for all detectors.
func eventUser(env Env, ref Reference, ev *schemas.AccessEvent) (*schemas.User, bool) {
	if x := env.explain; x != nil && x.cur == ev {
		return x.evUser, x.userOK
	}
	return ref.User(ev.UserID)
}

// eventPatient returns ref.Patient(ev.PatientID), looked up once per event
// in an Engine.
func eventPatient(env Env, ref Reference, ev *schemas.AccessEvent) (*schemas.Patient, bool) {
	if x := env.explain; x != nil && x.cur == ev {
		if !x.patDone {
			x.patient, x.patientOK = ref.Patient(ev.PatientID)
			x.patDone = true
		}
		return x.patient, x.patientOK
	}
	return ref.Patient(ev.PatientID)
}

// repeatDays records an unexplained access to a related patient and
// returns on how many days the user did so (1 outside an Engine).
func repeatDays(env Env, ev *schemas.AccessEvent) int {
	if env.explain == nil {
		return 1
	}
	return env.explain.repeat(ev)
}

// Coverage is the share of accesses each kind of explanation covers, in
// total and per department and role (as the event or reference names
// them). It counts every event the Engine processed since it was built.
type Coverage struct {
	// By counts accesses by what explained them (ExplainedBy).
	By map[string]uint64
	// ByDepartment and ByRole count them per department and role, then by
	// what explained them; at most maxCoverageNames names each, the rest
	// under "(other)".
	ByDepartment map[string]map[string]uint64
	ByRole       map[string]map[string]uint64
}

const maxCoverageNames = 500

func newCoverage() Coverage {
	return Coverage{By: map[string]uint64{}, ByDepartment: map[string]map[string]uint64{}, ByRole: map[string]map[string]uint64{}}
}

func (x *explainer) count(by, dept, role string) {
	i := explainedByIndex(by)
	x.mu.Lock()
	defer x.mu.Unlock()
	x.byIdx[i]++
	countName(x.byDept, dept)[i]++
	countName(x.byRole, role)[i]++
}

func countName(m map[string]*[numExplainedBy]uint64, name string) *[numExplainedBy]uint64 {
	if name == "" {
		name = "(none)"
	}
	if c := m[name]; c != nil {
		return c
	}
	if len(m) >= maxCoverageNames {
		name = "(other)"
		if c := m[name]; c != nil {
			return c
		}
	}
	c := new([numExplainedBy]uint64)
	m[strings.Clone(name)] = c
	return c
}

// coverage returns a copy of the counters.
func (x *explainer) coverage() Coverage {
	x.mu.Lock()
	defer x.mu.Unlock()
	out := newCoverage()
	conv := func(a *[numExplainedBy]uint64) map[string]uint64 {
		m := map[string]uint64{}
		for i, by := range ExplainedBy {
			if a[i] > 0 {
				m[by] = a[i]
			}
		}
		return m
	}
	out.By = conv(&x.byIdx)
	for k, v := range x.byDept {
		out.ByDepartment[k] = conv(v)
	}
	for k, v := range x.byRole {
		out.ByRole[k] = conv(v)
	}
	return out
}

// Add adds o's counts to c.
func (c *Coverage) Add(o Coverage) {
	if c.By == nil {
		*c = newCoverage()
	}
	for k, v := range o.By {
		c.By[k] += v
	}
	addNested(c.ByDepartment, o.ByDepartment)
	addNested(c.ByRole, o.ByRole)
}

func addNested(dst, src map[string]map[string]uint64) {
	for name, m := range src {
		d := dst[name]
		if d == nil {
			d = map[string]uint64{}
			dst[name] = d
		}
		for k, v := range m {
			d[k] += v
		}
	}
}

// Total returns the accesses counted.
func (c Coverage) Total() uint64 {
	var n uint64
	for _, v := range c.By {
		n += v
	}
	return n
}

// Explained returns the share of accesses something explained (0 when none).
func (c Coverage) Explained() float64 {
	return explainedShare(c.By)
}

func explainedShare(m map[string]uint64) float64 {
	var all uint64
	for _, v := range m {
		all += v
	}
	if all == 0 {
		return 0
	}
	return 1 - float64(m[Unexplained])/float64(all)
}

// CoverageRow is one line of a coverage table.
type CoverageRow struct {
	Name      string
	Accesses  uint64
	Explained float64           // share explained
	By        map[string]uint64 // counts by ExplainedBy
}

// Rows returns the per-name rows of m (ByDepartment or ByRole), by
// accesses, most first.
func CoverageRows(m map[string]map[string]uint64) []CoverageRow {
	rows := make([]CoverageRow, 0, len(m))
	for name, by := range m {
		var n uint64
		for _, v := range by {
			n += v
		}
		rows = append(rows, CoverageRow{Name: name, Accesses: n, Explained: explainedShare(by), By: by})
	}
	sort.Slice(rows, func(i, j int) bool {
		if rows[i].Accesses != rows[j].Accesses {
			return rows[i].Accesses > rows[j].Accesses
		}
		return rows[i].Name < rows[j].Name
	})
	return rows
}

// coverageNames are the column headings of WriteCoverage.
var coverageNames = map[string]string{
	ExplainedByCareTeam:              "care team",
	ExplainedByDepartmentEncounter:   "dept encounter",
	ExplainedByOwnContinuity:         "own continuity",
	ExplainedByDepartmentInvolvement: "dept involved",
	Unexplained:                      "unexplained",
}

// WriteCoverage writes the coverage as a few lines of text: the share of
// accesses explained, by what, then the top rows per department and per
// role (at most top of each; 0 for all).
func (c Coverage) WriteCoverage(w io.Writer, top int) {
	total := c.Total()
	if total == 0 {
		fmt.Fprintln(w, "explanation coverage: no accesses")
		return
	}
	fmt.Fprintf(w, "explanation coverage: %.1f%% of %d accesses explained (", 100*c.Explained(), total)
	for i, by := range ExplainedBy {
		if i > 0 {
			fmt.Fprint(w, ", ")
		}
		fmt.Fprintf(w, "%s %.1f%%", coverageNames[by], 100*float64(c.By[by])/float64(total))
	}
	fmt.Fprintln(w, ")")
	for _, part := range []struct {
		name string
		m    map[string]map[string]uint64
	}{{"department", c.ByDepartment}, {"role", c.ByRole}} {
		rows := CoverageRows(part.m)
		fmt.Fprintf(w, "  %-22s %10s %9s", part.name, "accesses", "explained")
		for _, by := range ExplainedBy {
			fmt.Fprintf(w, " %14s", coverageNames[by])
		}
		fmt.Fprintln(w)
		for i, r := range rows {
			if top > 0 && i == top {
				fmt.Fprintf(w, "  … %d more\n", len(rows)-top)
				break
			}
			fmt.Fprintf(w, "  %-22s %10d %8.1f%%", truncate(r.Name, 22), r.Accesses, 100*r.Explained)
			for _, by := range ExplainedBy {
				fmt.Fprintf(w, " %13.1f%%", 100*float64(r.By[by])/float64(max(r.Accesses, 1)))
			}
			fmt.Fprintln(w)
		}
	}
}

func truncate(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

// fnv64a is the 64-bit FNV-1a hash of s.
func fnv64a(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	return h
}
