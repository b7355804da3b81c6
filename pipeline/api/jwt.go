package api

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// supportedAlgs are the JWS algorithms ehrwatch verifies. "none" and the
// HMAC family are never accepted: with public keys in a JWKS, accepting
// HS256 would let anyone sign with the public key as the HMAC secret.
var supportedAlgs = map[string]bool{"RS256": true, "ES256": true}

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

var b64 = base64.RawURLEncoding.Strict()

// publicKey is one usable key of a JWKS.
type publicKey struct {
	kid, alg string
	rsa      *rsa.PublicKey
	ec       *ecdsa.PublicKey
}

func (k publicKey) fits(alg string) bool {
	if k.alg != "" && k.alg != alg {
		return false
	}
	switch alg {
	case "RS256":
		return k.rsa != nil
	case "ES256":
		return k.ec != nil && k.ec.Curve == elliptic.P256()
	}
	return false
}

type keySet []publicKey

// parseJWKS reads the public signing keys of a JWKS (RFC 7517). Keys for
// encryption, symmetric keys and unsupported types are skipped; a set
// without one usable key is an error.
func parseJWKS(data []byte) (keySet, error) {
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Use string `json:"use"`
			Alg string `json:"alg"`
			N   string `json:"n"`
			E   string `json:"e"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("JWKS: not a JSON key set: %w", err)
	}
	var out keySet
	var skipped []string
	for i, k := range doc.Keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		pk := publicKey{kid: k.Kid, alg: k.Alg}
		switch k.Kty {
		case "RSA":
			key, err := rsaKey(k.N, k.E)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
				continue
			}
			pk.rsa = key
		case "EC":
			key, err := ecKey(k.Crv, k.X, k.Y)
			if err != nil {
				skipped = append(skipped, fmt.Sprintf("keys[%d]: %v", i, err))
				continue
			}
			pk.ec = key
		default:
			continue
		}
		out = append(out, pk)
	}
	if len(out) == 0 {
		if len(skipped) > 0 {
			return nil, fmt.Errorf("JWKS: no usable signing key (%s)", strings.Join(skipped, "; "))
		}
		return nil, errors.New("JWKS: no usable signing key (RSA ≥ 2048 bits or EC P-256)")
	}
	return out, nil
}

func rsaKey(n64, e64 string) (*rsa.PublicKey, error) {
	nb, err := b64.DecodeString(n64)
	if err != nil || len(nb) == 0 {
		return nil, errors.New("bad RSA modulus")
	}
	eb, err := b64.DecodeString(e64)
	if err != nil || len(eb) == 0 || len(eb) > 4 {
		return nil, errors.New("bad RSA exponent")
	}
	e := 0
	for _, c := range eb {
		e = e<<8 | int(c)
	}
	n := new(big.Int).SetBytes(nb)
	if n.BitLen() < minRSABits {
		return nil, fmt.Errorf("RSA key of %d bits (want ≥ %d)", n.BitLen(), minRSABits)
	}
	if e < 3 || e%2 == 0 {
		return nil, errors.New("bad RSA exponent")
	}
	return &rsa.PublicKey{N: n, E: e}, nil
}

func ecKey(crv, x64, y64 string) (*ecdsa.PublicKey, error) {
	if crv != "P-256" {
		return nil, fmt.Errorf("EC curve %q (want P-256)", crv)
	}
	x, err1 := b64.DecodeString(x64)
	y, err2 := b64.DecodeString(y64)
	if err1 != nil || err2 != nil || len(x) != 32 || len(y) != 32 {
		return nil, errors.New("bad EC coordinates")
	}
	pt := append(append([]byte{4}, x...), y...)
	key, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), pt)
	if err != nil {
		return nil, errors.New("EC point not on P-256")
	}
	return key, nil
}

var errUnknownKid = errors.New("unknown key id")

// find picks the key for a token's kid and alg. A token without kid is
// accepted only when exactly one key fits the algorithm.
func (ks keySet) find(kid, alg string) (publicKey, error) {
	var fit []publicKey
	for _, k := range ks {
		if k.fits(alg) && (kid == "" || k.kid == kid) {
			fit = append(fit, k)
		}
	}
	switch {
	case len(fit) == 1:
		return fit[0], nil
	case len(fit) == 0:
		return publicKey{}, errUnknownKid
	}
	if kid == "" {
		return publicKey{}, badToken("token has no kid and several keys fit")
	}
	return publicKey{}, badToken("several keys share the kid")
}

// keySource yields an issuer's current keys.
type keySource interface {
	keys(ctx context.Context, refresh bool) (keySet, error)
}

type staticKeys keySet

func (s staticKeys) keys(context.Context, bool) (keySet, error) { return keySet(s), nil }

// remoteKeys fetches a JWKS over HTTPS and caches it. A failed refresh keeps
// the previous keys; an unknown kid forces a refresh at most once a minute.
type remoteKeys struct {
	url    string
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
			r.log.Warn().Err(err).Str("jwks_url", r.url).Msg("JWKS refresh failed; keeping the previous keys")
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
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.url, nil)
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

// checkJWKSURL requires https, except for loopback hosts (a local IdP or
// sidecar).
func checkJWKSURL(s string) error {
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

// oidcVerifier verifies the JWTs of one issuer.
type oidcVerifier struct {
	cfg    OIDCConfig
	algs   map[string]bool
	src    keySource
	leeway time.Duration
	now    func() time.Time
}

func newOIDCVerifier(cfg OIDCConfig, client *http.Client, now func() time.Time, log zerolog.Logger) (*oidcVerifier, error) {
	v := &oidcVerifier{cfg: cfg, algs: map[string]bool{}, leeway: cfg.Leeway, now: now}
	if v.leeway == 0 {
		v.leeway = defaultLeeway
	}
	algs := cfg.Algorithms
	if len(algs) == 0 {
		algs = []string{"RS256", "ES256"}
	}
	for _, a := range algs {
		if !supportedAlgs[a] {
			return nil, fmt.Errorf("algorithm %q is not supported", a)
		}
		v.algs[a] = true
	}
	if v.cfg.RoleClaim == "" {
		v.cfg.RoleClaim = defaultRoleClaim
	}
	if v.cfg.SubjectClaim == "" {
		v.cfg.SubjectClaim = defaultSubjectClm
	}
	switch {
	case cfg.JWKSURL != "":
		ttl := cfg.JWKSRefresh
		if ttl == 0 {
			ttl = defaultJWKSTTL
		}
		v.src = &remoteKeys{url: cfg.JWKSURL, ttl: ttl, client: client, now: now, log: log}
	default:
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
		v.src = staticKeys(ks)
	}
	return v, nil
}

// jwtParts is a compact JWS split and decoded, not yet verified.
type jwtParts struct {
	header struct {
		Alg  string   `json:"alg"`
		Kid  string   `json:"kid"`
		Typ  string   `json:"typ"`
		Crit []string `json:"crit"`
	}
	payload      []byte
	signingInput string
	sig          []byte
}

func splitJWT(raw string) (*jwtParts, error) {
	if len(raw) > maxJWTBytes {
		return nil, badToken("token too large")
	}
	h, rest, ok1 := strings.Cut(raw, ".")
	p, s, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s, ".") {
		return nil, badToken("not a JWT")
	}
	j := &jwtParts{signingInput: h + "." + p}
	hb, err := b64.DecodeString(h)
	if err != nil || json.Unmarshal(hb, &j.header) != nil {
		return nil, badToken("malformed JWT header")
	}
	if len(j.header.Crit) > 0 {
		return nil, badToken("unsupported critical header")
	}
	if j.payload, err = b64.DecodeString(p); err != nil {
		return nil, badToken("malformed JWT payload")
	}
	if j.sig, err = b64.DecodeString(s); err != nil {
		return nil, badToken("malformed JWT signature")
	}
	return j, nil
}

// verify checks the signature and claims and returns the caller.
func (v *oidcVerifier) verify(ctx context.Context, j *jwtParts) (*Principal, error) {
	if !v.algs[j.header.Alg] {
		return nil, badToken("algorithm not allowed")
	}
	ks, err := v.src.keys(ctx, false)
	if err != nil {
		return nil, fmt.Errorf("issuer keys unavailable: %w", err)
	}
	key, err := ks.find(j.header.Kid, j.header.Alg)
	if errors.Is(err, errUnknownKid) {
		// The issuer may have rotated its keys.
		if ks, err = v.src.keys(ctx, true); err == nil {
			key, err = ks.find(j.header.Kid, j.header.Alg)
		}
	}
	if err != nil {
		if errors.Is(err, errUnknownKid) {
			return nil, badToken("unknown signing key")
		}
		return nil, err
	}
	digest := sha256.Sum256([]byte(j.signingInput))
	switch j.header.Alg {
	case "RS256":
		if rsa.VerifyPKCS1v15(key.rsa, crypto.SHA256, digest[:], j.sig) != nil {
			return nil, badToken("bad signature")
		}
	case "ES256":
		if len(j.sig) != 64 {
			return nil, badToken("bad signature")
		}
		r, s := new(big.Int).SetBytes(j.sig[:32]), new(big.Int).SetBytes(j.sig[32:])
		if !ecdsa.Verify(key.ec, digest[:], r, s) {
			return nil, badToken("bad signature")
		}
	default:
		return nil, badToken("algorithm not allowed")
	}
	return v.claims(j.payload)
}

func (v *oidcVerifier) claims(payload []byte) (*Principal, error) {
	dec := json.NewDecoder(strings.NewReader(string(payload)))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		return nil, badToken("malformed claims")
	}
	if iss, _ := c["iss"].(string); iss != v.cfg.Issuer {
		return nil, badToken("wrong issuer")
	}
	if !audienceOK(c["aud"], v.cfg.Audiences) {
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
