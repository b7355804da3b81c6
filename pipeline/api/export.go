package api

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// ErrNoCredentials is returned by Authenticate when the request carries
// neither a bearer token nor a live console session cookie (a browser that
// has not signed in, or whose session ended): send it to SignInURL.
var ErrNoCredentials = errNoCredentials

// ErrInvalidCredentials wraps Authenticate's error when the request
// carries a bearer token that is refused (unknown, expired, malformed).
var ErrInvalidCredentials = errors.New("invalid credentials")

// Authenticate returns the caller of a console or API request: from its
// bearer token (static or OIDC JWT) when it sends an Authorization header
// (a bad token is not rescued by a cookie), else from its console session
// cookie (see SignInHandler). Errors: ErrNoCredentials,
// ErrInvalidCredentials (wrapped, with a reason fit to show), or another
// error when the identity provider's keys are unavailable (answer 503).
func (s *Server) Authenticate(r *http.Request) (*Principal, error) {
	if len(r.Header.Values("Authorization")) == 0 {
		if c, err := r.Cookie(s.signIn.sessionCk); err == nil {
			if p, ok := s.sessions.lookup(c.Value); ok {
				return p, nil
			}
		}
		return nil, ErrNoCredentials
	}
	p, err := s.auth.authenticate(r.Context(), r)
	var te *tokenError
	if errors.As(err, &te) {
		return nil, fmt.Errorf("%w: %s", ErrInvalidCredentials, te.Desc)
	}
	return p, err
}

// AuditEvent is one read of patient-level data outside the JSON API (the
// console's pages), recorded in api_audit like the API's own reads.
type AuditEvent struct {
	// RequestID identifies the request (the caller generates it and sends
	// it as X-Request-Id).
	RequestID string
	// Channel is "console" (default) or another surface's name.
	Channel string
	// Endpoint is the route pattern ("GET /alerts/{alert_id}"), never a raw
	// URL.
	Endpoint string
	// AlertID, PatientID and UserID are what was looked at (any may be "").
	AlertID, PatientID, UserID string
	// Params are the other request parameters (filters, time range).
	Params map[string]string
	// Status is the HTTP status answered (default 200).
	Status int
	// Rows is how many rows the response shows; Patients lists the
	// patients whose data it shows.
	Rows     int
	Patients []string
}

// Audit writes ev to api_audit for principal p. An error means the page
// must not show the data.
func (s *Server) Audit(ctx context.Context, r *http.Request, p *Principal, ev AuditEvent) error {
	if p == nil {
		return errors.New("audit: no principal")
	}
	rec := triage.AuditRecord{
		RequestID: ev.RequestID, Principal: p.Name, AuthMethod: p.Method, Role: p.roleString(), Channel: ev.Channel,
		Method: r.Method, Endpoint: ev.Endpoint, AlertID: ev.AlertID, PatientID: ev.PatientID, UserID: ev.UserID,
		PatientsReturned: ev.Patients, Params: ev.Params, Status: ev.Status, Rows: ev.Rows, RemoteAddr: r.RemoteAddr,
	}
	if rec.Channel == "" {
		rec.Channel = "console"
	}
	if rec.Status == 0 {
		rec.Status = http.StatusOK
	}
	if id := r.Header.Get("X-Request-Id"); requestIDPattern.MatchString(id) {
		rec.ClientRequestID = id
	}
	if rec.RequestID == "" {
		rec.RequestID = newRequestID()
	}
	return s.store.WriteAudit(ctx, rec)
}
