// Package api is ehrwatch's HTTP API: the SOC alert queue and triage, and
// the privacy office's reports, as JSON (and CSV) under /api/v1/.
//
// Every endpoint but the OpenAPI document needs a bearer token: a static
// token (configured as its SHA-256 hash) or an OIDC JWT (RS256/ES256,
// verified by go-oidc against the issuer's JWKS). The console's sign-in
// (/signin, /auth/*: OpenID Connect code flow with PKCE, or a token typed
// into a form) opens an in-memory session whose cookie Authenticate
// accepts; the JSON API itself takes bearer tokens only. Roles grant permissions (see
// rolePermissions). Every call that returns patient-level data writes an
// api_audit row first; if that write fails, the call fails.
//
// Logs carry the request id, route pattern, status, caller and row count,
// never the URL, query values, bodies or error text that could quote them
// unredacted.
//
// The web console (pipeline/console) shares the listener: with Deps.UI set,
// HTTPServer routes every path outside /api/ and /healthz to it, and the
// console authenticates its callers with Authenticate and records its
// patient-level reads with Audit (the same api_audit rows, channel
// "console").
package api

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ehrwatch/ehrwatch/schemas"
	"log"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// Prefix is where the API lives.
const Prefix = "/api/v1"

//go:embed openapi.yaml
var openapiYAML []byte

// OpenAPI returns the embedded OpenAPI 3.1 document.
func OpenAPI() []byte { return append([]byte(nil), openapiYAML...) }

// Deps are the API's collaborators.
type Deps struct {
	// Store is *triage.Store, or another implementation of Store.
	Store Store
	Log   zerolog.Logger
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// HTTPClient fetches JWKS documents; default a client with timeouts.
	HTTPClient *http.Client
	// UI, when set, serves every path of the listener that is neither under
	// /api/ nor /healthz (the console, pipeline/console). It does its own
	// authentication (Authenticate), authorisation and audit (Audit).
	UI http.Handler
}

// Server is the API. Mount Handler() into any http.ServeMux (it serves
// paths under /api/v1/), or run it on its own with ListenAndServe.
type Server struct {
	cfg      Config
	store    Store
	cases    CaseStore // nil when the store keeps no cases
	log      zerolog.Logger
	auth     *authenticator
	sessions *sessionStore
	signIn   *signIn
	now      func() time.Time
	routes   []route
	routeMux *http.ServeMux // the routes only: to tell 404 from 405
	mux      *http.ServeMux
	ui       http.Handler
}

// route is one endpoint.
type route struct {
	Method string
	// Path is relative to Prefix, in ServeMux/OpenAPI form ("/alerts/{id}").
	Path string
	// Public routes need no token; the others need Perm ("" = any
	// authenticated caller).
	Public bool
	Perm   Permission
	// Audited routes return patient-level data and write api_audit; the
	// query parameters they accept go into the audit row.
	Audited bool
	// Query lists the query parameters the route accepts; the wrapper
	// refuses any other (and repeated or overlong ones) before the handler
	// runs, which reads them from reqCtx.query.
	Query []string
	// AuditID, on an audited route, is the audit field the path's {id}
	// goes to ("alert_id", or a key of the audit params such as
	// "case_id"), recorded before anything can fail.
	AuditID string
	// Cases routes need the store's CaseStore (501 without it).
	Cases  bool
	handle func(http.ResponseWriter, *http.Request, *reqCtx) error
}

// New builds the API server. The config must be valid (Validate) and
// configure at least one token or OIDC issuer.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := schemas.UnderKey("api", cfg.Validate()); err != nil {
		return nil, err
	}
	if deps.Store == nil {
		return nil, errors.New("api: no store")
	}
	s := &Server{cfg: cfg, store: deps.Store, log: deps.Log, now: deps.Now, ui: deps.UI}
	if s.now == nil {
		s.now = time.Now
	}
	s.cases, _ = deps.Store.(CaseStore)
	client := deps.HTTPClient
	if client == nil {
		client = &http.Client{Timeout: jwksFetchTimeout}
	}
	auth, err := newAuthenticator(cfg, client, s.now, s.log)
	if err != nil {
		return nil, err
	}
	s.auth = auth
	s.sessions = newSessionStore(cfg.Session, s.now)
	if s.signIn, err = newSignIn(s, cfg, client); err != nil {
		return nil, err
	}
	s.routes = []route{
		{Method: "GET", Path: "/openapi.yaml", Public: true, handle: s.handleOpenAPI},
		{Method: "GET", Path: "/me", handle: s.handleMe},
		{Method: "GET", Path: "/alerts", Perm: PermAlertsRead, Audited: true, handle: s.handleListAlerts,
			Query: []string{"status", "severity", "detector", "user_id", "patient_id", "assignee", "from", "to", "limit", "cursor"}},
		{Method: "GET", Path: "/alerts/{id}", Perm: PermAlertsRead, Audited: true, AuditID: "alert_id", handle: s.handleGetAlert},
		{Method: "PATCH", Path: "/alerts/{id}", Perm: PermAlertsTriage, handle: s.handlePatchAlert},
		{Method: "GET", Path: "/alerts/{id}/history", Perm: PermAlertsRead, handle: s.handleHistory},
		{Method: "GET", Path: "/reports/patient-access", Perm: PermReports, Audited: true, handle: s.handlePatientAccess,
			Query: reportQuery("patient_id")},
		{Method: "GET", Path: "/reports/user-activity", Perm: PermReports, Audited: true, handle: s.handleUserActivity,
			Query: reportQuery("user_id")},
	}
	s.routes = append(s.routes, s.caseRoutes()...)
	s.routeMux, s.mux = http.NewServeMux(), http.NewServeMux()
	for _, rt := range s.routes {
		h := s.wrap(rt)
		s.routeMux.Handle(rt.Method+" "+Prefix+rt.Path, h)
		s.mux.Handle(rt.Method+" "+Prefix+rt.Path, h)
	}
	s.mux.HandleFunc("/", s.handleUnmatched)
	return s, nil
}

// Handler serves the API (paths under /api/v1/; anything else is a JSON
// 404). It adds the request id and security headers, recovers panics and
// writes the access log.
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

// Routes lists "METHOD /api/v1/path" for every endpoint.
func (s *Server) Routes() []string {
	out := make([]string, len(s.routes))
	for i, rt := range s.routes {
		out[i] = rt.Method + " " + Prefix + rt.Path
	}
	return out
}

// reqCtx is the per-request state the handlers share.
type reqCtx struct {
	// id is generated by the server for every request: the request id of
	// the response header, the logs and api_audit. clientID is the
	// X-Request-Id the client sent, when well-formed; it goes only to
	// api_audit.client_request_id (never to logs: a client may put
	// anything in it).
	id        string
	clientID  string
	start     time.Time
	route     string
	principal *Principal
	// query holds the route's query parameters (the non-empty ones).
	query   map[string]string
	audit   *triage.AuditRecord
	audited bool
	rows    int
	// sensitive are request values to redact from logged errors.
	sensitive []string
}

type ctxKey struct{}

func rcFrom(ctx context.Context) *reqCtx {
	rc, _ := ctx.Value(ctxKey{}).(*reqCtx)
	return rc
}

var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._-]{8,64}$`)

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	rc := &reqCtx{start: s.now(), route: "unmatched", id: newRequestID()}
	if id := r.Header.Get("X-Request-Id"); requestIDPattern.MatchString(id) {
		rc.clientID = id
	}
	h := w.Header()
	h.Set("X-Request-Id", rc.id)
	if rc.clientID != "" {
		h.Set("X-Client-Request-Id", rc.clientID)
	}
	SetSecurityHeaders(w, r, "default-src 'none'; frame-ancestors 'none'")
	sw := NewStatusWriter(w)
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error().Str("request_id", rc.id).Str("route", rc.route).Str("panic_type", fmt.Sprintf("%T", p)).
				Msg("api handler panicked")
			if !sw.Wrote() {
				writeError(sw, &apiError{Status: http.StatusInternalServerError, Msg: "internal error"}, rc.id)
			}
		}
		s.accessLog(r, rc, sw)
	}()
	s.mux.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rc)))
}

func (s *Server) accessLog(r *http.Request, rc *reqCtx, sw *StatusWriter) {
	status := sw.Status()
	ev := s.log.Info()
	if status >= 500 {
		ev = s.log.Warn()
	}
	ev = ev.Str("request_id", rc.id).Str("method", r.Method).Str("route", rc.route).Int("status", status).
		Dur("duration", s.now().Sub(rc.start)).Int64("bytes", sw.Bytes()).Str("remote_addr", r.RemoteAddr)
	if rc.principal != nil {
		ev = ev.Str("principal", rc.principal.Name).Str("auth", rc.principal.Method).Str("role", rc.principal.roleString())
	}
	if rc.audited {
		ev = ev.Int("rows", rc.rows).Bool("audited", true)
	}
	ev.Msg("api request")
}

// wrap authenticates, authorises, bounds the request and maps errors.
func (s *Server) wrap(rt route) http.HandlerFunc {
	pattern := rt.Method + " " + Prefix + rt.Path
	return func(w http.ResponseWriter, r *http.Request) {
		rc := rcFrom(r.Context())
		rc.route = pattern
		if id := r.PathValue("id"); id != "" {
			rc.sensitive = append(rc.sensitive, id)
		}
		if !rt.Public {
			p, err := s.auth.authenticate(r.Context(), r)
			var te *tokenError
			switch {
			case errors.Is(err, errNoCredentials):
				w.Header().Set("WWW-Authenticate", `Bearer realm="ehrwatch"`)
				writeError(w, &apiError{Status: http.StatusUnauthorized, Msg: "authentication required: send Authorization: Bearer <token>"}, rc.id)
				return
			case errors.As(err, &te):
				w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="ehrwatch", error="invalid_token", error_description=%q`, te.Desc))
				writeError(w, &apiError{Status: http.StatusUnauthorized, Msg: "invalid token: " + te.Desc}, rc.id)
				return
			case err != nil:
				s.log.Error().Str("request_id", rc.id).Err(err).Msg("api authentication unavailable")
				writeError(w, &apiError{Status: http.StatusServiceUnavailable, Msg: "authentication temporarily unavailable"}, rc.id)
				return
			}
			rc.principal = p
			if rt.Audited {
				rc.audit = &triage.AuditRecord{
					RequestID: rc.id, ClientRequestID: rc.clientID, Principal: p.Name, AuthMethod: p.Method, Role: p.roleString(), Channel: "api",
					Method: r.Method, Endpoint: pattern, RemoteAddr: r.RemoteAddr, Params: map[string]string{},
				}
			}
			if rt.Perm != "" && !p.Can(rt.Perm) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="ehrwatch", error="insufficient_scope"`)
				err := &apiError{Status: http.StatusForbidden,
					Msg: fmt.Sprintf("forbidden: needs permission %s, which your role(s) do not grant", rt.Perm)}
				if rc.audit != nil {
					// Record the attempt (with what was asked for) before answering.
					s.recordQueryForAudit(r, rc)
				}
				s.fail(w, r, rc, err)
				return
			}
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.QueryTimeout)
		defer cancel()
		if err := s.prepare(r, rc, rt); err != nil {
			s.fail(w, r, rc, err)
			return
		}
		if err := rt.handle(w, r.WithContext(ctx), rc); err != nil {
			s.fail(w, r, rc, err)
		}
	}
}

// errNoCases answers the cases and allowlist routes of a store without
// them.
var errNoCases = &apiError{Status: http.StatusNotImplemented, Msg: "this store keeps no cases or allowlist"}

// prepare does what every handler needs before its own work: the case
// store's presence, the path id in the audit row, and the query, checked
// against the route's parameters and, on audited routes, recorded in the
// audit row.
func (s *Server) prepare(r *http.Request, rc *reqCtx, rt route) error {
	if rt.Cases && s.cases == nil {
		return errNoCases
	}
	if rt.AuditID != "" && rc.audit != nil {
		if id := r.PathValue("id"); rt.AuditID == "alert_id" {
			rc.audit.AlertID = id
		} else {
			rc.audit.Params[rt.AuditID] = id
		}
	}
	q, err := parseQuery(r, rc, rt.Query...)
	if err != nil {
		return err
	}
	if rt.Audited {
		for k, v := range q {
			s.noteParam(rc, k, v)
		}
	}
	rc.query = q
	return nil
}

// fail answers with an error. On an audited route the failed call is
// audited too (best effort: its failure is logged).
func (s *Server) fail(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	ae, internal := classify(err)
	if internal {
		s.log.Error().Str("request_id", rc.id).Str("route", rc.route).
			Str("error", redact(triage.ErrorText(err), rc.sensitive)).Msg("api request failed")
	}
	if rc.audit != nil && !rc.audited {
		rc.audited = true
		rec := *rc.audit
		rec.Status = ae.Status
		actx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 10*time.Second)
		defer cancel()
		if aerr := s.store.WriteAudit(actx, rec); aerr != nil {
			s.log.Error().Str("request_id", rc.id).Str("route", rc.route).
				Str("error", redact(triage.ErrorText(aerr), rc.sensitive)).Msg("api audit write failed (request already failing)")
		}
	}
	writeError(w, ae, rc.id)
}

// audit writes the audit row of a successful patient-level read. The
// caller must not send any data when it fails.
func (s *Server) audit(ctx context.Context, rc *reqCtx, rows int, patients []string) error {
	if rc.audit == nil {
		return nil
	}
	rec := *rc.audit
	rec.Status = http.StatusOK
	rec.Rows = rows
	rec.PatientsReturned = patients
	rc.rows = rows
	if err := s.store.WriteAudit(ctx, rec); err != nil {
		rc.audited = true // do not try again in fail
		s.log.Error().Str("request_id", rc.id).Str("route", rc.route).
			Str("error", redact(triage.ErrorText(err), rc.sensitive)).Msg("api audit write failed; refusing to return unaudited data")
		return &apiError{Status: http.StatusInternalServerError, Msg: "could not record the audit trail; no data returned"}
	}
	rc.audited = true
	return nil
}

// handleUnmatched answers 405 (with Allow) when the path exists with other
// methods, else 404, both as JSON.
func (s *Server) handleUnmatched(w http.ResponseWriter, r *http.Request) {
	rc := rcFrom(r.Context())
	var allow []string
	seen := map[string]bool{}
	for _, rt := range s.routes {
		if seen[rt.Method] {
			continue
		}
		seen[rt.Method] = true
		probe := r.Clone(r.Context())
		probe.Method = rt.Method
		if _, pattern := s.routeMux.Handler(probe); pattern != "" {
			allow = append(allow, rt.Method)
			if rt.Method == http.MethodGet {
				allow = append(allow, http.MethodHead)
			}
		}
	}
	if len(allow) > 0 {
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, &apiError{Status: http.StatusMethodNotAllowed, Msg: "method not allowed"}, rc.id)
		return
	}
	writeError(w, &apiError{Status: http.StatusNotFound, Msg: "no such endpoint; see " + Prefix + "/openapi.yaml"}, rc.id)
}

// HTTPServer returns an *http.Server for the API on cfg.Listen with the
// configured timeouts, size limits and TLS (min TLS 1.2), plus GET /healthz
// and, when Deps.UI is set, the console on every other path.
func (s *Server) HTTPServer() (*http.Server, error) {
	mux := http.NewServeMux()
	mux.Handle(Prefix+"/", s.Handler())
	mux.Handle("/api/", s.Handler()) // JSON 404s for other API versions
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	si := s.SignInHandler()
	mux.Handle(SignInPath, si)
	mux.Handle("/auth/", si)
	if s.ui != nil {
		mux.Handle("/", s.ui)
	} else {
		mux.Handle("/", s.Handler()) // JSON 404s
	}
	srv := &http.Server{
		Addr:              s.cfg.Listen,
		Handler:           mux,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		ErrorLog:          log.New(zerologWriter{s.log}, "", 0),
	}
	if s.cfg.TLS.Enabled() {
		cert, err := tls.LoadX509KeyPair(s.cfg.TLS.CertFile, s.cfg.TLS.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("api.tls: %w", err)
		}
		min := uint16(tls.VersionTLS12)
		if s.cfg.TLS.MinVersion == "1.3" {
			min = tls.VersionTLS13
		}
		srv.TLSConfig = &tls.Config{MinVersion: min, Certificates: []tls.Certificate{cert}}
	}
	return srv, nil
}

// Serve runs the API on ln until ctx ends, then shuts down gracefully.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	srv, err := s.HTTPServer()
	if err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() {
		if srv.TLSConfig != nil {
			errc <- srv.ServeTLS(ln, "", "")
		} else {
			errc <- srv.Serve(ln)
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownTimeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("api shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// ListenAndServe listens on cfg.Listen and serves until ctx ends.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("api listen: %w", err)
	}
	scheme := "http"
	if s.cfg.TLS.Enabled() {
		scheme = "https"
	}
	s.log.Info().Str("addr", ln.Addr().String()).Str("scheme", scheme).Msg("api listening")
	return s.Serve(ctx, ln)
}

// zerologWriter routes net/http's internal errors (TLS handshakes, bad
// requests) to the logger.
type zerologWriter struct{ log zerolog.Logger }

func (z zerologWriter) Write(p []byte) (int, error) {
	z.log.Warn().Str("error", strings.TrimSpace(string(p))).Msg("api http server")
	return len(p), nil
}
