package schemas

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// fhirPathSegments are the element names DecodeFHIR may put in
// DecodeError.Field. A field outside this set (and outside the canonical
// names) would be a string the decoder made up from its input.
var fhirPathSegments = []string{
	"resourceType", "id", "type", "subtype", "category", "code", "action",
	"period", "start", "occurredDateTime", "occurredPeriod", "recorded",
	"outcome", "purposeOfEvent", "authorization", "extension", "agent",
	"requestor", "who", "role", "location", "network", "address", "networkString",
	"networkReference", "purposeOfUse", "source", "site", "observer",
	"patient", "encounter", "entity", "what", "reference", "coding",
}

var echoedName = regexp.MustCompile(`^[A-Za-z_][A-Za-z_.-]{0,31}$`)

// staticVocabulary is every piece of text a DecodeError may be built from.
func staticVocabulary() string {
	var parts []string
	parts = append(parts, reasonText[:]...)
	for _, c := range ErrorClasses {
		parts = append(parts, string(c))
	}
	for _, f := range eventFields {
		parts = append(parts, f.name)
	}
	parts = append(parts, fhirPathSegments...)
	parts = append(parts, "schemas: ", "field ", "line ", redactedName)
	return strings.Join(parts, "\x00")
}

func isStaticField(f string) bool {
	if f == "" {
		return true
	}
	for _, spec := range eventFields {
		if f == spec.name {
			return true
		}
	}
	for seg := range strings.SplitSeq(f, ".") {
		if !slices.Contains(fhirPathSegments, seg) {
			return false
		}
	}
	return true
}

// checkErrorIsSafe asserts that err is a well-formed *DecodeError whose text
// holds nothing from the input: a known class, a Detail from the fixed
// table, a Field that is a schema or FHIR path (or a sanitised unknown
// member name), an Error() made of those parts only, and — the literal
// check — no 8-byte piece of any string in the input that is not also
// static text.
func checkErrorIsSafe(t *testing.T, data []byte, err error, vocab string) {
	t.Helper()
	de, ok := err.(*DecodeError)
	if !ok {
		t.Fatalf("error %T is not a *DecodeError", err)
	}
	if !slices.Contains(ErrorClasses, de.Class) || de.Class == ClassOther {
		t.Fatalf("unknown class %q", de.Class)
	}
	if !slices.Contains(reasonText[:], de.Detail) {
		t.Fatalf("detail %q is not from the table", de.Detail)
	}
	echoed := de.Class == ClassUnknownField && (de.Field == redactedName || echoedName.MatchString(de.Field))
	if !echoed && !isStaticField(de.Field) {
		t.Fatalf("field %q is neither a schema path nor a sanitised name", de.Field)
	}
	msg := err.Error()
	if rebuilt := (&DecodeError{Field: de.Field, Class: de.Class, Detail: de.Detail}).Error(); msg != rebuilt {
		t.Fatalf("Error() %q has more than field, class and detail", msg)
	}
	// Literal PHI check over every quoted run of the input (keys and
	// values; the input need not be valid JSON).
	allowed := vocab + "\x00" + de.Field
	for _, s := range strings.Split(string(data), `"`) {
		for i := 0; i+8 <= len(s); i++ {
			w := s[i : i+8]
			if strings.Contains(msg, w) && !strings.Contains(allowed, w) {
				t.Fatalf("error %q contains input text %q", msg, w)
			}
		}
	}
}

func addSeeds(f *testing.F) {
	for _, dir := range []string{"testdata/canonical", "testdata/fhir"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			f.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
			f.Add(b[:len(b)/2])   // truncated
			f.Add(b[:len(b)-2])   // truncated near the end
			f.Add(append(b, 'x')) // trailing garbage
		}
	}
	seeds := []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"a":1}`,
		minimalEvent,
		withMember("\"user_role\":\"a\xffb\""),        // invalid UTF-8
		withMember(`"user_role":"\ud800"`),             // lone surrogate
		withMember(`"user_role":"\ud83d\ude00\u00e9"`), // escapes
		withMember(`"event_id":"dup"`),                 // duplicate key
		withMember(`"event\u005fid":"dup"`),            // duplicate key through an escape
		withMember(`"break_glass_reason":"` + strings.Repeat("r", 70000) + `"`), // huge string
		withMember(`"x":` + strings.Repeat("[", 5000)),                        // deep nesting
		`{"resourceType":"AuditEvent","x":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 100) + `}`,
		`{"resourceType":"AuditEvent","id":"a","type":{},"action":"R","recorded":"2026-03-01T10:00:00Z","agent":[{"who":{"reference":"Practitioner/1"},"requestor":true}],"source":{"site":"s"},"entity":[{"what":{"reference":"Patient/p"}}]}`,
		fhirBase,
		withMember(`"client_ip":"::ffff:10.0.0.1"`),
		replaceMember(&testing.T{}, "event_time", `"event_time":"2026-01-15T12:00:00.123456789-23:59"`),
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
}

// FuzzDecodeEvent: no input panics; every error is a safe *DecodeError;
// every success is valid JSON, passes Validate, agrees with encoding/json
// (canonical input), and survives json.Marshal + DecodeCanonical unchanged.
func FuzzDecodeEvent(f *testing.F) {
	addSeeds(f)
	vocab := staticVocabulary()
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev AccessEvent
		format, err := DecodeEventInto(data, &ev)
		if err != nil {
			checkErrorIsSafe(t, data, err, vocab)
			if ev != (AccessEvent{}) {
				t.Fatal("event not zeroed on error")
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON as %v", format)
		}
		if err := ev.Validate(); err != nil {
			t.Fatalf("decoded event fails Validate: %v", err)
		}
		out, err := json.Marshal(&ev)
		if err != nil {
			t.Fatalf("json.Marshal: %v", err)
		}
		var back AccessEvent
		if err := DecodeCanonical(out, &back); err != nil {
			t.Fatalf("re-decoding %s: %v", out, err)
		}
		if !back.Equal(&ev) {
			t.Fatalf("round trip changed the event:\n%+v\n%+v", ev, back)
		}
		if format == FormatCanonical {
			var std AccessEvent
			if err := json.Unmarshal(data, &std); err != nil {
				t.Fatalf("encoding/json rejects an accepted event: %v", err)
			}
			if std.Outcome == "" {
				std.Outcome = OutcomeSuccess
			}
			if !std.Equal(&ev) {
				t.Fatalf("encoding/json reads it differently:\n%+v\n%+v", ev, std)
			}
		}
	})
}

func TestStaticVocabularyCoversFHIRPaths(t *testing.T) {
	// Every error path fhir.go can produce must pass isStaticField, or the
	// fuzzer would report it as a leak. Decode each golden error sample and
	// a few hand-made failures.
	for _, f := range []string{"agent.network.address", "outcome.code.code", "entity.what", "source.site", "period.start", "agent.networkReference"} {
		if !isStaticField(f) {
			t.Errorf("%q not static", f)
		}
	}
	for _, f := range []string{"agent.X", "MRN-1", "entity.what.value1"} {
		if isStaticField(f) {
			t.Errorf("%q taken as static", f)
		}
	}
}
