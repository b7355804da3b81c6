// Package oidctest starts an in-process OpenID provider for tests of the
// console's sign-in: github.com/oauth2-proxy/mockoidc, a small, maintained
// provider with discovery, JWKS, the authorization code flow with PKCE
// (plain and S256), nonces and single-use codes. It has no login form:
// its authorization endpoint signs in the next queued user at once and
// redirects back with a code, so a cookie-jar HTTP client or a headless
// browser can drive the whole flow.
//
// It is an ordinary (non-internal) package so that tests anywhere in the
// module, cmd/ehrwatch's browser tests included, can import it.
package oidctest

import (
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
)

// Provider is a running in-process OpenID provider.
type Provider struct {
	m  *mockoidc.MockOIDC
	mu *sync.Mutex // serializes the provider's handlers and clock changes
}

// Start starts a provider on 127.0.0.1 (plain HTTP, which ehrwatch allows
// for loopback issuers) and stops it when the test ends.
func Start(t testing.TB) *Provider {
	t.Helper()
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	// mockoidc's code store is a plain map: serve one request at a time.
	mu := &sync.Mutex{}
	if err := m.AddMiddleware(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			next.ServeHTTP(w, r)
		})
	}); err != nil {
		t.Fatalf("oidctest: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("oidctest: listen: %v", err)
	}
	if err := m.Start(ln, nil); err != nil {
		t.Fatalf("oidctest: start: %v", err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return &Provider{m: m, mu: mu}
}

// Issuer is the provider's issuer URL (http://127.0.0.1:<port>/oidc).
func (p *Provider) Issuer() string { return p.m.Issuer() }

// ClientID and ClientSecret are the one client the provider knows.
func (p *Provider) ClientID() string     { return p.m.ClientID }
func (p *Provider) ClientSecret() string { return p.m.ClientSecret }

// TokenEndpoint is where codes are redeemed (tests that call it directly).
func (p *Provider) TokenEndpoint() string { return p.m.TokenEndpoint() }

// SignInAs makes the next authorization request sign in subject, whose ID
// token carries groups in its "groups" claim (requested with the "groups"
// scope, which Config asks for). Queue one user per sign-in; with none
// queued the provider signs in mockoidc's default user (groups
// "engineering", "design": no ehrwatch role).
func (p *Provider) SignInAs(subject string, groups ...string) {
	p.m.QueueUser(&mockoidc.MockUser{Subject: subject, PreferredUsername: subject,
		Email: subject + "@hospital.test", EmailVerified: true, Groups: groups})
}

// AccessTTL sets how long the ID tokens it issues are valid (default 10m).
func (p *Provider) AccessTTL(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.AccessTTL = d
}

// Config is the api.OIDCConfig that trusts this provider for bearer tokens
// (keys from discovery) and signs people in to the console whose callback
// browsers reach at redirectURL ("http://127.0.0.1:<port>/auth/callback").
// Roles come from the "groups" claim through roleMap.
func (p *Provider) Config(redirectURL string, roleMap map[string]api.Role) api.OIDCConfig {
	return api.OIDCConfig{
		Issuer:    p.Issuer(),
		Audiences: []string{p.ClientID()},
		RoleClaim: "groups",
		RoleMap:   roleMap,
		Browser: api.BrowserConfig{
			Name:         "Test IdP",
			ClientID:     p.ClientID(),
			ClientSecret: p.ClientSecret(),
			RedirectURL:  redirectURL,
			Scopes:       []string{"openid", "profile", "email", "groups"},
		},
	}
}

// Advance moves the provider's clock forward (tests with a fake clock
// keep the provider's token times in step with it).
func (p *Provider) Advance(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.m.FastForward(d)
}
