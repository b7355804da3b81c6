package detectors

import (
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestLocalDay(t *testing.T) {
	ny, _ := time.LoadLocation("America/New_York")
	havana, _ := time.LoadLocation("America/Havana")
	cases := []struct {
		name      string
		at        time.Time
		loc       *time.Location
		wantStart time.Time
		hours     float64
	}{
		{"plain day", time.Date(2026, 7, 1, 12, 0, 0, 0, ny), ny, time.Date(2026, 7, 1, 4, 0, 0, 0, time.UTC), 24},
		{"fall back is 25h", time.Date(2026, 11, 1, 1, 30, 0, 0, ny), ny, time.Date(2026, 11, 1, 4, 0, 0, 0, time.UTC), 25},
		{"spring forward is 23h", time.Date(2026, 3, 8, 12, 0, 0, 0, ny), ny, time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), 23},
		// Havana springs forward at local midnight: 2026-03-08 begins at 01:00 CDT.
		{"midnight skipped", time.Date(2026, 3, 8, 12, 0, 0, 0, havana), havana, time.Date(2026, 3, 8, 5, 0, 0, 0, time.UTC), 23},
	}
	for _, c := range cases {
		start, end := LocalDay(c.at, c.loc)
		if !start.Equal(c.wantStart) {
			t.Errorf("%s: start %v, want %v", c.name, start, c.wantStart)
		}
		if got := end.Sub(start).Hours(); got != c.hours {
			t.Errorf("%s: day is %vh, want %vh", c.name, got, c.hours)
		}
		if c.at.Before(start) || !c.at.Before(end) {
			t.Errorf("%s: %v not inside [%v, %v)", c.name, c.at, start, end)
		}
	}
}

func TestExplainedPolicySeverity(t *testing.T) {
	report := ExplainedPolicy{Report: true, Severity: schemas.SeverityLow}
	silent := ExplainedPolicy{Report: false, Severity: schemas.SeverityInfo}
	tests := []struct {
		name      string
		p         ExplainedPolicy
		explained bool
		action    schemas.Action
		want      schemas.Severity
		wantOK    bool
	}{
		{"explained, reported", report, true, schemas.ActionView, schemas.SeverityLow, true},
		{"explained disclosure keeps the policy's severity", report, true, schemas.ActionPrint, schemas.SeverityLow, true},
		{"explained, not reported", silent, true, schemas.ActionView, schemas.SeverityInfo, false},
		{"unexplained view", silent, false, schemas.ActionView, schemas.SeverityMedium, true},
		{"unexplained print is raised", silent, false, schemas.ActionPrint, schemas.SeverityHigh, true},
		{"unexplained export is raised", report, false, schemas.ActionExport, schemas.SeverityHigh, true},
	}
	for _, tt := range tests {
		got, ok := tt.p.severity(tt.explained, schemas.SeverityMedium, tt.action)
		if ok != tt.wantOK || (ok && got != tt.want) {
			t.Errorf("%s: severity = %s, %v; want %s, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
