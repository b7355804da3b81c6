package detectors_test

import (
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestVIP(t *testing.T) {
	fx := refFixture{
		users: []schemas.User{
			{UserID: "u-ortho", Role: "nurse", Department: "orthopedics", Status: schemas.UserActive},
			{UserID: "u-oncall", Role: "physician", Department: "hospitalist", Status: schemas.UserActive},
			{UserID: "u-neuro", Role: "physician", Department: "neurology", Status: schemas.UserActive},
			{UserID: "u-vip", Role: "clerk", Department: "admissions", Status: schemas.UserActive, PatientID: "p-vip"},
		},
		patients: []schemas.Patient{{PatientID: "p-vip", VIP: true}, {PatientID: "p-plain"}},
		encounters: []schemas.Encounter{{EncounterID: "e1", PatientID: "p-vip", Department: "Neurology",
			Start: mustTime(t, "2026-08-01T10:00:00Z"), End: tp(t, "2026-08-03T10:00:00Z"), CareTeam: []string{"u-oncall"}}},
	}
	at := "2026-08-02T03:00:00Z"
	tests := []struct {
		name   string
		report bool
		ev     *schemas.AccessEvent
		want   schemas.Severity
	}{
		{"unexplained view", false, access("e1", at, "u-ortho", "nurse", "orthopedics", "p-vip"), schemas.SeverityHigh},
		{"unexplained print", false, with(access("e2", at, "u-ortho", "nurse", "orthopedics", "p-vip"), func(e *schemas.AccessEvent) { e.Action = schemas.ActionPrint }), schemas.SeverityCritical},
		{"on-call physician on the care team", false, access("e3", at, "u-oncall", "physician", "hospitalist", "p-vip"), ""},
		{"encounter in the user's department", false, access("e4", at, "u-neuro", "physician", "neurology", "p-vip"), ""},
		{"explained, reported", true, access("e5", at, "u-neuro", "physician", "neurology", "p-vip"), schemas.SeverityInfo},
		{"not a VIP", false, access("e6", at, "u-ortho", "nurse", "orthopedics", "p-plain"), ""},
		{"the VIP opens their own chart", false, access("e7", at, "u-vip", "clerk", "admissions", "p-vip"), ""},
		{"department falls back to the reference user", false, access("e8", at, "u-neuro", "physician", "", "p-vip"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultVIPConfig()
			cfg.Explained.Report = tc.report
			d, err := detectors.NewVIP(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			f := detectOne(t, d, tc.ev)
			wantFinding(t, f, tc.want)
			if f != nil && !tc.report && f.Evidence.WouldExplain == "" {
				t.Error("unexplained finding without WouldExplain")
			}
		})
	}
}
