package triage

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// AuditRecord is one read of patient-level data through ehrwatch (API or
// CLI): the monitoring tool is monitored too. It goes to the api_audit
// table before the data goes to the reader.
type AuditRecord struct {
	RequestID string
	At        time.Time
	// Principal is who asked: static token name, OIDC subject, OS user or
	// the CLI's --as name.
	Principal string
	// AuthMethod is "token", "oidc" or "cli".
	AuthMethod string
	// Role is the role(s) the request was served under, comma-separated.
	Role string
	// Channel is "api" or "cli".
	Channel string
	Method  string
	// Endpoint is the route pattern (e.g. "GET /api/v1/alerts/{id}") or CLI
	// command, never a raw URL.
	Endpoint string
	// AlertID, PatientID and UserID are what was looked at (any may be "").
	AlertID   string
	PatientID string
	UserID    string
	// PatientsReturned lists the patients whose data was returned (alert
	// detail, user activity report), bounded by the page size.
	PatientsReturned []string
	// Params are the other request parameters (time range, filters, format).
	Params map[string]string
	// Status is the HTTP status (or 0/1 exit status for the CLI).
	Status     int
	Rows       int
	RemoteAddr string
}

// WriteAudit appends r to api_audit. An error means the read must fail.
func (s *Store) WriteAudit(ctx context.Context, r AuditRecord) error {
	if r.At.IsZero() {
		r.At = s.opts.Now()
	}
	paramsJSON := "{}"
	if len(r.Params) > 0 {
		b, err := json.Marshal(r.Params)
		if err != nil {
			return fmt.Errorf("write audit: %w", err)
		}
		paramsJSON = string(b)
	}
	patients := r.PatientsReturned
	if patients == nil {
		patients = []string{}
	}
	batch, err := s.conn.PrepareBatch(ctx, `INSERT INTO api_audit
(request_id, at, principal, auth_method, role, channel, method, endpoint, alert_id, patient_id, user_id,
 patients_returned, params, status, rows, remote_addr)`)
	if err != nil {
		return fmt.Errorf("write audit: %w", err)
	}
	if err := batch.Append(r.RequestID, r.At.UTC(), r.Principal, r.AuthMethod, r.Role, r.Channel, r.Method, r.Endpoint,
		r.AlertID, r.PatientID, r.UserID, patients, paramsJSON, uint16(r.Status), uint32(r.Rows), r.RemoteAddr); err != nil {
		_ = batch.Abort()
		return fmt.Errorf("write audit: %w", err)
	}
	if err := batch.Send(); err != nil {
		return fmt.Errorf("write audit: %w", err)
	}
	return nil
}
