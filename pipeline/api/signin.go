package api

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"github.com/rs/zerolog"
	"golang.org/x/oauth2"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// The console's sign-in routes, served on the API listener next to the
// console (see SignInHandler).
const (
	SignInPath   = "/signin"
	LoginPath    = "/auth/login"
	CallbackPath = "/auth/callback"
	LogoutPath   = "/auth/logout"
)

// loginTTL bounds a sign-in in progress (login → IdP → callback).
const loginTTL = 10 * time.Minute

// The cookies. The __Host- prefix makes the browser insist on Secure,
// Path=/ and no Domain. Browsers treat http://127.0.0.1 and localhost as
// secure contexts, so the demo's plain-HTTP loopback listener gets them too
// (checked with Chromium 156; see docs/console.md).
const (
	sessionCookie = "__Host-ehrwatch_session"
	loginCookie   = "__Host-ehrwatch_login"
)

// sessionStore keeps console sessions in memory, keyed by the SHA-256 of a
// random 256-bit id (the id itself is only in the browser's cookie).
type sessionStore struct {
	idle, abs time.Duration
	max       int
	now       func() time.Time

	mu     sync.Mutex
	m      map[[32]byte]*session
	logins map[[32]byte]*pendingLogin
}

type session struct {
	p                 Principal
	issuer            string
	created, lastSeen time.Time
}

// pendingLogin is a sign-in between /auth/login and /auth/callback.
type pendingLogin struct {
	provider      int
	verifier      string
	nonce, next   string
	created       time.Time
	cookieBinding [32]byte // the login cookie's hash: the flow must end in the browser that began it
}

func newSessionStore(cfg SessionConfig, now func() time.Time) *sessionStore {
	return &sessionStore{idle: cfg.IdleTimeout, abs: cfg.AbsoluteTimeout, max: cfg.MaxSessions, now: now,
		m: map[[32]byte]*session{}, logins: map[[32]byte]*pendingLogin{}}
}

// randomID returns 256 random bits, base64url.
func randomID() string {
	var b [32]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand panics instead)
	return base64.RawURLEncoding.EncodeToString(b[:])
}

func idKey(id string) [32]byte { return sha256.Sum256([]byte(id)) }

func (s *sessionStore) create(p Principal, issuer string) string {
	id := randomID()
	s.mu.Lock()
	defer s.mu.Unlock()
	now := makeRoomLocked(s, s.m, func(v *session) time.Time { return v.created })
	s.m[idKey(id)] = &session{p: p, issuer: issuer, created: now, lastSeen: now}
	return id
}

// makeRoomLocked makes room for one more entry in m (s.m or s.logins): at
// s.max it sweeps what has expired, then drops the oldest entries of m (by
// created) until it holds fewer than s.max. It returns the time it used.
func makeRoomLocked[V any](s *sessionStore, m map[[32]byte]V, created func(V) time.Time) time.Time {
	now := s.now()
	if len(m) >= s.max {
		s.sweepLocked(now)
	}
	for len(m) >= s.max {
		var oldest [32]byte
		var at time.Time
		for k, v := range m {
			if c := created(v); at.IsZero() || c.Before(at) {
				oldest, at = k, c
			}
		}
		delete(m, oldest)
	}
	return now
}

func (s *sessionStore) sweepLocked(now time.Time) {
	for k, v := range s.m {
		if s.expired(v, now) {
			delete(s.m, k)
		}
	}
	for k, v := range s.logins {
		if now.Sub(v.created) > loginTTL {
			delete(s.logins, k)
		}
	}
}

func (s *sessionStore) expired(v *session, now time.Time) bool {
	return now.Sub(v.lastSeen) > s.idle || now.Sub(v.created) > s.abs
}

// lookup returns the session's principal and marks it used; an expired
// session is deleted.
func (s *sessionStore) lookup(id string) (*Principal, bool) {
	if id == "" || len(id) > 64 {
		return nil, false
	}
	k := idKey(id)
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.m[k]
	if v == nil {
		return nil, false
	}
	if s.expired(v, now) {
		delete(s.m, k)
		return nil, false
	}
	v.lastSeen = now
	p := v.p
	p.Roles = slices.Clone(p.Roles)
	return &p, true
}

// remove ends a session and returns its principal (nil if there was none).
func (s *sessionStore) remove(id string) *Principal {
	k := idKey(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.m[k]
	delete(s.m, k)
	if v == nil {
		return nil
	}
	return &v.p
}

// addLogin keeps a sign-in in progress. Beyond max the oldest is dropped
// (a flood of unfinished sign-ins cannot lock people out for loginTTL).
func (s *sessionStore) addLogin(state string, l *pendingLogin) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := makeRoomLocked(s, s.logins, func(v *pendingLogin) time.Time { return v.created })
	l.created = now
	s.logins[idKey(state)] = l
}

// takeLogin returns and forgets the sign-in that state names: a state (and
// so a code) is good for one callback only.
func (s *sessionStore) takeLogin(state string) *pendingLogin {
	if state == "" || len(state) > 64 {
		return nil
	}
	k := idKey(state)
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.logins[k]
	delete(s.logins, k)
	if l == nil || s.now().Sub(l.created) > loginTTL {
		return nil
	}
	return l
}

// browserProvider is one issuer people sign in with.
type browserProvider struct {
	name     string
	verifier *oidcVerifier
	cfg      BrowserConfig
	secret   string
}

// signIn serves /signin and /auth/*.
type signIn struct {
	s          *Server
	providers  []*browserProvider
	client     *http.Client
	sessionCk  string
	loginCk    string
	log        zerolog.Logger
	csrf       *http.CrossOriginProtection
	signInPage *template.Template
}

func newSignIn(s *Server, cfg Config, client *http.Client) (*signIn, error) {
	si := &signIn{s: s, client: client, log: s.log, csrf: http.NewCrossOriginProtection(), signInPage: signInTemplate,
		sessionCk: sessionCookie, loginCk: loginCookie}
	for i, o := range cfg.OIDC {
		if !o.Browser.enabled() {
			continue
		}
		secret, err := credentials.Secret(fmt.Sprintf("api.oidc[%d].browser.client_secret", i), o.Browser.ClientSecret, o.Browser.ClientSecretFile)
		if err != nil {
			return nil, err
		}
		name := o.Browser.Name
		if name == "" {
			if u, err := url.Parse(o.Issuer); err == nil {
				name = u.Host
			}
		}
		si.providers = append(si.providers, &browserProvider{name: name, verifier: s.auth.issuers[o.Issuer], cfg: o.Browser, secret: secret})
	}
	return si, nil
}

func (si *signIn) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+SignInPath, si.page)
	mux.Handle("POST "+SignInPath, si.csrf.Handler(http.HandlerFunc(si.tokenSignIn)))
	mux.HandleFunc("GET "+LoginPath, si.login)
	mux.HandleFunc("GET "+CallbackPath, si.callback)
	mux.Handle("POST "+LogoutPath, si.csrf.Handler(http.HandlerFunc(si.logout)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The callback URL carries the code and state: never in a Referer
		// (SetSecurityHeaders sets Referrer-Policy: no-referrer).
		SetSecurityHeaders(w, r, PageCSP)
		mux.ServeHTTP(w, r)
	})
}

// localNext keeps a post-sign-in target only when it is a path on this
// server ("/queue?status=open"), never another site ("//evil", "/\evil").
func localNext(next string) string {
	if next == "" || len(next) > 1024 || next[0] != '/' || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return "/"
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil {
		return "/"
	}
	return next
}

// SignInURL is where a browser without a session goes; next is the local
// page to return to afterwards.
func SignInURL(next string) string {
	return SignInPath + "?next=" + url.QueryEscape(localNext(next))
}

type signInView struct {
	Providers []providerView
	Next      string
	Message   string
	Status    int
}

type providerView struct {
	Name string
	Link string
}

// messages the sign-in page shows, by code (the query never carries text).
var signInMessages = map[string]string{
	"failed":     "Sign-in failed. Try again, or ask your administrator if it keeps failing.",
	"expired":    "The sign-in took too long or was already used. Try again.",
	"signed_out": "You are signed out.",
	"token":      "That token is not valid.",
}

func (si *signIn) render(w http.ResponseWriter, r *http.Request, status int, msgCode string) {
	next := localNext(r.FormValue("next"))
	v := signInView{Next: next, Message: signInMessages[msgCode], Status: status}
	for i, p := range si.providers {
		v.Providers = append(v.Providers, providerView{Name: p.name,
			Link: LoginPath + "?provider=" + strconv.Itoa(i) + "&next=" + url.QueryEscape(next)})
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	if err := si.signInPage.Execute(w, v); err != nil {
		si.log.Warn().Str("error", err.Error()).Msg("sign-in page")
	}
}

func (si *signIn) page(w http.ResponseWriter, r *http.Request) {
	si.render(w, r, http.StatusOK, r.URL.Query().Get("m"))
}

// event logs a sign-in event: who, how, outcome, and a fixed reason, never
// a token, code, state or cookie value.
func (si *signIn) event(r *http.Request, event, outcome string, p *Principal, provider, reason string) {
	ev := si.log.Info()
	if outcome != "ok" {
		ev = si.log.Warn()
	}
	ev = ev.Str("event", event).Str("outcome", outcome).Str("remote_addr", r.RemoteAddr)
	if p != nil {
		ev = ev.Str("principal", p.Name).Str("auth", p.Method).Str("role", p.roleString())
	}
	if provider != "" {
		ev = ev.Str("provider", provider)
	}
	if reason != "" {
		ev = ev.Str("reason", reason)
	}
	ev.Msg("console sign-in")
}

func (si *signIn) setCookie(w http.ResponseWriter, name, value string, maxAge int) {
	http.SetCookie(w, &http.Cookie{Name: name, Value: value, Path: "/", MaxAge: maxAge,
		HttpOnly: true, Secure: true, SameSite: http.SameSiteLaxMode})
}

func (si *signIn) startSession(w http.ResponseWriter, r *http.Request, p *Principal, issuer string) {
	// A new id at every sign-in (no session fixation); the browser's
	// previous session, if any, ends.
	if c, err := r.Cookie(si.sessionCk); err == nil {
		si.s.sessions.remove(c.Value)
	}
	id := si.s.sessions.create(*p, issuer)
	// No Max-Age: a browser session cookie; the server enforces the
	// idle and absolute timeouts.
	si.setCookie(w, si.sessionCk, id, 0)
}

// tokenSignIn: POST /signin with a static token (or an OIDC JWT), for
// scripts and the demo.
func (si *signIn) tokenSignIn(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxJWTBytes+4096)
	tok := strings.TrimSpace(r.PostFormValue("token"))
	p, err := si.s.auth.authenticateToken(r.Context(), tok)
	var te *tokenError
	switch {
	case errors.As(err, &te) || (err == nil && p == nil):
		si.event(r, "signin", "refused", nil, "token", te.descOr("bad token"))
		si.render(w, r, http.StatusUnauthorized, "token")
		return
	case err != nil:
		si.log.Error().Str("error", err.Error()).Msg("console sign-in: authentication unavailable")
		si.render(w, r, http.StatusServiceUnavailable, "failed")
		return
	}
	si.startSession(w, r, p, "")
	si.event(r, "signin", "ok", p, "token", "")
	http.Redirect(w, r, localNext(r.PostFormValue("next")), http.StatusSeeOther)
}

func (e *tokenError) descOr(def string) string {
	if e == nil {
		return def
	}
	return e.Desc
}

// providerConfig is p's OAuth 2.0 configuration in the sign-in client's
// context; when p's discovery document cannot be had it logs that, answers
// 503 and returns ok false.
func (si *signIn) providerConfig(w http.ResponseWriter, r *http.Request, p *browserProvider) (ctx context.Context, oc *oauth2.Config, ok bool) {
	ctx = oidc.ClientContext(r.Context(), si.client)
	oc, err := si.oauth2Config(ctx, p)
	if err != nil {
		si.log.Error().Str("provider", p.name).Str("error", err.Error()).Msg("console sign-in: identity provider unavailable")
		si.render(w, r, http.StatusServiceUnavailable, "failed")
		return nil, nil, false
	}
	return ctx, oc, true
}

func (si *signIn) oauth2Config(ctx context.Context, p *browserProvider) (*oauth2.Config, error) {
	op, _, err := p.verifier.disc.get(ctx)
	if err != nil {
		return nil, err
	}
	scopes := []string{oidc.ScopeOpenID}
	if len(p.cfg.Scopes) == 0 {
		scopes = append(scopes, "profile", "email")
	}
	for _, sc := range p.cfg.Scopes {
		if !slices.Contains(scopes, sc) {
			scopes = append(scopes, sc)
		}
	}
	return &oauth2.Config{ClientID: p.cfg.ClientID, ClientSecret: p.secret, Endpoint: op.Endpoint(),
		RedirectURL: p.cfg.RedirectURL, Scopes: scopes}, nil
}

// login: GET /auth/login?provider=N&next=/path starts the authorization
// code flow with PKCE (S256), a state bound to this browser by a cookie,
// and a nonce.
func (si *signIn) login(w http.ResponseWriter, r *http.Request) {
	i, err := strconv.Atoi(r.URL.Query().Get("provider"))
	if err != nil || i < 0 || i >= len(si.providers) {
		si.render(w, r, http.StatusNotFound, "failed")
		return
	}
	p := si.providers[i]
	_, oc, ok := si.providerConfig(w, r, p)
	if !ok {
		return
	}
	state, nonce, binding := randomID(), randomID(), randomID()
	l := &pendingLogin{provider: i, verifier: oauth2.GenerateVerifier(), nonce: nonce,
		next: localNext(r.URL.Query().Get("next")), cookieBinding: idKey(binding)}
	si.s.sessions.addLogin(state, l)
	// SameSite=Lax: the IdP's redirect back to /auth/callback is a
	// cross-site top-level GET, which Lax cookies accompany (Strict ones
	// do not).
	si.setCookie(w, si.loginCk, binding, int(loginTTL/time.Second))
	http.Redirect(w, r, oc.AuthCodeURL(state, oauth2.S256ChallengeOption(l.verifier), oidc.Nonce(nonce)), http.StatusFound)
}

// callback: GET /auth/callback?code=…&state=… ends the flow: the state must
// be one this server issued, unused, unexpired and begun in this browser;
// the code is exchanged with the PKCE verifier; the ID token is verified by
// go-oidc and must carry the nonce.
func (si *signIn) callback(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	l := si.s.sessions.takeLogin(q.Get("state"))
	// The login cookie is single-use too.
	si.setCookie(w, si.loginCk, "", -1)
	if l == nil {
		si.event(r, "signin", "refused", nil, "", "unknown, used or expired state")
		si.render(w, r, http.StatusBadRequest, "expired")
		return
	}
	p := si.providers[l.provider]
	c, err := r.Cookie(si.loginCk)
	if err != nil || subtle.ConstantTimeCompare(l.cookieBinding[:], func() []byte { k := idKey(c.Value); return k[:] }()) != 1 {
		si.event(r, "signin", "refused", nil, p.name, "state not begun in this browser")
		si.render(w, r, http.StatusBadRequest, "expired")
		return
	}
	if e := q.Get("error"); e != "" {
		// An OAuth error code (RFC 6749 §4.1.2.1); the description is not logged.
		si.event(r, "signin", "refused", nil, p.name, "identity provider: "+oauthErrorCode(e))
		si.render(w, r, http.StatusUnauthorized, "failed")
		return
	}
	ctx, oc, ok := si.providerConfig(w, r, p)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	tok, err := oc.Exchange(ctx, q.Get("code"), oauth2.VerifierOption(l.verifier))
	if err != nil {
		reason := "code exchange failed"
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode != "" {
			reason += ": " + oauthErrorCode(re.ErrorCode)
		}
		si.event(r, "signin", "refused", nil, p.name, reason)
		si.render(w, r, http.StatusUnauthorized, "failed")
		return
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		si.event(r, "signin", "refused", nil, p.name, "no ID token in the token response")
		si.render(w, r, http.StatusUnauthorized, "failed")
		return
	}
	pr, err := p.verifier.verifyIDToken(ctx, raw, l.nonce)
	if err != nil {
		var te *tokenError
		reason := "ID token refused"
		if errors.As(err, &te) {
			reason += ": " + te.Desc
		}
		si.event(r, "signin", "refused", nil, p.name, reason)
		si.render(w, r, http.StatusUnauthorized, "failed")
		return
	}
	si.startSession(w, r, pr, p.verifier.cfg.Issuer)
	si.event(r, "signin", "ok", pr, p.name, "")
	http.Redirect(w, r, l.next, http.StatusSeeOther)
}

// oauthErrorCode keeps an OAuth error code only when it has the RFC 6749
// syntax and a sane length, so a log line never carries arbitrary text.
func oauthErrorCode(s string) string {
	if len(s) > 64 {
		return "invalid"
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c == '_') {
			return "invalid"
		}
	}
	return s
}

// logout: POST /auth/logout ends the session (server side) and clears the
// cookie. The IdP's own session is left alone.
func (si *signIn) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(si.sessionCk); err == nil {
		if p := si.s.sessions.remove(c.Value); p != nil {
			si.event(r, "signout", "ok", p, "", "")
		}
	}
	si.setCookie(w, si.sessionCk, "", -1)
	http.Redirect(w, r, SignInPath+"?m=signed_out", http.StatusSeeOther)
}

func constantEqual(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// SignInHandler serves /signin and /auth/{login,callback,logout}. The API
// listener (HTTPServer) mounts it; mount it yourself only when serving the
// console elsewhere.
func (s *Server) SignInHandler() http.Handler { return s.signIn.handler() }

// AuthErrorStatus is the HTTP status for an Authenticate error: 401 for no
// or bad credentials, 503 when they cannot be checked now.
func AuthErrorStatus(err error) int {
	if errors.Is(err, ErrNoCredentials) || errors.Is(err, ErrInvalidCredentials) {
		return http.StatusUnauthorized
	}
	return http.StatusServiceUnavailable
}

var signInTemplate = template.Must(template.New("signin").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Sign in · ehrwatch</title>
<link rel="stylesheet" href="/static/console.css">
</head>
<body>
<main class="signin">
<h1>Sign in to ehrwatch</h1>
{{with .Message}}<p role="status" class="signin-message">{{.}}</p>{{end}}
{{if .Providers}}<ul class="signin-providers">
{{range .Providers}}<li><a class="button" href="{{.Link}}">Sign in with {{.Name}}</a></li>
{{end}}</ul>{{end}}
<form method="post" action="/signin" class="signin-token">
<h2>Sign in with a token</h2>
<p>For scripts and the demo: an API token (<code>ehrwatch serve hash-token</code>) or a JWT from a configured issuer.</p>
<input type="hidden" name="next" value="{{.Next}}">
<label for="token">Token</label>
<input id="token" name="token" type="password" autocomplete="off" required>
<button type="submit">Sign in</button>
</form>
</main>
</body>
</html>
`))
