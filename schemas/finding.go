package schemas

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"time"
)

// Severity ranks how urgent a finding is.
type Severity string

// The severities, lowest first.
const (
	SeverityInfo     Severity = "info"
	SeverityLow      Severity = "low"
	SeverityMedium   Severity = "medium"
	SeverityHigh     Severity = "high"
	SeverityCritical Severity = "critical"
)

// Rank orders severities: info=1 … critical=5; unknown is 0.
func (s Severity) Rank() int {
	switch s {
	case SeverityInfo:
		return 1
	case SeverityLow:
		return 2
	case SeverityMedium:
		return 3
	case SeverityHigh:
		return 4
	case SeverityCritical:
		return 5
	}
	return 0
}

// Valid reports whether s is one of the known severities.
func (s Severity) Valid() bool { return s.Rank() > 0 }

// MaxFindingEventIDs bounds how many event ids one finding carries.
const MaxFindingEventIDs = 50

// Evidence is the structured part of a finding's explanation: what was
// observed, what was expected, and which reference facts were used. It holds
// ids and numbers, never names, addresses or free text from the EHR.
type Evidence struct {
	Observed  float64 `json:"observed,omitempty"`
	Baseline  float64 `json:"baseline,omitempty"`
	Spread    float64 `json:"spread,omitempty"`
	PeerValue float64 `json:"peer_value,omitempty"`
	Threshold float64 `json:"threshold,omitempty"`
	// Facts are named reference facts the detector relied on, such as
	// "relationship": "same_last_name_and_address" or "deceased_at": "2026-03-01".
	Facts map[string]string `json:"facts,omitempty"`
	// WouldExplain says what would have explained the access, for example
	// "an encounter in cardiology within 24h".
	WouldExplain string `json:"would_explain,omitempty"`
}

// Finding is one detector's verdict about one user's (and possibly one
// patient's) activity in one window.
type Finding struct {
	FindingID   string    `json:"finding_id"`
	Detector    string    `json:"detector"`
	Severity    Severity  `json:"severity"`
	Score       uint8     `json:"score"` // 0–100
	FacilityID  string    `json:"facility_id"`
	UserID      string    `json:"user_id"`
	PatientID   string    `json:"patient_id,omitempty"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	EventIDs    []string  `json:"event_ids"`
	Explanation string    `json:"explanation"`
	Evidence    Evidence  `json:"evidence"`
	// Suppressed is true when an allowlist entry matched; the finding is
	// still stored so the suppression can be audited.
	Suppressed        bool   `json:"suppressed"`
	SuppressionReason string `json:"suppression_reason,omitempty"`

	// ReceivedAt is the Kafka timestamp of the event that completed the
	// finding, set by the pipeline for the latency metrics
	// (ehrwatch_event_to_stored_seconds, ehrwatch_event_to_alert_seconds).
	// It is not stored, not serialized and not part of the finding's
	// identity; zero when unknown (a finding read back from storage).
	ReceivedAt time.Time `json:"-"`
}

// FindingID derives a deterministic id from the detector, a detector-chosen
// key (user, patient, …) and the window, so that reprocessing the same
// events yields the same ids and storage collapses the duplicates.
func FindingID(detector string, key []string, windowStart, windowEnd time.Time) string {
	h := sha256.New()
	h.Write([]byte(detector))
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(key, "\x1f")))
	h.Write([]byte{0})
	h.Write([]byte(windowStart.UTC().Format(time.RFC3339Nano)))
	h.Write([]byte{0})
	h.Write([]byte(windowEnd.UTC().Format(time.RFC3339Nano)))
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// FormatDuration renders d compactly for finding and alert explanations
// ("24h", "1h30m", "45m", "720h").
func FormatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
