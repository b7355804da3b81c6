package synth

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Files WriteFiles writes, relative to its directory.
const (
	EventsFile     = "events.ndjson"
	UsersFile      = "reference/users.ndjson"
	PatientsFile   = "reference/patients.ndjson"
	EncountersFile = "reference/encounters.ndjson"
	TruthFile      = "truth.ndjson"
	FacilitiesFile = "facilities.ndjson"
)

// WriteFiles writes the hospital into dir (created if needed):
//
//	events.ndjson                canonical JSON events, one per line, in arrival order
//	reference/users.ndjson       schemas.User
//	reference/patients.ndjson    schemas.Patient
//	reference/encounters.ndjson  schemas.Encounter
//	truth.ndjson                 Label, ordered by start
//	facilities.ndjson            Facility (id, time zone, source, simulated span)
//
// When the hospital was built with New, the events are streamed to disk
// without being held in memory. Output is byte-identical for equal configs.
func (h *Hospital) WriteFiles(dir string) error {
	if err := h.WriteReference(dir); err != nil {
		return err
	}
	truth := h.Truth
	err := withNDJSON(filepath.Join(dir, EventsFile), func(enc *json.Encoder) error {
		if h.Events != nil {
			for i := range h.Events {
				if err := enc.Encode(&h.Events[i]); err != nil {
					return err
				}
			}
			return nil
		}
		var err error
		truth, err = h.EachEvent(func(ev *schemas.AccessEvent) error { return enc.Encode(ev) })
		return err
	})
	if err != nil {
		return err
	}
	return WriteTruth(filepath.Join(dir, TruthFile), truth)
}

// WriteReference writes the reference files and facilities.ndjson into
// dir (created if needed).
func (h *Hospital) WriteReference(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, "reference"), 0o755); err != nil {
		return err
	}
	if err := writeNDJSON(filepath.Join(dir, UsersFile), h.Users); err != nil {
		return err
	}
	if err := writeNDJSON(filepath.Join(dir, PatientsFile), h.Patients); err != nil {
		return err
	}
	if err := writeNDJSON(filepath.Join(dir, EncountersFile), h.Encounters); err != nil {
		return err
	}
	if h.vocab != nil {
		if err := writeNDJSON(filepath.Join(dir, "reference", schemas.VocabularyFile), h.vocab.Entries); err != nil {
			return err
		}
	}
	return writeNDJSON(filepath.Join(dir, FacilitiesFile), h.Facilities)
}

// WriteTruth writes labels as NDJSON to path.
func WriteTruth(path string, truth []Label) error { return writeNDJSON(path, truth) }

func writeNDJSON[T any](path string, xs []T) error {
	return withNDJSON(path, func(enc *json.Encoder) error {
		for i := range xs {
			if err := enc.Encode(&xs[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

func withNDJSON(path string, fill func(*json.Encoder) error) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}()
	w := bufio.NewWriterSize(f, 1<<20)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	if err := fill(enc); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return w.Flush()
}

// FHIR R4 rendering.

const (
	fhirSysRestful     = "http://hl7.org/fhir/restful-interaction"
	fhirSysDICOM       = "http://dicom.nema.org/resources/ontology/DCM"
	fhirSysAuditType   = "http://terminology.hl7.org/CodeSystem/audit-event-type"
	fhirSysActReason   = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	fhirSysEntityType  = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	fhirSysObjectRole  = "http://terminology.hl7.org/CodeSystem/object-role"
	fhirSysAccessType  = "http://terminology.hl7.org/CodeSystem/extra-security-role-type"
	fhirSysUserRole    = "https://github.com/ehrwatch/ehrwatch/fhir/CodeSystem/user-role"
	fhirExtDepartment  = schemas.FHIRExtUserDepartment
	fhirExtBreakReason = schemas.FHIRExtBreakGlassReason
)

type fhirCoding struct {
	System  string `json:"system,omitempty"`
	Code    string `json:"code,omitempty"`
	Display string `json:"display,omitempty"`
}

type fhirConcept struct {
	Coding []fhirCoding `json:"coding,omitempty"`
	Text   string       `json:"text,omitempty"`
}

type fhirIdentifier struct {
	Value string `json:"value"`
}

type fhirReference struct {
	Reference  string          `json:"reference,omitempty"`
	Type       string          `json:"type,omitempty"`
	Identifier *fhirIdentifier `json:"identifier,omitempty"`
	Display    string          `json:"display,omitempty"`
}

type fhirExtension struct {
	URL         string `json:"url"`
	ValueString string `json:"valueString"`
}

type fhirNetwork struct {
	Address string `json:"address"`
	Type    string `json:"type"`
}

type fhirAgent struct {
	Extension    []fhirExtension `json:"extension,omitempty"`
	Type         *fhirConcept    `json:"type,omitempty"`
	Role         []fhirConcept   `json:"role,omitempty"`
	Who          fhirReference   `json:"who"`
	Requestor    bool            `json:"requestor"`
	Network      *fhirNetwork    `json:"network,omitempty"`
	PurposeOfUse []fhirConcept   `json:"purposeOfUse,omitempty"`
}

type fhirEntity struct {
	What fhirReference `json:"what"`
	Type *fhirCoding   `json:"type,omitempty"`
	Role *fhirCoding   `json:"role,omitempty"`
}

type fhirAuditEvent struct {
	ResourceType string          `json:"resourceType"`
	ID           string          `json:"id"`
	Extension    []fhirExtension `json:"extension,omitempty"`
	Type         fhirCoding      `json:"type"`
	Subtype      []fhirCoding    `json:"subtype,omitempty"`
	Action       string          `json:"action"`
	Period       struct {
		Start string `json:"start"`
		End   string `json:"end"`
	} `json:"period"`
	Recorded       string        `json:"recorded,omitempty"`
	Outcome        string        `json:"outcome"`
	PurposeOfEvent []fhirConcept `json:"purposeOfEvent,omitempty"`
	Agent          []fhirAgent   `json:"agent"`
	Source         struct {
		Site     string        `json:"site"`
		Observer fhirReference `json:"observer"`
	} `json:"source"`
	Entity []fhirEntity `json:"entity"`
}

// FHIRAuditEventR4 renders ev as a FHIR R4 AuditEvent (JSON), the way an
// EHR's FHIR audit feed would, so replay and decoder tests can feed FHIR
// lines. schemas.DecodeFHIR maps it back to an equal event:
//
//	event_id            id
//	event_time          period.start (= period.end)
//	logged_time         recorded
//	source              source.observer.identifier.value
//	facility_id         source.site
//	user_id             agent[0].who.identifier.value (requestor = true)
//	user_role           agent[0].role[0].coding[0].code
//	user_department     agent[0].extension FHIRExtUserDepartment
//	client_ip           agent[0].network.address, type "2"
//	workstation_id      agent[1].who.reference "Device/<id>"
//	patient_id          entity "Patient/<id>", type 1 (Person), role 1 (Patient)
//	encounter_id        entity "Encounter/<id>"
//	resource            entity what.reference, verbatim
//	action              action C/R/U/D/E; print and export are R with a subtype
//	                    coding "print" or DICOM 110106 "Export"; subtype also
//	                    carries the restful-interaction code
//	break_glass         purposeOfEvent and agent.purposeOfUse v3-ActReason BTG
//	break_glass_reason  FHIRExtBreakGlassReason extension (and the BTG text)
//	outcome             "0" success, "4" failure
func FHIRAuditEventR4(ev *schemas.AccessEvent) ([]byte, error) {
	if ev == nil {
		return nil, errors.New("synth: nil event")
	}
	a := fhirAuditEvent{ResourceType: "AuditEvent", ID: ev.EventID,
		Type: fhirCoding{System: fhirSysAuditType, Code: "rest", Display: "RESTful Operation"}}
	switch ev.Action {
	case schemas.ActionView:
		a.Action = "R"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "read"}}
	case schemas.ActionCreate:
		a.Action = "C"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "create"}}
	case schemas.ActionUpdate:
		a.Action = "U"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "update"}}
	case schemas.ActionDelete:
		a.Action = "D"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "delete"}}
	case schemas.ActionQuery:
		a.Action = "E"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "search-type"}}
	case schemas.ActionPrint:
		a.Action = "R"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "read"}, {Code: "print", Display: "Print"}}
	case schemas.ActionExport:
		a.Action = "R"
		a.Subtype = []fhirCoding{{System: fhirSysRestful, Code: "read"}, {System: fhirSysDICOM, Code: "110106", Display: "Export"}}
	default:
		return nil, fmt.Errorf("synth: event %s: unknown action %q", ev.EventID, ev.Action)
	}
	when := fhirTime(ev.EventTime)
	a.Period.Start, a.Period.End = when, when
	if ev.LoggedTime != nil {
		a.Recorded = fhirTime(*ev.LoggedTime)
	}
	a.Outcome = "0"
	if ev.Outcome == schemas.OutcomeFailure {
		a.Outcome = "4"
	}
	user := fhirAgent{
		Type:      &fhirConcept{Coding: []fhirCoding{{System: fhirSysAccessType, Code: "humanuser", Display: "human user"}}},
		Who:       fhirReference{Type: "Practitioner", Identifier: &fhirIdentifier{Value: ev.UserID}},
		Requestor: true,
	}
	if ev.UserRole != "" {
		user.Role = []fhirConcept{{Coding: []fhirCoding{{System: fhirSysUserRole, Code: ev.UserRole}}}}
	}
	if ev.UserDepartment != "" {
		user.Extension = []fhirExtension{{URL: fhirExtDepartment, ValueString: ev.UserDepartment}}
	}
	if ev.ClientIP != "" {
		user.Network = &fhirNetwork{Address: ev.ClientIP, Type: "2"}
	}
	if ev.BreakGlass {
		btg := fhirConcept{Coding: []fhirCoding{{System: fhirSysActReason, Code: "BTG", Display: "break the glass"}}, Text: ev.BreakGlassReason}
		a.PurposeOfEvent = []fhirConcept{btg}
		user.PurposeOfUse = []fhirConcept{btg}
		if ev.BreakGlassReason != "" {
			a.Extension = []fhirExtension{{URL: fhirExtBreakReason, ValueString: ev.BreakGlassReason}}
		}
	}
	a.Agent = []fhirAgent{user}
	if ev.WorkstationID != "" {
		a.Agent = append(a.Agent, fhirAgent{
			Type: &fhirConcept{Coding: []fhirCoding{{System: fhirSysDICOM, Code: "110153", Display: "Source Role ID"}}},
			Who:  fhirReference{Reference: "Device/" + ev.WorkstationID},
		})
	}
	a.Source.Site = ev.FacilityID
	a.Source.Observer = fhirReference{Identifier: &fhirIdentifier{Value: ev.Source}, Display: ev.Source}
	a.Entity = []fhirEntity{{
		What: fhirReference{Reference: "Patient/" + ev.PatientID},
		Type: &fhirCoding{System: fhirSysEntityType, Code: "1", Display: "Person"},
		Role: &fhirCoding{System: fhirSysObjectRole, Code: "1", Display: "Patient"},
	}}
	if ev.EncounterID != "" {
		a.Entity = append(a.Entity, fhirEntity{What: fhirReference{Reference: "Encounter/" + ev.EncounterID}})
	}
	if ev.Resource != "" {
		a.Entity = append(a.Entity, fhirEntity{What: fhirReference{Reference: ev.Resource}})
	}
	return json.Marshal(&a)
}

// fhirTime writes an instant as FHIR does: RFC 3339 with the time's own
// offset and whatever sub-second precision it has.
func fhirTime(t time.Time) string { return t.Format(time.RFC3339Nano) }
