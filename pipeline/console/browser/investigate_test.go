package browser_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// TestPrivacyOfficerInvestigates: a privacy officer, signed in through
// the OpenID provider, groups two alerts about the same patient into a
// case from the alert page, works the case, opens the user's page, follows
// the alert's opaque link to the patient's page, looks the patient up by
// the form, exports its CSV, prints the accounting of disclosures (to PDF)
// and adds an allowlist entry. Every page passes
// axe-core and its CSP; the rows written are checked in ClickHouse.
func TestPrivacyOfficerInvestigates(t *testing.T) {
	e := newEnv(t)
	const me = "priya.privacy"
	s := e.signIn(me, "EHR-Privacy")

	// Group al-1 and al-4 (both about the same patient) into a case.
	if got := s.open("/alerts/al-1"); got != http.StatusOK {
		t.Fatalf("GET /alerts/al-1: status %d", got)
	}
	if got := s.submit("open a case with this alert", chromedp.Click(chromedp.CSS(`a[href^="/cases?alert_ids="]`), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("new case form: status %d", got)
	}
	if got := run(s, "prefilled alert ids", chromedp.Value(chromedp.CSS("#case-alerts"))); got != "al-1" {
		t.Errorf("the case form holds alert ids %q, want al-1 from the alert page", got)
	}
	s.checkPage("cases")
	const title = "Oncology physician in a cardiology chart"
	s.do("fill the new case",
		chromedp.SendKeys(chromedp.CSS("#case-title"), title),
		chromedp.SetValue(chromedp.CSS("#case-alerts"), "al-1, al-4"),
	)
	if got := s.submit("open the case", chromedp.Click(chromedp.CSS(`form[method="post"][action="/cases"] button[type=submit]`))); got != http.StatusOK {
		t.Fatalf("open case: status %d", got)
	}
	s.waitText("h1", title)
	if got := s.count("#case-alerts tbody tr"); got != 2 {
		t.Errorf("the case lists %d alerts, want 2", got)
	}
	const caseNote = "Interviewing the user's manager on Monday."
	s.do("start investigating",
		chromedp.SetValue(chromedp.CSS("#status"), "investigating"),
		chromedp.SendKeys(chromedp.CSS("#note"), caseNote),
	)
	if got := s.submit("save the case", chromedp.Click(chromedp.CSS(`section[aria-labelledby="work-h"] button[type=submit]`))); got != http.StatusOK {
		t.Fatalf("save case: status %d", got)
	}
	s.waitText("#case-history", caseNote)
	s.waitText("#case-status", "investigating")
	s.checkPage("case")
	s.screenshot("case")
	caseLoc := run(s, "case location", chromedp.Location())
	caseID := caseLoc[strings.LastIndex(caseLoc, "/")+1:]
	cs, err := e.store.Case(context.Background(), caseID)
	if err != nil {
		t.Fatalf("case %s: %v", caseID, err)
	}
	if cs.Title != title || cs.Status != triage.CaseInvestigating || cs.CreatedBy != me || cs.ChangedBy != me || cs.Version != 2 ||
		strings.Join(cs.AlertIDs, ",") != "al-1,al-4" {
		t.Errorf("case stored: %+v", cs)
	}
	if h, err := e.store.CaseHistory(context.Background(), caseID); err != nil || len(h) != 2 || h[0].Action != triage.CaseCreated || h[1].Note != caseNote {
		t.Errorf("case history stored: %+v (err %v)", h, err)
	}

	// The user behind the alerts: their March, their alerts and the case.
	s.open("/users")
	s.checkPage("user lookup")
	if got := s.open("/users/u-bob?from=2026-03-01&to=2026-04-01"); got != http.StatusOK {
		t.Fatalf("user page: status %d", got)
	}
	if got := s.text("#user-accesses"); got != "2" {
		t.Errorf("u-bob's accesses in March: %q, want 2", got)
	}
	if got := s.count("#user-patients tbody tr"); got != 2 {
		t.Errorf("u-bob's patients: %d rows, want 2", got)
	}
	for _, l := range run(s, "patient links", chromedp.Evaluate[[]string](`[...document.querySelectorAll('#user-patients a')].map(a => a.getAttribute('href'))`)) {
		if strings.Contains(l, tt.PatientMain) || strings.Contains(l, tt.PatientOther) {
			t.Errorf("the user page links to a patient by id: %s", l)
		}
	}
	s.waitText("#user-alerts", "al-3")
	s.waitText("#user-cases", title)
	if got := s.count("#heat-period tbody tr"); got != 7 {
		t.Errorf("heat map has %d day rows, want 7", got)
	}
	s.checkPage("user")
	s.screenshot("user")

	// From the alert to the patient's page by the opaque link: no patient
	// id in the address.
	s.open("/alerts/al-1")
	href := run(s, "patient link", chromedp.AttributeValue(chromedp.CSS(`a[href^="/patients/h/"]`), "href", chromedp.NodeVisible))
	if !href.Exists || strings.Contains(href.Value, tt.PatientMain) {
		t.Fatalf("patient link %+v: want an opaque /patients/h/ handle", href)
	}
	if got := s.submit("open the patient's page", chromedp.Click(chromedp.CSS(`a[href^="/patients/h/"]`))); got != http.StatusOK {
		t.Fatalf("patient page by handle: status %d", got)
	}
	s.waitText("h1", "Who opened patient")

	// The same page by the lookup form, for a fixed period: March 2026.
	s.open("/patients")
	s.checkPage("patient lookup")
	s.do("fill the lookup",
		chromedp.SendKeys(chromedp.CSS("#patient-id"), tt.PatientMain),
		chromedp.SetValue(chromedp.CSS("#from"), "2026-03-01"),
		chromedp.SetValue(chromedp.CSS("#to"), "2026-04-01"),
	)
	if got := s.submit("look the patient up", chromedp.Click(chromedp.CSS(`form[action="/patients"] button[type=submit]`))); got != http.StatusOK {
		t.Fatalf("patient page: status %d", got)
	}
	if loc := run(s, "location", chromedp.Location()); strings.Contains(loc, tt.PatientMain) {
		t.Errorf("the patient page's address %s names the patient", loc)
	}
	// The fixture: six accesses in March by four users, two of them not
	// explained by a care relationship, one break-glass.
	if got := s.text("#access-count"); got != "6" {
		t.Errorf("accesses shown: %q, want 6", got)
	}
	summary := s.text("#main > p:nth-of-type(2)")
	for _, want := range []string{"4 user(s)", "4 explained", "2 unexplained", "1 break-glass"} {
		if !strings.Contains(summary, want) {
			t.Errorf("patient summary lacks %q: %q", want, summary)
		}
	}
	if got := s.count("#patient-users tbody tr"); got != 4 {
		t.Errorf("by-user table has %d rows, want 4", got)
	}
	if got := s.count("#patient-accesses tbody tr"); got != 6 {
		t.Errorf("access table has %d rows, want 6", got)
	}
	s.checkPage("patient")
	s.screenshot("patient")

	// Its CSV: the export form's own fields, posted as the browser would.
	csv := run(s, "export the CSV", chromedp.Evaluate[csvResponse](`(async () => {
		const f = document.querySelector('form[action="/patients/export.csv"]');
		const r = await fetch(f.action, {method: 'POST', body: new URLSearchParams(new FormData(f))});
		return {status: r.status, type: r.headers.get('Content-Type') || '', disposition: r.headers.get('Content-Disposition') || '', body: await r.text()};
	})()`, chromedp.EvalAwaitPromise))
	if csv.Status != http.StatusOK || !strings.HasPrefix(csv.Type, "text/csv") || !strings.Contains(csv.Disposition, "attachment") {
		t.Errorf("CSV export: status %d, type %q, disposition %q", csv.Status, csv.Type, csv.Disposition)
	}
	if lines := strings.Split(strings.TrimSpace(csv.Body), "\n"); len(lines) != 7 {
		t.Errorf("CSV has %d lines, want a header and the 6 accesses:\n%s", len(lines), csv.Body)
	}
	// The break-glass reason starts with "=": a spreadsheet must not run it.
	if !strings.Contains(csv.Body, "'=HYPERLINK") {
		t.Errorf("CSV does not neutralise the formula-looking break-glass reason:\n%s", csv.Body)
	}

	// The printable accounting of disclosures, as print media and as PDF.
	if got := s.submit("open the accounting of disclosures", chromedp.Click(chromedp.CSS(`form[action="/patients/print"] button[type=submit]`))); got != http.StatusOK {
		t.Fatalf("print view: status %d", got)
	}
	s.waitText("h1", "Accounting of disclosures")
	if got := s.count("#disclosures tbody tr"); got != 6 {
		t.Errorf("disclosures list %d rows, want 6", got)
	}
	if got := s.text("#disclosure-patient"); got != tt.PatientMain {
		t.Errorf("disclosures for %q", got)
	}
	s.checkPage("accounting of disclosures")
	s.screenshot("disclosures")
	s.do("print media", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: "print"})
		return err
	}))
	if n := run(s, "visible .noprint", chromedp.Evaluate[int](`[...document.querySelectorAll('.noprint')].filter(e => e.offsetParent !== null).length`)); n != 0 {
		t.Errorf("%d .noprint elements show in print media", n)
	}
	pdf := run(s, "print to PDF", func(ctx context.Context, tg *chromedp.Target) ([]byte, error) {
		r, err := cdp.Call(ctx, tg, page.PrintToPDF, page.PrintToPDFParams{})
		return r.Data, err
	})
	if len(pdf) < 1000 || string(pdf[:5]) != "%PDF-" {
		t.Errorf("print to PDF gave %d bytes starting %q", len(pdf), pdf[:min(8, len(pdf))])
	}
	s.do("screen media", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := cdp.Call(ctx, tg, emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{Media: ""})
		return err
	}))

	// An allowlist entry with owner, reason and expiry.
	if got := s.open("/allowlist"); got != http.StatusOK {
		t.Fatalf("GET /allowlist: status %d", got)
	}
	const reason = "Covers the cardiology ward on nights"
	expires := time.Now().UTC().AddDate(0, 3, 0).Format("2006-01-02")
	s.do("fill the entry",
		chromedp.SendKeys(chromedp.CSS("#al-user"), "u-bob"),
		chromedp.SendKeys(chromedp.CSS("#al-detector"), "break_glass"),
		chromedp.SendKeys(chromedp.CSS("#al-reason"), reason),
		chromedp.SendKeys(chromedp.CSS("#al-owner"), "Dr. Night Lead"),
		chromedp.SetValue(chromedp.CSS("#al-expires"), expires),
		chromedp.SendKeys(chromedp.CSS("#al-note"), "Approved by the privacy committee"),
	)
	if got := s.submit("add the entry", chromedp.Click(chromedp.CSS(`form[action="/allowlist"] button[type=submit]`))); got != http.StatusOK {
		t.Fatalf("add allowlist entry: status %d: %s", got, s.text("#main"))
	}
	s.waitText("#allowlist", reason)
	s.waitText("#allowlist-history", me)
	s.checkPage("allowlist")
	s.screenshot("allowlist")
	items, err := e.store.ListAllowlist(context.Background(), false, 100)
	if err != nil {
		t.Fatal(err)
	}
	if len(items) != 1 || items[0].UserID != "u-bob" || items[0].Detector != "break_glass" || items[0].Reason != reason ||
		items[0].Owner != "Dr. Night Lead" || items[0].ExpiresAt.Format("2006-01-02") != expires {
		t.Errorf("allowlist stored: %+v", items)
	} else if h, err := e.store.AllowlistHistory(context.Background(), items[0].EntryID, 10); err != nil || len(h) != 1 ||
		h[0].Change != triage.AllowlistAdded || h[0].ChangedBy != me {
		t.Errorf("allowlist history stored: %+v (err %v)", h, err)
	}

	// The audit trail has each read of patient-level data, under the
	// privacy officer's OIDC identity.
	for _, want := range []auditRow{
		{Principal: me, AuthMethod: "oidc", Endpoint: "GET /patients/h/{handle}", PatientID: tt.PatientMain},
		{Principal: me, AuthMethod: "oidc", Endpoint: "POST /patients", PatientID: tt.PatientMain},
		{Principal: me, AuthMethod: "oidc", Endpoint: "POST /patients/export.csv", PatientID: tt.PatientMain},
		{Principal: me, AuthMethod: "oidc", Endpoint: "POST /patients/print", PatientID: tt.PatientMain},
		{Principal: me, AuthMethod: "oidc", Endpoint: "GET /cases/{case_id}"},
		{Principal: me, AuthMethod: "oidc", Endpoint: "GET /users/{user_id}", UserID: "u-bob"},
		{Principal: me, AuthMethod: "oidc", Endpoint: "POST /allowlist", UserID: "u-bob"},
	} {
		if !e.audited(want) {
			t.Errorf("no console audit row like %+v", want)
		}
	}
	e.assertNoPHIInLogs()
}

type csvResponse struct {
	Status      int    `json:"status"`
	Type        string `json:"type"`
	Disposition string `json:"disposition"`
	Body        string `json:"body"`
}

// TestAnalystCannotOpenPrivacyOfficerPages: an analyst who types the
// address of a privacy officer's page (or posts its form) gets the
// server's 403 page, not the data; nothing of it reaches the audit trail
// as shown. The navigation does not offer those pages either.
func TestAnalystCannotOpenPrivacyOfficerPages(t *testing.T) {
	e := newEnv(t)
	s := e.signIn("sam.analyst", "EHR-SOC")
	nav := s.text(`nav[aria-label="Sections"]`)
	for _, hidden := range []string{"Patients", "Users", "Allowlist"} {
		if strings.Contains(nav, hidden) {
			t.Errorf("an analyst's navigation offers %s: %q", hidden, nav)
		}
	}
	for _, path := range []string{"/patients", "/users", "/users/u-bob", "/allowlist", "/cases"} {
		if got := s.open(path); got != http.StatusForbidden {
			t.Errorf("analyst GET %s: status %d, want 403", path, got)
			continue
		}
		s.waitText("#main", "Not allowed")
		if path == "/patients" {
			s.checkPage("403")
			s.screenshot("forbidden")
		}
	}
	// Posting the patient form from a console page (same origin, the
	// analyst's session) is refused the same way.
	s.open("/queue")
	for _, action := range []string{"/patients", "/patients/export.csv", "/patients/print"} {
		status := run(s, "POST "+action, chromedp.Evaluate[int](`fetch(`+"`"+action+"`"+`, {method: 'POST',
			body: new URLSearchParams({patient_id: '`+tt.PatientMain+`', from: '2026-03-01', to: '2026-04-01'})}).then(r => r.status)`, chromedp.EvalAwaitPromise))
		if status != http.StatusForbidden {
			t.Errorf("analyst POST %s: status %d, want 403", action, status)
		}
	}
	for _, a := range e.audit() {
		if a.PatientID == tt.PatientMain && a.Principal == "sam.analyst" {
			t.Errorf("a refused request left an audit row of a patient read: %+v", a)
		}
	}
}
