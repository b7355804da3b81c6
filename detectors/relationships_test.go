package detectors_test

import (
	"context"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Relationship links are read from both sides in every detector: one
// test per link and direction (issue #17).

// detectLinked runs one detector on one event and returns its findings.
func detectLinked(t *testing.T, name string, f refFixture, ev *schemas.AccessEvent) []schemas.Finding {
	t.Helper()
	env := f.env(t)
	var d detectors.Detector
	var err error
	switch name {
	case "coworker":
		d, err = detectors.NewCoworker(detectors.DefaultCoworkerConfig(), env)
	case "self_access":
		d, err = detectors.NewSelfAccess(detectors.DefaultSelfAccessConfig(), env)
	case "family":
		d, err = detectors.NewFamily(detectors.DefaultFamilyConfig(), env)
	}
	if err != nil {
		t.Fatal(err)
	}
	fs, err := d.Detect(context.Background(), ev)
	if err != nil {
		t.Fatal(err)
	}
	return fs
}

func TestRelationshipLinksBothSides(t *testing.T) {
	user := func(id, patientID string) schemas.User {
		return schemas.User{UserID: id, Role: "RN", Department: "Cardiology", Status: schemas.UserActive, PatientID: patientID}
	}
	ev := access("e1", "2026-03-10T12:00:00Z", "u-a", "RN", "Cardiology", "p-b")
	for _, tc := range []struct {
		name     string
		detector string
		f        refFixture
		ev       *schemas.AccessEvent
		fact     string // evidence fact that must be set, key=value
	}{
		{"coworker via patients.employee_user_id", "coworker", refFixture{
			users:    []schemas.User{user("u-a", ""), user("u-b", "")},
			patients: []schemas.Patient{{PatientID: "p-b", EmployeeUserID: "u-b"}},
		}, ev, "coworker_user_id=u-b"},
		{"coworker via users.patient_id", "coworker", refFixture{
			users:    []schemas.User{user("u-a", ""), user("u-b", "p-b")},
			patients: []schemas.Patient{{PatientID: "p-b"}},
		}, ev, "coworker_user_id=u-b"},
		{"self via users.patient_id", "self_access", refFixture{
			users:    []schemas.User{user("u-a", "p-b")},
			patients: []schemas.Patient{{PatientID: "p-b"}},
		}, ev, "link=user_patient_id"},
		{"self via patients.employee_user_id", "self_access", refFixture{
			users:    []schemas.User{user("u-a", "")},
			patients: []schemas.Patient{{PatientID: "p-b", EmployeeUserID: "u-a"}},
		}, ev, "link=patient_employee_user_id"},
		{"next of kin named on the patient's chart", "family", refFixture{
			users:    []schemas.User{user("u-a", "")},
			patients: []schemas.Patient{{PatientID: "p-b", NextOfKinUserIDs: []string{"u-a"}}},
		}, ev, "relationship=next_of_kin"},
		{"guarantor named on the patient's chart", "family", refFixture{
			users:    []schemas.User{user("u-a", "")},
			patients: []schemas.Patient{{PatientID: "p-b", GuarantorUserID: "u-a"}},
		}, ev, "relationship=guarantor"},
		{"next of kin named on the user's chart (user linked by users.patient_id)", "family", refFixture{
			users: []schemas.User{user("u-a", "p-a"), user("u-b", "")},
			patients: []schemas.Patient{{PatientID: "p-a", NextOfKinUserIDs: []string{"u-b"}},
				{PatientID: "p-b", EmployeeUserID: "u-b"}},
		}, ev, "relationship=user_next_of_kin"},
		{"guarantor named on the user's chart (both linked by users.patient_id)", "family", refFixture{
			users:    []schemas.User{user("u-a", "p-a"), user("u-b", "p-b")},
			patients: []schemas.Patient{{PatientID: "p-a", GuarantorUserID: "u-b"}, {PatientID: "p-b"}},
		}, ev, "relationship=user_guarantor"},
		{"next of kin named on the user's chart (user linked by patients.employee_user_id)", "family", refFixture{
			users: []schemas.User{user("u-a", ""), user("u-b", "")},
			patients: []schemas.Patient{{PatientID: "p-a", EmployeeUserID: "u-a", NextOfKinUserIDs: []string{"u-b"}},
				{PatientID: "p-b", EmployeeUserID: "u-b"}},
		}, ev, "relationship=user_next_of_kin"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := detectLinked(t, tc.detector, tc.f, tc.ev)
			if len(fs) != 1 {
				t.Fatalf("%d findings, want 1", len(fs))
			}
			k, v, _ := strings.Cut(tc.fact, "=")
			if got := fs[0].Evidence.Facts[k]; got != v {
				t.Errorf("fact %s = %q, want %q (%s)", k, got, v, fs[0].Explanation)
			}
		})
	}
	// Controls: no link, no finding; the co-worker detector leaves a
	// user's own chart to self_access whichever side links it.
	none := refFixture{users: []schemas.User{user("u-a", ""), user("u-b", "")}, patients: []schemas.Patient{{PatientID: "p-b"}}}
	for _, d := range []string{"coworker", "self_access", "family"} {
		if fs := detectLinked(t, d, none, ev); len(fs) != 0 {
			t.Errorf("%s without a link: %d findings", d, len(fs))
		}
	}
	own := refFixture{users: []schemas.User{user("u-a", "p-b")}, patients: []schemas.Patient{{PatientID: "p-b"}}}
	if fs := detectLinked(t, "coworker", own, ev); len(fs) != 0 {
		t.Errorf("coworker on the user's own chart (users.patient_id): %d findings", len(fs))
	}
}
