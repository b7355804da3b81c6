package detectors

import (
	"errors"
	"fmt"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// What explained an access (CareRelationship.By, the "care_by" fact and
// the coverage figures).
const (
	// ExplainedByCareTeam: the user is on the care team of an encounter of
	// the patient (± the reference care slack).
	ExplainedByCareTeam = "care_team"
	// ExplainedByDepartmentEncounter: an encounter of the patient in the
	// user's department (± the care slack).
	ExplainedByDepartmentEncounter = "department_encounter"
	// ExplainedByOwnContinuity: the user's own earlier access to the
	// patient, within detection.explanation.own_horizon, was explained by
	// one of the two above.
	ExplainedByOwnContinuity = "own_continuity"
	// ExplainedByDepartmentInvolvement: the patient had an encounter in the
	// user's department, or with a member of it on the care team, that
	// ended within detection.explanation.department_horizon.
	ExplainedByDepartmentInvolvement = "department_involvement"
	// Unexplained: nothing explains the access.
	Unexplained = "unexplained"
)

// ExplainedBy lists the explanation kinds in the order they are tried,
// then Unexplained.
var ExplainedBy = []string{
	ExplainedByCareTeam, ExplainedByDepartmentEncounter, ExplainedByOwnContinuity,
	ExplainedByDepartmentInvolvement, Unexplained,
}

// ExplanationConfig is the "detection.explanation" section: continuity of
// care, and the per-user breadth the relationship detectors rank by.
type ExplanationConfig struct {
	// OwnHorizon: an access is explained when the same user's earlier
	// access to the same patient, at most OwnHorizon before it, was
	// explained by an encounter (care team or department). Accesses that
	// only continuity explains do not extend the chain. 0 turns it off.
	// Default 336h (14 days).
	OwnHorizon time.Duration `yaml:"own_horizon"`
	// DepartmentHorizon: an access is explained when the patient had an
	// encounter in the user's department, or with a member of that
	// department on its care team, that ended at most DepartmentHorizon
	// before the access (the department is involved in the patient's care:
	// consults, follow-ups without a formal encounter). It is read from
	// reference data, so it does not depend on partitioning. 0 turns it
	// off. Default 72h.
	DepartmentHorizon time.Duration `yaml:"department_horizon"`
	// BreadthMinDays is how many active days of a user the chance ranking
	// needs before it trusts their learned breadth; until then every
	// unexplained access counts as surprising. Default 3.
	BreadthMinDays int `yaml:"breadth_min_days"`
	// MaxTrackedUsers bounds the users whose continuity and breadth are
	// kept per partition; past it, new users are treated as having no
	// history. Default 200000.
	MaxTrackedUsers int `yaml:"max_tracked_users"`
}

// DefaultExplanationConfig returns the defaults.
func DefaultExplanationConfig() ExplanationConfig {
	return ExplanationConfig{
		OwnHorizon:        14 * 24 * time.Hour,
		DepartmentHorizon: 72 * time.Hour,
		BreadthMinDays:    3,
		MaxTrackedUsers:   200000,
	}
}

// Validate checks the section; keys are relative to "explanation".
func (c *ExplanationConfig) Validate() error {
	var errs []error
	errs = append(errs, nonNegative("own_horizon", c.OwnHorizon), nonNegative("department_horizon", c.DepartmentHorizon))
	if c.BreadthMinDays < 1 || c.BreadthMinDays > 365 {
		errs = append(errs, fieldErrorf("breadth_min_days", "must be 1–365 (got %d)", c.BreadthMinDays))
	}
	if c.MaxTrackedUsers < 1 {
		errs = append(errs, fieldErrorf("max_tracked_users", "must be ≥ 1 (got %d)", c.MaxTrackedUsers))
	}
	return prefixErrors("explanation", errors.Join(errs...))
}

// careHistory is implemented by references that can answer the
// continuity-of-care questions (ReferenceIndex does).
type careHistory interface {
	// departmentInvolved returns an encounter of the patient in dept, or
	// with a member of dept on its care team, that started by t (plus the
	// care slack) and ended no earlier than t − horizon.
	departmentInvolved(patientID, dept string, t time.Time, horizon time.Duration) (careEncounter, bool)
	// involvedBefore returns an encounter of the patient with the user on
	// its care team, in dept, or with a member of dept on its care team,
	// that started before t and ended no earlier than t − lookback.
	involvedBefore(patientID, userID, dept string, t time.Time, lookback time.Duration) (careEncounter, bool)
	// care1 is Care, optionally without the Reason text.
	care1(ev *schemas.AccessEvent, reason bool) CareRelationship
}

var _ careHistory = (*ReferenceIndex)(nil)

func (x *ReferenceIndex) departmentInvolved(patientID, dept string, t time.Time, horizon time.Duration) (careEncounter, bool) {
	pc := x.careOf(patientID)
	if pc == nil || dept == "" {
		return careEncounter{}, false
	}
	k, at := foldKey(dept), t.UnixNano()
	if e, ok := pc.find(spanDept, k, at, x.slackB, int64(horizon)); ok {
		return e, true
	}
	return x.findTeamDept(pc, k, at, x.slackB, int64(horizon))
}

func (x *ReferenceIndex) involvedBefore(patientID, userID, dept string, t time.Time, lookback time.Duration) (careEncounter, bool) {
	pc := x.careOf(patientID)
	if pc == nil {
		return careEncounter{}, false
	}
	at := t.UnixNano()
	if e, ok := pc.find(spanMember, userID, at, 0, int64(lookback)); ok {
		return e, true
	}
	if dept == "" {
		return careEncounter{}, false
	}
	k := foldKey(dept)
	if e, ok := pc.find(spanDept, k, at, 0, int64(lookback)); ok {
		return e, true
	}
	return x.findTeamDept(pc, k, at, 0, int64(lookback))
}

// ownContinuity is the user's earlier explained access to a patient.
type ownAccess struct {
	At          int64  `json:"at"` // unix ns of the explained access
	EncounterID string `json:"enc"`
}

// continuityReason renders an own-continuity explanation.
func continuityReason(userID string, prev ownAccess, horizon time.Duration) string {
	return fmt.Sprintf("user %s's own access to this patient on %s, explained by encounter %s (continuity of care within %s)",
		userID, time.Unix(0, prev.At).UTC().Format("2006-01-02"), prev.EncounterID, humanDuration(horizon))
}

// directCare drops an explanation by department involvement alone, for
// detectors where the user's own relationship to the patient must explain
// the access (VIP, family): a department is involved in many patients'
// care, so its involvement says little about why this user opened a
// VIP's or a relative's chart.
func directCare(c CareRelationship) CareRelationship {
	if c.By != ExplainedByDepartmentInvolvement {
		return c
	}
	return CareRelationship{Reason: "an encounter with the user on its care team or in their department; their department's involvement (encounter " +
		c.EncounterID + ") is not enough for this patient"}
}
