package detectors_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// benchFixture: nUsers users in ten departments (a few terminated, some
// sharing a household with a patient), nPatients patients (1% VIP, 1%
// deceased, 2% employees), and one encounter per patient in a department.
func benchFixture(nUsers, nPatients int) refFixture {
	depts := []string{"Emergency", "ICU", "Cardiology", "Oncology", "Surgery", "Radiology", "Pharmacy", "Neurology", "Billing", "Pediatrics"}
	var fx refFixture
	start := time.Date(2026, 3, 25, 0, 0, 0, 0, time.UTC)
	for i := 0; i < nUsers; i++ {
		u := schemas.User{
			UserID: fmt.Sprintf("u%d", i), LastName: fmt.Sprintf("Family%d", i%40), Role: []string{"nurse", "physician", "clerk"}[i%3],
			Department: depts[i%len(depts)], Status: schemas.UserActive,
			Address: schemas.Address{Line: fmt.Sprintf("%d Main Street", i%40), City: "Springfield"},
		}
		if i%97 == 13 {
			u.Status, u.TerminatedAt = schemas.UserTerminated, ptr(start)
		}
		if i%50 == 7 {
			u.PatientID = fmt.Sprintf("p%d", i)
		}
		fx.users = append(fx.users, u)
	}
	for i := 0; i < nPatients; i++ {
		p := schemas.Patient{
			PatientID: fmt.Sprintf("p%d", i), LastName: fmt.Sprintf("Family%d", i%300),
			Address: schemas.Address{Line: fmt.Sprintf("%d Main Street", i%300), City: "Springfield"},
			VIP:     i%100 == 3,
		}
		if i%100 == 5 {
			p.DeceasedAt = ptr(start.Add(-90 * 24 * time.Hour))
		}
		if i%50 == 9 && i/50 < nUsers {
			p.EmployeeUserID = fmt.Sprintf("u%d", i/50)
		}
		fx.patients = append(fx.patients, p)
		fx.encounters = append(fx.encounters, schemas.Encounter{
			EncounterID: fmt.Sprintf("e%d", i), PatientID: p.PatientID, Department: depts[(i*7)%len(depts)],
			Start: start.Add(time.Duration(i%200) * time.Hour), End: ptr(start.Add(time.Duration(i%200+48) * time.Hour)),
			CareTeam: []string{fmt.Sprintf("u%d", (i*13)%nUsers)},
		})
	}
	return fx
}

func ptr[T any](v T) *T { return &v }

// mix64 is SplitMix64's finaliser: a fixed, well-spread hash of i.
func mix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// benchEvent is the i-th event of a realistic mix: mostly views, some
// prints and exports, 1% break-glass, users hashed over 1000 and patients
// over 5000 independently (the fixture must be at least that big for every
// lookup to hit).
func benchEvent(i int, at time.Time) *schemas.AccessEvent {
	depts := []string{"Emergency", "ICU", "Cardiology", "Oncology", "Surgery", "Radiology", "Pharmacy", "Neurology", "Billing", "Pediatrics"}
	h := mix64(uint64(i))
	u := int(h % 1000)
	ev := &schemas.AccessEvent{
		EventID: fmt.Sprintf("ev-%d", i), EventTime: at, FacilityID: "F1",
		UserID: fmt.Sprintf("u%d", u), UserRole: []string{"nurse", "physician", "clerk"}[u%3], UserDepartment: depts[u%len(depts)],
		PatientID: fmt.Sprintf("p%d", (h>>20)%5000), Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess,
	}
	switch {
	case i%50 == 1:
		ev.Action = schemas.ActionPrint
	case i%80 == 2:
		ev.Action = schemas.ActionExport
	}
	if i%100 == 4 {
		ev.BreakGlass, ev.BreakGlassReason = true, "Rapid response called, patient deteriorating"
	}
	return ev
}

// BenchmarkEngine_AllPerEventDetectors runs the seven per-event detectors
// through one Engine over a realistic mix of 1000 users and 5000 patients,
// one event every 50ms of event time. It reports events/s and the share of
// events that yield a finding.
func BenchmarkEngine_AllPerEventDetectors(b *testing.B) {
	benchmarkEngine(b, detectors.Registry()[:7])
}

// BenchmarkEngine_AllDetectors is the same with every registered detector,
// the windowed ones included.
func BenchmarkEngine_AllDetectors(b *testing.B) {
	benchmarkEngine(b, detectors.Registry())
}

func benchmarkEngine(b *testing.B, factories []detectors.Factory) {
	fx := benchFixture(1000, 5000)
	env := fx.env(b)
	e, err := detectors.NewEngine(detectors.DefaultEngineConfig(detectors.Registry()), factories, env)
	if err != nil {
		b.Fatal(err)
	}
	const n = 1 << 16
	evs := make([]*schemas.AccessEvent, n)
	start := time.Date(2026, 4, 1, 0, 0, 0, 0, time.UTC)
	for i := range evs {
		evs[i] = benchEvent(i, start.Add(time.Duration(i)*50*time.Millisecond))
	}
	ctx := context.Background()
	findings := 0
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		ev := evs[i%n]
		if i >= n { // keep event time moving forward across laps
			c := *ev
			c.EventTime = c.EventTime.Add(time.Duration(i/n) * time.Duration(n) * 50 * time.Millisecond)
			ev = &c
		}
		fs, err := e.Process(ctx, ev)
		if err != nil {
			b.Fatal(err)
		}
		findings += len(fs)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(findings)/float64(b.N), "findings/event")
}
