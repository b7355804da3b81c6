package detectors

import (
	"context"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// SelfAccessConfig configures the self_access detector: a user opening
// their own record. Findings have the base severity (default medium),
// raised one level when the user printed, exported or changed the record.
type SelfAccessConfig struct {
	BaseConfig `yaml:",inline"`
}

// DefaultSelfAccessConfig returns the defaults.
func DefaultSelfAccessConfig() *SelfAccessConfig {
	return &SelfAccessConfig{BaseConfig: BaseConfig{Enabled: true, Severity: schemas.SeverityMedium}}
}

// Validate checks the configuration.
func (c *SelfAccessConfig) Validate() error { return c.BaseConfig.Validate() }

// SelfAccess is the self_access detector. It is stateless.
type SelfAccess struct {
	cfg SelfAccessConfig
	env Env
}

var _ Detector = (*SelfAccess)(nil)

// NewSelfAccess builds the detector.
func NewSelfAccess(cfg *SelfAccessConfig, env Env) (*SelfAccess, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &SelfAccess{cfg: *cfg, env: env}, nil
}

// isSelf reports how the reference data links the user to the patient:
// "user_patient_id" (the account's own medical record number),
// "patient_employee_user_id" (the chart's employee link), or "".
func isSelf(ev *schemas.AccessEvent, u *schemas.User, p *schemas.Patient) string {
	switch {
	case u != nil && u.PatientID != "" && u.PatientID == ev.PatientID:
		return "user_patient_id"
	case p != nil && p.EmployeeUserID != "" && p.EmployeeUserID == ev.UserID:
		return "patient_employee_user_id"
	}
	return ""
}

// Detect returns a finding when the user opens their own record.
func (d *SelfAccess) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	u, _ := eventUser(d.env, ref, ev)
	p, _ := eventPatient(d.env, ref, ev)
	link := selfLink(ref, ev, u, p)
	if link == "" {
		return nil, nil
	}
	loc := locationOf(d.env, ev.FacilityID)
	sev := d.cfg.Severity
	switch ev.Action {
	case schemas.ActionPrint, schemas.ActionExport, schemas.ActionCreate, schemas.ActionUpdate, schemas.ActionDelete:
		sev = RaiseSeverity(sev, 1)
	}
	f := newAccessFinding(selfAccessName, ev, loc, sev)
	f.Evidence.Facts["relationship"] = "self"
	f.Evidence.Facts["link"] = link
	f.Evidence.WouldExplain = "an allowlist entry for an approved request (employees normally obtain their own records through health information management or the patient portal)"
	how := "the account's own medical record number is this patient's"
	if link == "patient_employee_user_id" {
		how = "the patient's chart is linked to this user's account"
	}
	f.Explanation = describeAccess(ev, u, loc) + ": it is the user's own record (" + how + ")."
	return []schemas.Finding{f}, nil
}
