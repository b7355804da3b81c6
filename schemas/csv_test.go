package schemas

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCSVCases converts every directory case under testdata/csv (a
// mapping.yaml, an export.csv or export.tsv) and compares the events with
// expected.ndjson (canonical JSON, one per line) and the bad and ignored
// rows with expected.txt. Run with -update to regenerate, then review the
// diff by hand. Several mappings are the shipped ones in deployments/csv
// (symbolic links), so those are tested on their samples too.
func TestCSVCases(t *testing.T) {
	dirs, _ := filepath.Glob("testdata/csv/*")
	if len(dirs) < 2 {
		t.Fatalf("only %d CSV cases", len(dirs))
	}
	for _, dir := range dirs {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			m, err := LoadCSVMapping(filepath.Join(dir, "mapping.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			exports, _ := filepath.Glob(filepath.Join(dir, "export.*"))
			if len(exports) != 1 {
				t.Fatalf("want one export.csv or export.tsv, have %v", exports)
			}
			raw, err := os.ReadFile(exports[0])
			if err != nil {
				t.Fatal(err)
			}
			r, err := NewCSVReader(bytes.NewReader(raw), m)
			if err != nil {
				t.Fatal(err)
			}
			var events, report bytes.Buffer
			for {
				ev, line, err := r.Next()
				if err == io.EOF {
					break
				}
				if reason, ok := IgnoreReasonOf(err); ok {
					fmt.Fprintf(&report, "line %d: ignored %s\n", line, reason)
					continue
				}
				var de *DecodeError
				if errors.As(err, &de) {
					if de.Line != line {
						t.Errorf("line %d: error says line %d", line, de.Line)
					}
					if leak := csvLeak(raw, de); leak != "" {
						t.Errorf("line %d: %s", line, leak)
					}
					fmt.Fprintf(&report, "line %d: %s\n", line, strings.TrimSpace(string(de.Class)+" "+de.Field))
					continue
				}
				if err != nil {
					t.Fatalf("line %d: %v", line, err)
				}
				if err := ev.Validate(); err != nil {
					t.Fatalf("line %d: converted event fails Validate: %v", line, err)
				}
				b, _ := json.Marshal(ev)
				events.Write(append(b, '\n'))
			}
			for _, g := range []struct {
				file string
				got  []byte
			}{{"expected.ndjson", events.Bytes()}, {"expected.txt", report.Bytes()}} {
				path := filepath.Join(dir, g.file)
				if *update {
					if err := os.WriteFile(path, g.got, 0o644); err != nil {
						t.Fatal(err)
					}
					continue
				}
				want, err := os.ReadFile(path)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(want, g.got) {
					t.Errorf("%s differs:\n--- got\n%s--- want\n%s", path, g.got, want)
				}
			}
			// The canonical lines decode back to themselves.
			for _, l := range bytes.Split(bytes.TrimSpace(events.Bytes()), []byte("\n")) {
				if len(l) == 0 {
					continue
				}
				if _, err := DecodeEvent(l); err != nil {
					t.Errorf("canonical output %s does not decode: %v", l, err)
				}
			}
		})
	}
}

// csvLeak reports an error string that carries more than fixed text: its
// class, field (a schema name) and detail from the reason table.
func csvLeak(raw []byte, de *DecodeError) string {
	if !isStaticField(de.Field) {
		return fmt.Sprintf("field %q is not a schema name", de.Field)
	}
	found := false
	for _, r := range reasonText {
		found = found || r == de.Detail
	}
	if !found {
		return fmt.Sprintf("detail %q is not from the table", de.Detail)
	}
	if msg := de.Error(); msg != (&DecodeError{Field: de.Field, Class: de.Class, Detail: de.Detail, Line: de.Line}).Error() {
		return fmt.Sprintf("Error() %q carries more than line, field, class and detail", msg)
	}
	return ""
}

func TestCSVMappingValidate(t *testing.T) {
	m := CSVMapping{Delimiter: "x", TimeFormat: "02.01.06 15:04", Actions: map[string]string{"Open": "look"}}
	err := m.Validate()
	for _, key := range []string{"delimiter", "columns.event_time", "columns.user_id", "columns.patient_id", "columns.action",
		"columns.facility_id", "time_format", "time_zone", "actions.Open"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("Validate does not report %s: %v", key, err)
		}
	}
	ok := CSVMapping{FacilityID: "f", TimeFormat: "2006-01-02 15:04:05", TimeZone: "Europe/Paris",
		Columns: CSVColumns{EventTime: "t", UserID: "u", PatientID: "p", Action: "a"}}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	if _, err := NewCSVReader(strings.NewReader("t,u,a\n"), &ok); err == nil || !strings.Contains(err.Error(), `columns.patient_id ("p")`) {
		t.Errorf("missing column not reported by mapping key: %v", err)
	}
	if _, err := NewCSVReader(strings.NewReader(""), &ok); err == nil {
		t.Error("empty export accepted")
	}
}

// FuzzCSVReader: no export panics the reader; every row is an event that
// passes Validate, a not-a-chart-access, or a safe *DecodeError with its
// line.
func FuzzCSVReader(f *testing.F) {
	for _, p := range []string{"testdata/csv/iso_csv/export.csv", "testdata/csv/metrics_tsv/export.tsv"} {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b, strings.HasSuffix(p, ".tsv"))
		}
	}
	f.Add([]byte("when,login,mrn,what\n\"x\n"), false)
	load := func(p string) *CSVMapping {
		m, err := LoadCSVMapping(p)
		if err != nil {
			f.Fatal(err)
		}
		return m
	}
	iso, tsv := load("testdata/csv/iso_csv/mapping.yaml"), load("testdata/csv/metrics_tsv/mapping.yaml")
	f.Fuzz(func(t *testing.T, data []byte, tab bool) {
		m := iso
		if tab {
			m = tsv
		}
		r, err := NewCSVReader(bytes.NewReader(data), m)
		if err != nil {
			return
		}
		for i := 0; i < 10000; i++ {
			ev, line, err := r.Next()
			if err == io.EOF {
				return
			}
			if _, ok := IgnoreReasonOf(err); ok {
				continue
			}
			var de *DecodeError
			if errors.As(err, &de) {
				if leak := csvLeak(data, de); leak != "" || de.Line != line {
					t.Fatalf("line %d: %v %s", line, err, leak)
				}
				continue
			}
			if err != nil {
				t.Fatalf("line %d: unexpected error %v", line, err)
			}
			if err := ev.Validate(); err != nil {
				t.Fatalf("line %d: %v", line, err)
			}
		}
	})
}
