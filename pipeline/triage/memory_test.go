package triage

import (
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// TestCareIndexAgreesWithDetectors: the in-memory care index explains the
// fixture's accesses exactly as the detectors' reference index does (and
// so as the ClickHouse store does: TestPatientAccessReport).
func TestCareIndexAgreesWithDetectors(t *testing.T) {
	f := tt.NewFixture()
	x := NewCareIndex(f.Encounters, Options{})
	idx, err := detectors.NewReferenceIndex(f.Users, f.Patients, f.Encounters,
		detectors.ReferenceOptions{CareSlackBefore: 24 * time.Hour, CareSlackAfter: 24 * time.Hour, HashKey: []byte("0123456789abcdef")})
	if err != nil {
		t.Fatal(err)
	}
	depts := map[string]string{}
	for _, u := range f.Users {
		depts[u.UserID] = u.Department
	}
	explained := 0
	for i := range f.Events {
		ev := &f.Events[i]
		dept := ev.UserDepartment
		if dept == "" {
			dept = depts[ev.UserID]
		}
		got, want := x.Explain(ev.PatientID, ev.UserID, dept, ev.EventTime), idx.Care(ev)
		if got.Explained != want.Explained || got.EncounterID != want.EncounterID {
			t.Errorf("%s: care index says %+v, detectors say %+v", ev.EventID, got, want)
		}
		if got.Explained {
			explained++
		}
	}
	if explained == 0 || explained == len(f.Events) {
		t.Errorf("%d of %d fixture accesses explained: the fixture no longer tells the cases apart", explained, len(f.Events))
	}
	// Exported lifecycle: the same rules as Update.
	st, err := Apply(InitialState("al-1"), Change{Status: ptr(StatusClosed)}, Actor{Name: "x"})
	if err == nil {
		t.Errorf("closing without a disposition: %+v, want a validation error", st)
	}
}
