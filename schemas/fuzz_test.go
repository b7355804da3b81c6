package schemas

import (
	"encoding/json"
	"errors"
	"fmt"
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

var echoedName = regexp.MustCompile(`^[a-z_][A-Za-z_.-]{0,31}$`)

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

// jsonStrings splits any input, valid JSON or not, into the strings it
// quotes: keys (followed by ':') and values. Each is returned raw and, when
// it unescapes cleanly, unescaped as well.
func jsonStrings(data []byte) (keys, values []string) {
	for i := 0; i < len(data); i++ {
		if data[i] != '"' {
			continue
		}
		j := i + 1
		for j < len(data) && data[j] != '"' {
			if data[j] == '\\' {
				j++
			}
			j++
		}
		if j > len(data) {
			j = len(data)
		}
		raw := data[i+1 : j]
		forms := []string{string(raw)}
		var dec string
		if j < len(data) && json.Unmarshal(data[i:j+1], &dec) == nil {
			forms = append(forms, dec)
		}
		k := j + 1
		for k < len(data) && strings.IndexByte(" \t\r\n", data[k]) >= 0 {
			k++
		}
		if k < len(data) && data[k] == ':' {
			keys = append(keys, forms...)
		} else {
			values = append(values, forms...)
		}
		i = j
	}
	return keys, values
}

// errorLeak says what is wrong with err as a decode error, or "" if it is a
// well-formed *DecodeError whose text holds no input data.
//
// Structure: a known class, a Detail from the fixed table, a Field that is
// a schema name or FHIR path (or, for unknown_field, a sanitised member
// name), and an Error() made of exactly those parts — so Field is the only
// place input could show.
//
// Literal check: no 8-byte piece of any string value in the input appears
// in that dynamic part, unless it is also in an input key and the error is
// an unknown_field echo (which repeats a key, by design, never a value).
func errorLeak(data []byte, err error) string {
	if na, ok := err.(*NotAccessError); ok {
		if !slices.Contains(IgnoreReasons, na.Reason) {
			return fmt.Sprintf("unknown ignore reason %q", na.Reason)
		}
		if msg := err.Error(); msg != (&NotAccessError{Reason: na.Reason}).Error() {
			return fmt.Sprintf("Error() %q has more than the reason", msg)
		}
		return ""
	}
	de, ok := err.(*DecodeError)
	if !ok {
		return fmt.Sprintf("error %T is neither a *DecodeError nor a *NotAccessError", err)
	}
	if !slices.Contains(ErrorClasses, de.Class) || de.Class == ClassOther {
		return fmt.Sprintf("unknown class %q", de.Class)
	}
	if !slices.Contains(reasonText[:], de.Detail) {
		return fmt.Sprintf("detail %q is not from the table", de.Detail)
	}
	echoed := de.Class == ClassUnknownField && (de.Field == redactedName || echoedName.MatchString(de.Field))
	if !echoed && !isStaticField(de.Field) {
		return fmt.Sprintf("field %q is neither a schema path nor a sanitised name", de.Field)
	}
	msg := err.Error()
	if rebuilt := (&DecodeError{Field: de.Field, Class: de.Class, Detail: de.Detail}).Error(); msg != rebuilt {
		return fmt.Sprintf("Error() %q has more than field, class and detail", msg)
	}
	if !echoed {
		return "" // every byte of msg is fixed text
	}
	keys, values := jsonStrings(data)
	for _, v := range values {
		for i := 0; i+8 <= len(v); i++ {
			w := v[i : i+8]
			if !strings.Contains(de.Field, w) {
				continue
			}
			if !slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(k, w) }) {
				return fmt.Sprintf("error %q repeats input value text %q", msg, w)
			}
		}
	}
	return ""
}

func addSeeds(f *testing.F) {
	for _, s := range seedInputs(f) {
		f.Add(s)
	}
}

// seedInputs are the decoder fuzz targets' seeds: the canonical and FHIR
// samples (whole, truncated, with trailing garbage) and hand-picked cases.
func seedInputs(tb testing.TB) [][]byte {
	var out [][]byte
	for _, dir := range []string{"testdata/canonical", "testdata/fhir"} {
		files, err := filepath.Glob(filepath.Join(dir, "*.json"))
		if err != nil {
			tb.Fatal(err)
		}
		for _, file := range files {
			b, err := os.ReadFile(file)
			if err != nil {
				tb.Fatal(err)
			}
			out = append(out,
				b,
				b[:len(b)/2],                // truncated
				b[:len(b)-2],                // truncated near the end
				append(slices.Clip(b), 'x'), // trailing garbage
			)
		}
	}
	seeds := []string{
		``, `{}`, `[]`, `null`, `"x"`, `{"a":1}`,
		minimalEvent,
		withMember("\"user_role\":\"a\xffb\""),                                  // invalid UTF-8
		withMember(`"user_role":"\ud800"`),                                      // lone surrogate
		withMember(`"user_role":"\ud83d\ude00\u00e9"`),                          // escapes
		withMember(`"event_id":"dup"`),                                          // duplicate key
		withMember(`"event\u005fid":"dup"`),                                     // duplicate key through an escape
		withMember(`"break_glass_reason":"` + strings.Repeat("r", 70000) + `"`), // huge string
		withMember(`"x":` + strings.Repeat("[", 5000)),                          // deep nesting
		`{"resourceType":"AuditEvent","x":` + strings.Repeat(`{"a":`, 100) + `1` + strings.Repeat("}", 100) + `}`,
		`{"resourceType":"AuditEvent","id":"a","type":{},"action":"R","recorded":"2026-03-01T10:00:00Z","agent":[{"who":{"reference":"Practitioner/1"},"requestor":true}],"source":{"site":"s"},"entity":[{"what":{"reference":"Patient/p"}}]}`,
		fhirBase,
		withMember(`"client_ip":"::ffff:10.0.0.1"`),
		replaceMember(tb, "event_time", `"event_time":"2026-01-15T12:00:00.123456789-23:59"`),
	}
	for _, s := range seeds {
		out = append(out, []byte(s))
	}
	return out
}

// FuzzDecodeEvent: no input panics; every error is a safe *DecodeError;
// every success is valid JSON, passes Validate, agrees with encoding/json
// (canonical input), and survives json.Marshal + DecodeCanonical unchanged.
func FuzzDecodeEvent(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		var ev AccessEvent
		format, err := DecodeEventInto(data, &ev)
		if err != nil {
			if problem := errorLeak(data, err); problem != "" {
				t.Fatal(problem)
			}
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

// TestErrorLeakCheckCanFail shows the fuzzer's leak check rejects the
// mistakes it is there to catch.
func TestErrorLeakCheckCanFail(t *testing.T) {
	in := []byte(`{"patient_id":"SECRETVALUE1","unknownkey":"x"}`)
	bad := []error{
		errors.New("plain error"),
		&DecodeError{Field: "patient_id", Class: "leaky", Detail: reasonText[rRequired]},
		&DecodeError{Field: "patient_id", Class: ClassInvalidValue, Detail: "bad value SECRETVALUE1"},
		&DecodeError{Field: "SECRETVALUE1", Class: ClassInvalidValue, Detail: reasonText[rEmpty]},
		&DecodeError{Field: "agent.SECRETVALUE", Class: ClassInvalidValue, Detail: reasonText[rEmpty]},
		&DecodeError{Field: "SECRETVALUE", Class: ClassUnknownField, Detail: reasonText[rUnknownField]},
		fmt.Errorf("wrapped: %w", &DecodeError{Field: "patient_id", Class: ClassInvalidValue, Detail: reasonText[rEmpty]}),
	}
	for i, err := range bad {
		if errorLeak(in, err) == "" {
			t.Errorf("case %d (%v): not flagged", i, err)
		}
	}
	good := []error{
		&DecodeError{Field: "patient_id", Class: ClassInvalidValue, Detail: reasonText[rEmpty], Offset: 3},
		&DecodeError{Field: "unknownkey", Class: ClassUnknownField, Detail: reasonText[rUnknownField]},
		&DecodeError{Field: "agent.who", Class: ClassMissingField, Detail: reasonText[rRequired]},
	}
	for i, err := range good {
		if p := errorLeak(in, err); p != "" {
			t.Errorf("good case %d flagged: %s", i, p)
		}
	}
}

// FuzzLoadPatients: reference-data lines never panic the loader, errors are
// DecodeErrors with a line number (or wrapped reader errors, impossible
// here), and accepted records pass Validate.
func FuzzLoadPatients(f *testing.F) {
	for _, file := range []string{"testdata/reference/patients.ndjson", "testdata/reference/users.ndjson", "testdata/reference/encounters.ndjson"} {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"patient_id":"p","next_of_kin_user_ids":["a",null],"address":{"city":null}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ps, err := LoadPatients(strings.NewReader(string(data)))
		if err != nil {
			var de *DecodeError
			if !errors.As(err, &de) || de.Line < 1 {
				t.Fatalf("error %v: not a DecodeError with a line", err)
			}
			if !slices.Contains(ErrorClasses, de.Class) || !slices.Contains(reasonText[:], de.Detail) {
				t.Fatalf("error %v: unknown class or detail", err)
			}
			return
		}
		for i := range ps {
			if err := ps[i].Validate(); err != nil {
				t.Fatalf("loaded patient fails Validate: %v", err)
			}
		}
	})
}
