package api

import (
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/ehrwatch/ehrwatch/schemas"
	"maps"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"
	_ "time/tzdata" // facility time zones must resolve on hosts without zoneinfo

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// Config is the `api` section: how `ehrwatch serve` listens, who may call
// it, and the bounds on what one request may ask for.
type Config struct {
	// Listen is the host:port `ehrwatch serve` listens on. Ignored when the
	// handler is mounted into another server (`ehrwatch run`).
	Listen string `yaml:"listen"`
	// TLS serves HTTPS when cert_file and key_file are set.
	TLS TLSConfig `yaml:"tls"`
	// InsecurePlaintext allows plain HTTP on a non-loopback address, for
	// deployments behind a TLS-terminating proxy. Bearer tokens and patient
	// data then cross that hop in clear text.
	InsecurePlaintext bool `yaml:"insecure_plaintext"`
	// Tokens are static bearer tokens (service accounts, break-fix access),
	// stored as SHA-256 hashes.
	Tokens []TokenConfig `yaml:"tokens"`
	// OIDC lists the identity providers whose JWTs are accepted, and
	// (with browser.client_id) the ones people sign in with in the console.
	OIDC []OIDCConfig `yaml:"oidc"`
	// Session bounds the console's sign-in sessions.
	Session SessionConfig `yaml:"session"`

	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	ReadTimeout       time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds a whole response, CSV exports included.
	WriteTimeout    time.Duration `yaml:"write_timeout"`
	IdleTimeout     time.Duration `yaml:"idle_timeout"`
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// QueryTimeout bounds the ClickHouse work of one request.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	// MaxBodyBytes bounds a request body (PATCH); MaxHeaderBytes the
	// request line and headers.
	MaxBodyBytes   int64 `yaml:"max_body_bytes"`
	MaxHeaderBytes int   `yaml:"max_header_bytes"`

	// PageSize is the default and MaxPageSize the largest `limit` of JSON
	// pages; MaxExportRows the largest CSV export.
	PageSize      int `yaml:"page_size"`
	MaxPageSize   int `yaml:"max_page_size"`
	MaxExportRows int `yaml:"max_export_rows"`
	// MaxReportRange bounds to − from of a report.
	MaxReportRange time.Duration `yaml:"max_report_range"`
	// FacilityTimeZones maps facility ids to IANA zones
	// ("America/New_York"); reports show facility-local times for these.
	FacilityTimeZones map[string]string `yaml:"facility_time_zones"`
	// CareSlackBefore/After must equal the detectors'
	// reference.care_slack_before/after (reports explain accesses the same
	// way the detectors do).
	CareSlackBefore time.Duration `yaml:"care_slack_before"`
	CareSlackAfter  time.Duration `yaml:"care_slack_after"`
}

// TLSConfig is the server certificate.
type TLSConfig struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// MinVersion is "1.2" (default) or "1.3".
	MinVersion string `yaml:"min_version"`
}

// Enabled reports whether HTTPS is configured.
func (t TLSConfig) Enabled() bool { return t.CertFile != "" }

// TokenConfig is one static bearer token.
type TokenConfig struct {
	// Name identifies the caller in the audit trail and triage history.
	Name string `yaml:"name"`
	Role Role   `yaml:"role"`
	// Hash is "sha256:<64 hex digits>" of the token; `ehrwatch serve
	// hash-token` prints it. The token itself is never configured.
	Hash string `yaml:"hash"`
}

// OIDCConfig is one trusted OpenID Connect issuer.
type OIDCConfig struct {
	// Issuer must equal the token's iss claim exactly.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain one of them.
	Audiences []string `yaml:"audiences"`
	// The issuer's signing keys as a JWKS: a file, inline JSON, or an
	// https URL fetched and cached (refreshed every jwks_refresh, and at
	// most once a minute on an unknown key id). At most one; none: the
	// jwks_uri of the issuer's discovery document
	// (<issuer>/.well-known/openid-configuration, fetched on first use).
	JWKSFile    string        `yaml:"jwks_file"`
	JWKS        string        `yaml:"jwks"`
	JWKSURL     string        `yaml:"jwks_url"`
	JWKSRefresh time.Duration `yaml:"jwks_refresh"`
	// Algorithms allowed (default RS256 and ES256; nothing else is
	// supported: "none" and HMAC are always refused).
	Algorithms []string `yaml:"algorithms"`
	// SubjectClaim names the caller (default "sub"; e.g.
	// "preferred_username").
	SubjectClaim string `yaml:"subject_claim"`
	// RoleClaim holds the caller's roles or groups: a string or a list of
	// strings; a dotted path reaches into objects ("realm_access.roles").
	// Default "roles".
	RoleClaim string `yaml:"role_claim"`
	// RoleMap maps claim values to ehrwatch roles (e.g. "EHR-Privacy":
	// privacy_officer). Empty: claim values must be role names.
	RoleMap map[string]Role `yaml:"role_map"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default 60s.
	Leeway time.Duration `yaml:"leeway"`
	// Browser enables console sign-in with this issuer (OpenID Connect
	// authorization code flow with PKCE) when client_id is set.
	Browser BrowserConfig `yaml:"browser"`
}

// BrowserConfig is the console's OpenID Connect client at one issuer. The
// authorization and token endpoints come from the issuer's discovery
// document; ID tokens must name client_id in aud; roles come from the
// issuer's role_claim and role_map, the name from subject_claim.
type BrowserConfig struct {
	// Name is the provider on the sign-in page ("Sign in with <name>").
	// Default: the issuer's host.
	Name string `yaml:"name"`
	// ClientID is the console's client id at the issuer.
	ClientID string `yaml:"client_id"`
	// ClientSecret, or ClientSecretFile (its trimmed content; set one, not
	// both), authenticates the console at the token endpoint. Empty: a
	// public client (PKCE alone).
	ClientSecret     string `yaml:"client_secret"`
	ClientSecretFile string `yaml:"client_secret_file"`
	// RedirectURL is this console's /auth/callback as the browser reaches
	// it (e.g. https://ehrwatch.hospital.example/auth/callback); it must be
	// registered at the issuer.
	RedirectURL string `yaml:"redirect_url"`
	// Scopes requested; "openid" is always included. Default [openid,
	// profile, email].
	Scopes []string `yaml:"scopes"`
}

func (b BrowserConfig) enabled() bool { return b.ClientID != "" }

// SessionConfig bounds console sessions (kept in memory: a restart signs
// everybody out).
type SessionConfig struct {
	// IdleTimeout ends a session not used for this long. Default 30m.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// AbsoluteTimeout ends a session this long after sign-in, however
	// busy. Default 12h.
	AbsoluteTimeout time.Duration `yaml:"absolute_timeout"`
	// MaxSessions bounds the sessions (and, separately, the sign-ins in
	// progress) held at once; beyond it the oldest is dropped. Default
	// 10000.
	MaxSessions int `yaml:"max_sessions"`
}

// DefaultConfig returns the defaults: loopback listener, sane timeouts,
// pages of 100 (at most 1000), CSV exports of at most 50 000 rows, reports
// over at most 3 years (the HHS access-report horizon), 24h care slack.
func DefaultConfig() Config {
	return Config{
		Listen:            "127.0.0.1:8080",
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
		ShutdownTimeout:   15 * time.Second,
		QueryTimeout:      60 * time.Second,
		MaxBodyBytes:      64 << 10,
		MaxHeaderBytes:    32 << 10,
		PageSize:          100,
		MaxPageSize:       1000,
		MaxExportRows:     50000,
		MaxReportRange:    3 * 366 * 24 * time.Hour,
		CareSlackBefore:   24 * time.Hour,
		CareSlackAfter:    24 * time.Hour,
		Session:           SessionConfig{IdleTimeout: 30 * time.Minute, AbsoluteTimeout: 12 * time.Hour, MaxSessions: 10000},
	}
}

// Validate reports every bad setting, each naming its key relative to the
// api section. It does not require any authenticator: New does, so that
// a configuration that never serves the API validates without one.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil || port == "" {
		bad("listen", "want host:port, got %q", c.Listen)
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls.cert_file, tls.key_file", "set both or neither")
	}
	for _, f := range []struct{ key, file string }{{"cert_file", c.TLS.CertFile}, {"key_file", c.TLS.KeyFile}} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			bad("tls."+f.key, "%v", err)
		}
	}
	switch c.TLS.MinVersion {
	case "", "1.2", "1.3":
	default:
		bad("tls.min_version", "want 1.2 or 1.3, got %q", c.TLS.MinVersion)
	}
	if err == nil && !c.TLS.Enabled() && !c.InsecurePlaintext && !isLoopback(host) {
		bad("tls.cert_file", "required to listen on %q (not loopback); or set insecure_plaintext: true behind a TLS-terminating proxy", c.Listen)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"read_header_timeout", c.ReadHeaderTimeout}, {"read_timeout", c.ReadTimeout}, {"write_timeout", c.WriteTimeout},
		{"idle_timeout", c.IdleTimeout}, {"shutdown_timeout", c.ShutdownTimeout}, {"query_timeout", c.QueryTimeout},
		{"max_report_range", c.MaxReportRange},
	} {
		if d.d <= 0 {
			bad(d.name, "must be > 0")
		}
	}
	if c.CareSlackBefore < 0 {
		bad("care_slack_before", "must be >= 0")
	}
	if c.CareSlackAfter < 0 {
		bad("care_slack_after", "must be >= 0")
	}
	if c.MaxBodyBytes < 1024 || c.MaxBodyBytes > 16<<20 {
		bad("max_body_bytes", "must be between 1024 and 16777216")
	}
	if c.MaxHeaderBytes < 4096 || c.MaxHeaderBytes > 1<<20 {
		bad("max_header_bytes", "must be between 4096 and 1048576")
	}
	if c.MaxPageSize < 1 || c.MaxPageSize > 100000 {
		bad("max_page_size", "must be between 1 and 100000")
	}
	if c.PageSize < 1 || c.PageSize > c.MaxPageSize {
		bad("page_size", "must be between 1 and max_page_size (%d)", c.MaxPageSize)
	}
	if c.MaxExportRows < 1 || c.MaxExportRows > 10000000 {
		bad("max_export_rows", "must be between 1 and 10000000")
	}
	for _, fac := range slices.Sorted(maps.Keys(c.FacilityTimeZones)) {
		zone := c.FacilityTimeZones[fac]
		if _, err := time.LoadLocation(zone); err != nil || zone == "" || zone == "Local" {
			bad("facility_time_zones."+fac, "unknown IANA time zone %q", zone)
		}
	}
	names := map[string]bool{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		if t.Name == "" || len(t.Name) > triage.MaxActorBytes {
			bad(key+".name", "required (at most %d bytes)", triage.MaxActorBytes)
		} else if names[t.Name] {
			bad(key+".name", "%q is used twice", t.Name)
		}
		names[t.Name] = true
		if !t.Role.Valid() {
			bad(key+".role", "want one of %s, got %q", roleList(), t.Role)
		}
		if _, err := parseTokenHash(t.Hash); err != nil {
			bad(key+".hash", "%v", err)
		}
	}
	if c.Session.IdleTimeout <= 0 || c.Session.AbsoluteTimeout < c.Session.IdleTimeout {
		bad("session.idle_timeout, session.absolute_timeout", "want 0 < idle_timeout <= absolute_timeout")
	}
	if c.Session.MaxSessions < 1 || c.Session.MaxSessions > 1000000 {
		bad("session.max_sessions", "must be between 1 and 1000000")
	}
	issuers := map[string]bool{}
	for i, o := range c.OIDC {
		key := fmt.Sprintf("oidc[%d]", i)
		errs = append(errs, schemas.UnderKey(key, o.validate()))
		if o.Issuer != "" && issuers[o.Issuer] {
			bad(key+".issuer", "configured twice")
		}
		issuers[o.Issuer] = true
	}
	return errors.Join(errs...)
}

func (o OIDCConfig) validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	if o.Issuer == "" {
		bad("issuer", "required")
	}
	if len(o.Audiences) == 0 || slices.Contains(o.Audiences, "") {
		bad("audiences", "at least one non-empty audience is required")
	}
	n := 0
	for _, s := range []string{o.JWKSFile, o.JWKS, o.JWKSURL} {
		if s != "" {
			n++
		}
	}
	if n > 1 {
		bad("jwks_file, jwks, jwks_url", "set at most one")
	}
	if o.Issuer != "" && (n == 0 || o.Browser.enabled()) {
		// The keys (n == 0) or the endpoints come from discovery.
		if err := checkIdPURL(o.Issuer); err != nil {
			bad("issuer", "discovery URL %v", err)
		}
	}
	if o.JWKSFile != "" {
		if _, err := os.Stat(o.JWKSFile); err != nil {
			bad("jwks_file", "%v", err)
		}
	}
	if o.JWKSURL != "" {
		if err := checkIdPURL(o.JWKSURL); err != nil {
			bad("jwks_url", "%v", err)
		}
	}
	if o.JWKSRefresh < 0 {
		bad("jwks_refresh", "must be >= 0")
	}
	for j, a := range o.Algorithms {
		if !supportedAlgs[a] {
			bad(fmt.Sprintf("algorithms[%d]", j), "%q is not supported (RS256, ES256)", a)
		}
	}
	for _, v := range slices.Sorted(maps.Keys(o.RoleMap)) {
		if r := o.RoleMap[v]; !r.Valid() {
			bad("role_map."+v, "want one of %s, got %q", roleList(), r)
		}
	}
	if o.Leeway < 0 || o.Leeway > 10*time.Minute {
		bad("leeway", "must be between 0 and 10m")
	}
	errs = append(errs, schemas.UnderKey("browser", o.Browser.validate()))
	return errors.Join(errs...)
}

func (b BrowserConfig) validate() error {
	if !b.enabled() {
		if b.ClientSecret != "" || b.ClientSecretFile != "" || b.RedirectURL != "" || len(b.Scopes) > 0 || b.Name != "" {
			return schemas.FieldErrorf("client_id", "required when any browser setting is set")
		}
		return nil
	}
	var errs []error
	if b.ClientSecret != "" && b.ClientSecretFile != "" {
		errs = append(errs, schemas.FieldErrorf("client_secret, client_secret_file", "set one, not both"))
	}
	u, err := url.Parse(b.RedirectURL)
	switch {
	case err != nil || u.Host == "" || u.Path != CallbackPath || u.RawQuery != "" || u.Fragment != "":
		errs = append(errs, schemas.FieldErrorf("redirect_url", "want this console's absolute URL ending in %s, got %q", CallbackPath, b.RedirectURL))
	case u.Scheme != "https" && !(u.Scheme == "http" && isLoopback(u.Hostname())):
		errs = append(errs, schemas.FieldErrorf("redirect_url", "must be https (http only for loopback hosts)"))
	}
	for j, sc := range b.Scopes {
		if sc == "" || strings.ContainsAny(sc, " \t\r\n") {
			errs = append(errs, schemas.FieldErrorf(fmt.Sprintf("scopes[%d]", j), "not a scope: %q", sc))
		}
	}
	return errors.Join(errs...)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// parseTokenHash parses "sha256:<hex>".
func parseTokenHash(s string) ([]byte, error) {
	hexPart, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return nil, fmt.Errorf(`want "sha256:<64 hex digits>"`)
	}
	b, err := hex.DecodeString(hexPart)
	if err != nil || len(b) != 32 {
		return nil, fmt.Errorf(`want "sha256:<64 hex digits>"`)
	}
	return b, nil
}

// TriageOptions derives the triage store options (care slack, facility
// time zones) from the config.
func (c Config) TriageOptions() triage.Options {
	opts := triage.DefaultOptions()
	opts.CareSlackBefore, opts.CareSlackAfter = c.CareSlackBefore, c.CareSlackAfter
	locs := map[string]*time.Location{}
	for fac, zone := range c.FacilityTimeZones {
		if loc, err := time.LoadLocation(zone); err == nil {
			locs[fac] = loc
		}
	}
	opts.Location = func(f string) *time.Location { return locs[f] }
	return opts
}
