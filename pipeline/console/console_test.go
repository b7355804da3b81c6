package console_test

import (
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

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
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
	t    *testing.T
	conn clickhouse.Conn
	ts   *httptest.Server
	logs *syncBuffer
	// urls collects every URL the pages emitted (href, action, hx-get …).
	urls []string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	conn := tt.NewDB(t, tt.NewFixture())
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

func TestQueueRendersBehindCSP(t *testing.T) {
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
}
