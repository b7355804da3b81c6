package alerting

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Change says what happened to an alert in one Observe call.
type Change string

// The changes, in increasing order of urgency.
const (
	// ChangeUpdated: more findings joined; no notification (suppressed by
	// the repeat interval).
	ChangeUpdated Change = "updated"
	// ChangeRepeated: more findings joined and the repeat interval had
	// passed; notified again.
	ChangeRepeated Change = "repeated"
	// ChangeEscalated: the severity rose above the last notified one.
	ChangeEscalated Change = "escalated"
	// ChangeNew: the alert was raised.
	ChangeNew Change = "new"
	// ChangeResolved: the alert was closed in triage (lifecycle loop
	// only; never returned by Observe).
	ChangeResolved Change = "resolved"
)

func (c Change) rank() int {
	switch c {
	case ChangeRepeated:
		return 1
	case ChangeEscalated:
		return 2
	case ChangeNew:
		return 3
	}
	return 0
}

// Alert is one row of the alerts table plus what Observe decided about
// notifying it.
type Alert struct {
	// AlertID is derived from the rule, the group key and the window
	// start, so reprocessing the same findings yields the same id.
	AlertID  string           `json:"alert_id"`
	Rule     string           `json:"rule"`
	Detector string           `json:"detector"`
	Severity schemas.Severity `json:"severity"`
	// Score is 0–100: the highest finding score of the group; for
	// user_risk, the peak accumulated risk capped at 100.
	Score      uint8  `json:"score"`
	FacilityID string `json:"facility_id"`
	// UserID is set when the rule groups by user; PatientID when it groups
	// by patient. Otherwise empty.
	UserID    string    `json:"user_id"`
	PatientID string    `json:"patient_id"`
	FirstSeen time.Time `json:"first_seen"`
	LastSeen  time.Time `json:"last_seen"`
	// FindingCount counts the group's distinct findings; FindingIDs holds
	// the earliest of them (capped by limits.max_finding_ids).
	FindingCount uint32   `json:"finding_count"`
	FindingIDs   []string `json:"finding_ids"`
	// Explanation is one plain sentence about the group, ending with the
	// first finding's own explanation. It names patients by id.
	Explanation string `json:"explanation"`
	// Summary is the explanation without anything that identifies a
	// patient, for outputs that must not carry patient data.
	Summary string `json:"-"`
	// Version increases with every update; the table keeps the highest.
	Version uint64 `json:"version"`
	// NotifiedVersion is the version last handed to the outputs (0:
	// never): the alert fires in Alertmanager from then until it is closed
	// in triage, and a resend carries the same idempotency key.
	NotifiedVersion uint64 `json:"notified_version"`

	// Change is what this Observe call did to the alert.
	Change Change `json:"-"`
	// Notify is true when the alert was handed to the outputs.
	Notify bool `json:"-"`

	// Resolved marks a closing sent by the lifecycle loop: ResolvedAt is
	// when triage closed the alert, CloseKey the triage state version
	// the closing followed (it names the closing in the webhook-id).
	Resolved   bool      `json:"-"`
	ResolvedAt time.Time `json:"-"`
	CloseKey   uint64    `json:"-"`

	// eventAt is the Kafka timestamp of the event behind the finding that
	// made this Observe notify the alert (schemas.Finding.ReceivedAt), for
	// ehrwatch_event_to_alert_seconds; zero when unknown.
	eventAt time.Time
}

// AlertID derives the id of the alert of rule for the group key parts and
// the window starting at windowStart: 32 hex characters.
func AlertID(rule string, key []string, windowStart time.Time) string {
	h := sha256.New()
	h.Write([]byte("ehrwatch.alert.v1"))
	h.Write([]byte{0})
	h.Write([]byte(rule))
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(key, "\x1f")))
	h.Write([]byte{0})
	h.Write([]byte(windowStart.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// A version holds the finding count in its high 22 bits and last_seen in
// Unix milliseconds in the low 42.
const (
	versionMillisBits = 42 // Unix ms fit in 42 bits until the year 2109
	maxVersionCount   = 1<<(64-versionMillisBits) - 1
)

// alertVersion orders the rows of one alert: first by finding count (a
// group only grows), then by last_seen. A group rebuilt from fewer
// findings after a restart therefore never overrides a fuller row.
func alertVersion(count uint32, lastSeen time.Time) uint64 {
	c := uint64(count)
	if c > maxVersionCount {
		c = maxVersionCount
	}
	ms := lastSeen.UnixMilli()
	if ms < 0 {
		ms = 0
	}
	return c<<versionMillisBits | uint64(ms)&(1<<versionMillisBits-1)
}

// windowStart returns the start of the epoch-aligned window of length d
// containing t.
func windowStart(t time.Time, d time.Duration) time.Time {
	ms := t.UnixMilli()
	dm := d.Milliseconds()
	start := ms - ms%dm
	if ms < 0 && ms%dm != 0 {
		start -= dm
	}
	return time.UnixMilli(start).UTC()
}

// findingTime is when a finding happened, in finding time: the access
// time the detector recorded as the event_time fact when it lies in the
// finding's window (per-access findings span a whole day), else the end of
// the finding's window.
func findingTime(f *schemas.Finding) time.Time {
	if s := f.Evidence.Facts["event_time"]; s != "" {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil &&
			!t.Before(f.WindowStart) && !t.After(f.WindowEnd) {
			return t.UTC()
		}
	}
	return f.WindowEnd.UTC()
}

// formatSpan renders "at 2026-03-05 09:10 UTC", "between 2026-03-05 09:10
// and 11:40 UTC" or, across days, "between 2026-03-05 22:10 and
// 2026-03-06 01:40 UTC".
func formatSpan(first, last time.Time) string {
	first, last = first.UTC(), last.UTC()
	const day, clock = "2006-01-02 15:04", "15:04"
	switch {
	case first.Truncate(time.Minute).Equal(last.Truncate(time.Minute)):
		return "at " + first.Format(day) + " UTC"
	case first.Format("2006-01-02") == last.Format("2006-01-02"):
		return "between " + first.Format(day) + " and " + last.Format(clock) + " UTC"
	default:
		return "between " + first.Format(day) + " and " + last.Format(day) + " UTC"
	}
}

// plural renders "1 finding", "3 findings".
func plural(n int, word string) string {
	s := strconv.Itoa(n) + " " + word
	if n != 1 {
		return s + "s"
	}
	return s
}

// clause trims a trailing full stop so clauses can be joined.
func clause(s string) string {
	s = strings.TrimSpace(s)
	s = strings.Join(strings.Fields(s), " ") // one line, single spaces
	return strings.TrimRight(s, ".")
}

// joinExplanation ends the group sentence with the first finding's
// explanation.
func joinExplanation(summary, label, first string) string {
	first = clause(first)
	if first == "" {
		return summary + "."
	}
	return summary + "; " + label + ": " + first + "."
}
