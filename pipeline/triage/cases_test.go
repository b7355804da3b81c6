package triage

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

func wantCaseConflict(t *testing.T, err error) *CaseConflictError {
	t.Helper()
	var ce *CaseConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("want a case conflict, got %v", err)
	}
	return ce
}

func TestCaseLifecycle(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	clock := tt.TS("2026-03-10T12:00:00Z")
	s := NewStore(conn, Options{Now: func() time.Time { clock = clock.Add(time.Second); return clock }})
	po := Actor{Name: "po-bob", MayReopen: true}
	other := Actor{Name: "po-carla"}

	// Creation checks its input.
	_, err := s.CreateCase(ctx, "", []string{"al-1"}, po)
	wantValidation(t, err, "title")
	_, err = s.CreateCase(ctx, "Bob and the oncology charts", nil, po)
	wantValidation(t, err, "alert_ids")
	_, err = s.CreateCase(ctx, "x", []string{"al-1", "al-nope"}, po)
	wantValidation(t, err, "alert_ids")

	c, err := s.CreateCase(ctx, "  Bob and the oncology charts ", []string{"al-3", "al-1", "al-1"}, po)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version != 1 || c.Status != CaseOpen || c.Title != "Bob and the oncology charts" || !slices.Equal(c.AlertIDs, []string{"al-1", "al-3"}) ||
		!strings.HasPrefix(c.CaseID, "case-20260310-") || c.CreatedBy != "po-bob" {
		t.Fatalf("created: %+v", c)
	}
	got, err := s.Case(ctx, c.CaseID)
	if err != nil || got.Version != 1 || !slices.Equal(got.AlertIDs, c.AlertIDs) {
		t.Fatalf("read back: %+v %v", got, err)
	}

	// Membership.
	c, err = s.AddAlerts(ctx, c.CaseID, []string{"al-4", "al-1"}, 1, "same user, same week", po)
	if err != nil || c.Version != 2 || !slices.Equal(c.AlertIDs, []string{"al-1", "al-3", "al-4"}) {
		t.Fatalf("add: %+v %v", c, err)
	}
	_, err = s.AddAlerts(ctx, c.CaseID, []string{"al-4"}, 2, "", po)
	wantValidation(t, err, "alert_ids")
	c, err = s.RemoveAlert(ctx, c.CaseID, "al-4", 2, "", po)
	if err != nil || c.Version != 3 || !slices.Equal(c.AlertIDs, []string{"al-1", "al-3"}) {
		t.Fatalf("remove: %+v %v", c, err)
	}
	_, err = s.RemoveAlert(ctx, c.CaseID, "al-2", 3, "", po)
	wantValidation(t, err, "alert_id")

	// Which cases hold an alert: case_alerts follows removals.
	for alert, want := range map[string]int{"al-1": 1, "al-3": 1, "al-4": 0, "al-2": 0} {
		page, err := s.ListCases(ctx, CaseFilter{AlertID: alert, Limit: 10})
		if err != nil || len(page.Cases) != want {
			t.Errorf("cases of %s: %+v %v, want %d", alert, page.Cases, err, want)
		}
	}
	cs, err := s.CasesForAlerts(ctx, []string{"al-4", "al-3"}, 10)
	if err != nil || len(cs) != 1 || cs[0].CaseID != c.CaseID {
		t.Fatalf("cases for alerts: %+v %v", cs, err)
	}

	// A stale writer sees the change it missed.
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: 2, Assignee: ptr("po-carla")}, other)
	ce := wantCaseConflict(t, err)
	if ce.Current != 3 || len(ce.Changes) != 1 || ce.Changes[0].Action != CaseAlertRemoved || ce.Changes[0].ChangedBy != "po-bob" ||
		!slices.Equal(ce.Changes[0].Removed, []string{"al-4"}) {
		t.Fatalf("conflict: %+v", ce)
	}
	if !strings.Contains(ce.Error(), "alert_removed by po-bob") {
		t.Fatalf("conflict text: %s", ce)
	}

	// Lifecycle.
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: 3, Status: ptr(CaseClosed)}, po)
	wantValidation(t, err, "outcome")
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: 3, Outcome: ptr(OutcomeSanctioned)}, po)
	wantValidation(t, err, "outcome")
	c, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Status: ptr(CaseInvestigating), Assignee: ptr("po-carla")}, po)
	if err != nil || c.Status != CaseInvestigating || c.Assignee != "po-carla" {
		t.Fatalf("investigate: %+v %v", c, err)
	}
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Status: ptr(CaseOpen)}, po)
	wantValidation(t, err, "status")
	c, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Status: ptr(CaseClosed),
		Outcome: ptr(OutcomeUserEducated), Note: ptr("note-secret-8841: retrained")}, po)
	if err != nil || c.Status != CaseClosed || c.Outcome != OutcomeUserEducated {
		t.Fatalf("close: %+v %v", c, err)
	}
	_, err = s.AddAlerts(ctx, c.CaseID, []string{"al-2"}, c.Version, "", po)
	wantValidation(t, err, "status")
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Assignee: ptr("x")}, po)
	wantValidation(t, err, "assignee")
	_, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Status: ptr(CaseInvestigating)}, other)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("reopen without the right: %v", err)
	}
	c, err = s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: c.Version, Status: ptr(CaseInvestigating), Note: ptr("new evidence")}, po)
	if err != nil || c.Status != CaseInvestigating || c.Outcome != "" {
		t.Fatalf("reopen: %+v %v", c, err)
	}

	// History: one row per change, in order.
	hist, err := s.CaseHistory(ctx, c.CaseID)
	if err != nil {
		t.Fatal(err)
	}
	var actions []string
	for i, h := range hist {
		if h.Version != uint64(i+1) {
			t.Errorf("history row %d has version %d", i, h.Version)
		}
		actions = append(actions, string(h.Action)+"/"+string(h.Status))
	}
	want := []string{"created/open", "alerts_added/open", "alert_removed/open"}
	if !slices.Equal(actions[:3], want) || hist[len(hist)-1].Note != "new evidence" || hist[len(hist)-1].Version != c.Version {
		t.Fatalf("history: %v (last %+v)", actions, hist[len(hist)-1])
	}

	// Unknown case.
	if _, err := s.UpdateCase(ctx, "case-nope", CaseUpdate{Note: ptr("x")}, po); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown case: %v", err)
	}
	page, err := s.ListCases(ctx, CaseFilter{Status: CaseInvestigating, Limit: 10})
	if err != nil || len(page.Cases) != 1 {
		t.Fatalf("list: %+v %v", page, err)
	}
	alerts, err := s.AlertsByID(ctx, c.AlertIDs)
	if err != nil || len(alerts) != 2 {
		t.Fatalf("alerts of the case: %+v %v", alerts, err)
	}
}

// TestCaseConcurrentWriters: of many writers that all saw one version,
// exactly one wins, across stores (processes).
func TestCaseConcurrentWriters(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	c, err := NewStore(conn, Options{}).CreateCase(ctx, "race", []string{"al-1"}, Actor{Name: "po"})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range 6 {
		s := NewStore(conn, Options{})
		for j := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.UpdateCase(ctx, c.CaseID, CaseUpdate{ExpectedVersion: 1, Assignee: ptr(string(rune('a'+i)) + string(rune('0'+j)))}, Actor{Name: "w"})
				mu.Lock()
				defer mu.Unlock()
				var ce *CaseConflictError
				switch {
				case err == nil:
					wins++
				case errors.As(err, &ce):
					conflicts++
				default:
					t.Errorf("writer: %v", err)
				}
			}()
		}
	}
	wg.Wait()
	if wins != 1 || conflicts != 17 {
		t.Fatalf("wins=%d conflicts=%d, want 1 and 17", wins, conflicts)
	}
	s := NewStore(conn, Options{})
	hist, err := s.CaseHistory(ctx, c.CaseID)
	if err != nil || len(hist) != 2 {
		t.Fatalf("history after race: %+v %v", hist, err)
	}
	cur, err := s.Case(ctx, c.CaseID)
	if err != nil || cur.Version != 2 || cur.Assignee != hist[1].Assignee {
		t.Fatalf("state %+v disagrees with history %+v (%v)", cur, hist[1], err)
	}
}
