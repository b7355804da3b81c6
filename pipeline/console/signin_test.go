package console_test

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/api/oidctest"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// A person signs in through the OpenID provider (code flow + PKCE) and
// works the console with the session cookie alone: the page knows who they
// are, audits the view under their name, and signing out ends it.
func TestConsoleWithOIDCSession(t *testing.T) {
	idp := oidctest.Start(t)
	conn := tt.NewDB(t, tt.NewFixture())
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	cfg := api.DefaultConfig()
	cfg.OIDC = []api.OIDCConfig{idp.Config(base+api.CallbackPath, map[string]api.Role{"EHR-SOC": api.RoleAnalyst})}
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	st := triage.NewStore(conn, cfg.TriageOptions())
	var con *console.Console
	srv, err := api.New(cfg, api.Deps{Store: st, Log: log,
		UI: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.Handler().ServeHTTP(w, r) })})
	if err != nil {
		t.Fatal(err)
	}
	if con, err = console.New(console.DefaultConfig(), console.Deps{Store: st, Auth: srv, Log: log,
		Now: func() time.Time { return tt.TS("2026-03-10T12:00:00Z") }}); err != nil {
		t.Fatal(err)
	}
	hs, err := srv.HTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = hs.Handler
	ts.Start()
	t.Cleanup(ts.Close)

	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	get := func(path string) (int, string) {
		t.Helper()
		res, err := browser.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	if code, _ := get("/queue"); code != http.StatusUnauthorized {
		t.Fatalf("queue before sign-in: %d", code)
	}
	// The sign-in page's button, then the provider, then back: the client follows every redirect.
	code, page := get(api.SignInPath + "?next=%2Fqueue")
	link := ""
	if i := strings.Index(page, `href="`+api.LoginPath); i >= 0 {
		link = strings.ReplaceAll(page[i+6:i+6+strings.Index(page[i+6:], `"`)], "&amp;", "&")
	}
	if code != 200 || link == "" {
		t.Fatalf("sign-in page %d without a provider button:\n%s", code, page)
	}
	idp.SignInAs("soc-sam", "EHR-SOC")
	code, queue := get(link)
	if code != 200 || !strings.Contains(queue, "Signed in as <strong>soc-sam</strong>") || !strings.Contains(queue, `action="/auth/logout"`) {
		t.Fatalf("queue after sign-in: %d\n%s", code, queue)
	}
	var n uint64
	if err := conn.QueryRow(t.Context(),
		"SELECT count() FROM api_audit WHERE channel = 'console' AND endpoint = 'GET /queue' AND principal = 'soc-sam' AND auth_method = 'oidc'").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 1 {
		t.Fatalf("%d audit rows for the signed-in queue view, want 1", n)
	}

	// Sign out (the button's POST, same origin): the queue asks for sign-in again.
	req, _ := http.NewRequest("POST", ts.URL+api.LogoutPath, strings.NewReader(url.Values{}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", ts.URL)
	res, err := browser.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != 200 || res.Request.URL.Path != api.SignInPath {
		t.Fatalf("sign-out ended at %d %s", res.StatusCode, res.Request.URL)
	}
	if code, _ := get("/queue"); code != http.StatusUnauthorized {
		t.Fatalf("queue after sign-out: %d", code)
	}
}
