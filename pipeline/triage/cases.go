package triage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// CaseStatus is where a case (an investigation grouping alerts) is in its
// lifecycle.
type CaseStatus string

// The statuses a case can have.
const (
	CaseOpen          CaseStatus = "open"
	CaseInvestigating CaseStatus = "investigating"
	CaseClosed        CaseStatus = "closed"
)

// CaseStatuses lists every case status in lifecycle order.
var CaseStatuses = []CaseStatus{CaseOpen, CaseInvestigating, CaseClosed}

// Valid reports whether s is a known case status.
func (s CaseStatus) Valid() bool { return slices.Contains(CaseStatuses, s) }

// CaseOutcome is what an investigation concluded; required when a case is
// closed.
type CaseOutcome string

// The outcomes a closed case can carry.
const (
	OutcomeNoViolation        CaseOutcome = "no_violation"
	OutcomeViolationConfirmed CaseOutcome = "violation_confirmed"
	OutcomeUserEducated       CaseOutcome = "user_educated"
	OutcomeSanctioned         CaseOutcome = "sanctioned"
	OutcomeReferred           CaseOutcome = "referred"
	OutcomeInconclusive       CaseOutcome = "inconclusive"
)

// CaseOutcomes lists every outcome.
var CaseOutcomes = []CaseOutcome{OutcomeNoViolation, OutcomeViolationConfirmed, OutcomeUserEducated,
	OutcomeSanctioned, OutcomeReferred, OutcomeInconclusive}

// Valid reports whether o is a known outcome.
func (o CaseOutcome) Valid() bool { return slices.Contains(CaseOutcomes, o) }

// CaseAction names what one change of a case did.
type CaseAction string

// The case actions recorded in case_history.
const (
	CaseCreated      CaseAction = "created"
	CaseAlertsAdded  CaseAction = "alerts_added"
	CaseAlertRemoved CaseAction = "alert_removed"
	CaseUpdated      CaseAction = "updated"
)

// Limits on cases.
const (
	// MaxCaseAlerts bounds the alerts of one case.
	MaxCaseAlerts = 500
	// MaxTitleBytes bounds a case title.
	MaxTitleBytes = 200
)

// Case is an investigation's current state.
type Case struct {
	CaseID    string      `json:"case_id"`
	Version   uint64      `json:"version"`
	Title     string      `json:"title"`
	Status    CaseStatus  `json:"status"`
	Assignee  string      `json:"assignee"`
	Outcome   CaseOutcome `json:"outcome,omitempty"`
	AlertIDs  []string    `json:"alert_ids"`
	CreatedBy string      `json:"created_by"`
	CreatedAt time.Time   `json:"created_at"`
	ChangedBy string      `json:"changed_by"`
	ChangedAt time.Time   `json:"changed_at"`
}

// CaseChange is one row of a case's history: the state after the change
// and what the change did.
type CaseChange struct {
	Case
	Action  CaseAction `json:"action"`
	Added   []string   `json:"added,omitempty"`
	Removed []string   `json:"removed,omitempty"`
	Note    string     `json:"note,omitempty"`
}

// CaseUpdate is one requested change of a case's state. Nil fields are
// left as they are.
type CaseUpdate struct {
	// ExpectedVersion is the case version the caller last saw.
	ExpectedVersion uint64
	Title           *string
	Status          *CaseStatus
	// Assignee sets the assignee; a pointer to "" unassigns.
	Assignee *string
	// Outcome is required when closing and only allowed then.
	Outcome *CaseOutcome
	Note    *string
}

// CaseConflictError says the case changed since the version the caller
// saw; Changes are the changes the caller missed (oldest first), so a page
// can show who changed what instead of a bare 409.
type CaseConflictError struct {
	Expected uint64
	Current  uint64
	Changes  []CaseChange
}

func (e *CaseConflictError) Error() string {
	msg := fmt.Sprintf("case changed: expected version %d, current version is %d", e.Expected, e.Current)
	if n := len(e.Changes); n > 0 {
		last := e.Changes[n-1]
		msg += fmt.Sprintf(" (%s by %s at %s)", last.Action, last.ChangedBy, last.ChangedAt.Format(time.RFC3339))
	}
	return msg + "; reload and retry"
}

// ErrCaseNotFound is returned for an unknown case; it wraps ErrNotFound.
var ErrCaseNotFound = fmt.Errorf("case %w", ErrNotFound)

// CaseFilter selects cases; zero fields do not filter.
type CaseFilter struct {
	Status   CaseStatus
	Assignee string
	// AlertID selects the cases that hold this alert.
	AlertID string
	Limit   int
	Cursor  string
}

// CasePage is one page of cases, newest (by created_at) first.
type CasePage struct {
	Cases      []Case `json:"cases"`
	NextCursor string `json:"next_cursor,omitempty"`
}

const caseColumns = `case_id, version, title, status, assignee, outcome, alert_ids, created_by, created_at, changed_by, changed_at`

func scanCases(rows driver.Rows) ([]Case, error) {
	defer rows.Close()
	var out []Case
	for rows.Next() {
		var c Case
		var status, outcome string
		if err := rows.Scan(&c.CaseID, &c.Version, &c.Title, &status, &c.Assignee, &outcome, &c.AlertIDs,
			&c.CreatedBy, &c.CreatedAt, &c.ChangedBy, &c.ChangedAt); err != nil {
			return nil, err
		}
		c.Status, c.Outcome = CaseStatus(status), CaseOutcome(outcome)
		c.CreatedAt, c.ChangedAt = c.CreatedAt.UTC(), c.ChangedAt.UTC()
		if c.AlertIDs == nil {
			c.AlertIDs = []string{}
		}
		out = append(out, c)
	}
	return out, rows.Err()
}

// Case returns a case's current state; ErrCaseNotFound when unknown.
func (s *Store) Case(ctx context.Context, caseID string) (Case, error) {
	if err := CheckID("case_id", caseID); err != nil {
		return Case{}, err
	}
	p := params{}
	p.str("case", caseID)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT `+caseColumns+` FROM cases FINAL WHERE case_id = {case:String}`)
	if err != nil {
		return Case{}, fmt.Errorf("read case: %w", err)
	}
	cs, err := scanCases(rows)
	if err != nil {
		return Case{}, fmt.Errorf("read case: %w", err)
	}
	if len(cs) == 0 {
		return Case{}, ErrCaseNotFound
	}
	return cs[len(cs)-1], nil
}

// CaseHistory returns every change of a case, oldest first (empty for an
// unknown case).
func (s *Store) CaseHistory(ctx context.Context, caseID string) ([]CaseChange, error) {
	return s.caseHistorySince(ctx, caseID, 0)
}

func (s *Store) caseHistorySince(ctx context.Context, caseID string, after uint64) ([]CaseChange, error) {
	p := params{}
	p.str("case", caseID)
	p.uint("after", after)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT `+caseColumns+`, action, added, removed, note, change_id
FROM case_history WHERE case_id = {case:String} AND version > {after:UInt64}
ORDER BY version, changed_at, change_id`)
	if err != nil {
		return nil, fmt.Errorf("read case history: %w", err)
	}
	defer rows.Close()
	out := []CaseChange{}
	var lastVersion uint64
	for rows.Next() {
		var ch CaseChange
		var status, outcome, action, changeID string
		if err := rows.Scan(&ch.CaseID, &ch.Version, &ch.Title, &status, &ch.Assignee, &outcome, &ch.AlertIDs,
			&ch.CreatedBy, &ch.CreatedAt, &ch.ChangedBy, &ch.ChangedAt, &action, &ch.Added, &ch.Removed, &ch.Note, &changeID); err != nil {
			return nil, fmt.Errorf("read case history: %w", err)
		}
		if len(out) > 0 && ch.Version == lastVersion {
			continue // a racing loser's row that deduplication did not drop: the first one won
		}
		lastVersion = ch.Version
		ch.Status, ch.Outcome, ch.Action = CaseStatus(status), CaseOutcome(outcome), CaseAction(action)
		ch.CreatedAt, ch.ChangedAt = ch.CreatedAt.UTC(), ch.ChangedAt.UTC()
		if ch.AlertIDs == nil {
			ch.AlertIDs = []string{}
		}
		if len(ch.Added) == 0 {
			ch.Added = nil
		}
		if len(ch.Removed) == 0 {
			ch.Removed = nil
		}
		out = append(out, ch)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read case history: %w", err)
	}
	return out, nil
}

// ListCases returns one page of cases matching f, newest first.
func (s *Store) ListCases(ctx context.Context, f CaseFilter) (CasePage, error) {
	if err := CheckCaseFilter(f); err != nil {
		return CasePage{}, err
	}
	cur, _ := decodeCursor(f.Cursor)
	p := params{}
	where := []string{"1"}
	if f.Status != "" {
		p.str("status", string(f.Status))
		where = append(where, "status = {status:String}")
	}
	if f.Assignee != "" {
		p.str("assignee", f.Assignee)
		where = append(where, "assignee = {assignee:String}")
	}
	if f.AlertID != "" {
		p.str("alert", f.AlertID)
		where = append(where, "case_id IN (SELECT case_id FROM case_alerts FINAL WHERE alert_id = {alert:String} AND member)")
	}
	if cur != nil {
		p.time("cur_t", cur.t)
		p.str("cur_id", cur.id)
		where = append(where, "(created_at, case_id) < ({cur_t:DateTime64(3, 'UTC')}, {cur_id:String})")
	}
	p.uint("limit", uint64(f.Limit)+1)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT `+caseColumns+` FROM cases FINAL WHERE `+strings.Join(where, " AND ")+`
ORDER BY created_at DESC, case_id DESC LIMIT {limit:UInt32}`)
	if err != nil {
		return CasePage{}, fmt.Errorf("list cases: %w", err)
	}
	cs, err := scanCases(rows)
	if err != nil {
		return CasePage{}, fmt.Errorf("list cases: %w", err)
	}
	return PageCases(cs, f.Limit), nil
}

// CheckCaseFilter validates f (limit, cursor, status) as ListCases does.
func CheckCaseFilter(f CaseFilter) error {
	if f.Limit <= 0 {
		return invalid("limit", "must be > 0")
	}
	if _, err := decodeCursor(f.Cursor); err != nil {
		return err
	}
	if f.Status != "" && !f.Status.Valid() {
		return invalid("status", "must be one of %s", joinCaseStatuses())
	}
	return nil
}

// PageCases makes the page of cs (matching cases, newest first, at most
// limit+1 of them) that ListCases returns.
func PageCases(cs []Case, limit int) CasePage {
	page := CasePage{Cases: cs}
	if len(cs) > limit {
		page.Cases = cs[:limit]
		last := page.Cases[limit-1]
		page.NextCursor = encodeCursor(last.CreatedAt, last.CaseID)
	}
	if page.Cases == nil {
		page.Cases = []Case{}
	}
	return page
}

// CasesForAlerts returns the cases that hold any of alertIDs, newest first
// (at most limit).
func (s *Store) CasesForAlerts(ctx context.Context, alertIDs []string, limit int) ([]Case, error) {
	if len(alertIDs) == 0 {
		return []Case{}, nil
	}
	p := params{}
	p.strs("alerts", alertIDs)
	p.uint("limit", uint64(max(limit, 1)))
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT `+caseColumns+` FROM cases FINAL
WHERE case_id IN (SELECT case_id FROM case_alerts FINAL WHERE has({alerts:Array(String)}, alert_id) AND member)
ORDER BY created_at DESC, case_id DESC LIMIT {limit:UInt32}`)
	if err != nil {
		return nil, fmt.Errorf("read cases: %w", err)
	}
	cs, err := scanCases(rows)
	if err != nil {
		return nil, fmt.Errorf("read cases: %w", err)
	}
	if cs == nil {
		cs = []Case{}
	}
	return cs, nil
}

// CreateCase opens a case titled title over alertIDs (at least one, each an
// existing alert) and returns it at version 1.
func (s *Store) CreateCase(ctx context.Context, title string, alertIDs []string, actor Actor) (Case, error) {
	ch, err := NewCase(title, alertIDs, actor, s.opts.Now(), func(ids []string) ([]string, error) {
		return s.checkAlertIDs(ctx, "alert_ids", ids)
	})
	if err != nil {
		return Case{}, err
	}
	if err := s.insertCaseChange(ctx, ch, 0); err != nil {
		return Case{}, err
	}
	return ch.Case, nil
}

// NewCase validates a new case (actor, title, then the alerts, which
// checkIDs validates, deduplicates, sorts and looks up: CheckCaseAlertIDs
// plus the store's own lookup) and returns its first change, version 1 at
// now.
func NewCase(title string, alertIDs []string, actor Actor, now time.Time, checkIDs func([]string) ([]string, error)) (CaseChange, error) {
	if err := CheckActor(actor); err != nil {
		return CaseChange{}, err
	}
	title = strings.TrimSpace(title)
	if err := checkText("title", title, MaxTitleBytes, false); err != nil {
		return CaseChange{}, err
	}
	if title == "" {
		return CaseChange{}, invalid("title", "required")
	}
	ids, err := checkIDs(alertIDs)
	if err != nil {
		return CaseChange{}, err
	}
	if len(ids) == 0 {
		return CaseChange{}, invalid("alert_ids", "a case needs at least one alert")
	}
	now = now.UTC().Truncate(time.Millisecond)
	return CaseChange{Case: Case{CaseID: newCaseID(now), Version: 1, Title: title, Status: CaseOpen, AlertIDs: ids,
		CreatedBy: actor.Name, CreatedAt: now, ChangedBy: actor.Name, ChangedAt: now},
		Action: CaseCreated, Added: ids}, nil
}

// AddAlerts adds alerts (existing, not yet members) to an open case.
func (s *Store) AddAlerts(ctx context.Context, caseID string, alertIDs []string, expectedVersion uint64, note string, actor Actor) (Case, error) {
	return s.changeCase(ctx, caseID, expectedVersion, actor, func(cur Case) (CaseChange, error) {
		return AddCaseAlerts(cur, alertIDs, note, func(ids []string) ([]string, error) {
			return s.checkAlertIDs(ctx, "alert_ids", ids)
		})
	})
}

// AddCaseAlerts is AddAlerts' rule: the change adding alertIDs (checked by
// checkIDs, as in NewCase) to the open case cur.
func AddCaseAlerts(cur Case, alertIDs []string, note string, checkIDs func([]string) ([]string, error)) (CaseChange, error) {
	if cur.Status == CaseClosed {
		return CaseChange{}, invalid("status", "a closed case takes no alerts; reopen it (status investigating) first")
	}
	ids, err := checkIDs(alertIDs)
	if err != nil {
		return CaseChange{}, err
	}
	var added []string
	for _, id := range ids {
		if !slices.Contains(cur.AlertIDs, id) {
			added = append(added, id)
		}
	}
	if len(added) == 0 {
		return CaseChange{}, invalid("alert_ids", "every alert given is already in the case")
	}
	next := cur
	next.AlertIDs = append(slices.Clone(cur.AlertIDs), added...)
	slices.Sort(next.AlertIDs)
	if len(next.AlertIDs) > MaxCaseAlerts {
		return CaseChange{}, invalid("alert_ids", "a case holds at most %d alerts", MaxCaseAlerts)
	}
	return CaseChange{Case: next, Action: CaseAlertsAdded, Added: added, Note: note}, nil
}

// RemoveAlert takes one alert out of an open case (a case keeps at least
// one alert).
func (s *Store) RemoveAlert(ctx context.Context, caseID, alertID string, expectedVersion uint64, note string, actor Actor) (Case, error) {
	return s.changeCase(ctx, caseID, expectedVersion, actor, func(cur Case) (CaseChange, error) {
		return RemoveCaseAlert(cur, alertID, note)
	})
}

// RemoveCaseAlert is RemoveAlert's rule: the change taking alertID out of
// the open case cur.
func RemoveCaseAlert(cur Case, alertID, note string) (CaseChange, error) {
	if err := CheckID("alert_id", alertID); err != nil {
		return CaseChange{}, err
	}
	if cur.Status == CaseClosed {
		return CaseChange{}, invalid("status", "a closed case keeps its alerts; reopen it (status investigating) first")
	}
	if !slices.Contains(cur.AlertIDs, alertID) {
		return CaseChange{}, invalid("alert_id", "not in this case")
	}
	if len(cur.AlertIDs) == 1 {
		return CaseChange{}, invalid("alert_id", "the last alert of a case cannot be removed; close the case instead")
	}
	next := cur
	next.AlertIDs = slices.DeleteFunc(slices.Clone(cur.AlertIDs), func(x string) bool { return x == alertID })
	return CaseChange{Case: next, Action: CaseAlertRemoved, Removed: []string{alertID}, Note: note}, nil
}

// UpdateCase changes a case's title, status, assignee, outcome or adds a
// note, with the lifecycle in the package documentation.
func (s *Store) UpdateCase(ctx context.Context, caseID string, u CaseUpdate, actor Actor) (Case, error) {
	return s.changeCase(ctx, caseID, u.ExpectedVersion, actor, func(cur Case) (CaseChange, error) {
		return ApplyCase(cur, u, actor)
	})
}

// CheckActor checks the recorded name of whoever makes a change.
func CheckActor(actor Actor) error {
	if actor.Name == "" || len(actor.Name) > MaxActorBytes {
		return errors.New("triage: actor name required (at most 256 bytes)")
	}
	return nil
}

// changeCase reads the case, checks the version, lets build make the next
// state, and writes it as version + 1.
func (s *Store) changeCase(ctx context.Context, caseID string, expected uint64, actor Actor,
	build func(cur Case) (CaseChange, error)) (Case, error) {
	if err := CheckCaseChange(caseID, actor); err != nil {
		return Case{}, err
	}
	defer s.lock("case/" + caseID)()
	cur, err := s.Case(ctx, caseID)
	if err != nil {
		return Case{}, err
	}
	next, err := NextCase(cur, expected, actor, s.opts.Now(), func() []CaseChange {
		changes, _ := s.caseHistorySince(ctx, caseID, expected)
		return changes
	}, build)
	if err != nil {
		return Case{}, err
	}
	if err := s.insertCaseChange(ctx, next, expected); err != nil {
		return Case{}, err
	}
	return next.Case, nil
}

// CheckCaseChange checks what every change of a case checks before
// reading it: the case id and the actor.
func CheckCaseChange(caseID string, actor Actor) error {
	if err := CheckID("case_id", caseID); err != nil {
		return err
	}
	return CheckActor(actor)
}

// NextCase is the version rule of every case change: cur must be at
// expected (else a *CaseConflictError listing missed(), the changes after
// expected), build makes the change, whose note is checked, and the result
// is version cur.Version+1 by actor at now.
func NextCase(cur Case, expected uint64, actor Actor, now time.Time, missed func() []CaseChange,
	build func(cur Case) (CaseChange, error)) (CaseChange, error) {
	if cur.Version != expected {
		return CaseChange{}, CaseConflict(expected, cur.Version, missed())
	}
	next, err := build(cur)
	if err != nil {
		return CaseChange{}, err
	}
	if next.Note != "" {
		if err := checkNote(next.Note); err != nil {
			return CaseChange{}, err
		}
	}
	next.Version = cur.Version + 1
	next.ChangedBy, next.ChangedAt = actor.Name, now.UTC().Truncate(time.Millisecond)
	return next, nil
}

func (s *Store) caseConflict(ctx context.Context, caseID string, expected, current uint64) error {
	changes, _ := s.caseHistorySince(ctx, caseID, expected)
	return CaseConflict(expected, current, changes)
}

// CaseConflict is the conflict error for a change expecting version
// expected of a case at current; missed are the case's changes after
// expected (oldest first; nil when unknown), of which it keeps the last 5.
func CaseConflict(expected, current uint64, missed []CaseChange) *CaseConflictError {
	ce := &CaseConflictError{Expected: expected, Current: current}
	if missed != nil {
		if len(missed) > 5 {
			missed = missed[len(missed)-5:]
		}
		ce.Changes = missed
		if n := len(missed); n > 0 && missed[n-1].Version > ce.Current {
			ce.Current = missed[n-1].Version
		}
	}
	return ce
}

// insertCaseChange writes ch (version expected+1) under the deduplication
// token "<case>/v<version>" and confirms that its row won the version.
func (s *Store) insertCaseChange(ctx context.Context, ch CaseChange, expected uint64) error {
	if s.beforeInsert != nil {
		s.beforeInsert()
	}
	changeID := newChangeID()
	token := "case/" + ch.CaseID + "/v" + strconv.FormatUint(ch.Version, 10)
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"insert_deduplicate":                                 1,
		"insert_deduplication_token":                         token,
		"deduplicate_blocks_in_dependent_materialized_views": 1,
	}))
	batch, err := s.conn.PrepareBatch(ictx, `INSERT INTO case_history
(case_id, version, title, status, assignee, outcome, alert_ids, action, added, removed, note, created_by, created_at, changed_by, changed_at, change_id)`)
	if err != nil {
		return fmt.Errorf("write case: %w", err)
	}
	nz := func(v []string) []string {
		if v == nil {
			return []string{}
		}
		return v
	}
	if err := batch.Append(ch.CaseID, ch.Version, ch.Title, string(ch.Status), ch.Assignee, string(ch.Outcome), nz(ch.AlertIDs),
		string(ch.Action), nz(ch.Added), nz(ch.Removed), ch.Note, ch.CreatedBy, ch.CreatedAt, ch.ChangedBy, ch.ChangedAt, changeID); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("write case: %w", err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("write case: %w", err)
	}
	p := params{}
	p.str("case", ch.CaseID)
	p.uint("version", ch.Version)
	var winner string
	if err := s.conn.QueryRow(p.ctx(ctx), `SELECT change_id FROM case_history
WHERE case_id = {case:String} AND version = {version:UInt64} ORDER BY changed_at, change_id LIMIT 1`).Scan(&winner); err != nil {
		return fmt.Errorf("confirm case: %w", err)
	}
	if winner != changeID {
		return s.caseConflict(ctx, ch.CaseID, expected, ch.Version)
	}
	return nil
}

// checkAlertIDs validates, deduplicates and sorts alert ids, and checks
// that every one names a stored alert.
func (s *Store) checkAlertIDs(ctx context.Context, field string, ids []string) ([]string, error) {
	out, err := CheckCaseAlertIDs(field, ids)
	if err != nil || len(out) == 0 {
		return out, err
	}
	p := params{}
	p.strs("ids", out)
	var n uint64
	if err := s.conn.QueryRow(p.ctx(ctx), `SELECT uniqExact(alert_id) FROM alerts WHERE has({ids:Array(String)}, alert_id)`).Scan(&n); err != nil {
		return nil, fmt.Errorf("look up alerts: %w", err)
	}
	if err := MissingAlerts(field, len(out), int(n)); err != nil {
		return nil, err
	}
	return out, nil
}

// CheckCaseAlertIDs validates, deduplicates and sorts the alert ids of a
// case change (whether they exist is the store's lookup: MissingAlerts).
func CheckCaseAlertIDs(field string, ids []string) ([]string, error) {
	if len(ids) > MaxCaseAlerts {
		return nil, invalid(field, "at most %d alerts at once", MaxCaseAlerts)
	}
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		if err := CheckID(field, id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// MissingAlerts is the error when only found of want alert ids exist (nil
// when all do).
func MissingAlerts(field string, want, found int) error {
	if found != want {
		return invalid(field, "%d of the %d alerts do not exist", want-found, want)
	}
	return nil
}

func checkNote(note string) error {
	if err := checkText("note", note, MaxNoteBytes, true); err != nil {
		return err
	}
	if strings.TrimSpace(note) == "" {
		return invalid("note", "must not be blank")
	}
	return nil
}

// ApplyCase validates u against the current case and returns the change
// (UpdateCase's lifecycle; NextCase sets its version).
func ApplyCase(cur Case, u CaseUpdate, actor Actor) (CaseChange, error) {
	if u.Title == nil && u.Status == nil && u.Assignee == nil && u.Outcome == nil && u.Note == nil {
		return CaseChange{}, invalid("", "nothing to change: give title, status, assignee, outcome or note")
	}
	next := CaseChange{Case: cur, Action: CaseUpdated}
	if u.Note != nil {
		if err := checkNote(*u.Note); err != nil {
			return CaseChange{}, err
		}
		next.Note = *u.Note
	}
	if u.Title != nil {
		t := strings.TrimSpace(*u.Title)
		if err := checkText("title", t, MaxTitleBytes, false); err != nil {
			return CaseChange{}, err
		}
		if t == "" {
			return CaseChange{}, invalid("title", "must not be blank")
		}
		next.Title = t
	}
	if u.Assignee != nil {
		if err := checkText("assignee", *u.Assignee, MaxAssigneeBytes, false); err != nil {
			return CaseChange{}, err
		}
		next.Assignee = strings.TrimSpace(*u.Assignee)
	}
	to := cur.Status
	if u.Status != nil {
		to = *u.Status
		if !to.Valid() {
			return CaseChange{}, invalid("status", "must be one of %s", joinCaseStatuses())
		}
	}
	if u.Outcome != nil && !u.Outcome.Valid() {
		return CaseChange{}, invalid("outcome", "must be one of %s", joinCaseOutcomes())
	}
	if to != cur.Status {
		if err := checkCaseTransition(cur.Status, to, actor); err != nil {
			return CaseChange{}, err
		}
	}
	next.Status = to
	switch {
	case to == CaseClosed && cur.Status != CaseClosed:
		if u.Outcome == nil {
			return CaseChange{}, invalid("outcome", "required when closing a case (one of %s)", joinCaseOutcomes())
		}
		next.Outcome = *u.Outcome
	case to == CaseClosed:
		if u.Outcome != nil || u.Assignee != nil || u.Title != nil {
			return CaseChange{}, invalid(firstSetCase(u), "a closed case only takes notes; reopen it (status investigating) to change it")
		}
	default:
		if u.Outcome != nil {
			return CaseChange{}, invalid("outcome", "only allowed when closing (status closed)")
		}
		next.Outcome = ""
	}
	return next, nil
}

func firstSetCase(u CaseUpdate) string {
	switch {
	case u.Outcome != nil:
		return "outcome"
	case u.Assignee != nil:
		return "assignee"
	}
	return "title"
}

// checkCaseTransition: open → investigating, open → closed,
// investigating → closed, closed → investigating (reopen, MayReopen).
func checkCaseTransition(from, to CaseStatus, actor Actor) error {
	switch {
	case from == CaseOpen && (to == CaseInvestigating || to == CaseClosed):
		return nil
	case from == CaseInvestigating && to == CaseClosed:
		return nil
	case from == CaseClosed && to == CaseInvestigating:
		if !actor.MayReopen {
			return fmt.Errorf("%w: reopening a closed case needs the privacy_officer or admin role", ErrForbidden)
		}
		return nil
	}
	return invalid("status", "cannot go from %s to %s (allowed: open→investigating, open→closed, investigating→closed, closed→investigating)", from, to)
}

func joinCaseStatuses() string {
	s := make([]string, len(CaseStatuses))
	for i, v := range CaseStatuses {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

func joinCaseOutcomes() string {
	s := make([]string, len(CaseOutcomes))
	for i, v := range CaseOutcomes {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// newCaseID returns "case-YYYYMMDD-<8 random hex>": short enough to say
// on the phone, sortable by day, not guessable.
func newCaseID(now time.Time) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "case-" + now.Format("20060102") + "-" + hex.EncodeToString(b[:])
}

// AlertsByID returns the alerts with the given ids (unknown ids are left
// out), newest first.
func (s *Store) AlertsByID(ctx context.Context, ids []string) ([]Alert, error) {
	if len(ids) == 0 {
		return []Alert{}, nil
	}
	p := params{}
	p.strs("ids", ids)
	rows, err := s.conn.Query(p.ctx(ctx), fmt.Sprintf(alertSelect, "has({ids:Array(String)}, alert_id)", "has({ids:Array(String)}, alert_id)")+
		"\nORDER BY a.first_seen DESC, a.alert_id DESC")
	if err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	alerts, err := scanAlerts(rows)
	if err != nil {
		return nil, fmt.Errorf("read alerts: %w", err)
	}
	for i := range alerts {
		alerts[i].FindingIDs = nil
	}
	if alerts == nil {
		alerts = []Alert{}
	}
	return alerts, nil
}
