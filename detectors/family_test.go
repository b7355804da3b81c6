package detectors_test

import (
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestFamily(t *testing.T) {
	home := schemas.Address{Line: "12 Oak Street, Apt. 4", City: "Springfield", State: "MA", PostalCode: "01101"}
	fx := refFixture{
		users: []schemas.User{
			{UserID: "u1", LastName: "Smith", Role: "clerk", Department: "radiology", Address: home, Status: schemas.UserActive},
			{UserID: "u2", LastName: "Ng", Role: "physician", Department: "cardiology", Status: schemas.UserActive}, // no address on file
			{UserID: "u3", LastName: "Smith", Role: "clerk", Department: "radiology", Address: home, Status: schemas.UserActive, PatientID: "p-self"},
		},
		patients: []schemas.Patient{
			{PatientID: "p-rel", LastName: "SMITH", Address: schemas.Address{Line: "12 oak st #4", City: "springfield", State: "ma", PostalCode: "01101-0000"}},
			{PatientID: "p-other-smith", LastName: "Smith", Address: schemas.Address{Line: "99 Elm Avenue", City: "Springfield", State: "MA", PostalCode: "01101"}},
			{PatientID: "p-roommate", LastName: "Jones", Address: home},
			{PatientID: "p-ng", LastName: "Ng"},
			{PatientID: "p-nok", LastName: "Delacroix", NextOfKinUserIDs: []string{"u9", "u2"}},
			{PatientID: "p-guar", LastName: "Fairweather", GuarantorUserID: "u2"},
			{PatientID: "p-self", LastName: "Smith", Address: home},
			{PatientID: "p-rel-explained", LastName: "Smith", Address: home},
		},
		encounters: []schemas.Encounter{
			{EncounterID: "e1", PatientID: "p-rel-explained", Department: "Radiology", Start: mustTime(t, "2026-06-01T08:00:00Z")},
		},
	}
	at := "2026-06-01T15:00:00Z"
	tests := []struct {
		name   string
		report bool
		ev     *schemas.AccessEvent
		want   schemas.Severity
		rel    string
	}{
		{"same normalised name and address", true, access("e1", at, "u1", "clerk", "radiology", "p-rel"), schemas.SeverityHigh, "same_last_name_and_address"},
		{"export raises", true, with(access("e2", at, "u1", "clerk", "radiology", "p-rel"), func(e *schemas.AccessEvent) { e.Action = schemas.ActionExport }), schemas.SeverityCritical, "same_last_name_and_address"},
		{"two unrelated Smiths", true, access("e3", at, "u1", "clerk", "radiology", "p-other-smith"), "", ""},
		{"same address, other name", true, access("e4", at, "u1", "clerk", "radiology", "p-roommate"), "", ""},
		{"same name, user has no address", true, access("e5", at, "u2", "physician", "cardiology", "p-ng"), "", ""},
		{"next of kin", true, access("e6", at, "u2", "physician", "cardiology", "p-nok"), schemas.SeverityHigh, "next_of_kin"},
		{"guarantor", true, access("e7", at, "u2", "physician", "cardiology", "p-guar"), schemas.SeverityHigh, "guarantor"},
		{"own record is self_access's", true, access("e8", at, "u3", "clerk", "radiology", "p-self"), "", ""},
		{"explained, reported low", true, access("e9", at, "u1", "clerk", "radiology", "p-rel-explained"), schemas.SeverityLow, "same_last_name_and_address"},
		{"explained, not reported", false, access("e10", at, "u1", "clerk", "radiology", "p-rel-explained"), "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := detectors.DefaultFamilyConfig()
			cfg.Explained.Report = tc.report
			d, err := detectors.NewFamily(cfg, fx.env(t))
			if err != nil {
				t.Fatal(err)
			}
			f := detectOne(t, d, tc.ev)
			wantFinding(t, f, tc.want)
			if f != nil && f.Evidence.Facts["relationship"] != tc.rel {
				t.Errorf("relationship %q, want %q", f.Evidence.Facts["relationship"], tc.rel)
			}
		})
	}
}

// TestFamilyKeyMatters: the same fixtures hashed under another key never
// match tokens from the first, so tokens cannot be joined across
// deployments.
func TestFamilyKeyMatters(t *testing.T) {
	u := []schemas.User{{UserID: "u1", LastName: "Smith", Address: schemas.Address{Line: "1 A St"}}}
	a := refFixture{users: u}.index(t)
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("another-key-another-key-another!")
	b, err := detectors.NewReferenceIndex(u, nil, nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	ta, _ := a.UserTokens("u1")
	tb, _ := b.UserTokens("u1")
	if ta.LastName == tb.LastName || ta.Address == tb.Address {
		t.Error("tokens under different keys are equal")
	}
	if ta.LastName.IsZero() || ta.Address.IsZero() {
		t.Error("tokens missing")
	}
}
