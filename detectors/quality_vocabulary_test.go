package detectors_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// The vocabulary half of the quality gate: the synthetic hospital spelled
// as a real export spells roles and departments (synth.ExportVocabulary:
// abbreviations, punctuation, different names at each facility, a float
// pool) with its mapping file must give exactly the recall and the noise
// of the canonical spelling. A mapping that is off shows up here as a
// failing test, not as silent alert noise.

// exportHospital is qualityHospital rewritten into the export vocabulary.
var exportHospital = sync.OnceValues(func() (*synth.Hospital, error) {
	h, err := qualityHospital()
	if err != nil {
		return nil, err
	}
	return h.WithVocabulary(synth.ExportVocabulary()), nil
})

// vocabularyScore is what the gate compares between vocabularies.
type vocabularyScore struct {
	incidents, found map[string]int
	// noise counts findings (last version per id) at medium or above, not
	// suppressed, that match no incident, by detector.
	noise    map[string]int
	userDays float64
	unmapped []detectors.UnmappedName
}

func (s vocabularyScore) noiseTotal() int {
	n := 0
	for _, c := range s.noise {
		n += c
	}
	return n
}

func (s vocabularyScore) String() string {
	var b strings.Builder
	inc, fnd := 0, 0
	for _, k := range synth.Kinds {
		inc += s.incidents[k]
		fnd += s.found[k]
	}
	fmt.Fprintf(&b, "recall %d/%d, noise %d findings at >= medium matching no incident = %.2f per 1 000 user-days (",
		fnd, inc, s.noiseTotal(), float64(s.noiseTotal())/s.userDays*1000)
	var parts []string
	for _, k := range synth.Kinds {
		if s.noise[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", k, s.noise[k]))
		}
	}
	b.WriteString(strings.Join(parts, ", ") + ")")
	return b.String()
}

// scoreVocabulary runs every detector at its defaults over h with the
// hospital's vocabulary entries and scores the findings.
func scoreVocabulary(t *testing.T, h *synth.Hospital, entries []schemas.VocabularyEntry, vc detectors.VocabularyConfig, only ...string) vocabularyScore {
	t.Helper()
	opts := detectors.DefaultReferenceOptions()
	opts.Vocabulary = vc
	opts.HashKey = []byte("quality-gate-hash-key-0123456789")
	idx, err := detectors.NewReferenceIndexWithVocabulary(h.Users, h.Patients, h.Encounters, entries, opts)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := detectors.FacilityLocations(h.TimeZones())
	if err != nil {
		t.Fatal(err)
	}
	holder := detectors.NewReferenceHolder(idx)
	factories := detectors.Registry()
	if len(only) > 0 {
		factories = slices.DeleteFunc(factories, func(f detectors.Factory) bool { return !slices.Contains(only, f.Name) })
	}
	eng, err := detectors.NewEngine(detectors.DefaultEngineConfig(detectors.Registry()), factories,
		detectors.Env{Reference: holder.Load, Location: loc})
	if err != nil {
		t.Fatal(err)
	}
	monitor := detectors.NewVocabularyMonitor(holder.Load)
	for i := range h.Events {
		monitor.Observe(&h.Events[i])
	}
	emitted := runEngine(t, eng, h.Events, true)
	findings := synth.MergeVersions(emitted)
	s := vocabularyScore{incidents: map[string]int{}, found: map[string]int{}, noise: map[string]int{},
		userDays: float64(len(h.Users) * h.Config.Days), unmapped: monitor.Unmapped()}
	incident := map[string]bool{}
	for i := range h.Truth {
		l := &h.Truth[i]
		if l.Benign {
			continue
		}
		s.incidents[l.Detector]++
		hit := false
		for _, f := range findings {
			if synth.Matches(&f.Finding, f.Events, l) {
				hit = true
				incident[f.FindingID] = true
			}
		}
		if hit {
			s.found[l.Detector]++
		}
	}
	for _, f := range findings {
		if !incident[f.FindingID] && !f.Suppressed && f.Severity.Rank() >= schemas.SeverityMedium.Rank() {
			s.noise[f.Detector]++
		}
	}
	return s
}

func TestQualityGateSameOnBothVocabularies(t *testing.T) {
	t.Parallel()
	canon, err := qualityHospital()
	if err != nil {
		t.Fatal(err)
	}
	export, err := exportHospital()
	if err != nil {
		t.Fatal(err)
	}
	// The rewrite must really change the names, or this test proves nothing.
	renamed := 0
	for i := range canon.Users {
		if canon.Users[i].Role != export.Users[i].Role || canon.Users[i].Department != export.Users[i].Department {
			renamed++
		}
	}
	if renamed < len(canon.Users)*9/10 {
		t.Fatalf("only %d of %d users renamed", renamed, len(canon.Users))
	}

	a := scoreVocabulary(t, canon, nil, detectors.VocabularyConfig{})
	b := scoreVocabulary(t, export, synth.ExportVocabulary().Entries, detectors.VocabularyConfig{})
	t.Logf("canonical vocabulary: %s", a)
	t.Logf("export vocabulary:    %s", b)
	for _, k := range synth.Kinds {
		if a.found[k] != a.incidents[k] {
			t.Errorf("canonical vocabulary: %s recall %d/%d", k, a.found[k], a.incidents[k])
		}
		if b.found[k] != a.found[k] || b.incidents[k] != a.incidents[k] {
			t.Errorf("%s: recall %d/%d on the export vocabulary, %d/%d on the canonical one", k, b.found[k], b.incidents[k], a.found[k], a.incidents[k])
		}
		if b.noise[k] != a.noise[k] {
			t.Errorf("%s: %d noise findings on the export vocabulary, %d on the canonical one", k, b.noise[k], a.noise[k])
		}
	}
	for _, s := range []vocabularyScore{a, b} {
		if len(s.unmapped) != 0 {
			t.Errorf("unmapped names: %+v", s.unmapped)
		}
	}

	// The comparison is sensitive: the same export with the mapping file
	// alone (no built-in defaults) misses emergency and billing/HIM names,
	// and the noise of the detectors that ask categories shows it (only
	// those run, to keep the test quick).
	c := scoreVocabulary(t, export, synth.ExportVocabulary().Entries, detectors.VocabularyConfig{DisableBuiltinDefaults: true},
		"break_glass", "deceased", "bulk_export")
	t.Logf("export vocabulary, mapping file without the built-in defaults (break_glass, deceased, bulk_export only): %s", c)
	if c.noiseTotal() <= a.noise["break_glass"]+a.noise["deceased"]+a.noise["bulk_export"] || len(c.unmapped) == 0 {
		t.Errorf("without the built-in defaults: noise %d, %d unmapped names; the gate cannot tell a wrong mapping", c.noiseTotal(), len(c.unmapped))
	}
}

// TestExportVocabularyWithoutMappingIsReported: without its mapping file,
// the export vocabulary leaves names unmapped, and the report names them
// with their counts.
func TestExportVocabularyWithoutMappingIsReported(t *testing.T) {
	t.Parallel()
	export, err := exportHospital()
	if err != nil {
		t.Fatal(err)
	}
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("quality-gate-hash-key-0123456789")
	idx, err := detectors.NewReferenceIndex(export.Users, export.Patients, export.Encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	holder := detectors.NewReferenceHolder(idx)
	monitor := detectors.NewVocabularyMonitor(holder.Load)
	for i := range export.Events {
		monitor.Observe(&export.Events[i])
	}
	got := map[string]detectors.UnmappedName{}
	for _, u := range monitor.Unmapped() {
		got[string(u.Kind)+"/"+u.Name] = u
	}
	for _, e := range synth.ExportVocabulary().Entries {
		u, ok := got[string(e.Kind)+"/"+e.Name]
		if !ok {
			t.Errorf("%s %q: not reported as unmapped (%d reported)", e.Kind, e.Name, len(got))
			continue
		}
		if u.Events == 0 && u.ReferenceRecords == 0 {
			t.Errorf("%s %q reported without counts", e.Kind, e.Name)
		}
	}
	var names []string
	for k := range got {
		names = append(names, k)
	}
	slices.Sort(names)
	t.Logf("unmapped without the mapping file: %s", strings.Join(names, ", "))
}
