package detectors

import (
	"cmp"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// UnmappedName is a role or department name that no vocabulary rule
// covers, with how often it was seen. Role and department names are not
// patient data.
type UnmappedName struct {
	Kind schemas.VocabularyKind `json:"kind"`
	Name string                 `json:"name"`
	// Events counts the access events that carried the name (as the
	// event's user_role or user_department) since the monitor started.
	Events int64 `json:"events"`
	// ReferenceRecords counts the reference records naming it: users (role,
	// department) and encounters (department).
	ReferenceRecords int `json:"reference_records"`
}

// MaxMonitoredNames bounds the distinct names a VocabularyMonitor counts
// per kind; names beyond it are counted together (Overflow).
const MaxMonitoredNames = 5000

// VocabularyMonitor counts the role and department names access events
// carry, so the names no category covers can be reported (Unmapped) and
// fixed before they turn into alert noise. Names are classified when the
// report is made, against the reference data in use then, so a mapping
// that was just added takes effect at the next report. Observe is safe
// for concurrent use and costs a read-locked map lookup and an atomic add
// per name.
type VocabularyMonitor struct {
	ref func() Reference

	mu       sync.RWMutex
	names    [2]map[string]*atomic.Int64
	overflow atomic.Int64
}

// NewVocabularyMonitor returns a monitor that classifies names with the
// vocabulary of ref() (a ReferenceHolder's Load).
func NewVocabularyMonitor(ref func() Reference) *VocabularyMonitor {
	return &VocabularyMonitor{ref: ref, names: [2]map[string]*atomic.Int64{{}, {}}}
}

// Observe counts the event's user_role and user_department.
func (m *VocabularyMonitor) Observe(ev *schemas.AccessEvent) {
	m.count(0, ev.UserRole)
	m.count(1, ev.UserDepartment)
}

func (m *VocabularyMonitor) count(k int, name string) {
	if name == "" {
		return
	}
	m.mu.RLock()
	c := m.names[k][name]
	m.mu.RUnlock()
	if c == nil {
		m.mu.Lock()
		if c = m.names[k][name]; c == nil {
			if len(m.names[k]) >= MaxMonitoredNames {
				m.mu.Unlock()
				m.overflow.Add(1)
				return
			}
			c = &atomic.Int64{}
			m.names[k][clone(name)] = c
		}
		m.mu.Unlock()
	}
	c.Add(1)
}

func clone(s string) string { return string([]byte(s)) }

// Overflow counts names not counted because MaxMonitoredNames distinct
// names of their kind had been seen.
func (m *VocabularyMonitor) Overflow() int64 { return m.overflow.Load() }

// Unmapped returns the role and department names, seen in events or in the
// reference data, that the current vocabulary does not cover, most
// frequent first (events, then reference records, then kind and name).
func (m *VocabularyMonitor) Unmapped() []UnmappedName {
	ref := refOf(Env{Reference: m.ref})
	vocab := vocabOf(ref)
	var refNames [2]map[string]int
	if x, ok := ref.(*ReferenceIndex); ok {
		refNames = x.refNames
	}
	var out []UnmappedName
	for k, kind := range []schemas.VocabularyKind{schemas.VocabularyRole, schemas.VocabularyDepartment} {
		seen := map[string]*UnmappedName{}
		m.mu.RLock()
		for name, c := range m.names[k] {
			if !vocab.Lookup(kind, name).Mapped() {
				seen[name] = &UnmappedName{Kind: kind, Name: name, Events: c.Load()}
			}
		}
		m.mu.RUnlock()
		for name, n := range refNames[k] {
			if vocab.Lookup(kind, name).Mapped() {
				continue
			}
			u := seen[name]
			if u == nil {
				u = &UnmappedName{Kind: kind, Name: name}
				seen[name] = u
			}
			u.ReferenceRecords = n
		}
		for _, u := range seen {
			out = append(out, *u)
		}
	}
	SortUnmapped(out)
	return out
}

// SortUnmapped orders a report most frequent first.
func SortUnmapped(xs []UnmappedName) {
	slices.SortFunc(xs, func(a, b UnmappedName) int {
		if c := cmp.Compare(b.Events, a.Events); c != 0 {
			return c
		}
		if c := cmp.Compare(b.ReferenceRecords, a.ReferenceRecords); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
}
