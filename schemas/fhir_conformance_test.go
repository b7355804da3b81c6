package schemas

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// fhirExamplesEnv names the directory deployments/dev/fhir-examples.sh
// fills with the AuditEvent examples of the HL7 packages
// hl7.fhir.r4.examples 4.0.1 and hl7.fhir.r5.examples 5.0.0.
const fhirExamplesEnv = "EHRDEV_FHIR_EXAMPLES"

// hl7ExamplesConfig is what an installation receiving these feeds would
// configure: the examples' CX assigning authority mapped into the MRN
// space, and a facility for the observers that name none.
var hl7ExamplesConfig = FHIRConfig{
	UserIDFrom:                   []string{"identifier", "reference"},
	PatientIdentifierAuthorities: map[string]string{"2.16.840.1.113883.4.2": "hl7-"},
	SourceFacilities: map[string]string{
		"hl7connect.healthintersections.com.au": "fac-cloud",
		"LEAP Consent Decision Service":         "fac-leap",
	},
}

// hl7Expected is the mapping of each HL7 example, checked by hand against
// the resource (see the comments); ignore names a non-access example.
type hl7Expected struct {
	patient, user string
	action        Action
	facility      string
	breakGlass    bool
	ignore        IgnoreReason
}

var hl7ExamplesWant = map[string]hl7Expected{
	// R4. disclosure: entity[0] Patient/example (role 1); requestor who.identifier
	// SomeIdiot@nowhere; type DICOM 110106 Export; site "Watcher"; purpose HMARKT.
	"r4/example-disclosure": {"example", "SomeIdiot@nowhere", ActionExport, "Watcher", false, ""},
	// media: patient a CX id with assigning authority 2.16.840.1.113883.4.2;
	// requestor agent[1] who.identifier 95; type 110106; no site, no location,
	// observer display hl7connect… → configured facility.
	"r4/example-media": {"hl7-e3cdfc81a0d24bd", "95", ActionExport, "fac-cloud", false, ""},
	// pixQuery: same patient CX; type 110112 Query, action E; requestor agent[1].
	"r4/example-pixQuery": {"hl7-e3cdfc81a0d24bd", "95", ActionQuery, "fac-cloud", false, ""},
	// rest: vread of Patient/example/_history/1 (entity type 2, no role); site Cloud.
	"r4/example-rest": {"example", "95", ActionView, "Cloud", false, ""},
	// error: create of a contained OperationOutcome; no patient.
	"r4/example-error":  {ignore: IgnoreNoPatient},
	"r4/example-login":  {ignore: IgnoreAuthentication}, // 110114/110122
	"r4/example-logout": {ignore: IgnoreAuthentication}, // 110114/110123
	"r4/example-search": {ignore: IgnoreQueryWithoutPatient},
	"r4/example":        {ignore: IgnoreNoPatient}, // 110100 Application Start, a laptop serial number
	// R5. breakglass-start: category 110113 Security Alert, code 110127
	// Emergency Override Started, action E, authorization ETREAT; entity
	// Patient/example role 1; requestor Practitioner/f001 at Location/1; no site.
	"r5/example-breakglass-start": {"example", "f001", ActionView, "1", true, ""},
	// consent-permit-authz: code 110112 Query; patient Patient/example;
	// requestor who.identifier Org1; observer LEAP… → configured facility.
	"r5/example-consent-permit-authz": {"example", "Org1", ActionQuery, "fac-leap", false, ""},
	// disclosure: patient Patient/example (entity Patient/example/_history/1 with
	// identifier What.id is a lower tier); requestor identifier SomeIdiot@nowhere
	// (display ignored) at Location/1; category 110106.
	"r5/example-disclosure": {"example", "SomeIdiot@nowhere", ActionExport, "1", false, ""},
	// media: CX patient, requestor 95, category 110106, observer identifier hl7connect….
	"r5/example-media": {"hl7-e3cdfc81a0d24bd", "95", ActionExport, "fac-cloud", false, ""},
	// pixQuery: category 110112, CX patient, requestor 95, observer display hl7connect….
	"r5/example-pixQuery": {"hl7-e3cdfc81a0d24bd", "95", ActionQuery, "fac-cloud", false, ""},
	// rest: vread (action R) of Patient/example/_history/1, role 1.
	"r5/example-rest": {"example", "95", ActionView, "fac-cloud", false, ""},
	// rest-create-traceID: action C on Patient/example/_history/1, role 1.
	"r5/example-rest-create-traceID": {"example", "95", ActionCreate, "fac-cloud", false, ""},
	// advanced-create: patient Patient/example, but the requestor is known only
	// as who.display "Betty Jones": nobody to hold accountable.
	"r5/example-advanced-create": {ignore: IgnoreNoUser},
	"r5/example-error":           {ignore: IgnoreNoPatient}, // entity #o1 is a contained OperationOutcome
	"r5/example-login":           {ignore: IgnoreAuthentication},
	"r5/example-logout":          {ignore: IgnoreAuthentication},
	"r5/example-search":          {ignore: IgnoreQueryWithoutPatient},
	"r5/example":                 {ignore: IgnoreNoPatient},
}

// TestHL7AuditEventExamples decodes every AuditEvent example HL7 publishes
// with FHIR R4 and R5 and checks it against hl7ExamplesWant: each chart
// access maps to the right patient, user, action, facility and break-glass
// flag; every other example is ignored with its reason; none is a
// *DecodeError (which would dead-letter it).
func TestHL7AuditEventExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the HL7 example packages; skipped in -short mode")
	}
	dir := os.Getenv(fhirExamplesEnv)
	if dir == "" {
		t.Fatalf("%s is not set: run `eval \"$(deployments/dev/fhir-examples.sh env)\"` (downloads the HL7 example packages with npm into ~/.cache/ehrwatch)", fhirExamplesEnv)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "r[45]", "AuditEvent-*.json"))
	if len(files) == 0 {
		t.Fatalf("no AuditEvent examples under %s: run deployments/dev/fhir-examples.sh fetch", dir)
	}
	dec, err := NewDecoder(hl7ExamplesConfig)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	accesses, ignored := 0, 0
	for _, f := range files {
		id := filepath.Base(filepath.Dir(f)) + "/" + strings.TrimSuffix(strings.TrimPrefix(filepath.Base(f), "AuditEvent-"), ".json")
		seen[id] = true
		t.Run(id, func(t *testing.T) {
			want, ok := hl7ExamplesWant[id]
			if !ok {
				t.Fatalf("example %s has no expected mapping in hl7ExamplesWant", id)
			}
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := dec.Decode(data)
			if want.ignore != "" {
				if got, ok := IgnoreReasonOf(err); !ok || got != want.ignore {
					t.Fatalf("got (%+v, %v), want ignored: %s", ev, err, want.ignore)
				}
				ignored++
				return
			}
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			accesses++
			got := hl7Expected{ev.PatientID, ev.UserID, ev.Action, ev.FacilityID, ev.BreakGlass, ""}
			if got != want {
				t.Errorf("mapped to\n %+v\nwant\n %+v", got, want)
			}
			if !strings.HasSuffix(id, ev.EventID) || ev.LoggedTime == nil || !ev.EventTime.Equal(*ev.LoggedTime) {
				t.Errorf("event_id %q, event_time %v, logged_time %v: want the resource id and recorded", ev.EventID, ev.EventTime, ev.LoggedTime)
			}
		})
	}
	var missing []string
	for id := range hl7ExamplesWant {
		if !seen[id] {
			missing = append(missing, id)
		}
	}
	sort.Strings(missing)
	if len(missing) > 0 {
		t.Errorf("examples in the table but not under %s: %v", dir, missing)
	}
	t.Logf("%d examples: %d chart accesses, %d ignored, 0 dead-lettered", len(files), accesses, ignored)
}

// TestFHIRConfigMapping checks each FHIRConfig knob on one resource.
func TestFHIRConfigMapping(t *testing.T) {
	const res = `{"resourceType": "AuditEvent", "id": "ae-1", "action": "R", "recorded": "2026-03-01T10:00:00Z",
 "type": {"code": "rest"},
 "agent": [{"who": {"reference": "Practitioner/pr-1", "identifier": {"system": "urn:login", "value": "jdoe"}}, "requestor": true%s}],
 "source": {%s"observer": %s},
 "entity": [{"what": {"reference": "Patient/p-1", "identifier": {"system": "%s", "value": "%s"}}}]}`
	build := func(loc, site, observer, sys, val string) []byte {
		return []byte(fmt.Sprintf(res, loc, site, observer, sys, val))
	}
	base := func() FHIRConfig { return DefaultFHIRConfig() }
	cases := []struct {
		name string
		cfg  func(*FHIRConfig)
		in   []byte
		want func(*AccessEvent) bool
		err  string // ignore reason or error class
	}{
		{"defaults", nil, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "urn:oid:1.2.3", "MRN-1"),
			func(e *AccessEvent) bool {
				return e.UserID == "jdoe" && e.PatientID == "MRN-1" && e.FacilityID == "fac-1" && e.Source == "ehr"
			}, ""},
		{"reference first", func(c *FHIRConfig) { c.UserIDFrom = []string{"reference", "identifier"} }, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.UserID == "pr-1" }, ""},
		{"identifier of another system skipped", func(c *FHIRConfig) { c.UserIdentifierSystems = []string{"urn:employee"} }, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.UserID == "pr-1" }, ""},
		{"identifier only, of another system", func(c *FHIRConfig) {
			c.UserIdentifierSystems = []string{"urn:employee"}
			c.UserIDFrom = []string{"identifier"}
		}, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "x", "MRN-1"), nil, string(IgnoreNoUser)},
		{"authority prefix", func(c *FHIRConfig) { c.PatientIdentifierAuthorities = map[string]string{"1.2.3": "A-"} }, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "urn:oid:1.2.3", "MRN-1"),
			func(e *AccessEvent) bool { return e.PatientID == "A-MRN-1" }, ""},
		{"CX authority", func(c *FHIRConfig) { c.PatientIdentifierAuthorities = map[string]string{"1.2.3": ""} }, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "", "77^^^HOSP&1.2.3&ISO"),
			func(e *AccessEvent) bool { return e.PatientID == "77" }, ""},
		{"unlisted authority falls back to the reference", func(c *FHIRConfig) { c.PatientIdentifierAuthorities = map[string]string{"9.9": ""} }, build("", `"site": "fac-1", `, `{"reference": "Device/ehr"}`, "urn:oid:1.2.3", "MRN-1"),
			func(e *AccessEvent) bool { return e.PatientID == "p-1" }, ""},
		{"facility from the requestor's location", nil, build(`, "location": {"reference": "Location/ward-3"}`, "", `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.FacilityID == "ward-3" }, ""},
		{"facility from an Organization observer", nil, build("", "", `{"reference": "Organization/hosp-2"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.FacilityID == "hosp-2" && e.Source == "hosp-2" }, ""},
		{"facility of the source", func(c *FHIRConfig) { c.SourceFacilities = map[string]string{"ehr": "fac-9", "*": "fac-any"} }, build("", "", `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.FacilityID == "fac-9" }, ""},
		{"facility of any source", func(c *FHIRConfig) { c.SourceFacilities = map[string]string{"other": "fac-9", "*": "fac-any"} }, build("", "", `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			func(e *AccessEvent) bool { return e.FacilityID == "fac-any" }, ""},
		{"no facility anywhere", func(c *FHIRConfig) { c.SourceFacilities = map[string]string{"other": "fac-9"} }, build("", "", `{"reference": "Device/ehr"}`, "x", "MRN-1"),
			nil, string(ClassMissingField)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			cfg := base()
			if c.cfg != nil {
				c.cfg(&cfg)
			}
			dec, err := NewDecoder(cfg)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := dec.Decode(c.in)
			if c.err != "" {
				r, ignored := IgnoreReasonOf(err)
				if string(r) != c.err && string(ErrorClassOf(err)) != c.err || (ignored && string(r) != c.err) {
					t.Fatalf("got %v, want %s", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !c.want(ev) {
				t.Fatalf("unexpected mapping %+v", ev)
			}
		})
	}
}

func TestFHIRConfigValidate(t *testing.T) {
	if err := UnderKey("fhir", DefaultFHIRConfig().Validate()); err != nil {
		t.Fatal(err)
	}
	bad := FHIRConfig{
		UserIDFrom:                   []string{"display", "identifier", "identifier"},
		UserIdentifierSystems:        []string{""},
		PatientIdentifierAuthorities: map[string]string{"1.2": "a\x01"},
		SourceFacilities:             map[string]string{"ehr": ""},
	}
	err := UnderKey("fhir", bad.Validate())
	for _, key := range []string{"fhir.user_id_from[0]", "fhir.user_id_from[2]", "fhir.user_identifier_systems[0]",
		"fhir.patient_identifier_authorities.1.2", "fhir.source_facilities.ehr"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("Validate does not report %s: %v", key, err)
		}
	}
	if _, err := NewDecoder(FHIRConfig{}); err == nil {
		t.Error("NewDecoder accepts an empty user_id_from")
	}
}
