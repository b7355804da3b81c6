package schemas

import (
	"math"
	"strings"
	"testing"
	"time"
)

func validFinding() Finding {
	start := time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)
	end := start.Add(24 * time.Hour)
	return Finding{
		FindingID:   FindingID("family_snooping", []string{"u-1", "MRN-1"}, start, end),
		Detector:    "family_snooping",
		Severity:    SeverityHigh,
		Score:       87,
		FacilityID:  "fac-1",
		UserID:      "u-1",
		PatientID:   "MRN-1",
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    []string{"e1", "e2"},
		Explanation: "user viewed the chart of a patient sharing their last name and address",
		Evidence: Evidence{
			Observed: 3, Baseline: 0.1, Threshold: 1,
			Facts:        map[string]string{"relationship": "same_last_name_and_address"},
			WouldExplain: "an encounter with the user on the care team",
		},
	}
}

func TestFindingValidate(t *testing.T) {
	good := validFinding()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		mut   func(*Finding)
		field string
		class ErrorClass
	}{
		{"no id", func(f *Finding) { f.FindingID = "" }, "finding_id", ClassMissingField},
		{"bad id", func(f *Finding) { f.FindingID = strings.Repeat("G", 32) }, "finding_id", ClassInvalidValue},
		{"upper-case id", func(f *Finding) { f.FindingID = strings.ToUpper(good.FindingID) + "" }, "finding_id", ClassInvalidValue},
		{"no detector", func(f *Finding) { f.Detector = "" }, "detector", ClassMissingField},
		{"no facility", func(f *Finding) { f.FacilityID = "" }, "facility_id", ClassMissingField},
		{"no user", func(f *Finding) { f.UserID = "" }, "user_id", ClassMissingField},
		{"no explanation", func(f *Finding) { f.Explanation = "" }, "explanation", ClassMissingField},
		{"no severity", func(f *Finding) { f.Severity = "" }, "severity", ClassMissingField},
		{"bad severity", func(f *Finding) { f.Severity = "urgent" }, "severity", ClassInvalidValue},
		{"score 101", func(f *Finding) { f.Score = 101 }, "score", ClassInvalidValue},
		{"no window start", func(f *Finding) { f.WindowStart = time.Time{} }, "window_start", ClassMissingField},
		{"no window end", func(f *Finding) { f.WindowEnd = time.Time{} }, "window_end", ClassMissingField},
		{"end before start", func(f *Finding) { f.WindowEnd = f.WindowStart.Add(-time.Second) }, "window_end", ClassInvalidValue},
		{"no events", func(f *Finding) { f.EventIDs = nil }, "event_ids", ClassMissingField},
		{"too many events", func(f *Finding) { f.EventIDs = make([]string, MaxFindingEventIDs+1) }, "event_ids", ClassTooLarge},
		{"empty event id", func(f *Finding) { f.EventIDs = []string{"e1", ""} }, "event_ids", ClassInvalidValue},
		{"NaN", func(f *Finding) { f.Evidence.Baseline = math.NaN() }, "evidence", ClassInvalidValue},
		{"Inf", func(f *Finding) { f.Evidence.Spread = math.Inf(-1) }, "evidence", ClassInvalidValue},
		{"long fact", func(f *Finding) { f.Evidence.Facts = map[string]string{"k": strings.Repeat("v", MaxFactLen+1)} }, "evidence.facts", ClassTooLarge},
		{"empty fact key", func(f *Finding) { f.Evidence.Facts = map[string]string{"": "v"} }, "evidence.facts", ClassMissingField},
		{"long explanation", func(f *Finding) { f.Explanation = strings.Repeat("x", MaxExplanationLen+1) }, "explanation", ClassTooLarge},
	}
	for _, c := range cases {
		f := validFinding()
		c.mut(&f)
		assertDecodeError(t, f.Validate(), c.field, c.class)
	}
}
