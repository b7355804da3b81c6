package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

// minimalEvent is a valid canonical event with only the required members.
const minimalEvent = `{"event_id":"e1","event_time":"2026-01-15T12:00:00Z","facility_id":"f1","user_id":"u1","patient_id":"p1","action":"query"}`

// withMember returns minimalEvent with one more member text (`"k":v`)
// inserted before the closing brace.
func withMember(member string) string {
	return strings.TrimSuffix(minimalEvent, "}") + "," + member + "}"
}

// replaceMember returns minimalEvent with the member named key replaced by
// member text, or removed if member is "".
func replaceMember(t testing.TB, key, member string) string {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal([]byte(minimalEvent), &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m[key]; !ok {
		t.Fatalf("minimalEvent has no %q", key)
	}
	// Rebuild by hand to keep member order stable and allow raw text.
	var parts []string
	for _, k := range []string{"event_id", "event_time", "facility_id", "user_id", "patient_id", "action"} {
		if k == key {
			if member != "" {
				parts = append(parts, member)
			}
			continue
		}
		parts = append(parts, fmt.Sprintf("%q:%s", k, m[k]))
	}
	return "{" + strings.Join(parts, ",") + "}"
}

func mustDecodeCanonical(t testing.TB, in string) AccessEvent {
	t.Helper()
	var ev AccessEvent
	if err := DecodeCanonical([]byte(in), &ev); err != nil {
		t.Fatalf("DecodeCanonical: %v", err)
	}
	return ev
}

func TestDecodeCanonicalMinimalDefaults(t *testing.T) {
	ev := mustDecodeCanonical(t, minimalEvent)
	want := AccessEvent{
		EventID: "e1", EventTime: time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC),
		FacilityID: "f1", UserID: "u1", PatientID: "p1",
		Action: ActionQuery, Outcome: OutcomeSuccess,
	}
	if !ev.Equal(&want) {
		t.Fatalf("got %+v\nwant %+v", ev, want)
	}
	if ev.LoggedTime != nil || ev.BreakGlass {
		t.Fatalf("optional members not defaulted: %+v", ev)
	}
}

func TestDecodeCanonicalAllFields(t *testing.T) {
	in := `{
	  "event_id": "evt-1", "event_time": "2026-03-01T08:15:27.431+05:30",
	  "logged_time": "2026-03-01T02:45:28Z", "source": "epic",
	  "facility_id": "fac", "user_id": "u-1", "user_role": "nurse",
	  "user_department": "icu", "workstation_id": "ws-1", "client_ip": "2001:db8::1",
	  "patient_id": "MRN-1", "encounter_id": "enc-1", "action": "export",
	  "resource": "chart.notes", "break_glass": true,
	  "break_glass_reason": "code blue", "outcome": "failure"
	}`
	ev := mustDecodeCanonical(t, in)
	lt := time.Date(2026, 3, 1, 2, 45, 28, 0, time.UTC)
	want := AccessEvent{
		EventID: "evt-1", EventTime: time.Date(2026, 3, 1, 8, 15, 27, 431e6, time.FixedZone("", 5*3600+1800)),
		LoggedTime: &lt, Source: "epic", FacilityID: "fac", UserID: "u-1", UserRole: "nurse",
		UserDepartment: "icu", WorkstationID: "ws-1", ClientIP: "2001:db8::1", PatientID: "MRN-1",
		EncounterID: "enc-1", Action: ActionExport, Resource: "chart.notes", BreakGlass: true,
		BreakGlassReason: "code blue", Outcome: OutcomeFailure,
	}
	if !ev.Equal(&want) {
		t.Fatalf("got %+v\nwant %+v", ev, want)
	}
	if _, off := ev.EventTime.Zone(); off != 19800 {
		t.Fatalf("offset not kept: %d", off)
	}
}

func TestDecodeCanonicalEscapes(t *testing.T) {
	in := withMember(`"user_role":"nurse \"A\" \u00e9\ud83d\ude00 \/ \\ é"`)
	in = strings.Replace(in, `"action":"query"`, `"action":"\u0076iew"`, 1)
	in = strings.Replace(in, `"user_id":"u1"`, `"user\u005fid":"u\u0031"`, 1)
	in = strings.Replace(in, `"event_time":"2026-01-15T12:00:00Z"`, `"event_time":"2026-01-15T12:00:00\u005A"`, 1)
	ev := mustDecodeCanonical(t, in)
	if want := "nurse \"A\" é😀 / \\ é"; ev.UserRole != want {
		t.Fatalf("user_role = %q, want %q", ev.UserRole, want)
	}
	if ev.Action != ActionView || ev.UserID != "u1" || !ev.EventTime.Equal(time.Date(2026, 1, 15, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("escaped key/value not decoded: %+v", ev)
	}
	// Free text may hold control characters; identifiers may not.
	ev = mustDecodeCanonical(t, withMember(`"break_glass":true,"break_glass_reason":"line1\nline2\ttab"`))
	if ev.BreakGlassReason != "line1\nline2\ttab" {
		t.Fatalf("reason = %q", ev.BreakGlassReason)
	}
}

func TestDecodeCanonicalNullIsAbsent(t *testing.T) {
	ev := mustDecodeCanonical(t, withMember(`"logged_time":null,"encounter_id":null,"break_glass":null,"outcome":null,"client_ip":null`))
	if ev.LoggedTime != nil || ev.EncounterID != "" || ev.BreakGlass || ev.Outcome != OutcomeSuccess {
		t.Fatalf("nulls not treated as absent: %+v", ev)
	}
}

func TestDecodeCanonicalLimitsAreBytes(t *testing.T) {
	// 64 × "é" is 128 bytes: exactly the limit.
	ev := mustDecodeCanonical(t, replaceMember(t, "user_id", `"user_id":"`+strings.Repeat("é", 64)+`"`))
	if len(ev.UserID) != MaxIDLen {
		t.Fatalf("len = %d", len(ev.UserID))
	}
	// 128 escaped 'a's decode to 128 bytes although the raw text is 768.
	mustDecodeCanonical(t, replaceMember(t, "user_id", `"user_id":"`+strings.Repeat(`\u0061`, MaxIDLen)+`"`))
	var ev2 AccessEvent
	err := DecodeCanonical([]byte(replaceMember(t, "user_id", `"user_id":"`+strings.Repeat(`\u0061`, MaxIDLen+1)+`"`)), &ev2)
	assertDecodeError(t, err, "user_id", ClassTooLarge)
}

func assertDecodeError(t testing.TB, err error, field string, class ErrorClass) {
	t.Helper()
	var de *DecodeError
	if !errors.As(err, &de) {
		t.Fatalf("error %v (%T) is not a *DecodeError", err, err)
	}
	if de.Class != class || de.Field != field {
		t.Fatalf("got field %q class %q (%v), want field %q class %q", de.Field, de.Class, err, field, class)
	}
}

func TestDecodeCanonicalErrors(t *testing.T) {
	big := strings.Repeat("x", 1000)
	cases := []struct {
		name, in string
		field    string
		class    ErrorClass
	}{
		{"empty input", ``, "", ClassSyntax},
		{"only white space", " \n\t ", "", ClassSyntax},
		{"top-level array", `[1,2]`, "", ClassWrongType},
		{"top-level string", `"abc"`, "", ClassWrongType},
		{"top-level number", `12`, "", ClassWrongType},
		{"top-level null", `null`, "", ClassWrongType},
		{"bare word", `hello`, "", ClassSyntax},
		{"byte order mark", "\xef\xbb\xbf" + minimalEvent, "", ClassSyntax},
		{"truncated after brace", `{`, "", ClassSyntax},
		{"truncated after value", `{"event_id":"e1"`, "", ClassSyntax},
		{"truncated inside value", `{"event_id":"e1`, "event_id", ClassSyntax},
		{"truncated inside key", `{"event_`, "", ClassSyntax},
		{"truncated after colon", `{"event_id":`, "event_id", ClassSyntax},
		{"truncated half", minimalEvent[:len(minimalEvent)/2], "", ClassSyntax},
		{"trailing garbage", minimalEvent + `x`, "", ClassSyntax},
		{"two objects", minimalEvent + minimalEvent, "", ClassSyntax},
		{"trailing comma", strings.TrimSuffix(minimalEvent, "}") + ",}", "", ClassSyntax},
		{"missing colon", `{"event_id" "e1"}`, "event_id", ClassSyntax},
		{"missing comma", `{"event_id":"e1" "user_id":"u1"}`, "", ClassSyntax},
		{"single quotes", `{'event_id':'e1'}`, "", ClassSyntax},
		{"unquoted key", `{event_id:"e1"}`, "", ClassSyntax},
		{"bad literal", withMember(`"break_glass":tru`), "break_glass", ClassSyntax},
		{"bad null", withMember(`"encounter_id":nul`), "encounter_id", ClassSyntax},
		{"bad escape", withMember(`"user_role":"a\x"`), "user_role", ClassSyntax},
		{"short unicode escape", withMember(`"user_role":"a\u12"`), "user_role", ClassSyntax},
		{"raw newline in string", withMember("\"user_role\":\"a\nb\""), "user_role", ClassSyntax},
		{"invalid UTF-8 in value", withMember("\"user_role\":\"a\xffb\""), "user_role", ClassInvalidUTF8},
		{"overlong UTF-8", withMember("\"user_role\":\"\xc0\xaf\""), "user_role", ClassInvalidUTF8},
		{"UTF-8 surrogate", withMember("\"user_role\":\"\xed\xa0\x80\""), "user_role", ClassInvalidUTF8},
		{"invalid UTF-8 in key", "{\"\xff\":1}", "", ClassInvalidUTF8},
		{"lone high surrogate", withMember(`"user_role":"\ud800"`), "user_role", ClassInvalidUTF8},
		{"lone low surrogate", withMember(`"user_role":"\udc00x"`), "user_role", ClassInvalidUTF8},
		{"high surrogate then non-low", withMember(`"user_role":"\ud800\u0041"`), "user_role", ClassInvalidUTF8},
		{"unknown field", withMember(`"foo":1`), "foo", ClassUnknownField},
		{"unknown field, escaped name", withMember(`"f\u006fo":1`), "foo", ClassUnknownField},
		{"unknown field named like data", withMember(`"Jane Q. Public":1`), "(redacted)", ClassUnknownField},
		{"unknown field, long name", withMember(`"` + strings.Repeat("a", 33) + `":1`), "(redacted)", ClassUnknownField},
		{"unknown field, digits", withMember(`"1234567":1`), "(redacted)", ClassUnknownField},
		{"unknown field, MRN as key", withMember(`"MRN-00482913":{"a":1}`), "(redacted)", ClassUnknownField},
		{"unknown field holding deep nesting", withMember(`"x":` + strings.Repeat("[", 60000)), "x", ClassUnknownField},
		{"case differs", withMember(`"Outcome":"success"`), "(redacted)", ClassUnknownField},
		{"camelCase", withMember(`"eventTime":"x"`), "eventTime", ClassUnknownField},
		{"FHIR given to canonical", `{"resourceType":"AuditEvent"}`, "resourceType", ClassUnsupportedFormat},
		{"duplicate key", withMember(`"event_id":"e2"`), "event_id", ClassDuplicateField},
		{"duplicate key via escape", withMember(`"event\u005fid":"e2"`), "event_id", ClassDuplicateField},
		{"duplicate null then value", withMember(`"encounter_id":null,"encounter_id":"x"`), "encounter_id", ClassDuplicateField},
		{"duplicate boolean", withMember(`"break_glass":false,"break_glass":true`), "break_glass", ClassDuplicateField},
		{"number for string", replaceMember(t, "user_id", `"user_id":42`), "user_id", ClassWrongType},
		{"object for string", replaceMember(t, "user_id", `"user_id":{"a":"b"}`), "user_id", ClassWrongType},
		{"array for string", replaceMember(t, "user_id", `"user_id":["u1"]`), "user_id", ClassWrongType},
		{"bool for string", replaceMember(t, "action", `"action":true`), "action", ClassWrongType},
		{"string for bool", withMember(`"break_glass":"true"`), "break_glass", ClassWrongType},
		{"number for bool", withMember(`"break_glass":1`), "break_glass", ClassWrongType},
		{"nested deep in known field", replaceMember(t, "user_id", `"user_id":`+strings.Repeat(`{"a":`, 10000)), "user_id", ClassWrongType},
		{"unknown action", replaceMember(t, "action", `"action":"read"`), "action", ClassInvalidValue},
		{"action case", replaceMember(t, "action", `"action":"View"`), "action", ClassInvalidValue},
		{"empty action", replaceMember(t, "action", `"action":""`), "action", ClassMissingField},
		{"unknown outcome", withMember(`"outcome":"ok"`), "outcome", ClassInvalidValue},
		{"empty outcome", withMember(`"outcome":""`), "outcome", ClassInvalidValue},
		{"null required", replaceMember(t, "user_id", `"user_id":null`), "user_id", ClassMissingField},
		{"empty required", replaceMember(t, "patient_id", `"patient_id":""`), "patient_id", ClassMissingField},
		{"time without offset", replaceMember(t, "event_time", `"event_time":"2026-01-15T12:00:00"`), "event_time", ClassInvalidTime},
		{"time with fraction, no offset", replaceMember(t, "event_time", `"event_time":"2026-01-15T12:00:00.5"`), "event_time", ClassInvalidTime},
		{"date only", replaceMember(t, "event_time", `"event_time":"2026-01-15"`), "event_time", ClassInvalidTime},
		{"space separator", replaceMember(t, "event_time", `"event_time":"2026-01-15 12:00:00Z"`), "event_time", ClassInvalidTime},
		{"lower-case t", replaceMember(t, "event_time", `"event_time":"2026-01-15t12:00:00Z"`), "event_time", ClassInvalidTime},
		{"month 13", replaceMember(t, "event_time", `"event_time":"2026-13-15T12:00:00Z"`), "event_time", ClassInvalidTime},
		{"February 30", replaceMember(t, "event_time", `"event_time":"2026-02-30T12:00:00Z"`), "event_time", ClassInvalidTime},
		{"February 29, not leap", replaceMember(t, "event_time", `"event_time":"2025-02-29T12:00:00Z"`), "event_time", ClassInvalidTime},
		{"leap second", replaceMember(t, "event_time", `"event_time":"2026-01-15T23:59:60Z"`), "event_time", ClassInvalidTime},
		{"ten fraction digits", replaceMember(t, "event_time", `"event_time":"2026-01-15T12:00:00.0123456789Z"`), "event_time", ClassInvalidTime},
		{"offset hour 24", replaceMember(t, "event_time", `"event_time":"2026-01-15T12:00:00+24:00"`), "event_time", ClassInvalidTime},
		{"offset without colon", replaceMember(t, "event_time", `"event_time":"2026-01-15T12:00:00+0100"`), "event_time", ClassInvalidTime},
		{"unix seconds", replaceMember(t, "event_time", `"event_time":"1767268800"`), "event_time", ClassInvalidTime},
		{"time as number", replaceMember(t, "event_time", `"event_time":1767268800`), "event_time", ClassWrongType},
		{"year 1899", replaceMember(t, "event_time", `"event_time":"1899-12-31T23:59:59Z"`), "event_time", ClassInvalidTime},
		{"year 2300", replaceMember(t, "event_time", `"event_time":"2300-01-01T00:00:00Z"`), "event_time", ClassInvalidTime},
		{"long time string", replaceMember(t, "event_time", `"event_time":"`+big+`"`), "event_time", ClassTooLarge},
		{"bad logged_time", withMember(`"logged_time":"yesterday"`), "logged_time", ClassInvalidTime},
		{"oversized id", replaceMember(t, "user_id", `"user_id":"`+strings.Repeat("u", MaxIDLen+1)+`"`), "user_id", ClassTooLarge},
		{"oversized reason", withMember(`"break_glass_reason":"` + strings.Repeat("r", MaxReasonLen+1) + `"`), "break_glass_reason", ClassTooLarge},
		{"oversized workstation", withMember(`"workstation_id":"` + strings.Repeat("w", MaxWorkstationLen+1) + `"`), "workstation_id", ClassTooLarge},
		{"message too large", minimalEvent + strings.Repeat(" ", MaxCanonicalMessageSize), "", ClassTooLarge},
		{"control character in id", replaceMember(t, "user_id", `"user_id":"u\u0000"`), "user_id", ClassInvalidValue},
		{"escaped newline in id", replaceMember(t, "patient_id", `"patient_id":"p\n1"`), "patient_id", ClassInvalidValue},
		{"raw DEL in id", replaceMember(t, "patient_id", "\"patient_id\":\"p\x7f1\""), "patient_id", ClassInvalidValue},
		{"bad client_ip", withMember(`"client_ip":"10.0.0.256"`), "client_ip", ClassInvalidValue},
		{"host name as client_ip", withMember(`"client_ip":"ws-17.example.org"`), "client_ip", ClassInvalidValue},
		{"client_ip with zone", withMember(`"client_ip":"fe80::1%eth0"`), "client_ip", ClassInvalidValue},
		{"client_ip with port", withMember(`"client_ip":"10.0.0.1:443"`), "client_ip", ClassInvalidValue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := AccessEvent{EventID: "stale"}
			err := DecodeCanonical([]byte(c.in), &ev)
			assertDecodeError(t, err, c.field, c.class)
			if !reflect.DeepEqual(ev, AccessEvent{}) {
				t.Fatalf("event not zeroed on error: %+v", ev)
			}
		})
	}
}

func TestDecodeCanonicalMissingEachRequired(t *testing.T) {
	req := RequiredEventFields()
	if want := []string{"event_id", "event_time", "facility_id", "user_id", "patient_id", "action"}; !reflect.DeepEqual(req, want) {
		t.Fatalf("RequiredEventFields() = %v, want %v", req, want)
	}
	for _, f := range req {
		var ev AccessEvent
		err := DecodeCanonical([]byte(replaceMember(t, f, "")), &ev)
		assertDecodeError(t, err, f, ClassMissingField)
	}
}

func TestDecodeEventDetectsFormat(t *testing.T) {
	cases := []struct {
		file   string
		format Format
	}{
		{"testdata/canonical/view.json", FormatCanonical},
		{"testdata/fhir/r4_view.json", FormatFHIRR4},
		{"testdata/fhir/r5_print.json", FormatFHIRR5},
	}
	for _, c := range cases {
		data, err := os.ReadFile(c.file)
		if err != nil {
			t.Fatal(err)
		}
		var ev AccessEvent
		f, err := DecodeEventInto(data, &ev)
		if err != nil || f != c.format {
			t.Fatalf("%s: format %v err %v, want %v", c.file, f, err, c.format)
		}
		ev2, err := DecodeEvent(data)
		if err != nil || !ev2.Equal(&ev) {
			t.Fatalf("%s: DecodeEvent differs: %v", c.file, err)
		}
	}
	// resourceType need not come first.
	data, err := os.ReadFile("testdata/fhir/r4_view.json")
	if err != nil {
		t.Fatal(err)
	}
	moved := strings.Replace(string(data), `"resourceType": "AuditEvent",`, "", 1)
	moved = strings.TrimSuffix(strings.TrimSpace(moved), "}") + `, "resourceType": "AuditEvent"}`
	var ev AccessEvent
	if f, err := DecodeEventInto([]byte(moved), &ev); err != nil || f != FormatFHIRR4 {
		t.Fatalf("resourceType last: format %v err %v", f, err)
	}
}

func TestDecodeEventErrors(t *testing.T) {
	cases := []struct {
		name, in string
		field    string
		class    ErrorClass
		format   Format
	}{
		{"canonical unknown field stays unknown_field", withMember(`"foo":1`), "foo", ClassUnknownField, FormatCanonical},
		{"unknown field then syntax error", `{"foo":1,}`, "", ClassSyntax, FormatUnknown},
		{"deep nesting", `{"x":` + strings.Repeat("[", 100000), "", ClassTooDeep, FormatUnknown},
		{"deep nesting, closed", `{"x":` + strings.Repeat("[", 40) + strings.Repeat("]", 40) + `}`, "", ClassTooDeep, FormatUnknown},
		{"too many values", `{"x":[` + strings.Repeat("0,", MaxJSONValues) + `0]}`, "", ClassTooLarge, FormatUnknown},
		{"bad number in skipped part", `{"x":[01]}`, "", ClassSyntax, FormatUnknown},
		{"FHIR other resource", `{"resourceType":"Patient","id":"p"}`, "resourceType", ClassUnsupportedFormat, FormatUnknown},
		{"resourceType not a string", `{"resourceType":1}`, "resourceType", ClassWrongType, FormatUnknown},
		{"duplicate resourceType", `{"resourceType":"AuditEvent","resourceType":"AuditEvent"}`, "resourceType", ClassDuplicateField, FormatUnknown},
		{"FHIR without version markers", `{"resourceType":"AuditEvent","id":"x"}`, "", ClassUnsupportedFormat, FormatUnknown},
		{"FHIR with R4 and R5 markers", `{"resourceType":"AuditEvent","type":{},"code":{}}`, "", ClassUnsupportedFormat, FormatUnknown},
		{"over FHIR size", `{"resourceType":"AuditEvent","x":"` + strings.Repeat("a", MaxFHIRMessageSize) + `"}`, "", ClassTooLarge, FormatUnknown},
		{"canonical over canonical size", withMember(`"x":"` + strings.Repeat("a", MaxCanonicalMessageSize) + `"`), "", ClassTooLarge, FormatCanonical},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ev := AccessEvent{EventID: "stale"}
			f, err := DecodeEventInto([]byte(c.in), &ev)
			assertDecodeError(t, err, c.field, c.class)
			if f != c.format {
				t.Fatalf("format %v, want %v", f, c.format)
			}
			if !reflect.DeepEqual(ev, AccessEvent{}) {
				t.Fatalf("event not zeroed on error: %+v", ev)
			}
			if got, err2 := DecodeEvent([]byte(c.in)); got != nil || ErrorClassOf(err2) != c.class {
				t.Fatalf("DecodeEvent: %v, %v", got, err2)
			}
		})
	}
}

// TestDecodeAgreesWithEncodingJSON checks the hand-written scanner against
// the standard library on every valid canonical sample and on variants
// with escapes and white space: whatever DecodeCanonical accepts,
// encoding/json must accept too and read the same way.
func TestDecodeAgreesWithEncodingJSON(t *testing.T) {
	files, err := filepath.Glob("testdata/canonical/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	inputs := []string{
		withMember(`"user_role":"a\"b\\c\/d\u00e9\ud83d\ude00","break_glass_reason":"\b\f\n\r\t\u0000\u001f"`),
		"\r\n {\t" + strings.TrimPrefix(minimalEvent, "{") + " \n",
		withMember(`"logged_time":"2026-01-15T12:00:00.000000001-00:00"`),
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		inputs = append(inputs, string(b))
	}
	for _, in := range inputs {
		var ours, std AccessEvent
		if err := DecodeCanonical([]byte(in), &ours); err != nil {
			t.Fatalf("DecodeCanonical(%.60q): %v", in, err)
		}
		if err := json.Unmarshal([]byte(in), &std); err != nil {
			t.Fatalf("encoding/json rejects what we accept (%.60q): %v", in, err)
		}
		if std.Outcome == "" {
			std.Outcome = OutcomeSuccess
		}
		if !ours.Equal(&std) {
			t.Fatalf("disagreement on %.60q:\nours %+v\nstd  %+v", in, ours, std)
		}
	}
}

// TestErrorsDoNotLeakValues feeds events whose values are recognisable
// secrets and breaks them in many ways; no error string may contain a
// secret, nor a piece of one.
func TestErrorsDoNotLeakValues(t *testing.T) {
	const secret = "SECRETPATIENTVALUE"
	base := `{"event_id":"` + secret + `1","event_time":"2026-01-15T12:00:00Z","facility_id":"` + secret + `2","user_id":"` + secret + `3","patient_id":"` + secret + `4","action":"view","break_glass_reason":"` + secret + `5"}`
	mutations := []func(string) string{
		func(s string) string { return strings.Replace(s, `"view"`, `"`+secret+`6"`, 1) },
		func(s string) string { return strings.Replace(s, `2026-01-15T12:00:00Z`, secret+`7`, 1) },
		// A producer that keys by the value itself: the name has a digit.
		func(s string) string { return strings.Replace(s, `"patient_id"`, `"`+secret+`4"`, 1) },
		func(s string) string { return strings.Replace(s, `"patient_id"`, `"`+secret+` X"`, 1) },
		func(s string) string { return strings.Replace(s, secret+"4", secret+"\xff", 1) },
		func(s string) string { return strings.Replace(s, secret+"4", secret+`\u0000`, 1) },
		func(s string) string { return strings.Replace(s, secret+"4", strings.Repeat(secret, 10), 1) },
		func(s string) string { return s[:len(s)-3] },
		func(s string) string { return s + secret },
		func(s string) string { return strings.Replace(s, `"view"`, `"view","client_ip":"`+secret+`"`, 1) },
		func(s string) string { return strings.Replace(s, `"view"`, `"view","outcome":"`+secret+`"`, 1) },
		func(s string) string { return `{"resourceType":"` + secret + `"}` },
		func(s string) string {
			return `{"resourceType":"AuditEvent","id":"` + secret + `","type":{},"recorded":"` + secret + `"}`
		},
	}
	for i, mut := range mutations {
		in := mut(base)
		_, err := DecodeEvent([]byte(in))
		if err == nil {
			t.Fatalf("mutation %d: no error", i)
		}
		msg := err.Error()
		for k := 0; k+6 <= len(secret); k++ {
			if strings.Contains(msg, secret[k:k+6]) {
				t.Fatalf("mutation %d: error %q leaks part of a value", i, msg)
			}
		}
	}
}

func TestErrorClassOf(t *testing.T) {
	var ev AccessEvent
	err := DecodeCanonical([]byte(`[]`), &ev)
	if got := ErrorClassOf(err); got != ClassWrongType {
		t.Fatalf("ErrorClassOf = %q", got)
	}
	if got := ErrorClassOf(fmt.Errorf("consume: %w", err)); got != ClassWrongType {
		t.Fatalf("wrapped: ErrorClassOf = %q", got)
	}
	if got := ErrorClassOf(errors.New("io")); got != ClassOther {
		t.Fatalf("other: %q", got)
	}
	if got := ErrorClassOf(nil); got != "" {
		t.Fatalf("nil: %q", got)
	}
	if !errors.Is(err, &DecodeError{Class: ClassWrongType}) {
		t.Fatal("errors.Is by class failed")
	}
	if errors.Is(err, &DecodeError{Class: ClassSyntax}) {
		t.Fatal("errors.Is matched another class")
	}
	err = DecodeCanonical([]byte(replaceMember(t, "user_id", "")), &ev)
	if !errors.Is(err, &DecodeError{Class: ClassMissingField, Field: "user_id"}) || errors.Is(err, &DecodeError{Class: ClassMissingField, Field: "patient_id"}) {
		t.Fatal("errors.Is by class and field failed")
	}
	if got, want := err.Error(), "schemas: field user_id: missing_field: required field is absent"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
}

func TestEchoName(t *testing.T) {
	for in, want := range map[string]string{
		"foo":                            "foo",
		"resource_type":                  "resource_type",
		"resource_type2":                 redactedName,
		"MRN-00482913":                   redactedName,
		"x-custom.field":                 "x-custom.field",
		"patientId":                      "patientId",
		"Smith":                          redactedName,
		"Mary-Jane":                      redactedName,
		"_private":                       "_private",
		"":                               redactedName,
		"1abc":                           redactedName,
		"-abc":                           redactedName,
		"has space":                      redactedName,
		"Müller":                         redactedName,
		"a\nb":                           redactedName,
		strings.Repeat("a", 32):          strings.Repeat("a", 32),
		strings.Repeat("a", 33):          redactedName,
		`quote"inside`:                   redactedName,
		"patient@example.org":            redactedName,
		"555-0100 not a name but spaced": redactedName,
	} {
		if got := echoName([]byte(in)); got != want {
			t.Errorf("echoName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	good := mustDecodeCanonical(t, minimalEvent)
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	zero := time.Time{}
	early := time.Date(1850, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name  string
		mut   func(e *AccessEvent)
		field string
		class ErrorClass
	}{
		{"no event id", func(e *AccessEvent) { e.EventID = "" }, "event_id", ClassMissingField},
		{"no facility", func(e *AccessEvent) { e.FacilityID = "" }, "facility_id", ClassMissingField},
		{"no user", func(e *AccessEvent) { e.UserID = "" }, "user_id", ClassMissingField},
		{"no patient", func(e *AccessEvent) { e.PatientID = "" }, "patient_id", ClassMissingField},
		{"no time", func(e *AccessEvent) { e.EventTime = zero }, "event_time", ClassMissingField},
		{"no action", func(e *AccessEvent) { e.Action = "" }, "action", ClassMissingField},
		{"no outcome", func(e *AccessEvent) { e.Outcome = "" }, "outcome", ClassMissingField},
		{"bad action", func(e *AccessEvent) { e.Action = "read" }, "action", ClassInvalidValue},
		{"bad outcome", func(e *AccessEvent) { e.Outcome = "ok" }, "outcome", ClassInvalidValue},
		{"early time", func(e *AccessEvent) { e.EventTime = early }, "event_time", ClassInvalidTime},
		{"early logged time", func(e *AccessEvent) { e.LoggedTime = &early }, "logged_time", ClassInvalidTime},
		{"long id", func(e *AccessEvent) { e.UserID = strings.Repeat("u", MaxIDLen+1) }, "user_id", ClassTooLarge},
		{"invalid UTF-8", func(e *AccessEvent) { e.UserRole = "\xff" }, "user_role", ClassInvalidUTF8},
		{"control char", func(e *AccessEvent) { e.Source = "a\tb" }, "source", ClassInvalidValue},
		{"bad ip", func(e *AccessEvent) { e.ClientIP = "localhost" }, "client_ip", ClassInvalidValue},
	}
	for _, c := range cases {
		e := good
		c.mut(&e)
		assertDecodeError(t, e.Validate(), c.field, c.class)
	}
}

// TestEqualCoversEveryField guards AccessEvent.Equal against a field added
// to AccessEvent but not compared.
func TestEqualCoversEveryField(t *testing.T) {
	base := mustDecodeCanonical(t, minimalEvent)
	lt := base.EventTime
	typ := reflect.TypeFor[AccessEvent]()
	for i := range typ.NumField() {
		e := base
		f := reflect.ValueOf(&e).Elem().Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(f.String() + "x")
		case reflect.Bool:
			f.SetBool(!f.Bool())
		case reflect.Pointer:
			f.Set(reflect.ValueOf(&lt))
		case reflect.Struct:
			f.Set(reflect.ValueOf(base.EventTime.Add(time.Nanosecond)))
		default:
			t.Fatalf("field %s: kind %v not handled by this test", typ.Field(i).Name, f.Kind())
		}
		if base.Equal(&e) {
			t.Errorf("Equal ignores field %s", typ.Field(i).Name)
		}
	}
	// Same instant, other offset: not equal (the offset is kept on purpose).
	e := base
	e.EventTime = base.EventTime.In(time.FixedZone("", 3600))
	if base.Equal(&e) {
		t.Error("Equal ignores the UTC offset")
	}
}

func TestFormatString(t *testing.T) {
	for f, want := range map[Format]string{FormatUnknown: "unknown", FormatCanonical: "canonical", FormatFHIRR4: "fhir_r4", FormatFHIRR5: "fhir_r5", Format(99): "unknown"} {
		if f.String() != want {
			t.Errorf("%d: %q", f, f.String())
		}
	}
}

func TestDecodeAllocations(t *testing.T) {
	if testing.Short() {
		t.Skip("allocation counts are measured in long mode")
	}
	data, err := os.ReadFile("testdata/canonical/view.json")
	if err != nil {
		t.Fatal(err)
	}
	var ev AccessEvent
	// One for the strings, one for logged_time.
	if n := testing.AllocsPerRun(200, func() { _ = DecodeCanonical(data, &ev) }); n > 2 {
		t.Errorf("DecodeCanonical: %v allocs, want ≤ 2", n)
	}
	// One for the event (with its logged time), one for the strings.
	if n := testing.AllocsPerRun(200, func() { _, _ = DecodeEvent(data) }); n > 2 {
		t.Errorf("DecodeEvent: %v allocs, want ≤ 2", n)
	}
	// One for the event: the strings point into the handed-over payload
	// (the differential tests check they are the same strings).
	if n := testing.AllocsPerRun(200, func() { _, _ = DecodeEventOwned(data) }); n > 1 {
		t.Errorf("DecodeEventOwned: %v allocs, want ≤ 1", n)
	}
	fhir, err := os.ReadFile("testdata/fhir/r4_view.json")
	if err != nil {
		t.Fatal(err)
	}
	if n := testing.AllocsPerRun(200, func() { _ = DecodeFHIR(fhir, &ev) }); n > 2 {
		t.Errorf("DecodeFHIR: %v allocs, want ≤ 2", n)
	}
}

// The pipeline asks IgnoreReasonOf of every decoded event's error, nil
// almost always: that must not allocate (it did, one object per event,
// through errors.As).
func TestIgnoreReasonOfNilAllocatesNothing(t *testing.T) {
	if n := testing.AllocsPerRun(100, func() {
		if _, ok := IgnoreReasonOf(nil); ok {
			t.Fatal("nil error has an ignore reason")
		}
	}); n != 0 {
		t.Fatalf("IgnoreReasonOf(nil) allocates %v objects", n)
	}
	if r, ok := IgnoreReasonOf(&NotAccessError{Reason: IgnoreAuthentication}); !ok || r != IgnoreAuthentication {
		t.Fatalf("IgnoreReasonOf(NotAccessError) = %q, %v", r, ok)
	}
}
