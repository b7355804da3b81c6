package detectors

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"sync"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Category is what the detectors reason with instead of a hospital's own
// role and department names: "emergency", "release_of_information", …
// A Vocabulary maps names to categories; a name may map to several.
type Category string

// The categories. Departments and roles use the same set: an "ED Nurse"
// role and an "Emergency Dept" department are both emergency.
const (
	CategoryEmergency            Category = "emergency"              // emergency department, trauma
	CategoryCriticalCare         Category = "critical_care"          // ICU, CCU, NICU, intensivists
	CategoryAnesthesia           Category = "anesthesia"             // anesthesiology, CRNAs
	CategoryInpatientWard        Category = "inpatient_ward"         // med/surg, telemetry, step-down
	CategoryClinic               Category = "clinic"                 // outpatient and ambulatory clinics
	CategoryClinical             Category = "clinical"               // direct patient care: physicians, nurses, specialties
	CategoryTherapy              Category = "therapy"                // rehabilitation, PT/OT/speech
	CategoryLaboratory           Category = "laboratory"             // lab, pathology, phlebotomy
	CategoryRadiology            Category = "radiology"              // imaging
	CategoryPharmacy             Category = "pharmacy"               // pharmacists and pharmacy technicians
	CategoryRegistration         Category = "registration"           // patient access, admitting, scheduling
	CategoryBillingCoding        Category = "billing_coding"         // billing, coding, revenue cycle
	CategoryHIM                  Category = "him"                    // health information management, medical records
	CategoryReleaseOfInformation Category = "release_of_information" // ROI: disclosing records on request
	CategoryResearch             Category = "research"               // research coordinators, clinical trials
	CategoryQualityCompliance    Category = "quality_compliance"     // quality, compliance, privacy, audit, risk
	CategoryITSupport            Category = "it_support"             // IT, help desk, EHR analysts
	CategoryDecedentAffairs      Category = "decedent_affairs"       // decedent affairs, morgue
	CategoryFloatPool            Category = "float_pool"             // staff who work in other departments' units
)

// Categories lists every category, in a fixed order.
var Categories = []Category{
	CategoryEmergency, CategoryCriticalCare, CategoryAnesthesia, CategoryInpatientWard, CategoryClinic,
	CategoryClinical, CategoryTherapy, CategoryLaboratory, CategoryRadiology, CategoryPharmacy,
	CategoryRegistration, CategoryBillingCoding, CategoryHIM, CategoryReleaseOfInformation, CategoryResearch,
	CategoryQualityCompliance, CategoryITSupport, CategoryDecedentAffairs, CategoryFloatPool,
}

// CategorySet is a set of categories (one bit per entry of Categories).
type CategorySet uint32

func categoryBit(c Category) (CategorySet, bool) {
	i := slices.Index(Categories, c)
	if i < 0 {
		return 0, false
	}
	return 1 << i, true
}

// NewCategorySet builds a set; unknown names are an error.
func NewCategorySet(names ...string) (CategorySet, error) {
	var s CategorySet
	var bad []string
	for _, n := range names {
		b, ok := categoryBit(Category(strings.TrimSpace(n)))
		if !ok {
			bad = append(bad, n)
			continue
		}
		s |= b
	}
	if len(bad) > 0 {
		return s, fmt.Errorf("unknown categor%s %s (known: %s)", plural(len(bad), "y", "ies"), quoteList(bad), CategoryNames())
	}
	return s, nil
}

func mustCategories(cs ...Category) CategorySet {
	var s CategorySet
	for _, c := range cs {
		b, ok := categoryBit(c)
		if !ok {
			panic("unknown category " + string(c))
		}
		s |= b
	}
	return s
}

// Has reports whether s holds c.
func (s CategorySet) Has(c Category) bool {
	b, ok := categoryBit(c)
	return ok && s&b != 0
}

// Intersects reports whether s and o share a category.
func (s CategorySet) Intersects(o CategorySet) bool { return s&o != 0 }

// List returns the categories in s, in the order of Categories.
func (s CategorySet) List() []Category {
	out := make([]Category, 0, bits.OnesCount32(uint32(s)))
	for i, c := range Categories {
		if s&(1<<i) != 0 {
			out = append(out, c)
		}
	}
	return out
}

// String renders the set as "emergency, critical_care", or "none".
func (s CategorySet) String() string {
	if s == 0 {
		return "none"
	}
	l := s.List()
	parts := make([]string, len(l))
	for i, c := range l {
		parts[i] = string(c)
	}
	return strings.Join(parts, ", ")
}

// CategoryNames lists the known categories, comma-separated.
func CategoryNames() string { return CategorySet(1<<len(Categories) - 1).String() }

// categoryList is a configuration list of category names.
type categoryList []string

// set validates the list; the error is a FieldError for key.
func (l categoryList) set(key string) (CategorySet, error) {
	s, err := NewCategorySet(l...)
	if err != nil {
		return 0, fieldErrorf(key, "%v", err)
	}
	return s, nil
}

// VocabularyConfig is the "reference.vocabulary" section: mappings that
// override the hospital's vocabulary file or table and the built-in
// defaults, name by name.
//
//	reference:
//	  vocabulary:
//	    disable_builtin_defaults: false
//	    roles: {"Charge RN": [clinical, inpatient_ward]}
//	    departments: {"5 North": [inpatient_ward]}
type VocabularyConfig struct {
	// DisableBuiltinDefaults turns the built-in mapping of common
	// spellings off (default false: on). Then only the hospital's entries
	// and Roles and Departments map names.
	DisableBuiltinDefaults bool `yaml:"disable_builtin_defaults"`
	// Roles maps role names to categories; an empty list means "no
	// category" (and stops the name being reported as unmapped).
	Roles map[string][]string `yaml:"roles"`
	// Departments maps department names to categories.
	Departments map[string][]string `yaml:"departments"`
}

// DefaultVocabularyConfig uses the built-in defaults and overrides nothing.
func DefaultVocabularyConfig() VocabularyConfig { return VocabularyConfig{} }

// Validate reports every unknown category, by key ("roles.Charge RN").
func (c VocabularyConfig) Validate() error {
	var errs []error
	for _, kv := range []struct {
		key string
		m   map[string][]string
	}{{"roles", c.Roles}, {"departments", c.Departments}} {
		for _, name := range sortedKeys(kv.m) {
			if NormalizeVocabularyName(name) == "" {
				errs = append(errs, fieldErrorf(kv.key+"."+name, "the name has no letters or digits"))
				continue
			}
			if _, err := categoryList(kv.m[name]).set(kv.key + "." + name); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// Where a name's categories came from.
const (
	VocabularyFromConfig   = "config"   // reference.vocabulary
	VocabularyFromHospital = "hospital" // vocabulary.ndjson or the vocabulary table
	VocabularyFromBuiltin  = "builtin"  // a built-in exact name
	VocabularyFromPhrase   = "phrase"   // built-in phrases found in the name
	VocabularyUnmapped     = "unmapped" // nothing covers the name
	vocabularyEmptyName    = "empty"    // no name at all
)

// VocabularyMatch is how a Vocabulary classified one name.
type VocabularyMatch struct {
	Categories CategorySet
	// Source is VocabularyFromConfig, …FromHospital, …FromBuiltin,
	// …FromPhrase or VocabularyUnmapped.
	Source string
}

// Mapped reports whether some rule covers the name (possibly with no
// category, when a person said so).
func (m VocabularyMatch) Mapped() bool {
	return m.Source != VocabularyUnmapped && m.Source != vocabularyEmptyName
}

// Vocabulary maps a hospital's role and department names to categories:
// first the configuration (reference.vocabulary), then the hospital's own
// entries (vocabulary.ndjson or the vocabulary table), then the built-in
// defaults (exact names, then well-known phrases found anywhere in the
// name, e.g. "emergency" in "Emergency Dept North"). Names are compared
// after NormalizeVocabularyName, so case, punctuation, "&"/"and"/"of" and
// common abbreviations ("Dept", "Mgmt", "Svcs") do not matter.
//
// A Vocabulary is immutable and safe for concurrent use; lookups of names
// seen before take one map read.
type Vocabulary struct {
	exact   [2]map[string]VocabularyMatch // by kind index: normalised name → match
	phrases [2][]vocabPhrase              // nil without built-in defaults
	cache   [2]sync.Map                   // raw name → VocabularyMatch
	cached  [2]boundedCount
}

type vocabPhrase struct {
	words []string
	cats  CategorySet
}

// boundedCount counts up to a limit, for the cache bound.
type boundedCount struct {
	mu sync.Mutex
	n  int
}

func (c *boundedCount) inc(limit int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n >= limit {
		return false
	}
	c.n++
	return true
}

// maxVocabularyCache bounds the memoised raw names per kind.
const maxVocabularyCache = 20000

func kindIndex(kind schemas.VocabularyKind) int {
	if kind == schemas.VocabularyDepartment {
		return 1
	}
	return 0
}

// NewVocabulary builds a vocabulary from the hospital's entries and the
// configuration. Unknown categories in entries are an error naming the
// entry's kind and name (role and department names are not patient data).
func NewVocabulary(entries []schemas.VocabularyEntry, cfg VocabularyConfig) (*Vocabulary, error) {
	if err := cfg.Validate(); err != nil {
		return nil, prefixErrors("vocabulary", err)
	}
	v := &Vocabulary{exact: [2]map[string]VocabularyMatch{{}, {}}}
	if !cfg.DisableBuiltinDefaults {
		for k := 0; k < 2; k++ {
			for _, d := range builtinExact[k] {
				for _, n := range d.names {
					v.exact[k][NormalizeVocabularyName(n)] = VocabularyMatch{Categories: d.cats, Source: VocabularyFromBuiltin}
				}
			}
			for _, d := range builtinPhrases[k] {
				for _, n := range d.names {
					v.phrases[k] = append(v.phrases[k], vocabPhrase{words: strings.Fields(NormalizeVocabularyName(n)), cats: d.cats})
				}
			}
		}
	}
	var errs []error
	for _, e := range entries {
		if err := e.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("vocabulary %s %q: %w", e.Kind, e.Name, err))
			continue
		}
		s, err := NewCategorySet(e.Categories...)
		if err != nil {
			errs = append(errs, fmt.Errorf("vocabulary %s %q: %w", e.Kind, e.Name, err))
			continue
		}
		v.exact[kindIndex(e.Kind)][NormalizeVocabularyName(e.Name)] = VocabularyMatch{Categories: s, Source: VocabularyFromHospital}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for k, m := range []map[string][]string{cfg.Roles, cfg.Departments} {
		for name, cats := range m {
			s, _ := NewCategorySet(cats...) // validated above
			v.exact[k][NormalizeVocabularyName(name)] = VocabularyMatch{Categories: s, Source: VocabularyFromConfig}
		}
	}
	return v, nil
}

// defaultVocabulary is the built-in vocabulary alone.
var defaultVocabulary = sync.OnceValue(func() *Vocabulary {
	v, err := NewVocabulary(nil, DefaultVocabularyConfig())
	if err != nil {
		panic(err)
	}
	return v
})

// DefaultVocabulary returns the built-in vocabulary.
func DefaultVocabulary() *Vocabulary { return defaultVocabulary() }

// Role classifies a role name.
func (v *Vocabulary) Role(name string) VocabularyMatch { return v.Lookup(schemas.VocabularyRole, name) }

// Department classifies a department name.
func (v *Vocabulary) Department(name string) VocabularyMatch {
	return v.Lookup(schemas.VocabularyDepartment, name)
}

// Lookup classifies a name of the given kind.
func (v *Vocabulary) Lookup(kind schemas.VocabularyKind, name string) VocabularyMatch {
	if name == "" {
		return VocabularyMatch{Source: vocabularyEmptyName}
	}
	k := kindIndex(kind)
	if m, ok := v.cache[k].Load(name); ok {
		return m.(VocabularyMatch)
	}
	m := v.classify(k, NormalizeVocabularyName(name))
	if v.cached[k].inc(maxVocabularyCache) {
		v.cache[k].Store(strings.Clone(name), m)
	}
	return m
}

func (v *Vocabulary) classify(k int, key string) VocabularyMatch {
	if key == "" {
		return VocabularyMatch{Source: VocabularyUnmapped}
	}
	if m, ok := v.exact[k][key]; ok {
		return m
	}
	words := strings.Fields(key)
	var s CategorySet
	for _, p := range v.phrases[k] {
		if containsWords(words, p.words) {
			s |= p.cats
		}
	}
	if s != 0 {
		return VocabularyMatch{Categories: s, Source: VocabularyFromPhrase}
	}
	return VocabularyMatch{Source: VocabularyUnmapped}
}

// containsWords reports whether phrase occurs in words as consecutive
// whole words.
func containsWords(words, phrase []string) bool {
	if len(phrase) == 0 || len(phrase) > len(words) {
		return false
	}
outer:
	for i := 0; i+len(phrase) <= len(words); i++ {
		for j := range phrase {
			if words[i+j] != phrase[j] {
				continue outer
			}
		}
		return true
	}
	return false
}

// UserCategories returns the categories of the event's user: those of
// their role and of their department (the event's, else the reference
// user's; see userRole and userDepartment).
func (v *Vocabulary) UserCategories(ev *schemas.AccessEvent, u *schemas.User) CategorySet {
	return v.Role(userRole(ev, u)).Categories | v.Department(userDepartment(ev, u)).Categories
}

// vocabularyWords expands abbreviations and drops filler words so that
// spellings of one name agree.
var vocabularyWords = map[string]string{
	"dept": "department", "dpt": "department", "depts": "department",
	"mgmt": "management", "mgt": "management", "mngmt": "management",
	"svc": "services", "svcs": "services", "srvcs": "services", "service": "services",
	"info": "information", "inf": "information",
	"spec": "specialist", "spclst": "specialist",
	"coord": "coordinator", "coordinatr": "coordinator",
	"tech": "technician", "techn": "technician", "technologist": "technician",
	"asst": "assistant", "admin": "administration", "administrative": "administration",
	"ctr": "center", "centre": "center", "hosp": "hospital",
	"rm": "room", "med": "medical", "medicine": "medical", "surgical": "surgery", "surg": "surgery",
	"lab": "laboratory", "labs": "laboratory", "rehab": "rehabilitation",
	"emerg": "emergency", "peds": "pediatrics", "paeds": "pediatrics", "paediatrics": "pediatrics",
	"onc": "oncology", "card": "cardiology", "cardio": "cardiology",
	"rad": "radiology", "radiol": "radiology", "pharm": "pharmacy", "rx": "pharmacy",
	"reg": "registration", "regis": "registration", "fin": "financial", "finance": "financial",
	"clin": "clinical", "crit": "critical",
}

var vocabularyFiller = map[string]bool{"and": true, "of": true, "the": true, "for": true}

// NormalizeVocabularyName lower-cases a role or department name, turns
// punctuation into word breaks (periods and apostrophes join: "R.N." is
// "rn"), expands common abbreviations ("Dept" → "department", "Mgmt" →
// "management", "Med/Surg" → "medical surgery") and drops "and", "of",
// "the" and "for", so "Health Information Mgmt", "HEALTH INFORMATION
// MANAGEMENT" and "Health-Information Management" agree.
func NormalizeVocabularyName(s string) string {
	s = strings.ReplaceAll(s, "&", " and ")
	s = strings.ReplaceAll(s, "_", " ")
	words := normalizedWords(s)
	out := words[:0]
	for _, w := range words {
		if r, ok := vocabularyWords[w]; ok {
			w = r
		}
		if vocabularyFiller[w] {
			continue
		}
		out = append(out, w)
	}
	return strings.Join(out, " ")
}

type vocabDefault struct {
	cats  CategorySet
	names []string
}

func vd(cats CategorySet, names ...string) vocabDefault {
	return vocabDefault{cats: cats, names: names}
}

var (
	cEmergency = mustCategories(CategoryEmergency)
	cCritical  = mustCategories(CategoryCriticalCare)
	cAnesth    = mustCategories(CategoryAnesthesia)
	cWard      = mustCategories(CategoryInpatientWard)
	cClinic    = mustCategories(CategoryClinic)
	cClinical  = mustCategories(CategoryClinical)
	cTherapy   = mustCategories(CategoryTherapy)
	cLab       = mustCategories(CategoryLaboratory)
	cRad       = mustCategories(CategoryRadiology)
	cPharm     = mustCategories(CategoryPharmacy)
	cReg       = mustCategories(CategoryRegistration)
	cBilling   = mustCategories(CategoryBillingCoding)
	cHIM       = mustCategories(CategoryHIM)
	cROI       = mustCategories(CategoryReleaseOfInformation)
	cResearch  = mustCategories(CategoryResearch)
	cQuality   = mustCategories(CategoryQualityCompliance)
	cIT        = mustCategories(CategoryITSupport)
	cDecedent  = mustCategories(CategoryDecedentAffairs)
	cFloat     = mustCategories(CategoryFloatPool)
)

// builtinExact are whole names (after normalisation), by kind (roles,
// departments). They cover abbreviations no phrase rule could guess.
var builtinExact = [2][]vocabDefault{
	{ // roles
		vd(cClinical, "rn", "lpn", "lvn", "cna", "md", "do", "np", "pa", "pa c", "aprn", "np c", "doctor", "provider",
			"attending", "hospitalist", "intern", "fellow", "medical assistant", "ma", "charge rn", "staff rn"),
		vd(cEmergency|cClinical, "ed rn", "er rn", "ed md", "er md", "ed np", "ed pa"),
		vd(cCritical|cClinical, "intensivist", "icu rn"),
		vd(cAnesth|cClinical, "crna", "anesthesiologist", "nurse anesthetist", "anesthetist"),
		vd(cRad|cClinical, "radiologist"),
		vd(cRad, "rt r", "x ray technician", "xray technician", "sonographer", "ct technician", "mri technician"),
		vd(cLab, "mt", "mls", "mlt", "phlebotomist", "histotechnician"),
		vd(cPharm, "rph", "pharmd", "cpht"),
		vd(cReg, "registrar", "scheduler", "admitting clerk", "unit clerk", "unit secretary", "front desk"),
		vd(cBilling, "biller", "coder", "cpc", "ccs", "revenue integrity analyst", "charge capture specialist"),
		vd(cHIM|cBilling, "him coder", "coding specialist"),
		vd(cHIM|cROI, "roi", "roi specialist", "roi clerk", "release information specialist", "release information clerk",
			"correspondence specialist", "disclosure specialist"),
		vd(cHIM, "rhia", "rhit", "medical records clerk", "him analyst", "him clerk", "him technician", "health information technician"),
		vd(cQuality, "privacy officer", "compliance officer", "auditor", "risk manager"),
		vd(cIT, "help desk", "helpdesk", "service desk", "analyst it", "ehr analyst", "epic analyst", "application analyst"),
		vd(cResearch, "crc", "research coordinator", "clinical research coordinator", "study coordinator"),
		vd(cDecedent, "decedent affairs", "morgue attendant", "diener"),
		vd(cTherapy|cClinical, "pt", "ot", "slp", "pta", "cota", "rt", "respiratory therapist"),
	},
	{ // departments
		vd(cEmergency, "ed", "er", "edu", "ped ed", "peds ed", "emergency room", "emergency department", "a e"),
		vd(cCritical, "icu", "micu", "sicu", "cvicu", "nicu", "picu", "ccu", "cticu", "neuro icu", "tsicu"),
		vd(cWard, "msu", "med surg", "medical surgery", "4w", "5n", "tele", "telemetry", "step down", "stepdown", "pcu", "obs"),
		vd(cAnesth, "or", "pacu", "pre op"),
		vd(cLab, "path", "blood bank"),
		vd(cPharm, "rx"),
		vd(cReg, "pas", "admitting", "scheduling"),
		vd(cBilling, "pfs", "cbo", "sbo", "pbs", "hb billing", "pb billing"),
		vd(cHIM, "him", "hims", "medical records", "mr", "his"),
		vd(cHIM|cROI, "roi", "release information", "correspondence"),
		vd(cQuality, "qi", "qa", "qm", "uqm"),
		vd(cIT, "is", "it", "ist", "ehr", "informatics"),
		vd(cFloat, "float pool", "float", "resource pool", "staffing pool", "nursing resource pool", "staffing office"),
	},
}

// builtinPhrases are words or word sequences that, found anywhere in a
// normalised name, give it categories (all matching phrases add up):
// "Emergency Dept North" → emergency, "Med/Surg 4W" → inpatient_ward.
var builtinPhrases = [2][]vocabDefault{
	{ // roles
		vd(cEmergency, "emergency", "ed", "er", "trauma", "rapid response", "paramedic"),
		vd(cCritical, "icu", "intensive care", "critical care", "intensivist"),
		vd(cAnesth, "anesthesia", "anesthesiology", "anesthesiologist", "crna"),
		vd(cClinical, "nurse", "rn", "lpn", "physician", "md", "doctor", "resident", "surgeon", "hospitalist",
			"practitioner", "physician assistant", "attending", "fellow", "nursing", "midwife", "cna"),
		vd(cTherapy|cClinical, "therapist", "therapy", "rehabilitation"),
		vd(cRad, "radiology", "radiologist", "imaging", "sonographer", "ultrasound", "x ray", "mri", "ct"),
		vd(cLab, "laboratory", "lab", "phlebotomy", "phlebotomist", "pathology", "pathologist", "histology"),
		vd(cPharm, "pharmacist", "pharmacy"),
		vd(cReg, "registration", "registrar", "admitting", "patient access", "scheduler", "scheduling", "clerk unit"),
		vd(cBilling, "billing", "biller", "coder", "coding", "revenue cycle", "financial services", "reimbursement", "collections"),
		vd(cHIM, "him", "health information", "medical records", "records"),
		vd(cROI|cHIM, "roi", "release information", "disclosure", "correspondence"),
		vd(cResearch, "research", "clinical trials", "study", "irb"),
		vd(cQuality, "quality", "compliance", "privacy", "audit", "auditor", "risk", "patient safety", "utilization review"),
		vd(cIT, "it", "help desk", "helpdesk", "service desk", "information technology", "informatics", "ehr", "epic"),
		vd(cDecedent, "decedent", "morgue", "bereavement"),
		vd(cFloat, "float", "resource pool", "travel", "traveler", "agency"),
	},
	{ // departments
		vd(cEmergency, "emergency", "ed", "er", "trauma"),
		vd(cCritical, "icu", "intensive care", "critical care", "ccu", "micu", "sicu", "nicu", "picu", "cvicu"),
		vd(cAnesth, "anesthesia", "anesthesiology", "perioperative", "operating room", "or", "pacu"),
		vd(cWard, "medical surgery", "ward", "telemetry", "step down", "inpatient", "floor", "observation"),
		vd(cClinic, "clinic", "clinics", "outpatient", "ambulatory", "primary care", "family medical", "internal medical", "practice"),
		vd(cClinical, "cardiology", "oncology", "pediatrics", "neurology", "obstetrics", "gynecology", "labor delivery",
			"maternity", "surgery", "orthopedics", "psychiatry", "behavioral health", "nephrology", "pulmonology",
			"gastroenterology", "urology", "dermatology", "hematology", "infusion", "dialysis", "wound", "hospitalist",
			"nursing", "cardiac", "neonatal"),
		vd(cTherapy, "rehabilitation", "therapy", "physical therapy", "occupational therapy", "speech"),
		vd(cLab, "laboratory", "pathology", "phlebotomy", "blood bank", "microbiology"),
		vd(cRad, "radiology", "imaging", "diagnostic imaging", "x ray", "mri", "ultrasound", "nuclear"),
		vd(cPharm, "pharmacy"),
		vd(cReg, "registration", "patient access", "admitting", "admissions", "scheduling", "front desk"),
		vd(cBilling, "billing", "coding", "revenue cycle", "patient financial services", "financial services",
			"business office", "patient accounts", "reimbursement"),
		vd(cHIM, "him", "health information", "medical records", "records"),
		vd(cROI|cHIM, "roi", "release information", "correspondence", "disclosure"),
		vd(cResearch, "research", "clinical trials", "irb"),
		vd(cQuality, "quality", "compliance", "privacy", "audit", "risk management", "patient safety", "utilization review"),
		vd(cIT, "it", "information technology", "information services", "information systems", "informatics", "help desk", "ehr"),
		vd(cDecedent, "decedent", "morgue", "bereavement"),
		vd(cFloat, "float", "resource pool", "staffing pool"),
	},
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

func quoteList(xs []string) string {
	q := make([]string, len(xs))
	for i, x := range xs {
		q[i] = fmt.Sprintf("%q", x)
	}
	return strings.Join(q, ", ")
}

// KnownVocabulary returns the entries whose categories are all known
// categories, in order, and how many were left out. Loaders of stored
// vocabulary rows (the vocabulary table) skip and count those, under
// "vocabulary: categories", instead of failing the whole load, as
// NewVocabulary would.
func KnownVocabulary(entries []schemas.VocabularyEntry) (known []schemas.VocabularyEntry, unknown int) {
	known = make([]schemas.VocabularyEntry, 0, len(entries))
	for _, e := range entries {
		if _, err := NewCategorySet(e.Categories...); err != nil {
			unknown++
			continue
		}
		known = append(known, e)
	}
	return known, unknown
}
