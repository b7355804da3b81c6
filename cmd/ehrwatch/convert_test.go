package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// roundTripMapping maps every canonical field from a CSV export.
const roundTripMapping = `delimiter: ","
time_format: rfc3339
columns:
  event_id: id
  event_time: when
  logged_time: logged
  source: system
  facility_id: site
  user_id: login
  user_role: role
  user_department: dept
  workstation_id: ws
  client_ip: ip
  patient_id: mrn
  encounter_id: visit
  action: what
  resource: object
  break_glass: btg
  break_glass_reason: btg_reason
  outcome: result
break_glass_values: ["true"]
`

// writeCSVExport renders a canonical events file as a CSV export with the
// header of roundTripMapping, the way an EHR's reporting database would.
func writeCSVExport(t *testing.T, events, out string) int {
	t.Helper()
	f, err := os.Open(events)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var buf bytes.Buffer
	w := csv.NewWriter(&buf)
	w.Write([]string{"id", "when", "logged", "system", "site", "login", "role", "dept", "ws", "ip", "mrn", "visit", "what", "object", "btg", "btg_reason", "result"})
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		ev, err := schemas.DecodeEvent(sc.Bytes())
		if err != nil {
			t.Fatal(err)
		}
		logged := ""
		if ev.LoggedTime != nil {
			logged = ev.LoggedTime.Format(time.RFC3339Nano)
		}
		w.Write([]string{ev.EventID, ev.EventTime.Format(time.RFC3339Nano), logged, ev.Source, ev.FacilityID, ev.UserID, ev.UserRole,
			ev.UserDepartment, ev.WorkstationID, ev.ClientIP, ev.PatientID, ev.EncounterID, string(ev.Action), ev.Resource,
			strconv.FormatBool(ev.BreakGlass), ev.BreakGlassReason, string(ev.Outcome)})
		n++
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if err := os.WriteFile(out, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return n
}

// TestCSVRoundTripGivesSameFindings: synthetic hospital → CSV export →
// `ehrwatch replay --csv-mapping` finds exactly what the replay of the
// canonical file finds, and `ehrwatch convert` turns the export back into
// the same events.
func TestCSVRoundTripGivesSameFindings(t *testing.T) {
	dir := genHospital(t, "canonical")
	events := filepath.Join(dir, synth.EventsFile)
	export := filepath.Join(dir, "export.csv")
	mapping := filepath.Join(dir, "mapping.yaml")
	n := writeCSVExport(t, events, export)
	if err := os.WriteFile(mapping, []byte(roundTripMapping), 0o644); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(dir, "reference")
	var findings [2][]byte
	for i, args := range [][]string{
		{"--events", events},
		{"--events", export, "--csv-mapping", mapping},
	} {
		out := filepath.Join(t.TempDir(), "findings.ndjson")
		summary, stderr, err := runReplayCmd(t, append(args, "--reference", ref, "--out", out)...)
		if err != nil {
			t.Fatalf("replay %v: %v\n%s", args, err, stderr)
		}
		if !strings.Contains(summary, "replayed "+strconv.Itoa(n)+" events") || strings.Contains(summary, "bad lines") {
			t.Errorf("replay %v summary:\n%s", args, summary)
		}
		if findings[i], err = os.ReadFile(out); err != nil {
			t.Fatal(err)
		}
	}
	if bytes.Count(findings[0], []byte("\n")) < 10 {
		t.Fatalf("too few findings to compare:\n%s", findings[0])
	}
	if !bytes.Equal(findings[0], findings[1]) {
		t.Error("replay of the CSV export gives different findings than the canonical file")
	}

	// convert: the export back to canonical events, equal one by one.
	converted := filepath.Join(t.TempDir(), "converted.ndjson")
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"convert", "--in", export, "--mapping", mapping, "--out", converted}, &stdout, &stderr); err != nil {
		t.Fatalf("convert: %v\n%s", err, stderr.String())
	}
	if !strings.Contains(stdout.String(), "converted "+strconv.Itoa(n)+" events") {
		t.Errorf("convert summary: %s", stdout.String())
	}
	orig, conv := readLines(t, events), readLines(t, converted)
	if len(orig) != len(conv) {
		t.Fatalf("convert wrote %d events, want %d", len(conv), len(orig))
	}
	for i := range orig {
		a, _ := schemas.DecodeEvent(orig[i])
		b, err := schemas.DecodeEvent(conv[i])
		if err != nil || !a.Equal(b) {
			t.Fatalf("event %d changed by the round trip (%v):\n%s\n%s", i, err, orig[i], conv[i])
		}
	}
}

// TestConvertReportsRowsWithoutContent: bad rows by line and class, not
// chart accesses by reason, nothing of the rows' content.
func TestConvertReportsRowsWithoutContent(t *testing.T) {
	const secret = "PHI-NAME-Zebedee"
	dir := t.TempDir()
	export := filepath.Join(dir, "export.csv")
	mapping := filepath.Join(dir, "mapping.yaml")
	rows := "id,when,site,login,mrn,what\n" +
		"e1,2026-03-01T08:00:00Z,f1,u1,MRN-1,view\n" +
		"e2,2026-03-01T08:00:00Z,f1,u1,,sign-in\n" + // line 3: ignored (mapping: ignore)
		"e3,2026-03-01T08:00:00Z,f1,u1," + secret + ",dance\n" + // line 4: unmapped action
		"e4,yesterday " + secret + ",f1,u1,MRN-1,view\n" + // line 5: bad time
		"e5,2026-03-01T08:00:00Z,f1,u1,MRN-1\n" // line 6: missing a field
	m := "time_format: rfc3339\ncolumns: {event_id: id, event_time: when, facility_id: site, user_id: login, patient_id: mrn, action: what}\nactions: {sign-in: ignore}\n"
	os.WriteFile(export, []byte(rows), 0o644)
	os.WriteFile(mapping, []byte(m), 0o644)
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"convert", "--in", export, "--mapping", mapping}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("convert: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{"export.csv:4: invalid_value (field action)", "export.csv:5: invalid_time (field event_time)",
		"export.csv:6: syntax", "converted 1 events from 5 lines", "not chart accesses: 1 of 5 skipped (ignored_action 1)",
		"bad lines: 3 of 5 skipped"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	if strings.Count(stdout.String(), "\n") != 1 || !strings.Contains(stdout.String(), `"event_id":"e1"`) {
		t.Errorf("stdout: %s", stdout.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), secret) {
		t.Error("convert echoed row content")
	}
	err = run(context.Background(), []string{"convert", "--in", export, "--mapping", mapping, "--strict", "--out", filepath.Join(dir, "o.ndjson")}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "3 line(s)") {
		t.Errorf("--strict: %v", err)
	}
}

// TestReplayHL7Examples replays every AuditEvent example HL7 publishes
// with FHIR R4 and R5 (deployments/dev/fhir-examples.sh), one per line:
// the chart accesses are replayed, the others counted as not chart
// accesses, and no line is bad. schemas' TestHL7AuditEventExamples checks
// each mapping.
func TestReplayHL7Examples(t *testing.T) {
	if testing.Short() {
		t.Skip("needs the HL7 example packages; skipped in -short mode")
	}
	src := os.Getenv("EHRDEV_FHIR_EXAMPLES")
	if src == "" {
		t.Fatal(`EHRDEV_FHIR_EXAMPLES is not set: run eval "$(deployments/dev/fhir-examples.sh env)" (downloads the HL7 example packages with npm into ~/.cache/ehrwatch)`)
	}
	files, _ := filepath.Glob(filepath.Join(src, "r[45]", "AuditEvent-*.json"))
	if len(files) != 22 {
		t.Fatalf("%d AuditEvent examples under %s, want 22", len(files), src)
	}
	var lines bytes.Buffer
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, raw); err != nil {
			t.Fatal(err)
		}
		lines.Write(append(compact.Bytes(), '\n'))
	}
	dir := t.TempDir()
	events := filepath.Join(dir, "hl7.ndjson")
	cfg := filepath.Join(dir, "ehrwatch.yaml")
	os.WriteFile(events, lines.Bytes(), 0o644)
	os.WriteFile(cfg, []byte("fhir:\n  source_facilities:\n    hl7connect.healthintersections.com.au: fac-cloud\n    \"*\": fac-other\n"), 0o644)
	ref := filepath.Join(dir, "reference")
	os.Mkdir(ref, 0o755)
	for _, f := range []string{"users.ndjson", "patients.ndjson", "encounters.ndjson"} {
		os.WriteFile(filepath.Join(ref, f), nil, 0o644)
	}
	summary, stderr, err := runReplayCmd(t, "--events", events, "--reference", ref, "--config", cfg, "--tz", "fac-cloud=UTC",
		"--out", filepath.Join(dir, "findings.ndjson"))
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	for _, want := range []string{"replayed 11 events",
		"not chart accesses: 11 of 22 skipped (authentication 4, no_patient 4, no_user 1, query_without_patient 2)"} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	if strings.Contains(summary+stderr, "bad lines") {
		t.Errorf("a HL7 example was rejected:\n%s%s", summary, stderr)
	}
}
