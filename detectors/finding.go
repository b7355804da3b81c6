package detectors

import (
	"fmt"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Names of the per-event detectors, as they appear in configuration and in
// Finding.Detector.
const (
	breakGlassName = "break_glass"
	selfAccessName = "self_access"
	familyName     = "family"
	coworkerName   = "coworker"
	vipName        = "vip"
	deceasedName   = "deceased"
	terminatedName = "terminated"
)

// SeverityScore is the Finding.Score of a finding that carries no ranking
// of its own; it is schemas.Severity.DefaultScore (the one home of the
// severity↔score mapping, see schemas/score.go).
func SeverityScore(s schemas.Severity) uint8 { return s.DefaultScore() }

var severitiesByRank = [...]schemas.Severity{
	schemas.SeverityInfo, schemas.SeverityLow, schemas.SeverityMedium, schemas.SeverityHigh, schemas.SeverityCritical,
}

// RaiseSeverity returns s raised by n levels, capped at critical and
// floored at info.
func RaiseSeverity(s schemas.Severity, n int) schemas.Severity {
	r := s.Rank() + n
	if r < 1 {
		r = 1
	}
	if r > len(severitiesByRank) {
		r = len(severitiesByRank)
	}
	return severitiesByRank[r-1]
}

// isDisclosure reports whether the action copies data out of the EHR.
func isDisclosure(a schemas.Action) bool {
	return a == schemas.ActionPrint || a == schemas.ActionExport
}

// refOf returns the reference data the environment currently holds, or an
// empty one.
func refOf(env Env) Reference {
	if env.Reference != nil {
		if r := env.Reference(); r != nil {
			return r
		}
	}
	return emptyReferenceIndex
}

// locationOf returns the facility's time zone, UTC when unknown.
func locationOf(env Env, facilityID string) *time.Location {
	if env.Location != nil {
		if loc := env.Location(facilityID); loc != nil {
			return loc
		}
	}
	return time.UTC
}

// LocalDay returns the facility-local calendar day containing t, as
// [start, end) instants in UTC. Days around daylight-saving changes are 23
// or 25 hours long; in zones where a DST change skips local midnight, the
// day starts at the change.
func LocalDay(t time.Time, loc *time.Location) (start, end time.Time) {
	start, end = localDayBounds(civilDayOf(t.In(loc)), loc)
	return start.UTC(), end.UTC()
}

// newAccessFinding builds the finding a per-event detector emits for ev.
//
// Its window is the facility-local day of the event and its id is derived
// from (detector, user, patient, day), so every access by one user to one
// patient on one day maps to one finding; the Engine collapses the repeats
// (see Engine). Facts always carry the action, outcome and the event time.
func newAccessFinding(detector string, ev *schemas.AccessEvent, loc *time.Location, sev schemas.Severity) schemas.Finding {
	start, end := LocalDay(ev.EventTime, loc)
	// The ids are cloned: decoded events share one backing array for all
	// their strings, free text included, and findings outlive events.
	return schemas.Finding{
		FindingID:   schemas.FindingID(detector, []string{ev.UserID, ev.PatientID}, start, end),
		Detector:    detector,
		Severity:    sev,
		Score:       SeverityScore(sev),
		FacilityID:  strings.Clone(ev.FacilityID),
		UserID:      strings.Clone(ev.UserID),
		PatientID:   strings.Clone(ev.PatientID),
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    []string{strings.Clone(ev.EventID)},
		Evidence: schemas.Evidence{
			Facts: map[string]string{
				"action":     string(ev.Action),
				"outcome":    string(ev.Outcome),
				"event_time": ev.EventTime.UTC().Format(time.RFC3339Nano),
			},
		},
	}
}

// userRole returns the event's role, or the reference user's when the event
// carries none.
func userRole(ev *schemas.AccessEvent, u *schemas.User) string {
	if ev.UserRole != "" || u == nil {
		return ev.UserRole
	}
	return u.Role
}

// userDepartment returns the event's department, or the reference user's.
func userDepartment(ev *schemas.AccessEvent, u *schemas.User) string {
	if ev.UserDepartment != "" || u == nil {
		return ev.UserDepartment
	}
	return u.Department
}

// describeAccess renders "User U1 (nurse, cardiology) viewed the record of
// patient P1 at 2026-03-05 14:02 EST": ids, role and department only.
// writeRoleDept writes the user's role and department, as known, in
// parentheses after the user id: " (nurse, Cardiology)".
func writeRoleDept(b *strings.Builder, ev *schemas.AccessEvent, u *schemas.User) {
	switch role, dept := userRole(ev, u), userDepartment(ev, u); {
	case role != "" && dept != "":
		fmt.Fprintf(b, " (%s, %s)", role, dept)
	case role != "":
		fmt.Fprintf(b, " (%s)", role)
	case dept != "":
		fmt.Fprintf(b, " (%s)", dept)
	}
}

func describeAccess(ev *schemas.AccessEvent, u *schemas.User, loc *time.Location) string {
	var b strings.Builder
	b.WriteString("User ")
	b.WriteString(ev.UserID)
	writeRoleDept(&b, ev, u)
	b.WriteByte(' ')
	b.WriteString(actionPhrase(ev))
	b.WriteString(" the record of patient ")
	b.WriteString(ev.PatientID)
	b.WriteString(" at ")
	b.WriteString(ev.EventTime.In(loc).Format("2006-01-02 15:04 MST"))
	return b.String()
}

// actionVerbs holds the past tense and the infinitive of each action.
var actionVerbs = map[schemas.Action][2]string{
	schemas.ActionView:   {"viewed", "view"},
	schemas.ActionCreate: {"added to", "add to"},
	schemas.ActionUpdate: {"updated", "update"},
	schemas.ActionDelete: {"deleted from", "delete from"},
	schemas.ActionPrint:  {"printed", "print"},
	schemas.ActionExport: {"exported", "export"},
	schemas.ActionQuery:  {"queried", "query"},
}

func actionPhrase(ev *schemas.AccessEvent) string {
	verb := actionVerbs[ev.Action]
	if verb[0] == "" {
		verb = [2]string{"accessed", "access"}
	}
	if ev.Outcome == schemas.OutcomeFailure {
		return "tried to " + verb[1] + " (and was refused)"
	}
	return verb[0]
}

// careSentence renders the care relationship for an explanation.
func careSentence(c CareRelationship) string {
	if c.Explained {
		return "explained by " + c.Reason
	}
	return "no care relationship explains it (would have: " + c.Reason + ")"
}

// humanDuration renders d for a sentence: whole days as "30 days",
// anything else compactly ("36h", "90m").
func humanDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == day:
		return "1 day"
	case d > 0 && d%day == 0:
		return fmt.Sprintf("%d days", d/day)
	}
	return schemas.FormatDuration(d)
}

// foldSet is a set of strings compared case-insensitively after trimming.
type foldSet map[string]struct{}

func newFoldSet(items []string) foldSet {
	s := make(foldSet, len(items))
	for _, it := range items {
		s[strings.ToLower(strings.TrimSpace(it))] = struct{}{}
	}
	return s
}

func (s foldSet) has(v string) bool {
	if len(s) == 0 || v == "" {
		return false
	}
	_, ok := s[strings.ToLower(strings.TrimSpace(v))]
	return ok
}
