package api

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

const (
	tokAnalyst = "tok-analyst-7f3a9c"
	tokPO      = "tok-po-51be20"
	tokAdmin   = "tok-admin-c0ffee"
)

// syncBuffer collects log output from concurrent handlers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t    *testing.T
	conn clickhouse.Conn
	srv  *Server
	ts   *httptest.Server
	logs *syncBuffer
	// tokPOJWT is an OIDC (ES256) token of a privacy officer; tokNoRole an
	// OIDC token without any ehrwatch role.
	tokPOJWT, tokNoRole string
}

// with returns a copy of e whose helpers report to t: each subtest gets its
// own, so a helper can never fail a test that has already finished.
func (e *env) with(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

func newEnv(t *testing.T) *env {
	t.Helper()
	testKeys(t)
	conn := tt.NewDB(t, tt.NewFixture())
	cfg := DefaultConfig()
	cfg.Tokens = []TokenConfig{
		{Name: "soc-analyst", Role: RoleAnalyst, Hash: HashToken(tokAnalyst)},
		{Name: "privacy-desk", Role: RolePrivacyOfficer, Hash: HashToken(tokPO)},
		{Name: "ops-admin", Role: RoleAdmin, Hash: HashToken(tokAdmin)},
	}
	cfg.OIDC = []OIDCConfig{testOIDC(jwks(ecJWK("ec-1", &ecKey1.PublicKey)))}
	cfg.FacilityTimeZones = map[string]string{"fac-nyc": "America/New_York"}
	cfg.MaxReportRange = 366 * 24 * time.Hour
	logs := &syncBuffer{}
	srv, err := New(cfg, Deps{Store: triage.NewStore(conn, cfg.TriageOptions()), Log: zerolog.New(logs)})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	now := time.Now()
	claims := func(roles ...string) map[string]any {
		c := baseClaims()
		c["sub"] = "jane.doe@hospital.test"
		c["exp"], c["nbf"], c["iat"] = now.Add(10*time.Minute).Unix(), now.Add(-time.Minute).Unix(), now.Add(-time.Minute).Unix()
		c["realm_access"] = map[string]any{"roles": roles}
		return c
	}
	return &env{t: t, conn: conn, srv: srv, ts: ts, logs: logs,
		tokPOJWT:  signJWT(t, "ES256", "ec-1", ecKey1, claims("EHR-Privacy")),
		tokNoRole: signJWT(t, "ES256", "ec-1", ecKey1, claims("nurses")),
	}
}

type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("response is not JSON (%d): %q", r.status, r.body)
	}
	return m
}

func (e *env) do(method, path, token, body string, hdr ...string) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.ts.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	res, err := e.ts.Client().Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func reportPath(kind, subjectKey, subject string, extra ...string) string {
	v := url.Values{subjectKey: {subject}, "from": {"2026-03-01"}, "to": {"2026-04-01"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return "/api/v1/reports/" + kind + "?" + v.Encode()
}

// phi are fixture strings that must never reach the logs.
var phi = []string{
	tt.PatientMain, tt.PatientOther, "Oriana", "Vexley", "Tobiah", "Wrenfield",
	"Quillon", "Marchetti", "Bertrand", "Oyelaran", "Carys", "Thistlewood", "Abernethy",
	"HYPERLINK", "note-secret-8841",
}

func (e *env) assertNoPHIInLogs() {
	e.t.Helper()
	logs := e.logs.String()
	if !strings.Contains(logs, `"message":"api request"`) {
		e.t.Fatalf("no access log written: %q", logs)
	}
	for _, s := range phi {
		if strings.Contains(logs, s) {
			i := strings.Index(logs, s)
			e.t.Errorf("log contains %q: …%s…", s, logs[max(0, i-200):min(len(logs), i+100)])
		}
	}
}

func TestAPI(t *testing.T) {
	e := newEnv(t)
	t.Run("RBAC", e.testRBAC)
	t.Run("Triage", e.testTriage)
	t.Run("Reports", e.testReports)
	t.Run("AlertsAndDetail", e.testAlerts)
	t.Run("BadInput", e.testBadInput)
	t.Run("Audit", e.testAudit)
	e.assertNoPHIInLogs()
}

func (e *env) testRBAC(t *testing.T) {
	e = e.with(t)
	type who struct {
		name, token string
	}
	callers := []who{{"none", ""}, {"bad", "not-a-real-token"}, {"noRole", e.tokNoRole},
		{"analyst", tokAnalyst}, {"po", tokPO}, {"poJWT", e.tokPOJWT}, {"admin", tokAdmin}}
	// 409 on the PATCH means "authorised" (expected_version 999 is stale).
	patch := `{"expected_version": 999, "note": "rbac probe"}`
	cases := []struct {
		method, path, body string
		want               map[string]int // caller → status; missing = 200
	}{
		{"GET", "/api/v1/openapi.yaml", "", map[string]int{"bad": 200, "none": 200}},
		{"GET", "/api/v1/me", "", map[string]int{"none": 401, "bad": 401}},
		{"GET", "/api/v1/alerts", "", map[string]int{"none": 401, "bad": 401, "noRole": 403}},
		{"GET", "/api/v1/alerts/al-3", "", map[string]int{"none": 401, "bad": 401, "noRole": 403}},
		{"GET", "/api/v1/alerts/al-3/history", "", map[string]int{"none": 401, "bad": 401, "noRole": 403}},
		{"PATCH", "/api/v1/alerts/al-3", patch, map[string]int{"none": 401, "bad": 401, "noRole": 403,
			"analyst": 409, "po": 409, "poJWT": 409, "admin": 409}},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientMain), "", map[string]int{"none": 401, "bad": 401, "noRole": 403, "analyst": 403}},
		{"GET", reportPath("user-activity", "user_id", "u-bob"), "", map[string]int{"none": 401, "bad": 401, "noRole": 403, "analyst": 403}},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientMain, "format", "csv"), "", map[string]int{"none": 401, "bad": 401, "noRole": 403, "analyst": 403}},
	}
	for _, c := range cases {
		for _, w := range callers {
			want, ok := c.want[w.name]
			if !ok {
				want = 200
			}
			r := e.do(c.method, c.path, w.token, c.body)
			if r.status != want {
				t.Errorf("%s %s as %s: %d, want %d (%s)", c.method, c.path, w.name, r.status, want, r.body)
				continue
			}
			switch r.status {
			case 401:
				wa := r.header.Get("WWW-Authenticate")
				if !strings.HasPrefix(wa, `Bearer realm="ehrwatch"`) || (w.name == "bad") != strings.Contains(wa, `error="invalid_token"`) {
					t.Errorf("%s %s as %s: WWW-Authenticate %q", c.method, c.path, w.name, wa)
				}
			case 403:
				if !strings.Contains(r.header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
					t.Errorf("%s %s as %s: 403 without insufficient_scope", c.method, c.path, w.name)
				}
			}
			if r.header.Get("X-Request-Id") == "" || r.header.Get("Cache-Control") != "no-store" && c.path != "/api/v1/openapi.yaml" {
				t.Errorf("%s %s: missing request id or no-store", c.method, c.path)
			}
		}
	}
	me := e.do("GET", "/api/v1/me", e.tokPOJWT, "").json(t)
	if me["name"] != "jane.doe@hospital.test" || me["method"] != "oidc" {
		t.Errorf("me: %v", me)
	}
}

func (e *env) testTriage(t *testing.T) {
	e = e.with(t)
	p := "/api/v1/alerts/al-2"
	r := e.do("PATCH", p, tokAnalyst, `{"expected_version": 0, "status": "triaged", "assignee": "soc-analyst"}`)
	if r.status != 200 {
		t.Fatalf("triage: %d %s", r.status, r.body)
	}
	if st := r.json(t); st["version"] != 1.0 || st["status"] != "triaged" || st["changed_by"] != "soc-analyst" {
		t.Fatalf("state %v", st)
	}
	r = e.do("PATCH", p, tokAnalyst, `{"expected_version": 0, "note": "stale"}`)
	if m := r.json(t); r.status != 409 || m["current_version"] != 1.0 || m["field"] != "expected_version" {
		t.Fatalf("stale: %d %s", r.status, r.body)
	}
	bad := []struct {
		body, ctype string
		status      int
		field       string
	}{
		{`{"expected_version": 1, "status": "closed"}`, "", 400, "disposition"},
		{`{"expected_version": 1, "status": "closed", "disposition": "whatever"}`, "", 400, "disposition"},
		{`{"expected_version": 1, "status": "archived"}`, "", 400, "status"},
		{`{"expected_version": 1, "status": "new"}`, "", 400, "status"},
		{`{"expected_version": 1, "bogus": 1}`, "", 400, "bogus"},
		{`{"status": "closed", "disposition": "duplicate"}`, "", 400, "expected_version"},
		{`{"expected_version": "1"}`, "", 400, "expected_version"},
		{`{"expected_version": 1}`, "", 400, ""},
		{`{"expected_version": 1, "note": "` + strings.Repeat("n", triage.MaxNoteBytes+1) + `"}`, "", 400, "note"},
		{`{"expected_version": 1, "note": "x"} {"again": 1}`, "", 400, ""},
		{`{"expected_version": 1, "note": "x"`, "", 400, ""},
		{`{"expected_version": 1, "note": "` + strings.Repeat("n", 70<<10) + `"}`, "", 413, ""},
		{`{"expected_version": 1, "note": "x"}`, "text/plain", 415, "Content-Type"},
	}
	for _, b := range bad {
		var hdr []string
		if b.ctype != "" {
			hdr = []string{"Content-Type", b.ctype}
		}
		r := e.do("PATCH", p, tokAnalyst, b.body, hdr...)
		m := r.json(t)
		if r.status != b.status || (b.field != "" && m["field"] != b.field) || m["error"] == "" {
			t.Errorf("%.80s: %d %s, want %d on %q", b.body, r.status, r.body, b.status, b.field)
		}
	}
	r = e.do("PATCH", p, tokAnalyst, `{"expected_version": 1, "status": "closed", "disposition": "false_positive", "note": "note-secret-8841: covering physician"}`)
	if r.status != 200 || r.json(t)["disposition"] != "false_positive" {
		t.Fatalf("close: %d %s", r.status, r.body)
	}
	r = e.do("PATCH", p, tokAnalyst, `{"expected_version": 2, "status": "triaged"}`)
	if r.status != 403 {
		t.Fatalf("analyst reopen: %d %s", r.status, r.body)
	}
	r = e.do("PATCH", p, tokPO, `{"expected_version": 2, "status": "triaged", "note": "reopened"}`)
	if r.status != 200 || r.json(t)["version"] != 3.0 {
		t.Fatalf("po reopen: %d %s", r.status, r.body)
	}
	if r = e.do("PATCH", "/api/v1/alerts/al-none", tokAnalyst, `{"expected_version": 0, "note": "x"}`); r.status != 404 {
		t.Errorf("unknown alert: %d", r.status)
	}
	r = e.do("GET", p+"/history", tokAnalyst, "")
	var h struct {
		History []triage.State `json:"history"`
	}
	if err := json.Unmarshal(r.body, &h); err != nil || len(h.History) != 3 {
		t.Fatalf("history: %s", r.body)
	}
	if h.History[0].ChangedBy != "soc-analyst" || h.History[2].ChangedBy != "privacy-desk" || h.History[1].Note == "" {
		t.Errorf("history rows: %+v", h.History)
	}
	if r = e.do("GET", "/api/v1/alerts/al-none/history", tokAnalyst, ""); r.status != 404 {
		t.Errorf("history of unknown alert: %d", r.status)
	}
}

func (e *env) testReports(t *testing.T) {
	e = e.with(t)
	r := e.do("GET", reportPath("patient-access", "patient_id", tt.PatientMain), tokPO, "")
	if r.status != 200 {
		t.Fatalf("report: %d %s", r.status, r.body)
	}
	var rep triage.Report
	if err := json.Unmarshal(r.body, &rep); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, row := range rep.Rows {
		got = append(got, row.EventID+"/"+row.LocalTime+"/"+boolWord(row.Care.Explained))
	}
	want := []string{
		"ev-1/2026-03-08T01:59:00.000-05:00/yes", "ev-2/2026-03-08T03:00:00.000-04:00/yes",
		"ev-3/2026-03-08T04:00:00.000-04:00/no", "ev-6/2026-03-08T05:00:00.000-04:00/yes",
		"ev-4/2026-03-09T07:00:00.000-04:00/yes", "ev-5/2026-03-09T09:00:00.000-04:00/no",
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("rows\n got %v\nwant %v", got, want)
	}
	if rep.Rows[0].UserName != "Quillon Marchetti" {
		t.Errorf("names missing from the report: %+v", rep.Rows[0])
	}

	// JSON paging.
	var ids []string
	cursor := ""
	for range 5 {
		path := reportPath("patient-access", "patient_id", tt.PatientMain, "limit", "4")
		if cursor != "" {
			path += "&cursor=" + url.QueryEscape(cursor)
		}
		var page triage.Report
		if err := json.Unmarshal(e.do("GET", path, tokPO, "").body, &page); err != nil {
			t.Fatal(err)
		}
		for _, row := range page.Rows {
			ids = append(ids, row.EventID)
		}
		if cursor = page.NextCursor; cursor == "" {
			break
		}
	}
	if strings.Join(ids, ",") != "ev-1,ev-2,ev-3,ev-6,ev-4,ev-5" {
		t.Errorf("paged ids %v", ids)
	}

	// CSV.
	r = e.do("GET", reportPath("patient-access", "patient_id", tt.PatientMain, "format", "csv", "limit", "5"), tokPO, "")
	if r.status != 200 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") {
		t.Fatalf("csv: %d %v", r.status, r.header)
	}
	cd := r.header.Get("Content-Disposition")
	if !strings.Contains(cd, "attachment") || strings.Contains(cd, tt.PatientMain) {
		t.Errorf("Content-Disposition %q", cd)
	}
	if r.header.Get("X-Next-Cursor") == "" {
		t.Errorf("5 of 6 rows without X-Next-Cursor")
	}
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil || len(recs) != 6 || recs[0][0] != "time_utc" {
		t.Fatalf("csv records %d: %v", len(recs), err)
	}
	if reason := recs[3][13]; !strings.HasPrefix(reason, `'=HYPERLINK("http://x.test","click"), "urgent"`) {
		t.Errorf("formula not defused: %q", reason)
	}

	// User activity, by the OIDC privacy officer.
	r = e.do("GET", reportPath("user-activity", "user_id", "u-bob"), e.tokPOJWT, "")
	if err := json.Unmarshal(r.body, &rep); err != nil || r.status != 200 {
		t.Fatalf("user report: %d %s", r.status, r.body)
	}
	if len(rep.Rows) != 2 || rep.Rows[1].PatientID != tt.PatientOther || !rep.Rows[1].Care.Explained || len(rep.Findings) != 2 {
		t.Errorf("user report: %+v", rep)
	}
}

// TestReportWarnings: with the encounters table empty, the JSON report
// says the encounters table is empty and the CSV export carries the same
// sentence in X-Report-Warning; with it loaded, neither does.
func TestReportWarnings(t *testing.T) {
	e := newEnv(t)
	path := reportPath("patient-access", "patient_id", tt.PatientMain)
	get := func() (triage.Report, resp) {
		var rep triage.Report
		r := e.do("GET", path, tokPO, "")
		if err := json.Unmarshal(r.body, &rep); err != nil || r.status != 200 {
			t.Fatalf("report: %d %s", r.status, r.body)
		}
		return rep, e.do("GET", path+"&format=csv", tokPO, "")
	}
	rep, csvResp := get()
	if rep.Warnings != nil || bytes.Contains(e.do("GET", path, tokPO, "").body, []byte(`"warnings"`)) || csvResp.header.Get("X-Report-Warning") != "" {
		t.Errorf("warnings with the reference tables loaded: %+v %v", rep.Warnings, csvResp.header)
	}
	if err := e.conn.Exec(context.Background(), "TRUNCATE TABLE encounters"); err != nil {
		t.Fatal(err)
	}
	rep, csvResp = get()
	if len(rep.Warnings) != 1 || !strings.HasPrefix(rep.Warnings[0], "The reference table encounters is empty") {
		t.Errorf("warnings %q, want the empty encounters table", rep.Warnings)
	}
	if csvResp.status != 200 || csvResp.header.Get("X-Report-Warning") != rep.Warnings[0] {
		t.Errorf("csv: %d, X-Report-Warning %q", csvResp.status, csvResp.header.Get("X-Report-Warning"))
	}
}

func boolWord(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func (e *env) testAlerts(t *testing.T) {
	e = e.with(t)
	r := e.do("GET", "/api/v1/alerts?severity=high&limit=1", tokAnalyst, "")
	var page triage.AlertPage
	if err := json.Unmarshal(r.body, &page); err != nil || r.status != 200 {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if len(page.Alerts) != 1 || page.Alerts[0].AlertID != "al-3" || page.NextCursor == "" {
		t.Fatalf("page 1: %+v", page)
	}
	r = e.do("GET", "/api/v1/alerts?severity=high&limit=1&cursor="+url.QueryEscape(page.NextCursor), tokAnalyst, "")
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Alerts) != 1 || page.Alerts[0].AlertID != "al-1" {
		t.Fatalf("page 2: %s", r.body)
	}
	r = e.do("GET", "/api/v1/alerts?status=triaged", tokAnalyst, "")
	if err := json.Unmarshal(r.body, &page); err != nil || len(page.Alerts) != 1 || page.Alerts[0].AlertID != "al-2" {
		t.Fatalf("status filter: %s", r.body)
	}
	r = e.do("GET", "/api/v1/alerts/al-1", tokAnalyst, "")
	var d triage.AlertDetail
	if err := json.Unmarshal(r.body, &d); err != nil || r.status != 200 {
		t.Fatalf("detail: %d %s", r.status, r.body)
	}
	if len(d.Findings) != 2 || len(d.Events) != 1 || d.Events[0].EventID != "ev-3" || !d.Events[0].BreakGlass {
		t.Errorf("detail: %+v", d)
	}
	if strings.Contains(string(r.body), "Oyelaran") {
		t.Errorf("alert detail carries a user name; names belong in reports only")
	}
	if r = e.do("GET", "/api/v1/alerts/al-none", tokAnalyst, ""); r.status != 404 {
		t.Errorf("unknown alert: %d", r.status)
	}
}

func (e *env) testBadInput(t *testing.T) {
	e = e.with(t)
	pr := func(extra ...string) string {
		v := url.Values{"patient_id": {tt.PatientMain}, "from": {"2026-03-01"}, "to": {"2026-04-01"}}
		for i := 0; i+1 < len(extra); i += 2 {
			if extra[i+1] == "" {
				v.Del(extra[i])
			} else {
				v.Set(extra[i], extra[i+1])
			}
		}
		return "/api/v1/reports/patient-access?" + v.Encode()
	}
	cases := []struct {
		path, field string
		status      int
	}{
		{"/api/v1/alerts?status=bogus", "status", 400},
		{"/api/v1/alerts?severity=urgent", "severity", 400},
		{"/api/v1/alerts?from=yesterday", "from", 400},
		{"/api/v1/alerts?from=2026-03-02&to=2026-03-01", "from", 400},
		{"/api/v1/alerts?limit=0", "limit", 400},
		{"/api/v1/alerts?limit=100000", "limit", 400},
		{"/api/v1/alerts?cursor=garbage", "cursor", 400},
		{"/api/v1/alerts?frobnicate=1", "frobnicate", 400},
		{"/api/v1/alerts?status=new&status=closed", "status", 400},
		{"/api/v1/alerts?patient_id=" + url.QueryEscape(tt.PatientMain+"\x01"), "patient_id", 400},
		{pr("patient_id", ""), "patient_id", 400},
		{pr("from", ""), "from", 400},
		{pr("to", "2026-02-30"), "to", 400},
		{pr("from", "2026-04-02"), "from", 400},
		{pr("from", "2020-01-01"), "to", 400},
		{pr("format", "xml"), "format", 400},
		{pr("limit", "abc"), "limit", 400},
		{pr("patient_id", strings.Repeat("p", 200)), "patient_id", 400},
		{pr("mrn", tt.PatientOther), "mrn", 400},
	}
	for _, c := range cases {
		r := e.do("GET", c.path, tokAdmin, "")
		m := r.json(t)
		if r.status != c.status || m["field"] != c.field {
			t.Errorf("%s: %d %s, want %d on %q", c.path, r.status, r.body, c.status, c.field)
		}
		if strings.Contains(string(r.body), tt.PatientMain) || strings.Contains(string(r.body), tt.PatientOther) {
			t.Errorf("%s: error echoes the patient id: %s", c.path, r.body)
		}
	}
	r := e.do("DELETE", "/api/v1/alerts/al-1", tokAdmin, "")
	if r.status != 405 || r.header.Get("Allow") != "GET, HEAD, PATCH" || r.json(t)["error"] == "" {
		t.Errorf("DELETE: %d Allow=%q %s", r.status, r.header.Get("Allow"), r.body)
	}
	if r = e.do("GET", "/api/v1/nope", tokAdmin, ""); r.status != 404 || r.json(t)["error"] == "" {
		t.Errorf("unknown path: %d %s", r.status, r.body)
	}
}

// auditRow is api_audit as the tests read it.
type auditRow struct {
	RequestID, ClientRequestID, Principal, AuthMethod, Role, Channel, Method, Endpoint string
	AlertID, PatientID, UserID                                                         string
	Patients                                                                           []string
	Params                                                                             string
	Status                                                                             uint16
	Rows                                                                               uint32
	RemoteAddr                                                                         string
}

func readAudit(t *testing.T, conn clickhouse.Conn) []auditRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT request_id, client_request_id, principal, auth_method, role, channel, method, endpoint,
 alert_id, patient_id, user_id, patients_returned, params, status, rows, remote_addr FROM api_audit ORDER BY at, request_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.RequestID, &a.ClientRequestID, &a.Principal, &a.AuthMethod, &a.Role, &a.Channel, &a.Method, &a.Endpoint,
			&a.AlertID, &a.PatientID, &a.UserID, &a.Patients, &a.Params, &a.Status, &a.Rows, &a.RemoteAddr); err != nil {
			t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func (e *env) testAudit(t *testing.T) {
	e = e.with(t)
	if err := e.conn.Exec(context.Background(), "TRUNCATE TABLE api_audit"); err != nil {
		t.Fatal(err)
	}
	type call struct {
		method, path, token, body, rid string
		audited                        bool
	}
	calls := []call{
		{"GET", "/api/v1/alerts?patient_id=" + tt.PatientMain, tokAnalyst, "", "rid-list-000001", true},
		{"GET", "/api/v1/alerts/al-1", tokAnalyst, "", "rid-detail-00001", true},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientMain), tokPO, "", "rid-report-00001", true},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientMain, "format", "csv"), tokAdmin, "", "rid-csv-0000001", true},
		{"GET", reportPath("user-activity", "user_id", "u-bob"), e.tokPOJWT, "", "rid-user-000001", true},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientOther), tokAnalyst, "", "rid-denied-00001", true},
		{"GET", reportPath("patient-access", "patient_id", tt.PatientMain, "to", "2019-01-01"), tokPO, "", "rid-bad-0000001", true},
		{"GET", "/api/v1/alerts/al-1/history", tokAnalyst, "", "rid-history-0001", false},
		{"PATCH", "/api/v1/alerts/al-3", tokAnalyst, `{"expected_version": 0, "status": "triaged"}`, "rid-patch-00001", false},
		{"GET", "/api/v1/me", tokAnalyst, "", "rid-me-00000001", false},
		{"GET", "/api/v1/openapi.yaml", "", "", "rid-openapi-0001", false},
		{"GET", "/api/v1/alerts", "", "", "rid-anon-0000001", false},
	}
	serverID := map[string]string{} // client's id → the server's
	for _, c := range calls {
		r := e.do(c.method, c.path, c.token, c.body, "X-Request-Id", c.rid)
		sid := r.header.Get("X-Request-Id")
		if sid == "" || sid == c.rid || r.header.Get("X-Client-Request-Id") != c.rid {
			t.Errorf("%s: X-Request-Id %q, X-Client-Request-Id %q: want a server id and the client's echoed apart",
				c.path, sid, r.header.Get("X-Client-Request-Id"))
		}
		if _, dup := serverID[sid]; dup {
			t.Errorf("server request id %s issued twice", sid)
		}
		serverID[c.rid] = sid
	}
	rows := readAudit(t, e.conn)
	byRID := map[string]auditRow{}
	for _, a := range rows {
		byRID[a.ClientRequestID] = a
		if a.RequestID != serverID[a.ClientRequestID] {
			t.Errorf("audit row of %s: request_id %q, want the server's %q", a.ClientRequestID, a.RequestID, serverID[a.ClientRequestID])
		}
	}
	for _, c := range calls {
		if _, ok := byRID[c.rid]; ok != c.audited {
			t.Errorf("%s %s: audited=%v, want %v", c.method, c.path, ok, c.audited)
		}
	}
	if len(rows) != 7 {
		t.Errorf("%d audit rows, want 7", len(rows))
	}
	check := func(rid string, f func(a auditRow) bool) {
		t.Helper()
		if a, ok := byRID[rid]; !ok || !f(a) {
			t.Errorf("%s: %+v", rid, a)
		}
	}
	check("rid-list-000001", func(a auditRow) bool {
		return a.Principal == "soc-analyst" && a.Role == "analyst" && a.AuthMethod == "token" && a.Channel == "api" &&
			a.Endpoint == "GET /api/v1/alerts" && a.PatientID == tt.PatientMain && a.Rows == 2 && a.Status == 200 &&
			len(a.Patients) == 1 && a.RemoteAddr != ""
	})
	check("rid-detail-00001", func(a auditRow) bool {
		return a.AlertID == "al-1" && a.PatientID == tt.PatientMain && a.Rows == 1 && a.Endpoint == "GET /api/v1/alerts/{id}"
	})
	check("rid-report-00001", func(a auditRow) bool {
		return a.Principal == "privacy-desk" && a.PatientID == tt.PatientMain && a.Rows == 6 &&
			strings.Contains(a.Params, `"from":"2026-03-01"`) && strings.Contains(a.Params, `"to":"2026-04-01"`)
	})
	check("rid-csv-0000001", func(a auditRow) bool {
		return a.Role == "admin" && strings.Contains(a.Params, `"format":"csv"`) && a.Rows == 6
	})
	check("rid-user-000001", func(a auditRow) bool {
		return a.Principal == "jane.doe@hospital.test" && a.AuthMethod == "oidc" && a.UserID == "u-bob" &&
			a.Rows == 2 && len(a.Patients) == 2
	})
	check("rid-denied-00001", func(a auditRow) bool {
		return a.Status == 403 && a.PatientID == tt.PatientOther && a.Rows == 0 && a.Principal == "soc-analyst"
	})
	check("rid-bad-0000001", func(a auditRow) bool { return a.Status == 400 && a.Rows == 0 })
}

// TestAuditFailureRefusesData: when api_audit cannot be written, reads of
// patient data fail with 500 and return nothing; others keep working.
func TestAuditFailureRefusesData(t *testing.T) {
	e := newEnv(t)
	if err := e.conn.Exec(context.Background(), "DROP TABLE api_audit SYNC"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{
		reportPath("patient-access", "patient_id", tt.PatientMain),
		reportPath("patient-access", "patient_id", tt.PatientMain, "format", "csv"),
		reportPath("user-activity", "user_id", "u-bob"),
		"/api/v1/alerts/al-1",
		"/api/v1/alerts",
	} {
		r := e.do("GET", p, tokAdmin, "")
		if r.status != 500 {
			t.Errorf("%s: %d, want 500", p, r.status)
		}
		if b := string(r.body); strings.Contains(b, "ev-") || strings.Contains(b, "Marchetti") || strings.Contains(b, tt.PatientMain) {
			t.Errorf("%s: data returned without an audit row: %s", p, b)
		}
	}
	if r := e.do("GET", "/api/v1/alerts/al-1/history", tokAdmin, ""); r.status != 200 {
		t.Errorf("history: %d", r.status)
	}
	if !strings.Contains(e.logs.String(), "refusing to return unaudited data") {
		t.Errorf("audit failure not logged")
	}
	e.assertNoPHIInLogs()
}

func TestRedact(t *testing.T) {
	msg := `code: 26, value ['zz','O\'Brien-77'] cannot be parsed for query parameter 'ids'; also MRN-1 and O'Brien-77`
	got := redact(msg, []string{"O'Brien-77", "MRN-1"})
	if strings.Contains(got, "Brien") || strings.Contains(got, "MRN-1") {
		t.Fatalf("redact: %s", got)
	}
}

// TestAuditServerErrorNotLogged: ClickHouse quotes the rejected row in some
// exceptions (a violated constraint lists its column values); when the
// audit write fails that way, the log names the exception by code only,
// never the patient ids of the row.
func TestAuditServerErrorNotLogged(t *testing.T) {
	e := newEnv(t)
	if err := e.conn.Exec(context.Background(),
		"ALTER TABLE api_audit ADD CONSTRAINT no_patients CHECK length(patients_returned) = 0"); err != nil {
		t.Fatal(err)
	}
	if r := e.do("GET", reportPath("user-activity", "user_id", "u-bob"), tokAdmin, ""); r.status != 500 {
		t.Fatalf("user-activity: %d, want 500", r.status)
	}
	logs := e.logs.String()
	if !strings.Contains(logs, "refusing to return unaudited data") || !strings.Contains(logs, "clickhouse exception") {
		t.Fatalf("audit failure not logged by exception code: %s", logs)
	}
	e.assertNoPHIInLogs()
}
