package memstore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
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

// The in-memory store serves the investigation pages and the case and
// allowlist endpoints too.
var (
	_ console.InvestigationStore = (*memstore.Store)(nil)
	_ api.CaseStore              = (*memstore.Store)(nil)
)

// TestInvestigationsSameAsClickHouse makes the same case and allowlist
// changes (the refused ones too) on the real ClickHouse store and on the
// in-memory store, and asks both the same questions (cases, histories,
// lists with filters and pages, the allowlist and its history, reference
// counts, reports, heat maps): every answer must be equal, field for
// field, once each store's random case and entry ids are replaced by
// their creation order.
func TestInvestigationsSameAsClickHouse(t *testing.T) {
	f := tt.NewFixture()
	conn := tt.NewDB(t, f)
	// A clock the test moves, an hour behind the real one: ClickHouse
	// orders expired allowlist entries by its own now64().
	clock := time.Now().UTC().Add(-time.Hour).Truncate(time.Second)
	nyc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	opts := triage.Options{Now: func() time.Time { return clock }, Detectors: []string{"volume", "break_glass", "no_care_relationship"},
		Location: func(fac string) *time.Location {
			if fac == "fac-nyc" {
				return nyc
			}
			return nil
		}}
	var ch, mem console.InvestigationStore = triage.NewStore(conn, opts), memstore.New(memstore.Data{Users: f.Users, Patients: f.Patients,
		Encounters: f.Encounters, Events: f.Events, Findings: f.Findings, Alerts: fixtureAlerts()}, opts)
	ids := map[console.InvestigationStore]*[]string{ch: {}, mem: {}}
	id := func(s console.InvestigationStore, n int) string {
		if l := *ids[s]; n < len(l) {
			return l[n]
		}
		return "case-nope"
	}
	canon := func(s console.InvestigationStore, b []byte) string {
		out := string(b)
		for i, v := range *ids[s] {
			out = strings.ReplaceAll(out, v, fmt.Sprintf("id#%d", i))
		}
		return out
	}
	ctx := context.Background()
	same := func(what string, call func(s console.InvestigationStore) (any, error)) {
		t.Helper()
		clock = clock.Add(time.Minute)
		want, werr := call(ch)
		got, gerr := call(mem)
		msg := func(err error) string {
			if err == nil {
				return ""
			}
			return fmt.Sprintf("%T %v", err, err)
		}
		if canon(ch, []byte(msg(werr))) != canon(mem, []byte(msg(gerr))) ||
			errors.Is(werr, triage.ErrForbidden) != errors.Is(gerr, triage.ErrForbidden) ||
			errors.Is(werr, triage.ErrNotFound) != errors.Is(gerr, triage.ErrNotFound) {
			t.Errorf("%s: errors differ: clickhouse %s, memory %s", what, msg(werr), msg(gerr))
			return
		}
		wj, _ := json.Marshal(want)
		gj, _ := json.Marshal(got)
		if canon(ch, wj) != canon(mem, gj) {
			t.Errorf("%s differs:\nclickhouse %s\nmemory     %s", what, wj, gj)
		}
	}
	created := func(s console.InvestigationStore, id string, err error) {
		if err == nil {
			*ids[s] = append(*ids[s], id)
		}
	}
	newCase := func(title string, alerts ...string) func(s console.InvestigationStore) (any, error) {
		return func(s console.InvestigationStore) (any, error) {
			c, err := s.CreateCase(ctx, title, alerts, triage.Actor{Name: "po"})
			created(s, c.CaseID, err)
			return c, err
		}
	}
	str := func(s string) *string { return &s }
	cst := func(s triage.CaseStatus) *triage.CaseStatus { return &s }
	out := func(o triage.CaseOutcome) *triage.CaseOutcome { return &o }
	po, ana := triage.Actor{Name: "po", MayReopen: true}, triage.Actor{Name: "ana"}
	update := func(n int, u triage.CaseUpdate, a triage.Actor) func(s console.InvestigationStore) (any, error) {
		return func(s console.InvestigationStore) (any, error) { return s.UpdateCase(ctx, id(s, n), u, a) }
	}

	// Cases: creation, membership, lifecycle, conflicts, refusals.
	same("create untitled", newCase(" ", "al-1"))
	same("create missing alert", newCase("x", "al-1", "al-nope"))
	same("create no alerts", newCase("x"))
	same("create 0", newCase("  Bob and the oncology charts ", "al-3", "al-1", "al-1"))
	same("create 1", newCase("Alice's volume", "al-2"))
	same("add", func(s console.InvestigationStore) (any, error) {
		return s.AddAlerts(ctx, id(s, 0), []string{"al-4", "al-1"}, 1, "same user, same week", po)
	})
	same("add again", func(s console.InvestigationStore) (any, error) {
		return s.AddAlerts(ctx, id(s, 0), []string{"al-4"}, 2, "", po)
	})
	same("add unknown", func(s console.InvestigationStore) (any, error) {
		return s.AddAlerts(ctx, id(s, 0), []string{"al-nope"}, 2, "", po)
	})
	same("remove", func(s console.InvestigationStore) (any, error) {
		return s.RemoveAlert(ctx, id(s, 0), "al-4", 2, "", po)
	})
	same("remove stale", func(s console.InvestigationStore) (any, error) {
		return s.RemoveAlert(ctx, id(s, 0), "al-1", 2, "", po)
	})
	same("remove last", func(s console.InvestigationStore) (any, error) {
		return s.RemoveAlert(ctx, id(s, 1), "al-2", 1, "", po)
	})
	same("close without outcome", update(0, triage.CaseUpdate{ExpectedVersion: 3, Status: cst(triage.CaseClosed)}, po))
	same("investigate", update(0, triage.CaseUpdate{ExpectedVersion: 3, Status: cst(triage.CaseInvestigating), Assignee: str("ana")}, po))
	same("nothing", update(0, triage.CaseUpdate{ExpectedVersion: 4}, po))
	same("close", update(0, triage.CaseUpdate{ExpectedVersion: 4, Status: cst(triage.CaseClosed), Outcome: out(triage.OutcomeUserEducated),
		Note: str("talked to\nBob")}, ana))
	same("add to closed", func(s console.InvestigationStore) (any, error) {
		return s.AddAlerts(ctx, id(s, 0), []string{"al-4"}, 5, "", po)
	})
	same("reopen forbidden", update(0, triage.CaseUpdate{ExpectedVersion: 5, Status: cst(triage.CaseInvestigating)}, ana))
	same("stale update", update(0, triage.CaseUpdate{ExpectedVersion: 1, Note: str("late")}, ana))
	same("unknown case", update(7, triage.CaseUpdate{ExpectedVersion: 1, Note: str("x")}, ana))
	same("assign 1", update(1, triage.CaseUpdate{ExpectedVersion: 1, Assignee: str("ana"), Title: str("Alice, volume")}, po))
	for n := range 3 {
		same(fmt.Sprintf("case %d", n), func(s console.InvestigationStore) (any, error) { return s.Case(ctx, id(s, n)) })
		same(fmt.Sprintf("history %d", n), func(s console.InvestigationStore) (any, error) { return s.CaseHistory(ctx, id(s, n)) })
	}
	for name, cf := range map[string]triage.CaseFilter{
		"all": {Limit: 10}, "pages of 1": {Limit: 1}, "closed": {Status: triage.CaseClosed, Limit: 10},
		"assignee": {Assignee: "ana", Limit: 10}, "alert": {AlertID: "al-2", Limit: 10}, "no alert": {AlertID: "al-4", Limit: 10},
		"bad status": {Status: "done", Limit: 1}, "bad limit": {}, "bad cursor": {Limit: 1, Cursor: "nope"},
	} {
		same("cases "+name, func(s console.InvestigationStore) (any, error) {
			var pages []triage.CasePage
			for f := cf; len(pages) < 5; { // each store pages from the start
				p, err := s.ListCases(ctx, f)
				if err != nil {
					return nil, err
				}
				f.Cursor = p.NextCursor
				if p.NextCursor != "" {
					p.NextCursor = "more" // it holds a random case id
				}
				if pages = append(pages, p); f.Cursor == "" {
					break
				}
			}
			return pages, nil
		})
	}
	for name, q := range map[string][]string{"both": {"al-2", "al-1"}, "none": {"al-4"}, "empty": nil} {
		same("cases for "+name, func(s console.InvestigationStore) (any, error) { return s.CasesForAlerts(ctx, q, 10) })
	}
	same("cases for, limit 1", func(s console.InvestigationStore) (any, error) {
		return s.CasesForAlerts(ctx, []string{"al-1", "al-2"}, 1)
	})
	same("alerts by id", func(s console.InvestigationStore) (any, error) {
		return s.AlertsByID(ctx, []string{"al-2", "al-nope", "al-1"})
	})

	// Allowlist: adding (and refusing), expiring, removing, conflicts.
	entry := func(user, dept, det string, days int) schemas.AllowlistEntry {
		return schemas.AllowlistEntry{UserID: user, Department: dept, Detector: det, Reason: "covers the ward", Owner: "po",
			ExpiresAt: clock.Add(time.Duration(days) * 24 * time.Hour)}
	}
	add := func(e schemas.AllowlistEntry, note string) func(s console.InvestigationStore) (any, error) {
		return func(s console.InvestigationStore) (any, error) {
			it, err := s.AddAllowlistEntry(ctx, e, note, po)
			created(s, it.EntryID, err)
			return it, err
		}
	}
	entryAt := func(s console.InvestigationStore, n int) (string, time.Time) {
		items, _ := s.ListAllowlist(ctx, true, 100)
		for _, it := range items {
			if it.EntryID == id(s, n) {
				return it.EntryID, it.UpdatedAt
			}
		}
		return "allow-nope", time.Time{}
	}
	change := func(n int, remove bool, stale bool) func(s console.InvestigationStore) (any, error) {
		return func(s console.InvestigationStore) (any, error) {
			eid, at := entryAt(s, n)
			if stale {
				at = at.Add(-time.Second)
			}
			if remove {
				return s.RemoveAllowlistEntry(ctx, eid, at, "", po)
			}
			return s.ExpireAllowlistEntry(ctx, eid, at, "covered elsewhere", po)
		}
	}
	same("allow past", add(entry("u-bob", "", "volume", -1), ""))
	same("allow no one", add(entry("", "", "volume", 30), ""))
	same("allow unknown detector", add(entry("u-bob", "", "nope", 30), ""))
	same("allow blank note", add(entry("u-bob", "", "volume", 30), " "))
	same("allow 3", add(entry(" u-bob ", "", "volume", 30), "float nurse"))
	same("allow 4", add(entry("", "Cardiology", "*", 60), ""))
	same("allow 5", add(entry("u-alice", "", "break_glass", 10), ""))
	same("expire 3", change(3, false, false))
	same("expire 3 again", change(3, false, false))
	same("expire 4 stale", change(4, false, true))
	same("remove 4", change(4, true, false))
	same("remove 4 again", change(4, true, false))
	same("remove unknown", change(9, true, false))
	for _, lim := range []int{100, 1, 0} {
		same(fmt.Sprintf("allowlist %d", lim), func(s console.InvestigationStore) (any, error) { return s.ListAllowlist(ctx, false, lim) })
		same(fmt.Sprintf("allowlist with removed %d", lim), func(s console.InvestigationStore) (any, error) { return s.ListAllowlist(ctx, true, lim) })
	}
	same("allowlist history", func(s console.InvestigationStore) (any, error) { return s.AllowlistHistory(ctx, "", 100) })
	same("allowlist history 2", func(s console.InvestigationStore) (any, error) { return s.AllowlistHistory(ctx, "", 2) })
	same("entry history", func(s console.InvestigationStore) (any, error) { return s.AllowlistHistory(ctx, id(s, 3), 100) })

	// Reference counts, whole reports, heat maps.
	same("reference counts", func(s console.InvestigationStore) (any, error) { return s.ReferenceCounts(ctx) })
	from, to := tt.TS("2026-03-08T00:00:00Z"), tt.TS("2026-03-11T00:00:00Z")
	for _, q := range []triage.ReportQuery{
		{Kind: triage.PatientAccess, SubjectID: tt.PatientMain, From: from, To: to, Limit: 2},
		{Kind: triage.UserActivity, SubjectID: "u-bob", From: from, To: to, Limit: 100},
	} {
		same("report all "+q.SubjectID, func(s console.InvestigationStore) (any, error) {
			r, err := s.ReportAll(ctx, q)
			r.GeneratedAt = time.Time{}
			return r, err
		})
	}
	for name, h := range map[string]struct {
		user     string
		from, to time.Time
		days     int
	}{
		"bob": {"u-bob", from, to, 0}, "alice 7": {"u-alice", tt.TS("2026-03-09T06:00:00Z"), to, 7},
		"bob baseline": {"u-bob", tt.TS("2026-03-09T00:00:00Z"), to, 3}, "nobody": {"u-nope", from, to, 0},
		"no user": {"", from, to, 0}, "backwards": {"u-bob", to, from, 0},
	} {
		same("heatmap "+name, func(s console.InvestigationStore) (any, error) {
			return s.UserHeatmap(ctx, h.user, h.from, h.to, h.days)
		})
	}
}
