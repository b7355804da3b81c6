package detectors_test

import (
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestCoworker(t *testing.T) {
	fx := refFixture{
		users: []schemas.User{
			{UserID: "u1", Role: "nurse", Department: "Surgery", Status: schemas.UserActive},
			{UserID: "u2", Role: "nurse", Department: "surgery", Status: schemas.UserActive},
			{UserID: "u3", Role: "pharmacist", Department: "Pharmacy", Status: schemas.UserActive},
		},
		patients: []schemas.Patient{
			{PatientID: "p2", EmployeeUserID: "u2"},
			{PatientID: "p3", EmployeeUserID: "u3"},
			{PatientID: "p4"},
			{PatientID: "p5", EmployeeUserID: "u2"},
		},
		encounters: []schemas.Encounter{
			{EncounterID: "e5", PatientID: "p5", Department: "Surgery", Start: mustTime(t, "2026-07-01T08:00:00Z"), End: tp(t, "2026-07-01T09:00:00Z")},
		},
	}
	at := "2026-07-01T13:00:00Z"
	print := func(e *schemas.AccessEvent) { e.Action = schemas.ActionPrint }
	tests := []struct {
		name   string
		report bool
		ev     *schemas.AccessEvent
		want   schemas.Severity
	}{
		{"same department (case-insensitive)", false, access("e1", at, "u1", "nurse", "Surgery", "p2"), schemas.SeverityHigh},
		{"other department", false, access("e2", at, "u1", "nurse", "Surgery", "p3"), schemas.SeverityMedium},
		{"other department, print", false, with(access("e3", at, "u1", "nurse", "Surgery", "p3"), print), schemas.SeverityHigh},
		{"same department, print", false, with(access("e4", at, "u1", "nurse", "Surgery", "p2"), print), schemas.SeverityCritical},
		{"patient not an employee", false, access("e5", at, "u1", "nurse", "Surgery", "p4"), ""},
		{"employee opens own chart", false, access("e6", at, "u2", "nurse", "surgery", "p2"), ""},
		{"explained, not reported", false, access("e7", at, "u1", "nurse", "Surgery", "p5"), ""},
		{"explained, reported as info", true, access("e8", at, "u1", "nurse", "Surgery", "p5"), schemas.SeverityInfo},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultCoworkerConfig()
			cfg.Explained.Report = tc.report
			d, err := detectors.NewCoworker(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			wantFinding(t, detectOne(t, d, tc.ev), tc.want)
		})
	}
}
