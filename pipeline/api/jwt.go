package api

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	jose "github.com/go-jose/go-jose/v4"
	"github.com/rs/zerolog"
)

// Bearer JWTs and browser ID tokens are verified by go-oidc
// (github.com/coreos/go-oidc/v3: issuer, expiry, allowed algorithms, and the
// signature through the KeySet below) on top of go-jose
// (github.com/go-jose/go-jose/v4: JWS parsing, JWK decoding, signature
// checks). What ehrwatch adds, and why:
//
//   - issuerKeys, its own oidc.KeySet: go-oidc's StaticKeySet tries every
//     key and ignores the token's kid, and its RemoteKeySet refetches the
//     JWKS on every unknown kid (an unauthenticated caller could make
//     ehrwatch hammer the IdP). issuerKeys picks the key by kid and alg,
//     refuses weak keys (RSA < 2048 bits, curves other than P-256), and
//     refreshes a remote JWKS every jwks_refresh and at most once a minute
//     on an unknown kid, keeping the previous keys when a refresh fails.
//   - A pre-parse (go-jose) that refuses any "crit" header: go-jose
//     understands crit: ["b64"] (RFC 7797 unencoded payloads), which JWTs
//     must not use (RFC 7797 §7), so a JWT naming any critical extension is
//     refused outright, as before.
//   - Several accepted audiences, a configurable leeway on nbf/iat (go-oidc
//     hard-codes 5 minutes on nbf and none on exp; exp's leeway is applied
//     through go-oidc's clock), the subject claim and the role claim.

// supportedAlgs are the JWS algorithms ehrwatch verifies. "none" and the
// HMAC family are never accepted: with public keys in a JWKS, accepting
// HS256 would let anyone sign with the public key as the HMAC secret.
var supportedAlgs = map[string]bool{"RS256": true, "ES256": true}

// parseAlgs are what a token is parsed with, so that a refused algorithm
// is reported as such; only the configured algorithms are ever verified.
var parseAlgs = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
	jose.ES256, jose.ES384, jose.ES512, jose.EdDSA, jose.HS256, jose.HS384, jose.HS512, "none"}

const (
	maxJWTBytes       = 16 << 10
	maxJWKSBytes      = 1 << 20
	minRSABits        = 2048
	defaultLeeway     = 60 * time.Second
	defaultJWKSTTL    = 15 * time.Minute
	minForcedRefresh  = time.Minute
	jwksFetchTimeout  = 10 * time.Second
	defaultRoleClaim  = "roles"
	defaultSubjectClm = "sub"
)

// tokenError is why a bearer token was refused; Desc is safe to send back
// in WWW-Authenticate (it never contains token content).
type tokenError struct{ Desc string }

func (e *tokenError) Error() string { return "invalid token: " + e.Desc }

func badToken(format string, args ...any) error {
	return &tokenError{Desc: fmt.Sprintf(format, args...)}
}

// parseJWKS reads the public signing keys of a JWKS (RFC 7517) with
// go-jose. Keys for encryption, symmetric keys, RSA keys under 2048 bits and
// EC keys off P-256 are skipped; a set without one usable key is an error.
func parseJWKS(data []byte) (keySet, error) {
	var doc struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: not a JSON key set: %w", err)
	}
	var out keySet
	var skipped []string
	for i, raw := range doc.Keys {
		var k jose.JSONWebKey
		if err := k.UnmarshalJSON(raw); err != nil {
			skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
			continue
		}
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		switch pub := k.Key.(type) {
		case *rsa.PublicKey:
			if bits := pub.N.BitLen(); bits < minRSABits {
				skipped = append(skipped, fmt.Sprintf("keys[%d]: RSA key of %d bits (want ≥ %d)", i, bits, minRSABits))
				continue
			}
		case *ecdsa.PublicKey:
			if pub.Curve != elliptic.P256() {
				skipped = append(skipped, fmt.Sprintf("keys[%d]: EC curve %s (want P-256)", i, pub.Curve.Params().Name))
				continue
			}
		default: // symmetric, private or other key types
			continue
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("JWKS: no usable signing key (%s)", strings.Join(skipped, "; "))
		}
		return nil, errors.New("JWKS: no usable signing key (RSA ≥ 2048 bits or EC P-256)")
	}
	return out, nil
}

type keySet []jose.JSONWebKey

func keyFits(k jose.JSONWebKey, alg string) bool {
	if k.Algorithm != "" && k.Algorithm != alg {
		return false
	}
	switch alg {
	case "RS256":
		_, ok := k.Key.(*rsa.PublicKey)
		return ok
	case "ES256":
		ec, ok := k.Key.(*ecdsa.PublicKey)
		return ok && ec.Curve == elliptic.P256()
	}
	return false
}

var errUnknownKid = errors.New("unknown key id")

// find picks the key for a token's kid and alg. A token without kid is
// accepted only when exactly one key fits the algorithm.
func (ks keySet) find(kid, alg string) (jose.JSONWebKey, error) {
	var fit []jose.JSONWebKey
	for _, k := range ks {
		if keyFits(k, alg) && (kid == "" || k.KeyID == kid) {
			fit = append(fit, k)
		}
	}
	switch {
	case len(fit) == 1:
		return fit[0], nil
	case len(fit) == 0:
		return jose.JSONWebKey{}, errUnknownKid
	}
	if kid == "" {
		return jose.JSONWebKey{}, badToken("token has no kid and several keys fit")
	}
	return jose.JSONWebKey{}, badToken("several keys share the kid")
}

// keySource yields an issuer's current keys.
type keySource interface {
	keys(ctx context.Context, refresh bool) (keySet, error)
}

type staticKeys keySet

func (s staticKeys) keys(context.Context, bool) (keySet, error) { return keySet(s), nil }

// remoteKeys fetches a JWKS over HTTPS and caches it. A failed refresh keeps
// the previous keys; an unknown kid forces a refresh at most once a minute.
// url returns the JWKS URL (configured, or discovered).
type remoteKeys struct {
	url    func(ctx context.Context) (string, error)
	ttl    time.Duration
	client *http.Client
	now    func() time.Time
	log    zerolog.Logger

	mu         sync.Mutex
	set        keySet
	fetchedAt  time.Time
	lastForced time.Time
}

func (r *remoteKeys) keys(ctx context.Context, refresh bool) (keySet, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.now()
	fresh := r.set != nil && now.Sub(r.fetchedAt) < r.ttl
	if fresh && !refresh {
		return r.set, nil
	}
	if refresh && r.set != nil {
		if now.Sub(r.lastForced) < minForcedRefresh {
			return r.set, nil
		}
		r.lastForced = now
	}
	set, err := r.fetch(ctx)
	if err != nil {
		if r.set != nil {
			r.log.Warn().Err(err).Msg("JWKS refresh failed; keeping the previous keys")
			r.fetchedAt = now // retry after another ttl, not on every request
			return r.set, nil
		}
		return nil, err
	}
	r.set, r.fetchedAt = set, now
	return set, nil
}

func (r *remoteKeys) fetch(ctx context.Context) (keySet, error) {
	ctx, cancel := context.WithTimeout(ctx, jwksFetchTimeout)
	defer cancel()
	u, err := r.url(ctx)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := r.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch JWKS: HTTP %d", resp.StatusCode)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSBytes+1))
	if err != nil {
		return nil, fmt.Errorf("fetch JWKS: %w", err)
	}
	if len(body) > maxJWKSBytes {
		return nil, errors.New("fetch JWKS: document too large")
	}
	return parseJWKS(body)
}

// checkIdPURL requires https, except for loopback hosts (a local IdP or
// sidecar).
func checkIdPURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" {
		return errors.New("not an absolute URL")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
			return nil
		}
	}
	return errors.New("must be https (http only for loopback hosts)")
}

// issuerKeys is the oidc.KeySet of one issuer: it verifies a JWS with the
// key its kid and alg select.
type issuerKeys struct {
	src  keySource
	algs []jose.SignatureAlgorithm
}

// sigOutcome carries issuerKeys' typed error (go-oidc flattens it into
// text) and the verified payload back to the caller of go-oidc.
type sigOutcome struct {
	err     error
	payload []byte
}

type sigOutcomeKey struct{}

func (k *issuerKeys) VerifySignature(ctx context.Context, raw string) ([]byte, error) {
	out, _ := ctx.Value(sigOutcomeKey{}).(*sigOutcome)
	if out == nil {
		out = &sigOutcome{}
	}
	payload, err := k.verify(ctx, raw)
	out.err, out.payload = err, payload
	return payload, err
}

func (k *issuerKeys) verify(ctx context.Context, raw string) ([]byte, error) {
	jws, err := jose.ParseSignedCompact(raw, k.algs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, badToken("algorithm not allowed or malformed JWT")
	}
	h := jws.Signatures[0].Protected
	ks, err := k.src.keys(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("issuer keys unavailable: %w", err)
	}
	key, err := ks.find(h.KeyID, h.Algorithm)
	if errors.Is(err, errUnknownKid) {
		// The issuer may have rotated its keys.
		if ks, err = k.src.keys(ctx, true); err == nil {
			key, err = ks.find(h.KeyID, h.Algorithm)
		}
	}
	if err != nil {
		if errors.Is(err, errUnknownKid) {
			return nil, badToken("unknown signing key")
		}
		return nil, err
	}
	payload, err := jws.Verify(key.Key)
	if err != nil {
		return nil, badToken("bad signature")
	}
	return payload, nil
}

// discovery is an issuer's OpenID Provider metadata, fetched on first use
// (so that ehrwatch starts while the IdP is down) and retried at most every
// 10 seconds after a failure.
type discovery struct {
	issuer string
	client *http.Client
	now    func() time.Time

	mu       sync.Mutex
	provider *oidc.Provider
	jwksURI  string
	err      error
	failedAt time.Time
}

const discoveryRetry = 10 * time.Second

func (d *discovery) get(ctx context.Context) (*oidc.Provider, string, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.provider != nil {
		return d.provider, d.jwksURI, nil
	}
	if d.err != nil && d.now().Sub(d.failedAt) < discoveryRetry {
		return nil, "", d.err
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, d.client), jwksFetchTimeout)
	defer cancel()
	p, err := oidc.NewProvider(ctx, d.issuer)
	var meta struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err == nil {
		err = p.Claims(&meta)
	}
	if err == nil {
		if e := checkIdPURL(meta.JWKSURI); e != nil {
			err = fmt.Errorf("jwks_uri %v", e)
		}
	}
	if err != nil {
		d.err, d.failedAt = fmt.Errorf("OpenID discovery for %s: %w", d.issuer, err), d.now()
		return nil, "", d.err
	}
	d.provider, d.jwksURI, d.err = p, meta.JWKSURI, nil
	return p, meta.JWKSURI, nil
}

// oidcVerifier verifies the JWTs of one issuer: bearer tokens (audience one
// of cfg.Audiences) and, for browser sign-in, ID tokens (audience the
// client id).
type oidcVerifier struct {
	cfg    OIDCConfig
	algs   map[string]bool
	keys   *issuerKeys
	bearer *oidc.IDTokenVerifier
	idTok  *oidc.IDTokenVerifier // nil without browser sign-in
	disc   *discovery
	leeway time.Duration
	now    func() time.Time
}

func newOIDCVerifier(cfg OIDCConfig, client *http.Client, now func() time.Time, log zerolog.Logger) (*oidcVerifier, error) {
	v := &oidcVerifier{cfg: cfg, algs: map[string]bool{}, leeway: cfg.Leeway, now: now,
		disc: &discovery{issuer: cfg.Issuer, client: client, now: now}}
	if v.leeway == 0 {
		v.leeway = defaultLeeway
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{"RS256", "ES256"}
	}
	var joseAlgs []jose.SignatureAlgorithm
	for _, a := range algs {
		if !supportedAlgs[a] {
			return nil, fmt.Errorf("algorithm %q is not supported", a)
		}
		v.algs[a] = true
		joseAlgs = append(joseAlgs, jose.SignatureAlgorithm(a))
	}
	if v.cfg.RoleClaim == "" {
		v.cfg.RoleClaim = defaultRoleClaim
	}
	if v.cfg.SubjectClaim == "" {
		v.cfg.SubjectClaim = defaultSubjectClm
	}
	var src keySource
	ttl := cfg.JWKSRefresh
	if ttl == 0 {
		ttl = defaultJWKSTTL
	}
	switch {
	case cfg.JWKSURL != "":
		u := cfg.JWKSURL
		src = &remoteKeys{url: func(context.Context) (string, error) { return u, nil }, ttl: ttl, client: client, now: now, log: log}
	case cfg.JWKS != "" || cfg.JWKSFile != "":
		data := []byte(cfg.JWKS)
		if cfg.JWKSFile != "" {
			var err error
			if data, err = os.ReadFile(cfg.JWKSFile); err != nil {
				return nil, fmt.Errorf("jwks_file: %w", err)
			}
		}
		ks, err := parseJWKS(data)
		if err != nil {
			return nil, err
		}
		src = staticKeys(ks)
	default: // the jwks_uri of the issuer's discovery document
		src = &remoteKeys{url: func(ctx context.Context) (string, error) {
			_, u, err := v.disc.get(ctx)
			return u, err
		}, ttl: ttl, client: client, now: now, log: log}
	}
	v.keys = &issuerKeys{src: src, algs: joseAlgs}
	// go-oidc checks exp strictly against Now: the leeway moves its clock back.
	clock := func() time.Time { return v.now().Add(-v.leeway) }
	v.bearer = oidc.NewVerifier(cfg.Issuer, v.keys, &oidc.Config{
		SkipClientIDCheck:    true, // several audiences may be accepted: checked in claims
		SupportedSigningAlgs: algs, Now: clock,
	})
	if cfg.Browser.enabled() {
		v.idTok = oidc.NewVerifier(cfg.Issuer, v.keys, &oidc.Config{
			ClientID: cfg.Browser.ClientID, SupportedSigningAlgs: algs, Now: clock,
		})
	}
	return v, nil
}

// verify checks a bearer token and returns the caller.
func (v *oidcVerifier) verify(ctx context.Context, raw string) (*Principal, error) {
	payload, err := v.run(ctx, v.bearer, raw)
	if err != nil {
		return nil, err
	}
	return v.claims(payload, v.cfg.Audiences)
}

// verifyIDToken checks an ID token from the token endpoint and its nonce.
func (v *oidcVerifier) verifyIDToken(ctx context.Context, raw, nonce string) (*Principal, error) {
	if v.idTok == nil {
		return nil, errors.New("browser sign-in is not configured for this issuer")
	}
	jws, err := preParse(raw)
	if err != nil {
		return nil, err
	}
	if !v.algs[jws.Signatures[0].Protected.Algorithm] {
		return nil, badToken("algorithm not allowed")
	}
	out := &sigOutcome{}
	tok, err := v.idTok.Verify(context.WithValue(ctx, sigOutcomeKey{}, out), raw)
	if err != nil {
		return nil, v.explain(err, out, []string{v.cfg.Browser.ClientID})
	}
	if tok.Nonce == "" || !constantEqual(tok.Nonce, nonce) {
		return nil, badToken("ID token nonce does not match the sign-in")
	}
	// OpenID Connect Core §3.1.3.7: an azp, when present, must be us.
	var azp struct {
		Azp string `json:"azp"`
	}
	if err := tok.Claims(&azp); err != nil || (azp.Azp != "" && azp.Azp != v.cfg.Browser.ClientID) {
		return nil, badToken("ID token issued to another client (azp)")
	}
	return v.claims(out.payload, []string{v.cfg.Browser.ClientID})
}

// run has go-oidc verify raw with verifier and returns the verified
// payload, or the precise reason it was refused.
func (v *oidcVerifier) run(ctx context.Context, verifier *oidc.IDTokenVerifier, raw string) ([]byte, error) {
	out := &sigOutcome{}
	if _, err := verifier.Verify(context.WithValue(ctx, sigOutcomeKey{}, out), raw); err != nil {
		return nil, v.explain(err, out, v.cfg.Audiences)
	}
	return out.payload, nil
}

func (v *oidcVerifier) explain(err error, out *sigOutcome, audiences []string) error {
	if out.err != nil {
		return out.err // typed: token error, or keys unavailable
	}
	var expired *oidc.TokenExpiredError
	if errors.As(err, &expired) {
		if expired.Expiry.IsZero() {
			return badToken("exp claim missing or malformed")
		}
		return badToken("token expired")
	}
	if out.payload != nil {
		// Signed by the issuer but refused by go-oidc: name the claim.
		if _, cerr := v.claims(out.payload, audiences); cerr != nil {
			return cerr
		}
		if strings.Contains(err.Error(), "audience") {
			return badToken("wrong audience")
		}
		return badToken("claims refused")
	}
	return badToken("malformed JWT")
}

// preParse splits a compact JWS with go-jose before go-oidc sees it, to
// refuse what go-oidc would let through (any crit header) and to report
// the algorithm and issuer it is about. The payload is not trusted yet.
func preParse(raw string) (*jose.JSONWebSignature, error) {
	if len(raw) > maxJWTBytes {
		return nil, badToken("token too large")
	}
	jws, err := jose.ParseSignedCompact(raw, parseAlgs)
	if err != nil || len(jws.Signatures) != 1 {
		return nil, badToken("malformed JWT")
	}
	if _, ok := jws.Signatures[0].Protected.ExtraHeaders["crit"]; ok {
		return nil, badToken("unsupported critical header")
	}
	return jws, nil
}

// claims checks what go-oidc leaves to the caller (audience against a
// list, nbf and iat with the configured leeway, the subject claim) and maps
// the role claim. payload has been verified.
func (v *oidcVerifier) claims(payload []byte, audiences []string) (*Principal, error) {
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		return nil, badToken("malformed claims")
	}
	if iss, _ := c["iss"].(string); iss != v.cfg.Issuer {
		return nil, badToken("wrong issuer")
	}
	if !audienceOK(c["aud"], audiences) {
		return nil, badToken("wrong audience")
	}
	now := v.now()
	exp, ok := numericDate(c["exp"])
	if !ok {
		return nil, badToken("exp claim missing or malformed")
	}
	if now.After(exp.Add(v.leeway)) {
		return nil, badToken("token expired")
	}
	if _, present := c["nbf"]; present {
		nbf, ok := numericDate(c["nbf"])
		if !ok {
			return nil, badToken("nbf claim malformed")
		}
		if now.Add(v.leeway).Before(nbf) {
			return nil, badToken("token not valid yet")
		}
	}
	if _, present := c["iat"]; present {
		iat, ok := numericDate(c["iat"])
		if !ok || now.Add(v.leeway).Before(iat) {
			return nil, badToken("iat claim malformed or in the future")
		}
	}
	sub, _ := claimAt(c, v.cfg.SubjectClaim).(string)
	if sub == "" || len(sub) > 256 {
		return nil, badToken("%s claim missing", v.cfg.SubjectClaim)
	}
	p := &Principal{Name: sub, Method: "oidc"}
	seen := map[Role]bool{}
	for _, val := range stringsOf(claimAt(c, v.cfg.RoleClaim)) {
		r := Role(val)
		if len(v.cfg.RoleMap) > 0 {
			r = v.cfg.RoleMap[val]
		}
		if r.Valid() && !seen[r] {
			seen[r] = true
			p.Roles = append(p.Roles, r)
		}
	}
	return p, nil
}

func audienceOK(aud any, want []string) bool {
	for _, a := range stringsOf(aud) {
		for _, w := range want {
			if a == w {
				return true
			}
		}
	}
	return false
}

// stringsOf returns a claim that is a string or a list of strings.
func stringsOf(v any) []string {
	switch x := v.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// claimAt follows a dotted path ("realm_access.roles"); a claim whose own
// name contains dots is found first.
func claimAt(c map[string]any, path string) any {
	if v, ok := c[path]; ok {
		return v
	}
	var cur any = c
	for _, part := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[part]
	}
	return cur
}

func numericDate(v any) (time.Time, bool) {
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > 1e11 {
		return time.Time{}, false
	}
	sec := int64(f)
	return time.Unix(sec, int64((f-float64(sec))*1e9)), true
}
