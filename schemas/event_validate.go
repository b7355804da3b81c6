package schemas

import (
	"net/netip"
	"time"
	"unicode/utf8"
)

// eventField numbers the canonical AccessEvent fields.
type eventField uint8

const (
	fEventID eventField = iota
	fEventTime
	fLoggedTime
	fSource
	fFacilityID
	fUserID
	fUserRole
	fUserDepartment
	fWorkstationID
	fClientIP
	fPatientID
	fEncounterID
	fAction
	fResource
	fBreakGlass
	fBreakGlassReason
	fOutcome
	numEventFields
)

// fieldSpec describes one canonical field.
type fieldSpec struct {
	name     string
	limit    int  // max bytes of the decoded string value
	required bool // must be present (and not null) in canonical JSON
	id       bool // identifier-like: no control characters
}

// eventFields is the canonical event schema as the decoder and Validate see
// it; jsonschema/access_event.schema.json must agree (a test checks).
var eventFields = [numEventFields]fieldSpec{
	fEventID:          {name: "event_id", limit: MaxIDLen, required: true, id: true},
	fEventTime:        {name: "event_time", limit: maxTimeLen, required: true},
	fLoggedTime:       {name: "logged_time", limit: maxTimeLen},
	fSource:           {name: "source", limit: MaxIDLen, id: true},
	fFacilityID:       {name: "facility_id", limit: MaxIDLen, required: true, id: true},
	fUserID:           {name: "user_id", limit: MaxIDLen, required: true, id: true},
	fUserRole:         {name: "user_role", limit: MaxIDLen, id: true},
	fUserDepartment:   {name: "user_department", limit: MaxIDLen, id: true},
	fWorkstationID:    {name: "workstation_id", limit: MaxWorkstationLen, id: true},
	fClientIP:         {name: "client_ip", limit: MaxClientIPLen},
	fPatientID:        {name: "patient_id", limit: MaxIDLen, required: true, id: true},
	fEncounterID:      {name: "encounter_id", limit: MaxIDLen, id: true},
	fAction:           {name: "action", limit: 16, required: true},
	fResource:         {name: "resource", limit: MaxResourceLen, id: true},
	fBreakGlass:       {name: "break_glass"},
	fBreakGlassReason: {name: "break_glass_reason", limit: MaxReasonLen},
	fOutcome:          {name: "outcome", limit: 16},
}

// RequiredEventFields returns the canonical JSON fields an event must carry
// (present and not null), in schema order. Every other field is optional:
// absent or null strings become "", break_glass becomes false, outcome
// becomes "success", logged_time stays nil.
func RequiredEventFields() []string {
	var out []string
	for _, f := range eventFields {
		if f.required {
			out = append(out, f.name)
		}
	}
	return out
}

// lookupEventField maps a JSON key to its field, or numEventFields.
func lookupEventField(key []byte) eventField {
	switch string(key) {
	case "event_id":
		return fEventID
	case "event_time":
		return fEventTime
	case "logged_time":
		return fLoggedTime
	case "source":
		return fSource
	case "facility_id":
		return fFacilityID
	case "user_id":
		return fUserID
	case "user_role":
		return fUserRole
	case "user_department":
		return fUserDepartment
	case "workstation_id":
		return fWorkstationID
	case "client_ip":
		return fClientIP
	case "patient_id":
		return fPatientID
	case "encounter_id":
		return fEncounterID
	case "action":
		return fAction
	case "resource":
		return fResource
	case "break_glass":
		return fBreakGlass
	case "break_glass_reason":
		return fBreakGlassReason
	case "outcome":
		return fOutcome
	}
	return numEventFields
}

// Validate checks the invariants every AccessEvent must satisfy, whoever
// built it: required fields set (event_id, event_time, facility_id,
// user_id, patient_id, action, and a valid outcome), strings valid UTF-8
// and within their limits, no control characters in identifiers, action
// and outcome known, client_ip (if set) a zone-less IP address, times
// inside the storable range. The decoders call it; code that builds events
// by hand (tests, replay tools) should too.
//
// The error is a *DecodeError naming the canonical field.
func (e *AccessEvent) Validate() error {
	if de := e.validate(checkEncoding | checkControl); de != nil {
		return de
	}
	return nil
}

// validateChecks selects the checks of validate that a decoder has not
// already made while scanning.
type validateChecks uint8

const (
	checkEncoding validateChecks = 1 << iota // UTF-8 and length limits
	checkControl                             // control characters in identifiers
)

// validate is Validate, without the checks not selected.
func (e *AccessEvent) validate(checks validateChecks) *DecodeError {
	strs := [...]struct {
		f eventField
		v string
	}{
		{fEventID, e.EventID},
		{fSource, e.Source},
		{fFacilityID, e.FacilityID},
		{fUserID, e.UserID},
		{fUserRole, e.UserRole},
		{fUserDepartment, e.UserDepartment},
		{fWorkstationID, e.WorkstationID},
		{fClientIP, e.ClientIP},
		{fPatientID, e.PatientID},
		{fEncounterID, e.EncounterID},
		{fResource, e.Resource},
		{fBreakGlassReason, e.BreakGlassReason},
	}
	for _, s := range strs {
		spec := &eventFields[s.f]
		if s.v == "" {
			if spec.required {
				return newErr(spec.name, ClassMissingField, rEmpty, -1)
			}
			continue
		}
		if checks&checkEncoding != 0 {
			if len(s.v) > spec.limit {
				return newErr(spec.name, ClassTooLarge, rValueTooLarge, -1)
			}
			if !utf8.ValidString(s.v) {
				return newErr(spec.name, ClassInvalidUTF8, rBadUTF8, -1)
			}
		}
		if checks&checkControl != 0 && spec.id && hasControl(s.v) {
			return newErr(spec.name, ClassInvalidValue, rControlInID, -1)
		}
	}
	if e.EventTime.IsZero() {
		return newErr("event_time", ClassMissingField, rEmpty, -1)
	}
	if !InTimeRange(e.EventTime) {
		return newErr("event_time", ClassInvalidTime, rTimeRange, -1)
	}
	if e.LoggedTime != nil && !InTimeRange(*e.LoggedTime) {
		return newErr("logged_time", ClassInvalidTime, rTimeRange, -1)
	}
	if e.Action == "" {
		return newErr("action", ClassMissingField, rEmpty, -1)
	}
	if !e.Action.Valid() {
		return newErr("action", ClassInvalidValue, rUnknownAction, -1)
	}
	if e.Outcome == "" {
		return newErr("outcome", ClassMissingField, rEmpty, -1)
	}
	if !e.Outcome.Valid() {
		return newErr("outcome", ClassInvalidValue, rUnknownOutcome, -1)
	}
	if e.ClientIP != "" {
		if r := checkIP(e.ClientIP); r != rNone {
			return newErr("client_ip", ClassInvalidValue, r, -1)
		}
	}
	return nil
}

// checkIP accepts an IPv4 or IPv6 address without a zone.
func checkIP(s string) reason {
	a, err := netip.ParseAddr(s)
	if err != nil {
		return rBadIP // err holds the input; it must not travel
	}
	if a.Zone() != "" {
		return rIPZone
	}
	return rNone
}

// hasControl reports whether s holds an ASCII control character (C0 or
// DEL); such bytes in identifiers enable log injection and are never valid
// ids.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// sameInstantAndOffset reports whether a and b are the same instant written
// with the same UTC offset.
func sameInstantAndOffset(a, b time.Time) bool {
	_, oa := a.Zone()
	_, ob := b.Zone()
	return a.Equal(b) && oa == ob
}

// Equal reports whether e and o describe the same access: every field
// equal, times compared as instants with the same UTC offset (so a decoded
// event equals one re-decoded from its json.Marshal form).
func (e *AccessEvent) Equal(o *AccessEvent) bool {
	if e == nil || o == nil {
		return e == o
	}
	if (e.LoggedTime == nil) != (o.LoggedTime == nil) {
		return false
	}
	if e.LoggedTime != nil && !sameInstantAndOffset(*e.LoggedTime, *o.LoggedTime) {
		return false
	}
	return sameInstantAndOffset(e.EventTime, o.EventTime) &&
		e.EventID == o.EventID && e.Source == o.Source && e.FacilityID == o.FacilityID &&
		e.UserID == o.UserID && e.UserRole == o.UserRole && e.UserDepartment == o.UserDepartment &&
		e.WorkstationID == o.WorkstationID && e.ClientIP == o.ClientIP && e.PatientID == o.PatientID &&
		e.EncounterID == o.EncounterID && e.Action == o.Action && e.Resource == o.Resource &&
		e.BreakGlass == o.BreakGlass && e.BreakGlassReason == o.BreakGlassReason && e.Outcome == o.Outcome
}
