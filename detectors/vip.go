package detectors

import (
	"context"
	"errors"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// VIPConfig configures the vip detector: a user opening a VIP patient's
// record without a care relationship. Findings have the base severity
// (default high), raised one level for print or export. Explained accesses
// follow Explained (default: no finding).
type VIPConfig struct {
	BaseConfig `yaml:",inline"`
	// Explained says what to do when a care relationship explains the access.
	Explained ExplainedPolicy `yaml:"explained"`
}

// DefaultVIPConfig returns the defaults.
func DefaultVIPConfig() *VIPConfig {
	return &VIPConfig{
		BaseConfig: BaseConfig{Enabled: true, Severity: schemas.SeverityHigh},
		Explained:  ExplainedPolicy{Report: false, Severity: schemas.SeverityInfo},
	}
}

// Validate checks the configuration.
func (c *VIPConfig) Validate() error {
	return errors.Join(c.BaseConfig.Validate(), c.Explained.Validate())
}

// VIP is the vip detector. It is stateless.
type VIP struct {
	cfg VIPConfig
	env Env
}

var _ Detector = (*VIP)(nil)

// NewVIP builds the detector.
func NewVIP(cfg *VIPConfig, env Env) (*VIP, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &VIP{cfg: *cfg, env: env}, nil
}

// Detect returns a finding when the patient is flagged VIP.
func (d *VIP) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	p, ok := eventPatient(d.env, ref, ev)
	if !ok || !p.VIP {
		return nil, nil
	}
	u, _ := eventUser(d.env, ref, ev)
	if isSelf(ev, u, p) != "" {
		return nil, nil
	}
	care := directCare(careOf(d.env, ref, ev))
	sev, ok := d.cfg.Explained.severity(care.Explained, d.cfg.Severity, ev.Action)
	if !ok {
		return nil, nil
	}
	rank, ranking := rankUnexplained(d.env, ref, ev, chanceVIP, care.Explained)
	loc := locationOf(d.env, ev.FacilityID)
	f := newAccessFinding(vipName, ev, loc, sev)
	f.Evidence.Facts["patient_flag"] = "vip"
	setCareFacts(&f, care)
	if !care.Explained {
		rank.setFacts(&f)
		f.Score = schemas.ScoreWithin(sev, rank.quantile())
	}
	f.Explanation = describeAccess(ev, u, loc) + ", a patient flagged VIP; " + careSentence(care) + ranking + "."
	return []schemas.Finding{f}, nil
}
