package triage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// AllowlistChange names one change of an allowlist entry in
// allowlist_history.
type AllowlistChange string

// The allowlist changes.
const (
	AllowlistAdded   AllowlistChange = "added"
	AllowlistExpired AllowlistChange = "expired"
	AllowlistRemoved AllowlistChange = "removed"
)

// AllowlistItem is one row of the allowlist table (migration 0008) as the
// editor shows it. UpdatedAt is its version: a change names the UpdatedAt
// it saw and gets an *AllowlistConflictError when someone changed the
// entry since.
type AllowlistItem struct {
	EntryID string `json:"entry_id"`
	schemas.AllowlistEntry
	Deleted   bool      `json:"deleted,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
	// State is "active", "expired" (expires_at in the past) or "removed".
	State string `json:"state"`
	// Invalid names the key that makes the detectors skip this row
	// (store.ReadAllowlist), e.g. "expires_at"; "" when valid.
	Invalid string `json:"invalid,omitempty"`
}

// AllowlistHistoryRow is one change of an entry, with the entry as it was
// after the change.
type AllowlistHistoryRow struct {
	EntryID string          `json:"entry_id"`
	Change  AllowlistChange `json:"change"`
	schemas.AllowlistEntry
	Deleted   bool      `json:"deleted,omitempty"`
	Note      string    `json:"note,omitempty"`
	ChangedBy string    `json:"changed_by"`
	ChangedAt time.Time `json:"changed_at"`
}

// AllowlistConflictError says the entry changed since the caller read it.
type AllowlistConflictError struct {
	Expected, Current time.Time
	// Last is the change the caller missed (when it was made through
	// ehrwatch).
	Last *AllowlistHistoryRow
}

func (e *AllowlistConflictError) Error() string {
	msg := "allowlist entry changed since " + e.Expected.UTC().Format(time.RFC3339Nano)
	if e.Last != nil {
		msg += fmt.Sprintf(" (%s by %s at %s)", e.Last.Change, e.Last.ChangedBy, e.Last.ChangedAt.Format(time.RFC3339))
	}
	return msg + "; reload and retry"
}

// ErrAllowlistEntryNotFound is returned for an unknown entry; it wraps
// ErrNotFound.
var ErrAllowlistEntryNotFound = fmt.Errorf("allowlist entry %w", ErrNotFound)

// Bounds on allowlist text.
const (
	maxAllowlistReasonBytes = 1024
	maxAllowlistOwnerBytes  = 256
)

const allowlistColumns = `entry_id, user_id, patient_id, department, detector, reason, owner, expires_at, deleted, updated_at`

// ListAllowlist returns the allowlist's entries (FINAL: the newest row per
// entry), active ones first, then expired, then (with removed) removed
// ones; at most limit.
func (s *Store) ListAllowlist(ctx context.Context, withRemoved bool, limit int) ([]AllowlistItem, error) {
	if limit <= 0 {
		return nil, invalid("limit", "must be > 0")
	}
	p := params{}
	p.uint("limit", uint64(limit))
	where := "NOT deleted"
	if withRemoved {
		where = "1"
	}
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT `+allowlistColumns+` FROM allowlist FINAL WHERE `+where+`
ORDER BY deleted, ifNull(expires_at, toDateTime64(0, 3, 'UTC')) < now64(3), updated_at DESC, entry_id
LIMIT {limit:UInt32}`)
	if err != nil {
		return nil, fmt.Errorf("read allowlist: %w", err)
	}
	defer rows.Close()
	now := s.opts.Now()
	out := []AllowlistItem{}
	for rows.Next() {
		var it AllowlistItem
		var exp *time.Time
		if err := rows.Scan(&it.EntryID, &it.UserID, &it.PatientID, &it.Department, &it.Detector, &it.Reason, &it.Owner,
			&exp, &it.Deleted, &it.UpdatedAt); err != nil {
			return nil, fmt.Errorf("read allowlist: %w", err)
		}
		if exp != nil {
			it.ExpiresAt = exp.UTC()
		}
		it.UpdatedAt = it.UpdatedAt.UTC()
		it.State = AllowlistState(it, now)
		it.Invalid = AllowlistInvalid(it.AllowlistEntry)
		out = append(out, it)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read allowlist: %w", err)
	}
	return out, nil
}

// AllowlistInvalid names the key that makes the detectors skip e ("" when
// e is valid).
func AllowlistInvalid(e schemas.AllowlistEntry) string {
	if err := e.Validate(); err != nil {
		var fe *schemas.FieldError
		if errors.As(err, &fe) {
			return fe.Key
		}
		return "invalid"
	}
	return ""
}

// AllowlistState is it's state at now: "removed", "expired" or "active".
func AllowlistState(it AllowlistItem, now time.Time) string {
	switch {
	case it.Deleted:
		return "removed"
	case !it.ExpiresAt.IsZero() && it.ExpiresAt.Before(now):
		return "expired"
	}
	return "active"
}

// AllowlistEntry returns one entry (removed ones too).
func (s *Store) AllowlistEntry(ctx context.Context, entryID string) (AllowlistItem, error) {
	if err := CheckID("entry_id", entryID); err != nil {
		return AllowlistItem{}, err
	}
	p := params{}
	p.str("id", entryID)
	var it AllowlistItem
	var exp *time.Time
	var n uint64
	if err := s.conn.QueryRow(p.ctx(ctx), `SELECT count() FROM allowlist WHERE entry_id = {id:String}`).Scan(&n); err != nil {
		return AllowlistItem{}, fmt.Errorf("read allowlist: %w", err)
	}
	if n == 0 {
		return AllowlistItem{}, ErrAllowlistEntryNotFound
	}
	if err := s.conn.QueryRow(p.ctx(ctx), `SELECT `+allowlistColumns+` FROM allowlist FINAL WHERE entry_id = {id:String}`).Scan(
		&it.EntryID, &it.UserID, &it.PatientID, &it.Department, &it.Detector, &it.Reason, &it.Owner, &exp, &it.Deleted, &it.UpdatedAt); err != nil {
		return AllowlistItem{}, fmt.Errorf("read allowlist: %w", err)
	}
	if exp != nil {
		it.ExpiresAt = exp.UTC()
	}
	it.UpdatedAt = it.UpdatedAt.UTC()
	it.State = AllowlistState(it, s.opts.Now())
	return it, nil
}

// AddAllowlistEntry validates e (who it covers, detector, reason, owner
// and an expiry in the future) and stores it as a new entry. The detectors
// pick it up at their next reference refresh (reference.refresh_interval).
func (s *Store) AddAllowlistEntry(ctx context.Context, e schemas.AllowlistEntry, note string, actor Actor) (AllowlistItem, error) {
	it, err := NewAllowlistItem(e, note, actor, s.opts.Detectors, s.opts.Now())
	if err != nil {
		return AllowlistItem{}, err
	}
	if err := s.writeAllowlist(ctx, it, AllowlistAdded, note, actor); err != nil {
		return AllowlistItem{}, err
	}
	return it, nil
}

// NewAllowlistItem is AddAllowlistEntry's rule: it validates e (trimmed)
// and note, with detectors the known detector names (none: any), and
// returns the new entry, active from now.
func NewAllowlistItem(e schemas.AllowlistEntry, note string, actor Actor, detectors []string, now time.Time) (AllowlistItem, error) {
	if err := CheckActor(actor); err != nil {
		return AllowlistItem{}, err
	}
	e.UserID, e.PatientID, e.Department = strings.TrimSpace(e.UserID), strings.TrimSpace(e.PatientID), strings.TrimSpace(e.Department)
	e.Detector, e.Reason, e.Owner = strings.TrimSpace(e.Detector), strings.TrimSpace(e.Reason), strings.TrimSpace(e.Owner)
	if err := e.Validate(); err != nil {
		var fe *schemas.FieldError
		if errors.As(err, &fe) {
			return AllowlistItem{}, invalid(fe.Key, "%s", fe.Msg)
		}
		return AllowlistItem{}, invalid("", "invalid entry")
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{{"user_id", e.UserID, MaxIDBytes}, {"patient_id", e.PatientID, MaxIDBytes}, {"department", e.Department, MaxIDBytes},
		{"detector", e.Detector, MaxIDBytes}, {"reason", e.Reason, maxAllowlistReasonBytes}, {"owner", e.Owner, maxAllowlistOwnerBytes}} {
		if err := checkText(f.name, f.v, f.max, false); err != nil {
			return AllowlistItem{}, err
		}
	}
	if len(detectors) > 0 && e.Detector != "*" && !containsString(detectors, e.Detector) {
		return AllowlistItem{}, invalid("detector", "unknown detector (one of %s, or * for all)", strings.Join(detectors, ", "))
	}
	now = now.UTC().Truncate(time.Millisecond)
	if !e.ExpiresAt.After(now) {
		return AllowlistItem{}, invalid("expires_at", "must be in the future")
	}
	if note != "" {
		if err := checkNote(note); err != nil {
			return AllowlistItem{}, err
		}
	}
	return AllowlistItem{EntryID: newEntryID(now), AllowlistEntry: e, UpdatedAt: now, State: "active"}, nil
}

// ExpireAllowlistEntry ends an entry now (its expires_at becomes now):
// findings after now are no longer suppressed by it. expected is the
// UpdatedAt the caller saw.
func (s *Store) ExpireAllowlistEntry(ctx context.Context, entryID string, expected time.Time, note string, actor Actor) (AllowlistItem, error) {
	return s.changeAllowlist(ctx, entryID, expected, note, actor, AllowlistExpired)
}

// RemoveAllowlistEntry removes an entry (deleted = true): the detectors
// drop it at their next refresh, as if it never matched from then on.
func (s *Store) RemoveAllowlistEntry(ctx context.Context, entryID string, expected time.Time, note string, actor Actor) (AllowlistItem, error) {
	return s.changeAllowlist(ctx, entryID, expected, note, actor, AllowlistRemoved)
}

// CheckAllowlistChange checks what an expiry or removal checks before
// reading the entry: the actor and the note.
func CheckAllowlistChange(note string, actor Actor) error {
	if err := CheckActor(actor); err != nil {
		return err
	}
	if note != "" {
		return checkNote(note)
	}
	return nil
}

// ChangeAllowlistItem is the rule of an expiry or removal of it: it must
// still be at expected (else an *AllowlistConflictError with last(), the
// entry's latest history row, if any), and the change is stamped now (or
// just after it.UpdatedAt, so that the newest row wins).
func ChangeAllowlistItem(it AllowlistItem, expected time.Time, change AllowlistChange, now time.Time,
	last func() *AllowlistHistoryRow) (AllowlistItem, error) {
	if !it.UpdatedAt.Equal(expected.UTC().Truncate(time.Millisecond)) {
		return AllowlistItem{}, &AllowlistConflictError{Expected: expected, Current: it.UpdatedAt, Last: last()}
	}
	now = now.UTC().Truncate(time.Millisecond)
	if !now.After(it.UpdatedAt) {
		now = it.UpdatedAt.Add(time.Millisecond) // the newest updated_at must win
	}
	switch change {
	case AllowlistExpired:
		if it.Deleted {
			return AllowlistItem{}, invalid("entry_id", "the entry was removed")
		}
		if !it.ExpiresAt.After(now) {
			return AllowlistItem{}, invalid("expires_at", "the entry has already expired")
		}
		it.ExpiresAt = now
	case AllowlistRemoved:
		if it.Deleted {
			return AllowlistItem{}, invalid("entry_id", "the entry was already removed")
		}
		it.Deleted = true
	default:
		return AllowlistItem{}, invalid("change", "unknown change %q", change)
	}
	it.UpdatedAt = now
	it.State = AllowlistState(it, now.Add(time.Millisecond))
	return it, nil
}

func (s *Store) changeAllowlist(ctx context.Context, entryID string, expected time.Time, note string, actor Actor,
	change AllowlistChange) (AllowlistItem, error) {
	if err := CheckAllowlistChange(note, actor); err != nil {
		return AllowlistItem{}, err
	}
	defer s.lock("allowlist/" + entryID)()
	it, err := s.AllowlistEntry(ctx, entryID)
	if err != nil {
		return AllowlistItem{}, err
	}
	it, err = ChangeAllowlistItem(it, expected, change, s.opts.Now(), func() *AllowlistHistoryRow {
		if hist, err := s.AllowlistHistory(ctx, entryID, 1); err == nil && len(hist) > 0 {
			return &hist[0]
		}
		return nil
	})
	if err != nil {
		return AllowlistItem{}, err
	}
	if err := s.writeAllowlist(ctx, it, change, note, actor); err != nil {
		return AllowlistItem{}, err
	}
	return it, nil
}

// writeAllowlist appends the history row, then the entry's new version.
// A history row without its entry row (a failure in between) records an
// attempt; the page shows the entry as it is.
func (s *Store) writeAllowlist(ctx context.Context, it AllowlistItem, change AllowlistChange, note string, actor Actor) error {
	var exp *time.Time
	if !it.ExpiresAt.IsZero() {
		t := it.ExpiresAt.UTC()
		exp = &t
	}
	hb, err := s.conn.PrepareBatch(ctx, `INSERT INTO allowlist_history
(entry_id, change, user_id, patient_id, department, detector, reason, owner, expires_at, deleted, note, changed_by, changed_at)`)
	if err != nil {
		return fmt.Errorf("write allowlist history: %w", err)
	}
	if err := hb.Append(it.EntryID, string(change), it.UserID, it.PatientID, it.Department, it.Detector, it.Reason, it.Owner,
		exp, it.Deleted, note, actor.Name, it.UpdatedAt); err != nil {
		_ = hb.Abort()
		return fmt.Errorf("write allowlist history: %w", err)
	}
	if err := hb.Send(); err != nil {
		return fmt.Errorf("write allowlist history: %w", err)
	}
	b, err := s.conn.PrepareBatch(ctx, `INSERT INTO allowlist
(entry_id, user_id, patient_id, department, detector, reason, owner, expires_at, deleted, updated_at)`)
	if err != nil {
		return fmt.Errorf("write allowlist: %w", err)
	}
	if err := b.Append(it.EntryID, it.UserID, it.PatientID, it.Department, it.Detector, it.Reason, it.Owner, exp, it.Deleted, it.UpdatedAt); err != nil {
		_ = b.Abort()
		return fmt.Errorf("write allowlist: %w", err)
	}
	if err := b.Send(); err != nil {
		return fmt.Errorf("write allowlist: %w", err)
	}
	return nil
}

// AllowlistHistory returns the changes of one entry ("" for every entry),
// newest first, at most limit.
func (s *Store) AllowlistHistory(ctx context.Context, entryID string, limit int) ([]AllowlistHistoryRow, error) {
	p := params{}
	where := "1"
	if entryID != "" {
		p.str("id", entryID)
		where = "entry_id = {id:String}"
	}
	p.uint("limit", uint64(max(limit, 1)))
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT entry_id, change, user_id, patient_id, department, detector, reason, owner,
       expires_at, deleted, note, changed_by, changed_at
FROM allowlist_history WHERE `+where+` ORDER BY changed_at DESC, entry_id LIMIT {limit:UInt32}`)
	if err != nil {
		return nil, fmt.Errorf("read allowlist history: %w", err)
	}
	defer rows.Close()
	out := []AllowlistHistoryRow{}
	for rows.Next() {
		var h AllowlistHistoryRow
		var change string
		var exp *time.Time
		if err := rows.Scan(&h.EntryID, &change, &h.UserID, &h.PatientID, &h.Department, &h.Detector, &h.Reason, &h.Owner,
			&exp, &h.Deleted, &h.Note, &h.ChangedBy, &h.ChangedAt); err != nil {
			return nil, fmt.Errorf("read allowlist history: %w", err)
		}
		h.Change = AllowlistChange(change)
		if exp != nil {
			h.ExpiresAt = exp.UTC()
		}
		h.ChangedAt = h.ChangedAt.UTC()
		out = append(out, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read allowlist history: %w", err)
	}
	return out, nil
}

// AllowlistPatients returns the patient ids items name (for the audit).
func AllowlistPatients(items []AllowlistItem) []string {
	var out []string
	for _, it := range items {
		if it.PatientID != "" && !containsString(out, it.PatientID) {
			out = append(out, it.PatientID)
		}
	}
	return out
}

func containsString(l []string, v string) bool {
	for _, x := range l {
		if x == v {
			return true
		}
	}
	return false
}

// newEntryID returns "allow-YYYYMMDD-<8 random hex>".
func newEntryID(now time.Time) string {
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	return "allow-" + now.Format("20060102") + "-" + hex.EncodeToString(b[:])
}
