package browser_test

import (
	"net/http"
	"testing"

	"github.com/chromedp/chromedp"
)

// TestEveryPageAccessible opens every console page, as the role that may
// see it, and runs axe-core on it (no serious or critical violation) and
// checks that the page broke none of its Content-Security-Policy. Error
// pages (not signed in, not found, a bulk result) count as pages too.
func TestEveryPageAccessible(t *testing.T) {
	e := newEnv(t)
	analyst := e.as(tokAnalyst)
	anonymous := newSession(t, e.url)

	type page struct {
		name   string
		s      *session
		path   string
		status int64
		// then, when set, runs on the opened page and leads to the page to
		// check (a form post); it returns the status of that page.
		then func(s *session) int64
		// check, when set, asserts on the page.
		check func(t *testing.T, s *session)
	}
	pages := []page{
		{name: "queue", s: analyst, path: "/queue", status: http.StatusOK},
		{name: "queue filtered", s: analyst, path: "/queue?status=all&severity=high&assignee=none&age=24h", status: http.StatusOK},
		{name: "alert with evidence chart", s: analyst, path: "/alerts/al-2", status: http.StatusOK, check: func(t *testing.T, s *session) {
			// console.js draws the chart with uPlot from the data-chart-*
			// attributes (no inline script under the CSP).
			s.do("wait for the chart", chromedp.WaitVisible(chromedp.CSS("figure.evidence .chart canvas")))
			s.waitText("figure.evidence table", "Own baseline")
			s.screenshot("evidence", "#evidence-h")
		}},
		{name: "alert with accesses", s: analyst, path: "/alerts/al-1", status: http.StatusOK},
		{name: "bulk result", s: analyst, path: "/queue", status: http.StatusOK, then: func(s *session) int64 {
			s.do("select two alerts",
				chromedp.Click(chromedp.CSS("#sel-al-2"), chromedp.NodeVisible),
				chromedp.Click(chromedp.CSS("#sel-al-4"), chromedp.NodeVisible),
				chromedp.SetValue(chromedp.CSS("#b-action"), "assign"),
			)
			return s.submit("bulk assign", chromedp.Click(chromedp.CSS("fieldset.bulk button[type=submit]")))
		}},
		{name: "not found", s: analyst, path: "/no-such-page", status: http.StatusNotFound},
		{name: "sign in required", s: anonymous, path: "/queue", status: http.StatusUnauthorized},
		{name: "sign-in", s: anonymous, path: "/signin", status: http.StatusOK, check: func(t *testing.T, s *session) {
			s.waitText(".signin-providers", "Sign in with Test IdP")
			s.screenshot("signin")
		}},
	}
	for _, p := range pages {
		t.Run(p.name, func(t *testing.T) {
			p.s.t = t
			defer func() { p.s.t = e.t }()
			got := p.s.open(p.path)
			if p.then != nil {
				if got != http.StatusOK {
					t.Fatalf("GET %s: status %d", p.path, got)
				}
				got = p.then(p.s)
			}
			if got != p.status {
				t.Fatalf("%s: status %d, want %d", p.name, got, p.status)
			}
			if p.check != nil {
				p.check(t, p.s)
			}
			p.s.checkPage(p.name)
		})
	}
}
