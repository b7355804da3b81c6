package browser_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// TestTriageFlow: an analyst signs in through the OpenID provider
// (authorization code flow with PKCE) and works the queue: assigns an
// alert to themselves from the queue, opens it, closes it with a
// disposition and a note, sees the history and signs out. The pages pass the
// accessibility and CSP checks; the stored triage state and history and the
// api_audit rows are what the clicks should have written.
func TestTriageFlow(t *testing.T) {
	e := newEnv(t)
	const me = "jane.analyst"
	s := e.signIn(me, "EHR-SOC")
	if loc := run(s, "location", chromedp.Location()); !strings.HasSuffix(loc, "/queue") {
		t.Errorf("signing in led to %s, want /queue", loc)
	}
	s.waitText("h1", "Alert queue")
	s.checkPage("queue")
	// The fixture's four alerts, all new, ranked by severity: the critical
	// break-glass alert first.
	if got := s.count("table.queue tbody tr"); got != 4 {
		t.Errorf("queue shows %d rows, want the fixture's 4 alerts", got)
	}
	if first := s.text("table.queue tbody tr:first-child"); !strings.Contains(first, "critical") {
		t.Errorf("first row is %q, want the critical alert first", first)
	}
	s.waitText("ul.counts", "4 new")
	s.screenshot("queue")

	// "Assign to me" on al-1 from the queue: back on the queue, assigned.
	if got := s.submit("assign al-1 to me", chromedp.Click(chromedp.CSS(`button[form="assign-al-1"]`), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("assign to me: status %d", got)
	}
	row := s.waitText("tr:has(#sel-al-1)", me)
	if !strings.Contains(row, "triaged") {
		t.Errorf("al-1's row after assign-to-me: %q, want triaged and assigned to %s", row, me)
	}
	if st := e.state("al-1"); st.Status != triage.StatusTriaged || st.Assignee != me || st.Version != 1 || st.ChangedBy != me {
		t.Errorf("al-1 stored after assign-to-me: %+v", st)
	}

	// Open it, close it as a false positive with a note.
	if got := s.submit("open al-1", chromedp.Click(chromedp.CSS(`tr:has(#sel-al-1) a[href="/alerts/al-1"]`), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("open al-1: status %d", got)
	}
	s.waitText("h1", "Alert:")
	s.waitText("#main", "Why this alert")
	s.checkPage("alert")
	s.screenshot("alert")
	const note = "Covering for the oncology team that night; confirmed with the charge nurse."
	s.do("fill the triage form",
		chromedp.SetValue(chromedp.CSS("#t-status"), "closed"),
		chromedp.SetValue(chromedp.CSS("#t-disposition"), "false_positive"),
		chromedp.SendKeys(chromedp.CSS("#t-note"), note),
	)
	if got := s.submit("save", chromedp.Click(chromedp.CSS("form.triage button[type=submit]"))); got != http.StatusOK {
		t.Fatalf("save: status %d; page: %s", got, s.text("#main"))
	}
	hist := s.waitText("ol.history", note)
	for _, want := range []string{me, "version 1", "version 2"} {
		if !strings.Contains(hist, want) {
			t.Errorf("history on the page lacks %q:\n%s", want, hist)
		}
	}
	if facts := s.text("dl.facts"); !strings.Contains(facts, "closed") || !strings.Contains(facts, "false positive") {
		t.Errorf("alert facts after closing: %q", facts)
	}
	s.checkPage("alert after closing")

	st := e.state("al-1")
	if st.Status != triage.StatusClosed || st.Disposition != triage.DispositionFalsePositive || st.Assignee != me ||
		st.Version != 2 || st.ChangedBy != me || st.Note != note {
		t.Errorf("al-1 stored after closing: %+v", st)
	}
	if h := e.history("al-1"); len(h) != 2 || h[0].Status != triage.StatusTriaged || h[1].Status != triage.StatusClosed || h[1].Note != note {
		t.Errorf("al-1 history stored: %+v", h)
	}

	// Every page that showed alert data wrote its audit row, under the
	// analyst's name, before the data went out.
	for _, want := range []auditRow{
		{Principal: me, AuthMethod: "oidc", Method: "GET", Endpoint: "GET /queue"},
		{Principal: me, AuthMethod: "oidc", Method: "GET", Endpoint: "GET /alerts/{alert_id}", AlertID: "al-1", UserID: "u-bob", Status: 200},
	} {
		if !e.audited(want) {
			t.Errorf("no console audit row like %+v; have %+v", want, e.audit())
		}
	}

	// Signing out ends the session on the server: the queue asks to sign
	// in again.
	if got := s.submit("sign out", chromedp.Click(chromedp.CSS("form.signout button"), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("sign out: status %d", got)
	}
	s.waitText("main", "signed out")
	if got := s.open("/queue"); got != http.StatusUnauthorized && !strings.HasPrefix(strings.TrimPrefix(run(s, "location", chromedp.Location()), e.url), "/signin") {
		t.Errorf("GET /queue after signing out: status %d", got)
	}
	e.assertNoPHIInLogs()
}

// TestConflictShowsTheOtherPersonsChange: two analysts in two browser
// sessions open the same alert; the second to save gets the conflict shown
// as the other analyst's change (who, what, their note), their own input
// kept in the form and nothing of it stored.
func TestConflictShowsTheOtherPersonsChange(t *testing.T) {
	e := newEnv(t)
	// One signs in on the token form (session cookie), the other calls
	// with a bearer token: both are ways into the same pages.
	first, second := e.signInWithToken(tokAnalyst), e.as(tokAnalyst2)
	for _, s := range []*session{first, second} {
		if got := s.open("/alerts/al-3"); got != http.StatusOK {
			t.Fatalf("GET /alerts/al-3: status %d", got)
		}
		s.waitText("dl.facts", "triage version 0")
	}

	// The second analyst hands it to the privacy office's queue (so their
	// own name shows only as who made the change).
	const theirNote = "Break-glass on a ward I cover; handing it to the privacy office."
	second.do("second analyst: hand the alert over",
		chromedp.SetValue(chromedp.CSS("#t-status"), "triaged"),
		chromedp.SetValue(chromedp.CSS("#t-assignee"), "privacy-review"),
		chromedp.SendKeys(chromedp.CSS("#t-note"), theirNote),
	)
	if got := second.submit("second analyst: save", chromedp.Click(chromedp.CSS("form.triage button[type=submit]"))); got != http.StatusOK {
		t.Fatalf("second analyst's save: status %d", got)
	}

	const myNote = "Looks like a false alarm to me."
	first.do("first analyst: close from the stale page",
		chromedp.SetValue(chromedp.CSS("#t-status"), "closed"),
		chromedp.SetValue(chromedp.CSS("#t-disposition"), "false_positive"),
		chromedp.SendKeys(chromedp.CSS("#t-note"), myNote),
	)
	if got := first.submit("first analyst: save", chromedp.Click(chromedp.CSS("form.triage button[type=submit]"))); got != http.StatusConflict {
		t.Fatalf("first analyst's stale save: status %d, want 409", got)
	}
	notice := first.waitText(`[role="alert"]`, "Someone else changed this alert")
	for _, want := range []string{nameAnalyst2, "privacy-review", theirNote, "version 0", "version 1"} {
		if !strings.Contains(notice, want) {
			t.Errorf("conflict notice lacks %q:\n%s", want, notice)
		}
	}
	if strings.Contains(notice, "409") {
		t.Errorf("conflict notice shows a raw status: %q", notice)
	}
	if kept := run(first, "note field", chromedp.Value(chromedp.CSS("#t-note"))); kept != myNote {
		t.Errorf("the first analyst's note in the form is %q, want it kept: %q", kept, myNote)
	}
	first.checkPage("alert with a conflict")
	first.screenshot("conflict", "#triage-h")

	st := e.state("al-3")
	if st.Version != 1 || st.Status != triage.StatusTriaged || st.Assignee != "privacy-review" || st.ChangedBy != nameAnalyst2 {
		t.Errorf("al-3 stored: %+v, want only the second analyst's change", st)
	}
	for _, h := range e.history("al-3") {
		if h.Note == myNote || h.ChangedBy == nameAnalyst {
			t.Errorf("the refused change reached the history: %+v", h)
		}
	}
}

// TestNewAlertsAppearWithoutReload: an open queue learns of an alert
// written after it was rendered (htmx polls /queue/new under the CSP) and
// offers to reload; the reloaded queue has it.
func TestNewAlertsAppearWithoutReload(t *testing.T) {
	e := newEnv(t, withRealClock(), withQueueRefresh(time.Second))
	s := e.as(tokAnalyst)
	if got := s.open("/queue"); got != http.StatusOK {
		t.Fatalf("GET /queue: status %d", got)
	}
	if got := s.count("table.queue tbody tr"); got != 4 {
		t.Fatalf("queue shows %d rows, want 4", got)
	}
	if banner := run(s, "banner", chromedp.Evaluate[string](`document.querySelector('#new-alerts').innerText.trim()`)); banner != "" {
		t.Fatalf("banner before any new alert: %q", banner)
	}
	// The detectors raise a new alert (written as the pipeline writes it).
	if err := e.conn.Exec(context.Background(), `INSERT INTO alerts (alert_id, rule, detector, severity, score, facility_id,
 user_id, patient_id, first_seen, last_seen, finding_count, finding_ids, explanation, version)
 VALUES ('al-5', 'default', 'volume', 'high', 80, 'fac-nyc', 'u-dave', '', now64(3), now64(3), 0, [], 'alert al-5', 1)`); err != nil {
		t.Fatal(err)
	}
	banner := s.waitText("#new-alerts", "new or updated since this page was loaded")
	if !strings.Contains(banner, "1 alert ") {
		t.Errorf("banner %q, want one new alert", banner)
	}
	s.checkPage("queue with the new-alerts banner")
	if got := s.submit("reload the queue", chromedp.Click(chromedp.CSS("#new-alerts a"), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("reload: status %d", got)
	}
	s.waitText("table.queue tbody", "alert al-5")
	if got := s.count("table.queue tbody tr"); got != 5 {
		t.Errorf("reloaded queue shows %d rows, want 5", got)
	}
}
