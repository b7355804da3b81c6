package detectors

import (
	"cmp"
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"math"
	"slices"
	"strings"

	"github.com/ehrwatch/ehrwatch/schemas"
)

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
// patients and encounters. Build a new one (ReferenceBuilder) or derive one
// with changes applied (ReferenceIndex.Apply) and swap it into a
// ReferenceHolder to refresh; lookups take no locks.
//
// To keep raw demographics out of the running process, the index stores
// users and patients with their first and last names, addresses and dates of
// birth cleared; it keeps only keyed tokens of the normalised last name and
// address (see UserTokens).
//
// Patients are stored compactly (see docs/benchmarks.md for the measured
// bytes per patient): a patient with no flag and no link (not VIP, not
// deceased, no employee account, no next of kin, no guarantor) is its id
// and its two tokens; Patient returns one shared record for all of them.
// An index derived by Apply shares everything unchanged with its parent
// and keeps the changed patients and care records in small overlays.
type ReferenceIndex struct {
	// users holds each user's account and demographic tokens in one
	// slot: an event that needs both finds the second in the cache.
	users map[string]userRec

	// pbase holds the patients and their care records of the last whole
	// build, shared between versions; the deltas override it.
	pbase     *patientTable
	pdelta    map[string]*patientRec  // overrides pbase's patient; nil = deleted
	careDelta map[string]*patientCare // overrides pbase's care; nil = no encounters

	// employeeOf and patientOf link a person's account and chart, read
	// from both sides: patients.employee_user_id and users.patient_id.
	employeeOf map[string]string // patient id → user id
	patientOf  map[string]string // user id → patient id
	// userDept is every user's home department, folded.
	userDept map[string]string
	vocab    *Vocabulary
	// refNames counts the records (users; encounters for departments)
	// naming each role and department, by kind index; encDepts is the
	// encounters' share of refNames[1].
	refNames  [2]map[string]int
	encDepts  map[string]int
	slackB    int64 // ns
	slackA    int64 // ns
	slackText string
	opts      ReferenceOptions
	stats     ReferenceStats
	kinds     patientKinds // shares of patient kinds, for chance ranking (chance.go)
}

// userRec is what the index keeps of a user.
type userRec struct {
	u   *schemas.User // names and address cleared
	tok DemographicTokens
}

// patientRec is what the index keeps of a patient.
type patientRec struct {
	tok DemographicTokens
	// full is the patient with demographics cleared, or nil for a plain
	// patient (no flag, no link; see plainPatient), or noPatient in the
	// base table for encounters whose patient is not in the patients.
	full *schemas.Patient
	// care is the patient's care record in the base table (nil: no
	// encounters); unused in pdelta, where careDelta overrides it.
	care *patientCare
}

// patientTable is the immutable bulk of the patients: ids to records,
// and the positions of the records with a full patient. A patient's
// record and care record are found with one lookup, and the repeated
// lookups of one event hit the cache: every event needs both
// (docs/benchmarks.md §2, "One table per patient, one slot per user").
type patientTable struct {
	ids      map[string]uint32
	recs     []patientRec
	specials []uint32
	patients int // records that are patients (not noPatient)
}

// noPatient marks a base-table record that holds only the care record of
// a patient id that is not in the patients.
var noPatient = &schemas.Patient{}

// plainPatient is the record Patient returns for every patient with no
// flag and no link. It is shared and its PatientID is empty: detectors
// use the id they asked for.
var plainPatient = &schemas.Patient{}

var (
	_ Reference         = (*ReferenceIndex)(nil)
	_ DemographicHasher = (*ReferenceIndex)(nil)
)

// emptyReferenceIndex answers every question with "unknown".
var emptyReferenceIndex = &ReferenceIndex{slackText: "24h before its start to 24h after its end", vocab: DefaultVocabulary(),
	pbase: &patientTable{}}

// NewReferenceIndex builds an index with the built-in vocabulary (and
// opts.Vocabulary); see NewReferenceIndexWithVocabulary.
func NewReferenceIndex(users []schemas.User, patients []schemas.Patient, encounters []schemas.Encounter, opts ReferenceOptions) (*ReferenceIndex, error) {
	return NewReferenceIndexWithVocabulary(users, patients, encounters, nil, opts)
}

// NewReferenceIndexWithVocabulary builds an index from slices (see
// ReferenceBuilder to build one from a stream). The input slices are not
// retained. Duplicate ids keep their last occurrence; invalid encounters
// are skipped; both are counted in Stats. Invalid options and vocabulary
// entries with unknown categories are an error.
func NewReferenceIndexWithVocabulary(users []schemas.User, patients []schemas.Patient, encounters []schemas.Encounter,
	vocabulary []schemas.VocabularyEntry, opts ReferenceOptions) (*ReferenceIndex, error) {
	b, err := NewReferenceBuilder(vocabulary, opts)
	if err != nil {
		return nil, err
	}
	for i := range users {
		b.AddUser(&users[i])
	}
	for i := range patients {
		b.AddPatient(&patients[i])
	}
	// The last occurrence of an encounter id wins, across patients too.
	latest := make(map[string]int, len(encounters))
	for i := range encounters {
		if validEncounter(&encounters[i]) {
			if _, dup := latest[encounters[i].EncounterID]; dup {
				b.stats.Duplicates++
			}
			latest[encounters[i].EncounterID] = i
		}
	}
	for i := range encounters {
		if j, ok := latest[encounters[i].EncounterID]; ok && j != i {
			continue
		}
		b.AddEncounter(&encounters[i])
	}
	return b.Build(), nil
}

func validEncounter(e *schemas.Encounter) bool {
	return e.EncounterID != "" && e.PatientID != "" && !e.Start.IsZero() && (e.End == nil || !e.End.Before(e.Start))
}

// ReferenceBuilder builds a ReferenceIndex from records streamed to it one
// at a time (from files line by line, or from a query's rows), so the full
// record set is never held: each record is reduced to what the detectors
// read as it arrives. Add every user before Build; the order of users,
// patients and encounters does not matter otherwise. Records passed to
// Add* are not retained. A builder is not safe for concurrent use, and is
// spent by Build.
type ReferenceBuilder struct {
	x       *ReferenceIndex
	mac     hash.Hash
	strs    interner // interned short strings (departments, ids of care-team members)
	pending map[string][]pendingEncounter
	stats   ReferenceStats
}

type pendingEncounter struct {
	ce   careEncounter
	team []string
}

// NewReferenceBuilder starts an index. Invalid options and vocabulary
// entries with unknown categories are an error.
func NewReferenceBuilder(vocabulary []schemas.VocabularyEntry, opts ReferenceOptions) (*ReferenceBuilder, error) {
	if err := opts.Validate(); err != nil {
		return nil, prefixErrors("reference", err)
	}
	vocab, err := NewVocabulary(vocabulary, opts.Vocabulary)
	if err != nil {
		return nil, err
	}
	x := &ReferenceIndex{
		vocab:     vocab,
		users:     map[string]userRec{},
		pbase:     &patientTable{ids: map[string]uint32{}},
		encDepts:  map[string]int{},
		slackB:    int64(opts.CareSlackBefore),
		slackA:    int64(opts.CareSlackAfter),
		slackText: schemas.FormatDuration(opts.CareSlackBefore) + " before its start to " + schemas.FormatDuration(opts.CareSlackAfter) + " after its end",
		opts:      opts,
	}
	return &ReferenceBuilder{x: x, mac: hmac.New(sha256.New, opts.HashKey), strs: interner{},
		pending: map[string][]pendingEncounter{}}, nil
}

func (b *ReferenceBuilder) intern(s string) string { return b.strs.intern(s) }

// interner keeps one copy of each short string the index holds many times
// (departments, ids of care-team members).
type interner map[string]string

func (in interner) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := in[s]; ok {
		return v
	}
	s = strings.Clone(s)
	in[s] = s
	return s
}

// HasUser reports whether a user with this id was added.
func (b *ReferenceBuilder) HasUser(id string) bool { _, ok := b.x.users[id]; return ok }

// HasPatient reports whether a patient with this id was added. (The
// table holds only patients until Build adds the care-only rows.)
func (b *ReferenceBuilder) HasPatient(id string) bool { _, ok := b.x.pbase.ids[id]; return ok }

// HasEncounter reports whether an encounter with this id was added for
// the patient.
func (b *ReferenceBuilder) HasEncounter(patientID, encounterID string) bool {
	for i := range b.pending[patientID] {
		if b.pending[patientID][i].ce.id == encounterID {
			return true
		}
	}
	return false
}

// AddUser adds a user; a user id added before is replaced and counted as
// a duplicate.
func (b *ReferenceBuilder) AddUser(u *schemas.User) {
	if _, dup := b.x.users[u.UserID]; dup {
		b.stats.Duplicates++
	}
	id, tok, cu := userRecord(b.mac, u, b.intern)
	b.x.users[id] = userRec{u: cu, tok: tok}
}

// userRecord returns what the index keeps of a user.
func userRecord(mac hash.Hash, u *schemas.User, intern func(string) string) (string, DemographicTokens, *schemas.User) {
	tok := DemographicTokens{
		LastName: tokenOf(mac, "last_name", NormalizeLastName(u.LastName)),
		Address:  tokenOf(mac, "address", NormalizeAddress(u.Address)),
	}
	c := &schemas.User{UserID: strings.Clone(u.UserID), Role: intern(u.Role), Department: intern(u.Department),
		Status: schemas.UserStatus(intern(string(u.Status))), PatientID: strings.Clone(u.PatientID)}
	if u.TerminatedAt != nil {
		t := *u.TerminatedAt
		c.TerminatedAt = &t
	}
	return c.UserID, tok, c
}

// AddPatient adds a patient; a patient id added before is replaced and
// counted as a duplicate.
func (b *ReferenceBuilder) AddPatient(p *schemas.Patient) {
	rec := patientRecord(b.mac, p)
	t := b.x.pbase
	if i, dup := t.ids[p.PatientID]; dup {
		b.stats.Duplicates++
		t.recs[i] = rec
		return
	}
	t.ids[strings.Clone(p.PatientID)] = uint32(len(t.recs))
	t.recs = append(t.recs, rec)
}

// patientRecord returns what the index keeps of a patient: the tokens,
// and the record without demographics unless it is plain.
func patientRecord(mac hash.Hash, p *schemas.Patient) patientRec {
	rec := patientRec{tok: DemographicTokens{
		LastName: tokenOf(mac, "last_name", NormalizeLastName(p.LastName)),
		Address:  tokenOf(mac, "address", NormalizeAddress(p.Address)),
	}}
	if p.VIP || p.DeceasedAt != nil || p.EmployeeUserID != "" || len(p.NextOfKinUserIDs) > 0 || p.GuarantorUserID != "" {
		c := &schemas.Patient{PatientID: strings.Clone(p.PatientID), VIP: p.VIP, EmployeeUserID: strings.Clone(p.EmployeeUserID),
			GuarantorUserID: strings.Clone(p.GuarantorUserID)}
		if p.DeceasedAt != nil {
			t := *p.DeceasedAt
			c.DeceasedAt = &t
		}
		if len(p.NextOfKinUserIDs) > 0 {
			c.NextOfKinUserIDs = make([]string, len(p.NextOfKinUserIDs))
			for i, id := range p.NextOfKinUserIDs {
				c.NextOfKinUserIDs[i] = strings.Clone(id)
			}
		}
		rec.full = c
	}
	return rec
}

// AddEncounter adds an encounter and reports whether it is valid (an id,
// a patient, a start, and no end before the start); invalid ones are
// counted in Stats and left out. An encounter id added before for the same
// patient is replaced.
func (b *ReferenceBuilder) AddEncounter(e *schemas.Encounter) bool {
	if !validEncounter(e) {
		b.stats.InvalidEncounters++
		return false
	}
	pid := e.PatientID
	list, ok := b.pending[pid]
	if !ok {
		pid = strings.Clone(pid)
	}
	b.pending[pid] = append(list, b.pendingOf(e))
	return true
}

func (b *ReferenceBuilder) pendingOf(e *schemas.Encounter) pendingEncounter {
	ce := careEncounter{start: e.Start.UnixNano(), end: math.MaxInt64, id: strings.Clone(e.EncounterID), dept: b.intern(e.Department)}
	if e.End != nil {
		ce.end = e.End.UnixNano()
	}
	var team []string
	for _, m := range e.CareTeam {
		if m == "" {
			continue
		}
		if r, ok := b.x.users[m]; ok {
			m = r.u.UserID
		} else {
			m = b.intern(m)
		}
		if !slices.Contains(team, m) {
			team = append(team, m)
		}
	}
	return pendingEncounter{ce: ce, team: team}
}

// Build finishes the index.
func (b *ReferenceBuilder) Build() *ReferenceIndex {
	x := b.x
	t := x.pbase
	t.patients = len(t.recs)
	for pid, list := range b.pending {
		pc, dups := buildCare(list, b.intern)
		b.stats.Duplicates += dups
		if i, ok := t.ids[pid]; ok {
			t.recs[i].care = pc
		} else {
			t.ids[pid] = uint32(len(t.recs))
			t.recs = append(t.recs, patientRec{full: noPatient, care: pc})
		}
		b.stats.Encounters += len(pc.encs)
		for _, e := range pc.encs {
			if foldKey(e.dept) != "" {
				x.encDepts[e.dept]++
			}
		}
		delete(b.pending, pid)
	}
	for i := range t.recs {
		if f := t.recs[i].full; f != nil && f != noPatient {
			t.specials = append(t.specials, uint32(i))
		}
	}
	b.stats.Users, b.stats.Patients = len(x.users), t.patients
	x.stats = b.stats
	x.derive()
	b.x = nil
	return x
}

// derive recomputes what is derived from the users and the patients with
// a full record (few, compared with all patients): person links, names
// counts and patient kinds.
func (x *ReferenceIndex) derive() {
	x.refNames = [2]map[string]int{{}, maps2(x.encDepts)}
	x.userDept = make(map[string]string, len(x.users))
	folded := map[string]string{}
	for id, r := range x.users {
		u := r.u
		if u.Department != "" {
			d, ok := folded[u.Department]
			if !ok {
				d = foldKey(u.Department)
				folded[u.Department] = d
			}
			if d != "" {
				x.userDept[id] = d
			}
		}
		if u.Role != "" {
			x.refNames[0][u.Role]++
		}
		if u.Department != "" {
			x.refNames[1][u.Department]++
		}
	}
	specials := map[string]*schemas.Patient{}
	t := x.pbase
	for _, i := range t.specials {
		specials[t.recs[i].full.PatientID] = t.recs[i].full
	}
	for id, r := range x.pdelta {
		delete(specials, id)
		if r != nil && r.full != nil {
			specials[id] = r.full
		}
	}
	x.linkPersons(specials)
	x.kinds = countPatientKinds(x.stats.Patients, specials, x.User, x.employeeOf, func(id string) bool { _, ok := x.patient(id); return ok })
}

func maps2(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// linkPersons fills employeeOf and patientOf from both sides of the
// user–patient link. When the two sides disagree, the patient's
// employee_user_id wins for that patient and the user's patient_id for
// that user, so each side's own statement is kept.
func (x *ReferenceIndex) linkPersons(specials map[string]*schemas.Patient) {
	x.employeeOf, x.patientOf = map[string]string{}, map[string]string{}
	for _, id := range sortedKeys(x.users) {
		if pid := x.users[id].u.PatientID; pid != "" {
			x.patientOf[id] = pid
			if _, ok := x.employeeOf[pid]; !ok {
				x.employeeOf[pid] = id
			}
		}
	}
	for _, pid := range sortedKeys(specials) {
		if uid := specials[pid].EmployeeUserID; uid != "" {
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
	r, ok := x.users[userID]
	return r.u, ok
}

func (x *ReferenceIndex) patient(id string) (*patientRec, bool) {
	if r, ok := x.pdelta[id]; ok {
		return r, r != nil
	}
	r := x.base(id)
	if r == nil || r.full == noPatient {
		return nil, false
	}
	return r, true
}

// base returns the base table's record of id, patient or care-only, or
// nil.
func (x *ReferenceIndex) base(id string) *patientRec {
	i, ok := x.pbase.ids[id]
	if !ok {
		return nil
	}
	return &x.pbase.recs[i]
}

// Patient returns the patient behind patientID, with names, address and
// date of birth cleared. The result is shared: callers must not modify it.
// Patients with no flag and no link share one record whose PatientID is
// empty.
func (x *ReferenceIndex) Patient(patientID string) (*schemas.Patient, bool) {
	r, ok := x.patient(patientID)
	if !ok {
		return nil, false
	}
	if r.full != nil {
		return r.full, true
	}
	return plainPatient, true
}

// UserTokens returns the demographic tokens of a user.
func (x *ReferenceIndex) UserTokens(userID string) (DemographicTokens, bool) {
	r, ok := x.users[userID]
	return r.tok, ok
}

// PatientTokens returns the demographic tokens of a patient.
func (x *ReferenceIndex) PatientTokens(patientID string) (DemographicTokens, bool) {
	r, ok := x.patient(patientID)
	if !ok {
		return DemographicTokens{}, false
	}
	return r.tok, true
}

// Stats reports what the index holds.
func (x *ReferenceIndex) Stats() ReferenceStats { return x.stats }

// careOf returns a patient's care record, or nil.
func (x *ReferenceIndex) careOf(patientID string) *patientCare {
	if pc, ok := x.careDelta[patientID]; ok {
		return pc
	}
	if r := x.base(patientID); r != nil {
		return r.care
	}
	return nil
}

// careEncounter is one encounter as the care index keeps it.
type careEncounter struct {
	start, end int64 // unix ns; end = MaxInt64 while open
	id, dept   string
}

// Kinds of care spans.
const (
	spanDept   uint8 = iota // the encounter's department (folded)
	spanMember              // a care-team member's user id
)

// careSpan lists the encounters of one patient with one key (a
// department, a care-team member, a team member's department): positions
// [off, off+n) of patientCare.idx hold them sorted by start and the same
// positions of patientCare.lastEnd, for every prefix, the encounter that
// ends last, so the question "does any encounter that started by t+slack
// end after t−slack?" takes one binary search.
type careSpan struct {
	key    string
	h      uint32 // spanHash(key): the search compares it, not the key
	off, n int32
	kind   uint8
}

// spanHash is the 32-bit hash a patient's spans are searched by: a binary
// search over inline integers touches no key bytes but the one it verifies
// (the key strings live elsewhere on the heap; comparing them cost a cache
// miss a step, docs/benchmarks.md §2).
func spanHash(key string) uint32 {
	h := fnv64a(key)
	return uint32(h) ^ uint32(h>>32)
}

// patientCare holds a patient's encounters, sorted by start then id, and
// the spans over them sorted by kind, key hash and key.
type patientCare struct {
	encs         []careEncounter
	spans        []careSpan
	idx, lastEnd []int32 // positions in encs, span by span
}

// buildCare builds a patient's care record from its encounters; an
// encounter id listed twice keeps its last occurrence (counted).
func buildCare(list []pendingEncounter, intern func(string) string) (*patientCare, int) {
	// Last occurrence of an id wins.
	dups := 0
	if len(list) > 1 {
		last := make(map[string]int, len(list))
		for i := range list {
			if _, ok := last[list[i].ce.id]; ok {
				dups++
			}
			last[list[i].ce.id] = i
		}
		if dups > 0 {
			kept := list[:0:0]
			for i := range list {
				if last[list[i].ce.id] == i {
					kept = append(kept, list[i])
				}
			}
			list = kept
		}
	}
	slices.SortFunc(list, func(a, b pendingEncounter) int {
		if a.ce.start != b.ce.start {
			if a.ce.start < b.ce.start {
				return -1
			}
			return 1
		}
		return strings.Compare(a.ce.id, b.ce.id)
	})
	pc := &patientCare{encs: make([]careEncounter, len(list))}
	type member struct {
		kind uint8
		key  string
	}
	groups := map[member][]int32{}
	add := func(kind uint8, key string, i int32) {
		k := member{kind, key}
		g := groups[k]
		if n := len(g); n > 0 && g[n-1] == i {
			return
		}
		groups[k] = append(g, i)
	}
	for i := range list {
		e := &list[i]
		pc.encs[i] = e.ce
		if d := foldKey(e.ce.dept); d != "" {
			add(spanDept, intern(d), int32(i))
		}
		for _, m := range e.team {
			add(spanMember, m, int32(i))
		}
	}
	// Each key hashed once, then sorted by kind, hash and key.
	pc.spans = make([]careSpan, 0, len(groups))
	total := 0
	for k, g := range groups {
		pc.spans = append(pc.spans, careSpan{key: k.key, h: spanHash(k.key), kind: k.kind})
		total += len(g)
	}
	slices.SortFunc(pc.spans, func(a, b careSpan) int {
		if a.kind != b.kind {
			return int(a.kind) - int(b.kind)
		}
		if a.h != b.h {
			return cmp.Compare(a.h, b.h)
		}
		return strings.Compare(a.key, b.key)
	})
	pc.idx, pc.lastEnd = make([]int32, 0, total), make([]int32, 0, total)
	for n := range pc.spans {
		sp := &pc.spans[n]
		g := groups[member{sp.kind, sp.key}]
		sp.off, sp.n = int32(len(pc.idx)), int32(len(g))
		best := g[0]
		for _, i := range g {
			if pc.encs[i].end > pc.encs[best].end {
				best = i
			}
			pc.idx = append(pc.idx, i)
			pc.lastEnd = append(pc.lastEnd, best)
		}
	}
	return pc, dups
}

// span returns the patient's span of a kind and key, or nil.
func (pc *patientCare) span(kind uint8, key string) *careSpan {
	if pc == nil {
		return nil
	}
	h := spanHash(key)
	// The first span not below (kind, h), then the key among those with
	// its hash (one, but for a collision).
	lo, hi := 0, len(pc.spans)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if s := &pc.spans[mid]; s.kind < kind || (s.kind == kind && s.h < h) {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	for i := lo; i < len(pc.spans) && pc.spans[i].kind == kind && pc.spans[i].h == h; i++ {
		if pc.spans[i].key == key {
			return &pc.spans[i]
		}
	}
	return nil
}

// find returns the encounter of the patient's span (kind, key) that
// explains an access at t, if any.
func (pc *patientCare) find(kind uint8, key string, t, slackBefore, slackAfter int64) (careEncounter, bool) {
	pos := pc.findIn(pc.span(kind, key), t, slackBefore, slackAfter)
	if pos < 0 {
		return careEncounter{}, false
	}
	return pc.encs[pos], true
}

// findIn returns the position in encs of the encounter of span s that
// started by t+slackBefore and ends last, if it ends at or after
// t−slackAfter (the first in start order among equals), or -1.
func (pc *patientCare) findIn(s *careSpan, t, slackBefore, slackAfter int64) int32 {
	if s == nil || s.n == 0 {
		return -1
	}
	idx, lastEnd := pc.idx[s.off:s.off+s.n], pc.lastEnd[s.off:s.off+s.n]
	// k = number of encounters with start − slackBefore ≤ t.
	lo, hi := 0, len(idx)
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if pc.encs[idx[mid]].start-slackBefore <= t {
			lo = mid + 1
		} else {
			hi = mid
		}
	}
	if lo == 0 {
		return -1
	}
	pos := lastEnd[lo-1]
	if e := &pc.encs[pos]; e.end == math.MaxInt64 || e.end >= t-slackAfter {
		return pos
	}
	return -1
}

// findTeamDept is find over the encounters with a care-team member whose
// home department (folded) is dept, read from the users at query time so
// a user's change of department needs no rebuild of the care records. It
// answers as one span over those encounters would: the one that ends
// last, the first in start order among equals.
func (x *ReferenceIndex) findTeamDept(pc *patientCare, dept string, t, slackBefore, slackAfter int64) (careEncounter, bool) {
	best := int32(-1)
	lo, _ := slices.BinarySearchFunc(pc.spans, spanMember, func(s careSpan, k uint8) int { return int(s.kind) - int(k) })
	for i := lo; i < len(pc.spans) && pc.spans[i].kind == spanMember; i++ {
		if x.userDept[pc.spans[i].key] != dept {
			continue
		}
		pos := pc.findIn(&pc.spans[i], t, slackBefore, slackAfter)
		if pos < 0 {
			continue
		}
		if best < 0 || pc.encs[pos].end > pc.encs[best].end || (pc.encs[pos].end == pc.encs[best].end && pos < best) {
			best = pos
		}
	}
	if best < 0 {
		return careEncounter{}, false
	}
	return pc.encs[best], true
}

// Care reports whether an encounter of the event's patient explains the
// access: one whose department equals the user's department (compared
// case-insensitively; the event's department, else the reference user's),
// or whose care team lists the user, and whose interval widened by the
// configured slack contains the event time. A care-team match is preferred
// over a department match. It costs two map lookups and at most four binary
// searches.
func (x *ReferenceIndex) Care(ev *schemas.AccessEvent) CareRelationship {
	return x.care1(ev, true)
}

// care1 is Care; without reason it leaves Reason empty and allocates
// nothing (the Engine asks this for every event, see explainer).
func (x *ReferenceIndex) care1(ev *schemas.AccessEvent, reason bool) CareRelationship {
	dept := ev.UserDepartment
	if dept == "" {
		if r, ok := x.users[ev.UserID]; ok {
			dept = r.u.Department
		}
	}
	if pc := x.careOf(ev.PatientID); pc != nil {
		t := ev.EventTime.UnixNano()
		if e, ok := pc.find(spanMember, ev.UserID, t, x.slackB, x.slackA); ok {
			c := CareRelationship{Explained: true, EncounterID: e.id, By: ExplainedByCareTeam}
			if reason {
				c.Reason = "user " + ev.UserID + " on the care team of encounter " + e.id + " (" + e.dept + ")"
			}
			return c
		}
		if dept != "" {
			if e, ok := pc.find(spanDept, foldKey(dept), t, x.slackB, x.slackA); ok {
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
