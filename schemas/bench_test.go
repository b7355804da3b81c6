package schemas

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
	"time"
)

func benchInput(b *testing.B, path string) []byte {
	b.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		b.Fatal(err)
	}
	return data
}

// reportCPU adds the metric cpu-ns/op: the process's CPU time per
// operation. On a shared machine wall-clock ns/op measures the load as
// much as the code; CPU time much less so (docs/benchmarks.md §2).
func reportCPU(b *testing.B) func() {
	start := cpuTime(b)
	return func() {
		if start > 0 {
			b.ReportMetric(float64(cpuTime(b)-start)/float64(b.N), "cpu-ns/op")
		}
	}
}

// BenchmarkDecodeCanonical decodes a typical 463-byte canonical event with
// every field set into a reused AccessEvent.
func BenchmarkDecodeCanonical(b *testing.B) {
	data := benchInput(b, "testdata/canonical/view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var ev AccessEvent
	defer reportCPU(b)()
	for b.Loop() {
		if err := DecodeCanonical(data, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCanonicalOracle is BenchmarkDecodeCanonical with the
// decoder before the throughput work (decode_oracle_test.go): before and
// after side by side in one run.
func BenchmarkDecodeCanonicalOracle(b *testing.B) {
	data := benchInput(b, "testdata/canonical/view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var ev AccessEvent
	defer reportCPU(b)()
	for b.Loop() {
		if err := decodeCanonicalStrictOracle(data, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEvent is BenchmarkDecodeCanonical through the
// auto-detecting entry point that allocates the event.
func BenchmarkDecodeEvent(b *testing.B) {
	data := benchInput(b, "testdata/canonical/view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	defer reportCPU(b)()
	for b.Loop() {
		if _, err := DecodeEvent(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeEventOracle is BenchmarkDecodeEvent with the oracle.
func BenchmarkDecodeEventOracle(b *testing.B) {
	data := benchInput(b, "testdata/canonical/view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	defer reportCPU(b)()
	for b.Loop() {
		h := new(struct {
			ev AccessEvent
			lt time.Time
		})
		if _, err := decodeEventOracle(data, &h.ev, &h.lt, defaultFHIROpts); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFHIR decodes a realistic 3.6 KB R4 AuditEvent (narrative,
// two agents, three entities).
func BenchmarkDecodeFHIR(b *testing.B) {
	data := benchInput(b, "testdata/fhir/r4_view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var ev AccessEvent
	for b.Loop() {
		if err := DecodeFHIR(data, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeFHIRR5 decodes the R5 print sample.
func BenchmarkDecodeFHIRR5(b *testing.B) {
	data := benchInput(b, "testdata/fhir/r5_print.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	var ev AccessEvent
	for b.Loop() {
		if err := DecodeFHIR(data, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeCanonicalError measures the dead-letter path (an unknown
// member found near the end).
func BenchmarkDecodeCanonicalError(b *testing.B) {
	data := []byte(withMember(`"actor":"x"`))
	b.ReportAllocs()
	var ev AccessEvent
	for b.Loop() {
		if _, err := DecodeEventInto(data, &ev); err == nil {
			b.Fatal("no error")
		}
	}
}

// BenchmarkEncodingJSONBaseline is encoding/json on the same event without
// any of the checks, for comparison only.
func BenchmarkEncodingJSONBaseline(b *testing.B) {
	data := benchInput(b, "testdata/canonical/view.json")
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		var ev AccessEvent
		if err := json.Unmarshal(data, &ev); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCSVReader reads the iso_csv sample's first data row over and
// over (rows per second of a CSV export).
func BenchmarkCSVReader(b *testing.B) {
	m, err := LoadCSVMapping("testdata/csv/iso_csv/mapping.yaml")
	if err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile("testdata/csv/iso_csv/export.csv")
	if err != nil {
		b.Fatal(err)
	}
	lines := bytes.SplitAfter(raw, []byte("\n"))
	var buf bytes.Buffer
	buf.Write(lines[0])
	for range 1000 {
		buf.Write(lines[1])
	}
	data := buf.Bytes()
	b.SetBytes(int64(len(data)))
	b.ReportAllocs()
	for b.Loop() {
		r, err := NewCSVReader(bytes.NewReader(data), m)
		if err != nil {
			b.Fatal(err)
		}
		for range 1000 {
			if _, _, err := r.Next(); err != nil {
				b.Fatal(err)
			}
		}
	}
}
