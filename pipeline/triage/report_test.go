package triage

import (
	"bytes"
	"context"
	"encoding/csv"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

func nyc(t *testing.T) func(string) *time.Location {
	loc, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	return func(f string) *time.Location {
		if f == "fac-nyc" {
			return loc
		}
		return nil
	}
}

type wantRow struct {
	event, local, user, name, role, dept, by, enc string
	explained                                     bool
	findings                                      string
}

func TestPatientAccessReport(t *testing.T) {
	f := tt.NewFixture()
	conn := tt.NewDB(t, f)
	s := NewStore(conn, Options{Location: nyc(t)})
	ctx := context.Background()

	rep, err := s.Report(ctx, ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	want := []wantRow{
		// Either side of the spring-forward gap: -05:00 then -04:00.
		{"ev-1", "2026-03-08T01:59:00.000-05:00", "u-alice", "Quillon Marchetti", "nurse", "Cardiology", "department", "enc-1", true, ""},
		{"ev-2", "2026-03-08T03:00:00.000-04:00", "u-alice", "Quillon Marchetti", "nurse", "Cardiology", "department", "enc-1", true, ""},
		{"ev-3", "2026-03-08T04:00:00.000-04:00", "u-bob", "Bertrand Oyelaran", "physician", "Oncology", "", "", false, "break_glass (suppressed); no_care_relationship"},
		// Role and department from the users table when the event lacks them.
		{"ev-6", "2026-03-08T05:00:00.000-04:00", "u-carol", "Carys Thistlewood", "clerk", "cardiology ", "department", "enc-1", true, ""},
		{"ev-4", "2026-03-09T07:00:00.000-04:00", "u-dave", "Dov Abernethy", "radiologist", "Radiology", "care_team", "enc-1", true, ""},
		{"ev-5", "2026-03-09T09:00:00.000-04:00", "u-alice", "Quillon Marchetti", "nurse", "Cardiology", "", "", false, "volume"},
	}
	checkRows(t, rep.Rows, want)
	if rep.NextCursor != "" {
		t.Errorf("single page has a next cursor")
	}
	if r := rep.Rows[2]; !r.BreakGlass || !strings.HasPrefix(r.BreakGlassReason, "=HYPERLINK") || r.TimeZone != "America/New_York" {
		t.Errorf("break-glass row: %+v", r)
	}

	// Paging: 2 + 2 + 2, no row lost or repeated.
	var got []AccessRow
	cur := ""
	for page := 0; ; page++ {
		rp, err := s.Report(ctx, ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
			From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 2, Cursor: cur})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, rp.Rows...)
		if rp.NextCursor == "" {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
		cur = rp.NextCursor
	}
	checkRows(t, got, want)

	// The range is [from, to): an access exactly at `to` is excluded, one
	// exactly at `from` included.
	rp, err := s.Report(ctx, ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
		From: tt.TS("2026-03-08T07:00:00Z"), To: tt.TS("2026-03-08T08:00:00Z"), Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(rp.Rows) != 1 || rp.Rows[0].EventID != "ev-2" {
		t.Errorf("boundaries: %+v", rp.Rows)
	}

	// The report agrees with the detectors' own care definition.
	idx, err := detectors.NewReferenceIndex(f.Users, f.Patients, f.Encounters,
		detectors.ReferenceOptions{CareSlackBefore: 24 * time.Hour, CareSlackAfter: 24 * time.Hour, HashKey: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]AccessRow{}
	for _, r := range rep.Rows {
		byID[r.EventID] = r
	}
	for i := range f.Events {
		ev := &f.Events[i]
		r, ok := byID[ev.EventID]
		if !ok {
			continue
		}
		c := idx.Care(ev)
		if c.Explained != r.Care.Explained || c.EncounterID != r.Care.EncounterID {
			t.Errorf("%s: report says %+v, detectors say %+v", ev.EventID, r.Care, c)
		}
	}

	// Encounters removed by a deleted row (migration 0082) explain
	// nothing, as for the detectors.
	if err := conn.Exec(ctx, `INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team, deleted)
 SELECT encounter_id, patient_id, department, start_time, end_time, care_team, true FROM encounters FINAL`); err != nil {
		t.Fatal(err)
	}
	gone, err := s.Report(ctx, ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	explained := 0
	for _, r := range rep.Rows {
		if r.Care.Explained {
			explained++
		}
	}
	for _, r := range gone.Rows {
		if r.Care.Explained {
			t.Errorf("%s: explained by %s after every encounter was deleted", r.EventID, r.Care.EncounterID)
		}
	}
	if explained == 0 || len(gone.Rows) != len(rep.Rows) {
		t.Errorf("%d explained rows before the deletion (want some), %d rows after, %d before", explained, len(gone.Rows), len(rep.Rows))
	}

	// Errors name the field, never the value.
	for _, q := range []ReportQuery{
		{Kind: PatientAccess, SubjectID: "", From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 1},
		{Kind: PatientAccess, SubjectID: tt.PatientMain, From: tt.TS("2026-04-01T00:00:00Z"), To: tt.TS("2026-03-01T00:00:00Z"), Limit: 1},
		{Kind: PatientAccess, SubjectID: tt.PatientMain, From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 1, Cursor: "c1.%%%"},
	} {
		_, err := s.Report(ctx, q)
		var ve *ValidationError
		if !asValidation(err, &ve) || strings.Contains(err.Error(), tt.PatientMain) {
			t.Errorf("bad query %+v: %v", q, err)
		}
	}
}

func asValidation(err error, ve **ValidationError) bool {
	v, ok := err.(*ValidationError)
	*ve = v
	return ok
}

func checkRows(t *testing.T, got []AccessRow, want []wantRow) {
	t.Helper()
	if len(got) != len(want) {
		ids := []string{}
		for _, r := range got {
			ids = append(ids, r.EventID)
		}
		t.Fatalf("got %d rows %v, want %d", len(got), ids, len(want))
	}
	for i, w := range want {
		r := got[i]
		if r.EventID != w.event || r.LocalTime != w.local || r.UserID != w.user || r.UserName != w.name ||
			r.UserRole != w.role || r.UserDepartment != w.dept || r.Care.Explained != w.explained ||
			r.Care.By != w.by || r.Care.EncounterID != w.enc || findingNames(r.Findings) != w.findings {
			t.Errorf("row %d:\n got %+v\nwant %+v", i, r, w)
		}
	}
}

func TestUserActivityReport(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	s := NewStore(conn, Options{})
	ctx := context.Background()
	rep, err := s.Report(ctx, ReportQuery{Kind: UserActivity, SubjectID: "u-bob",
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	checkRows(t, rep.Rows, []wantRow{
		// No facility time zone configured: UTC only.
		{"ev-3", "", "u-bob", "Bertrand Oyelaran", "physician", "Oncology", "", "", false, "break_glass (suppressed); no_care_relationship"},
		{"ev-7", "", "u-bob", "Bertrand Oyelaran", "physician", "Oncology", "department", "enc-2", true, ""},
	})
	if got := rep.Patients(); len(got) != 2 {
		t.Errorf("patients: %v", got)
	}
	if len(rep.Findings) != 2 || rep.Findings[0].FindingID > rep.Findings[1].FindingID && rep.Findings[0].WindowStart.Equal(rep.Findings[1].WindowStart) {
		t.Fatalf("findings: %+v", rep.Findings)
	}
	for _, fs := range rep.Findings {
		if fs.EventCount != 1 || fs.PatientID != tt.PatientMain {
			t.Errorf("finding summary %+v", fs)
		}
	}
}

func TestCSVAndTable(t *testing.T) {
	rows := []AccessRow{
		{EventID: "ev-1", Time: tt.TS("2026-03-08T06:59:00Z"), LocalTime: "2026-03-08T01:59:00.000-05:00", UserID: "u1",
			UserName: "Ann, \"Nan\" Lee", PatientID: "p1", Action: "view", BreakGlass: true,
			BreakGlassReason: "=HYPERLINK(\"http://x\")\nline2", Care: Care{Explained: true, By: "department", EncounterID: "e1", Department: "ICU"}},
		{EventID: "ev-2", Time: tt.TS("2026-03-08T07:00:00Z"), UserID: "+u2", UserName: "-1+1", PatientID: "@p2", Action: "view",
			BreakGlassReason: "\tcmd", Resource: "\rx"},
	}
	var buf bytes.Buffer
	if err := WriteCSV(&buf, rows); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasSuffix(out, "\r\n") || strings.Count(out, "\n") != strings.Count(out, "\r\n") {
		t.Errorf("want CRLF line ends: %q", out)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 3 || len(recs[0]) != len(CSVHeader) {
		t.Fatalf("records: %q", recs)
	}
	col := func(name string) int {
		for i, h := range CSVHeader {
			if h == name {
				return i
			}
		}
		t.Fatalf("no column %s", name)
		return -1
	}
	checks := []struct {
		row  int
		col  string
		want string
	}{
		{1, "user_name", `Ann, "Nan" Lee`},
		{1, "break_glass_reason", "'=HYPERLINK(\"http://x\")\nline2"},
		{1, "explanation", "encounter e1 in ICU"},
		{1, "explained", "true"},
		{1, "local_time", "2026-03-08T01:59:00.000-05:00"},
		{2, "user_id", "'+u2"},
		{2, "user_name", "'-1+1"},
		{2, "patient_id", "'@p2"},
		{2, "break_glass_reason", "'\tcmd"},
		{2, "resource", "'x"}, // the CRLF writer drops a lone CR
		{2, "explanation", "unexplained"},
	}
	for _, c := range checks {
		if got := recs[c.row][col(c.col)]; got != c.want {
			t.Errorf("row %d %s = %q, want %q", c.row, c.col, got, c.want)
		}
	}
	// The quoted field with the embedded quote is RFC 4180-escaped.
	if !strings.Contains(out, `"Ann, ""Nan"" Lee"`) {
		t.Errorf("quote escaping: %q", out)
	}

	buf.Reset()
	rows[0].BreakGlassReason = "\x1b]0;pwned\x07 reason"
	if err := WriteTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	tab := buf.String()
	if strings.ContainsAny(tab, "\x1b\x07\r") || !strings.Contains(tab, `\x1b]0;pwned\x07 reason`) {
		t.Errorf("terminal escapes not neutralised: %q", tab)
	}
	lines := strings.Split(strings.TrimRight(tab, "\n"), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "TIME (UTC)") {
		t.Errorf("table: %q", tab)
	}
	// Columns line up: EXPLAINED starts at the same offset in every line.
	i0 := strings.Index(lines[0], "EXPLAINED")
	if !strings.HasPrefix(lines[1][i0:], "yes") || !strings.HasPrefix(lines[2][i0:], "NO") {
		t.Errorf("misaligned table:\n%s", tab)
	}
}

func alertIDs(as []Alert) string {
	var ids []string
	for _, a := range as {
		ids = append(ids, a.AlertID)
	}
	return strings.Join(ids, ",")
}

func TestListAndDetail(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	s := NewStore(conn, Options{})
	ctx := context.Background()
	if _, err := s.Update(ctx, "al-1", Change{Status: ptr(StatusTriaged), Assignee: ptr("soc-alice")}, Actor{Name: "x"}); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		f    AlertFilter
		want string
	}{
		{AlertFilter{}, "al-2,al-3,al-4,al-1"},
		{AlertFilter{MinSeverity: "high"}, "al-3,al-1"},
		{AlertFilter{Status: StatusTriaged}, "al-1"},
		{AlertFilter{Status: StatusNew}, "al-2,al-3,al-4"},
		{AlertFilter{Assignee: "soc-alice"}, "al-1"},
		{AlertFilter{PatientID: tt.PatientMain}, "al-4,al-1"},
		{AlertFilter{UserID: "u-bob", Detector: "break_glass"}, "al-3"},
		{AlertFilter{From: tt.TS("2026-03-09T00:00:00Z")}, "al-2"},
		{AlertFilter{To: tt.TS("2026-03-08T09:00:00Z")}, "al-1"},
	}
	for _, c := range cases {
		c.f.Limit = 50
		page, err := s.ListAlerts(ctx, c.f)
		if err != nil {
			t.Fatalf("%+v: %v", c.f, err)
		}
		if got := alertIDs(page.Alerts); got != c.want {
			t.Errorf("%+v: got %s, want %s", c.f, got, c.want)
		}
	}
	p1, err := s.ListAlerts(ctx, AlertFilter{Limit: 3})
	if err != nil || alertIDs(p1.Alerts) != "al-2,al-3,al-4" || p1.NextCursor == "" {
		t.Fatalf("page 1: %+v %v", p1, err)
	}
	p2, err := s.ListAlerts(ctx, AlertFilter{Limit: 3, Cursor: p1.NextCursor})
	if err != nil || alertIDs(p2.Alerts) != "al-1" || p2.NextCursor != "" {
		t.Fatalf("page 2: %+v %v", p2, err)
	}
	if p1.Alerts[0].Triage.Status != StatusNew || p2.Alerts[0].Triage.Version != 1 || p2.Alerts[0].Triage.Assignee != "soc-alice" {
		t.Errorf("triage state in list: %+v / %+v", p1.Alerts[0].Triage, p2.Alerts[0].Triage)
	}

	d, err := s.AlertDetail(ctx, "al-1")
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Findings) != 2 || len(d.Events) != 1 || d.Events[0].EventID != "ev-3" || d.Events[0].Care.Explained {
		t.Fatalf("detail: %+v", d)
	}
	if d.Findings[0].Evidence.WouldExplain == "" && d.Findings[1].Evidence.WouldExplain == "" {
		t.Errorf("evidence not decoded: %+v", d.Findings)
	}
	if d.Triage.Status != StatusTriaged || d.MissingEvents != 0 {
		t.Errorf("detail state: %+v", d)
	}
	if _, err := s.AlertDetail(ctx, "al-none"); err != ErrNotFound {
		t.Errorf("unknown alert: %v", err)
	}
}

// TestReportWarnsOnEmptyReference: a report over a database whose
// reference tables are loaded carries no warning; once encounters (then
// users) are empty it says so, by table, without naming anyone.
func TestReportWarnsOnEmptyReference(t *testing.T) {
	f := tt.NewFixture()
	conn := tt.NewDB(t, f)
	s := NewStore(conn, Options{Location: nyc(t)})
	ctx := context.Background()
	q := ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 100}
	rep, err := s.ReportAll(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("warnings with the reference tables loaded: %+v", rep.Warnings)
	}
	for _, step := range []struct {
		table string
		want  []string
		says  string
	}{
		{"encounters", []string{"encounters"}, "every access shows as not explained"},
		{"users", []string{"users", "encounters"}, "names are blank"},
	} {
		if err := conn.Exec(ctx, "TRUNCATE TABLE "+step.table); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []ReportKind{PatientAccess, UserActivity} {
			q := q
			q.Kind = kind
			if kind == UserActivity {
				q.SubjectID = "u-alice"
			}
			rep, err := s.ReportAll(ctx, q)
			if err != nil {
				t.Fatal(err)
			}
			if len(rep.Warnings) != 1 {
				t.Fatalf("%s empty, %s: warnings %+v, want one", step.table, kind, rep.Warnings)
			}
			w := rep.Warnings[0]
			if !strings.Contains(w, "The reference table"+map[bool]string{true: "s", false: ""}[len(step.want) > 1]+" "+strings.Join(step.want, ", ")) ||
				!strings.Contains(w, step.says) {
				t.Errorf("%s empty, %s: warning %q, want tables %v and %q", step.table, kind, w, step.want, step.says)
			}
			if strings.Contains(w, tt.PatientMain) || strings.Contains(w, "u-alice") {
				t.Errorf("warning names the subject: %q", w)
			}
			if kind == PatientAccess {
				for _, r := range rep.Rows {
					if r.Care.Explained {
						t.Errorf("row %s explained without encounters", r.EventID)
					}
				}
			}
		}
	}
}
