package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestReplayExportVocabulary: the short demo's hospital spelled as a real
// export spells it gives the canonical spelling's findings (ids,
// severities) once its vocabulary.ndjson is in the reference directory;
// without it, replay lists the unmapped names with their counts, and
// `vocabulary suggest` proposes an entry for each.
func TestReplayExportVocabulary(t *testing.T) {
	canon := genHospital(t, "canonical")
	export := t.TempDir()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"gen", "--out", export, "--vocabulary", "export", "--days", "9", "--warmup-days", "8",
		"--users", "120", "--seed", "20261026"}, &out, &errOut); err != nil {
		t.Fatalf("gen: %v\n%s", err, errOut.String())
	}
	replayFindings := func(dir, ref string) (map[string]string, string) {
		t.Helper()
		o := filepath.Join(t.TempDir(), "findings.ndjson")
		summary, stderr, err := runReplayCmd(t, "--events", filepath.Join(dir, synth.EventsFile), "--reference", ref, "--out", o)
		if err != nil {
			t.Fatalf("%v\n%s", err, stderr)
		}
		raw, err := os.ReadFile(o)
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
			var f schemas.Finding
			if err := json.Unmarshal([]byte(line), &f); err != nil {
				t.Fatal(err)
			}
			got[f.FindingID] = string(f.Severity)
		}
		return got, summary
	}
	a, sa := replayFindings(canon, filepath.Join(canon, "reference"))
	b, sb := replayFindings(export, filepath.Join(export, "reference"))
	if len(a) < 10 || len(a) != len(b) {
		t.Fatalf("%d findings on the canonical spelling, %d on the export one", len(a), len(b))
	}
	for id, sev := range a {
		if b[id] != sev {
			t.Errorf("finding %s: %s on the canonical spelling, %q on the export one", id, sev, b[id])
		}
	}
	for _, s := range []string{sa, sb} {
		if !strings.Contains(s, "vocabulary: every role and department name seen maps to a category") {
			t.Errorf("summary:\n%s", s)
		}
	}

	// Without the mapping file.
	bare := t.TempDir()
	for _, f := range []string{schemas.UsersFile, schemas.PatientsFile, schemas.EncountersFile} {
		raw, err := os.ReadFile(filepath.Join(export, "reference", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(bare, f), raw, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, s := replayFindings(export, bare)
	entries := synth.ExportVocabulary().Entries
	for _, e := range entries {
		if !strings.Contains(s, `"`+e.Name+`"`) {
			t.Errorf("the unmapped report does not name %s %q:\n%s", e.Kind, e.Name, s)
		}
	}
	out.Reset()
	errOut.Reset()
	if err := run(context.Background(), []string{"vocabulary", "suggest", "--events", filepath.Join(export, synth.EventsFile), "--reference", bare},
		&out, &errOut); err != nil {
		t.Fatalf("suggest: %v\n%s", err, errOut.String())
	}
	got, err := schemas.LoadVocabulary(&out) // the output is in the mapping file's format
	if err != nil {
		t.Fatalf("suggest output is not a vocabulary file: %v", err)
	}
	byName := map[string]schemas.VocabularyEntry{}
	for _, e := range got {
		byName[e.Name] = e
	}
	for _, e := range entries {
		if _, ok := byName[e.Name]; !ok {
			t.Errorf("no proposal for %s %q", e.Kind, e.Name)
		}
	}
	if c := strings.Join(byName["5 North"].Categories, ","); c != "inpatient_ward" {
		t.Errorf(`proposal for "5 North": %q (%s), want inpatient_ward (from its encounters)`, c, byName["5 North"].Note)
	}
	if len(got) != len(entries) {
		t.Errorf("%d proposals, want %d (only the unmapped names)", len(got), len(entries))
	}
}

// TestUnmappedMetricAndReadyDetail: the metric keeps its name label
// bounded (the 25 most frequent names, the rest under "(other)") and the
// /readyz detail lists the most frequent names.
func TestUnmappedMetricAndReadyDetail(t *testing.T) {
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("vocabulary-test-key-0123456789")
	idx, err := detectors.NewReferenceIndex(nil, nil, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	m := detectors.NewVocabularyMonitor(detectors.NewReferenceHolder(idx).Load)
	for i := range 40 {
		for range i + 1 {
			m.Observe(&schemas.AccessEvent{UserRole: "RN", UserDepartment: fmt.Sprintf("Unit %02d", i)})
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(vocabularyCollector{m})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	series := map[string]int{}
	var other float64
	for _, mf := range mfs {
		series[mf.GetName()] = len(mf.GetMetric())
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "name" && l.GetValue() == "(other)" {
					other = mt.GetGauge().GetValue()
				}
			}
			if mf.GetName() == "ehrwatch_vocabulary_unmapped_names" && mt.GetLabel()[0].GetValue() == "department" && mt.GetGauge().GetValue() != 40 {
				t.Errorf("unmapped department names = %v, want 40", mt.GetGauge().GetValue())
			}
		}
	}
	if series["ehrwatch_vocabulary_unmapped_name_events"] != maxUnmappedSeries+1 {
		t.Errorf("%d name series, want %d + (other)", series["ehrwatch_vocabulary_unmapped_name_events"], maxUnmappedSeries)
	}
	if other != 15*16/2 { // units 00..14 have 1..15 events
		t.Errorf("(other) = %v, want %d", other, 15*16/2)
	}
	d := unmappedDetail(m)
	if !strings.HasPrefix(d, "40 role/department name(s) map to no category") || !strings.Contains(d, `department "Unit 39" (40 events)`) {
		t.Errorf("detail = %q", d)
	}
	if strings.Contains(d, "RN") {
		t.Errorf("detail lists a mapped name: %q", d)
	}
}
