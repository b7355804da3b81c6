package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

//go:embed web/templates/*.html
var templateFS embed.FS

//go:embed web/static
var staticFS embed.FS

// CSP is the Content-Security-Policy of every console response: no inline
// script or style, nothing from other origins, no framing.
const CSP = api.PageCSP

// Auth authenticates callers and records their reads of patient-level data;
// *api.Server implements it.
type Auth interface {
	Authenticate(r *http.Request) (*api.Principal, error)
	Audit(ctx context.Context, r *http.Request, p *api.Principal, ev api.AuditEvent) error
}

// Deps are the console's collaborators.
type Deps struct {
	Store Store
	Auth  Auth
	Log   zerolog.Logger
	// DemoStore labels every page as showing the demo's in-memory store.
	DemoStore bool
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// QueryTimeout bounds the store work of one request (default 60 s).
	QueryTimeout time.Duration
}

// Console is the web console: server-rendered pages over the triage store.
type Console struct {
	// handles are the patient page links (/patients/h/{handle}).
	handles patientHandles
	cfg     Config
	deps    Deps
	// invs is deps.Store's InvestigationStore, nil when it keeps none.
	invs    InvestigationStore
	now     func() time.Time
	pages   map[string]*template.Template
	handler http.Handler
}

// New builds the console. cfg must be valid.
func New(cfg Config, deps Deps) (*Console, error) {
	if err := schemas.UnderKey("console", cfg.Validate()); err != nil {
		return nil, err
	}
	if deps.Store == nil || deps.Auth == nil {
		return nil, errors.New("console: Store and Auth are required")
	}
	c := &Console{cfg: cfg, deps: deps, now: deps.Now}
	if c.now == nil {
		c.now = time.Now
	}
	c.invs, _ = deps.Store.(InvestigationStore)
	if c.deps.QueryTimeout <= 0 {
		c.deps.QueryTimeout = 60 * time.Second
	}
	if err := c.parseTemplates(); err != nil {
		return nil, err
	}
	c.handler = c.routes()
	return c, nil
}

// Handler serves the console: every path but /api/ and /healthz when
// mounted with api.Deps.UI.
func (c *Console) Handler() http.Handler { return c.handler }

// navItem is one entry of the navigation bar.
type navItem struct {
	Label, Href, Key string
	Perm             api.Permission
}

// nav lists the console's sections; each shows to roles holding Perm.
var nav = []navItem{
	{Label: "Queue", Href: "/queue", Key: "queue", Perm: api.PermAlertsRead},
	{Label: "Cases", Href: "/cases", Key: "cases", Perm: api.PermCases},
	{Label: "Patients", Href: "/patients", Key: "patients", Perm: api.PermReports},
	{Label: "Users", Href: "/users", Key: "users", Perm: api.PermReports},
	{Label: "Allowlist", Href: "/allowlist", Key: "allowlist", Perm: api.PermAllowlistWrite},
}

func (c *Console) parseTemplates() error {
	funcs := template.FuncMap{
		"utc": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") },
		"ptime": func(t *time.Time) string {
			if t == nil {
				return ""
			}
			return t.UTC().Format("2006-01-02 15:04:05 UTC")
		},
		"age":     humanAge,
		"isoTime": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
		"label":   labelOf,
		"join":    strings.Join,
		"add":     func(a, b int) int { return a + b },
		"pathEsc": pathEscape,
		"change":  changeText,
	}
	base, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "web/templates/layout.html")
	if err != nil {
		return fmt.Errorf("console templates: %w", err)
	}
	entries, err := fs.ReadDir(templateFS, "web/templates")
	if err != nil {
		return fmt.Errorf("console templates: %w", err)
	}
	c.pages = map[string]*template.Template{}
	for _, e := range entries {
		name := e.Name()
		if name == "layout.html" || strings.HasPrefix(name, "_") {
			continue
		}
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "web/templates/"+name, "web/templates/_*.html")
		if err != nil {
			return fmt.Errorf("console template %s: %w", name, err)
		}
		c.pages[strings.TrimSuffix(name, ".html")] = t
	}
	return nil
}

// reqCtx is the per-request state.
type reqCtx struct {
	id        string
	route     string
	principal *api.Principal
}

type ctxKey struct{}

func rcOf(r *http.Request) *reqCtx {
	rc, _ := r.Context().Value(ctxKey{}).(*reqCtx)
	if rc == nil {
		rc = &reqCtx{id: newRequestID(), route: "unmatched"}
	}
	return rc
}

func newRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// handlerFunc is a page: it writes a response or returns an error that
// becomes the error page.
type handlerFunc func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error

func (c *Console) routes() http.Handler {
	mux := http.NewServeMux()
	static, _ := fs.Sub(staticFS, "web/static")
	files := http.FileServerFS(static)
	mux.Handle("GET /static/", c.plain("GET /static/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=3600")
		http.StripPrefix("/static/", files).ServeHTTP(w, r)
	}))
	mux.Handle("GET /{$}", c.plain("GET /", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/queue", http.StatusSeeOther)
	}))
	c.page(mux, "GET /queue", api.PermAlertsRead, c.handleQueue)
	c.page(mux, "GET /queue/new", api.PermAlertsRead, c.handleQueueNew)
	c.page(mux, "POST /queue/bulk", api.PermAlertsTriage, c.handleBulk)
	c.page(mux, "GET /alerts/{alert_id}", api.PermAlertsRead, c.handleAlert)
	c.page(mux, "POST /alerts/{alert_id}", api.PermAlertsTriage, c.handleAlertUpdate)
	c.page(mux, "POST /alerts/{alert_id}/assign-to-me", api.PermAlertsTriage, c.handleAssignToMe)
	c.investigationRoutes(mux)
	mux.Handle("/", c.plain("unmatched", func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, rcOf(r), &pageError{Status: http.StatusNotFound, Title: "Not found", Msg: "There is no page at this address."})
	}))
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, rcOf(r), &pageError{Status: http.StatusForbidden, Title: "Request refused",
			Msg: "This change came from another site (cross-origin request), so it was refused. Use the console's own forms."})
	}))
	return c.outer(cop.Handler(mux))
}

// plain is a route without authentication (static files, redirects).
func (c *Console) plain(route string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rcOf(r).route = route
		h(w, r)
	})
}

// page registers an authenticated route that needs perm.
func (c *Console) page(mux *http.ServeMux, pattern string, perm api.Permission, h handlerFunc) {
	mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := rcOf(r)
		rc.route = pattern
		p, err := c.deps.Auth.Authenticate(r)
		switch {
		case errors.Is(err, api.ErrNoCredentials):
			c.fail(w, r, rc, &pageError{Status: http.StatusUnauthorized, Title: "Sign in required",
				Msg: "Sign in to use the console.", SignIn: true})
			return
		case errors.Is(err, api.ErrInvalidCredentials):
			c.fail(w, r, rc, &pageError{Status: http.StatusUnauthorized, Title: "Sign in again",
				Msg: "Your credentials were not accepted (" + strings.TrimPrefix(err.Error(), api.ErrInvalidCredentials.Error()+": ") + ").", SignIn: true})
			return
		case err != nil:
			c.deps.Log.Error().Str("request_id", rc.id).Str("route", rc.route).Msg("console authentication unavailable")
			c.fail(w, r, rc, &pageError{Status: http.StatusServiceUnavailable, Title: "Sign-in unavailable",
				Msg: "The identity provider's keys cannot be fetched right now; try again shortly."})
			return
		}
		rc.principal = p
		if !p.Can(perm) {
			c.fail(w, r, rc, &pageError{Status: http.StatusForbidden, Title: "Not allowed",
				Msg: fmt.Sprintf("This page needs the permission %s, which your role (%s) does not grant.", perm, roles(p))})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), c.deps.QueryTimeout)
		defer cancel()
		if err := h(w, r.WithContext(ctx), rc); err != nil {
			c.fail(w, r, rc, err)
		}
	}))
}

func roles(p *api.Principal) string {
	s := make([]string, len(p.Roles))
	for i, r := range p.Roles {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// outer sets the security headers and request id on every response,
// recovers panics and writes the access log (route pattern, never the URL).
func (c *Console) outer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := &reqCtx{id: newRequestID(), route: "unmatched"}
		start := c.now()
		api.SetSecurityHeaders(w, r, CSP)
		h := w.Header()
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Request-Id", rc.id)
		sw := api.NewStatusWriter(w)
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				c.deps.Log.Error().Str("request_id", rc.id).Str("route", rc.route).Str("panic_type", fmt.Sprintf("%T", p)).
					Msg("console handler panicked")
				if !sw.Wrote() {
					c.fail(sw, r, rc, errors.New("panic"))
				}
			}
			status := sw.Status()
			ev := c.deps.Log.Info()
			if status >= 500 {
				ev = c.deps.Log.Warn()
			}
			ev = ev.Str("request_id", rc.id).Str("method", r.Method).Str("route", rc.route).Int("status", status).
				Dur("duration", c.now().Sub(start))
			if rc.principal != nil {
				ev = ev.Str("principal", rc.principal.Name)
			}
			ev.Msg("console request")
		}()
		next.ServeHTTP(sw, r.WithContext(context.WithValue(r.Context(), ctxKey{}, rc)))
	})
}

// pageError is an error shown as a page. Msg never quotes request values.
type pageError struct {
	Status int
	Title  string
	Msg    string
	SignIn bool
}

func (e *pageError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Title) }

// errorFor maps store errors to what the user sees.
func errorFor(err error) (pe *pageError, internal bool) {
	var ve *triage.ValidationError
	switch {
	case errors.As(err, &pe):
		return pe, false
	case errors.As(err, &ve):
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: ve.Error()}, false
	case errors.Is(err, triage.ErrNotFound):
		return &pageError{Status: http.StatusNotFound, Title: "Not found", Msg: "No alert has this id."}, false
	case errors.Is(err, triage.ErrForbidden):
		return &pageError{Status: http.StatusForbidden, Title: "Not allowed",
			Msg: triage.ForbiddenReason(err)}, false
	case errors.Is(err, context.DeadlineExceeded):
		return &pageError{Status: http.StatusGatewayTimeout, Title: "Too slow",
			Msg: "The query took too long; narrow the filters."}, true
	}
	return &pageError{Status: http.StatusInternalServerError, Title: "Something went wrong",
		Msg: "The page could not be produced. The error is logged with the request id below."}, true
}

// fail renders the error page (403, 404, 401, 500 …).
func (c *Console) fail(w http.ResponseWriter, r *http.Request, rc *reqCtx, err error) {
	pe, internal := errorFor(err)
	if internal {
		c.deps.Log.Error().Str("request_id", rc.id).Str("route", rc.route).
			Str("error", triage.ErrorText(err)).Msg("console request failed")
	}
	if r.Context().Err() != nil && errors.Is(err, context.Canceled) {
		return
	}
	name := "error"
	if pe.Status == http.StatusForbidden {
		name = "forbidden"
	}
	c.render(w, r, rc, pe.Status, name, pe.Title, "", pe)
}

// layout is what every page's template gets.
type layout struct {
	Title     string
	Section   string
	Principal *api.Principal
	Nav       []navItem
	Demo      bool
	RequestID string
	Data      any
}

// render executes a page into a buffer, then writes it (a template error
// never leaves half a page).
func (c *Console) render(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, name, title, section string, data any) {
	t := c.pages[name]
	l := layout{Title: title, Section: section, Principal: rc.principal, Demo: c.deps.DemoStore, RequestID: rc.id, Data: data}
	if rc.principal != nil {
		for _, n := range nav {
			if rc.principal.Can(n.Perm) {
				l.Nav = append(l.Nav, n)
			}
		}
	}
	var buf bytes.Buffer
	tmpl := "layout.html"
	if r.Header.Get("HX-Request") == "true" && t != nil && t.Lookup("fragment") != nil {
		tmpl = "fragment"
	}
	if t == nil {
		c.deps.Log.Error().Str("request_id", rc.id).Str("template", name).Msg("console: no such template")
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	if err := t.ExecuteTemplate(&buf, tmpl, l); err != nil {
		c.deps.Log.Error().Str("request_id", rc.id).Str("route", rc.route).Str("template", name).
			Str("error", triage.ErrorText(err)).Msg("console template failed")
		http.Error(w, "internal error (request "+rc.id+")", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = buf.WriteTo(w)
}

// audit records a page's patient-level read; the page fails if it cannot.
func (c *Console) audit(r *http.Request, rc *reqCtx, ev api.AuditEvent) error {
	ev.RequestID = rc.id
	ev.Endpoint = rc.route
	if err := c.deps.Auth.Audit(r.Context(), r, rc.principal, ev); err != nil {
		c.deps.Log.Error().Str("request_id", rc.id).Str("route", rc.route).Msg("console audit write failed; refusing to show unaudited data")
		return &pageError{Status: http.StatusInternalServerError, Title: "Audit unavailable",
			Msg: "The access could not be recorded in the audit trail, so no data is shown."}
	}
	return nil
}

// humanAge renders a duration as "3 d 4 h", "5 h 12 min", "42 min".
func humanAge(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d >= 48*time.Hour:
		return fmt.Sprintf("%d d %d h", int(d.Hours())/24, int(d.Hours())%24)
	case d >= time.Hour:
		return fmt.Sprintf("%d h %d min", int(d.Hours()), int(d.Minutes())%60)
	}
	return fmt.Sprintf("%d min", int(d.Minutes()))
}

// labelOf turns snake_case values into words ("false_positive" → "false positive").
func labelOf(v any) string { return strings.ReplaceAll(fmt.Sprint(v), "_", " ") }

// pathEscape escapes one path segment (an alert id).
func pathEscape(s string) string { return url.PathEscape(s) }
