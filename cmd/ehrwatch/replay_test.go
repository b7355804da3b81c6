package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
)

// genHospital writes the short demo's hospital with `ehrwatch gen`.
func genHospital(t *testing.T, format string) string {
	t.Helper()
	dir := t.TempDir()
	o := shortDemo()
	args := []string{"gen", "--out", dir, "--format", format, "--days", "9", "--warmup-days", "8", "--users", "120", "--seed", "20261026"}
	if o.days != 9 || o.warmup != 8 || o.users != 120 || o.seed != 20261026 {
		t.Fatal("shortDemo changed; update genHospital")
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("gen: %v\n%s", err, errOut.String())
	}
	return dir
}

func runReplayCmd(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err = run(context.Background(), append([]string{"replay"}, args...), &out, &errOut)
	return out.String(), errOut.String(), err
}

func TestReplayCanonicalAndFHIRGiveIdenticalFindings(t *testing.T) {
	var outputs [2][]byte
	for i, format := range []string{"canonical", "fhir"} {
		dir := genHospital(t, format)
		out := filepath.Join(dir, "findings.ndjson")
		summary, stderr, err := runReplayCmd(t, "--events", filepath.Join(dir, synth.EventsFile),
			"--reference", filepath.Join(dir, "reference"), "--out", out)
		if err != nil {
			t.Fatalf("%s: %v\n%s", format, err, stderr)
		}
		if !strings.Contains(summary, "replayed ") || !strings.Contains(summary, "allocs/event") ||
			strings.Contains(summary, "bad lines") || strings.Contains(summary, "warning") {
			t.Errorf("%s summary:\n%s", format, summary)
		}
		raw, err := os.ReadFile(out)
		if err != nil {
			t.Fatal(err)
		}
		outputs[i] = raw
	}
	if len(outputs[0]) == 0 || bytes.Count(outputs[0], []byte("\n")) < 10 {
		t.Fatalf("too few findings to compare:\n%s", outputs[0])
	}
	if !bytes.Equal(outputs[0], outputs[1]) {
		t.Error("replay of the FHIR rendering gives different findings than the canonical one")
	}
}

// TestReplayMatchesThePipeline: the demo's pipeline (consumer group, one
// engine per partition, the peer stage shared by them) on 3 partitions
// stores exactly the finding versions replay --partitions 3 writes.
func TestReplayMatchesThePipeline(t *testing.T) {
	o := shortDemo()
	o.out, o.quiet = t.TempDir(), true
	var stdout, stderr bytes.Buffer
	if _, err := demo(context.Background(), o, &stdout, &stderr); err != nil {
		t.Fatalf("demo: %v\n%s", err, stderr.String())
	}
	pipelineLines := sortedLines(t, filepath.Join(o.out, "findings.ndjson"))

	dir := genHospital(t, "canonical")
	out := filepath.Join(dir, "findings.ndjson")
	if _, errOut, err := runReplayCmd(t, "--events", filepath.Join(dir, synth.EventsFile), "--reference", filepath.Join(dir, "reference"),
		"--partitions", "3", "--out", out); err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	replayLines := sortedLines(t, out)
	if len(replayLines) == 0 {
		t.Fatal("no findings")
	}
	if !slices.Equal(pipelineLines, replayLines) {
		t.Errorf("replay with --partitions 3 found %d finding versions, the pipeline on 3 partitions %d; they differ",
			len(replayLines), len(pipelineLines))
	}
}

// TestReplayFindingsIndependentOfPartitions: with the peers judged by the
// whole peer group (the default --peers group), replay on 1, 4 and 12
// partitions writes the same findings, every version of them, whatever
// partition saw which user; with --peers partition (each engine's own
// users, as ehrwatch run compares them today) the same stream gives
// different volume and break_glass findings on 1 and 12 partitions, so the
// hospital does exercise the peer comparisons.
func TestReplayFindingsIndependentOfPartitions(t *testing.T) {
	dir := genHospital(t, "canonical")
	replay := func(n int, peers string) []string {
		out := filepath.Join(t.TempDir(), "findings.ndjson")
		if _, errOut, err := runReplayCmd(t, "--events", filepath.Join(dir, synth.EventsFile), "--reference", filepath.Join(dir, "reference"),
			"--partitions", strconv.Itoa(n), "--peers", peers, "--out", out); err != nil {
			t.Fatalf("replay --partitions %d --peers %s: %v\n%s", n, peers, err, errOut)
		}
		return sortedLines(t, out)
	}
	one := replay(1, "group")
	count := func(lines []string, detector, fact string) int {
		n := 0
		for _, l := range lines {
			if strings.Contains(l, `"detector":"`+detector+`"`) && strings.Contains(l, fact) {
				n++
			}
		}
		return n
	}
	if v, bg := count(one, "volume", ""), count(one, "break_glass", `"peer_mean"`); v < 5 || bg < 3 {
		t.Fatalf("too few peer comparisons to check: %d volume findings, %d break_glass findings compared with peers", v, bg)
	}
	for _, n := range []int{4, 12} {
		if got := replay(n, "group"); !slices.Equal(got, one) {
			t.Errorf("--partitions %d wrote %d finding versions, --partitions 1 %d; they differ", n, len(got), len(one))
		}
	}
	if slices.Equal(replay(1, "partition"), replay(12, "partition")) {
		t.Error("--peers partition: 1 and 12 partitions give the same findings; the stream does not exercise the peer comparison")
	}
}

func sortedLines(t *testing.T, path string) []string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	slices.Sort(lines)
	return lines
}

func TestReplayBadLines(t *testing.T) {
	dir := genHospital(t, "canonical")
	raw, err := os.ReadFile(filepath.Join(dir, synth.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	good := strings.SplitAfter(string(raw), "\n")[:200]
	const secret = "PHI-NAME-Zebedee"
	var in strings.Builder
	in.WriteString(good[0])
	in.WriteString(`{"event_id":"x","patient_id":"` + secret + `"}` + "\n")                 // line 2: missing fields
	in.WriteString("not json " + secret + "\n")                                             // line 3: syntax
	in.WriteString("\n")                                                                    // line 4: blank, ignored
	in.WriteString(`{"resourceType":"Patient","name":"` + secret + `"}` + "\n")             // line 5: not an AuditEvent
	in.WriteString(`{"` + strings.Repeat("a", 300<<10) + `":"` + secret + `"}` + "\n")      // line 6: too large
	in.WriteString(strings.Replace(good[1], `"event_time":"2026`, `"event_time":"1026`, 1)) // line 7: bad time
	for _, l := range good[2:] {
		in.WriteString(l)
	}
	events := filepath.Join(t.TempDir(), "export.ndjson")
	if err := os.WriteFile(events, []byte(in.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	args := []string{"--events", events, "--reference", filepath.Join(dir, "reference"), "--facilities", filepath.Join(dir, synth.FacilitiesFile)}

	stdout, stderr, err := runReplayCmd(t, args...)
	if err != nil {
		t.Fatalf("replay without --strict failed: %v\n%s", err, stderr)
	}
	for _, want := range []string{"export.ndjson:2: missing_field", "export.ndjson:3: wrong_type", "export.ndjson:5: unsupported_format",
		"export.ndjson:6: too_large", "export.ndjson:7: invalid_time", "bad lines: 5 of 204 skipped", "replayed 199 events"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr)
		}
	}
	if strings.Contains(stderr, "export.ndjson:4") {
		t.Error("a blank line was reported")
	}
	if strings.Contains(stdout+stderr, secret) {
		t.Error("replay echoed the content of a bad line")
	}

	_, stderr, err = runReplayCmd(t, append(args, "--strict", "--out", filepath.Join(t.TempDir(), "f.ndjson"))...)
	if err == nil || exitCode(err) != 1 || !strings.Contains(err.Error(), "5 line(s)") {
		t.Errorf("--strict: err %v, want a failure naming 5 lines\n%s", err, stderr)
	}
}

func TestReplayFlags(t *testing.T) {
	dir := t.TempDir()
	for _, args := range [][]string{
		{},
		{"--events", "x"},
		{"--events", "x", "--reference", dir, "--partitions", "0"},
		{"--events", "x", "--reference", dir, "--partitioner", "crc32"},
		{"--events", "x", "--reference", dir, "--tz", "nyc"},
	} {
		_, _, err := runReplayCmd(t, args...)
		if exitCode(err) != 2 {
			t.Errorf("%v: err %v, want a usage error", args, err)
		}
	}
	if _, _, err := runReplayCmd(t, "--events", filepath.Join(dir, "missing.ndjson"), "--reference", dir); err == nil {
		t.Error("missing reference data accepted")
	}
}

func TestReplayConfigFile(t *testing.T) {
	dir := genHospital(t, "canonical")
	events, ref := filepath.Join(dir, synth.EventsFile), filepath.Join(dir, "reference")
	// Detection settings as `ehrwatch run` reads them: only the vip and
	// terminated detectors; the facilities' zones from the reference
	// section (no facilities.ndjson next to the events).
	cfg := filepath.Join(t.TempDir(), "ehrwatch.yaml")
	yaml := `detection:
  detectors:
    break_glass: {enabled: false}
    self_access: {enabled: false}
    family: {enabled: false}
    coworker: {enabled: false}
    deceased: {enabled: false}
    volume: {enabled: false}
    bulk_export: {enabled: false}
    off_hours: {enabled: false}
reference:
  facilities: {nyc: America/New_York, chi: America/Chicago}
`
	if err := os.WriteFile(cfg, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	moved := filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.Rename(events, moved); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "findings.ndjson")
	summary, stderr, err := runReplayCmd(t, "--events", moved, "--reference", ref, "--config", cfg, "--out", out)
	if err != nil {
		t.Fatalf("replay: %v\n%s", err, stderr)
	}
	if strings.Contains(summary, "warning") {
		t.Errorf("facility zones from the config were not used:\n%s", summary)
	}
	for _, line := range sortedLines(t, out) {
		if !strings.Contains(line, `"detector":"vip"`) && !strings.Contains(line, `"detector":"terminated"`) {
			t.Fatalf("finding of a disabled detector: %s", line)
		}
	}
	// Without any zone, replay says which facilities it took as UTC.
	summary, _, err = runReplayCmd(t, "--events", moved, "--reference", ref, "--out", out)
	if err != nil || !strings.Contains(summary, "warning: facility chi has no time zone") {
		t.Errorf("err %v; summary lacks the missing-zone warning:\n%s", err, summary)
	}

	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("detection:\n  detectors:\n    vip: {severty: high}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := runReplayCmd(t, "--events", moved, "--reference", ref, "--config", bad); err == nil ||
		!strings.Contains(err.Error(), "severty") {
		t.Errorf("bad config: err %v, want the unknown key named", err)
	}
}
