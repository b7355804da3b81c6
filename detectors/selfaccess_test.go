package detectors_test

import (
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestSelfAccess(t *testing.T) {
	fx := refFixture{
		users: []schemas.User{
			{UserID: "u1", Role: "nurse", Department: "oncology", Status: schemas.UserActive, PatientID: "p1"},
			{UserID: "u2", Role: "clerk", Department: "admissions", Status: schemas.UserActive},
		},
		patients: []schemas.Patient{{PatientID: "p1"}, {PatientID: "p2", EmployeeUserID: "u2"}, {PatientID: "p3"}},
	}
	base := access("e1", "2026-05-04T13:00:00Z", "u1", "nurse", "oncology", "p1")
	act := func(a schemas.Action) func(*schemas.AccessEvent) {
		return func(e *schemas.AccessEvent) { e.Action = a }
	}
	tests := []struct {
		name     string
		severity schemas.Severity // configured base
		ev       *schemas.AccessEvent
		want     schemas.Severity
		link     string
	}{
		{"own MRN, view", "", base, schemas.SeverityMedium, "user_patient_id"},
		{"own MRN, export", "", with(base, act(schemas.ActionExport)), schemas.SeverityHigh, "user_patient_id"},
		{"own MRN, print", "", with(base, act(schemas.ActionPrint)), schemas.SeverityHigh, "user_patient_id"},
		{"own MRN, update", "", with(base, act(schemas.ActionUpdate)), schemas.SeverityHigh, "user_patient_id"},
		{"chart linked to the account", "", access("e2", "2026-05-04T13:00:00Z", "u2", "clerk", "admissions", "p2"), schemas.SeverityMedium, "patient_employee_user_id"},
		{"another patient", "", with(base, func(e *schemas.AccessEvent) { e.PatientID = "p3" }), "", ""},
		{"co-worker's chart is not self", "", with(base, func(e *schemas.AccessEvent) { e.PatientID = "p2" }), "", ""},
		{"unknown user and patient", "", access("e3", "2026-05-04T13:00:00Z", "u9", "nurse", "oncology", "p9"), "", ""},
		{"configured low, view", schemas.SeverityLow, base, schemas.SeverityLow, "user_patient_id"},
		{"configured low, export", schemas.SeverityLow, with(base, act(schemas.ActionExport)), schemas.SeverityMedium, "user_patient_id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultSelfAccessConfig()
			if tc.severity != "" {
				cfg.Severity = tc.severity
			}
			d, err := detectors.NewSelfAccess(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			f := detectOne(t, d, tc.ev)
			wantFinding(t, f, tc.want)
			if f != nil {
				if f.Evidence.Facts["link"] != tc.link {
					t.Errorf("link fact %q, want %q", f.Evidence.Facts["link"], tc.link)
				}
				if f.Detector != "self_access" || f.UserID != tc.ev.UserID || f.PatientID != tc.ev.PatientID {
					t.Errorf("finding ids: %+v", f)
				}
			}
		})
	}
}

func TestSelfAccessConfigValidate(t *testing.T) {
	cfg := detectors.DefaultSelfAccessConfig()
	if err := cfg.Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cfg.Severity = "urgent"
	if err := cfg.Validate(); err == nil {
		t.Error("severity urgent accepted")
	}
}
