package api_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/api/oidctest"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// signInEnv is an ehrwatch API listener (HTTPServer's handler, so the
// sign-in routes are mounted as in production) plus a /whoami page that
// stands in for a console page: it authenticates with Authenticate. The
// sign-in flow never touches the triage store, so it has no connection.
type signInEnv struct {
	t    *testing.T
	idp  *oidctest.Provider
	srv  *api.Server
	ts   *httptest.Server
	logs *lockedBuffer
	mu   sync.Mutex
	now  time.Time
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

const scriptToken = "s3cret-script-token-for-the-demo"

func newSignInEnv(t *testing.T) *signInEnv {
	t.Helper()
	e := &signInEnv{t: t, idp: oidctest.Start(t), logs: &lockedBuffer{}, now: time.Now()}
	e.ts = httptest.NewUnstartedServer(nil)
	base := "http://" + e.ts.Listener.Addr().String()
	cfg := api.DefaultConfig()
	cfg.Tokens = []api.TokenConfig{{Name: "demo-script", Role: api.RoleAnalyst, Hash: api.HashToken(scriptToken)}}
	cfg.OIDC = []api.OIDCConfig{e.idp.Config(base+api.CallbackPath,
		map[string]api.Role{"EHR-SOC": api.RoleAnalyst, "EHR-Privacy": api.RolePrivacyOfficer})}
	cfg.Session = api.SessionConfig{IdleTimeout: 30 * time.Minute, AbsoluteTimeout: time.Hour, MaxSessions: 100}
	srv, err := api.New(cfg, api.Deps{Store: triage.NewStore(nil, cfg.TriageOptions()), Log: zerolog.New(e.logs), Now: e.clock})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = srv
	hs, err := srv.HTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /whoami", func(w http.ResponseWriter, r *http.Request) {
		p, err := srv.Authenticate(r)
		if err != nil {
			w.WriteHeader(api.AuthErrorStatus(err))
			return
		}
		_ = json.NewEncoder(w).Encode(p)
	})
	mux.Handle("/", hs.Handler)
	e.ts.Config.Handler = mux
	e.ts.Start()
	t.Cleanup(e.ts.Close)
	return e
}

func (e *signInEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *signInEnv) advance(d time.Duration) {
	e.mu.Lock()
	e.now = e.now.Add(d)
	e.mu.Unlock()
	e.idp.Advance(d)
}

// browser is a cookie-jar client that does not follow redirects, so each
// hop can be checked.
func (e *signInEnv) browser() *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		e.t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (e *signInEnv) do(c *http.Client, method, u string, form url.Values, hdr ...string) *http.Response {
	e.t.Helper()
	if strings.HasPrefix(u, "/") {
		u = e.ts.URL + u
	}
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

func (e *signInEnv) whoami(c *http.Client) (int, api.Principal) {
	e.t.Helper()
	resp, err := c.Get(e.ts.URL + "/whoami")
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var p api.Principal
	if resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			e.t.Fatal(err)
		}
	}
	return resp.StatusCode, p
}

func cookie(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// flow runs /auth/login and the provider's authorize step; it returns the
// callback URL the provider redirected to. tamper may rewrite the
// authorization request first.
func (e *signInEnv) flow(c *http.Client, tamper func(q url.Values)) *url.URL {
	e.t.Helper()
	r1 := e.do(c, "GET", api.LoginPath+"?provider=0&next=%2Fwhoami", nil)
	if r1.StatusCode != http.StatusFound {
		e.t.Fatalf("/auth/login: %d", r1.StatusCode)
	}
	authz, err := url.Parse(r1.Header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	q := authz.Query()
	if tamper != nil {
		tamper(q)
		authz.RawQuery = q.Encode()
	}
	r2 := e.do(c, "GET", authz.String(), nil)
	if r2.StatusCode != http.StatusFound {
		e.t.Fatalf("provider authorize: %d", r2.StatusCode)
	}
	cb, err := url.Parse(r2.Header.Get("Location"))
	if err != nil {
		e.t.Fatal(err)
	}
	return cb
}

func TestSignInCodeFlowWithPKCE(t *testing.T) {
	e := newSignInEnv(t)
	b := e.browser()

	// The sign-in page offers the provider and the token form, under the console's CSP.
	page, err := b.Get(e.ts.URL + api.SignInPath)
	if err != nil {
		t.Fatal(err)
	}
	html, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if page.StatusCode != 200 || !strings.Contains(string(html), "Sign in with Test IdP") || !strings.Contains(string(html), `name="token"`) ||
		!strings.Contains(page.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("sign-in page %d %q\n%s", page.StatusCode, page.Header.Get("Content-Security-Policy"), html)
	}
	if code, _ := e.whoami(b); code != http.StatusUnauthorized {
		t.Fatalf("before sign-in: %d", code)
	}

	e.idp.SignInAs("po-jane", "EHR-Privacy", "staff")
	r1 := e.do(b, "GET", api.LoginPath+"?provider=0&next=%2Fwhoami", nil)
	authz, _ := url.Parse(r1.Header.Get("Location"))
	q := authz.Query()
	if q.Get("code_challenge_method") != "S256" || len(q.Get("code_challenge")) != 43 || len(q.Get("nonce")) < 43 || len(q.Get("state")) < 43 ||
		q.Get("response_type") != "code" || !strings.HasPrefix(authz.String(), e.idp.Issuer()) {
		t.Fatalf("authorization request %s", authz)
	}
	lc := cookie(r1, "__Host-ehrwatch_login")
	if lc == nil || !lc.HttpOnly || !lc.Secure || lc.SameSite != http.SameSiteLaxMode || lc.Path != "/" {
		t.Fatalf("login cookie %+v", lc)
	}
	r2 := e.do(b, "GET", authz.String(), nil)
	cb, _ := url.Parse(r2.Header.Get("Location"))
	if cb.Path != api.CallbackPath || cb.Query().Get("code") == "" {
		t.Fatalf("provider redirect %s", cb)
	}
	r3 := e.do(b, "GET", cb.String(), nil)
	if r3.StatusCode != http.StatusSeeOther || r3.Header.Get("Location") != "/whoami" {
		t.Fatalf("callback: %d → %q", r3.StatusCode, r3.Header.Get("Location"))
	}
	sc := cookie(r3, "__Host-ehrwatch_session")
	if sc == nil || !sc.HttpOnly || !sc.Secure || sc.SameSite != http.SameSiteLaxMode || sc.Path != "/" || sc.MaxAge != 0 || len(sc.Value) != 43 {
		t.Fatalf("session cookie %+v", sc)
	}
	if r3.Header.Get("Referrer-Policy") != "no-referrer" {
		t.Fatalf("callback Referrer-Policy %q", r3.Header.Get("Referrer-Policy"))
	}
	code, p := e.whoami(b)
	if code != 200 || p.Name != "po-jane" || p.Method != "oidc" || len(p.Roles) != 1 || p.Roles[0] != api.RolePrivacyOfficer {
		t.Fatalf("after sign-in: %d %+v", code, p)
	}
	if !p.Can(api.PermReports) {
		t.Fatal("privacy officer cannot read reports")
	}

	// The callback URL again (state used, code redeemed): refused.
	if r := e.do(b, "GET", cb.String(), nil); r.StatusCode != http.StatusBadRequest || cookie(r, "__Host-ehrwatch_session") != nil {
		t.Fatalf("replayed callback: %d", r.StatusCode)
	}

	// An analyst in another browser gets the analyst role only.
	b2 := e.browser()
	e.idp.SignInAs("soc-sam", "EHR-SOC")
	e.do(b2, "GET", e.flow(b2, nil).String(), nil)
	if code, p := e.whoami(b2); code != 200 || p.Name != "soc-sam" || len(p.Roles) != 1 || p.Roles[0] != api.RoleAnalyst || p.Can(api.PermReports) {
		t.Fatalf("analyst: %d %+v", code, p)
	}

	// Logs say who signed in, never a code, state, token or session id.
	logs := e.logs.String()
	if !strings.Contains(logs, `"event":"signin"`) || !strings.Contains(logs, `"principal":"po-jane"`) {
		t.Fatalf("no sign-in event in the logs:\n%s", logs)
	}
	for _, secret := range []string{cb.Query().Get("code"), cb.Query().Get("state"), q.Get("nonce"), sc.Value, lc.Value, e.idp.ClientSecret()} {
		if strings.Contains(logs, secret) {
			t.Fatalf("logs carry a secret %q:\n%s", secret, logs)
		}
	}
}

func TestSignInRefusals(t *testing.T) {
	e := newSignInEnv(t)
	refused := func(name string, b *http.Client, u string, want int) {
		t.Helper()
		r := e.do(b, "GET", u, nil)
		if r.StatusCode != want || cookie(r, "__Host-ehrwatch_session") != nil {
			t.Errorf("%s: %d (want %d), session cookie %v", name, r.StatusCode, want, cookie(r, "__Host-ehrwatch_session"))
		}
		if code, _ := e.whoami(b); code != http.StatusUnauthorized {
			t.Errorf("%s: signed in anyway (%d)", name, code)
		}
	}

	t.Run("bad state", func(t *testing.T) {
		b := e.browser()
		cb := e.flow(b, nil)
		q := cb.Query()
		q.Set("state", strings.Repeat("A", 43))
		cb.RawQuery = q.Encode()
		refused("bad state", b, cb.String(), http.StatusBadRequest)
	})
	t.Run("state begun in another browser", func(t *testing.T) {
		// A login CSRF: the attacker's own callback URL, opened in the victim's browser.
		cb := e.flow(e.browser(), nil)
		refused("other browser", e.browser(), cb.String(), http.StatusBadRequest)
	})
	t.Run("replayed code", func(t *testing.T) {
		b := e.browser()
		cb := e.flow(b, nil)
		e.do(b, "GET", cb.String(), nil) // redeems the code
		// A new sign-in in a fresh browser, ended with the old code.
		b2 := e.browser()
		cb2 := e.flow(b2, nil)
		q := cb2.Query()
		q.Set("code", cb.Query().Get("code"))
		cb2.RawQuery = q.Encode()
		refused("replayed code", b2, cb2.String(), http.StatusUnauthorized)
	})
	t.Run("code injected into another sign-in (PKCE verifier mismatch)", func(t *testing.T) {
		victim := e.flow(e.browser(), nil) // a code the victim never redeemed
		b := e.browser()
		cb := e.flow(b, nil)
		q := cb.Query()
		q.Set("code", victim.Query().Get("code"))
		cb.RawQuery = q.Encode()
		refused("injected code", b, cb.String(), http.StatusUnauthorized)
	})
	t.Run("missing PKCE verifier", func(t *testing.T) {
		// The provider refuses to redeem a code without the verifier: a
		// stolen code is useless without the browser's sign-in.
		cb := e.flow(e.browser(), nil)
		resp, err := http.PostForm(e.idp.TokenEndpoint(), url.Values{"grant_type": {"authorization_code"},
			"code": {cb.Query().Get("code")}, "client_id": {e.idp.ClientID()}, "client_secret": {e.idp.ClientSecret()},
			"redirect_uri": {e.ts.URL + api.CallbackPath}})
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK || strings.Contains(string(body), "id_token") {
			t.Fatalf("code redeemed without the PKCE verifier: %d %s", resp.StatusCode, body)
		}
	})
	t.Run("wrong nonce", func(t *testing.T) {
		b := e.browser()
		cb := e.flow(b, func(q url.Values) { q.Set("nonce", "not-the-nonce-of-this-sign-in") })
		refused("wrong nonce", b, cb.String(), http.StatusUnauthorized)
	})
	t.Run("provider error", func(t *testing.T) {
		b := e.browser()
		cb := e.flow(b, nil)
		q := cb.Query()
		q.Del("code")
		q.Set("error", "access_denied")
		cb.RawQuery = q.Encode()
		refused("access denied", b, cb.String(), http.StatusUnauthorized)
	})
	t.Run("unknown provider and open redirect", func(t *testing.T) {
		b := e.browser()
		if r := e.do(b, "GET", api.LoginPath+"?provider=7", nil); r.StatusCode != http.StatusNotFound {
			t.Errorf("unknown provider: %d", r.StatusCode)
		}
		e.idp.SignInAs("soc-sam", "EHR-SOC")
		r1 := e.do(b, "GET", api.LoginPath+"?provider=0&next=%2F%2Fevil.example%2Fx", nil)
		r2 := e.do(b, "GET", r1.Header.Get("Location"), nil)
		r3 := e.do(b, "GET", r2.Header.Get("Location"), nil)
		if r3.StatusCode != http.StatusSeeOther || r3.Header.Get("Location") != "/" {
			t.Errorf("next=//evil.example: %d → %q", r3.StatusCode, r3.Header.Get("Location"))
		}
	})
	logs := e.logs.String()
	for _, reason := range []string{"unknown, used or expired state", "state not begun in this browser", "code exchange failed: invalid_grant", "nonce does not match", "identity provider: access_denied"} {
		if !strings.Contains(logs, reason) {
			t.Errorf("logs lack %q:\n%s", reason, logs)
		}
	}
}

func TestSessionLifetimeAndLogout(t *testing.T) {
	e := newSignInEnv(t)
	signIn := func() *http.Client {
		b := e.browser()
		e.idp.SignInAs("po-jane", "EHR-Privacy")
		if r := e.do(b, "GET", e.flow(b, nil).String(), nil); r.StatusCode != http.StatusSeeOther {
			t.Fatalf("sign-in: %d", r.StatusCode)
		}
		return b
	}

	// Idle timeout (30m).
	b := signIn()
	e.advance(29 * time.Minute)
	if code, _ := e.whoami(b); code != 200 {
		t.Fatalf("29m idle: %d", code)
	}
	e.advance(31 * time.Minute)
	if code, _ := e.whoami(b); code != http.StatusUnauthorized {
		t.Fatalf("31m idle: %d", code)
	}

	// Absolute timeout (1h), however busy.
	b = signIn()
	for range 2 {
		e.advance(25 * time.Minute)
		if code, _ := e.whoami(b); code != 200 {
			t.Fatalf("busy session ended early: %d", code)
		}
	}
	e.advance(15 * time.Minute)
	if code, _ := e.whoami(b); code != http.StatusUnauthorized {
		t.Fatalf("past the absolute timeout: %d", code)
	}

	// Logout ends the session on the server: the old cookie value no longer works.
	b = signIn()
	u, _ := url.Parse(e.ts.URL)
	old := b.Jar.Cookies(u)
	// A cross-site POST (another site's form) is refused by CrossOriginProtection.
	if r := e.do(b, "POST", api.LogoutPath, url.Values{}, "Sec-Fetch-Site", "cross-site"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-site logout: %d", r.StatusCode)
	}
	if code, _ := e.whoami(b); code != 200 {
		t.Fatalf("after refused logout: %d", code)
	}
	r := e.do(b, "POST", api.LogoutPath, url.Values{}, "Sec-Fetch-Site", "same-origin")
	if r.StatusCode != http.StatusSeeOther || cookie(r, "__Host-ehrwatch_session") == nil || cookie(r, "__Host-ehrwatch_session").MaxAge >= 0 {
		t.Fatalf("logout: %d %v", r.StatusCode, r.Cookies())
	}
	replay := e.browser()
	replay.Jar.SetCookies(u, old)
	if code, _ := e.whoami(replay); code != http.StatusUnauthorized {
		t.Fatalf("session cookie still valid after logout: %d", code)
	}
	if !strings.Contains(e.logs.String(), `"event":"signout"`) {
		t.Fatal("no sign-out event in the logs")
	}
}

func TestTokenSignInForm(t *testing.T) {
	e := newSignInEnv(t)
	b := e.browser()
	r := e.do(b, "POST", api.SignInPath, url.Values{"token": {"wrong-token"}, "next": {"/queue"}})
	if r.StatusCode != http.StatusUnauthorized || cookie(r, "__Host-ehrwatch_session") != nil {
		t.Fatalf("wrong token: %d", r.StatusCode)
	}
	r = e.do(b, "POST", api.SignInPath, url.Values{"token": {scriptToken}, "next": {"/queue"}}, "Origin", e.ts.URL)
	if r.StatusCode != http.StatusSeeOther || r.Header.Get("Location") != "/queue" || cookie(r, "__Host-ehrwatch_session") == nil {
		t.Fatalf("token sign-in: %d %q", r.StatusCode, r.Header.Get("Location"))
	}
	if code, p := e.whoami(b); code != 200 || p.Name != "demo-script" || p.Method != "token" || p.Roles[0] != api.RoleAnalyst {
		t.Fatalf("token session: %d %+v", code, p)
	}
	// Another site's form cannot sign a browser in (login CSRF).
	if r := e.do(e.browser(), "POST", api.SignInPath, url.Values{"token": {scriptToken}}, "Origin", "https://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Fatalf("cross-origin token sign-in: %d", r.StatusCode)
	}
	if strings.Contains(e.logs.String(), scriptToken) {
		t.Fatal("the token is in the logs")
	}
	// A bearer token still wins over the cookie, and a bad one is not rescued by it.
	req, _ := http.NewRequest("GET", e.ts.URL+"/whoami", nil)
	req.Header.Set("Authorization", "Bearer nope")
	resp, err := b.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bad bearer with a good cookie: %d", resp.StatusCode)
	}
}

// A bearer access token from the provider is verified with the keys its
// discovery document names (no jwks_* configured).
func TestBearerTokenFromDiscoveredIssuer(t *testing.T) {
	e := newSignInEnv(t)
	var meta struct {
		Authorization string `json:"authorization_endpoint"`
		Token         string `json:"token_endpoint"`
	}
	resp, err := http.Get(e.idp.Issuer() + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	err = json.NewDecoder(resp.Body).Decode(&meta)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	e.idp.SignInAs("svc-reporting", "EHR-SOC")
	redirect := e.ts.URL + api.CallbackPath
	authz := meta.Authorization + "?" + url.Values{"client_id": {e.idp.ClientID()}, "response_type": {"code"},
		"scope": {"openid groups"}, "state": {"s"}, "redirect_uri": {redirect}}.Encode()
	r := e.do(e.browser(), "GET", authz, nil)
	cb, _ := url.Parse(r.Header.Get("Location"))
	tr, err := http.PostForm(meta.Token, url.Values{"grant_type": {"authorization_code"}, "code": {cb.Query().Get("code")},
		"client_id": {e.idp.ClientID()}, "client_secret": {e.idp.ClientSecret()}, "redirect_uri": {redirect}})
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	err = json.NewDecoder(tr.Body).Decode(&tok)
	tr.Body.Close()
	if err != nil || tok.AccessToken == "" {
		t.Fatalf("token response %d: %v", tr.StatusCode, err)
	}
	req, _ := http.NewRequest("GET", e.ts.URL+"/whoami", nil)
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var p api.Principal
	_ = json.NewDecoder(res.Body).Decode(&p)
	res.Body.Close()
	// mockoidc's access tokens carry no groups: authenticated, no role.
	if res.StatusCode != 200 || p.Name != "svc-reporting" || p.Method != "oidc" || len(p.Roles) != 0 {
		t.Fatalf("bearer access token: %d %+v", res.StatusCode, p)
	}
	// The same token, tampered, is refused.
	req.Header.Set("Authorization", "Bearer "+tok.AccessToken[:len(tok.AccessToken)-4]+"AAAA")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusUnauthorized {
		t.Fatalf("tampered access token: %d", res.StatusCode)
	}
}

func TestSignInAgainEndsThePreviousSession(t *testing.T) {
	e := newSignInEnv(t)
	b := e.browser()
	if r := e.do(b, "POST", api.SignInPath, url.Values{"token": {scriptToken}}); r.StatusCode != http.StatusSeeOther {
		t.Fatalf("token sign-in: %d", r.StatusCode)
	}
	u, _ := url.Parse(e.ts.URL)
	first := b.Jar.Cookies(u)
	e.idp.SignInAs("po-jane", "EHR-Privacy")
	e.do(b, "GET", e.flow(b, nil).String(), nil)
	if code, p := e.whoami(b); code != 200 || p.Name != "po-jane" {
		t.Fatalf("second sign-in: %d %+v", code, p)
	}
	if after := b.Jar.Cookies(u); len(after) != 1 || len(first) != 1 || after[0].Value == first[0].Value {
		t.Fatalf("session id not renewed: %v → %v", first, after)
	}
	old := e.browser()
	old.Jar.SetCookies(u, first)
	if code, _ := e.whoami(old); code != http.StatusUnauthorized {
		t.Fatalf("the previous session still works: %d", code)
	}
}
