package alerting

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Kinds of persisted engine state (the kind column of alert_engine_state).
const (
	StateGroup = "group" // key: alert id
	StateRisk  = "risk"  // key: user id
	StateSurge = "surge" // key: patient id
)

// StateRecord is one persisted piece of engine state: a group, a user's
// risk entries or a patient's surge references. Data is the engine's own
// JSON; Version increases by one with every write of the key.
type StateRecord struct {
	Kind    string
	Key     string
	Version uint64
	Data    []byte
}

// StateKeys names the records a batch of findings needs.
type StateKeys struct {
	Groups, Users, Patients []string
}

func (k StateKeys) empty() bool { return len(k.Groups)+len(k.Users)+len(k.Patients) == 0 }

// StateStore persists the engine's state so that alerting is exact across
// restarts, rebalances, backlogs and several instances taking turns on a
// partition. ClickHouseStore implements it (alert_engine_state).
//
// With a StateStore, every Observe loads the records its findings touch,
// applies the findings and writes the changed records back before it
// returns, and keeps nothing in memory between calls: state never expires
// by a watermark, so no finding is ever too late, and the outcome does not
// depend on what another partition's progress was. Without one (tests,
// dry runs, the demo without ClickHouse), state lives in memory and
// expires by finding time (limits.lateness).
type StateStore interface {
	LoadState(ctx context.Context, keys StateKeys) ([]StateRecord, error)
	// WriteState writes the records and the alert rows (with their
	// finding memberships) in one call; either may have landed when it
	// fails, and a retry writes the same rows.
	WriteState(ctx context.Context, recs []StateRecord, alerts []Alert, members []Membership) error
}

// Membership says that a finding counts in an alert (alert_findings).
type Membership struct {
	FindingID, AlertID, Rule string
}

// MemoryStateStore is a StateStore in memory, for tests and single-process
// dry runs. It never forgets.
type MemoryStateStore struct {
	mu      sync.Mutex
	recs    map[string]StateRecord
	Alerts  map[string]Alert  // latest version per alert id
	Members map[string]string // finding id → alert ids (space separated)
	Fail    error             // when set, every call fails with it
}

// NewMemoryStateStore returns an empty MemoryStateStore.
func NewMemoryStateStore() *MemoryStateStore {
	return &MemoryStateStore{recs: map[string]StateRecord{}, Alerts: map[string]Alert{}, Members: map[string]string{}}
}

// LoadState implements StateStore.
func (s *MemoryStateStore) LoadState(_ context.Context, keys StateKeys) ([]StateRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return nil, s.Fail
	}
	var out []StateRecord
	for kind, ks := range map[string][]string{StateGroup: keys.Groups, StateRisk: keys.Users, StateSurge: keys.Patients} {
		for _, k := range ks {
			if r, ok := s.recs[kind+"\x00"+k]; ok {
				out = append(out, r)
			}
		}
	}
	return out, nil
}

// WriteState implements StateStore.
func (s *MemoryStateStore) WriteState(_ context.Context, recs []StateRecord, alerts []Alert, members []Membership) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.Fail != nil {
		return s.Fail
	}
	for _, r := range recs {
		k := r.Kind + "\x00" + r.Key
		if old, ok := s.recs[k]; !ok || r.Version >= old.Version {
			s.recs[k] = r
		}
	}
	for _, a := range alerts {
		if old, ok := s.Alerts[a.AlertID]; !ok || a.Version >= old.Version {
			s.Alerts[a.AlertID] = a
		}
	}
	for _, m := range members {
		s.Members[m.FindingID] += " " + m.AlertID
	}
	return nil
}

// --- serialization ------------------------------------------------------

// groupState is the persisted form of a group.
type groupState struct {
	Rule, User, Detector, Patient, Facility string
	Kind                                    uint8
	Repeat                                  time.Duration
	WindowStart, WindowEnd                  time.Time
	FirstSeen, LastSeen                     time.Time
	Count                                   uint32
	Severity                                schemas.Severity
	Score                                   uint8
	Seen                                    []string
	IDs                                     []idAt
	Patients, Users, Detectors              []string
	MorePatients, MoreUsers                 bool
	FirstMs                                 int64
	FirstID, FirstExpl, FirstFacility       string
	RiskPeak                                float64
	RiskSentence                            string
	Raised, Notified                        bool
	NotifiedAt                              time.Time
	NotifiedRank                            int
	NotifiedVersion                         uint64
	Written                                 uint64
	WrittenRank                             int
}

// MarshalJSON and UnmarshalJSON let idAt, whose fields are unexported,
// travel as [ms, id].
func (x idAt) MarshalJSON() ([]byte, error) { return json.Marshal([]any{x.ms, x.id}) }

func (x *idAt) UnmarshalJSON(b []byte) error {
	var v []json.RawMessage
	if err := json.Unmarshal(b, &v); err != nil || len(v) != 2 {
		return fmt.Errorf("alerting: bad finding id entry")
	}
	if err := json.Unmarshal(v[0], &x.ms); err != nil {
		return err
	}
	return json.Unmarshal(v[1], &x.id)
}

func setList(m map[string]struct{}) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func listSet(l []string) map[string]struct{} {
	m := make(map[string]struct{}, len(l))
	for _, k := range l {
		m[k] = struct{}{}
	}
	return m
}

func (g *group) marshal() ([]byte, error) {
	return json.Marshal(groupState{
		Rule: g.rule, User: g.userID, Detector: g.detector, Patient: g.patientID, Facility: g.facilityID,
		Kind: uint8(g.kind), Repeat: g.repeat, WindowStart: g.windowStart, WindowEnd: g.windowEnd,
		FirstSeen: g.firstSeen, LastSeen: g.lastSeen, Count: g.count, Severity: g.severity, Score: g.score,
		Seen: setList(g.seen), IDs: g.ids, Patients: setList(g.patients), Users: setList(g.users),
		Detectors: setList(g.detectors), MorePatients: g.morePatients, MoreUsers: g.moreUsers,
		FirstMs: g.firstMs, FirstID: g.firstID, FirstExpl: g.firstExpl, FirstFacility: g.firstFacility,
		RiskPeak: g.riskPeak, RiskSentence: g.riskSentence, Raised: g.raised, Notified: g.notified,
		NotifiedAt: g.notifiedAt, NotifiedRank: g.notifiedRank, NotifiedVersion: g.notifiedVersion,
		Written: g.written, WrittenRank: g.writtenRank,
	})
}

func (e *engine) unmarshalGroup(id string, data []byte) (*group, error) {
	var s groupState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	g := &group{
		id: id, rule: s.Rule, kind: groupKind(s.Kind), repeat: s.Repeat,
		userID: s.User, detector: s.Detector, patientID: s.Patient, facilityID: s.Facility,
		windowStart: s.WindowStart.UTC(), windowEnd: s.WindowEnd.UTC(), firstSeen: s.FirstSeen.UTC(), lastSeen: s.LastSeen.UTC(),
		count: s.Count, severity: s.Severity, score: s.Score,
		seen: listSet(s.Seen), ids: s.IDs, patients: listSet(s.Patients), users: listSet(s.Users), detectors: listSet(s.Detectors),
		morePatients: s.MorePatients, moreUsers: s.MoreUsers,
		firstMs: s.FirstMs, firstID: s.FirstID, firstExpl: s.FirstExpl, firstFacility: s.FirstFacility,
		riskPeak: s.RiskPeak, riskSentence: s.RiskSentence, raised: s.Raised, notified: s.Notified,
		notifiedAt: s.NotifiedAt.UTC(), notifiedRank: s.NotifiedRank, notifiedVersion: s.NotifiedVersion,
		written: s.Written, writtenRank: s.WrittenRank,
	}
	if g.kind == kindRule {
		for _, r := range e.rules {
			if r.cfg.Name == g.rule {
				g.spec = r
			}
		}
		if g.spec == nil {
			// The rule was removed from the configuration: its groups take
			// no more findings, so they are simply not loaded.
			return nil, nil
		}
		g.repeat = g.spec.cfg.RepeatInterval
	}
	return g, nil
}

type riskEntryState struct {
	Ms       int64   `json:"t"`
	ID       string  `json:"id"`
	Detector string  `json:"d"`
	Score    float64 `json:"s"`
	Facility string  `json:"f,omitempty"`
}

func (u *userRisk) marshal() ([]byte, error) {
	out := make([]riskEntryState, len(u.entries))
	for i, en := range u.entries {
		out[i] = riskEntryState{en.ms, en.id, en.detector, en.score, en.facility}
	}
	return json.Marshal(out)
}

func unmarshalRisk(data []byte) (*userRisk, error) {
	var in []riskEntryState
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, err
	}
	u := &userRisk{entries: make([]riskEntry, len(in))}
	for i, s := range in {
		u.entries[i] = riskEntry{s.Ms, s.ID, s.Detector, s.Score, s.Facility}
	}
	// Rows written before entries were ordered by id within a time.
	slices.SortStableFunc(u.entries, func(a, b riskEntry) int {
		return cmp.Or(cmp.Compare(a.ms, b.ms), strings.Compare(a.id, b.id))
	})
	return u, nil
}

type surgeRefState struct {
	Ms       int64            `json:"t"`
	ID       string           `json:"id"`
	Detector string           `json:"d"`
	Sev      schemas.Severity `json:"v"`
	Score    uint8            `json:"s"`
	Facility string           `json:"f,omitempty"`
}

type surgeState struct {
	Users  map[string][]surgeRefState `json:"users"`
	Latest int64                      `json:"latest"`
}

func (p *patientSurge) marshal() ([]byte, error) {
	s := surgeState{Users: make(map[string][]surgeRefState, len(p.users)), Latest: p.latest}
	for u, refs := range p.users {
		rs := make([]surgeRefState, len(refs))
		for i, r := range refs {
			rs[i] = surgeRefState{r.ms, r.id, r.detector, r.sev, r.score, r.facility}
		}
		s.Users[u] = rs
	}
	return json.Marshal(s)
}

func unmarshalSurge(data []byte) (*patientSurge, error) {
	var s surgeState
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, err
	}
	p := &patientSurge{users: make(map[string][]surgeRef, len(s.Users)), latest: s.Latest}
	for u, rs := range s.Users {
		refs := make([]surgeRef, len(rs))
		for i, r := range rs {
			refs[i] = surgeRef{r.Ms, r.ID, r.Detector, r.Sev, r.Score, r.Facility}
		}
		p.users[u] = refs
	}
	return p, nil
}

// --- working set ----------------------------------------------------------

// neededKeys lists the state the findings touch that can be named before
// any is loaded: every rule group they join, their users' risk entries,
// their patients' surge references and the risk and surge groups of the
// findings' own windows. Risk groups can also be named by an older entry's
// later time; riskGroupKeys adds those once the entries are loaded.
func (e *engine) neededKeys(findings []schemas.Finding) StateKeys {
	groups, users, patients := map[string]bool{}, map[string]bool{}, map[string]bool{}
	for i := range findings {
		f := &findings[i]
		if !e.usable(f) {
			continue
		}
		t := findingTime(f)
		for _, s := range e.rules {
			if id, ok := e.ruleGroupID(s, f, t); ok {
				groups[id] = true
			}
		}
		if c := &e.cfg.UserRisk; c.Enabled && f.UserID != "" && f.Severity.Rank() >= c.MinFindingSeverity.Rank() {
			users[f.UserID] = true
			groups[AlertID(RuleUserRisk, []string{"user=" + f.UserID}, windowStart(t, c.AlertWindow))] = true
		}
		if c := &e.cfg.PatientSurge; c.Enabled && f.PatientID != "" && f.UserID != "" && f.Severity.Rank() >= c.MinFindingSeverity.Rank() {
			patients[f.PatientID] = true
			groups[AlertID(RulePatientSurge, []string{"patient=" + f.PatientID}, windowStart(t, c.AlertWindow))] = true
		}
	}
	return StateKeys{Groups: sortedKeys(groups), Users: sortedKeys(users), Patients: sortedKeys(patients)}
}

// riskGroupKeys names the risk groups a finding can change besides its
// own window's: those of the alert windows of the user's loaded entries
// at or after it and within Window of it, where the risk is evaluated
// again with it (applyRisk).
func (e *engine) riskGroupKeys(findings []schemas.Finding) []string {
	c := &e.cfg.UserRisk
	if !c.Enabled {
		return nil
	}
	ids := map[string]bool{}
	for i := range findings {
		f := &findings[i]
		if !e.usable(f) || f.UserID == "" {
			continue
		}
		u := e.risk[f.UserID]
		if u == nil {
			continue
		}
		ms := findingTime(f).UnixMilli()
		for j := sort.Search(len(u.entries), func(i int) bool { return u.entries[i].ms >= ms }); j < len(u.entries) && u.entries[j].ms < ms+c.Window.Milliseconds(); j++ {
			id := AlertID(RuleUserRisk, []string{"user=" + f.UserID}, windowStart(time.UnixMilli(u.entries[j].ms).UTC(), c.AlertWindow))
			if e.groups[id] == nil {
				ids[id] = true
			}
		}
	}
	return sortedKeys(ids)
}

func sortedKeys(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// usable is the filter observe applies before any rule.
func (e *engine) usable(f *schemas.Finding) bool {
	return f.FindingID != "" && f.Severity.Valid() && !f.WindowEnd.IsZero() && (f.UserID != "" || f.PatientID != "") && !f.Suppressed
}

// install puts loaded records into the working set and remembers their
// versions.
func (e *engine) install(recs []StateRecord) error {
	for _, r := range recs {
		e.versions[r.Kind+"\x00"+r.Key] = r.Version
		switch r.Kind {
		case StateGroup:
			g, err := e.unmarshalGroup(r.Key, r.Data)
			if err != nil {
				return fmt.Errorf("alerting: state of alert %s: %w", r.Key, err)
			}
			if g != nil {
				e.groups[r.Key] = g
			}
		case StateRisk:
			u, err := unmarshalRisk(r.Data)
			if err != nil {
				return fmt.Errorf("alerting: risk state: %w", err)
			}
			e.risk[r.Key] = u
		case StateSurge:
			p, err := unmarshalSurge(r.Data)
			if err != nil {
				return fmt.Errorf("alerting: surge state: %w", err)
			}
			e.surge[r.Key] = p
		}
	}
	return nil
}

// dirtyRecords renders what observe changed, each with its next version.
func (e *engine) dirtyRecords() ([]StateRecord, error) {
	var out []StateRecord
	add := func(kind, key string, data []byte, err error) error {
		if err != nil {
			return err
		}
		v := e.versions[kind+"\x00"+key] + 1
		out = append(out, StateRecord{Kind: kind, Key: key, Version: v, Data: data})
		return nil
	}
	for _, id := range sortedKeys(e.dirtyGroups) {
		g := e.groups[id]
		if g == nil {
			continue
		}
		data, err := g.marshal()
		if err := add(StateGroup, id, data, err); err != nil {
			return nil, err
		}
	}
	for _, u := range sortedKeys(e.dirtyRisk) {
		r := e.risk[u]
		if r == nil {
			continue
		}
		data, err := r.marshal()
		if err := add(StateRisk, u, data, err); err != nil {
			return nil, err
		}
	}
	for _, p := range sortedKeys(e.dirtySurge) {
		s := e.surge[p]
		if s == nil {
			continue
		}
		data, err := s.marshal()
		if err := add(StateSurge, p, data, err); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// reset empties the working set.
func (e *engine) reset() {
	clear(e.groups)
	clear(e.risk)
	clear(e.surge)
	clear(e.versions)
	clear(e.dirtyGroups)
	clear(e.dirtyRisk)
	clear(e.dirtySurge)
	e.members = e.members[:0]
}
