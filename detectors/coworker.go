package detectors

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// CoworkerConfig configures the coworker detector: a user opening the
// record of a patient who is also an employee (linked from either side:
// the patient's employee_user_id, or a user's patient_id; and not the
// user), without a care relationship. Findings have the base
// severity (default medium), or SameDepartmentSeverity (default high) when
// the two work in the same department, raised one level for print or
// export. Explained accesses follow Explained (default: no finding).
type CoworkerConfig struct {
	BaseConfig `yaml:",inline"`
	// SameDepartmentSeverity replaces the base severity when the patient
	// works in the user's department.
	SameDepartmentSeverity schemas.Severity `yaml:"same_department_severity"`
	// Chance lowers findings that the user's breadth of unexplained access
	// explains by chance, unless the two share a department, the user opened
	// this employee's chart on more than one day, or printed or exported it.
	Chance ChancePolicy `yaml:"chance"`
	// Explained says what to do when a care relationship explains the access.
	Explained ExplainedPolicy `yaml:"explained"`
}

// DefaultCoworkerConfig returns the defaults.
func DefaultCoworkerConfig() *CoworkerConfig {
	return &CoworkerConfig{
		BaseConfig:             BaseConfig{Enabled: true, Severity: schemas.SeverityMedium},
		SameDepartmentSeverity: schemas.SeverityHigh,
		Chance:                 DefaultChancePolicy(),
		Explained:              ExplainedPolicy{Report: false, Severity: schemas.SeverityInfo},
	}
}

// Validate checks the configuration.
func (c *CoworkerConfig) Validate() error {
	var errs []error
	errs = append(errs, c.BaseConfig.Validate(), c.Chance.Validate(), c.Explained.Validate())
	if !c.SameDepartmentSeverity.Valid() {
		errs = append(errs, fieldErrorf("same_department_severity", "must be one of info, low, medium, high, critical (got %q)", c.SameDepartmentSeverity))
	}
	return errors.Join(errs...)
}

// Coworker is the coworker detector. It is stateless.
type Coworker struct {
	cfg CoworkerConfig
	env Env
}

var _ Detector = (*Coworker)(nil)

// NewCoworker builds the detector.
func NewCoworker(cfg *CoworkerConfig, env Env) (*Coworker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Coworker{cfg: *cfg, env: env}, nil
}

// Detect returns a finding when the patient is another employee.
func (d *Coworker) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	p, _ := eventPatient(d.env, ref, ev)
	employee := employeeOf(ref, ev.PatientID, p)
	if employee == "" || employee == ev.UserID {
		return nil, nil
	}
	u, _ := eventUser(d.env, ref, ev)
	if selfLink(ref, ev, u, p) != "" {
		return nil, nil
	}
	care := careOf(d.env, ref, ev)
	dept := userDepartment(ev, u)
	sameDept := false
	if cw, ok := ref.User(employee); ok && dept != "" && strings.EqualFold(strings.TrimSpace(cw.Department), strings.TrimSpace(dept)) {
		sameDept = true
	}
	sev := d.cfg.Severity
	if sameDept {
		sev = d.cfg.SameDepartmentSeverity
	}
	var rank chanceRank
	var ranking string
	repeat := 0
	if !care.Explained {
		repeat = repeatDays(d.env, ev)
		rank = rankByChance(d.env, ref, ev.UserID, chanceEmployee)
		ranking = rank.sentence()
		// A repeat is suspicious when chance would hardly bring this user
		// back to this one chart (repeatNeed).
		need := repeatNeed(d.env, ref, ev.UserID)
		var same chanceRank
		if sameDept {
			same = rankBySameDepartment(d.env, ref, ev.UserID, dept)
		}
		switch {
		case repeat >= need:
			ranking += fmt.Sprintf("; the user opened this employee's chart on %d days, which chance does not explain", repeat)
		case isDisclosure(ev.Action):
		case sameDept && !(d.cfg.Chance.Enabled && same.likely(d.cfg.Chance.Days)):
			ranking += "; they work in the same department, and " + same.chanceOnly()
		case d.cfg.Chance.Enabled && sameDept:
			sev = d.cfg.Chance.Severity
			ranking += "; even " + same.chanceOnly() + ", so it is lowered to " + string(sev)
		case d.cfg.Chance.Enabled && rank.likely(d.cfg.Chance.Days):
			sev = d.cfg.Chance.Severity
			ranking += ", so it is lowered to " + string(sev)
		}
	}
	sev, ok := d.cfg.Explained.severity(care.Explained, sev, ev.Action)
	if !ok {
		return nil, nil
	}
	loc := locationOf(d.env, ev.FacilityID)
	f := newAccessFinding(coworkerName, ev, loc, sev)
	if !care.Explained {
		rank.setFacts(&f)
		f.Evidence.Facts["repeat_days"] = strconv.Itoa(repeat)
		f.Score = schemas.ScoreWithin(sev, rank.quantile())
		ranking = "; " + ranking
	}
	f.Evidence.Facts["relationship"] = "coworker"
	f.Evidence.Facts["coworker_user_id"] = employee
	f.Evidence.Facts["same_department"] = boolFact(sameDept)
	setCareFacts(&f, care)
	who := "an employee (account " + employee + ")"
	if sameDept {
		who += " who works in the user's own department"
	}
	f.Explanation = describeAccess(ev, u, loc) + ", who is " + who + "; " + careSentence(care) + ranking + "."
	return []schemas.Finding{f}, nil
}

func boolFact(b bool) string {
	if b {
		return "true"
	}
	return "false"
}
