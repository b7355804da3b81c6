package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/fhir/*.golden.json from the decoder's output (review the diff!)")

// goldenError is what a golden file holds for a resource that must fail.
type goldenError struct {
	Error struct {
		Class ErrorClass `json:"class"`
		Field string     `json:"field"`
	} `json:"error"`
}

// goldenIgnored is what a golden file holds for a resource that is not a
// chart access.
type goldenIgnored struct {
	Ignored struct {
		Reason IgnoreReason `json:"reason"`
	} `json:"ignored"`
}

// golden renders a decode result: the canonical JSON of the event, or the
// error's class and field.
func golden(t *testing.T, ev *AccessEvent, err error) []byte {
	t.Helper()
	var v any = ev
	if reason, ok := IgnoreReasonOf(err); ok {
		var gi goldenIgnored
		gi.Ignored.Reason = reason
		v = gi
	} else if err != nil {
		var ge goldenError
		var de *DecodeError
		if !asDecodeError(err, &de) {
			t.Fatalf("error %v is not a *DecodeError", err)
		}
		ge.Error.Class, ge.Error.Field = de.Class, de.Field
		v = ge
	}
	b, merr := json.MarshalIndent(v, "", "  ")
	if merr != nil {
		t.Fatal(merr)
	}
	return append(b, '\n')
}

func asDecodeError(err error, de **DecodeError) bool {
	d, ok := err.(*DecodeError)
	if ok {
		*de = d
	}
	return ok
}

func fhirSamples(t *testing.T) []string {
	t.Helper()
	all, err := filepath.Glob("testdata/fhir/*.json")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, f := range all {
		if !strings.HasSuffix(f, ".golden.json") {
			out = append(out, f)
		}
	}
	if len(out) < 10 {
		t.Fatalf("only %d FHIR samples", len(out))
	}
	return out
}

// TestFHIRGolden decodes every sample under testdata/fhir and compares the
// result with its .golden.json: the canonical JSON of the event, or
// {"error":{"class","field"}}. Run with -update to regenerate, then review
// the diff by hand: the golden files are the specification.
func TestFHIRGolden(t *testing.T) {
	for _, f := range fhirSamples(t) {
		name := strings.TrimSuffix(filepath.Base(f), ".json")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			var ev AccessEvent
			derr := DecodeFHIR(data, &ev)
			got := golden(t, &ev, derr)
			path := strings.TrimSuffix(f, ".json") + ".golden.json"
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run go test -run TestFHIRGolden -update)", err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s differs from golden\n--- got\n%s--- want\n%s", f, got, want)
			}

			// DecodeEvent detects FHIR and agrees.
			ev2, err2 := DecodeEvent(data)
			if (derr == nil) != (err2 == nil) || (derr != nil && derr.Error() != err2.Error()) {
				t.Fatalf("DecodeEvent: %v, DecodeFHIR: %v", err2, derr)
			}
			if derr != nil {
				return
			}
			if !ev2.Equal(&ev) {
				t.Fatalf("DecodeEvent and DecodeFHIR differ")
			}
			// The golden canonical JSON decodes back to the same event.
			var back AccessEvent
			if err := DecodeCanonical(want, &back); err != nil {
				t.Fatalf("golden is not valid canonical JSON: %v", err)
			}
			if !back.Equal(&ev) {
				t.Fatalf("golden decodes to %+v, FHIR to %+v", back, ev)
			}
		})
	}
}

// TestFHIRAndCanonicalFormsAgree pairs FHIR resources with canonical events
// written by hand, independently of the decoder (and of -update), for the
// same access.
func TestFHIRAndCanonicalFormsAgree(t *testing.T) {
	pairs := []struct{ fhir, canonical string }{
		{"testdata/fhir/r4_view.json", "testdata/canonical/r4_view_equivalent.json"},
		{"testdata/fhir/r5_print.json", "testdata/canonical/r5_print_equivalent.json"},
	}
	for _, p := range pairs {
		fd, err := os.ReadFile(p.fhir)
		if err != nil {
			t.Fatal(err)
		}
		cd, err := os.ReadFile(p.canonical)
		if err != nil {
			t.Fatal(err)
		}
		fe, err := DecodeEvent(fd)
		if err != nil {
			t.Fatalf("%s: %v", p.fhir, err)
		}
		ce, err := DecodeEvent(cd)
		if err != nil {
			t.Fatalf("%s: %v", p.canonical, err)
		}
		if !fe.Equal(ce) {
			fj, _ := json.MarshalIndent(fe, "", "  ")
			cj, _ := json.MarshalIndent(ce, "", "  ")
			t.Fatalf("%s and %s differ\nFHIR:\n%s\ncanonical:\n%s", p.fhir, p.canonical, fj, cj)
		}
	}
}

// fhirBase is a small valid R4 AuditEvent that the table below breaks.
const fhirBase = `{
 "resourceType": "AuditEvent", "id": "ae-1",
 "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
 "action": "R", "recorded": "2026-03-01T10:00:00Z",
 "agent": [{"who": {"reference": "Practitioner/u-1"}, "requestor": true}],
 "source": {"site": "fac-1", "observer": {"reference": "Device/ehr"}},
 "entity": [{"what": {"reference": "Patient/p-1"}}]
}`

func TestDecodeFHIRCases(t *testing.T) {
	ok := func(field string, check func(*AccessEvent) bool) func(*testing.T, *AccessEvent, error) {
		return func(t *testing.T, ev *AccessEvent, err error) {
			t.Helper()
			if err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if !check(ev) {
				t.Fatalf("%s not as expected: %+v", field, ev)
			}
		}
	}
	ignored := func(reason IgnoreReason) func(*testing.T, *AccessEvent, error) {
		return func(t *testing.T, _ *AccessEvent, err error) {
			t.Helper()
			if got, ok := IgnoreReasonOf(err); !ok || got != reason || !errors.Is(err, ErrNotAccess) {
				t.Fatalf("got %v, want not a chart access (%s)", err, reason)
			}
		}
	}
	fails := func(field string, class ErrorClass) func(*testing.T, *AccessEvent, error) {
		return func(t *testing.T, _ *AccessEvent, err error) {
			t.Helper()
			assertDecodeError(t, err, field, class)
		}
	}
	r := func(old, new string) string {
		if !strings.Contains(fhirBase, old) {
			panic("fhirBase lacks " + old)
		}
		return strings.Replace(fhirBase, old, new, 1)
	}
	cases := []struct {
		name  string
		in    string
		check func(*testing.T, *AccessEvent, error)
	}{
		{"base", fhirBase, ok("all", func(e *AccessEvent) bool {
			return e.EventID == "ae-1" && e.UserID == "u-1" && e.PatientID == "p-1" && e.FacilityID == "fac-1" &&
				e.Source == "ehr" && e.Action == ActionView && e.Outcome == OutcomeSuccess && e.LoggedTime != nil &&
				e.EventTime.Equal(*e.LoggedTime)
		})},
		{"action C", r(`"action": "R"`, `"action": "C"`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionCreate })},
		{"action U", r(`"action": "R"`, `"action": "U"`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionUpdate })},
		{"action D", r(`"action": "R"`, `"action": "D"`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionDelete })},
		{"action E", r(`"action": "R"`, `"action": "E"`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionQuery })},
		{"action from subtype", r(`"action": "R",`, `"subtype": [{"system": "http://hl7.org/fhir/restful-interaction", "code": "patch"}],`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionUpdate })},
		{"print subtype overrides R", r(`"action": "R",`, `"action": "R", "subtype": [{"code": "PRINT"}],`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionPrint })},
		{"DICOM export type", r(`{"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}`, `{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106"}`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionExport })},
		{"110106 of another system", r(`"code": "rest"}`, `"code": "110106"}`), ok("action", func(e *AccessEvent) bool { return e.Action == ActionView })},
		{"type wrong type", r(`"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"}`, `"type": [{"code": "rest"}]`), fails("type", ClassWrongType)},
		{"no action at all", r(`"action": "R",`, ``), fails("action", ClassMissingField)},
		{"bad action code", r(`"action": "R"`, `"action": "X"`), fails("action", ClassInvalidValue)},
		{"action wrong type", r(`"action": "R"`, `"action": 1`), fails("action", ClassWrongType)},
		{"emergency override subtype", r(`"action": "R",`, `"action": "R", "subtype": [{"display": "Emergency Override"}],`), ok("break_glass", func(e *AccessEvent) bool { return e.BreakGlass && e.BreakGlassReason == "" })},
		{"BTG in purposeOfEvent", r(`"action": "R",`, `"action": "R", "purposeOfEvent": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}], "text": "why"}],`), ok("break_glass", func(e *AccessEvent) bool { return e.BreakGlass && e.BreakGlassReason == "why" })},
		{"BTG of other system ignored", r(`"action": "R",`, `"action": "R", "purposeOfEvent": [{"coding": [{"system": "http://example.org/other", "code": "BTG"}], "text": "why"}],`), ok("break_glass", func(e *AccessEvent) bool { return !e.BreakGlass && e.BreakGlassReason == "" })},
		{"reason text without BTG ignored", r(`"action": "R",`, `"action": "R", "purposeOfEvent": [{"coding": [{"code": "TREAT"}], "text": "routine"}],`), ok("break_glass", func(e *AccessEvent) bool { return !e.BreakGlass && e.BreakGlassReason == "" })},
		{"reason extension", r(`"id": "ae-1",`, `"id": "ae-1", "extension": [{"url": "`+FHIRExtBreakGlassReason+`", "valueString": "code blue"}],`), ok("break_glass", func(e *AccessEvent) bool { return e.BreakGlass && e.BreakGlassReason == "code blue" })},
		{"outcome 12", r(`"action": "R",`, `"action": "R", "outcome": "12",`), ok("outcome", func(e *AccessEvent) bool { return e.Outcome == OutcomeFailure })},
		{"outcome unknown", r(`"action": "R",`, `"action": "R", "outcome": "1",`), fails("outcome", ClassInvalidValue)},
		{"period start wins", r(`"recorded"`, `"period": {"start": "2026-03-01T09:59:00+01:00"}, "recorded"`), ok("event_time", func(e *AccessEvent) bool {
			_, off := e.EventTime.Zone()
			return off == 3600 && e.EventTime.Before(*e.LoggedTime)
		})},
		{"period start without offset", r(`"recorded"`, `"period": {"start": "2026-03-01T09:59:00"}, "recorded"`), fails("period.start", ClassInvalidTime)},
		{"recorded partial date", r(`"2026-03-01T10:00:00Z"`, `"2026-03"`), fails("recorded", ClassInvalidTime)},
		{"no time at all", r(`"recorded": "2026-03-01T10:00:00Z",`, ``), fails("recorded", ClassMissingField)},
		{"recorded before 1900", r(`"2026-03-01T10:00:00Z"`, `"1800-03-01T10:00:00Z"`), fails("recorded", ClassInvalidTime)},
		{"no id", r(`"id": "ae-1",`, ``), fails("id", ClassMissingField)},
		{"empty id", r(`"id": "ae-1"`, `"id": ""`), fails("id", ClassMissingField)},
		{"id wrong type", r(`"id": "ae-1"`, `"id": 7`), fails("id", ClassWrongType)},
		{"duplicate id", r(`"id": "ae-1",`, `"id": "ae-1", "id": "ae-2",`), fails("id", ClassDuplicateField)},
		{"no agent", r(`"agent": [{"who": {"reference": "Practitioner/u-1"}, "requestor": true}],`, ``), fails("agent", ClassMissingField)},
		{"empty agent", r(`[{"who": {"reference": "Practitioner/u-1"}, "requestor": true}]`, `[]`), fails("agent", ClassMissingField)},
		{"agent not array", r(`[{"who": {"reference": "Practitioner/u-1"}, "requestor": true}]`, `{}`), fails("agent", ClassWrongType)},
		{"requestor not bool", r(`"requestor": true`, `"requestor": "yes"`), fails("agent.requestor", ClassWrongType)},
		{"who missing", r(`"who": {"reference": "Practitioner/u-1"}, `, ``), fails("agent.who", ClassMissingField)},
		{"who without id", r(`"who": {"reference": "Practitioner/u-1"}`, `"who": {"display": "Dr Who"}`), ignored(IgnoreNoUser)},
		{"who with nothing", r(`"who": {"reference": "Practitioner/u-1"}`, `"who": {}`), fails("agent.who", ClassInvalidValue)},
		{"who trailing slash", r(`"Practitioner/u-1"`, `"Practitioner/"`), fails("agent.who", ClassInvalidValue)},
		{"who contained", r(`"Practitioner/u-1"`, `"#pr1"`), fails("agent.who", ClassInvalidValue)},
		{"who identifier wins", r(`"who": {"reference": "Practitioner/u-1"}`, `"who": {"reference": "Practitioner/u-1", "identifier": {"value": "login-1"}}`), ok("user_id", func(e *AccessEvent) bool { return e.UserID == "login-1" })},
		{"who urn", r(`"Practitioner/u-1"`, `"urn:uuid:0f3b2c1e-2f0a-4a43-9a1b-9d3f0b8a1c11"`), ok("user_id", func(e *AccessEvent) bool { return e.UserID == "urn:uuid:0f3b2c1e-2f0a-4a43-9a1b-9d3f0b8a1c11" })},
		{"who id with control character", r(`"Practitioner/u-1"`, `"Practitioner/u\u00071"`), fails("agent.who", ClassInvalidValue)},
		{"who id too long", r(`"Practitioner/u-1"`, `"Practitioner/`+strings.Repeat("u", MaxIDLen+1)+`"`), fails("agent.who", ClassTooLarge)},
		{"no requestor, two agents, practitioner chosen", r(`[{"who": {"reference": "Practitioner/u-1"}, "requestor": true}]`, `[{"who": {"reference": "Device/d-1"}}, {"who": {"reference": "PractitionerRole/u-2"}}]`), ok("user_id", func(e *AccessEvent) bool { return e.UserID == "u-2" && e.WorkstationID == "d-1" })},
		{"no requestor, two non-practitioners", r(`[{"who": {"reference": "Practitioner/u-1"}, "requestor": true}]`, `[{"who": {"reference": "Device/d-1"}}, {"who": {"reference": "Organization/o"}}]`), ignored(IgnoreNoUser)},
		{"R4 network type 2 invalid", r(`"requestor": true`, `"requestor": true, "network": {"address": "ws-1", "type": "2"}`), fails("agent.network.address", ClassInvalidValue)},
		{"R4 network host name", r(`"requestor": true`, `"requestor": true, "network": {"address": "ws-1.example.org", "type": "1"}`), ok("workstation", func(e *AccessEvent) bool { return e.WorkstationID == "ws-1.example.org" && e.ClientIP == "" })},
		{"R4 network hex-looking host", r(`"requestor": true`, `"requestor": true, "network": {"address": "cafe.be"}`), ok("workstation", func(e *AccessEvent) bool { return e.WorkstationID == "cafe.be" && e.ClientIP == "" })},
		{"R4 network IPv6 untyped", r(`"requestor": true`, `"requestor": true, "network": {"address": "2001:db8::7"}`), ok("client_ip", func(e *AccessEvent) bool { return e.ClientIP == "2001:db8::7" && e.WorkstationID == "" })},
		{"department extension", r(`"requestor": true`, `"requestor": true, "extension": [{"url": "http://other", "valueString": "x"}, {"url": "`+FHIRExtUserDepartment+`", "valueString": "oncology"}]`), ok("department", func(e *AccessEvent) bool { return e.UserDepartment == "oncology" })},
		{"role text fallback", r(`"requestor": true`, `"requestor": true, "role": [{"coding": [{"system": "x"}], "text": "porter"}]`), ok("role", func(e *AccessEvent) bool { return e.UserRole == "porter" })},
		{"no source", r(`"source": {"site": "fac-1", "observer": {"reference": "Device/ehr"}},`, ``), fails("source", ClassMissingField)},
		{"no site", r(`"site": "fac-1", `, ``), fails("source.site", ClassMissingField)},
		{"site wrong type", r(`"site": "fac-1"`, `"site": 3`), fails("source.site", ClassWrongType)},
		{"site reference", r(`"site": "fac-1"`, `"site": {"reference": "Location/fac-9"}`), ok("facility", func(e *AccessEvent) bool { return e.FacilityID == "fac-9" })},
		{"missing patient", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"reference": "Group/g-1"}}`), ignored(IgnoreNoPatient)},
		{"no entity", r(`,
 "entity": [{"what": {"reference": "Patient/p-1"}}]`, ``), ignored(IgnoreNoPatient)},
		{"same patient twice", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"reference": "Patient/p-1"}}, {"what": {"reference": "https://x/fhir/Patient/p-1/_history/3"}}`), ok("patient", func(e *AccessEvent) bool { return e.PatientID == "p-1" })},
		{"two patients", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"reference": "Patient/p-1"}}, {"what": {"reference": "Patient/p-2"}}`), fails("entity", ClassInvalidValue)},
		{"patient by entity codes", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"identifier": {"value": "MRN-9"}}, "type": {"code": "1"}, "role": {"code": "1"}}`), ok("patient", func(e *AccessEvent) bool { return e.PatientID == "MRN-9" })},
		{"person who is not the patient", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"identifier": {"value": "MRN-9"}}, "type": {"code": "1"}, "role": {"code": "6"}}`), ignored(IgnoreNoPatient)},
		{"entity what wrong type", r(`"what": {"reference": "Patient/p-1"}`, `"what": "Patient/p-1"`), fails("entity.what", ClassWrongType)},
		{"encounter entity", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"reference": "Patient/p-1"}}, {"what": {"reference": "Encounter/e-5"}}, {"what": {"reference": "Observation/o-1"}}`), ok("encounter", func(e *AccessEvent) bool {
			return e.EncounterID == "e-5" && e.Resource == "Observation/o-1"
		})},
		{"escaped member names", strings.Replace(r(`"id": "ae-1"`, `"\u0069d": "ae-\u0031"`), `"resourceType"`, `"resource\u0054ype"`, 1), ok("id", func(e *AccessEvent) bool { return e.EventID == "ae-1" })},
		{"escaped duplicate", r(`"id": "ae-1"`, `"id": "ae-1", "\u0069d": "ae-2"`), fails("id", ClassDuplicateField)},
		{"entity type of another system", r(`{"what": {"reference": "Patient/p-1"}}`, `{"what": {"identifier": {"value": "MRN-9"}}, "type": {"system": "http://example.org/x", "code": "1"}, "role": {"code": "1"}}`), ignored(IgnoreNoPatient)},
		{"unknown elements tolerated", r(`"id": "ae-1",`, `"id": "ae-1", "modifierExtension": [], "implicitRules": "x", "language": "en", "contained": [{"resourceType": "Patient", "id": "c", "x": [1, 2.5e3, -0, true, false, null, {"deep": [[{}]]}]}],`), ok("all", func(e *AccessEvent) bool { return e.EventID == "ae-1" })},
		{"duplicate unknown elements tolerated", r(`"id": "ae-1",`, `"id": "ae-1", "language": "en", "language": "fr",`), ok("all", func(e *AccessEvent) bool { return e.EventID == "ae-1" })},
		{"invalid JSON in unknown element", r(`"id": "ae-1",`, `"id": "ae-1", "language": [1,],`), fails("", ClassSyntax)},
		{"invalid UTF-8 in unknown element", r(`"id": "ae-1",`, "\"id\": \"ae-1\", \"language\": \"\xff\","), fails("", ClassInvalidUTF8)},
		{"nested too deep", r(`"id": "ae-1",`, `"id": "ae-1", "x": `+strings.Repeat("[", 40)+strings.Repeat("]", 40)+`,`), fails("", ClassTooDeep)},
		{"top-level array", `[` + fhirBase + `]`, fails("", ClassWrongType)},
		{"R5 marker with R4 shape", r(`"action": "R",`, `"action": "R", "occurredDateTime": "2026-03-01T10:00:00Z",`), fails("", ClassUnsupportedFormat)},
		{"R4 outcome object", r(`"action": "R",`, `"action": "R", "outcome": {"code": {"code": "0"}},`), fails("", ClassUnsupportedFormat)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := AccessEvent{EventID: "stale"}
			err := DecodeFHIR([]byte(c.in), &ev)
			c.check(t, &ev, err)
			if err != nil && ev != (AccessEvent{}) {
				t.Fatalf("event not zeroed on error")
			}
		})
	}
}
