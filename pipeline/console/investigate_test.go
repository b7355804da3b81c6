package console_test

import (
	"context"
	"encoding/csv"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// auditRow is one api_audit row as the tests check it.
type auditRow struct {
	principal, channel, method, endpoint, patient, user, params string
	patients                                                    []string
	status                                                      uint16
	rows                                                        uint32
}

func (e *env) audits(endpoint string) []auditRow {
	e.t.Helper()
	rows, err := e.conn.Query(context.Background(), `SELECT principal, channel, method, endpoint, patient_id, user_id, params,
 patients_returned, status, rows FROM api_audit WHERE endpoint = ? ORDER BY at`, endpoint)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.principal, &a.channel, &a.method, &a.endpoint, &a.patient, &a.user, &a.params, &a.patients, &a.status, &a.rows); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

func (e *env) count(q string, args ...any) uint64 {
	e.t.Helper()
	var n uint64
	if err := e.conn.QueryRow(context.Background(), q, args...).Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func period(extra ...string) url.Values {
	v := url.Values{"patient_id": {tt.PatientMain}, "from": {"2026-03-01"}, "to": {"2026-04-01"}}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return v
}

// section returns the HTML of the element with id (up to its closing tag
// name), for assertions on one table.
func section(t *testing.T, page, id, tag string) string {
	t.Helper()
	i := strings.Index(page, `id="`+id+`"`)
	if i < 0 {
		t.Fatalf("page has no #%s", id)
	}
	j := strings.Index(page[i:], "</"+tag+">")
	if j < 0 {
		t.Fatalf("#%s is not closed", id)
	}
	return page[i : i+j]
}

func mustStatus(t *testing.T, what string, r resp, want int) {
	t.Helper()
	if r.status != want {
		t.Fatalf("%s: %d, want %d\n%s", what, r.status, want, r.body)
	}
}

// TestInvestigationPagesRefuseAnalysts: every privacy-office page and
// action answers an analyst with the server-side 403 page, shows no data
// and changes nothing.
func TestInvestigationPagesRefuseAnalysts(t *testing.T) {
	e := newEnv(t)
	for _, c := range []struct {
		method, path string
		form         url.Values
	}{
		{"GET", "/cases", nil},
		{"POST", "/cases", url.Values{"title": {"x"}, "alert_id": {"al-1"}}},
		{"GET", "/cases/case-x", nil},
		{"POST", "/cases/case-x", url.Values{"version": {"1"}, "note": {"x"}}},
		{"POST", "/cases/case-x/alerts", url.Values{"version": {"1"}, "alert_id": {"al-2"}}},
		{"POST", "/cases/case-x/alerts/remove", url.Values{"version": {"1"}, "alert_id": {"al-2"}}},
		{"GET", "/patients", nil},
		{"POST", "/patients", period()},
		{"GET", "/patients/h/abc", nil},
		{"POST", "/patients/export.csv", period()},
		{"POST", "/patients/print", period()},
		{"GET", "/users", nil},
		{"GET", "/users/u-bob?from=2026-03-01&to=2026-04-01", nil},
		{"GET", "/allowlist", nil},
		{"POST", "/allowlist", url.Values{"user_id": {"u-bob"}, "detector": {"*"}, "reason": {"r"}, "owner": {"o"}, "expires_at": {"2099-01-01"}}},
		{"POST", "/allowlist/allow-x/expire", url.Values{"updated_at": {"2026-01-01T00:00:00Z"}}},
		{"POST", "/allowlist/allow-x/remove", url.Values{"updated_at": {"2026-01-01T00:00:00Z"}}},
	} {
		r := e.do(c.method, c.path, tokAnalyst, c.form)
		if r.status != http.StatusForbidden || !strings.Contains(r.body, "Not allowed") || strings.Contains(r.body, tt.PatientMain) ||
			strings.Contains(r.body, "Marchetti") {
			t.Errorf("%s %s as analyst: %d\n%s", c.method, c.path, r.status, r.body)
		}
		if r := e.do(c.method, c.path, "", c.form); r.status != http.StatusUnauthorized {
			t.Errorf("%s %s anonymous: %d", c.method, c.path, r.status)
		}
	}
	if n := e.count("SELECT count() FROM case_history") + e.count("SELECT count() FROM allowlist"); n != 0 {
		t.Errorf("refused requests wrote %d rows", n)
	}
	// The analyst's navigation offers none of these pages.
	r := e.do("GET", "/queue", tokAnalyst, nil)
	for _, link := range []string{`href="/cases"`, `href="/patients"`, `href="/users"`, `href="/allowlist"`} {
		if strings.Contains(r.body, link) {
			t.Errorf("analyst's queue links to %s", link)
		}
	}
}

// TestPatientPage: the page, its CSV and its print view, each audited like
// the API's patient report; links to it carry an opaque handle.
func TestPatientPage(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/patients", tokPO, nil)
	mustStatus(t, "lookup", r, 200)
	if !strings.Contains(r.body, `<form class="triage" method="post" action="/patients">`) || strings.Contains(r.body, "care-warning") {
		t.Fatalf("lookup form:\n%s", r.body)
	}

	r = e.do("POST", "/patients", tokPO, period())
	mustStatus(t, "patient page", r, 200)
	if !strings.Contains(r.body, `<strong id="access-count">6</strong> accesses by 4 user(s)`) || !strings.Contains(r.body, "2 unexplained") ||
		!strings.Contains(r.body, "1 break-glass") {
		t.Fatalf("summary:\n%s", r.body)
	}
	users := section(t, r.body, "patient-users", "table")
	if strings.Count(users, "<tr") != 5 || strings.Index(users, "Quillon Marchetti") > strings.Index(users, "Dov Abernethy") {
		t.Errorf("by-user table (alice, most unexplained and most accesses, first):\n%s", users)
	}
	// Timelines: 31 days each; bob's 2026-03-08 is unexplained and break-glass.
	if n := strings.Count(users, `class="tl `); n != 4*31 {
		t.Errorf("%d timeline cells, want %d", n, 4*31)
	}
	if !strings.Contains(users, `class="tl tl-unexplained tl-bg" title="2026-03-08: 1 unexplained, 0 explained, break-glass">!</span>`) {
		t.Errorf("break-glass day not marked:\n%s", users)
	}
	acc := section(t, r.body, "patient-accesses", "table")
	if strings.Count(acc, "<tr") != 7 || !strings.Contains(acc, "2026-03-08 01:59 EST") || !strings.Contains(acc, "yes — care team of encounter enc-1") ||
		!strings.Contains(acc, `<strong class="bad">yes</strong>: =HYPERLINK`) {
		t.Errorf("accesses table:\n%s", acc)
	}
	a := e.audits("POST /patients")
	if len(a) != 1 || a[0].patient != tt.PatientMain || a[0].rows != 6 || a[0].channel != "console" || a[0].principal != "privacy-desk" ||
		a[0].status != 200 || len(a[0].patients) != 1 || !strings.Contains(a[0].params, `"view":"page"`) {
		t.Fatalf("audit of the page: %+v", a)
	}

	// CSV export.
	r = e.do("POST", "/patients/export.csv", tokPO, period())
	mustStatus(t, "csv", r, 200)
	recs, err := csv.NewReader(strings.NewReader(r.body)).ReadAll()
	if err != nil || len(recs) != 7 || !strings.HasPrefix(r.header.Get("Content-Type"), "text/csv") ||
		!strings.Contains(r.header.Get("Content-Disposition"), "attachment") || strings.Contains(r.header.Get("Content-Disposition"), tt.PatientMain) {
		t.Fatalf("csv: %v %v %q", err, r.header, r.body)
	}
	if a := e.audits("POST /patients/export.csv"); len(a) != 1 || a[0].rows != 6 || a[0].patient != tt.PatientMain || !strings.Contains(a[0].params, `"view":"csv"`) {
		t.Fatalf("audit of the csv: %+v", a)
	}

	// Accounting of disclosures, with the print stylesheet.
	r = e.do("POST", "/patients/print", tokPO, period())
	mustStatus(t, "print", r, 200)
	disc := section(t, r.body, "disclosures", "table")
	for _, want := range []string{"Emergency access (break-glass): =HYPERLINK", "Treatment: care team of encounter enc-1",
		"Treatment: encounter enc-1 in Cardiology", "Not documented", "Quillon Marchetti", "nurse", "Cardiology", "print"} {
		if !strings.Contains(disc, want) {
			t.Errorf("disclosures lack %q:\n%s", want, disc)
		}
	}
	if strings.Count(disc, "<tr") != 7 || !strings.Contains(r.body, `href="/static/investigate.css"`) {
		t.Errorf("disclosures:\n%s", r.body)
	}
	css := e.do("GET", "/static/investigate.css", "", nil)
	if css.status != 200 || !strings.Contains(css.body, "@media print") || !strings.Contains(css.body, ".top, .foot") {
		t.Errorf("print stylesheet: %d", css.status)
	}
	if a := e.audits("POST /patients/print"); len(a) != 1 || a[0].rows != 6 || !strings.Contains(a[0].params, `"view":"print"`) {
		t.Fatalf("audit of the print view: %+v", a)
	}

	// A bad form is re-offered, audited nowhere, and names no value.
	r = e.do("POST", "/patients", tokPO, period("from", "2026-05-01"))
	if r.status != http.StatusBadRequest || !strings.Contains(r.body, "must be before to") {
		t.Errorf("bad period: %d\n%s", r.status, r.body)
	}

	// The user page links to this patient's page through a handle.
	r = e.do("GET", "/users/u-bob?from=2026-03-01&to=2026-04-01", tokPO, nil)
	mustStatus(t, "user page", r, 200)
	m := regexp.MustCompile(`href="(/patients/h/[A-Za-z0-9_-]+)\?from=2026-03-01&amp;to=2026-04-01">` + tt.PatientMain + `<`).FindStringSubmatch(r.body)
	if m == nil {
		t.Fatalf("no patient handle link:\n%s", section(t, r.body, "user-patients", "table"))
	}
	r = e.do("GET", m[1]+"?from=2026-03-01&to=2026-04-01", tokPO, nil)
	if r.status != 200 || !strings.Contains(r.body, `<strong id="access-count">6</strong>`) {
		t.Fatalf("patient page through the handle: %d", r.status)
	}
	if r := e.do("GET", "/patients/h/not-a-handle", tokPO, nil); r.status != http.StatusNotFound || !strings.Contains(r.body, "Link expired") {
		t.Errorf("unknown handle: %d", r.status)
	}
	if a := e.audits("GET /patients/h/{handle}"); len(a) != 1 || a[0].patient != tt.PatientMain || a[0].rows != 6 {
		t.Errorf("audit through the handle: %+v", a)
	}

	// Without encounters, the page says why everything is unexplained.
	if err := e.conn.Exec(context.Background(), "TRUNCATE TABLE encounters"); err != nil {
		t.Fatal(err)
	}
	r = e.do("POST", "/patients", tokPO, period())
	if !strings.Contains(r.body, `id="care-warning">Warning: The reference table encounters is empty`) ||
		!strings.Contains(r.body, "6 unexplained") {
		t.Errorf("no warning without encounters:\n%s", r.body)
	}
	if r := e.do("GET", "/patients", tokPO, nil); !strings.Contains(r.body, "The reference table encounters is empty") {
		t.Error("lookup page does not warn")
	}
	e.noPatientInURLs()
}

// noPatientInURLs: no URL any page emitted, and no redirect, names a
// patient; the logs name none either.
func (e *env) noPatientInURLs() {
	e.t.Helper()
	if len(e.urls) < 10 {
		e.t.Fatalf("only %d URLs collected", len(e.urls))
	}
	for _, u := range e.urls {
		for _, p := range []string{tt.PatientMain, tt.PatientOther} {
			if strings.Contains(u, p) || strings.Contains(u, url.QueryEscape(p)) {
				e.t.Errorf("a page emitted a URL with a patient id: %s", u)
			}
		}
	}
	logs := e.logs.String()
	for _, s := range []string{tt.PatientMain, tt.PatientOther, "Marchetti", "Oriana", "HYPERLINK", "note-secret"} {
		if strings.Contains(logs, s) {
			e.t.Errorf("logs contain %q", s)
		}
	}
}

// TestUserPage: heat map against the user's own baseline, patients with
// explanations, alerts and cases; audited with the user and patients.
func TestUserPage(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/users?user_id=u-alice&from=2026-03-09&to=2026-03-10", tokPO, nil)
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/users/u-alice?from=2026-03-09&to=2026-03-10" {
		t.Fatalf("lookup: %d %q", r.status, r.header.Get("Location"))
	}
	r = e.do("GET", "/users/u-alice?from=2026-03-09&to=2026-03-10", tokPO, nil)
	mustStatus(t, "user page", r, 200)
	heat := section(t, r.body, "heat-period", "table")
	// ev-5: Monday 2026-03-09 13:00 UTC = 09:00 EDT.
	if !strings.Contains(heat, `title="Mon 09:00: 1 accesses; baseline 0.0 a week">1</td>`) || strings.Count(heat, "<tr>") != 8 {
		t.Errorf("period heat map:\n%s", heat)
	}
	base := section(t, r.body, "heat-baseline", "table")
	// ev-1 and ev-2 (Sunday 01:59 EST and 03:00 EDT) in the 28 days before: 0.25 a week each.
	if !strings.Contains(base, `title="Sun 01:00: 0.2 accesses a week">0.2</td>`) && !strings.Contains(base, `title="Sun 01:00: 0.3 accesses a week">0.3</td>`) {
		t.Errorf("baseline heat map:\n%s", base)
	}
	if !strings.Contains(r.body, "America/New_York") {
		t.Error("heat map zone not named")
	}
	pats := section(t, r.body, "user-patients", "table")
	if !strings.Contains(pats, ">"+tt.PatientMain+"</a>") || !strings.Contains(pats, "unexplained") {
		t.Errorf("patients:\n%s", pats)
	}
	if al := section(t, r.body, "user-alerts", "table"); !strings.Contains(al, `href="/alerts/al-2"`) {
		t.Errorf("alerts:\n%s", al)
	}
	a := e.audits("GET /users/{user_id}")
	if len(a) != 1 || a[0].user != "u-alice" || a[0].rows != 2 || len(a[0].patients) != 1 || a[0].channel != "console" {
		t.Errorf("audit: %+v", a)
	}
	e.noPatientInURLs()
}

// TestCasePages: open a case from two alerts, work it, lose a race and see
// the other change, close it; the rows are in case_history and cases.
func TestCasePages(t *testing.T) {
	e := newEnv(t)
	r := e.do("POST", "/cases", tokPO, url.Values{"title": {"Bob's March accesses"}, "alert_id": {"al-1, al-3"}})
	if r.status != http.StatusSeeOther || !strings.HasPrefix(r.header.Get("Location"), "/cases/case-") {
		t.Fatalf("create: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	path := r.header.Get("Location")
	id := strings.TrimPrefix(path, "/cases/")
	r = e.do("GET", path, tokPO, nil)
	mustStatus(t, "case page", r, 200)
	alerts := section(t, r.body, "case-alerts", "table")
	if !strings.Contains(alerts, `href="/alerts/al-1"`) || !strings.Contains(alerts, `href="/alerts/al-3"`) || !strings.Contains(r.body, `id="case-status">open`) {
		t.Fatalf("case page:\n%s", r.body)
	}
	if a := e.audits("GET /cases/{case_id}"); len(a) != 1 || a[0].rows != 2 || len(a[0].patients) != 2 || !strings.Contains(a[0].params, id) {
		t.Errorf("audit: %+v", a)
	}
	// Add al-4, then a stale form (version 1) loses and shows who won.
	if r := e.do("POST", path+"/alerts", tokPO, url.Values{"version": {"1"}, "alert_id": {"al-4"}}); r.status != http.StatusSeeOther {
		t.Fatalf("add: %d\n%s", r.status, r.body)
	}
	r = e.do("POST", path, tokPO, url.Values{"version": {"1"}, "status": {"investigating"}, "assignee": {"po-zed"}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "Not saved: the case changed") ||
		!strings.Contains(r.body, "<strong>privacy-desk</strong>") || !strings.Contains(r.body, "added al-4") || !strings.Contains(r.body, `value="po-zed"`) {
		t.Fatalf("conflict page: %d\n%s", r.status, r.body)
	}
	if r := e.do("POST", path, tokPO, url.Values{"version": {"2"}, "status": {"closed"}}); r.status != http.StatusBadRequest || !strings.Contains(r.body, "outcome") {
		t.Fatalf("close without outcome: %d", r.status)
	}
	if r := e.do("POST", path, tokPO, url.Values{"version": {"2"}, "status": {"investigating"}, "assignee": {"po-zed"}}); r.status != http.StatusSeeOther {
		t.Fatalf("investigate: %d\n%s", r.status, r.body)
	}
	if r := e.do("POST", path+"/alerts/remove", tokPO, url.Values{"version": {"3"}, "alert_id": {"al-3"}}); r.status != http.StatusSeeOther {
		t.Fatalf("remove: %d\n%s", r.status, r.body)
	}
	if r := e.do("POST", path, tokPO, url.Values{"version": {"4"}, "status": {"closed"}, "outcome": {"user_educated"}, "note": {"note-secret-8841 spoke to bob"}}); r.status != http.StatusSeeOther {
		t.Fatalf("close: %d\n%s", r.status, r.body)
	}
	r = e.do("GET", path, tokPO, nil)
	hist := section(t, r.body, "case-history", "ol")
	if strings.Count(hist, "<li>") != 5 || !strings.Contains(hist, "removed al-3") || !strings.Contains(hist, "set status closed (user educated)") ||
		!strings.Contains(r.body, `id="case-status">closed — user educated`) {
		t.Errorf("history:\n%s", hist)
	}
	if n := e.count("SELECT count() FROM case_history WHERE case_id = ?", id); n != 5 {
		t.Errorf("%d case_history rows, want 5", n)
	}
	if n := e.count("SELECT count() FROM case_alerts FINAL WHERE case_id = ? AND member", id); n != 2 {
		t.Errorf("%d member alerts, want 2", n)
	}
	r = e.do("GET", "/cases?status=closed", tokPO, nil)
	if !strings.Contains(section(t, r.body, "cases", "table"), id) {
		t.Errorf("case list lacks the case")
	}
	e.noPatientInURLs()
}

// TestAllowlistPage: add, expire, a stale remove that shows the other
// change; allowlist, allowlist_history and api_audit rows written.
func TestAllowlistPage(t *testing.T) {
	e := newEnv(t)
	add := url.Values{"user_id": {"u-bob"}, "patient_id": {tt.PatientMain}, "detector": {"break_glass"},
		"reason": {"covers oncology nights"}, "owner": {"privacy office"}, "expires_at": {"2099-01-01"}}
	bad := url.Values{"user_id": {"u-bob"}, "detector": {"break_glass"}, "reason": {"r"}, "expires_at": {"2099-01-01"}}
	if r := e.do("POST", "/allowlist", tokPO, bad); r.status != http.StatusBadRequest || !strings.Contains(r.body, "Not added: owner") {
		t.Fatalf("entry without owner: %d\n%s", r.status, r.body)
	}
	if r := e.do("POST", "/allowlist", tokPO, add); r.status != http.StatusSeeOther || r.header.Get("Location") != "/allowlist?done=added" {
		t.Fatalf("add: %d %q\n%s", r.status, r.header.Get("Location"), r.body)
	}
	r := e.do("GET", "/allowlist?done=added", tokPO, nil)
	table := section(t, r.body, "allowlist", "table")
	m := regexp.MustCompile(`action="/allowlist/(allow-[0-9a-f-]+)/expire" class="inline"><input type="hidden" name="updated_at" value="([^"]+)"`).FindStringSubmatch(table)
	if m == nil || !strings.Contains(table, "covers oncology nights") || !strings.Contains(table, ">active<") {
		t.Fatalf("allowlist table:\n%s", table)
	}
	entry, version := m[1], m[2]
	if r := e.do("POST", "/allowlist/"+entry+"/expire", tokPO, url.Values{"updated_at": {version}, "note": {"rota ended"}}); r.status != http.StatusSeeOther {
		t.Fatalf("expire: %d\n%s", r.status, r.body)
	}
	r = e.do("POST", "/allowlist/"+entry+"/remove", tokPO, url.Values{"updated_at": {version}})
	if r.status != http.StatusConflict || !strings.Contains(r.body, "<strong>privacy-desk</strong> expired it") {
		t.Fatalf("stale remove: %d\n%s", r.status, r.body)
	}
	r = e.do("GET", "/allowlist", tokPO, nil)
	if !strings.Contains(section(t, r.body, "allowlist", "table"), ">expired<") {
		t.Errorf("entry not shown as expired")
	}
	hist := section(t, r.body, "allowlist-history", "table")
	if strings.Count(hist, "<tr>") != 3 || !strings.Contains(hist, "rota ended") || !strings.Contains(hist, "<td>expired</td>") {
		t.Errorf("history:\n%s", hist)
	}
	if n := e.count("SELECT count() FROM allowlist_history WHERE entry_id = ?", entry); n != 2 {
		t.Errorf("%d allowlist_history rows, want 2", n)
	}
	for ep, want := range map[string]int{"POST /allowlist": 1, "POST /allowlist/{entry_id}/expire": 1} {
		var a []auditRow
		for _, x := range e.audits(ep) {
			if strings.Contains(x.params, `"change"`) {
				a = append(a, x)
			}
		}
		if len(a) != want || a[0].patient != tt.PatientMain || a[0].user != "u-bob" || !strings.Contains(a[0].params, entry) {
			t.Errorf("audit of %s: %+v", ep, a)
		}
	}
	if a := e.audits("GET /allowlist"); len(a) < 2 || a[len(a)-1].rows < 1 || len(a[len(a)-1].patients) != 1 {
		t.Errorf("audit of the list: %+v", a)
	}
	e.noPatientInURLs()
}

// TestAlertPageLinksToPatientByHandle: a privacy officer's alert page links
// to the patient's page through an opaque handle (never the id) and offers
// a case over the alert; an analyst's offers neither.
func TestAlertPageLinksToPatientByHandle(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/alerts/al-1", tokPO, nil)
	mustStatus(t, "alert page", r, 200)
	m := regexp.MustCompile(`<a href="(/patients/h/[A-Za-z0-9_-]+)">` + tt.PatientMain + `</a>`).FindStringSubmatch(r.body)
	if m == nil || !strings.Contains(r.body, `href="/cases?alert_ids=al-1"`) {
		t.Fatalf("alert page links:\n%s", r.body)
	}
	if r := e.do("GET", m[1], tokPO, nil); r.status != 200 || !strings.Contains(r.body, "Who opened patient "+tt.PatientMain) {
		t.Fatalf("handle: %d", r.status)
	}
	if r := e.do("GET", "/cases?alert_ids=al-1", tokPO, nil); !strings.Contains(r.body, `name="alert_id" required value="al-1"`) {
		t.Errorf("case form not prefilled:\n%s", r.body)
	}
	r = e.do("GET", "/alerts/al-1", tokAnalyst, nil)
	if strings.Contains(r.body, "/patients/h/") || strings.Contains(r.body, "/cases?") {
		t.Errorf("analyst's alert page links to privacy-office pages")
	}
	e.noPatientInURLs()
}

// TestQueueGroupsSelectedAlertsIntoCase: the queue's "open a case with the
// selected" takes a privacy officer to the new-case form with the alerts.
func TestQueueGroupsSelectedAlertsIntoCase(t *testing.T) {
	e := newEnv(t)
	r := e.do("GET", "/queue", tokPO, nil)
	if !strings.Contains(r.body, `formaction="/cases/from-selection"`) {
		t.Fatalf("queue offers no case:\n%s", r.body)
	}
	if r := e.do("GET", "/queue", tokAnalyst, nil); strings.Contains(r.body, "/cases/from-selection") {
		t.Error("analyst's queue offers a case")
	}
	r = e.do("POST", "/cases/from-selection", tokPO, url.Values{"alert": {"al-1", "al-4"}, "action": {"assign"}})
	if r.status != http.StatusSeeOther || r.header.Get("Location") != "/cases?alert_ids=al-1%2Cal-4#new-case-h" {
		t.Fatalf("from selection: %d %q", r.status, r.header.Get("Location"))
	}
	r = e.do("GET", "/cases?alert_ids=al-1%2Cal-4", tokPO, nil)
	if !strings.Contains(r.body, `value="al-1,al-4"`) {
		t.Fatalf("form not prefilled:\n%s", r.body)
	}
	r = e.do("POST", "/cases", tokPO, url.Values{"title": {"two of carol's and bob's"}, "alert_id": {"al-1,al-4"}})
	if r.status != http.StatusSeeOther {
		t.Fatalf("create: %d\n%s", r.status, r.body)
	}
	if r := e.do("POST", "/cases/from-selection", tokAnalyst, url.Values{"alert": {"al-1"}}); r.status != http.StatusForbidden {
		t.Errorf("analyst: %d", r.status)
	}
}

// TestPatientPageRefusesWithoutAudit: when api_audit cannot be written the
// patient page, its CSV and its print view show nothing.
func TestPatientPageRefusesWithoutAudit(t *testing.T) {
	e := newEnv(t)
	if err := e.conn.Exec(context.Background(), "DROP TABLE api_audit"); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/patients", "/patients/export.csv", "/patients/print"} {
		r := e.do("POST", p, tokPO, period())
		if r.status != http.StatusInternalServerError || strings.Contains(r.body, "Marchetti") || strings.Contains(r.body, "HYPERLINK") ||
			!strings.Contains(r.body, "Audit unavailable") {
			t.Errorf("%s without audit: %d\n%s", p, r.status, r.body)
		}
	}
	if r := e.do("GET", "/users/u-bob?from=2026-03-01&to=2026-04-01", tokPO, nil); r.status != http.StatusInternalServerError || strings.Contains(r.body, tt.PatientMain) {
		t.Errorf("user page without audit: %d", r.status)
	}
}
