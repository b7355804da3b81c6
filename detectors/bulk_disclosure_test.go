package detectors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestBulkExportDisclosureStaff: release-of-information staff printing
// records is their job: 60 prints in ten minutes by an "ROI Specialist" is
// no burst, the same by an RN is; past disclosure_count the ROI specialist
// fires too.
func TestBulkExportDisclosureStaff(t *testing.T) {
	f := refFixture{users: []schemas.User{
		{UserID: "u-roi", Role: "ROI Specialist", Department: "Health Information Mgmt", Status: schemas.UserActive},
		{UserID: "u-rn", Role: "RN", Department: "Med/Surg 4W", Status: schemas.UserActive},
	}}
	cfg := detectors.DefaultBulkExportConfig()
	cfg.DisclosureCount = 100
	run := func(user string, n int) []schemas.Finding {
		d, err := detectors.NewBulkExport(cfg, f.env(t))
		if err != nil {
			t.Fatal(err)
		}
		var out []schemas.Finding
		t0 := time.Date(2026, 3, 10, 14, 0, 0, 0, time.UTC)
		for i := range n {
			// No role or department on the event: they come from the reference data.
			ev := &schemas.AccessEvent{EventID: fmt.Sprintf("%s-%d", user, i), EventTime: t0.Add(time.Duration(i) * 5 * time.Second),
				FacilityID: "F1", UserID: user, PatientID: fmt.Sprintf("p-%d", i), Action: schemas.ActionPrint, Outcome: schemas.OutcomeSuccess}
			fs, err := d.Detect(context.Background(), ev)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, fs...)
		}
		return out
	}
	if fs := run("u-roi", 60); len(fs) != 0 {
		t.Errorf("ROI specialist, 60 prints: %d findings, want none", len(fs))
	}
	if fs := run("u-rn", 60); len(fs) != 1 || fs[0].Evidence.Threshold != 20 {
		t.Errorf("RN, 60 prints: %+v, want one finding at threshold 20", fs)
	}
	fs := run("u-roi", 110)
	if len(fs) != 1 || fs[0].Evidence.Threshold != 100 {
		t.Fatalf("ROI specialist, 110 prints: %+v, want one finding at threshold 100", fs)
	}
	t.Log(fs[0].Explanation)
}
