package detectors_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestVocabularyDefaultsMatchCommonSpellings(t *testing.T) {
	v := detectors.DefaultVocabulary()
	for _, tc := range []struct {
		kind schemas.VocabularyKind
		name string
		want []detectors.Category
	}{
		{schemas.VocabularyDepartment, "ED", []detectors.Category{detectors.CategoryEmergency}},
		{schemas.VocabularyDepartment, "E.R.", []detectors.Category{detectors.CategoryEmergency}},
		{schemas.VocabularyDepartment, "Emergency Dept", []detectors.Category{detectors.CategoryEmergency}},
		{schemas.VocabularyDepartment, "EMERGENCY DEPARTMENT", []detectors.Category{detectors.CategoryEmergency}},
		{schemas.VocabularyDepartment, "emergency-department (north)", []detectors.Category{detectors.CategoryEmergency}},
		{schemas.VocabularyDepartment, "Health Information Mgmt", []detectors.Category{detectors.CategoryHIM}},
		{schemas.VocabularyDepartment, "Release of Information", []detectors.Category{detectors.CategoryHIM, detectors.CategoryReleaseOfInformation}},
		{schemas.VocabularyDepartment, "Med/Surg 4W", []detectors.Category{detectors.CategoryInpatientWard, detectors.CategoryClinical}},
		{schemas.VocabularyDepartment, "MICU", []detectors.Category{detectors.CategoryCriticalCare}},
		{schemas.VocabularyDepartment, "Billing & Coding", []detectors.Category{detectors.CategoryBillingCoding}},
		{schemas.VocabularyDepartment, "Patient Financial Svcs", []detectors.Category{detectors.CategoryBillingCoding}},
		{schemas.VocabularyDepartment, "Nursing Float Pool", []detectors.Category{detectors.CategoryClinical, detectors.CategoryFloatPool}},
		{schemas.VocabularyRole, "RN", []detectors.Category{detectors.CategoryClinical}},
		{schemas.VocabularyRole, "R.N.", []detectors.Category{detectors.CategoryClinical}},
		{schemas.VocabularyRole, "Resident", []detectors.Category{detectors.CategoryClinical}},
		{schemas.VocabularyRole, "HIM Coder", []detectors.Category{detectors.CategoryBillingCoding, detectors.CategoryHIM}},
		{schemas.VocabularyRole, "ROI Specialist", []detectors.Category{detectors.CategoryHIM, detectors.CategoryReleaseOfInformation}},
		{schemas.VocabularyRole, "ED Nurse", []detectors.Category{detectors.CategoryEmergency, detectors.CategoryClinical}},
		{schemas.VocabularyRole, "Charge Nurse", []detectors.Category{detectors.CategoryClinical}},
		{schemas.VocabularyRole, "Privacy Officer", []detectors.Category{detectors.CategoryQualityCompliance}},
		{schemas.VocabularyRole, "Research Coordinator", []detectors.Category{detectors.CategoryResearch}},
	} {
		m := v.Lookup(tc.kind, tc.name)
		got := m.Categories.List()
		if !m.Mapped() || strings.Join(cats(got), ",") != strings.Join(cats(tc.want), ",") {
			t.Errorf("%s %q = %v (%s), want %v", tc.kind, tc.name, got, m.Source, tc.want)
		}
	}
	for _, name := range []string{"Gift Shop", "7 East", ""} {
		if m := v.Department(name); m.Mapped() || m.Categories != 0 {
			t.Errorf("department %q = %+v, want unmapped", name, m)
		}
	}
}

func cats(cs []detectors.Category) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = string(c)
	}
	return out
}

func TestVocabularyLayers(t *testing.T) {
	v, err := detectors.NewVocabulary([]schemas.VocabularyEntry{
		{Kind: schemas.VocabularyDepartment, Name: "The Pit", Categories: []string{"emergency"}},
		{Kind: schemas.VocabularyDepartment, Name: "ED", Categories: []string{"clinic"}}, // the hospital's "ED" is an eye clinic
		{Kind: schemas.VocabularyRole, Name: "Volunteer", Categories: []string{}},
	}, detectors.VocabularyConfig{Departments: map[string][]string{"the-pit": {"emergency", "critical_care"}}})
	if err != nil {
		t.Fatal(err)
	}
	if m := v.Department("THE PIT"); m.Source != detectors.VocabularyFromConfig || !m.Categories.Has(detectors.CategoryCriticalCare) {
		t.Errorf("config does not override the hospital's entry: %+v", m)
	}
	if m := v.Department("ed"); m.Source != detectors.VocabularyFromHospital || m.Categories.Has(detectors.CategoryEmergency) {
		t.Errorf("the hospital's entry does not override the default: %+v", m)
	}
	if m := v.Role("volunteer"); !m.Mapped() || m.Categories != 0 {
		t.Errorf("an empty category list should map to none: %+v", m)
	}
	if _, err := detectors.NewVocabulary([]schemas.VocabularyEntry{{Kind: schemas.VocabularyRole, Name: "Wizard", Categories: []string{"magic"}}},
		detectors.VocabularyConfig{}); err == nil || !strings.Contains(err.Error(), `"Wizard"`) || !strings.Contains(err.Error(), `"magic"`) {
		t.Errorf("unknown category: err = %v", err)
	}
	cfg := detectors.DefaultReferenceConfig()
	cfg.Vocabulary.Roles = map[string][]string{"Wizard": {"magic"}, "ok": {"clinical"}}
	if err := schemas.UnderKey("reference", cfg.Validate()); err == nil || !strings.Contains(err.Error(), "reference.vocabulary.roles.Wizard: unknown category") {
		t.Errorf("config validation: %v", err)
	}
}

// TestVocabularyCases runs testdata/vocabulary/<case>/: the events and
// reference data (with the case's vocabulary.ndjson) through a
// VocabularyMonitor, and compares its unmapped report with unmapped.jsonl.
func TestVocabularyCases(t *testing.T) {
	dirs, err := filepath.Glob(filepath.Join("testdata", "vocabulary", "*", "events.jsonl"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no vocabulary cases (%v)", err)
	}
	for _, ev := range dirs {
		dir := filepath.Dir(ev)
		t.Run(filepath.Base(dir), func(t *testing.T) {
			users, patients, encounters := loadReference(t, filepath.Join(dir, "reference"))
			vocab, err := schemas.LoadVocabularyDir(filepath.Join(dir, "reference"))
			if err != nil {
				t.Fatal(err)
			}
			opts := detectors.DefaultReferenceOptions()
			opts.HashKey = caseHashKey
			idx, err := detectors.NewReferenceIndexWithVocabulary(users, patients, encounters, vocab, opts)
			if err != nil {
				t.Fatal(err)
			}
			m := detectors.NewVocabularyMonitor(detectors.NewReferenceHolder(idx).Load)
			for _, ev := range loadEvents(t, dir) {
				m.Observe(ev)
			}
			var got bytes.Buffer
			for _, u := range m.Unmapped() {
				line, _ := json.Marshal(u)
				got.Write(append(line, '\n'))
			}
			path := filepath.Join(dir, "unmapped.jsonl")
			if *update {
				if err := os.WriteFile(path, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("unmapped report differs from %s\n--- got\n%s--- want\n%s", path, got.Bytes(), want)
			}
		})
	}
}

func TestSuggestVocabulary(t *testing.T) {
	for _, tc := range []struct {
		kind schemas.VocabularyKind
		name string
		b    detectors.NameBehaviour
		want string
	}{
		// Behaviour alone: break-glass common, encounters short.
		{schemas.VocabularyDepartment, "The Pit", detectors.NameBehaviour{Events: 1000, BreakGlass: 40, Encounters: 200, MedianEncounter: 4 * time.Hour}, "emergency"},
		// Same name, break-glass rare: no emergency.
		{schemas.VocabularyDepartment, "The Pit", detectors.NameBehaviour{Events: 1000, BreakGlass: 2, Encounters: 200, MedianEncounter: 4 * time.Hour}, ""},
		// Long stays: an inpatient ward.
		{schemas.VocabularyDepartment, "7 East", detectors.NameBehaviour{Events: 1000, Encounters: 50, MedianEncounter: 80 * time.Hour}, "inpatient_ward"},
		// Mostly prints and exports: disclosure work ("records" also says HIM).
		{schemas.VocabularyRole, "Records Wrangler", detectors.NameBehaviour{Events: 400, Disclosures: 200}, "him,release_of_information"},
		// Spelling: a built-in abbreviation inside the name, a close spelling.
		{schemas.VocabularyRole, "PFS Representative", detectors.NameBehaviour{}, "billing_coding"},
		{schemas.VocabularyDepartment, "Emergancy Dept", detectors.NameBehaviour{}, "emergency"},
		// Nothing to go on.
		{schemas.VocabularyDepartment, "Gift Shop", detectors.NameBehaviour{Events: 10}, ""},
	} {
		e := detectors.SuggestVocabulary(tc.kind, tc.name, tc.b)
		if got := strings.Join(e.Categories, ","); got != tc.want {
			t.Errorf("%s %q %+v: %q (%s), want %q", tc.kind, tc.name, tc.b, got, e.Note, tc.want)
		}
		if e.Kind != tc.kind || e.Name != tc.name || !strings.HasPrefix(e.Note, "suggested: ") || e.Validate() != nil {
			t.Errorf("entry %+v", e)
		}
	}
}
