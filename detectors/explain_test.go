package detectors_test

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestEngineScoresStayInTheirBand: whatever a detector puts in Score, the
// engine emits it within its severity's band (schemas/score.go): never a
// medium finding scored 100.
func TestEngineScoresStayInTheirBand(t *testing.T) {
	d := &fakeDetector{name: "fake", emit: func(ev *schemas.AccessEvent) []schemas.Finding {
		f := dayFinding("fake")(ev)[0]
		f.Severity, f.Score = schemas.SeverityMedium, 100
		if ev.Action == schemas.ActionExport {
			f.Severity, f.Score = schemas.SeverityHigh, 0
		}
		return []schemas.Finding{f}
	}}
	e := newTestEngine(t, detectors.EngineConfig{}, fakeFactory(d))
	got := process(t, e, access("e1", "2026-03-02T10:00:00Z", "u1", "nurse", "Surgery", "p1"),
		with(access("e2", "2026-03-02T10:00:00Z", "u1", "nurse", "Surgery", "p2"), func(ev *schemas.AccessEvent) { ev.Action = schemas.ActionExport }))
	if len(got) != 2 || got[0].Score != 59 || got[1].Score != 75 {
		t.Fatalf("scores %+v, want medium 59 (clamped) and high 75 (default)", got)
	}
}

// TestContinuitySurvivesSnapshot: the user's explained access before a
// snapshot explains their access after the restore (continuity of care),
// and breadth and coverage are counted; a fresh engine without the
// snapshot finds the same access unexplained.
func TestContinuitySurvivesSnapshot(t *testing.T) {
	fx := refFixture{
		users:    []schemas.User{{UserID: "u1", Role: "nurse", Department: "Surgery"}, {UserID: "u9", Role: "clerk", Department: "Radiology"}},
		patients: []schemas.Patient{{PatientID: "p1", EmployeeUserID: "u9"}},
		encounters: []schemas.Encounter{{EncounterID: "e-1", PatientID: "p1", Department: "Cardiology", Start: mustTime(t, "2026-03-02T08:00:00Z"),
			End: tp(t, "2026-03-02T20:00:00Z"), CareTeam: []string{"u1"}}},
	}
	cfg := detectors.DefaultEngineConfig(detectors.Registry())
	factory, err := detectors.NewEngineFactory(cfg, fx.env(t))
	if err != nil {
		t.Fatal(err)
	}
	newEngine := func() *detectors.Engine {
		e, err := factory()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
	a := newEngine()
	if fs := process(t, a, access("a1", "2026-03-02T10:00:00Z", "u1", "nurse", "Surgery", "p1")); len(fs) != 0 {
		t.Fatalf("care-team access raised %+v", fs)
	}
	var snap bytes.Buffer
	if err := a.Snapshot(&snap); err != nil {
		t.Fatal(err)
	}
	later := access("a2", "2026-03-09T10:00:00Z", "u1", "nurse", "Surgery", "p1")

	b := newEngine()
	if err := b.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	if fs := process(t, b, later); len(fs) != 0 {
		t.Errorf("after the restore, continuity should explain the access; got %s", fs[0].Explanation)
	}
	if c := b.Coverage(); c.By[detectors.ExplainedByOwnContinuity] != 1 || c.Total() != 1 {
		t.Errorf("coverage after the restore %+v, want one own_continuity access", c.By)
	}
	if c := a.Coverage(); c.By[detectors.ExplainedByCareTeam] != 1 || c.ByDepartment["Surgery"][detectors.ExplainedByCareTeam] != 1 {
		t.Errorf("coverage before the snapshot %+v", c)
	}

	// The same state in the version 1 form (continuity keyed by patient
	// id, as snapshots before December 3, 2026 hold it) restores to the
	// same continuity.
	v1 := regexp.MustCompile(`"own_h":\{"\d+"`).ReplaceAllString(strings.Replace(snap.String(), `"version":2`, `"version":1`, 1), `"own":{"p1"`)
	if !strings.Contains(v1, `"own":{"p1":`) || !strings.Contains(v1, `"version":1`) {
		t.Fatalf("no version 1 form made of %s", snap.String())
	}
	c := newEngine()
	if err := c.Restore(strings.NewReader(v1)); err != nil {
		t.Fatal(err)
	}
	if fs := process(t, c, later); len(fs) != 0 {
		t.Errorf("after restoring the version 1 form, continuity should explain the access; got %s", fs[0].Explanation)
	}

	fresh := newEngine()
	fs := process(t, fresh, later)
	if len(fs) != 1 || fs[0].Detector != "coworker" || fs[0].Severity != schemas.SeverityMedium {
		t.Fatalf("without the snapshot: %+v, want one medium coworker finding", fs)
	}
}
