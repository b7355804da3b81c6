package schemas

import (
	"errors"
	"fmt"
	"slices"
	"sort"
)

// ErrNotAccess is what errors.Is reports for an event that is well formed
// but is not a chart access: a login, a logout, a search without a patient,
// an application start, or an access no user can be held accountable for.
// Such an event is counted by reason and skipped (its offset is committed
// like a handled message's); it is not dead-lettered. The concrete error is
// a *NotAccessError.
var ErrNotAccess = errors.New("schemas: not a chart access")

// IgnoreReason says why an event is not a chart access. The set is small
// and fixed, so a reason can be a metric label as it is.
type IgnoreReason string

// The ignore reasons.
const (
	// IgnoreAuthentication: a login or logout (DICOM 110114 User
	// Authentication, 110122 Login, 110123 Logout) naming no patient.
	IgnoreAuthentication IgnoreReason = "authentication"
	// IgnoreQueryWithoutPatient: a query or search (DICOM 110112, REST
	// search, action E) that names no patient.
	IgnoreQueryWithoutPatient IgnoreReason = "query_without_patient"
	// IgnoreNoPatient: any other event that names no patient (application
	// start, an operation on a non-patient resource, a consent decision…).
	IgnoreNoPatient IgnoreReason = "no_patient"
	// IgnoreNoUser: an event naming a patient whose requesting agent is
	// known only by a display name (who.display is never used as an id),
	// or whose identifiers are all outside fhir.user_identifier_systems, or
	// that has several agents and none is the requestor or a practitioner
	// (a system-to-system access).
	IgnoreNoUser IgnoreReason = "no_user"
	// IgnoreMappedAction: a CSV row whose action the mapping's vocabulary
	// marks "ignore" (a login, a report run, a message sent).
	IgnoreMappedAction IgnoreReason = "ignored_action"
)

// IgnoreReasons lists every IgnoreReason, for pre-registering metric label
// values.
var IgnoreReasons = []IgnoreReason{IgnoreAuthentication, IgnoreQueryWithoutPatient, IgnoreNoPatient, IgnoreNoUser, IgnoreMappedAction}

// NotAccessError is the error of an event that is not a chart access. It
// holds no input data.
type NotAccessError struct {
	Reason IgnoreReason
	// Format is the format the event was decoded from.
	Format Format
}

func (e *NotAccessError) Error() string { return "schemas: not a chart access: " + string(e.Reason) }

// Is makes errors.Is(err, ErrNotAccess) true.
func (e *NotAccessError) Is(target error) bool { return target == ErrNotAccess }

// IgnoreReasonOf returns the reason of the first *NotAccessError in err's
// chain, and whether there is one.
func IgnoreReasonOf(err error) (IgnoreReason, bool) {
	if err == nil {
		// errors.As moves na to the heap: one allocation per decoded
		// event in the pipeline before this check.
		return "", false
	}
	var na *NotAccessError
	if errors.As(err, &na) && na != nil {
		return na.Reason, true
	}
	return "", false
}

// FHIRConfig is the "fhir" configuration section: how FHIR AuditEvents are
// mapped where the standard leaves a choice to the installation. The zero
// value (and DefaultFHIRConfig) maps as documented in docs/feeds.md with no
// site-specific knowledge.
type FHIRConfig struct {
	// UserIDFrom is the order in which the requesting agent's who elements
	// are tried for user_id: "identifier" (who.identifier.value) and
	// "reference" (the id of who.reference, "Practitioner/123" → "123").
	// who.display is never an id. Default: [identifier, reference].
	UserIDFrom []string `yaml:"user_id_from"`
	// UserIdentifierSystems, when not empty, limits who.identifier to
	// identifiers whose system is one of these (your login or employee
	// number namespace); others are skipped.
	UserIdentifierSystems []string `yaml:"user_identifier_systems"`
	// PatientIdentifierAuthorities maps a patient identifier's assigning
	// authority (Identifier.system without "urn:oid:", or the HL7 v2 CX
	// assigning authority "id^^^&1.2.3&ISO" → "1.2.3") to a prefix in your
	// MRN space ("" for none). When it is empty every identifier is used as
	// it is; when it is not, an identifier of an authority it does not list
	// is skipped (the reference id is used, if there is one).
	PatientIdentifierAuthorities map[string]string `yaml:"patient_identifier_authorities"`
	// SourceFacilities is the last step of the facility chain: the
	// facility_id of events whose source (source.observer) is the key, when
	// neither source.site, the requestor's location nor an Organization or
	// Location observer names one. The key "*" applies to every source.
	// Events left without a facility are dead-lettered (missing_field
	// source.site), never given a default time zone silently.
	SourceFacilities map[string]string `yaml:"source_facilities"`
}

// DefaultFHIRConfig returns the defaults.
func DefaultFHIRConfig() FHIRConfig {
	return FHIRConfig{
		UserIDFrom:                   []string{"identifier", "reference"},
		UserIdentifierSystems:        []string{},
		PatientIdentifierAuthorities: map[string]string{},
		SourceFacilities:             map[string]string{},
	}
}

// Validate reports every bad key, relative to the fhir section.
func (c FHIRConfig) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, FieldErrorf(key, format, a...))
	}
	if len(c.UserIDFrom) == 0 {
		bad("user_id_from", "must list identifier, reference or both")
	}
	for i, s := range c.UserIDFrom {
		if s != "identifier" && s != "reference" {
			bad(fmt.Sprintf("user_id_from[%d]", i), "want identifier or reference, got %q", s)
		} else if slices.Index(c.UserIDFrom, s) != i {
			bad(fmt.Sprintf("user_id_from[%d]", i), "%q listed twice", s)
		}
	}
	for i, s := range c.UserIdentifierSystems {
		if s == "" {
			bad(fmt.Sprintf("user_identifier_systems[%d]", i), "must not be empty")
		}
	}
	for _, k := range sortedKeys(c.PatientIdentifierAuthorities) {
		v := c.PatientIdentifierAuthorities[k]
		if k == "" {
			bad("patient_identifier_authorities", "empty authority")
		}
		if len(v) > MaxIDLen/2 || hasControl(v) {
			bad("patient_identifier_authorities."+k, "prefix must be at most %d bytes without control characters", MaxIDLen/2)
		}
	}
	for _, k := range sortedKeys(c.SourceFacilities) {
		v := c.SourceFacilities[k]
		if k == "" {
			bad("source_facilities", "empty source")
		}
		if v == "" || len(v) > MaxIDLen || hasControl(v) {
			bad("source_facilities."+k, "want a facility id of 1..%d bytes without control characters", MaxIDLen)
		}
	}
	return errors.Join(errs...)
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// fhirOpts is FHIRConfig prepared for the decoder.
type fhirOpts struct {
	userRefFirst  bool
	userNoIdent   bool // identifier not in user_id_from
	userNoRef     bool // reference not in user_id_from
	userSystems   []string
	authorities   map[string]string
	facilityOfSrc map[string]string
}

var defaultFHIROpts = newFHIROpts(DefaultFHIRConfig())

func newFHIROpts(c FHIRConfig) *fhirOpts {
	o := &fhirOpts{
		userSystems:   c.UserIdentifierSystems,
		authorities:   c.PatientIdentifierAuthorities,
		facilityOfSrc: c.SourceFacilities,
	}
	o.userNoIdent = !slices.Contains(c.UserIDFrom, "identifier")
	o.userNoRef = !slices.Contains(c.UserIDFrom, "reference")
	o.userRefFirst = len(c.UserIDFrom) > 0 && c.UserIDFrom[0] == "reference"
	return o
}

// Decoder decodes Kafka payloads (canonical JSON or FHIR AuditEvent) with
// a FHIRConfig. It is safe for concurrent use.
type Decoder struct {
	fhir *fhirOpts
}

// NewDecoder validates cfg and returns a Decoder that applies it.
func NewDecoder(cfg FHIRConfig) (*Decoder, error) {
	if err := UnderKey("fhir", cfg.Validate()); err != nil {
		return nil, err
	}
	return &Decoder{fhir: newFHIROpts(cfg)}, nil
}

// Decode is DecodeEvent with the decoder's configuration.
func (d *Decoder) Decode(data []byte) (*AccessEvent, error) {
	return newEvent(data, d.fhir, false)
}

// DecodeOwned is DecodeEventOwned with the decoder's configuration: data
// must never be modified or reused afterwards.
func (d *Decoder) DecodeOwned(data []byte) (*AccessEvent, error) {
	return newEvent(data, d.fhir, true)
}

// DecodeInto is DecodeEventInto with the decoder's configuration.
func (d *Decoder) DecodeInto(data []byte, ev *AccessEvent) (Format, error) {
	return decodeEvent(data, ev, nil, d.fhir, false)
}
