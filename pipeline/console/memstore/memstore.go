// Package memstore is the demo's console store: alerts, findings, access
// events and reference data held in memory, behind the same methods as
// the ClickHouse store (*triage.Store), so that `ehrwatch demo --serve`
// shows the console on the demo's own results with no service running.
//
// It follows the ClickHouse store's rules rather than copies of them: the
// triage lifecycle and optimistic versions are triage.Apply's, whether a
// care relationship explains an access is triage.CareIndex's, report rows
// are triage.NewAccessRow's, cases follow triage.NewCase, AddCaseAlerts,
// RemoveCaseAlert, ApplyCase and NextCase, allowlist edits
// triage.NewAllowlistItem and ChangeAllowlistItem, heat maps
// triage.HeatmapCounter, and the errors are triage's (triage.ErrNotFound,
// *triage.ConflictError, *triage.CaseConflictError,
// *triage.AllowlistConflictError, *triage.ValidationError,
// triage.ErrForbidden). So it serves every console page and API endpoint
// (console.InvestigationStore, api.CaseStore). Allowlist edits reach no
// detector: the demo's run is over when it serves. Nothing survives the
// process: it is a demo store, and the console labels it so (Label).
package memstore

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Label is how the console names this store.
const Label = "demo store (in memory)"

// Data is what the store holds.
type Data struct {
	Users      []schemas.User
	Patients   []schemas.Patient
	Encounters []schemas.Encounter
	// Events are the stored access events (any order; a repeated event id
	// is kept once).
	Events []schemas.AccessEvent
	// Findings are the findings, every stored version; the latest version
	// of an id (the last in the slice) wins, as FINAL does.
	Findings []schemas.Finding
	// Alerts are the alerts, latest version of each (Triage is ignored:
	// every alert starts new at version 0).
	Alerts []triage.Alert
}

// Store is the in-memory store. It is safe for concurrent use.
type Store struct {
	opts triage.Options
	care *triage.CareIndex
	// built is when the store was filled: every alert counts as written
	// then (AlertFilter.ChangedSince; the ClickHouse store's created_at).
	built time.Time

	users      map[string]triage.UserRecord
	nUsers     int
	nPatients  int
	nEncounter int

	events    []schemas.AccessEvent // by (event_time, event_id)
	byID      map[string]int
	byPatient map[string][]int // indexes into events, in order
	byUser    map[string][]int

	findings     map[string]schemas.Finding
	findingOrder []string                       // by (window_start, finding_id)
	cites        map[string][]triage.FindingRef // event id → findings citing it

	alerts []triage.Alert // by (first_seen, alert_id) descending
	alertI map[string]int

	mu      sync.Mutex
	state   map[string]triage.State
	history map[string][]triage.State
	audit   []triage.AuditRecord
	inv     investigations
}

// New builds a store over d. Zero options take triage's defaults.
func New(d Data, opts triage.Options) *Store {
	opts = opts.WithDefaults()
	s := &Store{
		opts: opts, care: triage.NewCareIndex(d.Encounters, opts), built: opts.Now().UTC(),
		users: map[string]triage.UserRecord{}, nUsers: len(d.Users), nPatients: len(d.Patients), nEncounter: len(d.Encounters),
		byID: map[string]int{}, byPatient: map[string][]int{}, byUser: map[string][]int{},
		findings: map[string]schemas.Finding{}, cites: map[string][]triage.FindingRef{},
		alertI: map[string]int{}, state: map[string]triage.State{}, history: map[string][]triage.State{},
	}
	for _, u := range d.Users {
		s.users[u.UserID] = triage.UserRecord{FirstName: u.FirstName, LastName: u.LastName, Role: u.Role, Department: u.Department}
	}

	// Events at the table's precision (DateTime64(3)), once each, in
	// (event_time, event_id) order.
	seen := map[string]bool{}
	for _, e := range d.Events {
		if seen[e.EventID] {
			continue
		}
		seen[e.EventID] = true
		e.EventTime = e.EventTime.UTC().Truncate(time.Millisecond)
		s.events = append(s.events, e)
	}
	slices.SortFunc(s.events, func(a, b schemas.AccessEvent) int {
		return cmp.Or(a.EventTime.Compare(b.EventTime), cmp.Compare(a.EventID, b.EventID))
	})
	for i, e := range s.events {
		s.byID[e.EventID] = i
		s.byPatient[e.PatientID] = append(s.byPatient[e.PatientID], i)
		s.byUser[e.UserID] = append(s.byUser[e.UserID], i)
	}

	for _, f := range d.Findings {
		f.WindowStart, f.WindowEnd = f.WindowStart.UTC(), f.WindowEnd.UTC()
		s.findings[f.FindingID] = f
	}
	for id := range s.findings {
		s.findingOrder = append(s.findingOrder, id)
	}
	slices.SortFunc(s.findingOrder, func(a, b string) int {
		return cmp.Or(s.findings[a].WindowStart.Compare(s.findings[b].WindowStart), cmp.Compare(a, b))
	})
	// Ordered by detector and finding id, as the ClickHouse store lists them.
	byDetector := slices.Clone(s.findingOrder)
	slices.SortFunc(byDetector, func(a, b string) int {
		return cmp.Or(cmp.Compare(s.findings[a].Detector, s.findings[b].Detector), cmp.Compare(a, b))
	})
	for _, id := range byDetector {
		f := s.findings[id]
		ref := triage.FindingRef{FindingID: id, Detector: f.Detector, Severity: string(f.Severity), Suppressed: f.Suppressed}
		for _, ev := range slices.Compact(slices.Sorted(slices.Values(f.EventIDs))) {
			s.cites[ev] = append(s.cites[ev], ref)
		}
	}

	for _, a := range d.Alerts {
		a.FirstSeen, a.LastSeen = a.FirstSeen.UTC().Truncate(time.Millisecond), a.LastSeen.UTC().Truncate(time.Millisecond)
		a.Triage = triage.InitialState(a.AlertID)
		if i, ok := s.alertI[a.AlertID]; ok {
			s.alerts[i] = a
			continue
		}
		s.alertI[a.AlertID] = len(s.alerts)
		s.alerts = append(s.alerts, a)
	}
	slices.SortFunc(s.alerts, func(a, b triage.Alert) int {
		return cmp.Or(b.FirstSeen.Compare(a.FirstSeen), cmp.Compare(b.AlertID, a.AlertID))
	})
	for i, a := range s.alerts {
		s.alertI[a.AlertID] = i
	}
	return s
}

// Label names the store in the UI.
func (s *Store) Label() string { return Label }

// Audits returns the audit records written so far, oldest first.
func (s *Store) Audits() []triage.AuditRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.audit)
}

// WriteAudit keeps r in memory (the demo has no api_audit table).
func (s *Store) WriteAudit(_ context.Context, r triage.AuditRecord) error {
	if r.At.IsZero() {
		r.At = s.opts.Now().UTC()
	}
	s.mu.Lock()
	s.audit = append(s.audit, r)
	s.mu.Unlock()
	return nil
}

// withState returns a with its current triage state (callers hold mu).
func (s *Store) withState(a triage.Alert) triage.Alert {
	if st, ok := s.state[a.AlertID]; ok {
		st.Note = ""
		a.Triage = st
	}
	return a
}

// ListAlerts returns one page of alerts matching f, with the ClickHouse
// store's filters, orders (newest first with cursors, or by risk),
// validation and cursors.
func (s *Store) ListAlerts(_ context.Context, f triage.AlertFilter) (triage.AlertPage, error) {
	if f.Limit <= 0 {
		return triage.AlertPage{}, &triage.ValidationError{Field: "limit", Msg: "must be > 0"}
	}
	curT, curID, hasCur, err := triage.DecodeCursor(f.Cursor)
	if err != nil {
		return triage.AlertPage{}, err
	}
	if f.Order != triage.OrderNewest && f.Order != triage.OrderRisk {
		return triage.AlertPage{}, &triage.ValidationError{Field: "order", Msg: "must be newest or risk"}
	}
	if f.Order == triage.OrderRisk && hasCur {
		return triage.AlertPage{}, &triage.ValidationError{Field: "cursor", Msg: "only the newest-first order has pages"}
	}
	if err := checkFilter(f, true); err != nil {
		return triage.AlertPage{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var hits []triage.Alert
	for _, a := range s.alerts {
		if hasCur && cmp.Or(a.FirstSeen.Compare(curT), cmp.Compare(a.AlertID, curID)) >= 0 {
			continue
		}
		if a = s.withState(a); s.matches(a, f, true) {
			a.FindingIDs = nil
			hits = append(hits, a)
		}
	}
	if f.Order == triage.OrderRisk {
		slices.SortStableFunc(hits, func(a, b triage.Alert) int {
			return cmp.Or(cmp.Compare(schemas.Severity(b.Severity).Rank(), schemas.Severity(a.Severity).Rank()),
				cmp.Compare(b.Score, a.Score), a.FirstSeen.Compare(b.FirstSeen), cmp.Compare(a.AlertID, b.AlertID))
		})
	}
	page := triage.AlertPage{Alerts: []triage.Alert{}}
	if len(hits) > f.Limit {
		hits = hits[:f.Limit]
		if f.Order == triage.OrderNewest {
			last := hits[f.Limit-1]
			page.NextCursor = triage.EncodeCursor(last.FirstSeen, last.AlertID)
		}
	}
	page.Alerts = append(page.Alerts, hits...)
	return page, nil
}

// matches reports whether a (with its current state) passes f; withStatus
// false ignores f's status filters (CountAlerts).
func (s *Store) matches(a triage.Alert, f triage.AlertFilter, withStatus bool) bool {
	switch {
	case f.Detector != "" && a.Detector != f.Detector,
		f.UserID != "" && a.UserID != f.UserID,
		f.PatientID != "" && a.PatientID != f.PatientID,
		f.FacilityID != "" && a.FacilityID != f.FacilityID,
		f.Department != "" && !s.inDepartment(a.UserID, f.Department),
		f.MinSeverity != "" && schemas.Severity(a.Severity).Rank() < f.MinSeverity.Rank(),
		!f.From.IsZero() && a.LastSeen.Before(f.From),
		!f.To.IsZero() && !a.FirstSeen.Before(f.To),
		!f.SeenBefore.IsZero() && !a.FirstSeen.Before(f.SeenBefore),
		!f.ChangedSince.IsZero() && !s.built.After(f.ChangedSince),
		f.Assignee != "" && (a.Triage.Version == 0 || a.Triage.Assignee != f.Assignee),
		f.Unassigned && a.Triage.Assignee != "":
		return false
	}
	if withStatus {
		if f.Status != "" && a.Triage.Status != f.Status {
			return false
		}
		if len(f.Statuses) > 0 && !slices.Contains(f.Statuses, a.Triage.Status) {
			return false
		}
	}
	return true
}

func (s *Store) inDepartment(userID, dept string) bool {
	u, ok := s.users[userID]
	return ok && strings.EqualFold(strings.TrimSpace(u.Department), strings.TrimSpace(dept))
}

// checkFilter validates f as the ClickHouse store does.
func checkFilter(f triage.AlertFilter, withStatus bool) error {
	if f.MinSeverity != "" && !f.MinSeverity.Valid() {
		return &triage.ValidationError{Field: "severity", Msg: "must be one of info, low, medium, high, critical"}
	}
	if withStatus {
		if f.Status != "" && !f.Status.Valid() {
			return &triage.ValidationError{Field: "status", Msg: "must be one of new, triaged, closed"}
		}
		for _, st := range f.Statuses {
			if !st.Valid() {
				return &triage.ValidationError{Field: "status", Msg: "must be one of new, triaged, closed"}
			}
		}
	}
	if f.Assignee != "" && f.Unassigned {
		return &triage.ValidationError{Field: "assignee", Msg: "give an assignee or ask for unassigned alerts, not both"}
	}
	return nil
}

// CountAlerts counts the alerts matching f per status (f's status
// filters, Limit, Cursor and Order ignored).
func (s *Store) CountAlerts(_ context.Context, f triage.AlertFilter) (triage.AlertCounts, error) {
	if err := checkFilter(f, false); err != nil {
		return triage.AlertCounts{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var c triage.AlertCounts
	for _, a := range s.alerts {
		a = s.withState(a)
		if !s.matches(a, f, false) {
			continue
		}
		switch a.Triage.Status {
		case triage.StatusNew:
			c.New++
		case triage.StatusTriaged:
			c.Triaged++
		case triage.StatusClosed:
			c.Closed++
		}
	}
	return c, nil
}

// Location returns a facility's time zone (UTC when unknown).
func (s *Store) Location(facilityID string) *time.Location {
	if s.opts.Location != nil {
		if loc := s.opts.Location(facilityID); loc != nil {
			return loc
		}
	}
	return time.UTC
}

// AlertExists reports whether the store holds alertID.
func (s *Store) AlertExists(_ context.Context, alertID string) (bool, error) {
	_, ok := s.alertI[alertID]
	return ok, nil
}

// State returns an alert's current triage state (new at version 0 when
// untouched).
func (s *Store) State(_ context.Context, alertID string) (triage.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st, ok := s.state[alertID]; ok {
		return st, nil
	}
	return triage.InitialState(alertID), nil
}

// History returns every change of an alert, oldest first.
func (s *Store) History(_ context.Context, alertID string) ([]triage.State, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.history[alertID]), nil
}

// Update applies one triage change with the ClickHouse store's lifecycle
// (triage.Apply) and optimistic versions: a change naming a version other
// than the current one is a *triage.ConflictError.
func (s *Store) Update(_ context.Context, alertID string, ch triage.Change, actor triage.Actor) (triage.State, error) {
	if err := triage.CheckID("alert_id", alertID); err != nil {
		return triage.State{}, err
	}
	if actor.Name == "" || len(actor.Name) > triage.MaxActorBytes {
		return triage.State{}, errors.New("triage: actor name required (at most 256 bytes)")
	}
	if _, ok := s.alertI[alertID]; !ok {
		return triage.State{}, triage.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.state[alertID]
	if !ok {
		cur = triage.InitialState(alertID)
	}
	if cur.Version != ch.ExpectedVersion {
		return triage.State{}, &triage.ConflictError{Expected: ch.ExpectedVersion, Current: cur.Version}
	}
	next, err := triage.Apply(cur, ch, actor)
	if err != nil {
		return triage.State{}, err
	}
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	next.AlertID, next.Version, next.ChangedBy, next.ChangedAt = alertID, cur.Version+1, actor.Name, &now
	s.state[alertID] = next
	s.history[alertID] = append(s.history[alertID], next)
	return next, nil
}

// AlertDetail returns an alert with its triage state, findings and
// events, bounded as the ClickHouse store bounds them.
func (s *Store) AlertDetail(_ context.Context, alertID string) (triage.AlertDetail, error) {
	if err := triage.CheckID("alert_id", alertID); err != nil {
		return triage.AlertDetail{}, err
	}
	i, ok := s.alertI[alertID]
	if !ok {
		return triage.AlertDetail{}, triage.ErrNotFound
	}
	s.mu.Lock()
	a := s.withState(s.alerts[i])
	s.mu.Unlock()
	d := triage.AlertDetail{Alert: a, Findings: []schemas.Finding{}, Events: []triage.Event{}}
	fids := slices.Clone(a.FindingIDs)
	if len(fids) > s.opts.MaxDetailFindings {
		fids, d.Truncated = fids[:s.opts.MaxDetailFindings], true
	}
	for _, id := range fids {
		if f, ok := s.findings[id]; ok {
			d.Findings = append(d.Findings, f)
		}
	}
	slices.SortFunc(d.Findings, func(a, b schemas.Finding) int {
		return cmp.Or(a.WindowStart.Compare(b.WindowStart), cmp.Compare(a.FindingID, b.FindingID))
	})
	eids, truncated := triage.DetailEventIDs(d.Findings, s.opts.MaxDetailEvents)
	d.Truncated = d.Truncated || truncated
	var idx []int
	for _, id := range eids {
		if j, ok := s.byID[id]; ok {
			idx = append(idx, j)
		}
	}
	d.MissingEvents = len(eids) - len(idx)
	slices.Sort(idx) // events are in (event_time, event_id) order
	for _, j := range idx {
		e := s.events[j]
		d.Events = append(d.Events, triage.Event{AccessEvent: e, Care: s.explain(&e)})
	}
	return d, nil
}

func (s *Store) explain(e *schemas.AccessEvent) triage.Care {
	dept := e.UserDepartment
	if dept == "" {
		dept = s.users[e.UserID].Department
	}
	return s.care.Explain(e.PatientID, e.UserID, dept, e.EventTime)
}

// Report runs one page of a report, as (*triage.Store).Report does.
func (s *Store) Report(_ context.Context, q triage.ReportQuery) (triage.Report, error) {
	var list []int
	switch q.Kind {
	case triage.PatientAccess:
		if err := triage.CheckID("patient_id", q.SubjectID); err != nil {
			return triage.Report{}, err
		}
		list = s.byPatient[q.SubjectID]
	case triage.UserActivity:
		if err := triage.CheckID("user_id", q.SubjectID); err != nil {
			return triage.Report{}, err
		}
		list = s.byUser[q.SubjectID]
	default:
		return triage.Report{}, &triage.ValidationError{Field: "kind", Msg: "unknown report"}
	}
	if err := triage.CheckRange(q.From, q.To, 0); err != nil {
		return triage.Report{}, err
	}
	if q.Limit <= 0 {
		return triage.Report{}, &triage.ValidationError{Field: "limit", Msg: "must be > 0"}
	}
	curT, curID, hasCur, err := triage.DecodeCursor(q.Cursor)
	if err != nil {
		return triage.Report{}, err
	}
	rep := triage.Report{Kind: q.Kind, SubjectID: q.SubjectID, From: q.From.UTC(), To: q.To.UTC(),
		GeneratedAt: s.opts.Now().UTC().Truncate(time.Millisecond), Rows: []triage.AccessRow{}}
	for _, j := range list {
		e := &s.events[j]
		if e.EventTime.Before(q.From) || !e.EventTime.Before(q.To) ||
			hasCur && cmp.Or(e.EventTime.Compare(curT), cmp.Compare(e.EventID, curID)) <= 0 {
			continue
		}
		if len(rep.Rows) == q.Limit {
			last := rep.Rows[q.Limit-1]
			rep.NextCursor = triage.EncodeCursor(last.Time, last.EventID)
			break
		}
		var loc *time.Location
		if s.opts.Location != nil {
			loc = s.opts.Location(e.FacilityID)
		}
		rep.Rows = append(rep.Rows, triage.NewAccessRow(e, s.users[e.UserID], s.explain(e), s.cites[e.EventID], loc))
	}
	if q.Kind == triage.UserActivity && !hasCur {
		rep.Findings = []triage.FindingSummary{}
		for _, id := range s.findingOrder {
			f := s.findings[id]
			if f.UserID != q.SubjectID || !f.WindowStart.Before(q.To) || f.WindowEnd.Before(q.From) {
				continue
			}
			if len(rep.Findings) == s.opts.MaxReportFindings {
				rep.FindingsTruncated = true
				break
			}
			rep.Findings = append(rep.Findings, triage.FindingSummary{FindingID: id, Detector: f.Detector,
				Severity: string(f.Severity), PatientID: f.PatientID, WindowStart: f.WindowStart, WindowEnd: f.WindowEnd,
				Explanation: f.Explanation, Suppressed: f.Suppressed, EventCount: len(f.EventIDs)})
		}
	}
	refs, _ := s.ReferenceCounts(context.Background())
	rep.Warnings = triage.ReferenceWarnings(refs)
	return rep, nil
}

// ReportAll runs q until q.Limit rows (or the end of the range) in one
// report; NextCursor is set when rows remain.
func (s *Store) ReportAll(ctx context.Context, q triage.ReportQuery) (triage.Report, error) {
	return triage.ReportInPasses(ctx, q, s.Report)
}
