package detectors

import (
	"crypto/hmac"
	"crypto/sha256"
	"errors"
	"hash"
	"math"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ReferenceOptions configures how a ReferenceIndex is built.
type ReferenceOptions struct {
	// CareSlackBefore widens every encounter backwards: an access up to this
	// long before the encounter starts is explained by it (pre-admission
	// work-up, scheduling). Default 24h.
	CareSlackBefore time.Duration `yaml:"care_slack_before"`
	// CareSlackAfter widens every encounter forwards: an access up to this
	// long after it ends is explained (discharge summaries, results, coding).
	// Open encounters never end. Default 24h.
	CareSlackAfter time.Duration `yaml:"care_slack_after"`
	// HashKey is the secret HMAC-SHA256 key for last-name and address
	// tokens; at least 16 bytes. It comes from a secret store, never from
	// the configuration file.
	HashKey []byte `yaml:"-"`
	// Vocabulary overrides the mapping of role and department names to
	// categories (see Vocabulary).
	Vocabulary VocabularyConfig `yaml:"vocabulary"`
}

// DefaultReferenceOptions returns 24h of slack on both sides and no key.
func DefaultReferenceOptions() ReferenceOptions {
	return ReferenceOptions{CareSlackBefore: 24 * time.Hour, CareSlackAfter: 24 * time.Hour}
}

// MinHashKeyLen is the shortest HMAC key a ReferenceIndex accepts.
const MinHashKeyLen = 16

// Validate checks the options; keys are relative to the "reference" section.
func (o ReferenceOptions) Validate() error {
	var errs []error
	errs = append(errs, nonNegative("care_slack_before", o.CareSlackBefore), nonNegative("care_slack_after", o.CareSlackAfter))
	if len(o.HashKey) < MinHashKeyLen {
		errs = append(errs, fieldErrorf("hash_key", "must be at least %d bytes (got %d)", MinHashKeyLen, len(o.HashKey)))
	}
	if err := o.Vocabulary.Validate(); err != nil {
		errs = append(errs, prefixErrors("vocabulary", err))
	}
	return errors.Join(errs...)
}

// Token is a keyed hash (the first 16 bytes of HMAC-SHA256) of a normalised
// demographic value. Equal tokens mean equal normalised values under the
// same key; the zero Token means "value unknown" and never matches.
type Token [16]byte

// IsZero reports whether the token is absent.
func (t Token) IsZero() bool { return t == Token{} }

// DemographicTokens are the keyed hashes the family detector compares.
type DemographicTokens struct {
	LastName Token // of NormalizeLastName(last name)
	Address  Token // of NormalizeAddress(address)
}

// DemographicHasher is implemented by Reference implementations that hold
// demographic tokens (ReferenceIndex does). The family detector uses it
// when present; it never needs raw names or addresses.
type DemographicHasher interface {
	UserTokens(userID string) (DemographicTokens, bool)
	PatientTokens(patientID string) (DemographicTokens, bool)
}

// ReferenceStats counts what a ReferenceIndex holds and what it skipped.
type ReferenceStats struct {
	Users      int // distinct users indexed
	Patients   int // distinct patients indexed
	Encounters int // distinct valid encounters indexed
	// Duplicates counts users, patients and encounters whose id appeared
	// more than once; the last occurrence wins.
	Duplicates int
	// InvalidEncounters counts encounters skipped for having no id, no
	// patient, no start, or an end before the start.
	InvalidEncounters int
}

// ReferenceIndex is an immutable, in-memory Reference built from users,
// patients and encounters. Build a new one and swap it into a
// ReferenceHolder to refresh; lookups take no locks.
//
// To keep raw demographics out of the running process, the index stores
// users and patients with their first and last names, addresses and dates of
// birth cleared; it keeps only keyed tokens of the normalised last name and
// address (see UserTokens).
type ReferenceIndex struct {
	users      map[string]*schemas.User
	patients   map[string]*schemas.Patient
	userTok    map[string]DemographicTokens
	patientTok map[string]DemographicTokens
	care       map[string]*patientCare
	// employeeOf and patientOf link a person's account and chart, read
	// from both sides: patients.employee_user_id and users.patient_id.
	employeeOf map[string]string // patient id → user id
	patientOf  map[string]string // user id → patient id
	vocab      *Vocabulary
	// refNames counts the records (users; encounters for departments)
	// naming each role and department, by kind index.
	refNames  [2]map[string]int
	slackB    int64 // ns
	slackA    int64 // ns
	slackText string
	stats     ReferenceStats
	kinds     patientKinds // shares of patient kinds, for chance ranking (chance.go)
}

var (
	_ Reference         = (*ReferenceIndex)(nil)
	_ DemographicHasher = (*ReferenceIndex)(nil)
)

// emptyReferenceIndex answers every question with "unknown".
var emptyReferenceIndex = &ReferenceIndex{slackText: "24h before its start to 24h after its end", vocab: DefaultVocabulary()}

// NewReferenceIndex builds an index with the built-in vocabulary (and
// opts.Vocabulary); see NewReferenceIndexWithVocabulary.
func NewReferenceIndex(users []schemas.User, patients []schemas.Patient, encounters []schemas.Encounter, opts ReferenceOptions) (*ReferenceIndex, error) {
	return NewReferenceIndexWithVocabulary(users, patients, encounters, nil, opts)
}

// NewReferenceIndexWithVocabulary builds an index. The input slices are
// not retained. Duplicate ids keep their last occurrence; invalid
// encounters are skipped; both are counted in Stats. Invalid options and
// vocabulary entries with unknown categories are an error.
func NewReferenceIndexWithVocabulary(users []schemas.User, patients []schemas.Patient, encounters []schemas.Encounter,
	vocabulary []schemas.VocabularyEntry, opts ReferenceOptions) (*ReferenceIndex, error) {
	if err := opts.Validate(); err != nil {
		return nil, prefixErrors("reference", err)
	}
	vocab, err := NewVocabulary(vocabulary, opts.Vocabulary)
	if err != nil {
		return nil, err
	}
	x := &ReferenceIndex{
		vocab:      vocab,
		employeeOf: map[string]string{},
		patientOf:  map[string]string{},
		refNames:   [2]map[string]int{{}, {}},
		users:      make(map[string]*schemas.User, len(users)),
		patients:   make(map[string]*schemas.Patient, len(patients)),
		userTok:    make(map[string]DemographicTokens, len(users)),
		patientTok: make(map[string]DemographicTokens, len(patients)),
		care:       make(map[string]*patientCare),
		slackB:     int64(opts.CareSlackBefore),
		slackA:     int64(opts.CareSlackAfter),
		slackText:  formatDuration(opts.CareSlackBefore) + " before its start to " + formatDuration(opts.CareSlackAfter) + " after its end",
	}
	mac := hmac.New(sha256.New, opts.HashKey)
	for i := range users {
		u := users[i] // copy
		if _, dup := x.users[u.UserID]; dup {
			x.stats.Duplicates++
		}
		x.userTok[u.UserID] = DemographicTokens{
			LastName: tokenOf(mac, "last_name", NormalizeLastName(u.LastName)),
			Address:  tokenOf(mac, "address", NormalizeAddress(u.Address)),
		}
		u.FirstName, u.LastName, u.Address = "", "", schemas.Address{}
		x.users[u.UserID] = &u
		if u.Role != "" {
			x.refNames[0][u.Role]++
		}
		if u.Department != "" {
			x.refNames[1][u.Department]++
		}
	}
	for i := range patients {
		p := patients[i] // copy
		if _, dup := x.patients[p.PatientID]; dup {
			x.stats.Duplicates++
		}
		x.patientTok[p.PatientID] = DemographicTokens{
			LastName: tokenOf(mac, "last_name", NormalizeLastName(p.LastName)),
			Address:  tokenOf(mac, "address", NormalizeAddress(p.Address)),
		}
		p.FirstName, p.LastName, p.Address, p.DateOfBirth = "", "", schemas.Address{}, ""
		p.NextOfKinUserIDs = slices.Clone(p.NextOfKinUserIDs)
		x.patients[p.PatientID] = &p
	}
	x.indexEncounters(encounters)
	x.linkPersons()
	x.stats.Users, x.stats.Patients = len(x.users), len(x.patients)
	x.kinds = countPatientKinds(x.patients, x.users, x.employeeOf)
	return x, nil
}

// linkPersons fills employeeOf and patientOf from both sides of the
// user–patient link. When the two sides disagree, the patient's
// employee_user_id wins for that patient and the user's patient_id for
// that user, so each side's own statement is kept.
func (x *ReferenceIndex) linkPersons() {
	for _, id := range sortedKeys(x.users) {
		if pid := x.users[id].PatientID; pid != "" {
			x.patientOf[id] = pid
			if _, ok := x.employeeOf[pid]; !ok {
				x.employeeOf[pid] = id
			}
		}
	}
	for _, pid := range sortedKeys(x.patients) {
		if uid := x.patients[pid].EmployeeUserID; uid != "" {
			x.employeeOf[pid] = uid
			if _, ok := x.patientOf[uid]; !ok {
				x.patientOf[uid] = pid
			}
		}
	}
}

// EmployeeOf returns the account of the employee whose chart patientID
// is, linked by the patient's employee_user_id or by a user's patient_id.
func (x *ReferenceIndex) EmployeeOf(patientID string) (string, bool) {
	id, ok := x.employeeOf[patientID]
	return id, ok
}

// PatientOf returns the chart of the person behind userID, linked by the
// user's patient_id or by a patient's employee_user_id.
func (x *ReferenceIndex) PatientOf(userID string) (string, bool) {
	id, ok := x.patientOf[userID]
	return id, ok
}

// Vocabulary returns the vocabulary the index was built with.
func (x *ReferenceIndex) Vocabulary() *Vocabulary {
	if x.vocab == nil {
		return DefaultVocabulary()
	}
	return x.vocab
}

// ReferenceNames returns how many reference records (users for roles;
// users and encounters for departments) name each role or department,
// exactly as written. The map is shared: do not modify it.
func (x *ReferenceIndex) ReferenceNames(kind schemas.VocabularyKind) map[string]int {
	return x.refNames[kindIndex(kind)]
}

// tokenOf returns the keyed hash of a normalised value in a domain
// ("last_name", "address"), or the zero Token for "".
func tokenOf(mac hash.Hash, domain, normalised string) Token {
	var t Token
	if normalised == "" {
		return t
	}
	mac.Reset()
	mac.Write([]byte(domain))
	mac.Write([]byte{0})
	mac.Write([]byte(normalised))
	copy(t[:], mac.Sum(nil))
	return t
}

// User returns the account behind userID, with names and address cleared.
// The result is shared: callers must not modify it.
func (x *ReferenceIndex) User(userID string) (*schemas.User, bool) {
	u, ok := x.users[userID]
	return u, ok
}

// Patient returns the patient behind patientID, with names, address and
// date of birth cleared. The result is shared: callers must not modify it.
func (x *ReferenceIndex) Patient(patientID string) (*schemas.Patient, bool) {
	p, ok := x.patients[patientID]
	return p, ok
}

// UserTokens returns the demographic tokens of a user.
func (x *ReferenceIndex) UserTokens(userID string) (DemographicTokens, bool) {
	t, ok := x.userTok[userID]
	return t, ok
}

// PatientTokens returns the demographic tokens of a patient.
func (x *ReferenceIndex) PatientTokens(patientID string) (DemographicTokens, bool) {
	t, ok := x.patientTok[patientID]
	return t, ok
}

// Stats reports what the index holds.
func (x *ReferenceIndex) Stats() ReferenceStats { return x.stats }

// careEncounter is one encounter as the care index keeps it.
type careEncounter struct {
	start, end int64 // unix ns; end = MaxInt64 while open
	id, dept   string
}

// careSpans is a list of encounters sorted by start, with, for every
// prefix, the index of the encounter that ends last, so the question "does
// any encounter that started by t+slack end after t−slack?" takes one binary
// search.
type careSpans struct {
	encs    []careEncounter
	lastEnd []int32
}

// patientCare holds a patient's encounters grouped by department
// (lower-cased) and by care-team member.
type patientCare struct {
	byDept   map[string]*careSpans
	byMember map[string]*careSpans
	// byTeamDept groups encounters by the home departments (lower-cased)
	// of their care-team members (see continuity.go).
	byTeamDept map[string]*careSpans
}

func (x *ReferenceIndex) indexEncounters(encounters []schemas.Encounter) {
	// Last occurrence of an id wins.
	latest := make(map[string]int, len(encounters))
	for i, e := range encounters {
		if e.EncounterID == "" || e.PatientID == "" || e.Start.IsZero() || (e.End != nil && e.End.Before(e.Start)) {
			x.stats.InvalidEncounters++
			continue
		}
		if _, dup := latest[e.EncounterID]; dup {
			x.stats.Duplicates++
		}
		latest[e.EncounterID] = i
	}
	for i, e := range encounters {
		if j, ok := latest[e.EncounterID]; !ok || j != i {
			continue
		}
		pc := x.care[e.PatientID]
		if pc == nil {
			pc = &patientCare{byDept: map[string]*careSpans{}, byMember: map[string]*careSpans{}, byTeamDept: map[string]*careSpans{}}
			x.care[e.PatientID] = pc
		}
		ce := careEncounter{start: e.Start.UnixNano(), end: math.MaxInt64, id: e.EncounterID, dept: e.Department}
		if e.End != nil {
			ce.end = e.End.UnixNano()
		}
		if d := foldKey(e.Department); d != "" {
			addSpan(pc.byDept, d, ce)
			x.refNames[1][e.Department]++
		}
		for _, m := range e.CareTeam {
			if m != "" {
				addSpan(pc.byMember, m, ce)
				x.addTeamDept(pc, m, ce)
			}
		}
		x.stats.Encounters++
	}
	for _, pc := range x.care {
		for _, s := range pc.byDept {
			s.finish()
		}
		for _, s := range pc.byMember {
			s.finish()
		}
		for _, s := range pc.byTeamDept {
			s.finish()
		}
	}
}

func addSpan(m map[string]*careSpans, key string, e careEncounter) {
	s := m[key]
	if s == nil {
		s = &careSpans{}
		m[key] = s
	}
	if n := len(s.encs); n > 0 && s.encs[n-1].id == e.id {
		return // the same member listed twice on one encounter
	}
	s.encs = append(s.encs, e)
}

func (s *careSpans) finish() {
	slices.SortFunc(s.encs, func(a, b careEncounter) int {
		if a.start != b.start {
			if a.start < b.start {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	s.encs = slices.CompactFunc(s.encs, func(a, b careEncounter) bool { return a.id == b.id })
	s.lastEnd = make([]int32, len(s.encs))
	best := 0
	for i := range s.encs {
		if s.encs[i].end > s.encs[best].end {
			best = i
		}
		s.lastEnd[i] = int32(best)
	}
}

// find returns the encounter that explains an access at t, if any.
func (s *careSpans) find(t, slackBefore, slackAfter int64) (careEncounter, bool) {
	if s == nil || len(s.encs) == 0 {
		return careEncounter{}, false
	}
	// k = number of encounters with start − slackBefore ≤ t.
	lo, hi := 0, len(s.encs)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s.encs[mid].start-slackBefore <= t {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return careEncounter{}, false
	}
	e := s.encs[s.lastEnd[lo-1]]
	if e.end == math.MaxInt64 || e.end >= t-slackAfter {
		return e, true
	}
	return careEncounter{}, false
}

// Care reports whether an encounter of the event's patient explains the
// access: one whose department equals the user's department (compared
// case-insensitively; the event's department, else the reference user's),
// or whose care team lists the user, and whose interval widened by the
// configured slack contains the event time. A care-team match is preferred
// over a department match. It costs two map lookups and at most two binary
// searches.
func (x *ReferenceIndex) Care(ev *schemas.AccessEvent) CareRelationship {
	return x.care1(ev, true)
}

// care1 is Care; without reason it leaves Reason empty and allocates
// nothing (the Engine asks this for every event, see explainer).
func (x *ReferenceIndex) care1(ev *schemas.AccessEvent, reason bool) CareRelationship {
	dept := ev.UserDepartment
	if dept == "" {
		if u, ok := x.users[ev.UserID]; ok {
			dept = u.Department
		}
	}
	if pc := x.care[ev.PatientID]; pc != nil {
		t := ev.EventTime.UnixNano()
		if e, ok := pc.byMember[ev.UserID].find(t, x.slackB, x.slackA); ok {
			c := CareRelationship{Explained: true, EncounterID: e.id, By: ExplainedByCareTeam}
			if reason {
				c.Reason = "user " + ev.UserID + " on the care team of encounter " + e.id + " (" + e.dept + ")"
			}
			return c
		}
		if dept != "" {
			if e, ok := pc.byDept[foldKey(dept)].find(t, x.slackB, x.slackA); ok {
				c := CareRelationship{Explained: true, EncounterID: e.id, By: ExplainedByDepartmentEncounter}
				if reason {
					c.Reason = "encounter " + e.id + " in " + e.dept + ", the user's department"
				}
				return c
			}
		}
	}
	if !reason {
		return CareRelationship{}
	}
	where := "the user's department"
	if dept != "" {
		where = dept
	}
	return CareRelationship{Reason: "an encounter of this patient in " + where + ", or with user " + ev.UserID +
		" on its care team, from " + x.slackText}
}

// foldKey lower-cases and trims a department name for comparison.
func foldKey(s string) string { return strings.ToLower(strings.TrimSpace(s)) }

// ReferenceHolder holds the current ReferenceIndex and swaps it atomically,
// so reference data can be refreshed without a restart. Load is safe from
// any goroutine; pass holder.Load as Env.Reference.
type ReferenceHolder struct {
	p atomic.Pointer[ReferenceIndex]
}

// NewReferenceHolder returns a holder holding x (which may be nil).
func NewReferenceHolder(x *ReferenceIndex) *ReferenceHolder {
	h := &ReferenceHolder{}
	h.Store(x)
	return h
}

// Load returns the current reference data; before the first Store it is an
// empty index that knows no users, patients or encounters.
func (h *ReferenceHolder) Load() Reference {
	if x := h.p.Load(); x != nil {
		return x
	}
	return emptyReferenceIndex
}

// Index returns the current index, or nil before the first Store.
func (h *ReferenceHolder) Index() *ReferenceIndex { return h.p.Load() }

// Store replaces the reference data; nil resets it to empty.
func (h *ReferenceHolder) Store(x *ReferenceIndex) { h.p.Store(x) }

// NormalizeLastName prepares a last name for comparison: lower-cased,
// generational suffixes (jr, sr, ii, iii, iv) dropped, and everything but
// letters and digits removed, so "O'Brien-Smith Jr." becomes "obriensmith".
// It returns "" when nothing is left.
func NormalizeLastName(s string) string {
	words := normalizedWords(s)
	for len(words) > 1 {
		switch words[len(words)-1] {
		case "jr", "sr", "ii", "iii", "iv":
			words = words[:len(words)-1]
			continue
		}
		break
	}
	return strings.Join(words, "")
}

// addressWords maps common spellings to one form (USPS-style abbreviations;
// unit designators all become "apt").
var addressWords = map[string]string{
	"street": "st", "str": "st", "avenue": "ave", "av": "ave", "road": "rd", "drive": "dr",
	"boulevard": "blvd", "lane": "ln", "court": "ct", "place": "pl", "terrace": "ter",
	"highway": "hwy", "parkway": "pkwy", "circle": "cir", "square": "sq", "plaza": "plz",
	"apartment": "apt", "unit": "apt", "suite": "apt", "ste": "apt",
	"north": "n", "south": "s", "east": "e", "west": "w",
	"northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}

// NormalizeAddress prepares an address for comparison: the street line,
// city, state and postal code, lower-cased, punctuation removed, whitespace
// collapsed, common words abbreviated ("Street" → "st", "Avenue" → "ave",
// "Apartment"/"Unit"/"Suite"/"#" → "apt") and US ZIP+4 cut to five digits,
// so "12 Oak Street, Apt. 4" and "12 oak st #4" agree. It returns "" when
// the street line is empty: a city alone identifies no household.
func NormalizeAddress(a schemas.Address) string {
	line := strings.ReplaceAll(a.Line, "#", " apt ")
	words := normalizedWords(line)
	if len(words) == 0 {
		return ""
	}
	for i, w := range words {
		if r, ok := addressWords[w]; ok {
			words[i] = r
		}
	}
	// "apt apt 4" (from "Apt #4") collapses to "apt 4".
	words = slices.Compact(words)
	postal := strings.Join(normalizedWords(a.PostalCode), "")
	if len(postal) == 9 && isDigits(postal) {
		postal = postal[:5]
	}
	parts := []string{strings.Join(words, " "), strings.Join(normalizedWords(a.City), " "), strings.Join(normalizedWords(a.State), " "), postal}
	return strings.Join(parts, "|")
}

// normalizedWords lower-cases s, turns every run of characters other than
// letters and digits into a word break, and returns the words. Apostrophes
// and periods join rather than split ("O'Brien" → "obrien", "St." → "st").
func normalizedWords(s string) []string {
	var words []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
	}
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
		case r == '\'' || r == '’' || r == '.':
			// joins
		default:
			flush()
		}
	}
	flush()
	return words
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
