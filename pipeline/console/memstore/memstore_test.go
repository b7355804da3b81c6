package memstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/console/memstore"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// store is the method set both stores share (api.Store's, plus State and
// Report).
type store interface {
	ListAlerts(ctx context.Context, f triage.AlertFilter) (triage.AlertPage, error)
	AlertDetail(ctx context.Context, alertID string) (triage.AlertDetail, error)
	AlertExists(ctx context.Context, alertID string) (bool, error)
	State(ctx context.Context, alertID string) (triage.State, error)
	History(ctx context.Context, alertID string) ([]triage.State, error)
	Update(ctx context.Context, alertID string, ch triage.Change, actor triage.Actor) (triage.State, error)
	Report(ctx context.Context, q triage.ReportQuery) (triage.Report, error)
	ReportAll(ctx context.Context, q triage.ReportQuery) (triage.Report, error)
	CountAlerts(ctx context.Context, f triage.AlertFilter) (triage.AlertCounts, error)
	Location(facilityID string) *time.Location
}

// The in-memory store serves the API and the console.
var (
	_ api.Store     = (*memstore.Store)(nil)
	_ console.Store = (*memstore.Store)(nil)
)

func fixtureAlerts() []triage.Alert {
	var out []triage.Alert
	for _, a := range tt.Alerts() {
		out = append(out, triage.Alert{AlertID: a.ID, Rule: "default", Detector: a.Detector, Severity: a.Severity, Score: 50,
			FacilityID: "fac-nyc", UserID: a.User, PatientID: a.Patient, FirstSeen: a.First, LastSeen: a.Last,
			FindingCount: uint32(len(a.FindingIDs)), FindingIDs: a.FindingIDs, Explanation: "alert " + a.ID, Revision: a.Version})
	}
	return out
}

// TestSameAnswersAsClickHouse loads the triage fixture into the real
// ClickHouse store and into the in-memory store, asks both the same
// questions (alert lists with every filter and paging, alert details,
// patient and user reports, page by page) and makes the same triage
// changes (conflicts, lifecycle errors, history) on both: every answer
// must be equal, field for field.
func TestSameAnswersAsClickHouse(t *testing.T) {
	f := tt.NewFixture()
	conn := tt.NewDB(t, f)
	now := tt.TS("2026-03-20T12:00:00Z")
	nyc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	opts := triage.Options{Now: func() time.Time { return now },
		Location: func(fac string) *time.Location {
			if fac == "fac-nyc" {
				return nyc
			}
			return nil
		}}
	ch := triage.NewStore(conn, opts)
	// The fixture's duplicate of ev-1 (FINAL collapses it) is given twice
	// here too.
	events := append(append([]schemas.AccessEvent(nil), f.Events...), f.Events[0])
	mem := memstore.New(memstore.Data{Users: f.Users, Patients: f.Patients, Encounters: f.Encounters,
		Events: events, Findings: f.Findings, Alerts: fixtureAlerts()}, opts)
	ctx := context.Background()

	same := func(what string, call func(s store) (any, error)) {
		t.Helper()
		want, werr := call(ch)
		got, gerr := call(mem)
		if (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() {
			t.Errorf("%s: errors differ: clickhouse %v, memory %v", what, werr, gerr)
			return
		}
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if string(wj) != string(gj) {
			t.Errorf("%s differs:\nclickhouse %s\nmemory     %s", what, wj, gj)
		}
	}
	list := func(f0 triage.AlertFilter) func(s store) (any, error) {
		return func(s store) (any, error) {
			f := f0 // each store pages from the start
			var all []triage.AlertPage
			for range 10 {
				p, err := s.ListAlerts(ctx, f)
				if err != nil {
					return nil, err
				}
				all = append(all, p)
				if p.NextCursor == "" {
					break
				}
				f.Cursor = p.NextCursor
			}
			return all, nil
		}
	}
	filters := map[string]triage.AlertFilter{
		"all":          {Limit: 100},
		"pages of 1":   {Limit: 1},
		"detector":     {Limit: 100, Detector: "volume"},
		"user":         {Limit: 100, UserID: "u-bob"},
		"patient":      {Limit: 100, PatientID: tt.PatientMain},
		"severity":     {Limit: 100, MinSeverity: schemas.SeverityHigh},
		"range":        {Limit: 100, From: tt.TS("2026-03-08T09:00:00Z"), To: tt.TS("2026-03-09T06:00:00Z")},
		"status new":   {Limit: 100, Status: triage.StatusNew},
		"bad limit":    {Limit: 0},
		"bad cursor":   {Limit: 1, Cursor: "nope"},
		"bad status":   {Limit: 1, Status: "open"},
		"bad sev":      {Limit: 1, MinSeverity: "urgent"},
		"assignee":     {Limit: 100, Assignee: "ana"},
		"closed":       {Limit: 100, Status: triage.StatusClosed},
		"triaged 1":    {Limit: 1, Status: triage.StatusTriaged},
		"assignee pg":  {Limit: 1, Assignee: "ana"},
		"statuses":     {Limit: 100, Statuses: []triage.Status{triage.StatusNew, triage.StatusClosed}},
		"facility":     {Limit: 100, FacilityID: "fac-nyc"},
		"no facility":  {Limit: 100, FacilityID: "fac-chi"},
		"department":   {Limit: 100, Department: " CARDIOLOGY"},
		"unassigned":   {Limit: 100, Unassigned: true},
		"seen before":  {Limit: 100, SeenBefore: tt.TS("2026-03-08T09:30:00Z")},
		"changed old":  {Limit: 100, ChangedSince: tt.TS("2000-01-01T00:00:00Z")},
		"changed new":  {Limit: 100, ChangedSince: tt.TS("2100-01-01T00:00:00Z")},
		"risk":         {Limit: 100, Order: triage.OrderRisk},
		"risk top 2":   {Limit: 2, Order: triage.OrderRisk, Statuses: []triage.Status{triage.StatusNew, triage.StatusTriaged}},
		"risk cursor":  {Limit: 2, Order: triage.OrderRisk, Cursor: triage.EncodeCursor(tt.TS("2026-03-09T05:00:00Z"), "al-2")},
		"bad order":    {Limit: 2, Order: "oldest"},
		"both assign":  {Limit: 2, Assignee: "ana", Unassigned: true},
		"bad statuses": {Limit: 2, Statuses: []triage.Status{"open"}},
	}
	checkLists := func(stage string) {
		t.Helper()
		for name, fl := range filters {
			same(stage+": list "+name, list(fl))
			same(stage+": count "+name, func(s store) (any, error) { return s.CountAlerts(ctx, fl) })
		}
		for _, a := range tt.Alerts() {
			same(stage+": detail "+a.ID, func(s store) (any, error) { return s.AlertDetail(ctx, a.ID) })
			same(stage+": history "+a.ID, func(s store) (any, error) { return s.History(ctx, a.ID) })
			same(stage+": state "+a.ID, func(s store) (any, error) { return s.State(ctx, a.ID) })
		}
		same(stage+": detail unknown", func(s store) (any, error) { return s.AlertDetail(ctx, "al-nope") })
	}
	checkLists("untouched")

	// Reports: whole, page by page, and their errors.
	from, to := tt.TS("2026-03-01T00:00:00Z"), tt.TS("2026-04-01T00:00:00Z")
	for _, q := range []triage.ReportQuery{
		{Kind: triage.PatientAccess, SubjectID: tt.PatientMain, From: from, To: to, Limit: 100},
		{Kind: triage.PatientAccess, SubjectID: tt.PatientOther, From: from, To: to, Limit: 100},
		{Kind: triage.PatientAccess, SubjectID: tt.PatientMain, From: tt.TS("2026-03-08T07:00:00Z"), To: tt.TS("2026-03-08T08:00:00Z"), Limit: 100},
		{Kind: triage.UserActivity, SubjectID: "u-bob", From: from, To: to, Limit: 100},
		{Kind: triage.UserActivity, SubjectID: "u-alice", From: from, To: to, Limit: 100},
		{Kind: triage.PatientAccess, SubjectID: "", From: from, To: to, Limit: 1},
		{Kind: triage.PatientAccess, SubjectID: tt.PatientMain, From: to, To: from, Limit: 1},
	} {
		same("report "+string(q.Kind)+" "+q.SubjectID, func(s store) (any, error) { return s.ReportAll(ctx, q) })
		same("paged report "+string(q.Kind)+" "+q.SubjectID, func(s store) (any, error) {
			pq := q // each store pages from the start
			pq.Limit = 2
			var pages []triage.Report
			for range 10 {
				r, err := s.Report(ctx, pq)
				if err != nil {
					return nil, err
				}
				pages = append(pages, r)
				if r.NextCursor == "" {
					break
				}
				pq.Cursor = r.NextCursor
			}
			return pages, nil
		})
	}

	// Triage changes, the same on both, including the refused ones.
	str := func(s string) *string { return &s }
	st := func(s triage.Status) *triage.Status { return &s }
	disp := func(d triage.Disposition) *triage.Disposition { return &d }
	ana, po := triage.Actor{Name: "ana"}, triage.Actor{Name: "po", MayReopen: true}
	for i, c := range []struct {
		alert string
		ch    triage.Change
		actor triage.Actor
	}{
		{"al-1", triage.Change{ExpectedVersion: 0, Assignee: str("ana"), Status: st(triage.StatusTriaged)}, ana},
		{"al-1", triage.Change{ExpectedVersion: 0, Note: str("stale")}, ana},                // conflict
		{"al-1", triage.Change{ExpectedVersion: 1, Status: st(triage.StatusClosed)}, ana},   // no disposition
		{"al-1", triage.Change{ExpectedVersion: 1, Status: st(triage.StatusNew)}, ana},      // bad transition
		{"al-1", triage.Change{ExpectedVersion: 1, Note: str("looked at the\nchart")}, ana}, // note
		{"al-1", triage.Change{ExpectedVersion: 2, Status: st(triage.StatusClosed), Disposition: disp(triage.Dispositions[0])}, ana},
		{"al-1", triage.Change{ExpectedVersion: 3, Status: st(triage.StatusTriaged)}, ana}, // reopen: forbidden
		{"al-1", triage.Change{ExpectedVersion: 3, Status: st(triage.StatusTriaged)}, po},  // reopen
		{"al-2", triage.Change{ExpectedVersion: 0, Assignee: str("ana")}, ana},
		{"al-3", triage.Change{ExpectedVersion: 0, Status: st(triage.StatusClosed), Disposition: disp(triage.Dispositions[1])}, po},
		{"al-nope", triage.Change{ExpectedVersion: 0, Note: str("x")}, ana},
	} {
		var werr, gerr error
		var want, got triage.State
		want, werr = ch.Update(ctx, c.alert, c.ch, c.actor)
		got, gerr = mem.Update(ctx, c.alert, c.ch, c.actor)
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if string(wj) != string(gj) || (werr == nil) != (gerr == nil) || werr != nil && werr.Error() != gerr.Error() ||
			errors.Is(werr, triage.ErrForbidden) != errors.Is(gerr, triage.ErrForbidden) ||
			errors.Is(werr, triage.ErrNotFound) != errors.Is(gerr, triage.ErrNotFound) {
			t.Errorf("change %d on %s: clickhouse %s %v, memory %s %v", i, c.alert, wj, werr, gj, gerr)
		}
	}
	var ce *triage.ConflictError
	if _, err := mem.Update(ctx, "al-1", triage.Change{ExpectedVersion: 1, Note: str("late")}, ana); !errors.As(err, &ce) || ce.Current != 4 {
		t.Errorf("stale version: %v, want a *triage.ConflictError at version 4", err)
	}
	checkLists("after triage")

	for _, fac := range []string{"fac-nyc", "fac-chi"} {
		if got, want := mem.Location(fac).String(), ch.Location(fac).String(); got != want {
			t.Errorf("Location(%s) = %s, ClickHouse store says %s", fac, got, want)
		}
	}
	if mem.Label() != "demo store (in memory)" {
		t.Errorf("label %q", mem.Label())
	}
}
