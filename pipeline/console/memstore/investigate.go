package memstore

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// This file holds the privacy office's investigations: cases, the
// allowlist editor, and the user page's heat map. The rules are triage's
// (NewCase, AddCaseAlerts, RemoveCaseAlert, ApplyCase, NextCase,
// NewAllowlistItem, ChangeAllowlistItem, HeatmapCounter); this file only
// keeps the rows. Allowlist edits here reach no detector: the demo's run
// is over when the store serves.

// investigations is the store's mutable investigation state (under mu).
type investigations struct {
	cases       map[string]triage.Case
	caseHistory map[string][]triage.CaseChange

	allowlist        map[string]triage.AllowlistItem
	allowlistHistory []triage.AllowlistHistoryRow // oldest first
}

// checkAlertIDs is the ClickHouse store's check of a case's alerts: valid
// ids (sorted, once each) that name stored alerts.
func (s *Store) checkAlertIDs(ids []string) ([]string, error) {
	out, err := triage.CheckCaseAlertIDs("alert_ids", ids)
	if err != nil || len(out) == 0 {
		return out, err
	}
	found := 0
	for _, id := range out {
		if _, ok := s.alertI[id]; ok {
			found++
		}
	}
	if err := triage.MissingAlerts("alert_ids", len(out), found); err != nil {
		return nil, err
	}
	return out, nil
}

// CreateCase opens a case over alertIDs, at version 1.
func (s *Store) CreateCase(_ context.Context, title string, alertIDs []string, actor triage.Actor) (triage.Case, error) {
	ch, err := triage.NewCase(title, alertIDs, actor, s.opts.Now(), s.checkAlertIDs)
	if err != nil {
		return triage.Case{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putCase(ch)
	return ch.Case, nil
}

// putCase records a change (callers hold mu).
func (s *Store) putCase(ch triage.CaseChange) {
	if s.inv.cases == nil {
		s.inv.cases, s.inv.caseHistory = map[string]triage.Case{}, map[string][]triage.CaseChange{}
	}
	ch.AlertIDs = slices.Clone(ch.AlertIDs)
	s.inv.cases[ch.CaseID] = ch.Case
	s.inv.caseHistory[ch.CaseID] = append(s.inv.caseHistory[ch.CaseID], ch)
}

// changeCase applies one change with triage.NextCase's version rule.
func (s *Store) changeCase(caseID string, expected uint64, actor triage.Actor, build func(triage.Case) (triage.CaseChange, error)) (triage.Case, error) {
	if err := triage.CheckCaseChange(caseID, actor); err != nil {
		return triage.Case{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	cur, ok := s.inv.cases[caseID]
	if !ok {
		return triage.Case{}, triage.ErrCaseNotFound
	}
	next, err := triage.NextCase(cur, expected, actor, s.opts.Now(), func() []triage.CaseChange {
		return s.caseHistorySince(caseID, expected)
	}, build)
	if err != nil {
		return triage.Case{}, err
	}
	s.putCase(next)
	return next.Case, nil
}

// caseHistorySince returns the changes after version after (callers hold
// mu).
func (s *Store) caseHistorySince(caseID string, after uint64) []triage.CaseChange {
	out := []triage.CaseChange{}
	for _, ch := range s.inv.caseHistory[caseID] {
		if ch.Version > after {
			out = append(out, ch)
		}
	}
	return out
}

// AddAlerts adds alerts to an open case.
func (s *Store) AddAlerts(_ context.Context, caseID string, alertIDs []string, expectedVersion uint64, note string, actor triage.Actor) (triage.Case, error) {
	return s.changeCase(caseID, expectedVersion, actor, func(cur triage.Case) (triage.CaseChange, error) {
		return triage.AddCaseAlerts(cur, alertIDs, note, s.checkAlertIDs)
	})
}

// RemoveAlert takes one alert out of an open case.
func (s *Store) RemoveAlert(_ context.Context, caseID, alertID string, expectedVersion uint64, note string, actor triage.Actor) (triage.Case, error) {
	return s.changeCase(caseID, expectedVersion, actor, func(cur triage.Case) (triage.CaseChange, error) {
		return triage.RemoveCaseAlert(cur, alertID, note)
	})
}

// UpdateCase changes a case with triage.ApplyCase's lifecycle.
func (s *Store) UpdateCase(_ context.Context, caseID string, u triage.CaseUpdate, actor triage.Actor) (triage.Case, error) {
	return s.changeCase(caseID, u.ExpectedVersion, actor, func(cur triage.Case) (triage.CaseChange, error) {
		return triage.ApplyCase(cur, u, actor)
	})
}

// Case returns a case's current state.
func (s *Store) Case(_ context.Context, caseID string) (triage.Case, error) {
	if err := triage.CheckID("case_id", caseID); err != nil {
		return triage.Case{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.inv.cases[caseID]
	if !ok {
		return triage.Case{}, triage.ErrCaseNotFound
	}
	c.AlertIDs = slices.Clone(c.AlertIDs)
	return c, nil
}

// CaseHistory returns every change of a case, oldest first.
func (s *Store) CaseHistory(_ context.Context, caseID string) ([]triage.CaseChange, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.caseHistorySince(caseID, 0), nil
}

// sortedCases returns the cases keep selects, newest (created_at, case_id)
// first (callers hold mu).
func (s *Store) sortedCases(keep func(triage.Case) bool) []triage.Case {
	var out []triage.Case
	for _, c := range s.inv.cases {
		if keep(c) {
			c.AlertIDs = slices.Clone(c.AlertIDs)
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b triage.Case) int {
		return cmp.Or(b.CreatedAt.Compare(a.CreatedAt), cmp.Compare(b.CaseID, a.CaseID))
	})
	return out
}

// ListCases returns one page of cases matching f, newest first.
func (s *Store) ListCases(_ context.Context, f triage.CaseFilter) (triage.CasePage, error) {
	if err := triage.CheckCaseFilter(f); err != nil {
		return triage.CasePage{}, err
	}
	curT, curID, hasCur, _ := triage.DecodeCursor(f.Cursor)
	s.mu.Lock()
	cs := s.sortedCases(func(c triage.Case) bool {
		return (f.Status == "" || c.Status == f.Status) && (f.Assignee == "" || c.Assignee == f.Assignee) &&
			(f.AlertID == "" || slices.Contains(c.AlertIDs, f.AlertID)) &&
			(!hasCur || cmp.Or(c.CreatedAt.Compare(curT), cmp.Compare(c.CaseID, curID)) < 0)
	})
	s.mu.Unlock()
	if len(cs) > f.Limit+1 {
		cs = cs[:f.Limit+1]
	}
	return triage.PageCases(cs, f.Limit), nil
}

// CasesForAlerts returns the cases holding any of alertIDs, newest first.
func (s *Store) CasesForAlerts(_ context.Context, alertIDs []string, limit int) ([]triage.Case, error) {
	if len(alertIDs) == 0 {
		return []triage.Case{}, nil
	}
	s.mu.Lock()
	cs := s.sortedCases(func(c triage.Case) bool {
		return slices.ContainsFunc(c.AlertIDs, func(id string) bool { return slices.Contains(alertIDs, id) })
	})
	s.mu.Unlock()
	if cs = cs[:min(len(cs), max(limit, 1))]; cs == nil {
		cs = []triage.Case{}
	}
	return cs, nil
}

// AlertsByID returns the alerts with the given ids, newest first, with
// their triage state and without finding ids.
func (s *Store) AlertsByID(_ context.Context, ids []string) ([]triage.Alert, error) {
	out := []triage.Alert{}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, a := range s.alerts {
		if slices.Contains(ids, a.AlertID) {
			a = s.withState(a)
			a.FindingIDs = nil
			out = append(out, a)
		}
	}
	return out, nil
}

// ListAllowlist returns the entries, active first, then expired, then
// (withRemoved) removed, each group newest first; at most limit.
func (s *Store) ListAllowlist(_ context.Context, withRemoved bool, limit int) ([]triage.AllowlistItem, error) {
	if limit <= 0 {
		return nil, &triage.ValidationError{Field: "limit", Msg: "must be > 0"}
	}
	now := s.opts.Now()
	s.mu.Lock()
	out := []triage.AllowlistItem{}
	for _, it := range s.inv.allowlist {
		if withRemoved || !it.Deleted {
			it.State = triage.AllowlistState(it, now)
			it.Invalid = triage.AllowlistInvalid(it.AllowlistEntry)
			out = append(out, it)
		}
	}
	s.mu.Unlock()
	b := func(v bool) int {
		if v {
			return 1
		}
		return 0
	}
	slices.SortFunc(out, func(x, y triage.AllowlistItem) int {
		return cmp.Or(cmp.Compare(b(x.Deleted), b(y.Deleted)),
			cmp.Compare(b(x.ExpiresAt.Before(now)), b(y.ExpiresAt.Before(now))),
			y.UpdatedAt.Compare(x.UpdatedAt), cmp.Compare(x.EntryID, y.EntryID))
	})
	return out[:min(len(out), limit)], nil
}

// AddAllowlistEntry validates e with triage.NewAllowlistItem and keeps it.
func (s *Store) AddAllowlistEntry(_ context.Context, e schemas.AllowlistEntry, note string, actor triage.Actor) (triage.AllowlistItem, error) {
	it, err := triage.NewAllowlistItem(e, note, actor, s.opts.Detectors, s.opts.Now())
	if err != nil {
		return triage.AllowlistItem{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.putAllowlist(it, triage.AllowlistAdded, note, actor)
	return it, nil
}

// putAllowlist records a change (callers hold mu).
func (s *Store) putAllowlist(it triage.AllowlistItem, change triage.AllowlistChange, note string, actor triage.Actor) {
	if s.inv.allowlist == nil {
		s.inv.allowlist = map[string]triage.AllowlistItem{}
	}
	stored := it
	stored.State, stored.Invalid = "", ""
	s.inv.allowlist[it.EntryID] = stored
	s.inv.allowlistHistory = append(s.inv.allowlistHistory, triage.AllowlistHistoryRow{EntryID: it.EntryID, Change: change,
		AllowlistEntry: it.AllowlistEntry, Deleted: it.Deleted, Note: note, ChangedBy: actor.Name, ChangedAt: it.UpdatedAt})
}

// ExpireAllowlistEntry ends an entry now.
func (s *Store) ExpireAllowlistEntry(_ context.Context, entryID string, expected time.Time, note string, actor triage.Actor) (triage.AllowlistItem, error) {
	return s.changeAllowlist(entryID, expected, note, actor, triage.AllowlistExpired)
}

// RemoveAllowlistEntry removes an entry.
func (s *Store) RemoveAllowlistEntry(_ context.Context, entryID string, expected time.Time, note string, actor triage.Actor) (triage.AllowlistItem, error) {
	return s.changeAllowlist(entryID, expected, note, actor, triage.AllowlistRemoved)
}

func (s *Store) changeAllowlist(entryID string, expected time.Time, note string, actor triage.Actor, change triage.AllowlistChange) (triage.AllowlistItem, error) {
	if err := triage.CheckAllowlistChange(note, actor); err != nil {
		return triage.AllowlistItem{}, err
	}
	if err := triage.CheckID("entry_id", entryID); err != nil {
		return triage.AllowlistItem{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	it, ok := s.inv.allowlist[entryID]
	if !ok {
		return triage.AllowlistItem{}, triage.ErrAllowlistEntryNotFound
	}
	it, err := triage.ChangeAllowlistItem(it, expected, change, s.opts.Now(), func() *triage.AllowlistHistoryRow {
		if h := s.allowlistHistory(entryID, 1); len(h) > 0 {
			return &h[0]
		}
		return nil
	})
	if err != nil {
		return triage.AllowlistItem{}, err
	}
	s.putAllowlist(it, change, note, actor)
	return it, nil
}

// AllowlistHistory returns the changes of one entry ("" for every entry),
// newest first, at most limit.
func (s *Store) AllowlistHistory(_ context.Context, entryID string, limit int) ([]triage.AllowlistHistoryRow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.allowlistHistory(entryID, limit), nil
}

func (s *Store) allowlistHistory(entryID string, limit int) []triage.AllowlistHistoryRow {
	out := []triage.AllowlistHistoryRow{}
	for _, h := range s.inv.allowlistHistory {
		if entryID == "" || h.EntryID == entryID {
			out = append(out, h)
		}
	}
	slices.SortStableFunc(out, func(x, y triage.AllowlistHistoryRow) int {
		return cmp.Or(y.ChangedAt.Compare(x.ChangedAt), cmp.Compare(x.EntryID, y.EntryID))
	})
	return out[:min(len(out), max(limit, 1))]
}

// ReferenceCounts counts the users and encounters the store was given.
func (s *Store) ReferenceCounts(context.Context) (triage.ReferenceCounts, error) {
	return triage.ReferenceCounts{Users: uint64(s.nUsers), Encounters: uint64(s.nEncounter)}, nil
}

// UserHeatmap counts userID's accesses per local hour of week, with
// triage.HeatmapCounter's buckets.
func (s *Store) UserHeatmap(_ context.Context, userID string, from, to time.Time, baselineDays int) (triage.Heatmap, error) {
	hc, err := triage.NewHeatmapCounter(userID, from, to, baselineDays)
	if err != nil {
		return triage.Heatmap{}, err
	}
	for _, j := range s.byUser[userID] {
		e := &s.events[j]
		if e.EventTime.Before(hc.BaselineFrom()) || !e.EventTime.Before(to) {
			continue
		}
		var loc *time.Location
		if s.opts.Location != nil {
			loc = s.opts.Location(e.FacilityID)
		}
		hc.Add(e.EventTime, loc, 1)
	}
	return hc.Heatmap(), nil
}
