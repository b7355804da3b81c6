package triage

import (
	"math"
	"slices"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// This file exports the pieces of the store's logic that a store keeping
// its data elsewhere (the demo's in-memory console store) needs, so that
// it follows the same lifecycle and the same care rule instead of a copy.

// Apply validates ch against the current state cur and returns the next
// state, without version, actor and time (the caller sets them after its
// own version check, as Update does). Errors: *ValidationError,
// ErrForbidden.
func Apply(cur State, ch Change, actor Actor) (State, error) { return apply(cur, ch, actor) }

// InitialState is the state of an alert nobody has triaged: new, version 0.
func InitialState(alertID string) State { return initialState(alertID) }

// CareIndex decides whether a care relationship explains an access, by the
// rule of Care, over encounters held in memory.
type CareIndex struct {
	ci                      careIndex
	slackBefore, slackAfter time.Duration
}

// NewCareIndex indexes encounters (invalid ones are skipped, as the
// detectors skip them) with opts' care slack (zero: the defaults).
func NewCareIndex(encounters []schemas.Encounter, opts Options) *CareIndex {
	if opts.CareSlackBefore == 0 && opts.CareSlackAfter == 0 {
		def := DefaultOptions()
		opts.CareSlackBefore, opts.CareSlackAfter = def.CareSlackBefore, def.CareSlackAfter
	}
	x := &CareIndex{ci: careIndex{}, slackBefore: opts.CareSlackBefore, slackAfter: opts.CareSlackAfter}
	for _, e := range encounters {
		x.ci.add(e.EncounterID, e.PatientID, e.Department, e.Start, e.End, e.CareTeam)
	}
	x.ci.sort()
	return x
}

// Explain says whether patient's encounters explain userID's access at t;
// dept is the user's department (the event's, else the users table's).
func (x *CareIndex) Explain(patient, userID, dept string, t time.Time) Care {
	return x.ci.explainSlack(patient, userID, dept, t, x.slackBefore, x.slackAfter)
}

// add indexes one encounter row; rows the detectors skip are skipped.
func (ci careIndex) add(id, patient, dept string, start time.Time, end *time.Time, team []string) {
	if id == "" || patient == "" || start.IsZero() || (end != nil && end.Before(start)) {
		return
	}
	e := careEnc{id: id, dept: dept, start: start.UnixNano(), end: math.MaxInt64}
	if end != nil {
		e.end = end.UnixNano()
	}
	pe := ci[patient]
	if pe == nil {
		pe = &patientEncs{byDept: map[string][]careEnc{}, byMember: map[string][]careEnc{}}
		ci[patient] = pe
	}
	if d := foldDept(dept); d != "" {
		pe.byDept[d] = append(pe.byDept[d], e)
	}
	for _, m := range team {
		if m != "" && !slices.ContainsFunc(pe.byMember[m], func(x careEnc) bool { return x.id == id }) {
			pe.byMember[m] = append(pe.byMember[m], e)
		}
	}
}

// sort orders every list by (start, id), as find expects.
func (ci careIndex) sort() {
	for _, pe := range ci {
		for _, l := range pe.byDept {
			sortEncs(l)
		}
		for _, l := range pe.byMember {
			sortEncs(l)
		}
	}
}

// UserRecord is what a report shows of a users row.
type UserRecord struct {
	FirstName, LastName, Role, Department string
}

// NewAccessRow builds the report row of one access: u is the user's
// reference record (zero when unknown), care the verdict, findings those
// citing the event, loc the facility's zone (nil: UTC only). Report builds
// its rows with it.
func NewAccessRow(e *schemas.AccessEvent, u UserRecord, care Care, findings []FindingRef, loc *time.Location) AccessRow {
	ui := userInfo{firstName: u.FirstName, lastName: u.LastName, role: u.Role, department: u.Department}
	row := AccessRow{
		EventID: e.EventID, Time: e.EventTime, FacilityID: e.FacilityID,
		UserID: e.UserID, UserName: ui.name(), UserRole: e.UserRole, UserDepartment: e.UserDepartment,
		PatientID: e.PatientID, Action: string(e.Action), Resource: e.Resource, Outcome: string(e.Outcome),
		BreakGlass: e.BreakGlass, BreakGlassReason: e.BreakGlassReason, EncounterID: e.EncounterID,
		Care: care, Findings: findings,
	}
	if row.UserRole == "" {
		row.UserRole = u.Role
	}
	if row.UserDepartment == "" {
		row.UserDepartment = u.Department
	}
	if loc != nil {
		row.LocalTime = e.EventTime.In(loc).Format("2006-01-02T15:04:05.000Z07:00")
		row.TimeZone = loc.String()
	}
	return row
}

// EncodeCursor returns the paging cursor for a page that ended at (t, id),
// in the form the store's pages use (millisecond precision).
func EncodeCursor(t time.Time, id string) string { return encodeCursor(t, id) }

// DecodeCursor parses a cursor from EncodeCursor; "" gives ok false and no
// error. A malformed cursor is a *ValidationError on "cursor".
func DecodeCursor(s string) (t time.Time, id string, ok bool, err error) {
	c, err := decodeCursor(s)
	if err != nil || c == nil {
		return time.Time{}, "", false, err
	}
	return c.t, c.id, true, nil
}
