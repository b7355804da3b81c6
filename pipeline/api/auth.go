package api

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// authenticator turns a request's bearer token into a Principal.
type authenticator struct {
	tokens  []staticToken
	issuers map[string]*oidcVerifier
}

type staticToken struct {
	name string
	role Role
	hash [32]byte
}

func newAuthenticator(cfg Config, client *http.Client, now func() time.Time, log zerolog.Logger) (*authenticator, error) {
	a := &authenticator{issuers: map[string]*oidcVerifier{}}
	for i, t := range cfg.Tokens {
		h, err := parseTokenHash(t.Hash)
		if err != nil {
			return nil, fmt.Errorf("api.tokens[%d].hash: %v", i, err)
		}
		st := staticToken{name: t.Name, role: t.Role}
		copy(st.hash[:], h)
		a.tokens = append(a.tokens, st)
	}
	for i, o := range cfg.OIDC {
		v, err := newOIDCVerifier(o, client, now, log)
		if err != nil {
			return nil, fmt.Errorf("api.oidc[%d]: %v", i, err)
		}
		a.issuers[o.Issuer] = v
	}
	if len(a.tokens) == 0 && len(a.issuers) == 0 {
		return nil, errors.New("api.tokens, api.oidc: configure at least one way to authenticate")
	}
	return a, nil
}

// HashToken returns the "sha256:<hex>" form of a token for the config.
func HashToken(token string) string {
	sum := sha256.Sum256([]byte(token))
	return fmt.Sprintf("sha256:%x", sum[:])
}

// errNoCredentials: the request carries no bearer token at all.
var errNoCredentials = errors.New("no credentials")

// authenticate returns the caller, errNoCredentials, a *tokenError (the
// token is bad), or another error (the issuer's keys are unavailable).
func (a *authenticator) authenticate(ctx context.Context, r *http.Request) (*Principal, error) {
	hs := r.Header.Values("Authorization")
	if len(hs) == 0 {
		return nil, errNoCredentials
	}
	if len(hs) > 1 {
		return nil, badToken("more than one Authorization header")
	}
	scheme, tok, ok := strings.Cut(hs[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return nil, badToken("want the Bearer scheme")
	}
	return a.authenticateToken(ctx, strings.TrimSpace(tok))
}

// authenticateToken checks one bearer token (static or JWT).
func (a *authenticator) authenticateToken(ctx context.Context, tok string) (*Principal, error) {
	if !isB64Token(tok) {
		return nil, badToken("malformed bearer token")
	}
	if p := a.matchStatic(tok); p != nil {
		return p, nil
	}
	if strings.Count(tok, ".") == 2 && len(a.issuers) > 0 {
		return a.verifyJWT(ctx, tok)
	}
	return nil, badToken("unknown token")
}

// matchStatic compares the token's SHA-256 with every configured hash in
// constant time (all of them, so the position of a match does not show).
func (a *authenticator) matchStatic(tok string) *Principal {
	sum := sha256.Sum256([]byte(tok))
	match := -1
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(sum[:], a.tokens[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return nil
	}
	t := a.tokens[match]
	return &Principal{Name: t.name, Method: "token", Roles: []Role{t.role}}
}

func (a *authenticator) verifyJWT(ctx context.Context, tok string) (*Principal, error) {
	jws, err := preParse(tok)
	if err != nil {
		return nil, err
	}
	var peek struct {
		Iss string `json:"iss"`
	}
	if json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &peek) != nil {
		return nil, badToken("malformed claims")
	}
	v := a.issuers[peek.Iss]
	if v == nil {
		return nil, badToken("untrusted issuer")
	}
	if !v.algs[jws.Signatures[0].Protected.Algorithm] {
		return nil, badToken("algorithm not allowed")
	}
	return v.verify(ctx, tok)
}

// isB64Token checks RFC 6750's b64token syntax.
func isB64Token(s string) bool {
	if s == "" || len(s) > maxJWTBytes {
		return false
	}
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}
