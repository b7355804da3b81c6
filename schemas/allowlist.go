package schemas

import (
	"errors"
	"strings"
	"time"
)

// AllowlistEntry is one governed exception (the allowlist table,
// migration 0008, and the detection.allowlist configuration): findings of
// Detector about UserID and PatientID by a user in Department are
// suppressed until ExpiresAt. Empty UserID, PatientID or Department are
// wildcards, but at least one must be set; Detector is a detector name or
// "*". The detectors package matches findings against entries.
//
// Reason and Owner are operator-written text (why the exception exists, who
// answers for it); they are copied into Finding.SuppressionReason and must
// not hold patient data.
type AllowlistEntry struct {
	// UserID limits the entry to one user; empty matches every user.
	UserID string `yaml:"user_id" json:"user_id,omitempty"`
	// PatientID limits the entry to one patient; empty matches every patient.
	PatientID string `yaml:"patient_id" json:"patient_id,omitempty"`
	// Department limits the entry to users in one department (compared
	// case-insensitively); empty matches every department.
	Department string `yaml:"department" json:"department,omitempty"`
	// Detector is the detector name the entry covers, or "*" for all.
	Detector string `yaml:"detector" json:"detector"`
	// Reason says why the exception exists (operator text, no patient data).
	Reason string `yaml:"reason" json:"reason"`
	// Owner is who answers for the exception (a person or team).
	Owner string `yaml:"owner" json:"owner"`
	// ExpiresAt is the last instant, in event time, the entry applies.
	ExpiresAt time.Time `yaml:"expires_at" json:"expires_at"`
}

// Validate checks one entry; the errors are *FieldErrors with keys
// relative to the entry. Every entry must name what it covers, why, who
// owns it and when it expires: exceptions without an expiry are how
// allowlists rot. Whether Detector names a known detector is checked by
// the detectors package, which owns them.
func (e *AllowlistEntry) Validate() error {
	var errs []error
	if e.UserID == "" && e.PatientID == "" && e.Department == "" {
		errs = append(errs, FieldErrorf("user_id", "at least one of user_id, patient_id or department must be set"))
	}
	if e.Detector == "" {
		errs = append(errs, FieldErrorf("detector", `required (a detector name, or "*" for all)`))
	}
	if strings.TrimSpace(e.Reason) == "" {
		errs = append(errs, FieldErrorf("reason", "required"))
	}
	if strings.TrimSpace(e.Owner) == "" {
		errs = append(errs, FieldErrorf("owner", "required"))
	}
	if e.ExpiresAt.IsZero() {
		errs = append(errs, FieldErrorf("expires_at", "required"))
	}
	return errors.Join(errs...)
}
