package detectors_test

import (
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestDeceased(t *testing.T) {
	fx := refFixture{
		users: []schemas.User{{UserID: "u1", Role: "nurse", Department: "oncology", Status: schemas.UserActive}},
		patients: []schemas.Patient{
			{PatientID: "p-dead", DeceasedAt: tp(t, "2026-01-01T12:00:00Z")},
			{PatientID: "p-alive"},
			{PatientID: "p-dead-open", DeceasedAt: tp(t, "2026-01-01T12:00:00Z")},
			{PatientID: "p-dead-stranger", DeceasedAt: tp(t, "2026-01-01T12:00:00Z")},
		},
		encounters: []schemas.Encounter{
			{EncounterID: "e1", PatientID: "p-dead-open", Department: "Oncology", Start: mustTime(t, "2025-12-01T00:00:00Z")},
			// The oncology nurse's relationship with p-dead: an oncology
			// stay that ended two days before the death.
			{EncounterID: "e2", PatientID: "p-dead", Department: "Oncology", Start: mustTime(t, "2025-12-20T00:00:00Z"), End: tp(t, "2025-12-30T12:00:00Z")},
		},
	}
	nurse := func(id, at, patient string) *schemas.AccessEvent {
		return access(id, at, "u1", "nurse", "oncology", patient)
	}
	tests := []struct {
		name  string
		grace time.Duration
		ev    *schemas.AccessEvent
		want  schemas.Severity
	}{
		{"within grace", -1, nurse("e1", "2026-01-20T12:00:00Z", "p-dead"), ""},
		{"exactly at the end of grace", -1, nurse("e2", "2026-01-31T12:00:00Z", "p-dead"), ""},
		{"just after grace", -1, nurse("e3", "2026-01-31T12:00:00.000000001Z", "p-dead"), schemas.SeverityMedium},
		{"export after grace", -1, with(nurse("e4", "2026-03-06T15:00:00Z", "p-dead"), func(e *schemas.AccessEvent) { e.Action = schemas.ActionExport }), schemas.SeverityHigh},
		{"billing role", -1, access("e5", "2026-03-06T15:00:00Z", "u2", "Billing", "finance", "p-dead"), ""},
		{"HIM department, any role", -1, access("e6", "2026-03-06T15:00:00Z", "u3", "analyst", "Health Information Management", "p-dead"), ""},
		{"explained by an open encounter", -1, nurse("e7", "2026-03-06T15:00:00Z", "p-dead-open"), ""},
		{"not deceased", -1, nurse("e8", "2026-03-06T15:00:00Z", "p-alive"), ""},
		{"zero grace fires right after death", 0, nurse("e9", "2026-01-01T12:00:01Z", "p-dead"), schemas.SeverityMedium},
		{"access before death", 0, nurse("e10", "2025-12-31T12:00:00Z", "p-dead"), ""},
		{"no relationship: reported from the first day", -1, nurse("e11", "2026-01-02T12:00:00Z", "p-dead-stranger"), schemas.SeverityMedium},
		{"no relationship, a minute after death", -1, nurse("e12", "2026-01-01T12:01:00Z", "p-dead-stranger"), schemas.SeverityMedium},
		{"no relationship, billing role", -1, access("e13", "2026-01-02T12:00:00Z", "u2", "Billing", "finance", "p-dead-stranger"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultDeceasedConfig()
			if tc.grace >= 0 {
				cfg.GracePeriod = tc.grace
			}
			d, err := detectors.NewDeceased(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			wantFinding(t, detectOne(t, d, tc.ev), tc.want)
		})
	}
}

func TestDeceasedConfigValidate(t *testing.T) {
	cfg := detectors.DefaultDeceasedConfig()
	cfg.GracePeriod = -time.Hour
	err := cfg.Validate()
	if err == nil || err.Error() != "grace_period: must be ≥ 0 (got -1h0m0s)" {
		t.Errorf("Validate() = %v", err)
	}
}
