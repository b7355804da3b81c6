package detectors

import (
	"slices"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// PersonLinker is implemented by Reference implementations that link a
// person's account and chart from both sides (ReferenceIndex does):
// users.patient_id and patients.employee_user_id. Detectors use it through
// employeeOf and patientOf, so every relationship detector reads both.
type PersonLinker interface {
	// EmployeeOf returns the account of the employee whose chart
	// patientID is.
	EmployeeOf(patientID string) (userID string, ok bool)
	// PatientOf returns the chart of the person behind userID.
	PatientOf(userID string) (patientID string, ok bool)
}

// VocabularySource is implemented by Reference implementations that carry
// the hospital's vocabulary (ReferenceIndex does).
type VocabularySource interface {
	Vocabulary() *Vocabulary
}

var (
	_ PersonLinker     = (*ReferenceIndex)(nil)
	_ VocabularySource = (*ReferenceIndex)(nil)
)

// vocabOf returns the reference data's vocabulary, or the built-in one.
func vocabOf(ref Reference) *Vocabulary {
	if s, ok := ref.(VocabularySource); ok {
		if v := s.Vocabulary(); v != nil {
			return v
		}
	}
	return DefaultVocabulary()
}

// employeeOf returns the account of the employee whose chart the patient
// is, read from both sides (p may be nil).
func employeeOf(ref Reference, patientID string, p *schemas.Patient) string {
	if l, ok := ref.(PersonLinker); ok {
		if id, ok := l.EmployeeOf(patientID); ok {
			return id
		}
		return ""
	}
	if p != nil {
		return p.EmployeeUserID
	}
	return ""
}

// patientOf returns the chart of the person behind the account, read from
// both sides (u may be nil).
func patientOf(ref Reference, userID string, u *schemas.User) string {
	if l, ok := ref.(PersonLinker); ok {
		if id, ok := l.PatientOf(userID); ok {
			return id
		}
		return ""
	}
	if u != nil {
		return u.PatientID
	}
	return ""
}

// selfLink reports how the reference data links the user to the patient
// as one person: "user_patient_id" (the account's own medical record
// number), "patient_employee_user_id" (the chart's employee link), or "".
func selfLink(ref Reference, ev *schemas.AccessEvent, u *schemas.User, p *schemas.Patient) string {
	if l := isSelf(ev, u, p); l != "" {
		return l
	}
	// The other side's statement, when the record in hand does not make it
	// (a user whose chart names them, a chart whose user names it).
	if patientOf(ref, ev.UserID, u) == ev.PatientID {
		if u != nil && u.PatientID == ev.PatientID {
			return "user_patient_id"
		}
		return "patient_employee_user_id"
	}
	if employeeOf(ref, ev.PatientID, p) == ev.UserID {
		if p != nil && p.EmployeeUserID == ev.UserID {
			return "patient_employee_user_id"
		}
		return "user_patient_id"
	}
	return ""
}

// namedBy reports how chart c names the account: "guarantor",
// "next_of_kin" or "".
func namedBy(c *schemas.Patient, userID string) string {
	switch {
	case c == nil || userID == "":
		return ""
	case c.GuarantorUserID == userID:
		return "guarantor"
	case slices.Contains(c.NextOfKinUserIDs, userID):
		return "next_of_kin"
	}
	return ""
}
