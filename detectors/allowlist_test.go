package detectors_test

import (
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestAllowlistMatch(t *testing.T) {
	expires := mustTime(t, "2026-09-01T00:00:00Z")
	entries := []detectors.AllowlistEntry{
		{UserID: "u1", PatientID: "p1", Detector: "vip", Reason: "liaison", Owner: "privacy", ExpiresAt: expires},
		{Department: "Chaplaincy", Detector: "*", Reason: "chaplains", Owner: "privacy", ExpiresAt: expires},
		{UserID: "u2", Detector: "*", Reason: "auditor", Owner: "compliance", ExpiresAt: expires},
		{UserID: "u2", PatientID: "p2", Detector: "family", Reason: "specific", Owner: "privacy", ExpiresAt: expires},
	}
	a, err := detectors.NewAllowlist(entries)
	if err != nil {
		t.Fatal(err)
	}
	before := mustTime(t, "2026-08-01T00:00:00Z")
	tests := []struct {
		name   string
		f      schemas.Finding
		dept   string
		at     string
		reason string // "" = no match
	}{
		{"user+patient+detector", schemas.Finding{Detector: "vip", UserID: "u1", PatientID: "p1"}, "", "", "allowlist: privacy: liaison"},
		{"other detector", schemas.Finding{Detector: "family", UserID: "u1", PatientID: "p1"}, "", "", ""},
		{"other patient", schemas.Finding{Detector: "vip", UserID: "u1", PatientID: "p9"}, "", "", ""},
		{"department wildcard user, any detector", schemas.Finding{Detector: "coworker", UserID: "u7", PatientID: "p7"}, "chaplaincy", "", "allowlist: privacy: chaplains"},
		{"most specific entry wins", schemas.Finding{Detector: "family", UserID: "u2", PatientID: "p2"}, "", "", "allowlist: privacy: specific"},
		{"user wildcard patient", schemas.Finding{Detector: "family", UserID: "u2", PatientID: "p3"}, "", "", "allowlist: compliance: auditor"},
		{"exactly at expiry", schemas.Finding{Detector: "vip", UserID: "u1", PatientID: "p1"}, "", "2026-09-01T00:00:00Z", "allowlist: privacy: liaison"},
		{"after expiry", schemas.Finding{Detector: "vip", UserID: "u1", PatientID: "p1"}, "", "2026-09-01T00:00:00.000000001Z", ""},
		{"unknown user", schemas.Finding{Detector: "vip", UserID: "u9", PatientID: "p1"}, "Radiology", "", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			at := before
			if tc.at != "" {
				at = mustTime(t, tc.at)
			}
			f := tc.f
			ok := a.Apply(&f, tc.dept, at)
			if ok != (tc.reason != "") || f.Suppressed != ok || f.SuppressionReason != tc.reason {
				t.Errorf("Apply = %v, suppressed %v %q; want %q", ok, f.Suppressed, f.SuppressionReason, tc.reason)
			}
		})
	}
	var nilList *detectors.Allowlist
	if _, ok := nilList.Match(&schemas.Finding{UserID: "u1"}, "", before); ok {
		t.Error("nil allowlist matched")
	}
}

func TestAllowlistValidate(t *testing.T) {
	_, err := detectors.NewAllowlist([]detectors.AllowlistEntry{
		{UserID: "u1", Detector: "vip", Reason: "ok", Owner: "privacy", ExpiresAt: mustTime(t, "2027-01-01T00:00:00Z")},
		{Detector: "", Reason: " ", Owner: ""},
	})
	if err == nil {
		t.Fatal("invalid entry accepted")
	}
	for _, key := range []string{"allowlist[1].user_id", "allowlist[1].detector", "allowlist[1].reason", "allowlist[1].owner", "allowlist[1].expires_at"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("error does not name %s:\n%v", key, err)
		}
	}
	if strings.Contains(err.Error(), "allowlist[0]") {
		t.Errorf("valid entry reported:\n%v", err)
	}
}
