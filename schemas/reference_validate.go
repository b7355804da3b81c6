package schemas

import (
	"time"
	"unicode/utf8"
)

// Required members of each reference-data record (present, not null, not
// empty); jsonschema/*.schema.json must agree (a test checks).
var (
	userRequired      = []string{"user_id", "status"}
	patientRequired   = []string{"patient_id"}
	encounterRequired = []string{"encounter_id", "patient_id", "start"}
)

// checkString applies the common string rules: required → not empty;
// within limit; valid UTF-8; identifiers without control characters.
// stringField is one string field to check: its name, value, byte limit,
// whether it is required and whether it is an identifier (no control
// characters).
type stringField struct {
	name     string
	v        string
	limit    int
	required bool
	id       bool
}

// checkStrings checks fields in order and returns the first failure.
func checkStrings(fields ...stringField) *DecodeError {
	for _, f := range fields {
		if de := checkString(f.name, f.v, f.limit, f.required, f.id); de != nil {
			return de
		}
	}
	return nil
}

func checkString(field, v string, limit int, required, id bool) *DecodeError {
	if v == "" {
		if required {
			return newErr(field, ClassMissingField, rEmpty, -1)
		}
		return nil
	}
	if len(v) > limit {
		return newErr(field, ClassTooLarge, rValueTooLarge, -1)
	}
	if !utf8.ValidString(v) {
		return newErr(field, ClassInvalidUTF8, rBadUTF8, -1)
	}
	if id && hasControl(v) {
		return newErr(field, ClassInvalidValue, rControlInID, -1)
	}
	return nil
}

func (a *Address) validate(prefix string) *DecodeError {
	for _, s := range [...]struct{ name, v string }{
		{"line", a.Line}, {"city", a.City}, {"state", a.State}, {"postal_code", a.PostalCode},
	} {
		if de := checkString(s.name, s.v, MaxReferenceStringLen, false, false); de != nil {
			de.Field = prefix + "." + de.Field
			return de
		}
	}
	return nil
}

func checkOptionalTime(field string, t *time.Time) *DecodeError {
	if t != nil && !InTimeRange(*t) {
		return newErr(field, ClassInvalidTime, rTimeRange, -1)
	}
	return nil
}

// Validate checks a user record: user_id and status required; status one
// of the UserStatus values; terminated_at required when status is
// terminated; ids, role and department at most MaxIDLen bytes without
// control characters; other strings at most MaxReferenceStringLen bytes of
// valid UTF-8; times inside the storable range. The error is a
// *DecodeError naming the field.
func (u *User) Validate() error {
	if de := u.validate(); de != nil {
		return de
	}
	return nil
}

func (u *User) validate() *DecodeError {
	if de := checkStrings(
		stringField{"user_id", u.UserID, MaxIDLen, true, true},
		stringField{"first_name", u.FirstName, MaxReferenceStringLen, false, false},
		stringField{"last_name", u.LastName, MaxReferenceStringLen, false, false},
		stringField{"role", u.Role, MaxIDLen, false, true},
		stringField{"department", u.Department, MaxIDLen, false, true},
		stringField{"patient_id", u.PatientID, MaxIDLen, false, true},
	); de != nil {
		return de
	}
	if de := u.Address.validate("address"); de != nil {
		return de
	}
	switch {
	case u.Status == "":
		return newErr("status", ClassMissingField, rEmpty, -1)
	case !u.Status.Valid():
		return newErr("status", ClassInvalidValue, rBadStatus, -1)
	case u.Status == UserTerminated && u.TerminatedAt == nil:
		return newErr("terminated_at", ClassMissingField, rTerminatedAt, -1)
	}
	return checkOptionalTime("terminated_at", u.TerminatedAt)
}

// Validate checks a patient record: patient_id required; date_of_birth,
// if set, a YYYY-MM-DD calendar date; next_of_kin_user_ids at most
// MaxNextOfKin non-empty ids; ids at most MaxIDLen bytes without
// control characters; other strings at most MaxReferenceStringLen bytes of
// valid UTF-8; deceased_at inside the storable range. The error is a
// *DecodeError naming the field.
func (p *Patient) Validate() error {
	if de := p.validate(); de != nil {
		return de
	}
	return nil
}

func (p *Patient) validate() *DecodeError {
	if de := checkStrings(
		stringField{"patient_id", p.PatientID, MaxIDLen, true, true},
		stringField{"first_name", p.FirstName, MaxReferenceStringLen, false, false},
		stringField{"last_name", p.LastName, MaxReferenceStringLen, false, false},
		stringField{"employee_user_id", p.EmployeeUserID, MaxIDLen, false, true},
		stringField{"guarantor_user_id", p.GuarantorUserID, MaxIDLen, false, true},
	); de != nil {
		return de
	}
	if de := p.Address.validate("address"); de != nil {
		return de
	}
	if p.DateOfBirth != "" && !validDate(p.DateOfBirth) {
		return newErr("date_of_birth", ClassInvalidTime, rBadDate, -1)
	}
	if de := checkIDList("next_of_kin_user_ids", p.NextOfKinUserIDs, MaxNextOfKin); de != nil {
		return de
	}
	return checkOptionalTime("deceased_at", p.DeceasedAt)
}

// checkIDList checks a list of at most limit non-empty identifiers.
func checkIDList(field string, ids []string, limit int) *DecodeError {
	if len(ids) > limit {
		return newErr(field, ClassTooLarge, rTooManyItems, -1)
	}
	for _, id := range ids {
		if id == "" {
			return newErr(field, ClassInvalidValue, rEmptyItem, -1)
		}
		if de := checkString(field, id, MaxIDLen, false, true); de != nil {
			return de
		}
	}
	return nil
}

// validDate reports whether s is a YYYY-MM-DD calendar date.
func validDate(s string) bool {
	if len(s) != 10 || s[4] != '-' || s[7] != '-' {
		return false
	}
	y, ok1 := digits([]byte(s[0:4]))
	m, ok2 := digits([]byte(s[5:7]))
	d, ok3 := digits([]byte(s[8:10]))
	return ok1 && ok2 && ok3 && m >= 1 && m <= 12 && d >= 1 && d <= daysIn(m, y)
}

// Validate checks an encounter record: encounter_id, patient_id and start
// required; end, if set, not before start; department at most MaxIDLen
// bytes; care_team at most MaxCareTeam non-empty user ids; ids without
// control characters; times inside the storable range. The error is a
// *DecodeError naming the field.
func (e *Encounter) Validate() error {
	if de := e.validate(); de != nil {
		return de
	}
	return nil
}

func (e *Encounter) validate() *DecodeError {
	if de := checkStrings(
		stringField{"encounter_id", e.EncounterID, MaxIDLen, true, true},
		stringField{"patient_id", e.PatientID, MaxIDLen, true, true},
		stringField{"department", e.Department, MaxIDLen, false, true},
	); de != nil {
		return de
	}
	if e.Start.IsZero() {
		return newErr("start", ClassMissingField, rEmpty, -1)
	}
	if !InTimeRange(e.Start) {
		return newErr("start", ClassInvalidTime, rTimeRange, -1)
	}
	if de := checkOptionalTime("end", e.End); de != nil {
		return de
	}
	if e.End != nil && e.End.Before(e.Start) {
		return newErr("end", ClassInvalidValue, rEndBeforeStart, -1)
	}
	return checkIDList("care_team", e.CareTeam, MaxCareTeam)
}
