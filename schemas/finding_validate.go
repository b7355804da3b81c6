package schemas

import "math"

// Limits on the free-text parts of a Finding.
const (
	// MaxExplanationLen bounds Finding.Explanation.
	MaxExplanationLen = 4096
	// MaxFactLen bounds each value of Evidence.Facts.
	MaxFactLen = 256
	// MaxWouldExplainLen bounds Evidence.WouldExplain and
	// Finding.SuppressionReason.
	MaxWouldExplainLen = 1024
)

// findingRequired lists the members every emitted finding carries;
// jsonschema/finding.schema.json must agree (a test checks).
var findingRequired = []string{
	"finding_id", "detector", "severity", "score", "facility_id", "user_id",
	"window_start", "window_end", "event_ids", "explanation", "evidence", "suppressed",
}

// Validate checks a finding before it is stored or sent: finding_id is 32
// lower-case hex digits (as FindingID makes); detector, facility_id,
// user_id and explanation are set; severity is known; score ≤ 100; the
// window is set, in the storable range, and does not end before it starts;
// event_ids holds 1..MaxFindingEventIDs non-empty ids; evidence numbers are
// finite (JSON cannot carry NaN or ±Inf); strings respect their limits. The
// error is a *DecodeError naming the field.
func (f *Finding) Validate() error {
	if de := f.validate(); de != nil {
		return de
	}
	return nil
}

func (f *Finding) validate() *DecodeError {
	if len(f.FindingID) != 32 || !isLowerHex(f.FindingID) {
		if f.FindingID == "" {
			return newErr("finding_id", ClassMissingField, rEmpty, -1)
		}
		return newErr("finding_id", ClassInvalidValue, rBadFindingID, -1)
	}
	if de := checkStrings(
		stringField{"detector", f.Detector, MaxIDLen, true, true},
		stringField{"facility_id", f.FacilityID, MaxIDLen, true, true},
		stringField{"user_id", f.UserID, MaxIDLen, true, true},
		stringField{"patient_id", f.PatientID, MaxIDLen, false, true},
		stringField{"explanation", f.Explanation, MaxExplanationLen, true, false},
		stringField{"suppression_reason", f.SuppressionReason, MaxWouldExplainLen, false, false},
		stringField{"evidence.would_explain", f.Evidence.WouldExplain, MaxWouldExplainLen, false, false},
	); de != nil {
		return de
	}
	if f.Severity == "" {
		return newErr("severity", ClassMissingField, rEmpty, -1)
	}
	if !f.Severity.Valid() {
		return newErr("severity", ClassInvalidValue, rBadSeverity, -1)
	}
	if f.Score > 100 {
		return newErr("score", ClassInvalidValue, rScoreRange, -1)
	}
	if f.WindowStart.IsZero() {
		return newErr("window_start", ClassMissingField, rEmpty, -1)
	}
	if f.WindowEnd.IsZero() {
		return newErr("window_end", ClassMissingField, rEmpty, -1)
	}
	if !InTimeRange(f.WindowStart) {
		return newErr("window_start", ClassInvalidTime, rTimeRange, -1)
	}
	if !InTimeRange(f.WindowEnd) {
		return newErr("window_end", ClassInvalidTime, rTimeRange, -1)
	}
	if f.WindowEnd.Before(f.WindowStart) {
		return newErr("window_end", ClassInvalidValue, rEndBeforeStart, -1)
	}
	if len(f.EventIDs) == 0 {
		return newErr("event_ids", ClassMissingField, rEmpty, -1)
	}
	if len(f.EventIDs) > MaxFindingEventIDs {
		return newErr("event_ids", ClassTooLarge, rTooManyItems, -1)
	}
	for _, id := range f.EventIDs {
		if id == "" {
			return newErr("event_ids", ClassInvalidValue, rEmptyItem, -1)
		}
		if de := checkString("event_ids", id, MaxIDLen, true, true); de != nil {
			return de
		}
	}
	for _, x := range [...]float64{f.Evidence.Observed, f.Evidence.Baseline, f.Evidence.Spread, f.Evidence.PeerValue, f.Evidence.Threshold} {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return newErr("evidence", ClassInvalidValue, rNotFinite, -1)
		}
	}
	for k, v := range f.Evidence.Facts {
		if de := checkString("evidence.facts", k, MaxIDLen, true, true); de != nil {
			return de
		}
		if de := checkString("evidence.facts", v, MaxFactLen, false, false); de != nil {
			return de
		}
	}
	return nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
