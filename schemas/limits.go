package schemas

// Size limits. Sizes are in bytes of UTF-8 after JSON unescaping, except
// the message and line limits, which count raw input bytes.
const (
	// MaxCanonicalMessageSize bounds a canonical JSON event.
	MaxCanonicalMessageSize = 64 << 10
	// MaxFHIRMessageSize bounds a FHIR AuditEvent; FHIR resources carry
	// narrative, extensions and entity details the decoder skips over.
	MaxFHIRMessageSize = 256 << 10
	// MaxIDLen bounds identifiers: event_id, facility_id, user_id,
	// patient_id, encounter_id, source, user_role, user_department, and the
	// ids in reference data.
	MaxIDLen = 128
	// MaxWorkstationLen bounds workstation_id (a host name can be 253 bytes).
	MaxWorkstationLen = 256
	// MaxResourceLen bounds resource (for FHIR, a full reference).
	MaxResourceLen = 256
	// MaxClientIPLen bounds client_ip before it is parsed.
	MaxClientIPLen = 64
	// MaxReasonLen bounds break_glass_reason.
	MaxReasonLen = 1024
	// MaxReferenceStringLen bounds every other string in reference data
	// (names, roles, departments, address parts).
	MaxReferenceStringLen = 1024
	// MaxCareTeam bounds Encounter.CareTeam; it is also the most items any
	// array in a reference-data line may hold.
	MaxCareTeam = 1000
	// MaxNextOfKin bounds Patient.NextOfKinUserIDs.
	MaxNextOfKin = 100
	// MaxNDJSONLineSize bounds one line of a reference-data file.
	MaxNDJSONLineSize = 1 << 20
	// MaxJSONDepth bounds nesting of objects and arrays (FHIR, reference
	// data). The canonical event is flat and accepts no nesting at all.
	MaxJSONDepth = 32
	// MaxJSONValues bounds how many JSON values (objects, arrays, strings,
	// numbers, literals) one FHIR message or reference-data line may hold.
	MaxJSONValues = 1 << 14
)

// maxTimeLen bounds a date-time string; the longest valid RFC 3339 form
// this package accepts is 35 bytes.
const maxTimeLen = 64
