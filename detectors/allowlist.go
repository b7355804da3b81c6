package detectors

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// AllowlistEntry is one governed exception (see schemas.AllowlistEntry,
// which also validates it).
type AllowlistEntry = schemas.AllowlistEntry

// AnyDetector in AllowlistEntry.Detector matches every detector.
const AnyDetector = "*"

// specificity ranks entries when several match: more fields set wins.
func specificity(e *AllowlistEntry) int {
	n := 0
	for _, s := range []string{e.UserID, e.PatientID, e.Department} {
		if s != "" {
			n += 2
		}
	}
	if e.Detector != AnyDetector {
		n++
	}
	return n
}

// SuppressionReason is the text stored in Finding.SuppressionReason for
// a finding e suppresses: "allowlist: <owner>: <reason>".
func SuppressionReason(e *AllowlistEntry) string {
	return "allowlist: " + e.Owner + ": " + e.Reason
}

// Allowlist is an immutable set of entries indexed for Match. Build a new
// one to change it (for example after reloading the ClickHouse table) and
// hand it to the engines through an AllowlistHolder.
type Allowlist struct {
	entries []AllowlistEntry
	byUser  map[string][]int
	noUser  []int
}

// NewAllowlist validates entries and indexes them. Errors name the bad
// entry by position: "allowlist[3].owner: required".
func NewAllowlist(entries []AllowlistEntry) (*Allowlist, error) {
	a := &Allowlist{entries: make([]AllowlistEntry, len(entries)), byUser: map[string][]int{}}
	copy(a.entries, entries)
	var errs []error
	for i := range a.entries {
		e := &a.entries[i]
		if err := e.Validate(); err != nil {
			errs = append(errs, prefixErrors(fmt.Sprintf("allowlist[%d]", i), err))
			continue
		}
		e.ExpiresAt = e.ExpiresAt.UTC()
		if e.UserID == "" {
			a.noUser = append(a.noUser, i)
		} else {
			a.byUser[e.UserID] = append(a.byUser[e.UserID], i)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return a, nil
}

// Len returns the number of entries.
func (a *Allowlist) Len() int {
	if a == nil {
		return 0
	}
	return len(a.entries)
}

// Entries returns a copy of the entries.
func (a *Allowlist) Entries() []AllowlistEntry {
	if a == nil {
		return nil
	}
	return append([]AllowlistEntry(nil), a.entries...)
}

// Match finds the entry that suppresses f. department is the user's
// department at the time (the event's, for per-event findings); at is the
// event time the entry must still be valid at (at ≤ ExpiresAt), never the
// wall clock, so replays suppress exactly what the live run did. When
// several entries match, the most specific wins, then the earliest listed.
// A nil Allowlist matches nothing.
func (a *Allowlist) Match(f *schemas.Finding, department string, at time.Time) (AllowlistEntry, bool) {
	if a == nil || len(a.entries) == 0 {
		return AllowlistEntry{}, false
	}
	best := -1
	consider := func(idx []int) {
		for _, i := range idx {
			e := &a.entries[i]
			if e.Detector != AnyDetector && e.Detector != f.Detector {
				continue
			}
			if e.PatientID != "" && e.PatientID != f.PatientID {
				continue
			}
			if e.Department != "" && !strings.EqualFold(e.Department, department) {
				continue
			}
			if at.After(e.ExpiresAt) {
				continue
			}
			if best < 0 || specificity(e) > specificity(&a.entries[best]) ||
				(specificity(e) == specificity(&a.entries[best]) && i < best) {
				best = i
			}
		}
	}
	consider(a.byUser[f.UserID])
	consider(a.noUser)
	if best < 0 {
		return AllowlistEntry{}, false
	}
	return a.entries[best], true
}

// Apply marks f suppressed when an entry matches; the finding is kept
// either way, so the suppression can be audited.
func (a *Allowlist) Apply(f *schemas.Finding, department string, at time.Time) bool {
	e, ok := a.Match(f, department, at)
	if ok {
		f.Suppressed = true
		f.SuppressionReason = SuppressionReason(&e)
	}
	return ok
}

// AllowlistHolder holds the current Allowlist and swaps it atomically; Load
// is safe from any goroutine. Pass holder.Load as
// EngineConfig.AllowlistSource to share one refreshable list among engines.
type AllowlistHolder struct {
	p atomic.Pointer[Allowlist]
}

// Load returns the current allowlist (nil matches nothing).
func (h *AllowlistHolder) Load() *Allowlist { return h.p.Load() }

// Store replaces the allowlist.
func (h *AllowlistHolder) Store(a *Allowlist) { h.p.Store(a) }
