package detectors

import (
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// AllowlistEntry is one governed exception: findings of Detector about
// UserID and PatientID by a user in Department are suppressed until
// ExpiresAt. Empty UserID, PatientID or Department are wildcards, but at
// least one must be set; Detector is a detector name or "*".
//
// Reason and Owner are operator-written text (why the exception exists, who
// answers for it); they are copied into SuppressionReason and must not hold
// patient data.
type AllowlistEntry struct {
	// UserID limits the entry to one user; empty matches every user.
	UserID string `yaml:"user_id" json:"user_id,omitempty"`
	// PatientID limits the entry to one patient; empty matches every patient.
	PatientID string `yaml:"patient_id" json:"patient_id,omitempty"`
	// Department limits the entry to users in one department (compared
	// case-insensitively); empty matches every department.
	Department string `yaml:"department" json:"department,omitempty"`
	// Detector is the detector name the entry covers, or "*" for all.
	Detector string `yaml:"detector" json:"detector"`
	// Reason says why the exception exists (operator text, no patient data).
	Reason string `yaml:"reason" json:"reason"`
	// Owner is who answers for the exception (a person or team).
	Owner string `yaml:"owner" json:"owner"`
	// ExpiresAt is the last instant, in event time, the entry applies.
	ExpiresAt time.Time `yaml:"expires_at" json:"expires_at"`
}

// AnyDetector in AllowlistEntry.Detector matches every detector.
const AnyDetector = "*"

// Validate checks one entry; keys are relative to the entry. Every entry
// must name what it covers, why, who owns it and when it expires:
// exceptions without an expiry are how allowlists rot.
func (e *AllowlistEntry) Validate() error {
	var errs []error
	if e.UserID == "" && e.PatientID == "" && e.Department == "" {
		errs = append(errs, fieldErrorf("user_id", "at least one of user_id, patient_id or department must be set"))
	}
	if e.Detector == "" {
		errs = append(errs, fieldErrorf("detector", `required (a detector name, or "*" for all)`))
	}
	if strings.TrimSpace(e.Reason) == "" {
		errs = append(errs, fieldErrorf("reason", "required"))
	}
	if strings.TrimSpace(e.Owner) == "" {
		errs = append(errs, fieldErrorf("owner", "required"))
	}
	if e.ExpiresAt.IsZero() {
		errs = append(errs, fieldErrorf("expires_at", "required"))
	}
	return errors.Join(errs...)
}

// specificity ranks entries when several match: more fields set wins.
func (e *AllowlistEntry) specificity() int {
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

// SuppressionReason is the text stored in Finding.SuppressionReason:
// "allowlist: <owner>: <reason>".
func (e *AllowlistEntry) SuppressionReason() string {
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
			if best < 0 || e.specificity() > a.entries[best].specificity() ||
				(e.specificity() == a.entries[best].specificity() && i < best) {
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
		f.SuppressionReason = e.SuppressionReason()
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
