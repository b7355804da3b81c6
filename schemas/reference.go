package schemas

import "time"

// UserStatus is an EHR account's employment status.
type UserStatus string

// The statuses a user can have.
const (
	UserActive     UserStatus = "active"
	UserInactive   UserStatus = "inactive"
	UserTerminated UserStatus = "terminated"
)

// Valid reports whether s is one of the known statuses.
func (s UserStatus) Valid() bool {
	return s == UserActive || s == UserInactive || s == UserTerminated
}

// Address is a postal address. Detectors compare addresses (family and
// co-worker relationships); they never copy them into findings or logs.
type Address struct {
	Line       string `json:"line,omitempty"`
	City       string `json:"city,omitempty"`
	State      string `json:"state,omitempty"`
	PostalCode string `json:"postal_code,omitempty"`
}

// User is an EHR account holder, as HR and identity management know them.
type User struct {
	UserID       string     `json:"user_id"`
	FirstName    string     `json:"first_name"`
	LastName     string     `json:"last_name"`
	Role         string     `json:"role"`
	Department   string     `json:"department"`
	Address      Address    `json:"address"`
	Status       UserStatus `json:"status"`
	TerminatedAt *time.Time `json:"terminated_at,omitempty"`
	// PatientID is the user's own medical record number, if the user is also
	// a patient of the organisation.
	PatientID string `json:"patient_id,omitempty"`
}

// Patient is a person with a chart.
type Patient struct {
	PatientID   string     `json:"patient_id"`
	FirstName   string     `json:"first_name"`
	LastName    string     `json:"last_name"`
	Address     Address    `json:"address"`
	DateOfBirth string     `json:"date_of_birth,omitempty"` // YYYY-MM-DD
	VIP         bool       `json:"vip"`
	DeceasedAt  *time.Time `json:"deceased_at,omitempty"`
	// EmployeeUserID links a patient who is also an employee to their account.
	EmployeeUserID string `json:"employee_user_id,omitempty"`
	// NextOfKinUserIDs are the accounts of employees recorded as this
	// patient's next of kin or emergency contacts (optional; the family
	// detector treats them as relatives).
	NextOfKinUserIDs []string `json:"next_of_kin_user_ids,omitempty"`
	// GuarantorUserID is the account of an employee who is this patient's
	// financial guarantor or insurance subscriber, if any (optional; the
	// family detector treats the guarantor as a relative).
	GuarantorUserID string `json:"guarantor_user_id,omitempty"`
}

// Encounter is a patient's visit or stay in a department; it is what makes a
// care relationship, and so what explains an access.
type Encounter struct {
	EncounterID string     `json:"encounter_id"`
	PatientID   string     `json:"patient_id"`
	Department  string     `json:"department"`
	Start       time.Time  `json:"start"`
	End         *time.Time `json:"end,omitempty"` // nil while the encounter is open
	CareTeam    []string   `json:"care_team,omitempty"`
}
