package detectors_test

import (
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestTerminated(t *testing.T) {
	fx := refFixture{users: []schemas.User{
		{UserID: "u-term", Role: "nurse", Status: schemas.UserTerminated, TerminatedAt: tp(t, "2026-09-15T17:00:00Z")},
		{UserID: "u-term-nodate", Role: "nurse", Status: schemas.UserTerminated},
		{UserID: "u-inactive", Role: "clerk", Status: schemas.UserInactive},
		{UserID: "u-active", Role: "nurse", Status: schemas.UserActive},
		// Terminated at the first 01:30 of the repeated hour in New York.
		{UserID: "u-dst", Role: "nurse", Status: schemas.UserTerminated, TerminatedAt: tp(t, "2026-11-01T01:30:00-04:00")},
	}}
	ev := func(id, at, user string) *schemas.AccessEvent { return access(id, at, user, "nurse", "surgery", "p1") }
	failed := func(e *schemas.AccessEvent) { e.Outcome = schemas.OutcomeFailure }
	tests := []struct {
		name  string
		grace time.Duration
		ev    *schemas.AccessEvent
		want  schemas.Severity
	}{
		{"before termination", 0, ev("e1", "2026-09-15T16:59:59Z", "u-term"), ""},
		{"exactly at terminated_at", 0, ev("e2", "2026-09-15T17:00:00Z", "u-term"), ""},
		{"same instant, other offset", 0, ev("e3", "2026-09-15T13:00:00-04:00", "u-term"), ""},
		{"after termination", 0, ev("e4", "2026-09-15T17:00:00.000000001Z", "u-term"), schemas.SeverityCritical},
		{"after termination, refused", 0, with(ev("e5", "2026-09-16T10:00:00Z", "u-term"), failed), schemas.SeverityHigh},
		{"within grace", time.Hour, ev("e6", "2026-09-15T17:30:00Z", "u-term"), ""},
		{"after grace", time.Hour, ev("e7", "2026-09-15T18:30:00Z", "u-term"), schemas.SeverityCritical},
		{"terminated, time unknown", 0, ev("e8", "2026-01-01T00:00:00Z", "u-term-nodate"), schemas.SeverityCritical},
		{"inactive", 0, ev("e9", "2026-01-01T00:00:00Z", "u-inactive"), schemas.SeverityHigh},
		{"inactive, refused", 0, with(ev("e10", "2026-01-01T00:00:00Z", "u-inactive"), failed), schemas.SeverityMedium},
		{"active", 0, ev("e11", "2026-01-01T00:00:00Z", "u-active"), ""},
		{"unknown user", 0, ev("e12", "2026-01-01T00:00:00Z", "u-nobody"), ""},
		// The two 01:30s of 2026-11-01 in New York are an hour apart.
		{"DST: first 01:30 is terminated_at", 0, ev("e13", "2026-11-01T01:30:00-04:00", "u-dst"), ""},
		{"DST: second 01:30 is an hour later", 0, ev("e14", "2026-11-01T01:30:00-05:00", "u-dst"), schemas.SeverityCritical},
		{"DST: 01:29 EDT is before terminated_at", 0, ev("e15", "2026-11-01T01:29:00-04:00", "u-dst"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultTerminatedConfig()
			cfg.GracePeriod = tc.grace
			d, err := detectors.NewTerminated(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			f := detectOne(t, d, tc.ev)
			wantFinding(t, f, tc.want)
			if f != nil && f.Evidence.Facts["user_status"] == "" {
				t.Error("missing user_status fact")
			}
		})
	}
}
