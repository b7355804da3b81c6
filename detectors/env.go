package detectors

import (
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Reference answers the reference-data questions detectors ask about an
// event. Implementations are immutable snapshots swapped atomically on
// refresh, so lookups need no locks and never block the hot path.
type Reference interface {
	// User returns the account behind userID.
	User(userID string) (*schemas.User, bool)
	// Patient returns the patient behind patientID.
	Patient(patientID string) (*schemas.Patient, bool)
	// Care reports whether a care relationship explains the access: an
	// encounter of the patient in the user's department, or with the user on
	// its care team, overlapping at ± the configured slack.
	Care(ev *schemas.AccessEvent) CareRelationship
}

// CareRelationship is the answer to "was this access explained?".
type CareRelationship struct {
	Explained   bool
	EncounterID string // the encounter that explains it, if any
	// By names what explained it (the ExplainedBy* constants); "" when
	// nothing did.
	By string
	// Reason says in words what explained the access, or what would have,
	// for the finding's evidence ("encounter E1 in cardiology").
	Reason string
}

// Env is what the Engine hands every detector constructor.
type Env struct {
	// Reference is read on every call; it may be swapped between events.
	Reference func() Reference
	// Location returns a facility's time zone (UTC when unknown).
	Location func(facilityID string) *time.Location

	// explain is the Engine's explainer (continuity of care, per-user
	// breadth, coverage); set by NewEngine, nil for detectors built alone.
	explain *explainer
}
