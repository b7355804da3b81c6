package detectors

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// DeceasedConfig configures the deceased detector: an access to a deceased
// patient's record more than GracePeriod after the recorded death, by a
// user whose role and department map to none of the vocabulary categories
// whose work continues after death (billing and coding, health information
// management, release of information, …).
// Findings have the base severity (default medium), raised one level for
// print or export. Accesses a care relationship explains follow Explained
// (default: no finding).
type DeceasedConfig struct {
	BaseConfig `yaml:",inline"`
	// GracePeriod after the death during which any access is expected
	// (death summaries, autopsy results, final notes). Default 720h (30 days).
	GracePeriod time.Duration `yaml:"grace_period"`
	// LegitimateCategories are the vocabulary categories (see Vocabulary)
	// whose work continues after death: a user whose role or department
	// maps to one of them never triggers the detector.
	LegitimateCategories []string `yaml:"legitimate_categories"`
	// Explained says what to do when a care relationship explains the access.
	Explained ExplainedPolicy `yaml:"explained"`
}

// DefaultDeceasedConfig returns the defaults.
func DefaultDeceasedConfig() *DeceasedConfig {
	return &DeceasedConfig{
		BaseConfig:  BaseConfig{Enabled: true, Severity: schemas.SeverityMedium},
		GracePeriod: 30 * 24 * time.Hour,
		LegitimateCategories: []string{
			string(CategoryBillingCoding), string(CategoryHIM), string(CategoryReleaseOfInformation),
			string(CategoryDecedentAffairs), string(CategoryQualityCompliance),
		},
		Explained: ExplainedPolicy{Report: false, Severity: schemas.SeverityInfo},
	}
}

// Validate checks the configuration.
func (c *DeceasedConfig) Validate() error {
	_, catErr := categoryList(c.LegitimateCategories).set("legitimate_categories")
	return errors.Join(c.BaseConfig.Validate(), nonNegative("grace_period", c.GracePeriod), catErr, c.Explained.Validate())
}

// Deceased is the deceased detector. It is stateless.
type Deceased struct {
	cfg        DeceasedConfig
	env        Env
	legitimate CategorySet
}

var _ Detector = (*Deceased)(nil)

// NewDeceased builds the detector.
func NewDeceased(cfg *DeceasedConfig, env Env) (*Deceased, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	legit, _ := categoryList(cfg.LegitimateCategories).set("legitimate_categories") // validated
	return &Deceased{cfg: *cfg, env: env, legitimate: legit}, nil
}

// Detect returns a finding for a late access to a deceased patient's record.
func (d *Deceased) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	p, ok := ref.Patient(ev.PatientID)
	if !ok || p.DeceasedAt == nil || !ev.EventTime.After(p.DeceasedAt.Add(d.cfg.GracePeriod)) {
		return nil, nil
	}
	u, _ := ref.User(ev.UserID)
	role := userRole(ev, u)
	if vocabOf(ref).UserCategories(ev, u).Intersects(d.legitimate) {
		return nil, nil
	}
	care := careOf(d.env, ref, ev)
	sev := d.cfg.Severity
	if care.Explained {
		if !d.cfg.Explained.Report {
			return nil, nil
		}
		sev = d.cfg.Explained.Severity
	} else if isDisclosure(ev.Action) {
		sev = RaiseSeverity(sev, 1)
	}
	loc := locationOf(d.env, ev.FacilityID)
	days := int(ev.EventTime.Sub(*p.DeceasedAt) / (24 * time.Hour))
	f := newAccessFinding(deceasedName, ev, loc, sev)
	died := p.DeceasedAt.In(loc).Format("2006-01-02")
	f.Evidence.Facts["deceased_at"] = died
	f.Evidence.Facts["days_since_death"] = strconv.Itoa(days)
	f.Evidence.Facts["grace_period"] = formatDuration(d.cfg.GracePeriod)
	f.Evidence.Observed = float64(days)
	f.Evidence.Threshold = d.cfg.GracePeriod.Hours() / 24
	setCareFacts(&f, care)
	who := "the user's role"
	if role != "" {
		who = "role " + role
	}
	f.Explanation = fmt.Sprintf("%s, %d days after the patient's recorded death on %s (grace period %s); %s is not one whose work continues after death; %s.",
		describeAccess(ev, u, loc), days, died, humanDuration(d.cfg.GracePeriod), who, careSentence(care))
	return []schemas.Finding{f}, nil
}
