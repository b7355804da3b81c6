package triage

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

func ptr[T any](v T) *T { return &v }

func wantValidation(t *testing.T, err error, field string) {
	t.Helper()
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("want a validation error on %q, got %v", field, err)
	}
	if ve.Field != field {
		t.Fatalf("validation error names %q, want %q (%v)", ve.Field, field, err)
	}
}

func wantConflict(t *testing.T, err error) *ConflictError {
	t.Helper()
	var ce *ConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("want a conflict, got %v", err)
	}
	return ce
}

func TestTriageLifecycle(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	clock := tt.TS("2026-03-10T12:00:00Z")
	s := NewStore(conn, Options{Now: func() time.Time { clock = clock.Add(time.Second); return clock }})
	analyst := Actor{Name: "soc-alice"}
	officer := Actor{Name: "po-bob", MayReopen: true}

	st, err := s.State(ctx, "al-1")
	if err != nil || st.Status != StatusNew || st.Version != 0 {
		t.Fatalf("untouched alert: %+v, %v", st, err)
	}

	// new → triaged with an assignee.
	st, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 0, Status: ptr(StatusTriaged), Assignee: ptr("soc-alice")}, analyst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 1 || st.Status != StatusTriaged || st.Assignee != "soc-alice" {
		t.Fatalf("after triage: %+v", st)
	}
	// A second writer that still saw version 0 loses.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 0, Note: ptr("late")}, analyst)
	if ce := wantConflict(t, err); ce.Current != 1 {
		t.Fatalf("conflict reports current %d", ce.Current)
	}
	// Closing needs a disposition.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Status: ptr(StatusClosed)}, analyst)
	wantValidation(t, err, "disposition")
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Status: ptr(StatusClosed), Disposition: ptr(Disposition("meh"))}, analyst)
	wantValidation(t, err, "disposition")
	// A disposition without closing is refused.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Disposition: ptr(DispositionDuplicate)}, analyst)
	wantValidation(t, err, "disposition")
	// triaged → new is not a transition.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Status: ptr(StatusNew)}, analyst)
	wantValidation(t, err, "status")
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Status: ptr(Status("done"))}, analyst)
	wantValidation(t, err, "status")
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1}, analyst)
	wantValidation(t, err, "")
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Note: ptr(strings.Repeat("x", MaxNoteBytes+1))}, analyst)
	wantValidation(t, err, "note")
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Note: ptr("bell\x07")}, analyst)
	wantValidation(t, err, "note")

	note := "Spoke to the user's manager.\nPhysician covering the ward."
	st, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 1, Status: ptr(StatusClosed),
		Disposition: ptr(DispositionFalsePositive), Note: &note}, analyst)
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != 2 || st.Status != StatusClosed || st.Disposition != DispositionFalsePositive || st.Assignee != "soc-alice" {
		t.Fatalf("after close: %+v", st)
	}
	// Closed alerts take notes, but not other changes.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 2, Assignee: ptr("x")}, analyst)
	wantValidation(t, err, "assignee")
	st, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 2, Note: ptr("user retrained")}, analyst)
	if err != nil || st.Version != 3 || st.Status != StatusClosed || st.Disposition != DispositionFalsePositive {
		t.Fatalf("note on closed: %+v %v", st, err)
	}
	// Analysts cannot reopen; privacy officers can.
	_, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 3, Status: ptr(StatusTriaged)}, analyst)
	if !errors.Is(err, ErrForbidden) {
		t.Fatalf("analyst reopen: %v", err)
	}
	st, err = s.Update(ctx, "al-1", Change{ExpectedVersion: 3, Status: ptr(StatusTriaged), Note: ptr("reopened: new evidence")}, officer)
	if err != nil || st.Version != 4 || st.Status != StatusTriaged || st.Disposition != "" {
		t.Fatalf("reopen: %+v %v", st, err)
	}

	// Unknown alert.
	if _, err := s.Update(ctx, "al-nope", Change{Status: ptr(StatusTriaged)}, analyst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown alert: %v", err)
	}

	// History: one row per change, in order, with who and when.
	hist, err := s.History(ctx, "al-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 4 {
		t.Fatalf("history has %d rows: %+v", len(hist), hist)
	}
	wantStatus := []Status{StatusTriaged, StatusClosed, StatusClosed, StatusTriaged}
	wantBy := []string{"soc-alice", "soc-alice", "soc-alice", "po-bob"}
	for i, h := range hist {
		if h.Version != uint64(i+1) || h.Status != wantStatus[i] || h.ChangedBy != wantBy[i] || h.ChangedAt == nil {
			t.Errorf("history[%d] = %+v", i, h)
		}
	}
	if hist[1].Note != note || hist[2].Note != "user retrained" {
		t.Errorf("notes not kept: %q %q", hist[1].Note, hist[2].Note)
	}
	// Current state is alert_state FINAL, fed by the view.
	st, err = s.State(ctx, "al-1")
	if err != nil || st.Version != 4 || st.Status != StatusTriaged || st.ChangedBy != "po-bob" {
		t.Fatalf("current state: %+v %v", st, err)
	}
}

// TestConcurrentWritersOneWins races writers in separate Stores (no shared
// in-process lock, like separate API replicas) for the same version.
func TestConcurrentWritersOneWins(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()

	// Deterministic: another process writes version 1 between our read and
	// our insert; our insert is deduplicated away and we must see a conflict.
	a := NewStore(conn, Options{})
	b := NewStore(conn, Options{})
	var otherErr error
	a.beforeInsert = func() {
		_, otherErr = b.Update(ctx, "al-2", Change{ExpectedVersion: 0, Status: ptr(StatusTriaged), Assignee: ptr("winner")}, Actor{Name: "b"})
	}
	_, err := a.Update(ctx, "al-2", Change{ExpectedVersion: 0, Status: ptr(StatusTriaged), Assignee: ptr("loser")}, Actor{Name: "a"})
	if otherErr != nil {
		t.Fatalf("interleaved writer: %v", otherErr)
	}
	wantConflict(t, err)
	a.beforeInsert = nil
	hist, err := a.History(ctx, "al-2")
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 1 || hist[0].Assignee != "winner" {
		t.Fatalf("history after lost race: %+v", hist)
	}
	st, err := a.State(ctx, "al-2")
	if err != nil || st.Assignee != "winner" || st.Version != 1 {
		t.Fatalf("state after lost race: %+v %v", st, err)
	}

	// Free-for-all: 8 stores × 3 writers all expecting version 0 on al-4.
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins, conflicts := 0, 0
	for i := range 8 {
		s := NewStore(conn, Options{})
		for j := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Update(ctx, "al-4", Change{ExpectedVersion: 0, Status: ptr(StatusTriaged),
					Assignee: ptr(string(rune('a'+i)) + string(rune('0'+j)))}, Actor{Name: "w"})
				mu.Lock()
				defer mu.Unlock()
				var ce *ConflictError
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
	if wins != 1 || conflicts != 23 {
		t.Fatalf("wins=%d conflicts=%d, want 1 and 23", wins, conflicts)
	}
	hist, err = a.History(ctx, "al-4")
	if err != nil || len(hist) != 1 {
		t.Fatalf("history after race: %+v %v", hist, err)
	}
	st, err = a.State(ctx, "al-4")
	if err != nil || st.Assignee != hist[0].Assignee {
		t.Fatalf("state %+v disagrees with history %+v (%v)", st, hist[0], err)
	}
}

func TestParamsRoundTripAwkwardIDs(t *testing.T) {
	conn := tt.NewDB(t, tt.Fixture{})
	ctx := context.Background()
	ids := []string{"tab\there", "new\nline\r", `O'Brien`, `back\slash`, `x\tnot-a-tab`, `[a,b]`, `{p:String}`, "ünï", `'); DROP TABLE alerts; --`}
	for _, id := range ids {
		p := params{}
		p.str("one", id)
		p.strs("many", []string{"zz", id})
		var got string
		var n uint8
		if err := conn.QueryRow(p.ctx(ctx), "SELECT {one:String}, has({many:Array(String)}, {one:String})").Scan(&got, &n); err != nil {
			t.Fatalf("%q: %v", id, err)
		}
		if got != id || n != 1 {
			t.Errorf("%q came back as %q (has=%d)", id, got, n)
		}
	}
}

func TestCheckSchema(t *testing.T) {
	ctx := context.Background()
	conn := tt.NewDB(t, tt.Fixture{})
	if err := NewStore(conn, Options{}).CheckSchema(ctx); err != nil {
		t.Fatalf("migrated database: %v", err)
	}
	empty, _ := testenv.ClickHouse(t)
	err := NewStore(empty, Options{}).CheckSchema(ctx)
	if err == nil || !strings.Contains(err.Error(), "api_audit") || !strings.Contains(err.Error(), "ehrwatch migrate") {
		t.Fatalf("empty database: %v", err)
	}
}

// TestQueueFilters covers what the console's queue asks of ListAlerts and
// CountAlerts: risk order, several statuses, facility, department,
// unassigned, age, and the counts per status.
func TestQueueFilters(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	s := NewStore(conn, Options{})
	ids := func(f AlertFilter) string {
		t.Helper()
		if f.Limit == 0 {
			f.Limit = 10
		}
		page, err := s.ListAlerts(ctx, f)
		if err != nil {
			t.Fatalf("%+v: %v", f, err)
		}
		var out []string
		for _, a := range page.Alerts {
			out = append(out, a.AlertID)
		}
		return strings.Join(out, ",")
	}
	// Seeded: al-1 high u-bob, al-2 low u-alice, al-3 critical u-bob, al-4 medium u-carol.
	if got := ids(AlertFilter{Order: OrderRisk}); got != "al-3,al-1,al-4,al-2" {
		t.Errorf("risk order: %s", got)
	}
	if got := ids(AlertFilter{}); got != "al-2,al-3,al-4,al-1" {
		t.Errorf("newest first: %s", got)
	}
	if _, err := s.Update(ctx, "al-3", Change{Status: ptr(StatusClosed), Disposition: ptr(DispositionDuplicate)}, Actor{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(ctx, "al-4", Change{Assignee: ptr("dana")}, Actor{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		f    AlertFilter
		want string
	}{
		{AlertFilter{Order: OrderRisk, Statuses: []Status{StatusNew, StatusTriaged}}, "al-1,al-4,al-2"},
		{AlertFilter{Order: OrderRisk, Unassigned: true}, "al-3,al-1,al-2"},
		{AlertFilter{Order: OrderRisk, Assignee: "dana"}, "al-4"},
		{AlertFilter{Order: OrderRisk, Department: " ONCOLOGY"}, "al-3,al-1"},
		{AlertFilter{Order: OrderRisk, FacilityID: "fac-nyc", MinSeverity: "medium"}, "al-3,al-1,al-4"},
		{AlertFilter{Order: OrderRisk, FacilityID: "fac-other"}, ""},
		{AlertFilter{Order: OrderRisk, SeenBefore: tt.TS("2026-03-08T09:30:00Z")}, "al-1,al-4"},
		{AlertFilter{Order: OrderRisk, ChangedSince: time.Now().Add(time.Hour)}, ""},
		{AlertFilter{Order: OrderRisk, Limit: 2}, "al-3,al-1"},
	} {
		if got := ids(c.f); got != c.want {
			t.Errorf("%+v: %s, want %s", c.f, got, c.want)
		}
	}
	counts, err := s.CountAlerts(ctx, AlertFilter{Statuses: []Status{StatusNew}}) // status filters are ignored
	if err != nil || counts != (AlertCounts{New: 3, Closed: 1}) || counts.Open() != 3 {
		t.Errorf("counts: %+v, %v", counts, err)
	}
	counts, err = s.CountAlerts(ctx, AlertFilter{Department: "oncology"})
	if err != nil || counts != (AlertCounts{New: 1, Closed: 1}) {
		t.Errorf("counts for oncology: %+v, %v", counts, err)
	}
	_, err = s.ListAlerts(ctx, AlertFilter{Order: OrderRisk, Limit: 1, Cursor: encodeCursor(time.Now(), "x")})
	wantValidation(t, err, "cursor")
	_, err = s.ListAlerts(ctx, AlertFilter{Assignee: "dana", Unassigned: true, Limit: 1})
	wantValidation(t, err, "assignee")
}
