package api

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"github.com/ehrwatch/ehrwatch/schemas"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

var (
	keysOnce sync.Once
	rsaKey1  *rsa.PrivateKey
	rsaKey2  *rsa.PrivateKey
	ecKey1   *ecdsa.PrivateKey
	rsaSmall *rsa.PrivateKey
)

func testKeys(t testing.TB) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey1, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if rsaKey2, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		if ecKey1, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			panic(err)
		}
		if rsaSmall, err = rsa.GenerateKey(rand.Reader, 1024); err != nil { //nolint:gosec // test: must be refused
			panic(err)
		}
	})
}

func enc(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func rsaJWK(kid string, k *rsa.PublicKey) map[string]any {
	return map[string]any{"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256",
		"n": enc(k.N.Bytes()), "e": enc(big.NewInt(int64(k.E)).Bytes())}
}

func ecJWK(kid string, k *ecdsa.PublicKey) map[string]any {
	b, err := k.Bytes()
	if err != nil {
		panic(err)
	}
	return map[string]any{"kty": "EC", "kid": kid, "crv": "P-256", "x": enc(b[1:33]), "y": enc(b[33:65])}
}

func jwks(keys ...map[string]any) string {
	b, _ := json.Marshal(map[string]any{"keys": keys})
	return string(b)
}

// signJWT makes a compact JWS. key is *rsa.PrivateKey, *ecdsa.PrivateKey,
// []byte (HMAC) or nil (alg none).
func signJWT(t testing.TB, alg, kid string, key any, claims map[string]any) string {
	t.Helper()
	return signJWTHeader(t, alg, kid, key, claims, nil)
}

// signJWTHeader is signJWT with extra protected header fields.
func signJWTHeader(t testing.TB, alg, kid string, key any, claims, extra map[string]any) string {
	t.Helper()
	hdr := map[string]any{"alg": alg, "typ": "JWT"}
	for k, v := range extra {
		hdr[k] = v
	}
	if kid != "" {
		hdr["kid"] = kid
	}
	hb, _ := json.Marshal(hdr)
	cb, _ := json.Marshal(claims)
	input := enc(hb) + "." + enc(cb)
	digest := sha256.Sum256([]byte(input))
	var sig []byte
	switch k := key.(type) {
	case *rsa.PrivateKey:
		s, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = s
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest[:])
		if err != nil {
			t.Fatal(err)
		}
		sig = make([]byte, 64)
		r.FillBytes(sig[:32])
		s.FillBytes(sig[32:])
	case []byte:
		m := hmac.New(sha256.New, k)
		m.Write([]byte(input))
		sig = m.Sum(nil)
	case nil:
	}
	return input + "." + enc(sig)
}

const (
	testIssuer   = "https://idp.example.test/realms/hospital"
	testAudience = "ehrwatch"
)

var testNow = time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)

func baseClaims() map[string]any {
	return map[string]any{
		"iss": testIssuer, "aud": []string{"other", testAudience}, "sub": "po-jane",
		"exp": testNow.Add(5 * time.Minute).Unix(), "nbf": testNow.Add(-time.Minute).Unix(), "iat": testNow.Add(-time.Minute).Unix(),
		"realm_access": map[string]any{"roles": []string{"offline_access", "EHR-Privacy"}},
	}
}

func testOIDC(jwksJSON string) OIDCConfig {
	return OIDCConfig{Issuer: testIssuer, Audiences: []string{testAudience}, JWKS: jwksJSON,
		RoleClaim: "realm_access.roles", RoleMap: map[string]Role{"EHR-Privacy": RolePrivacyOfficer, "EHR-SOC": RoleAnalyst}}
}

func newTestAuth(t testing.TB, cfg Config) *authenticator {
	t.Helper()
	a, err := newAuthenticator(cfg, http.DefaultClient, func() time.Time { return testNow }, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func authWith(a *authenticator, header string) (*Principal, error) {
	r := httptest.NewRequest("GET", "/api/v1/me", nil)
	if header != "" {
		r.Header.Set("Authorization", header)
	}
	return a.authenticate(context.Background(), r)
}

func TestJWTVerification(t *testing.T) {
	testKeys(t)
	set := jwks(rsaJWK("rsa-1", &rsaKey1.PublicKey), ecJWK("ec-1", &ecKey1.PublicKey))
	a := newTestAuth(t, Config{OIDC: []OIDCConfig{testOIDC(set)}})

	with := func(mut func(c map[string]any)) map[string]any {
		c := baseClaims()
		mut(c)
		return c
	}
	pubDER := rsaKey1.PublicKey.N.Bytes()
	cases := []struct {
		name  string
		token string
		want  string // "" = accepted; else a substring of the error
	}{
		{"valid RS256", signJWT(t, "RS256", "rsa-1", rsaKey1, baseClaims()), ""},
		{"valid ES256", signJWT(t, "ES256", "ec-1", ecKey1, baseClaims()), ""},
		{"aud as a string", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["aud"] = testAudience })), ""},
		{"expired within leeway", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["exp"] = testNow.Add(-30 * time.Second).Unix() })), ""},
		{"expired", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["exp"] = testNow.Add(-2 * time.Minute).Unix() })), "expired"},
		{"no exp", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { delete(c, "exp") })), "exp"},
		{"not yet valid", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["nbf"] = testNow.Add(5 * time.Minute).Unix() })), "not valid yet"},
		{"wrong audience", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["aud"] = "someone-else" })), "audience"},
		{"wrong issuer", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["iss"] = "https://evil.test" })), "issuer"},
		{"alg none", signJWT(t, "none", "", nil, baseClaims()), "algorithm"},
		{"alg none with kid", signJWT(t, "none", "rsa-1", nil, baseClaims()), "algorithm"},
		{"HS256 keyed with the public key", signJWT(t, "HS256", "rsa-1", pubDER, baseClaims()), "algorithm"},
		{"unknown kid", signJWT(t, "RS256", "rsa-9", rsaKey1, baseClaims()), "unknown signing key"},
		{"signed by another key", signJWT(t, "RS256", "rsa-1", rsaKey2, baseClaims()), "signature"},
		{"RS256 header on the EC key", signJWT(t, "RS256", "ec-1", rsaKey1, baseClaims()), "unknown signing key"},
		{"no subject", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { delete(c, "sub") })), "sub"},
		{"garbage", "eyJhbGciOiJSUzI1NiJ9.eyJ.x", "malformed"},
		// go-jose itself understands crit ["b64"]; ehrwatch refuses every critical extension.
		{"crit b64", signJWTHeader(t, "RS256", "rsa-1", rsaKey1, baseClaims(), map[string]any{"crit": []string{"b64"}, "b64": true}), "critical"},
		{"crit unknown", signJWTHeader(t, "RS256", "rsa-1", rsaKey1, baseClaims(), map[string]any{"crit": []string{"x-policy"}, "x-policy": 1}), "critical"},
		{"iat in the future", signJWT(t, "RS256", "rsa-1", rsaKey1, with(func(c map[string]any) { c["iat"] = testNow.Add(10 * time.Minute).Unix() })), "iat"},
		{"ES256 header on the RSA key", signJWT(t, "ES256", "rsa-1", ecKey1, baseClaims()), "unknown signing key"},
	}
	// Tampering: change the payload of a valid token, keep its signature.
	valid := signJWT(t, "RS256", "rsa-1", rsaKey1, baseClaims())
	parts := strings.Split(valid, ".")
	evil := baseClaims()
	evil["realm_access"] = map[string]any{"roles": []string{"EHR-Privacy"}}
	evil["sub"] = "mallory"
	eb, _ := json.Marshal(evil)
	cases = append(cases, struct{ name, token, want string }{"tampered payload", parts[0] + "." + enc(eb) + "." + parts[2], "signature"})
	sig, _ := base64.RawURLEncoding.DecodeString(parts[2])
	sig[10] ^= 1
	cases = append(cases, struct{ name, token, want string }{"tampered signature", parts[0] + "." + parts[1] + "." + enc(sig), "signature"})

	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := authWith(a, "Bearer "+c.token)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				if p.Name != "po-jane" || p.Method != "oidc" || len(p.Roles) != 1 || p.Roles[0] != RolePrivacyOfficer {
					t.Fatalf("principal %+v", p)
				}
				return
			}
			var te *tokenError
			if err == nil || !errors.As(err, &te) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want a token error with %q, got %v (principal %+v)", c.want, err, p)
			}
		})
	}
}

func TestJWTRolesAndKeys(t *testing.T) {
	testKeys(t)
	// Only ES256 allowed: a valid RS256 token is refused.
	cfg := testOIDC(jwks(rsaJWK("rsa-1", &rsaKey1.PublicKey), ecJWK("ec-1", &ecKey1.PublicKey)))
	cfg.Algorithms = []string{"ES256"}
	a := newTestAuth(t, Config{OIDC: []OIDCConfig{cfg}})
	if _, err := authWith(a, "Bearer "+signJWT(t, "RS256", "rsa-1", rsaKey1, baseClaims())); err == nil {
		t.Fatal("RS256 accepted although only ES256 is allowed")
	}

	// No role map: claim values are role names; unknown values are ignored.
	cfg = testOIDC(jwks(rsaJWK("", &rsaKey1.PublicKey)))
	cfg.RoleMap, cfg.RoleClaim = nil, "groups"
	a = newTestAuth(t, Config{OIDC: []OIDCConfig{cfg}})
	c := baseClaims()
	c["groups"] = []string{"analyst", "wizard"}
	// A single kid-less key serves kid-less tokens.
	p, err := authWith(a, "Bearer "+signJWT(t, "RS256", "", rsaKey1, c))
	if err != nil || len(p.Roles) != 1 || p.Roles[0] != RoleAnalyst {
		t.Fatalf("groups claim: %+v %v", p, err)
	}
	// A valid token without any ehrwatch role authenticates, with no permission (→ 403).
	c["groups"] = "nurses"
	p, err = authWith(a, "Bearer "+signJWT(t, "RS256", "", rsaKey1, c))
	if err != nil || len(p.Roles) != 0 || p.Can(PermAlertsRead) {
		t.Fatalf("roleless: %+v %v", p, err)
	}

	// Weak and malformed keys are refused when the JWKS is loaded.
	if _, err := parseJWKS([]byte(jwks(rsaJWK("small", &rsaSmall.PublicKey)))); err == nil || !strings.Contains(err.Error(), "1024") {
		t.Fatalf("1024-bit key: %v", err)
	}
	if _, err := parseJWKS([]byte(`{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}`)); err == nil {
		t.Fatal("symmetric-only JWKS accepted")
	}
	bad := ecJWK("ec", &ecKey1.PublicKey)
	bad["y"] = enc(make([]byte, 32))
	if _, err := parseJWKS([]byte(jwks(bad))); err == nil {
		t.Fatal("off-curve EC point accepted")
	}
}

func TestJWKSFromURLWithRotation(t *testing.T) {
	testKeys(t)
	var current atomic.Value
	current.Store(jwks(rsaJWK("k1", &rsaKey1.PublicKey)))
	var fetches atomic.Int32
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(current.Load().(string)))
	}))
	defer idp.Close()

	now := testNow
	var mu sync.Mutex
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	advance := func(d time.Duration) { mu.Lock(); now = now.Add(d); mu.Unlock() }
	cfg := testOIDC("")
	cfg.JWKS, cfg.JWKSURL = "", idp.URL+"/certs"
	if err := (Config{OIDC: []OIDCConfig{cfg}}).OIDC[0].validate(); err != nil {
		t.Fatal(err)
	}
	a, err := newAuthenticator(Config{OIDC: []OIDCConfig{cfg}}, idp.Client(), clock, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	claims := func() map[string]any {
		c := baseClaims()
		c["exp"] = clock().Add(5 * time.Minute).Unix()
		return c
	}
	if _, err := authWith(a, "Bearer "+signJWT(t, "RS256", "k1", rsaKey1, claims())); err != nil {
		t.Fatal(err)
	}
	if _, err := authWith(a, "Bearer "+signJWT(t, "RS256", "k1", rsaKey1, claims())); err != nil {
		t.Fatal(err)
	}
	if n := fetches.Load(); n != 1 {
		t.Fatalf("JWKS fetched %d times, want 1 (cached)", n)
	}
	// The issuer rotates to k2: the unknown kid forces one refresh.
	current.Store(jwks(rsaJWK("k2", &rsaKey2.PublicKey)))
	advance(2 * time.Minute)
	if _, err := authWith(a, "Bearer "+signJWT(t, "RS256", "k2", rsaKey2, claims())); err != nil {
		t.Fatalf("after rotation: %v", err)
	}
	// Unknown kids do not hammer the issuer: one forced refresh a minute.
	before := fetches.Load()
	for range 5 {
		if _, err := authWith(a, "Bearer "+signJWT(t, "RS256", "k9", rsaKey2, claims())); err == nil {
			t.Fatal("unknown kid accepted")
		}
	}
	if got := fetches.Load() - before; got > 1 {
		t.Fatalf("%d refreshes for 5 unknown-kid tokens", got)
	}
	// Plain http to a non-loopback host is refused by the config.
	cfg.JWKSURL = "http://idp.example.test/certs"
	if err := schemas.UnderKey("api.oidc[0]", cfg.validate()); err == nil || !strings.Contains(err.Error(), "api.oidc[0].jwks_url") {
		t.Fatalf("http JWKS URL: %v", err)
	}
}

func TestStaticTokens(t *testing.T) {
	cfg := Config{Tokens: []TokenConfig{
		{Name: "soc-bot", Role: RoleAnalyst, Hash: HashToken("s3cret-analyst-token")},
		{Name: "po-desk", Role: RolePrivacyOfficer, Hash: HashToken("s3cret-po-token")},
	}}
	a := newTestAuth(t, cfg)
	p, err := authWith(a, "Bearer s3cret-analyst-token")
	if err != nil || p.Name != "soc-bot" || p.Method != "token" || p.Roles[0] != RoleAnalyst {
		t.Fatalf("analyst token: %+v %v", p, err)
	}
	if p, err = authWith(a, "bearer s3cret-po-token"); err != nil || p.Name != "po-desk" {
		t.Fatalf("scheme is case-insensitive: %+v %v", p, err)
	}
	for _, h := range []string{"Bearer s3cret-analyst-tokeN", "Bearer s3cret-analyst-token2", "Basic c29jOnB3", "Bearer ", "Bearer a b", "Bearer \x00x"} {
		if _, err := authWith(a, h); err == nil || errors.Is(err, errNoCredentials) {
			t.Errorf("%q: %v", h, err)
		}
	}
	if _, err := authWith(a, ""); !errors.Is(err, errNoCredentials) {
		t.Errorf("no header: %v", err)
	}
	if HashToken("x") != "sha256:2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881" {
		t.Errorf("HashToken: %s", HashToken("x"))
	}
}

func TestIDTokenVerification(t *testing.T) {
	testKeys(t)
	cfg := testOIDC(jwks(rsaJWK("rsa-1", &rsaKey1.PublicKey)))
	cfg.Browser = BrowserConfig{ClientID: "console", RedirectURL: "https://ehrwatch.example/auth/callback"}
	v, err := newOIDCVerifier(cfg, http.DefaultClient, func() time.Time { return testNow }, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	idToken := func(mut func(c map[string]any)) string {
		c := baseClaims()
		c["aud"], c["nonce"] = "console", "n-1"
		mut(c)
		return signJWT(t, "RS256", "rsa-1", rsaKey1, c)
	}
	p, err := v.verifyIDToken(context.Background(), idToken(func(map[string]any) {}), "n-1")
	if err != nil || p.Name != "po-jane" || p.Roles[0] != RolePrivacyOfficer {
		t.Fatalf("valid ID token: %+v %v", p, err)
	}
	for name, c := range map[string]struct {
		tok, nonce, want string
	}{
		"wrong nonce":           {idToken(func(map[string]any) {}), "n-2", "nonce"},
		"no nonce":              {idToken(func(c map[string]any) { delete(c, "nonce") }), "n-1", "nonce"},
		"bearer audience":       {idToken(func(c map[string]any) { c["aud"] = testAudience }), "n-1", "audience"},
		"other client's azp":    {idToken(func(c map[string]any) { c["aud"], c["azp"] = []string{"console", "other"}, "other" }), "n-1", "azp"},
		"expired":               {idToken(func(c map[string]any) { c["exp"] = testNow.Add(-time.Hour).Unix() }), "n-1", "expired"},
		"crit":                  {signJWTHeader(t, "RS256", "rsa-1", rsaKey1, map[string]any{"iss": testIssuer, "aud": "console", "sub": "x", "nonce": "n-1", "exp": testNow.Add(time.Minute).Unix()}, map[string]any{"crit": []string{"b64"}, "b64": true}), "n-1", "critical"},
		"alg none":              {signJWT(t, "none", "", nil, map[string]any{"iss": testIssuer, "aud": "console", "sub": "x", "nonce": "n-1", "exp": testNow.Add(time.Minute).Unix()}), "n-1", "algorithm"},
		"signed by another key": {signJWT(t, "RS256", "rsa-1", rsaKey2, map[string]any{"iss": testIssuer, "aud": "console", "sub": "x", "nonce": "n-1", "exp": testNow.Add(time.Minute).Unix()}), "n-1", "signature"},
	} {
		if _, err := v.verifyIDToken(context.Background(), c.tok, c.nonce); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want an error with %q, got %v", name, c.want, err)
		}
	}
}

// BenchmarkBearerJWT: one bearer JWT checked end to end (pre-parse,
// go-oidc, key by kid, signature, claims, roles).
func BenchmarkBearerJWT(b *testing.B) {
	testKeys(b)
	a := newTestAuth(b, Config{OIDC: []OIDCConfig{testOIDC(jwks(rsaJWK("rsa-1", &rsaKey1.PublicKey), ecJWK("ec-1", &ecKey1.PublicKey)))}})
	for _, alg := range []struct {
		name, kid string
		key       any
	}{{"RS256", "rsa-1", rsaKey1}, {"ES256", "ec-1", ecKey1}} {
		tok := "Bearer " + signJWT(b, alg.name, alg.kid, alg.key, baseClaims())
		b.Run(alg.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := authWith(a, tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
