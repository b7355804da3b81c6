package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const (
	tokAnalyst  = "analyst-token-0123456789abcdef"
	tokAnalyst2 = "analyst2-token-0123456789abcdef"
	tokPO       = "privacy-token-0123456789abcdef"
)

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
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

// env is the API server with the console mounted on its listener, over
// the dev ClickHouse engine seeded with triagetest's small hospital.
type env struct {
	t    testing.TB
	conn clickhouse.Conn
	ts   *httptest.Server
	logs *syncBuffer
	// urls collects every URL the pages emitted (href, action, hx-get …).
	urls []string
}

func newEnv(t testing.TB) *env {
	t.Helper()
	f := tt.NewFixture()
	// al-2's volume finding (f-3) gets numbers to chart.
	f.Findings[2].Evidence = schemas.Evidence{Observed: 40, Baseline: 6, PeerValue: 9, Threshold: 20,
		Facts: map[string]string{"action": "print"}}
	conn := tt.NewDB(t, f)
	cfg := api.DefaultConfig()
	cfg.Tokens = []api.TokenConfig{
		{Name: "soc-analyst", Role: api.RoleAnalyst, Hash: api.HashToken(tokAnalyst)},
		{Name: "soc-analyst-2", Role: api.RoleAnalyst, Hash: api.HashToken(tokAnalyst2)},
		{Name: "privacy-desk", Role: api.RolePrivacyOfficer, Hash: api.HashToken(tokPO)},
	}
	cfg.FacilityTimeZones = map[string]string{"fac-nyc": "America/New_York"}
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	st := triage.NewStore(conn, cfg.TriageOptions())
	var con *console.Console
	srv, err := api.New(cfg, api.Deps{Store: st, Log: log,
		UI: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.Handler().ServeHTTP(w, r) })})
	if err != nil {
		t.Fatal(err)
	}
	ccfg := console.DefaultConfig()
	con, err = console.New(ccfg, console.Deps{Store: st, Auth: srv, Log: log,
		Now: func() time.Time { return tt.TS("2026-03-10T12:00:00Z") }})
	if err != nil {
		t.Fatal(err)
	}
	hs, err := srv.HTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(hs.Handler)
	t.Cleanup(ts.Close)
	return &env{t: t, conn: conn, ts: ts, logs: logs}
}

type resp struct {
	status int
	header http.Header
	body   string
}

var noRedirect = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}

func (e *env) do(method, path, token string, form url.Values) resp {
	e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	res, err := noRedirect.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	r := resp{status: res.StatusCode, header: res.Header, body: string(b)}
	e.checkPage(method+" "+path, r)
	return r
}

// checkPage holds for every console response: the CSP header, and for
// HTML no inline script or style.
func (e *env) checkPage(what string, r resp) {
	e.t.Helper()
	if p := strings.TrimPrefix(what, "GET "); strings.HasPrefix(p, "/static/") || strings.HasPrefix(p, "/api/") {
		return
	}
	if got := r.header.Get("Content-Security-Policy"); got != console.CSP {
		e.t.Errorf("%s: Content-Security-Policy = %q, want %q", what, got, console.CSP)
	}
	if !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		return
	}
	for _, bad := range inlineViolations(r.body) {
		e.t.Errorf("%s: inline script or style: %s", what, bad)
	}
	e.urls = append(e.urls, emittedURLs(r.body)...)
}

// query runs a one-row query and scans it.
func (e *env) query(q string, dest ...any) {
	e.t.Helper()
	if err := e.conn.QueryRow(context.Background(), q).Scan(dest...); err != nil {
		e.t.Fatalf("%s: %v", q, err)
	}
}

// auditRows counts console audit rows for an endpoint and principal.
func (e *env) auditRows(endpoint, principal string) uint64 {
	e.t.Helper()
	var n uint64
	e.query(fmt.Sprintf("SELECT count() FROM api_audit WHERE channel = 'console' AND endpoint = '%s' AND principal = '%s'", endpoint, principal), &n)
	return n
}

func (e *env) state(alertID string) (version uint64, status, assignee, disposition string) {
	e.t.Helper()
	e.query(fmt.Sprintf("SELECT version, status, assignee, disposition FROM alert_state FINAL WHERE alert_id = '%s'", alertID),
		&version, &status, &assignee, &disposition)
	return
}

func mustContain(t *testing.T, what, body string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(body, w) {
			t.Errorf("%s lacks %q", what, w)
		}
	}
}

func mustNotContain(t *testing.T, what, body string, bad ...string) {
	t.Helper()
	for _, w := range bad {
		if strings.Contains(body, w) {
			t.Errorf("%s contains %q", what, w)
		}
	}
}

// rowOf returns the queue's table row of an alert ("" if absent).
func rowOf(body, alertID string) string {
	i := strings.Index(body, `value="`+alertID+`"`)
	if i < 0 {
		return ""
	}
	j := strings.Index(body[i:], "</tr>")
	return body[i : i+j]
}

func TestQueueFiltersCountsSLAAndAudit(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/queue", tokAnalyst, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /queue: %d\n%s", r.status, r.body)
	}
	for _, want := range []string{"<h1>Alert queue</h1>", "alert al-1", "alert al-3", `href="/alerts/al-1"`} {
		if !strings.Contains(r.body, want) {
			t.Errorf("queue lacks %q", want)
		}
	}
	if r := e.do("GET", "/", tokAnalyst, nil); r.status != http.StatusSeeOther || r.header.Get("Location") != "/queue" {
		t.Errorf("GET /: %d %q, want 303 to /queue", r.status, r.header.Get("Location"))
	}
	if r := e.do("GET", "/api/v1/nope", tokAnalyst, nil); r.status != http.StatusNotFound || !strings.Contains(r.header.Get("Content-Type"), "json") {
		t.Errorf("GET /api/v1/nope: %d %s, want the API's JSON 404", r.status, r.header.Get("Content-Type"))
	}
	if r := e.do("GET", "/static/vendor/htmx-2.0.11.min.js", "", nil); r.status != http.StatusOK || len(r.body) < 40000 {
		t.Errorf("GET htmx: %d, %d bytes", r.status, len(r.body))
	}
	r = e.do("GET", "/queue", tokAnalyst, nil)
	// Ranking: critical al-3, high al-1, medium al-4, low al-2.
	i3, i1, i4, i2 := strings.Index(r.body, "alert al-3"), strings.Index(r.body, "alert al-1"),
		strings.Index(r.body, "alert al-4"), strings.Index(r.body, "alert al-2")
	if !(i3 >= 0 && i3 < i1 && i1 < i4 && i4 < i2) {
		t.Errorf("queue order al-3 %d, al-1 %d, al-4 %d, al-2 %d: want critical, high, medium, low", i3, i1, i4, i2)
	}
	mustContain(t, "queue", r.body, `<span class="n">4</span> new`, `<span class="n">0</span> triaged`, "4 alerts")
	// The page's clock is 2026-03-10T12:00Z: al-3 (critical, 1 h SLA) is
	// past its SLA; al-2 (low, first seen 2026-03-09T05:00Z, 31 h old,
	// 72 h SLA) is not.
	mustContain(t, "al-3 row", rowOf(r.body, "al-3"), "past SLA (1 h 0 min)")
	mustNotContain(t, "al-2 row", rowOf(r.body, "al-2"), "past SLA")
	mustContain(t, "al-2 row", rowOf(r.body, "al-2"), "31 h 0 min")

	for _, c := range []struct {
		query     string
		want, not []string
	}{
		{"severity=high", []string{"alert al-1", "alert al-3"}, []string{"alert al-2", "alert al-4"}},
		{"detector=volume", []string{"alert al-2"}, []string{"alert al-1", "alert al-3", "alert al-4"}},
		// u-bob is in Oncology; u-carol's department is "cardiology " in
		// the users table.
		{"department=Oncology", []string{"alert al-1", "alert al-3"}, []string{"alert al-2", "alert al-4"}},
		{"department=Cardiology", []string{"alert al-2", "alert al-4"}, []string{"alert al-1", "alert al-3"}},
		{"facility=fac-chi", nil, []string{"alert al-1", "alert al-2", "alert al-3", "alert al-4"}},
		{"age=168h", nil, []string{"alert al-1", "alert al-2"}},
		{"age=24h", []string{"alert al-1", "alert al-2"}, nil},
		{"assignee=none", []string{"alert al-1"}, nil},
		{"assignee=me", nil, []string{"alert al-1"}},
		{"status=closed", nil, []string{"alert al-1"}},
	} {
		r := e.do("GET", "/queue?"+c.query, tokAnalyst, nil)
		if r.status != http.StatusOK {
			t.Errorf("%s: %d", c.query, r.status)
			continue
		}
		mustContain(t, "queue?"+c.query, r.body, c.want...)
		mustNotContain(t, "queue?"+c.query, r.body, c.not...)
	}
	if r := e.do("GET", "/queue?severity=urgent", tokAnalyst, nil); r.status != http.StatusBadRequest {
		t.Errorf("bad severity: %d, want 400", r.status)
	}
	if r := e.do("GET", "/queue?patient_id="+tt.PatientMain, tokAnalyst, nil); r.status != http.StatusBadRequest {
		t.Errorf("patient_id filter: %d, want 400 (the queue takes no patient ids)", r.status)
	}
	if n := e.auditRows("GET /queue", "soc-analyst"); n != 12 {
		t.Errorf("api_audit has %d console rows for GET /queue, want 12 (one per page shown; refused filters show nothing)", n)
	}
	var patients []string
	e.query("SELECT patients_returned FROM api_audit WHERE channel = 'console' AND endpoint = 'GET /queue' AND params = '{}'", &patients)
	if strings.Join(patients, ",") != tt.PatientMain+","+tt.PatientOther {
		t.Errorf("audited patients of the full queue = %v", patients)
	}
}

// TestAlertPage also checks the refusals: no credentials, bad token,
// cross-site POST, GET on a state change, unknown page.
func TestAlertPage(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/alerts/al-1", tokAnalyst, nil)
	if r.status != http.StatusOK {
		t.Fatalf("GET /alerts/al-1: %d\n%s", r.status, r.body)
	}
	mustContain(t, "alert page", r.body,
		"<h1>Alert: no care relationship by u-bob</h1>",
		"no encounter explains the access",                // finding sentence
		"break-glass access <em>(suppressed: allowlisted", // suppressed finding
		"<li>an encounter in Oncology</li>",               // what would have explained it
		// ev-3, 08:00Z on the spring-forward day: 04:00 EDT in New York.
		"<td>2026-03-08 04:00:00 EDT</td>",
		"yes: =HYPERLINK(&#34;http://x.test&#34;,&#34;click&#34;), &#34;urgent&#34;", // break-glass reason, escaped
		"<strong>no</strong> — no care relationship",
		"Nobody has triaged this alert yet.",
		`action="/alerts/al-1"`,
	)
	// Related: u-bob's other alert al-3; the patient's other alert al-4.
	rel := r.body[strings.Index(r.body, `id="related-h"`):strings.Index(r.body, `id="history-h"`)]
	mustContain(t, "related alerts", rel, `href="/alerts/al-3"`, `href="/alerts/al-4"`)
	mustNotContain(t, "related alerts", rel, `href="/alerts/al-1"`, `href="/alerts/al-2"`)

	var alertID, patientID string
	var patients []string
	e.query("SELECT alert_id, patient_id, patients_returned FROM api_audit WHERE channel = 'console' AND endpoint = 'GET /alerts/{alert_id}'",
		&alertID, &patientID, &patients)
	if alertID != "al-1" || patientID != tt.PatientMain || !slices.Contains(patients, tt.PatientMain) || !slices.Contains(patients, tt.PatientOther) {
		t.Errorf("audit row: alert %q patient %q patients %v", alertID, patientID, patients)
	}

	// Evidence chart: only for findings with numbers.
	if strings.Contains(r.body, "data-chart-values") {
		t.Errorf("al-1's findings have no observed/baseline/peer values, yet the page draws a chart")
	}
	r = e.do("GET", "/alerts/al-2", tokAnalyst, nil)
	mustContain(t, "al-2 evidence", r.body,
		`data-chart-labels="Observed|Own baseline|Peers|Threshold" data-chart-values="40|6|9|20"`,
		`<th scope="col">Own baseline</th>`, "<td>40</td><td>6</td><td>9</td><td>20</td>", "<li>action: print</li>",
		"more prints than usual", "<td>2026-03-09 09:00:00 EDT</td>")
	if r := e.do("GET", "/alerts/al-nope", tokAnalyst, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "No alert has this id.") {
		t.Errorf("unknown alert: %d", r.status)
	}
	// No credentials: the sign-in page, no data.
	r = e.do("GET", "/queue", "", nil)
	if r.status != http.StatusUnauthorized || !strings.Contains(r.body, `href="/signin"`) || strings.Contains(r.body, "al-1") {
		t.Errorf("anonymous queue: %d", r.status)
	}
	if r := e.do("GET", "/alerts/al-1", "not-a-valid-token-0123456789", nil); r.status != http.StatusUnauthorized || !strings.Contains(r.body, "unknown token") {
		t.Errorf("bad token: %d", r.status)
	}
	// A cross-site POST is refused before it reaches the handler.
	req, _ := http.NewRequest("POST", e.ts.URL+"/alerts/al-1/assign-to-me", strings.NewReader("version.al-1=0"))
	req.Header.Set("Authorization", "Bearer "+tokAnalyst)
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	res, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	e.checkPage("POST cross-site", resp{status: res.StatusCode, header: res.Header, body: string(b)})
	if res.StatusCode != http.StatusForbidden || !strings.Contains(string(b), "came from another site") {
		t.Errorf("cross-site POST: %d", res.StatusCode)
	}
	var n uint64
	e.query("SELECT count() FROM alert_state_history WHERE alert_id = 'al-1'", &n)
	if n != 0 {
		t.Errorf("the cross-site POST changed al-1")
	}
	// State changes are POSTs only.
	if r := e.do("GET", "/alerts/al-1/assign-to-me", tokAnalyst, nil); r.status != http.StatusNotFound && r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET assign-to-me: %d", r.status)
	}
	if r := e.do("GET", "/nowhere", tokAnalyst, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "There is no page at this address.") {
		t.Errorf("unknown page: %d", r.status)
	}
}

func TestTriageFromTheConsoleAndConflicts(t *testing.T) {
	e := newEnv(t)
	// Analyst 1 assigns al-2 to themself from the queue.
	r := e.do("POST", "/alerts/al-2/assign-to-me", tokAnalyst, url.Values{"version.al-2": {"0"}, "return": {"/queue?severity=low"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/queue?severity=low" {
		t.Fatalf("assign to me: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	if v, st, who, _ := e.state("al-2"); v != 1 || st != "triaged" || who != "soc-analyst" {
		t.Fatalf("after assign to me: version %d, %s, %q", v, st, who)
	}
	// Analyst 2 still has version 0 on screen and tries to close it.
	r = e.do("POST", "/alerts/al-2", tokAnalyst2, url.Values{"version": {"0"}, "status": {"closed"},
		"disposition": {"false_positive"}, "note": {"looks like the night shift"}, "assignee": {""}, "assignee_was": {""}})
	if r.status != http.StatusConflict {
		t.Fatalf("stale close: %d, want 409 page", r.status)
	}
	mustContain(t, "conflict page", r.body, "Someone else changed this alert while you were looking at it.",
		"<strong>soc-analyst</strong> at 20", "status triaged, assigned to soc-analyst", "You saw version 0; it is now at version 1.",
		`<textarea id="t-note" name="note" rows="3" cols="60">looks like the night shift</textarea>`, // the form is re-offered
		`<option value="false_positive" selected>`, `name="version" value="1"`,
		// Analyst 2 left the assignee alone: the form now offers the current
		// one, so resubmitting does not undo analyst 1's assignment.
		`name="assignee" value="soc-analyst"`, `name="assignee_was" value="soc-analyst"`)
	mustNotContain(t, "conflict page", r.body, `"current_version"`, `{"error"`)
	if v, st, _, _ := e.state("al-2"); v != 1 || st != "triaged" {
		t.Fatalf("the stale change was applied: version %d, %s", v, st)
	}
	// Closing without a disposition is refused with the reason.
	r = e.do("POST", "/alerts/al-2", tokAnalyst2, url.Values{"version": {"1"}, "status": {"closed"},
		"assignee": {"soc-analyst"}, "assignee_was": {"soc-analyst"}})
	if r.status != http.StatusUnprocessableEntity || !strings.Contains(r.body, "Not saved: disposition: required when closing") {
		t.Errorf("close without disposition: %d", r.status)
	}
	// Resubmitted at version 1, it goes through.
	r = e.do("POST", "/alerts/al-2", tokAnalyst2, url.Values{"version": {"1"}, "status": {"closed"},
		"disposition": {"false_positive"}, "note": {"looks like the night shift"}, "assignee": {"soc-analyst"}, "assignee_was": {"soc-analyst"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/alerts/al-2" {
		t.Fatalf("close: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	if v, st, who, d := e.state("al-2"); v != 2 || st != "closed" || who != "soc-analyst" || d != "false_positive" {
		t.Errorf("after close: version %d, %s, %q, %q", v, st, who, d)
	}
	var note, by string
	e.query("SELECT note, changed_by FROM alert_state_history WHERE alert_id = 'al-2' AND version = 2", &note, &by)
	if note != "looks like the night shift" || by != "soc-analyst-2" {
		t.Errorf("history v2: note %q by %q", note, by)
	}
	r = e.do("GET", "/alerts/al-2", tokAnalyst, nil)
	mustContain(t, "alert page after close", r.body, "closed — false positive",
		"<strong>soc-analyst-2</strong>", "<blockquote>looks like the night shift</blockquote>")
	// An analyst is not offered a reopen, and cannot force one.
	mustNotContain(t, "closed alert for an analyst", r.body, `<option value="triaged"`)
	r = e.do("POST", "/alerts/al-2", tokAnalyst, url.Values{"version": {"2"}, "status": {"triaged"}})
	if r.status != http.StatusForbidden || !strings.Contains(r.body, "Not saved: Not allowed: reopening a closed alert needs") {
		t.Errorf("analyst reopen: %d", r.status)
	}
	// A privacy officer is offered it.
	mustContain(t, "closed alert for a privacy officer", e.do("GET", "/alerts/al-2", tokPO, nil).body, `<option value="triaged"`)
}

func TestBulkAssignAndClose(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/queue/bulk", tokAnalyst, url.Values{"action": {"assign"}, "assignee": {"dana"},
		"alert": {"al-1", "al-3"}, "version.al-1": {"0"}, "version.al-3": {"0"}, "return": {"/queue"}})
	if r.status != http.StatusOK {
		t.Fatalf("bulk assign: %d\n%s", r.status, r.body)
	}
	mustContain(t, "bulk assign", r.body, "<h1>Bulk assign: 2 of 2 done</h1>")
	for _, id := range []string{"al-1", "al-3"} {
		if v, st, who, _ := e.state(id); v != 1 || st != "new" || who != "dana" {
			t.Errorf("%s after bulk assign: version %d, %s, %q", id, v, st, who)
		}
	}
	// Bulk close: al-1 at the version seen, al-3 with a stale one.
	r = e.do("POST", "/queue/bulk", tokAnalyst, url.Values{"action": {"close"}, "disposition": {"duplicate"},
		"alert": {"al-1", "al-3"}, "version.al-1": {"1"}, "version.al-3": {"0"}})
	mustContain(t, "bulk close", r.body, "<h1>Bulk close: 1 of 2 done</h1>", "closed, assigned to dana, duplicate (version 2)",
		"changed by someone else first; left as it is", "<strong>soc-analyst</strong> at")
	if _, st, _, d := e.state("al-1"); st != "closed" || d != "duplicate" {
		t.Errorf("al-1 after bulk close: %s %s", st, d)
	}
	if v, st, _, _ := e.state("al-3"); v != 1 || st != "new" {
		t.Errorf("al-3 (stale) after bulk close: version %d %s", v, st)
	}
	if r := e.do("POST", "/queue/bulk", tokAnalyst, url.Values{"action": {"close"}, "alert": {"al-4"}, "version.al-4": {"0"}}); r.status != http.StatusBadRequest {
		t.Errorf("bulk close without disposition: %d, want 400", r.status)
	}
	// The queue now counts them.
	mustContain(t, "queue", e.do("GET", "/queue?status=all", tokAnalyst, nil).body,
		`<span class="n">3</span> new`, `<span class="n">1</span> closed`)
}

func TestNewAlertsBanner(t *testing.T) {
	e := newEnv(t)
	// The fixture's alerts were written before this instant.
	time.Sleep(5 * time.Millisecond)
	since := strconv.FormatInt(time.Now().UnixMilli(), 10)
	poll := "/queue/new?severity=high&since=" + since
	req := func() resp {
		req, _ := http.NewRequest("GET", e.ts.URL+poll, nil)
		req.Header.Set("Authorization", "Bearer "+tokAnalyst)
		req.Header.Set("HX-Request", "true")
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		r := resp{status: res.StatusCode, header: res.Header, body: string(b)}
		e.checkPage("GET "+poll, r)
		return r
	}
	r := req()
	if r.status != http.StatusOK || strings.Contains(r.body, "new or updated") || strings.Contains(r.body, "<html") {
		t.Fatalf("poll before any new alert: %d %q", r.status, r.body)
	}
	mustContain(t, "poll fragment", r.body, `hx-trigger="every 10s"`)
	// A new high alert and a new low one arrive.
	time.Sleep(5 * time.Millisecond)
	b, err := e.conn.PrepareBatch(context.Background(), `INSERT INTO alerts (alert_id, rule, detector, severity, score, facility_id,
 user_id, patient_id, first_seen, last_seen, finding_count, finding_ids, explanation, version)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range [][]any{{"al-9", "high"}, {"al-10", "low"}} {
		if err := b.Append(a[0], "default", "volume", a[1], uint8(60), "fac-nyc", "u-dave", "", tt.TS("2026-03-10T11:00:00Z"),
			tt.TS("2026-03-10T11:00:00Z"), uint32(0), []string{}, "new one", uint64(1)); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	r = req()
	mustContain(t, "poll after a new alert", r.body, "1 alert new or updated since this page was loaded.", `href="/queue?severity=high"`)
	if n := e.auditRows("GET /queue/new", "soc-analyst"); n != 0 {
		t.Errorf("the poll (counts only) wrote %d audit rows", n)
	}
}

// TestNoPatientIDsInURLsOrLogs visits every page as both roles and checks
// every URL they emit (href, src, action, formaction, hx-get …) and the
// logs for the fixture's patient ids and names.
func TestNoPatientIDsInURLsOrLogs(t *testing.T) {
	e := newEnv(t)
	visits := map[string][]string{
		tokAnalyst: {"/queue", "/queue?status=all&department=Oncology", "/alerts/al-1", "/alerts/al-2", "/alerts/al-3", "/alerts/al-4"},
		tokPO:      {"/queue", "/alerts/al-1"}, // a privacy officer's pages offer more (reopen)
	}
	for tok, pages := range visits {
		for _, p := range pages {
			if r := e.do("GET", p, tok, nil); r.status != http.StatusOK {
				t.Errorf("GET %s: %d", p, r.status)
			}
		}
	}
	e.do("POST", "/alerts/al-4", tokAnalyst2, url.Values{"version": {"0"}, "note": {"checked"}})
	e.do("POST", "/alerts/al-4", tokAnalyst, url.Values{"version": {"0"}, "note": {"stale"}}) // conflict page
	e.do("POST", "/queue/bulk", tokAnalyst, url.Values{"action": {"assign"}, "alert": {"al-1", "al-4"}, "version.al-1": {"0"}, "version.al-4": {"0"}})
	if len(e.urls) < 50 {
		t.Fatalf("only %d URLs collected; the scan is not looking at the pages", len(e.urls))
	}
	for _, u := range e.urls {
		for _, phi := range []string{tt.PatientMain, tt.PatientOther, "QX7731", "QX9999"} {
			if strings.Contains(u, phi) || strings.Contains(u, url.QueryEscape(phi)) {
				t.Errorf("a page emits the URL %q, which carries a patient id", u)
			}
		}
	}
	logs := e.logs.String()
	for _, phi := range []string{tt.PatientMain, tt.PatientOther, tt.PatientName, "Vexley", "HYPERLINK"} {
		if strings.Contains(logs, phi) {
			t.Errorf("the logs contain %q", phi)
		}
	}
	if !strings.Contains(logs, `"route":"GET /alerts/{alert_id}"`) {
		t.Errorf("no console access log lines")
	}
}

// BenchmarkQueueClickHouse serves GET /queue end to end (token, ClickHouse
// count and list queries on the dev engine, audit row, rendering) over
// 10 000 open alerts.
//
//	go test -run '^$' -bench QueueClickHouse -benchtime 10x ./pipeline/console/
func BenchmarkQueueClickHouse(b *testing.B) {
	e := newEnv(b)
	ctx := context.Background()
	batch, err := e.conn.PrepareBatch(ctx, `INSERT INTO alerts (alert_id, rule, detector, severity, score, facility_id,
 user_id, patient_id, first_seen, last_seen, finding_count, finding_ids, explanation, version)`)
	if err != nil {
		b.Fatal(err)
	}
	sevs := []string{"critical", "high", "medium", "low"}
	base := tt.TS("2026-03-01T00:00:00Z")
	for i := range 10000 {
		if err := batch.Append(fmt.Sprintf("bq-%05d", i), "default", "no_care_relationship", sevs[i%4], uint8(i%100), "fac-nyc",
			fmt.Sprintf("u-%04d", i%900), fmt.Sprintf("MRN-B%06d", i), base.Add(time.Duration(i)*time.Minute),
			base.Add(time.Duration(i)*time.Minute), uint32(1), []string{}, "bench alert", uint64(1)); err != nil {
			b.Fatal(err)
		}
	}
	if err := batch.Send(); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		req, _ := http.NewRequest("GET", e.ts.URL+"/queue", nil)
		req.Header.Set("Authorization", "Bearer "+tokAnalyst)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		body, _ := io.ReadAll(res.Body)
		res.Body.Close()
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), "10004 alerts, the 500 of highest risk shown") {
			b.Fatalf("GET /queue: %d", res.StatusCode)
		}
	}
}
