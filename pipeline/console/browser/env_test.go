package browser_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/chromedp/chromedp"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/api/oidctest"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// Static API tokens of the people in the tests (names as the audit trail
// and the triage history record them).
const (
	tokAnalyst  = "browser-analyst-token-0123456789abcdef"
	tokAnalyst2 = "browser-analyst2-token-0123456789abcdef"
	tokPO       = "browser-privacy-token-0123456789abcdef"

	nameAnalyst  = "soc-analyst"
	nameAnalyst2 = "soc-analyst-2"
	namePO       = "privacy-desk"
)

// consoleNow is the console's clock: the day after triagetest's alerts.
var consoleNow = tt.TS("2026-03-10T12:00:00Z")

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

// env is ehrwatch's API listener with the console mounted (as `ehrwatch
// serve` wires it) over a fresh database in the dev ClickHouse engine,
// seeded with triagetest's small hospital: four users, two patients, their
// encounters and accesses, four alerts (the volume alert's finding with its
// evidence numbers).
type env struct {
	t     *testing.T
	conn  clickhouse.Conn
	store *triage.Store
	url   string
	logs  *syncBuffer
	// idp is the in-process OpenID provider the console's sign-in trusts;
	// its groups EHR-SOC and EHR-Privacy map to analyst and privacy officer.
	idp *oidctest.Provider
}

// envOption changes how newEnv sets the console up.
type envOption func(*console.Config, *console.Deps)

// withRealClock runs the console on the wall clock instead of consoleNow
// (the queue's "new since" poll compares with rows' insert times).
func withRealClock() envOption {
	return func(_ *console.Config, d *console.Deps) { d.Now = nil }
}

// withQueueRefresh sets how often an open queue asks for new alerts.
func withQueueRefresh(every time.Duration) envOption {
	return func(c *console.Config, _ *console.Deps) { c.QueueRefresh = every }
}

// fixture is triagetest's small hospital, with the volume finding behind
// al-2 given its numbers so its page draws the evidence chart (observed
// against own baseline and peers).
func fixture() tt.Fixture {
	f := tt.NewFixture()
	for i := range f.Findings {
		if f.Findings[i].FindingID == "f-3" {
			f.Findings[i].Evidence.Observed, f.Findings[i].Evidence.Baseline = 9, 1.5
			f.Findings[i].Evidence.PeerValue, f.Findings[i].Evidence.Threshold = 2, 6
		}
	}
	return f
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	conn := tt.NewDB(t, fixture())
	st := triage.NewStore(conn, triageOptions())
	e := serve(t, st, opts...)
	e.conn, e.store = conn, st
	return e
}

// facilityZones are the fixture facility's time zone.
var facilityZones = map[string]string{"fac-nyc": "America/New_York"}

// triageOptions are the store options ehrwatch derives from the API config.
func triageOptions() triage.Options {
	cfg := api.DefaultConfig()
	cfg.FacilityTimeZones = facilityZones
	return cfg.TriageOptions()
}

// store is what the API and the console read: the ClickHouse store or the
// demo's in-memory one.
type store interface {
	api.Store
	console.Store
}

// serve starts the API listener with the console mounted over st.
func serve(t *testing.T, st store, opts ...envOption) *env {
	t.Helper()
	idp := oidctest.Start(t)
	ts := httptest.NewUnstartedServer(nil)
	base := "http://" + ts.Listener.Addr().String()
	cfg := api.DefaultConfig()
	cfg.OIDC = []api.OIDCConfig{idp.Config(base+api.CallbackPath,
		map[string]api.Role{"EHR-SOC": api.RoleAnalyst, "EHR-Privacy": api.RolePrivacyOfficer})}
	cfg.Tokens = []api.TokenConfig{
		{Name: nameAnalyst, Role: api.RoleAnalyst, Hash: api.HashToken(tokAnalyst)},
		{Name: nameAnalyst2, Role: api.RoleAnalyst, Hash: api.HashToken(tokAnalyst2)},
		{Name: namePO, Role: api.RolePrivacyOfficer, Hash: api.HashToken(tokPO)},
	}
	cfg.FacilityTimeZones = facilityZones
	logs := &syncBuffer{}
	log := zerolog.New(logs)
	var con *console.Console
	srv, err := api.New(cfg, api.Deps{Store: st, Log: log,
		UI: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.Handler().ServeHTTP(w, r) })})
	if err != nil {
		t.Fatal(err)
	}
	ccfg := console.DefaultConfig()
	cdeps := console.Deps{Store: st, Auth: srv, Log: log, Now: func() time.Time { return consoleNow }}
	for _, o := range opts {
		o(&ccfg, &cdeps)
	}
	con, err = console.New(ccfg, cdeps)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := srv.HTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	ts.Config.Handler = hs.Handler
	ts.Start()
	t.Cleanup(ts.Close)
	return &env{t: t, url: ts.URL, logs: logs, idp: idp}
}

// signIn opens a browser session and signs subject in through the
// OpenID provider (authorization code flow with PKCE, from the sign-in
// page's provider link); groups decide the role. It returns on the queue.
func (e *env) signIn(subject string, groups ...string) *session {
	e.t.Helper()
	s := newSession(e.t, e.url)
	if got := s.open("/queue"); got != http.StatusUnauthorized && got != http.StatusOK {
		e.t.Fatalf("GET /queue before signing in: status %d", got)
	}
	if loc := run(s, "location", chromedp.Location()); !strings.HasPrefix(strings.TrimPrefix(loc, e.url), "/signin") {
		if got := s.submit("follow the page's sign-in link", chromedp.Click(chromedp.CSS(`a[href^="/signin"]`), chromedp.NodeVisible)); got != http.StatusOK {
			e.t.Fatalf("sign-in page: status %d", got)
		}
	}
	e.idp.SignInAs(subject, groups...)
	if got := s.submit("sign in with the identity provider", chromedp.Click(chromedp.CSS(".signin-providers a"), chromedp.NodeVisible)); got != http.StatusOK {
		e.t.Fatalf("after the identity provider: status %d", got)
	}
	s.waitText("header .who", subject)
	return s
}

// signInWithToken opens a browser session and signs in on the sign-in
// page's token form (what scripts and the demo use).
func (e *env) signInWithToken(token string) *session {
	e.t.Helper()
	s := newSession(e.t, e.url)
	if got := s.open("/signin"); got != http.StatusOK {
		e.t.Fatalf("GET /signin: status %d", got)
	}
	s.do("type the token", chromedp.SendKeys(chromedp.CSS("#token"), token, chromedp.NodeVisible))
	if got := s.submit("sign in with the token", chromedp.Click(chromedp.CSS("form.signin-token button[type=submit]"))); got != http.StatusOK {
		e.t.Fatalf("after the token form: status %d", got)
	}
	s.waitText("header .who", "Signed in as")
	return s
}

// as opens a browser session for the holder of a static token.
func (e *env) as(token string) *session {
	e.t.Helper()
	s := newSession(e.t, e.url)
	s.useBearer(token)
	return s
}

// state is an alert's triage state as stored.
func (e *env) state(alertID string) triage.State {
	e.t.Helper()
	st, err := e.store.State(context.Background(), alertID)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// history is an alert's stored triage history, oldest first.
func (e *env) history(alertID string) []triage.State {
	e.t.Helper()
	h, err := e.store.History(context.Background(), alertID)
	if err != nil {
		e.t.Fatal(err)
	}
	return h
}

// auditRow is an api_audit row.
type auditRow struct {
	Principal, AuthMethod, Channel, Method, Endpoint, AlertID, PatientID, UserID string
	Patients                                                                     []string
	Status                                                                       uint16
}

// audit returns the api_audit rows the console wrote, oldest first.
func (e *env) audit() []auditRow {
	e.t.Helper()
	rows, err := e.conn.Query(context.Background(), `SELECT principal, auth_method, channel, method, endpoint,
 alert_id, patient_id, user_id, patients_returned, status FROM api_audit WHERE channel = 'console' ORDER BY at, request_id`)
	if err != nil {
		e.t.Fatal(err)
	}
	defer rows.Close()
	var out []auditRow
	for rows.Next() {
		var a auditRow
		if err := rows.Scan(&a.Principal, &a.AuthMethod, &a.Channel, &a.Method, &a.Endpoint,
			&a.AlertID, &a.PatientID, &a.UserID, &a.Patients, &a.Status); err != nil {
			e.t.Fatal(err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		e.t.Fatal(err)
	}
	return out
}

// audited reports whether some console audit row matches all of want's
// non-empty fields.
func (e *env) audited(want auditRow) bool {
	e.t.Helper()
	for _, a := range e.audit() {
		if (want.Principal == "" || a.Principal == want.Principal) &&
			(want.AuthMethod == "" || a.AuthMethod == want.AuthMethod) &&
			(want.Method == "" || a.Method == want.Method) &&
			(want.Endpoint == "" || a.Endpoint == want.Endpoint) &&
			(want.AlertID == "" || a.AlertID == want.AlertID) &&
			(want.PatientID == "" || a.PatientID == want.PatientID) &&
			(want.UserID == "" || a.UserID == want.UserID) &&
			(want.Status == 0 || a.Status == want.Status) {
			return true
		}
	}
	return false
}

// phi are fixture strings that must never reach the logs.
var phi = []string{tt.PatientMain, tt.PatientOther, "Oriana", "Vexley", "Tobiah", "Wrenfield",
	"Quillon", "Marchetti", "Bertrand", "Oyelaran", "Carys", "Thistlewood", "Abernethy"}

// assertNoPHIInLogs: whatever the browser did, the server's logs carry no
// patient identifier or name.
func (e *env) assertNoPHIInLogs() {
	e.t.Helper()
	logs := e.logs.String()
	for _, s := range phi {
		if i := strings.Index(logs, s); i >= 0 {
			e.t.Errorf("log contains %q: …%s…", s, logs[max(0, i-200):min(len(logs), i+100)])
		}
	}
}
