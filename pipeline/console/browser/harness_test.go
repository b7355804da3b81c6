package browser_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// ScreenshotsEnv, when "1", makes the tests rewrite docs/console/*.png.
const ScreenshotsEnv = "EHRDEV_SCREENSHOTS"

const (
	// browserStartTimeout bounds the launch of the package's browser.
	browserStartTimeout = 90 * time.Second
	// stepTimeout bounds one step (a navigation, a wait for an element, an
	// axe run). Generous because the machine is shared; a step that waits
	// on a DOM condition returns as soon as it holds.
	stepTimeout = 45 * time.Second
)

var (
	browserOnce sync.Once
	browserCtx  context.Context
	browserErr  error
	stopBrowser = func() {}
)

func TestMain(m *testing.M) {
	code := m.Run()
	stopBrowser()
	os.Exit(code)
}

// sharedBrowser returns the context of the package's one browser, started
// on first use.
func sharedBrowser(t testing.TB) context.Context {
	t.Helper()
	path := testenv.Chromium(t)
	browserOnce.Do(func() {
		opts := append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(path),
			chromedp.NoSandbox, // the tests run as root in CI
			chromedp.DisableGPU,
			chromedp.WindowSize(1280, 900),
			chromedp.Flag("lang", "en-US"),
			chromedp.Flag("hide-scrollbars", true),
		)
		allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
		ctx, cancel := chromedp.NewContext(allocCtx)
		// The first Run starts the browser and must not carry a timeout (it
		// would end the browser); bound the start from outside instead.
		started := make(chan error, 1)
		go func() { started <- chromedp.Do(ctx) }()
		select {
		case browserErr = <-started:
		case <-time.After(browserStartTimeout):
			browserErr = fmt.Errorf("the browser did not start in %s", browserStartTimeout)
		}
		browserCtx = ctx
		stopBrowser = func() { cancel(); cancelAlloc() }
	})
	if browserErr != nil {
		t.Fatalf("starting %s: %v", path, browserErr)
	}
	return browserCtx
}

// cspRecorder runs before any script of every page and records the
// Content-Security-Policy violations the page reports and the errors its
// scripts throw (uncaught exceptions and rejected promises).
const cspRecorder = `window.__cspViolations = [];
window.__jsErrors = [];
document.addEventListener('securitypolicyviolation', function (e) {
	window.__cspViolations.push(e.violatedDirective + ' blocked ' + (e.blockedURI || 'inline') +
		(e.sourceFile ? ' at ' + e.sourceFile + ':' + e.lineNumber : ''));
});
window.addEventListener('error', function (e) {
	window.__jsErrors.push((e.message || 'error') + (e.filename ? ' at ' + e.filename + ':' + e.lineno : ''));
});
window.addEventListener('unhandledrejection', function (e) {
	window.__jsErrors.push('unhandled rejection: ' + e.reason);
});`

// session is one person in their own browser context (own cookies) on the
// console at base.
type session struct {
	t    testing.TB
	ctx  context.Context
	base string
}

func newSession(t testing.TB, base string) *session {
	t.Helper()
	ctx, cancel := chromedp.NewContext(sharedBrowser(t), chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	s := &session{t: t, ctx: ctx, base: strings.TrimRight(base, "/")}
	// The first Run opens the tab; it lives as long as ctx, so no timeout
	// on this call either.
	opened := make(chan error, 1)
	go func() {
		opened <- chromedp.Do(ctx, chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := cdp.Call(ctx, tg, page.AddScriptToEvaluateOnNewDocument,
				page.AddScriptToEvaluateOnNewDocumentParams{Source: cspRecorder})
			return err
		}))
	}()
	select {
	case err := <-opened:
		if err != nil {
			t.Fatalf("opening a browser tab: %v", err)
		}
	case <-time.After(stepTimeout):
		t.Fatalf("opening a browser tab took longer than %s", stepTimeout)
	}
	return s
}

// do runs steps with the step timeout and fails the test on error.
func (s *session) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		s.t.Fatalf("%s: %v%s", what, err, s.where())
	}
}

// run runs one action with the step timeout and fails the test on error.
func run[T any](s *session, what string, a chromedp.Action[T]) T {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		s.t.Fatalf("%s: %v%s", what, err, s.where())
	}
	return v
}

// where names the page the session is on, for failure messages.
func (s *session) where() string {
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	loc, err := chromedp.Run(ctx, chromedp.Location())
	if err != nil {
		return ""
	}
	return " (on " + strings.TrimPrefix(loc, s.base) + ")"
}

// useBearer makes every request of this session carry
// "Authorization: Bearer <token>", the way a script calls the API. The
// console accepts it like a session cookie (api.Server.Authenticate); the
// flows use it only where the sign-in pages are not what they test.
func (s *session) useBearer(token string) {
	s.t.Helper()
	s.do("set the bearer token", chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		if _, err := cdp.Call(ctx, tg, network.Enable, network.EnableParams{}); err != nil {
			return err
		}
		_, err := cdp.Call(ctx, tg, network.SetExtraHTTPHeaders,
			network.SetExtraHTTPHeadersParams{Headers: network.Headers{"Authorization": "Bearer " + token}})
		return err
	}))
}

// open navigates to path (relative to base) and returns the HTTP status of
// the document.
func (s *session) open(path string) int64 {
	s.t.Helper()
	resp := run(s, "open "+path, chromedp.NavigateResponse(s.url(path)))
	return resp.Status
}

// submit runs a step that causes a navigation (a form submit, a link) and
// returns the HTTP status of the new document.
func (s *session) submit(what string, step chromedp.Action[chromedp.Void]) int64 {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, stepTimeout)
	defer cancel()
	resp, err := chromedp.RunResponse(ctx, step)
	if err != nil {
		s.t.Fatalf("%s: %v%s", what, err, s.where())
	}
	return resp.Status
}

func (s *session) url(path string) string {
	if strings.HasPrefix(path, "http://") || strings.HasPrefix(path, "https://") {
		return path
	}
	return s.base + path
}

// text waits for the element matched by css and returns its visible text.
func (s *session) text(css string) string {
	s.t.Helper()
	return run(s, "text of "+css, chromedp.Text(chromedp.CSS(css), chromedp.NodeVisible))
}

// waitText waits until the element matched by css contains want (htmx
// swaps, live updates) and returns its text.
func (s *session) waitText(css, want string) string {
	s.t.Helper()
	ctx, cancel := context.WithTimeout(s.ctx, stepTimeout)
	defer cancel()
	js := fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e && e.innerText.includes(%q) ? e.innerText : false })()`, css, want)
	got, err := chromedp.Run(ctx, chromedp.Poll[string](js, chromedp.WithPollingMutation()))
	if err != nil {
		last, _ := chromedp.Run(s.ctx, chromedp.Evaluate[string](fmt.Sprintf(`(() => { const e = document.querySelector(%q); return e ? e.innerText : '(no element)' })()`, css)))
		s.t.Fatalf("waiting for %q in %s: %v; it holds %q%s", want, css, err, last, s.where())
	}
	return got
}

// count returns how many elements match css now (no wait).
func (s *session) count(css string) int {
	s.t.Helper()
	return run(s, "count "+css, chromedp.Evaluate[int](fmt.Sprintf(`document.querySelectorAll(%q).length`, css)))
}

// a11yViolation is one axe-core rule that failed on a page.
type a11yViolation struct {
	ID     string   `json:"id"`
	Impact string   `json:"impact"`
	Help   string   `json:"help"`
	Nodes  []string `json:"nodes"`
}

func (v a11yViolation) String() string {
	return fmt.Sprintf("%s (%s: %s) on %s", v.ID, v.Impact, v.Help, strings.Join(v.Nodes, ", "))
}

// axeRun runs axe-core on the whole document and keeps the serious and
// critical violations, with at most five nodes each.
const axeRun = `axe.run(document, {resultTypes: ['violations']}).then(r => r.violations
	.filter(v => v.impact === 'serious' || v.impact === 'critical')
	.map(v => ({id: v.id, impact: v.impact, help: v.help,
		nodes: v.nodes.slice(0, 5).map(n => n.target.join(' '))})))`

// violations injects axe-core into the current page (once per document)
// and returns its serious and critical violations.
func (s *session) violations() []a11yViolation {
	s.t.Helper()
	loaded := run(s, "look for axe-core", chromedp.Evaluate[bool](`typeof window.axe === 'object'`))
	if !loaded {
		run(s, "inject axe-core", chromedp.Evaluate[chromedp.Void](testenv.Axe(s.t)))
	}
	return run(s, "run axe-core", chromedp.Evaluate[[]a11yViolation](axeRun, chromedp.EvalAwaitPromise))
}

// cspViolations returns the Content-Security-Policy violations the current
// document reported.
func (s *session) cspViolations() []string {
	s.t.Helper()
	return run(s, "read CSP violations", chromedp.Evaluate[[]string](`window.__cspViolations || []`))
}

// jsErrors returns the errors the current document's scripts threw.
func (s *session) jsErrors() []string {
	s.t.Helper()
	return run(s, "read script errors", chromedp.Evaluate[[]string](`window.__jsErrors || []`))
}

// checkPage fails the test when the current page has a serious or critical
// accessibility violation, reported a CSP violation or had a script throw.
// label names the page in the failure.
func (s *session) checkPage(label string) {
	s.t.Helper()
	for _, v := range s.violations() {
		s.t.Errorf("%s: accessibility: %s", label, v)
	}
	for _, v := range s.cspViolations() {
		s.t.Errorf("%s: Content-Security-Policy: %s", label, v)
	}
	for _, v := range s.jsErrors() {
		s.t.Errorf("%s: script error: %s", label, v)
	}
}

// screenshot saves the viewport as docs/console/<name>.png when
// EHRDEV_SCREENSHOTS=1; otherwise it does nothing. With a selector, the
// page is first scrolled so that element shows.
func (s *session) screenshot(name string, scrollTo ...string) {
	s.t.Helper()
	if os.Getenv(ScreenshotsEnv) != "1" {
		return
	}
	for _, css := range scrollTo {
		s.do("scroll to "+css, chromedp.ScrollIntoView(chromedp.CSS(css)))
	}
	png := run(s, "screenshot "+name, chromedp.CaptureScreenshot())
	dir := filepath.Join("..", "..", "..", "docs", "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		s.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		s.t.Fatal(err)
	}
}
