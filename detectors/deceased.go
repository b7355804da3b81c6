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
// patient's record after the recorded death by a user whose role and
// department are not among those whose work continues after death
// (the LegitimateCategories of the vocabulary: billing and coding, HIM,
// release of information, …).
//
// Users who had a relationship with the patient before the death (an
// encounter with them on the care team, in their department, or with a
// member of their department on the care team, ending at most
// RelationshipLookback before the death; or their own explained access
// still remembered as continuity of care) may finish their work for
// GracePeriod; after it, their accesses have the base severity (default
// medium). Anyone else is reported from the first day, at
// NoRelationshipSeverity (default medium), lowered by Chance when the
// user's breadth of unexplained access makes such a chart likely by chance.
// Print or export raises the severity one level. Accesses a care
// relationship explains follow Explained (default: no finding).
type DeceasedConfig struct {
	BaseConfig `yaml:",inline"`
	// GracePeriod after the death during which any access is expected
	// (death summaries, autopsy results, final notes). Default 720h (30 days).
	GracePeriod time.Duration `yaml:"grace_period"`
	// LegitimateCategories are the vocabulary categories (see Vocabulary)
	// whose work continues after death: a user whose role or department
	// maps to one of them never triggers the detector.
	LegitimateCategories []string `yaml:"legitimate_categories"`
	// NoRelationshipSeverity is the severity for users without a
	// relationship with the patient before the death, from the first day.
	NoRelationshipSeverity schemas.Severity `yaml:"no_relationship_severity"`
	// RelationshipLookback is how long before the death an encounter still
	// counts as a relationship. Default 8760h (365 days).
	RelationshipLookback time.Duration `yaml:"relationship_lookback"`
	// Chance lowers findings without a relationship that the user's breadth
	// explains by chance (see ChancePolicy).
	Chance ChancePolicy `yaml:"chance"`
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
		NoRelationshipSeverity: schemas.SeverityMedium,
		RelationshipLookback:   365 * 24 * time.Hour,
		// Deceased patients are a large share of any chart index (about
		// 1.5 % in the synthetic hospital), so chance brings even a nurse
		// to one every few months: only users who meet one by chance at
		// least every two weeks are lowered.
		Chance:    ChancePolicy{Enabled: true, Days: 14, Severity: schemas.SeverityLow},
		Explained: ExplainedPolicy{Report: false, Severity: schemas.SeverityInfo},
	}
}

// Validate checks the configuration.
func (c *DeceasedConfig) Validate() error {
	var errs []error
	if !c.NoRelationshipSeverity.Valid() {
		errs = append(errs, fieldErrorf("no_relationship_severity", "must be one of info, low, medium, high, critical (got %q)", c.NoRelationshipSeverity))
	}
	_, catErr := categoryList(c.LegitimateCategories).set("legitimate_categories")
	errs = append(errs, catErr)
	return errors.Join(c.BaseConfig.Validate(), nonNegative("grace_period", c.GracePeriod), nonNegative("relationship_lookback", c.RelationshipLookback),
		c.Chance.Validate(), c.Explained.Validate(), errors.Join(errs...))
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

// relationshipBefore returns what related the user to the patient before
// the death, or "".
func (d *Deceased) relationshipBefore(ref Reference, ev *schemas.AccessEvent, dept string, died time.Time) string {
	if h, ok := ref.(careHistory); ok {
		if e, ok := h.involvedBefore(ev.PatientID, ev.UserID, dept, died, d.cfg.RelationshipLookback); ok {
			return "encounter " + e.id + " (" + e.dept + ") before the death"
		}
	}
	if x := d.env.explain; x != nil {
		if us := x.state.Users[ev.UserID]; us != nil {
			if o, ok := us.Own[fnv64a(ev.PatientID)]; ok && o.At <= died.UnixNano() {
				return "the user's own access explained by encounter " + o.EncounterID + " before the death"
			}
		}
	}
	return ""
}

// Detect returns a finding for an access to a deceased patient's record
// after the death.
func (d *Deceased) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	p, ok := eventPatient(d.env, ref, ev)
	if !ok || p.DeceasedAt == nil || !ev.EventTime.After(*p.DeceasedAt) {
		return nil, nil
	}
	u, _ := eventUser(d.env, ref, ev)
	role, dept := userRole(ev, u), userDepartment(ev, u)
	if vocabOf(ref).UserCategories(ev, u).Intersects(d.legitimate) {
		return nil, nil
	}
	rel := d.relationshipBefore(ref, ev, dept, *p.DeceasedAt)
	if rel != "" && !ev.EventTime.After(p.DeceasedAt.Add(d.cfg.GracePeriod)) {
		return nil, nil
	}
	care := careOf(d.env, ref, ev)
	sev := d.cfg.Severity
	if rel == "" {
		sev = d.cfg.NoRelationshipSeverity
	}
	rank := chanceRank{known: false}
	lowered := false
	if !care.Explained {
		rank = rankByChance(d.env, ref, ev.UserID, chanceDeceased)
		if rel == "" && d.cfg.Chance.Enabled && !isDisclosure(ev.Action) && rank.likely(d.cfg.Chance.Days) {
			sev, lowered = d.cfg.Chance.Severity, true
		}
	}
	sev, ok = d.cfg.Explained.severity(care.Explained, sev, ev.Action)
	if !ok {
		return nil, nil
	}
	loc := locationOf(d.env, ev.FacilityID)
	days := int(ev.EventTime.Sub(*p.DeceasedAt) / (24 * time.Hour))
	f := newAccessFinding(deceasedName, ev, loc, sev)
	died := p.DeceasedAt.In(loc).Format("2006-01-02")
	f.Evidence.Facts["deceased_at"] = died
	f.Evidence.Facts["days_since_death"] = strconv.Itoa(days)
	f.Evidence.Facts["grace_period"] = schemas.FormatDuration(d.cfg.GracePeriod)
	f.Evidence.Facts["relationship_before_death"] = boolFact(rel != "")
	f.Evidence.Observed = float64(days)
	setCareFacts(&f, care)
	who := "the user's role"
	if role != "" {
		who = "role " + role
	}
	var why string
	if rel != "" {
		f.Evidence.Threshold = d.cfg.GracePeriod.Hours() / 24
		why = fmt.Sprintf("the user's relationship with the patient (%s) covers the %s grace period, which has passed", rel, humanDuration(d.cfg.GracePeriod))
	} else {
		why = "the user had no care relationship with the patient before the death, so no grace period applies"
	}
	if !care.Explained {
		rank.setFacts(&f)
		f.Score = schemas.ScoreWithin(sev, rank.quantile())
		why += "; " + rank.sentence()
		if lowered {
			why += fmt.Sprintf(", so it is lowered to %s", sev)
		}
	}
	f.Explanation = fmt.Sprintf("%s, %d days after the patient's recorded death on %s; %s is not one whose work continues after death; %s; %s.",
		describeAccess(ev, u, loc), days, died, who, why, careSentence(care))
	return []schemas.Finding{f}, nil
}
