package schemas

import "time"

// Action is what a user did to a patient's record.
type Action string

// The actions an access event can carry.
const (
	ActionView   Action = "view"
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
	ActionPrint  Action = "print"
	ActionExport Action = "export"
	ActionQuery  Action = "query"
)

// Actions lists every valid Action in a stable order.
var Actions = []Action{ActionView, ActionCreate, ActionUpdate, ActionDelete, ActionPrint, ActionExport, ActionQuery}

// Valid reports whether a is one of the known actions.
func (a Action) Valid() bool {
	switch a {
	case ActionView, ActionCreate, ActionUpdate, ActionDelete, ActionPrint, ActionExport, ActionQuery:
		return true
	}
	return false
}

// Outcome says whether the access succeeded.
type Outcome string

// The outcomes an access event can carry.
const (
	OutcomeSuccess Outcome = "success"
	OutcomeFailure Outcome = "failure"
)

// Valid reports whether o is one of the known outcomes.
func (o Outcome) Valid() bool { return o == OutcomeSuccess || o == OutcomeFailure }

// AccessEvent is one access by one EHR user to one patient's record: the
// canonical event every decoder produces and every detector consumes.
//
// PatientID, BreakGlassReason and ClientIP are patient data or free text:
// they never go into logs, metric labels or error strings.
type AccessEvent struct {
	EventID          string     `json:"event_id"`
	EventTime        time.Time  `json:"event_time"`
	LoggedTime       *time.Time `json:"logged_time,omitempty"`
	Source           string     `json:"source"`
	FacilityID       string     `json:"facility_id"`
	UserID           string     `json:"user_id"`
	UserRole         string     `json:"user_role"`
	UserDepartment   string     `json:"user_department"`
	WorkstationID    string     `json:"workstation_id"`
	ClientIP         string     `json:"client_ip,omitempty"`
	PatientID        string     `json:"patient_id"`
	EncounterID      string     `json:"encounter_id,omitempty"`
	Action           Action     `json:"action"`
	Resource         string     `json:"resource,omitempty"`
	BreakGlass       bool       `json:"break_glass"`
	BreakGlassReason string     `json:"break_glass_reason,omitempty"`
	Outcome          Outcome    `json:"outcome"`
}
