package detectors

import (
	"context"
	"errors"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// TerminatedConfig configures the terminated detector: an access by an
// account whose holder had left (status terminated, and the event is after
// terminated_at + GracePeriod, compared as instants) or whose account is
// inactive. A successful access by a terminated account has the base
// severity (default critical); a refused one FailureSeverity (default
// high); an access by an inactive account InactiveSeverity (default high),
// one level lower when refused.
type TerminatedConfig struct {
	BaseConfig `yaml:",inline"`
	// FailureSeverity is used when a terminated account's access was refused.
	FailureSeverity schemas.Severity `yaml:"failure_severity"`
	// InactiveSeverity is used for accounts with status inactive.
	InactiveSeverity schemas.Severity `yaml:"inactive_severity"`
	// GracePeriod after terminated_at during which accesses are tolerated
	// (clock skew between HR and the EHR). Default 0: an access at exactly
	// terminated_at is the last legitimate instant; any later one fires.
	GracePeriod time.Duration `yaml:"grace_period"`
}

// DefaultTerminatedConfig returns the defaults.
func DefaultTerminatedConfig() *TerminatedConfig {
	return &TerminatedConfig{
		BaseConfig:       BaseConfig{Enabled: true, Severity: schemas.SeverityCritical},
		FailureSeverity:  schemas.SeverityHigh,
		InactiveSeverity: schemas.SeverityHigh,
	}
}

// Validate checks the configuration.
func (c *TerminatedConfig) Validate() error {
	var errs []error
	errs = append(errs, c.BaseConfig.Validate(), nonNegative("grace_period", c.GracePeriod))
	if !c.FailureSeverity.Valid() {
		errs = append(errs, fieldErrorf("failure_severity", "must be one of info, low, medium, high, critical (got %q)", c.FailureSeverity))
	}
	if !c.InactiveSeverity.Valid() {
		errs = append(errs, fieldErrorf("inactive_severity", "must be one of info, low, medium, high, critical (got %q)", c.InactiveSeverity))
	}
	return errors.Join(errs...)
}

// Terminated is the terminated detector. It is stateless.
type Terminated struct {
	cfg TerminatedConfig
	env Env
}

var _ Detector = (*Terminated)(nil)

// NewTerminated builds the detector.
func NewTerminated(cfg *TerminatedConfig, env Env) (*Terminated, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Terminated{cfg: *cfg, env: env}, nil
}

// Detect returns a finding when the account should no longer be in use.
func (d *Terminated) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	ref := refOf(d.env)
	u, ok := eventUser(d.env, ref, ev)
	if !ok {
		return nil, nil
	}
	loc := locationOf(d.env, ev.FacilityID)
	failed := ev.Outcome == schemas.OutcomeFailure
	var sev schemas.Severity
	var why string
	facts := map[string]string{"user_status": string(u.Status)}
	switch u.Status {
	case schemas.UserTerminated:
		if u.TerminatedAt != nil {
			if !ev.EventTime.After(u.TerminatedAt.Add(d.cfg.GracePeriod)) {
				return nil, nil
			}
			after := ev.EventTime.Sub(*u.TerminatedAt)
			facts["terminated_at"] = u.TerminatedAt.UTC().Format(time.RFC3339)
			facts["time_since_termination"] = schemas.FormatDuration(after.Truncate(time.Minute))
			why = "the account's holder was terminated at " + u.TerminatedAt.In(loc).Format("2006-01-02 15:04 MST") +
				", " + schemas.FormatDuration(after.Truncate(time.Minute)) + " before this access"
		} else {
			facts["terminated_at"] = "unknown"
			why = "the account's holder is recorded as terminated (termination time unknown)"
		}
		sev = d.cfg.Severity
		if failed {
			sev = d.cfg.FailureSeverity
		}
	case schemas.UserInactive:
		why = "the account is recorded as inactive"
		sev = d.cfg.InactiveSeverity
		if failed {
			sev = RaiseSeverity(sev, -1)
		}
	default:
		return nil, nil
	}
	f := newAccessFinding(terminatedName, ev, loc, sev)
	for k, v := range facts {
		f.Evidence.Facts[k] = v
	}
	f.Evidence.WouldExplain = "an active account: a rehire or reactivation recorded in the HR feed"
	f.Explanation = describeAccess(ev, u, loc) + ", but " + why + "; the account should have been disabled."
	return []schemas.Finding{f}, nil
}
