package detectors_test

import (
	"context"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Helpers shared by the external (detectors_test) unit tests of the
// per-event detectors, the reference index and the engine.

// refFixture is the reference data a unit test builds an index from.
type refFixture struct {
	users      []schemas.User
	patients   []schemas.Patient
	encounters []schemas.Encounter
}

// index builds a ReferenceIndex with the default slack and the test key.
func (f refFixture) index(t testing.TB) *detectors.ReferenceIndex {
	t.Helper()
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = caseHashKey
	x, err := detectors.NewReferenceIndex(f.users, f.patients, f.encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// env returns an Env over the fixture, every facility in New York.
func (f refFixture) env(t testing.TB) detectors.Env {
	t.Helper()
	h := detectors.NewReferenceHolder(f.index(t))
	ny, err := time.LoadLocation("America/New_York")
	if err != nil {
		t.Fatal(err)
	}
	return detectors.Env{Reference: h.Load, Location: func(string) *time.Location { return ny }}
}

// access builds a successful view by user of patient at time at.
func access(id, at, user, role, dept, patient string) *schemas.AccessEvent {
	t, err := time.Parse(time.RFC3339Nano, at)
	if err != nil {
		panic(err)
	}
	return &schemas.AccessEvent{
		EventID: id, EventTime: t, FacilityID: "F1", UserID: user, UserRole: role, UserDepartment: dept,
		PatientID: patient, Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess,
	}
}

// with applies changes to a copy of ev.
func with(ev *schemas.AccessEvent, change func(*schemas.AccessEvent)) *schemas.AccessEvent {
	c := *ev
	change(&c)
	return &c
}

// detectOne runs d on ev and returns its findings, failing on error or on
// more than one finding.
func detectOne(t testing.TB, d detectors.Detector, ev *schemas.AccessEvent) *schemas.Finding {
	t.Helper()
	fs, err := d.Detect(context.Background(), ev)
	if err != nil {
		t.Fatalf("Detect(%s): %v", ev.EventID, err)
	}
	switch len(fs) {
	case 0:
		return nil
	case 1:
		return &fs[0]
	}
	t.Fatalf("Detect(%s) returned %d findings, want at most 1", ev.EventID, len(fs))
	return nil
}

// tp returns a pointer to a parsed time.
func tp(t testing.TB, s string) *time.Time {
	v := mustTime(t, s)
	return &v
}

// wantFinding checks presence and severity of a finding.
func wantFinding(t *testing.T, f *schemas.Finding, want schemas.Severity) {
	t.Helper()
	switch {
	case want == "" && f != nil:
		t.Errorf("unexpected finding: severity %s, %q", f.Severity, f.Explanation)
	case want != "" && f == nil:
		t.Errorf("no finding, want severity %s", want)
	case want != "" && f.Severity != want:
		t.Errorf("severity %s, want %s (%q)", f.Severity, want, f.Explanation)
	}
}
