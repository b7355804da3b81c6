package detectors

import (
	"crypto/hmac"
	"crypto/sha256"
	"hash"
	"maps"
	"strings"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ReferenceUpdate collects changed reference rows to apply to an index
// without rebuilding it (an incremental refresh): users and patients
// replaced or deleted by id, and for each patient it names, all of the
// patient's current encounters. Apply derives a new index and leaves the
// old one untouched (copy-on-write), so detectors reading the old one
// through a ReferenceHolder are never disturbed; the new one shares every
// unchanged record with it.
//
// The result answers every question exactly as an index built from the
// whole changed data set would (a test checks this), except Stats'
// Duplicates and InvalidEncounters, which count what the loads skipped.
type ReferenceUpdate struct {
	x        *ReferenceIndex
	vocab    *Vocabulary
	mac      hash.Hash
	strs     interner
	users    map[string]*schemas.User // nil: deleted
	userTok  map[string]DemographicTokens
	patients map[string]*patientRec // nil: deleted
	care     map[string][]pendingEncounter
	invalid  int
}

// Update starts an update of x with the hospital vocabulary (nil for the
// built-in one; the vocabulary is small and always read whole). Invalid
// vocabulary entries are an error.
func (x *ReferenceIndex) Update(vocabulary []schemas.VocabularyEntry) (*ReferenceUpdate, error) {
	vocab, err := NewVocabulary(vocabulary, x.opts.Vocabulary)
	if err != nil {
		return nil, err
	}
	return &ReferenceUpdate{
		x: x, vocab: vocab, mac: hmac.New(sha256.New, x.opts.HashKey), strs: interner{},
		users: map[string]*schemas.User{}, userTok: map[string]DemographicTokens{},
		patients: map[string]*patientRec{}, care: map[string][]pendingEncounter{},
	}, nil
}

func (u *ReferenceUpdate) intern(s string) string { return u.strs.intern(s) }

// SetUser adds or replaces a user.
func (u *ReferenceUpdate) SetUser(v *schemas.User) {
	id, tok, c := userRecord(u.mac, v, u.intern)
	u.users[id], u.userTok[id] = c, tok
}

// DeleteUser removes a user.
func (u *ReferenceUpdate) DeleteUser(id string) {
	u.users[strings.Clone(id)] = nil
	delete(u.userTok, id)
}

// SetPatient adds or replaces a patient.
func (u *ReferenceUpdate) SetPatient(p *schemas.Patient) {
	rec := patientRecord(u.mac, p)
	u.patients[strings.Clone(p.PatientID)] = &rec
}

// DeletePatient removes a patient (not their encounters: those are
// changed by ReplaceEncounters, as in the encounters table).
func (u *ReferenceUpdate) DeletePatient(id string) {
	u.patients[strings.Clone(id)] = nil
}

// ReplaceEncounters says the update carries all of the patient's current
// encounters: those added with AddEncounter, none if there are none.
func (u *ReferenceUpdate) ReplaceEncounters(patientID string) {
	if _, ok := u.care[patientID]; !ok {
		u.care[strings.Clone(patientID)] = nil
	}
}

// AddEncounter adds one of a patient's current encounters (and implies
// ReplaceEncounters for the patient). It reports whether the encounter is
// valid; invalid ones are counted and left out.
func (u *ReferenceUpdate) AddEncounter(e *schemas.Encounter) bool {
	if !validEncounter(e) {
		u.invalid++
		return false
	}
	u.ReplaceEncounters(e.PatientID)
	b := ReferenceBuilder{x: u.x, strs: u.strs}
	u.care[e.PatientID] = append(u.care[e.PatientID], b.pendingOf(e))
	return true
}

// Changes counts the users, patients and patients' encounter lists the
// update replaces or deletes.
func (u *ReferenceUpdate) Changes() int { return len(u.users) + len(u.patients) + len(u.care) }

// Apply returns the updated index; x is unchanged. The update is spent.
func (u *ReferenceUpdate) Apply() *ReferenceIndex {
	x := u.x
	nx := *x
	nx.vocab = u.vocab
	nx.stats.InvalidEncounters += u.invalid
	if len(u.users) > 0 {
		nx.users = maps.Clone(x.users)
		for id, c := range u.users {
			if c == nil {
				delete(nx.users, id)
				continue
			}
			nx.users[id] = userRec{u: c, tok: u.userTok[id]}
		}
	}
	if len(u.patients) > 0 {
		nx.pdelta = maps.Clone(x.pdelta)
		if nx.pdelta == nil {
			nx.pdelta = map[string]*patientRec{}
		}
		for id, rec := range u.patients {
			_, had := x.patient(id)
			r := x.base(id)
			inBase := r != nil && r.full != noPatient
			switch {
			case rec != nil:
				nx.pdelta[id] = rec
			case inBase:
				nx.pdelta[id] = nil
			default:
				delete(nx.pdelta, id)
			}
			switch {
			case had && rec == nil:
				nx.stats.Patients--
			case !had && rec != nil:
				nx.stats.Patients++
			}
		}
	}
	if len(u.care) > 0 {
		nx.careDelta = maps.Clone(x.careDelta)
		if nx.careDelta == nil {
			nx.careDelta = map[string]*patientCare{}
		}
		nx.encDepts = maps.Clone(x.encDepts)
		for pid, list := range u.care {
			if old := x.careOf(pid); old != nil {
				nx.stats.Encounters -= len(old.encs)
				for _, e := range old.encs {
					if foldKey(e.dept) != "" {
						if nx.encDepts[e.dept]--; nx.encDepts[e.dept] == 0 {
							delete(nx.encDepts, e.dept)
						}
					}
				}
			}
			var pc *patientCare
			if len(list) > 0 {
				var dups int
				pc, dups = buildCare(list, u.intern)
				nx.stats.Duplicates += dups
				nx.stats.Encounters += len(pc.encs)
				for _, e := range pc.encs {
					if foldKey(e.dept) != "" {
						nx.encDepts[e.dept]++
					}
				}
			}
			r := x.base(pid)
			inBase := r != nil && r.care != nil
			switch {
			case pc != nil || inBase:
				nx.careDelta[pid] = pc
			default:
				delete(nx.careDelta, pid)
			}
		}
	}
	nx.stats.Users = len(nx.users)
	nx.derive()
	u.x = nil
	return &nx
}

// Overlay reports how many patients and patients' care records the index
// holds beyond its last whole build; a refresher reloads whole when it
// grows (see ReferenceConfig.FullReloadEvery).
func (x *ReferenceIndex) Overlay() int { return len(x.pdelta) + len(x.careDelta) }
