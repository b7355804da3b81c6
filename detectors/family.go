package detectors

import (
	"context"
	"errors"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// FamilyConfig configures the family detector: a user opening the record of
// a likely relative. Relatives are patients with the same normalised last
// name AND the same normalised address as the user (compared as keyed
// tokens, never as text), and patients whose reference data names the user
// as next of kin or guarantor. A shared surname alone is not enough.
//
// An unexplained access has the base severity (default high), raised one
// level for print or export. An access a care relationship explains
// follows Explained (default: reported at low).
type FamilyConfig struct {
	BaseConfig `yaml:",inline"`
	// Explained says what to do when a care relationship explains the access.
	Explained ExplainedPolicy `yaml:"explained"`
}

// DefaultFamilyConfig returns the defaults.
func DefaultFamilyConfig() *FamilyConfig {
	return &FamilyConfig{
		BaseConfig: BaseConfig{Enabled: true, Severity: schemas.SeverityHigh},
		Explained:  ExplainedPolicy{Report: true, Severity: schemas.SeverityLow},
	}
}

// Validate checks the configuration.
func (c *FamilyConfig) Validate() error {
	return errors.Join(c.BaseConfig.Validate(), c.Explained.Validate())
}

// Family is the family detector. It is stateless.
type Family struct {
	cfg FamilyConfig
	env Env
}

var _ Detector = (*Family)(nil)

// NewFamily builds the detector.
func NewFamily(cfg *FamilyConfig, env Env) (*Family, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Family{cfg: *cfg, env: env}, nil
}

// familyRelationship returns how the reference data relates the user to the
// patient as family, or "". Next of kin and guarantor are read from both
// sides: the patient's chart naming the user ("guarantor", "next_of_kin"),
// and the user's own chart (users.patient_id or patients.employee_user_id)
// naming the patient's account when the patient is an employee
// ("user_guarantor", "user_next_of_kin").
func familyRelationship(ref Reference, ev *schemas.AccessEvent, p *schemas.Patient) string {
	if rel := namedBy(p, ev.UserID); rel != "" {
		return rel
	}
	if own := patientOf(ref, ev.UserID, nil); own != "" {
		if other := employeeOf(ref, ev.PatientID, p); other != "" {
			c, _ := ref.Patient(own)
			if rel := namedBy(c, other); rel != "" {
				return "user_" + rel
			}
		}
	}
	h, ok := ref.(DemographicHasher)
	if !ok {
		return ""
	}
	ut, ok := h.UserTokens(ev.UserID)
	if !ok || ut.LastName.IsZero() || ut.Address.IsZero() {
		return ""
	}
	pt, ok := h.PatientTokens(ev.PatientID)
	if !ok || pt.LastName != ut.LastName || pt.Address != ut.Address {
		return ""
	}
	return "same_last_name_and_address"
}

var familyPhrases = map[string]string{
	"guarantor":                  "the user is recorded as the patient's guarantor",
	"next_of_kin":                "the user is recorded as the patient's next of kin",
	"user_guarantor":             "the patient, an employee, is recorded as the guarantor on the user's own chart",
	"user_next_of_kin":           "the patient, an employee, is recorded as next of kin on the user's own chart",
	"same_last_name_and_address": "the user and the patient share a last name and a home address (compared as keyed hashes)",
}

// Detect returns a finding when the patient appears to be the user's
// relative.
func (d *Family) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	p, _ := eventPatient(d.env, ref, ev)
	rel := familyRelationship(ref, ev, p)
	if rel == "" {
		return nil, nil
	}
	u, _ := eventUser(d.env, ref, ev)
	if selfLink(ref, ev, u, p) != "" {
		return nil, nil // self_access reports it
	}
	care := directCare(careOf(d.env, ref, ev))
	sev, ok := d.cfg.Explained.severity(care.Explained, d.cfg.Severity, ev.Action)
	if !ok {
		return nil, nil
	}
	rank, ranking := rankUnexplained(d.env, ref, ev, chanceRelative, care.Explained)
	loc := locationOf(d.env, ev.FacilityID)
	f := newAccessFinding(familyName, ev, loc, sev)
	f.Evidence.Facts["relationship"] = rel
	setCareFacts(&f, care)
	if !care.Explained {
		rank.setFacts(&f)
		f.Score = schemas.ScoreWithin(sev, rank.quantile())
	}
	f.Explanation = describeAccess(ev, u, loc) + ", who appears to be a relative: " + familyPhrases[rel] + "; " + careSentence(care) + ranking + "."
	return []schemas.Finding{f}, nil
}

// setCareFacts records the care relationship in a finding's evidence.
func setCareFacts(f *schemas.Finding, care CareRelationship) {
	if care.Explained {
		f.Evidence.Facts["care"] = "explained"
		f.Evidence.Facts["encounter_id"] = care.EncounterID
		if care.By != "" {
			f.Evidence.Facts["care_by"] = care.By
		}
		return
	}
	f.Evidence.Facts["care"] = "unexplained"
	f.Evidence.WouldExplain = care.Reason
}
