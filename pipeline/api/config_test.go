package api

import (
	"github.com/ehrwatch/ehrwatch/schemas"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestConfigValidate(t *testing.T) {
	if err := schemas.UnderKey("api", DefaultConfig().Validate()); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, []byte(`{"keys":[]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	goodOIDC := OIDCConfig{Issuer: "https://idp", Audiences: []string{"ehrwatch"}, JWKSFile: jwksFile}
	goodBrowser := BrowserConfig{ClientID: "console", ClientSecret: "s", RedirectURL: "https://ehrwatch.example/auth/callback"}
	cases := []struct {
		name string
		mut  func(c *Config)
		key  string
	}{
		{"listen", func(c *Config) { c.Listen = "8080" }, "api.listen"},
		{"plaintext on all interfaces", func(c *Config) { c.Listen = ":8080" }, "api.tls.cert_file"},
		{"plaintext allowed explicitly", func(c *Config) { c.Listen, c.InsecurePlaintext = "0.0.0.0:8080", true }, ""},
		{"cert without key", func(c *Config) { c.TLS.CertFile = jwksFile }, "api.tls.cert_file, api.tls.key_file"},
		{"missing cert file", func(c *Config) { c.TLS.CertFile, c.TLS.KeyFile = "/nope.pem", jwksFile }, "api.tls.cert_file"},
		{"tls min version", func(c *Config) { c.TLS.MinVersion = "1.0" }, "api.tls.min_version"},
		{"timeout", func(c *Config) { c.WriteTimeout = 0 }, "api.write_timeout"},
		{"page size", func(c *Config) { c.PageSize = 5000 }, "api.page_size"},
		{"export rows", func(c *Config) { c.MaxExportRows = 0 }, "api.max_export_rows"},
		{"range", func(c *Config) { c.MaxReportRange = -time.Hour }, "api.max_report_range"},
		{"zone", func(c *Config) { c.FacilityTimeZones = map[string]string{"fac-1": "Mars/Olympus"} }, "api.facility_time_zones.fac-1"},
		{"token hash", func(c *Config) { c.Tokens = []TokenConfig{{Name: "a", Role: RoleAnalyst, Hash: "plaintext"}} }, "api.tokens[0].hash"},
		{"token role", func(c *Config) {
			c.Tokens = []TokenConfig{{Name: "a", Role: RoleAnalyst, Hash: HashToken("x")}, {Name: "b", Role: "root", Hash: HashToken("y")}}
		}, "api.tokens[1].role"},
		{"token name twice", func(c *Config) {
			c.Tokens = []TokenConfig{{Name: "a", Role: RoleAnalyst, Hash: HashToken("x")}, {Name: "a", Role: RoleAdmin, Hash: HashToken("y")}}
		}, "api.tokens[1].name"},
		{"oidc ok", func(c *Config) { c.OIDC = []OIDCConfig{goodOIDC} }, ""},
		{"oidc audience", func(c *Config) { o := goodOIDC; o.Audiences = nil; c.OIDC = []OIDCConfig{o} }, "api.oidc[0].audiences"},
		{"oidc two key sources", func(c *Config) { o := goodOIDC; o.JWKS = "{}"; c.OIDC = []OIDCConfig{o} }, "api.oidc[0].jwks_file"},
		{"oidc HS256", func(c *Config) { o := goodOIDC; o.Algorithms = []string{"HS256"}; c.OIDC = []OIDCConfig{o} }, "api.oidc[0].algorithms[0]"},
		{"oidc none", func(c *Config) { o := goodOIDC; o.Algorithms = []string{"ES256", "none"}; c.OIDC = []OIDCConfig{o} }, "api.oidc[0].algorithms[1]"},
		{"oidc role map", func(c *Config) { o := goodOIDC; o.RoleMap = map[string]Role{"g": "god"}; c.OIDC = []OIDCConfig{o} }, "api.oidc[0].role_map.g"},
		{"oidc discovery", func(c *Config) { o := goodOIDC; o.JWKSFile = ""; c.OIDC = []OIDCConfig{o} }, ""},
		{"oidc discovery over http", func(c *Config) {
			o := goodOIDC
			o.JWKSFile, o.Issuer = "", "http://idp.example.test"
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].issuer"},
		{"browser ok", func(c *Config) { o := goodOIDC; o.Browser = goodBrowser; c.OIDC = []OIDCConfig{o} }, ""},
		{"browser without client id", func(c *Config) {
			o := goodOIDC
			o.Browser = BrowserConfig{RedirectURL: goodBrowser.RedirectURL}
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].browser.client_id"},
		{"browser two secrets", func(c *Config) {
			o := goodOIDC
			o.Browser = goodBrowser
			o.Browser.ClientSecretFile = jwksFile
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].browser.client_secret"},
		{"browser redirect path", func(c *Config) {
			o := goodOIDC
			o.Browser = goodBrowser
			o.Browser.RedirectURL = "https://ehrwatch.example/callback"
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].browser.redirect_url"},
		{"browser redirect http", func(c *Config) {
			o := goodOIDC
			o.Browser = goodBrowser
			o.Browser.RedirectURL = "http://ehrwatch.example/auth/callback"
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].browser.redirect_url"},
		{"browser scope", func(c *Config) {
			o := goodOIDC
			o.Browser = goodBrowser
			o.Browser.Scopes = []string{"openid", "a b"}
			c.OIDC = []OIDCConfig{o}
		}, "api.oidc[0].browser.scopes[1]"},
		{"session timeouts", func(c *Config) { c.Session.AbsoluteTimeout = time.Minute }, "api.session.idle_timeout"},
		{"session bound", func(c *Config) { c.Session.MaxSessions = 0 }, "api.session.max_sessions"},
	}
	for _, c := range cases {
		cfg := DefaultConfig()
		c.mut(&cfg)
		err := schemas.UnderKey("api", cfg.Validate())
		switch {
		case c.key == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.key != "" && (err == nil || !strings.HasPrefix(err.Error(), c.key)):
			t.Errorf("%s: want an error naming %s, got %v", c.name, c.key, err)
		}
	}
}

func TestConfigYAML(t *testing.T) {
	const doc = `
listen: 127.0.0.1:9443
max_report_range: 720h
facility_time_zones: {fac-nyc: America/New_York}
tokens:
  - {name: soc-bot, role: analyst, hash: "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"}
oidc:
  - issuer: https://idp.example.test
    audiences: [ehrwatch]
    jwks: '{"keys": []}'
    role_claim: groups
    role_map: {EHR-Privacy: privacy_officer}
`
	cfg := DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader(doc))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := schemas.UnderKey("api", cfg.Validate()); err != nil {
		t.Fatal(err)
	}
	if cfg.MaxReportRange != 30*24*time.Hour || cfg.PageSize != 100 || cfg.OIDC[0].RoleMap["EHR-Privacy"] != RolePrivacyOfficer {
		t.Fatalf("decoded %+v", cfg)
	}
	opts := cfg.TriageOptions()
	if loc := opts.Location("fac-nyc"); loc == nil || loc.String() != "America/New_York" {
		t.Fatalf("location: %v", loc)
	}
	if opts.Location("elsewhere") != nil {
		t.Fatal("unknown facility has a zone")
	}
}

func TestRolePermissionTable(t *testing.T) {
	want := map[Role][]Permission{
		RoleAnalyst:        {PermAlertsRead, PermAlertsTriage},
		RolePrivacyOfficer: {PermAlertsRead, PermAlertsTriage, PermAlertsReopen, PermReports, PermCases, PermAllowlistWrite},
		RoleAdmin:          {PermAlertsRead, PermAlertsTriage, PermAlertsReopen, PermReports, PermCases, PermAllowlistWrite},
	}
	for r, perms := range want {
		p := &Principal{Roles: []Role{r}}
		if got := p.Permissions(); !slices.Equal(got, perms) {
			t.Errorf("%s: %v, want %v", r, got, perms)
		}
	}
	if (&Principal{}).Can(PermAlertsRead) {
		t.Error("no role, yet a permission")
	}
}

// TestValidateReportsEveryBadKey: the api section reports all its bad keys
// at once, each by its path, not only the first.
func TestValidateReportsEveryBadKey(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Listen = "nowhere"
	cfg.MaxPageSize = 0
	cfg.Tokens = []TokenConfig{{Name: "", Role: "wizard", Hash: "nope"}}
	cfg.OIDC = []OIDCConfig{{}}
	err := schemas.UnderKey("api", cfg.Validate())
	for _, key := range []string{"api.listen:", "api.max_page_size:", "api.tokens[0].name:", "api.tokens[0].role:",
		"api.tokens[0].hash:", "api.oidc[0].issuer:", "api.oidc[0].audiences:"} {
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s not reported in:\n%v", key, err)
		}
	}
}
