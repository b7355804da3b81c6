package schemas

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The differential tests: the canonical decoder (decode.go) against the
// decoder before the throughput work (decode_oracle_test.go). For every input both must agree exactly: the
// same AccessEvent (times compared with ==, so the same instant, offset
// and *time.Location), or the same error: the same type, class, field,
// detail and offset, hence the same dead-letter class and field.

// DecodeDisagreement decodes data with the decoder and with the oracle,
// through DecodeEvent's path (with a logged-time slot), DecodeEventOwned's,
// DecodeEventInto's and DecodeCanonical's, and describes the first
// difference, or returns "" when they agree. Exported for the synthetic
// hospital's test in package schemas_test.
func DecodeDisagreement(data []byte) string {
	for i := range 3 {
		withLT, owned := i > 0, i == 2 // owned: DecodeEventOwned's path
		var got, want AccessEvent
		var gotLT, wantLT *time.Time
		if withLT {
			gotLT, wantLT = new(time.Time), new(time.Time)
		}
		in := data
		if owned {
			in = bytes.Clone(data) // handed over
		}
		gf, gerr := decodeEvent(in, &got, gotLT, defaultFHIROpts, owned)
		wf, werr := decodeEventOracle(data, &want, wantLT, defaultFHIROpts)
		if gf != wf {
			return fmt.Sprintf("format %v, oracle %v", gf, wf)
		}
		if d := errorDifference(gerr, werr); d != "" {
			return "decodeEvent: " + d
		}
		if d := eventDifference(&got, &want); d != "" {
			return "decodeEvent: " + d
		}
	}
	// Into an event that holds an earlier one (every field set), as a
	// caller that reuses its AccessEvent does.
	got, want := reusedEvent(), AccessEvent{}
	gerr := DecodeCanonical(data, &got)
	werr := decodeCanonicalStrictOracle(data, &want)
	if d := errorDifference(gerr, werr); d != "" {
		return "DecodeCanonical: " + d
	}
	return eventDifference(&got, &want)
}

// reusedEvent is an event with every field set.
func reusedEvent() AccessEvent {
	lt := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	return AccessEvent{
		EventID: "old", EventTime: lt, LoggedTime: &lt, Source: "old", FacilityID: "old",
		UserID: "old", UserRole: "old", UserDepartment: "old", WorkstationID: "old",
		ClientIP: "10.0.0.1", PatientID: "old", EncounterID: "old", Action: ActionExport,
		Resource: "old", BreakGlass: true, BreakGlassReason: "old", Outcome: OutcomeFailure,
	}
}

// decodeCanonicalStrictOracle is DecodeCanonical over the oracle.
func decodeCanonicalStrictOracle(data []byte, ev *AccessEvent) error {
	if len(data) > MaxCanonicalMessageSize {
		*ev = AccessEvent{}
		return newErr("", ClassTooLarge, rMessageTooLarge, -1)
	}
	if _, de := decodeCanonicalOracle(data, ev, nil, false); de != nil {
		*ev = AccessEvent{}
		return de
	}
	return nil
}

func errorDifference(got, want error) string {
	if (got == nil) != (want == nil) {
		return fmt.Sprintf("error %v, oracle %v", got, want)
	}
	if got == nil {
		return ""
	}
	var gde, wde *DecodeError
	var gna, wna *NotAccessError
	switch {
	case errors.As(want, &wde):
		if !errors.As(got, &gde) || *gde != *wde {
			return fmt.Sprintf("error %#v, oracle %#v", got, want)
		}
	case errors.As(want, &wna):
		if !errors.As(got, &gna) || *gna != *wna {
			return fmt.Sprintf("error %#v, oracle %#v", got, want)
		}
	default:
		return fmt.Sprintf("oracle error of unexpected type %T", want)
	}
	return ""
}

func eventDifference(got, want *AccessEvent) string {
	g, w := *got, *want
	if (g.LoggedTime == nil) != (w.LoggedTime == nil) {
		return fmt.Sprintf("logged_time %v, oracle %v", g.LoggedTime, w.LoggedTime)
	}
	if g.LoggedTime != nil {
		if *g.LoggedTime != *w.LoggedTime {
			return fmt.Sprintf("logged_time %v, oracle %v", *g.LoggedTime, *w.LoggedTime)
		}
		g.LoggedTime, w.LoggedTime = nil, nil
	}
	if g != w {
		return fmt.Sprintf("event\n%+v\noracle\n%+v", g, w)
	}
	return ""
}

// mutations returns variants of b (memberVariants has the structured
// ones): every prefix, and at every position
// the byte deleted, doubled, or replaced by one of a few bytes that matter
// to the grammar.
func mutations(b []byte) [][]byte {
	var out [][]byte
	for i := range len(b) {
		out = append(out, b[:i])
		out = append(out, append(append([]byte{}, b[:i]...), b[i+1:]...))
		out = append(out, append(append([]byte{}, b[:i+1]...), b[i:]...))
		for _, c := range []byte{'"', '\\', ' ', ':', ',', '}', '0', 'x', 0x00, 0x7f, 0xff} {
			m := append([]byte{}, b...)
			m[i] = c
			out = append(out, m)
		}
	}
	return out
}

// memberValues are values memberVariants puts into every member: the
// empty, null and wrongly typed cases, escapes, control characters, limits
// and boundary times, IPs and enumerations.
var memberValues = []string{
	`""`, `null`, `1`, `-0.5e3`, `true`, `false`, `{}`, `[]`, `" "`, `"\u0000"`, `"\u007f"`,
	`"a\u0041\n"`, `"\ud83d\ude00"`, `"é"`, `"` + strings.Repeat("x", 300) + `"`,
	`"` + strings.Repeat("y", 2000) + `"`, `"0001-01-01T00:00:00Z"`, `"1899-12-31T23:59:59.999999999Z"`,
	`"1900-01-01T00:00:00Z"`, `"1900-01-01T00:59:59+01:00"`, `"2299-12-31T23:59:59.999999999Z"`,
	`"2300-01-01T00:00:00Z"`, `"2299-12-31T20:00:00-04:00"`, `"2026-02-29T10:00:00Z"`,
	`"2024-02-29T10:00:00.5-00:00"`, `"2026-03-01t08:15:00Z"`, `"2026-03-01T08:15:00"`,
	`"::1"`, `"fe80::1%eth0"`, `"10.0.0.256"`, `"view"`, `"VIEW"`, `"failure"`, `"export"`,
}

// memberVariants returns b with each canonical member's value replaced by
// each of memberValues, and with each member removed. b must be a sample
// whose values hold no '"' or ',' (the testdata samples).
func memberVariants(b []byte) [][]byte {
	var out [][]byte
	for _, spec := range eventFields {
		key := `"` + spec.name + `":`
		i := strings.Index(string(b), key)
		if i < 0 {
			continue
		}
		v := i + len(key)
		end := v + strings.IndexAny(string(b[v:]), ",}")
		if b[v] == '"' {
			end = v + 1 + strings.IndexByte(string(b[v+1:]), '"') + 1
		}
		for _, val := range memberValues {
			out = append(out, []byte(string(b[:v])+val+string(b[end:])))
		}
		if b[end] == ',' {
			out = append(out, []byte(string(b[:i])+string(b[end+1:])))
		}
	}
	return out
}

// fuzzCorpus reads the committed FuzzDecodeEvent corpus.
func fuzzCorpus(t *testing.T) [][]byte {
	files, err := filepath.Glob("testdata/fuzz/FuzzDecodeEvent/*")
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
		if len(lines) != 2 || !strings.HasPrefix(lines[1], "[]byte(") {
			t.Fatalf("%s: not a one-[]byte fuzz corpus file", f)
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(lines[1], "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		out = append(out, []byte(s))
	}
	if len(out) == 0 {
		t.Fatal("empty fuzz corpus")
	}
	return out
}

func TestDecodeMatchesOracleOnCorpora(t *testing.T) {
	inputs := append(seedInputs(t), fuzzCorpus(t)...)
	ok, failed := 0, 0
	for _, in := range inputs {
		if d := DecodeDisagreement(in); d != "" {
			t.Errorf("%.80q: %s", in, d)
		}
		if _, err := DecodeEvent(in); err == nil {
			ok++
		} else {
			failed++
		}
	}
	// The corpora hold both kinds; a comparison of errors only (or of
	// successes only) would prove little.
	if ok < 10 || failed < 10 {
		t.Fatalf("corpora decode %d ok and %d failed; want both", ok, failed)
	}
}

func TestDecodeMatchesOracleOnMutations(t *testing.T) {
	bases := [][]byte{[]byte(minimalEvent)}
	files, err := filepath.Glob("testdata/canonical/*.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		bases = append(bases, b)
	}
	if testing.Short() {
		bases = bases[:2]
	}
	classes := map[ErrorClass]int{}
	n := 0
	for _, b := range bases {
		for _, m := range append(mutations(b), memberVariants(b)...) {
			n++
			if d := DecodeDisagreement(m); d != "" {
				t.Fatalf("%q: %s", m, d)
			}
			_, err := DecodeEvent(m)
			classes[ErrorClassOf(err)]++
		}
	}
	t.Logf("%d mutations, by class: %v", n, classes)
	for _, c := range []ErrorClass{"", ClassSyntax, ClassInvalidUTF8, ClassUnknownField, ClassInvalidTime,
		ClassInvalidValue, ClassMissingField, ClassWrongType, ClassTooLarge, ClassDuplicateField} {
		if classes[c] == 0 {
			t.Errorf("no mutation gave class %q: the mutations do not exercise it", c)
		}
	}
}

// FuzzDecodeDifferential: the decoder and the oracle agree on any input
// (the seed corpus runs in every `go test`; `go test -fuzz
// FuzzDecodeDifferential ./schemas` explores further).
func FuzzDecodeDifferential(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if d := DecodeDisagreement(data); d != "" {
			t.Fatal(d)
		}
	})
}
