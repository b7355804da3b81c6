package triage

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Status is where an alert is in its lifecycle.
type Status string

// The statuses an alert can have.
const (
	StatusNew     Status = "new"
	StatusTriaged Status = "triaged"
	StatusClosed  Status = "closed"
)

// Statuses lists every status in lifecycle order.
var Statuses = []Status{StatusNew, StatusTriaged, StatusClosed}

// Valid reports whether s is a known status.
func (s Status) Valid() bool {
	return s == StatusNew || s == StatusTriaged || s == StatusClosed
}

// Disposition is the outcome recorded when an alert is closed.
type Disposition string

// The dispositions a closed alert can carry.
const (
	DispositionFalsePositive        Disposition = "false_positive"
	DispositionConfirmedViolation   Disposition = "confirmed_violation"
	DispositionPolicyException      Disposition = "policy_exception"
	DispositionUserEducated         Disposition = "user_educated"
	DispositionDuplicate            Disposition = "duplicate"
	DispositionInsufficientEvidence Disposition = "insufficient_evidence"
)

// Dispositions lists every disposition.
var Dispositions = []Disposition{
	DispositionFalsePositive, DispositionConfirmedViolation, DispositionPolicyException,
	DispositionUserEducated, DispositionDuplicate, DispositionInsufficientEvidence,
}

// Valid reports whether d is a known disposition.
func (d Disposition) Valid() bool {
	for _, k := range Dispositions {
		if d == k {
			return true
		}
	}
	return false
}

// Limits on analyst-entered text.
const (
	// MaxNoteBytes bounds one note (UTF-8 bytes).
	MaxNoteBytes = 4096
	// MaxAssigneeBytes bounds an assignee name.
	MaxAssigneeBytes = 256
	// MaxActorBytes bounds the recorded name of whoever made a change.
	MaxActorBytes = 256
)

// State is an alert's triage state at one version; History returns one per
// change.
type State struct {
	AlertID     string      `json:"alert_id"`
	Version     uint64      `json:"version"`
	Status      Status      `json:"status"`
	Assignee    string      `json:"assignee"`
	Disposition Disposition `json:"disposition,omitempty"`
	// Note is the note written with this change (empty if none); the full
	// thread is the history.
	Note      string     `json:"note,omitempty"`
	ChangedBy string     `json:"changed_by,omitempty"`
	ChangedAt *time.Time `json:"changed_at,omitempty"`
}

// initialState is the state of an alert nobody has touched.
func initialState(alertID string) State {
	return State{AlertID: alertID, Version: 0, Status: StatusNew}
}

// Change is one requested triage update. Nil fields are left as they are.
type Change struct {
	// ExpectedVersion is the version the caller last saw (0 for an alert
	// that is still new and untouched).
	ExpectedVersion uint64
	Status          *Status
	// Assignee sets the assignee; a pointer to "" unassigns.
	Assignee *string
	// Disposition is required when closing and only allowed then.
	Disposition *Disposition
	// Note is appended to the alert's history with this change.
	Note *string
}

// Actor is whoever asks for a change.
type Actor struct {
	// Name is recorded as changed_by (token name, OIDC subject, OS user).
	Name string
	// MayReopen allows closed → triaged.
	MayReopen bool
}

// ValidationError is a bad request: Field names the offending input.
type ValidationError struct {
	Field string
	Msg   string
}

func (e *ValidationError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func invalid(field, format string, args ...any) error {
	return &ValidationError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// ConflictError says the alert changed since the version the caller saw.
type ConflictError struct {
	Expected uint64
	Current  uint64
}

func (e *ConflictError) Error() string {
	return fmt.Sprintf("alert changed: expected version %d, current version is %d; reload and retry", e.Expected, e.Current)
}

// ErrNotFound is returned for an unknown alert.
var ErrNotFound = errors.New("not found")

// ErrForbidden is returned when the actor may not make the change (reopen).
var ErrForbidden = errors.New("forbidden")

// ForbiddenReason is the reason of an ErrForbidden error without the
// "forbidden: " prefix, as the API and the console show it.
func ForbiddenReason(err error) string {
	return strings.TrimPrefix(err.Error(), ErrForbidden.Error()+": ")
}

// apply validates ch against the current state and returns the next state
// (without version, actor and time).
func apply(cur State, ch Change, actor Actor) (State, error) {
	if ch.Status == nil && ch.Assignee == nil && ch.Disposition == nil && ch.Note == nil {
		return State{}, invalid("", "nothing to change: give status, assignee, disposition or note")
	}
	next := cur
	next.Note = ""
	if ch.Note != nil {
		if err := checkText("note", *ch.Note, MaxNoteBytes, true); err != nil {
			return State{}, err
		}
		if strings.TrimSpace(*ch.Note) == "" {
			return State{}, invalid("note", "must not be blank")
		}
		next.Note = *ch.Note
	}
	if ch.Assignee != nil {
		if err := checkText("assignee", *ch.Assignee, MaxAssigneeBytes, false); err != nil {
			return State{}, err
		}
		next.Assignee = strings.TrimSpace(*ch.Assignee)
	}
	to := cur.Status
	if ch.Status != nil {
		to = *ch.Status
		if !to.Valid() {
			return State{}, invalid("status", "must be one of new, triaged, closed")
		}
	}
	if ch.Disposition != nil && !ch.Disposition.Valid() {
		return State{}, invalid("disposition", "must be one of %s", joinDispositions())
	}
	if to != cur.Status {
		if err := checkTransition(cur.Status, to, actor); err != nil {
			return State{}, err
		}
	}
	next.Status = to
	switch {
	case to == StatusClosed && cur.Status != StatusClosed:
		if ch.Disposition == nil {
			return State{}, invalid("disposition", "required when closing an alert (one of %s)", joinDispositions())
		}
		next.Disposition = *ch.Disposition
	case to == StatusClosed: // stays closed
		if ch.Disposition != nil || ch.Assignee != nil {
			return State{}, invalid(firstSet(ch), "a closed alert only takes notes; reopen it (status triaged) to change it")
		}
	default:
		if ch.Disposition != nil {
			return State{}, invalid("disposition", "only allowed when closing (status closed)")
		}
		next.Disposition = ""
	}
	return next, nil
}

func firstSet(ch Change) string {
	if ch.Disposition != nil {
		return "disposition"
	}
	return "assignee"
}

// checkTransition enforces the lifecycle in the package documentation.
func checkTransition(from, to Status, actor Actor) error {
	switch {
	case from == StatusNew && (to == StatusTriaged || to == StatusClosed):
		return nil
	case from == StatusTriaged && to == StatusClosed:
		return nil
	case from == StatusClosed && to == StatusTriaged:
		if !actor.MayReopen {
			return fmt.Errorf("%w: reopening a closed alert needs the privacy_officer or admin role", ErrForbidden)
		}
		return nil
	}
	return invalid("status", "cannot go from %s to %s (allowed: new→triaged, new→closed, triaged→closed, closed→triaged)", from, to)
}

// AllowedTransitions returns the documented transitions, for the API docs.
func AllowedTransitions() map[Status][]Status {
	return map[Status][]Status{
		StatusNew:     {StatusTriaged, StatusClosed},
		StatusTriaged: {StatusClosed},
		StatusClosed:  {StatusTriaged},
	}
}

func joinDispositions() string {
	s := make([]string, len(Dispositions))
	for i, d := range Dispositions {
		s[i] = string(d)
	}
	return strings.Join(s, ", ")
}

// checkText bounds analyst text and rejects invalid UTF-8 and control
// characters (newlines and tabs are allowed in multi-line text). The value
// is never part of the error.
func checkText(field, s string, maxBytes int, multiline bool) error {
	if len(s) > maxBytes {
		return invalid(field, "too long (%d bytes; at most %d)", len(s), maxBytes)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	for _, r := range s {
		if multiline && (r == '\n' || r == '\t' || r == '\r') {
			continue
		}
		if unicode.IsControl(r) || r == '\u2028' || r == '\u2029' {
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

// CheckID validates an id given by a caller (alert, patient, user id):
// non-empty, bounded, printable. field names it in the error; the value is
// never echoed.
func CheckID(field, s string) error {
	if s == "" {
		return invalid(field, "required")
	}
	if len(s) > MaxIDBytes {
		return invalid(field, "too long (at most %d bytes)", MaxIDBytes)
	}
	if !utf8.ValidString(s) {
		return invalid(field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "contains a control character")
		}
	}
	return nil
}

// MaxIDBytes bounds ids in requests.
const MaxIDBytes = 128

// ParseTime parses a time given by a caller: a date (2026-01-31, midnight
// UTC) or an RFC 3339 time. "" is the zero time. Errors name field, never
// the value.
func ParseTime(field, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse("2006-01-02", v); err == nil {
		return t.UTC(), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
		if t.Year() < 1970 || t.Year() > 9999 {
			return time.Time{}, invalid(field, "out of range")
		}
		return t.UTC(), nil
	}
	return time.Time{}, invalid(field, "want a date (2026-01-31) or an RFC 3339 time (2026-01-31T08:00:00Z)")
}

// Redact replaces every occurrence of values (and of their backslash-escaped
// forms, as ClickHouse quotes parameter values in its errors) in msg, for
// error text that is about to be logged or printed. Values shorter than 3
// bytes are left alone.
func Redact(msg string, values ...string) string {
	esc := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	for _, v := range values {
		if len(v) < 3 {
			continue
		}
		once := esc.Replace(v)
		for _, form := range []string{esc.Replace(once), once, v} {
			msg = strings.ReplaceAll(msg, form, "[redacted]")
		}
	}
	return msg
}
