package detectors_test

import (
	"fmt"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// scaleSource generates a health system's reference data record by record
// (never as a whole): users in 40 departments, patients (1% VIP, 1%
// deceased, employees' charts linked from both sides, 1% with next of kin
// or a guarantor among the users), and encPerPatient encounters per
// patient with a care team of two.
type scaleSource struct {
	users, patients, encPerPatient int
	// offset shifts which patients get flags, so a second pass with a
	// different offset yields changed records.
	offset int
}

var scaleStart = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func (s scaleSource) user(i int) schemas.User {
	u := schemas.User{
		UserID: fmt.Sprintf("U%07d", i), FirstName: "Given", LastName: fmt.Sprintf("Family%d", i%5000),
		Role: []string{"nurse", "physician", "clerk", "therapist"}[i%4], Department: fmt.Sprintf("Department %d", i%40),
		Address: schemas.Address{Line: fmt.Sprintf("%d Main Street", i), City: "Springfield", State: "MA", PostalCode: "01101"},
		Status:  schemas.UserActive,
	}
	if i%100 == 1 {
		u.Status, u.TerminatedAt = schemas.UserTerminated, ptr(scaleStart)
	}
	if i%50 == 7 && s.patients > 0 {
		u.PatientID = fmt.Sprintf("MRN-%09d", i*97%s.patients)
	}
	return u
}

func (s scaleSource) patient(i int) schemas.Patient {
	k := i + s.offset
	p := schemas.Patient{
		PatientID: fmt.Sprintf("MRN-%09d", i), FirstName: "Given", LastName: fmt.Sprintf("Family%d", i%20000),
		Address:     schemas.Address{Line: fmt.Sprintf("%d Oak Avenue Apt %d", i/7, i%7), City: "Springfield", State: "MA", PostalCode: "01101"},
		DateOfBirth: "1970-01-01", VIP: k%100 == 3,
	}
	if k%100 == 5 {
		p.DeceasedAt = ptr(scaleStart)
	}
	if k%100 == 9 && s.users > 0 {
		p.NextOfKinUserIDs = []string{fmt.Sprintf("U%07d", k%s.users)}
	}
	if k%200 == 11 && s.users > 0 {
		p.GuarantorUserID = fmt.Sprintf("U%07d", (k/3)%s.users)
	}
	if k%500 == 13 && s.users > 0 {
		p.EmployeeUserID = fmt.Sprintf("U%07d", (k/7)%s.users)
	}
	return p
}

func (s scaleSource) encounter(pi, j int) schemas.Encounter {
	start := scaleStart.Add(time.Duration((pi*31+j*977)%(365*24)) * time.Hour)
	e := schemas.Encounter{
		EncounterID: fmt.Sprintf("ENC-%09d-%d", pi, j), PatientID: fmt.Sprintf("MRN-%09d", pi),
		Department: fmt.Sprintf("Department %d", (pi+j)%40), Start: start,
	}
	if j > 0 || pi%10 != 0 { // every tenth patient has an open encounter
		e.End = ptr(start.Add(time.Duration(1+(pi+j)%72) * time.Hour))
	}
	if s.users > 0 {
		e.CareTeam = []string{fmt.Sprintf("U%07d", (pi*13+j)%s.users), fmt.Sprintf("U%07d", (pi*17+j*5)%s.users)}
	}
	return e
}

// build streams the source into a ReferenceBuilder.
func (s scaleSource) build(tb testing.TB) *detectors.ReferenceIndex {
	tb.Helper()
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = caseHashKey
	b, err := detectors.NewReferenceBuilder(nil, opts)
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < s.users; i++ {
		u := s.user(i)
		b.AddUser(&u)
	}
	for i := 0; i < s.patients; i++ {
		p := s.patient(i)
		b.AddPatient(&p)
		for j := 0; j < s.encPerPatient; j++ {
			e := s.encounter(i, j)
			b.AddEncounter(&e)
		}
	}
	return b.Build()
}

// heapAfterGC is the live heap after a full collection.
func heapAfterGC() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// indexBytes builds the source's index and returns the live heap it adds.
func indexBytes(tb testing.TB, s scaleSource) (float64, *detectors.ReferenceIndex) {
	before := heapAfterGC()
	x := s.build(tb)
	after := heapAfterGC()
	runtime.KeepAlive(x)
	return float64(after) - float64(before), x
}

// TestReferenceIndexBytesPerPatient measures the live heap the index
// takes per patient (no encounters) and per encounter, and holds the
// patient figure to the 200-byte budget of issue #13 (docs/benchmarks.md
// has the figures at 10 million patients).
func TestReferenceIndexBytesPerPatient(t *testing.T) {
	const users, patients = 2000, 100000
	base, _ := indexBytes(t, scaleSource{users: users})
	withPatients, x := indexBytes(t, scaleSource{users: users, patients: patients})
	if st := x.Stats(); st.Patients != patients || st.Users != users {
		t.Fatalf("stats %+v", st)
	}
	perPatient := (withPatients - base) / patients
	withEnc, x := indexBytes(t, scaleSource{users: users, patients: patients, encPerPatient: 3})
	if st := x.Stats(); st.Encounters != 3*patients {
		t.Fatalf("stats %+v", st)
	}
	perEncounter := (withEnc - withPatients) / (3 * patients)
	t.Logf("index: %.0f B per patient, %.0f B per encounter (care team of 2)", perPatient, perEncounter)
	if perPatient > 200 {
		t.Errorf("%.0f B per patient, want at most 200", perPatient)
	}
}

// BenchmarkReferenceScale builds the index of a health system streamed
// record by record, then applies one incremental refresh, and reports the
// load time (ns/op), the index's live heap per patient and in total, the
// peak and steady RSS of the process, and the cost of the refresh.
// Sizes come from the environment (the default is a smoke-test size):
//
//	EHRWATCH_REFSCALE_PATIENTS=10000000 EHRWATCH_REFSCALE_USERS=100000 \
//	  go test -run X -bench BenchmarkReferenceScale -benchtime 1x ./detectors/
//
// EHRWATCH_REFSCALE_ENCOUNTERS is the encounters per patient (default 0)
// and EHRWATCH_REFSCALE_CHANGES the patients (with their encounters)
// changed by the refresh (default 1% of the patients).
func BenchmarkReferenceScale(b *testing.B) {
	s := scaleSource{
		patients: envInt(b, "EHRWATCH_REFSCALE_PATIENTS", 100000), users: envInt(b, "EHRWATCH_REFSCALE_USERS", 10000),
		encPerPatient: envInt(b, "EHRWATCH_REFSCALE_ENCOUNTERS", 0),
	}
	changes := envInt(b, "EHRWATCH_REFSCALE_CHANGES", s.patients/100)
	resetPeakRSS(b)
	b.StopTimer()
	for i := 0; i < b.N; i++ {
		before := heapAfterGC()
		b.StartTimer()
		x := s.build(b)
		b.StopTimer()
		heap := float64(heapAfterGC() - before)
		peak := rss(b, "VmHWM")
		debug.FreeOSMemory()
		steady := rss(b, "VmRSS")
		b.ReportMetric(heap/float64(max(s.patients, 1)), "heap-B/patient")
		b.ReportMetric(heap/(1<<20), "heap-MiB")
		b.ReportMetric(peak/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(steady/(1<<20), "steady-RSS-MiB")

		// One incremental refresh: changes patients spread over the id
		// space get new flags and new encounters, and 1% of the users
		// change.
		t0 := time.Now()
		u, err := x.Update(nil)
		if err != nil {
			b.Fatal(err)
		}
		changed := s
		changed.offset = 1
		for k := 0; k < changes; k++ {
			pi := k * (s.patients / max(changes, 1))
			p := changed.patient(pi)
			u.SetPatient(&p)
			u.ReplaceEncounters(p.PatientID)
			for j := 0; j <= s.encPerPatient; j++ {
				e := changed.encounter(pi, j+1)
				u.AddEncounter(&e)
			}
		}
		for k := 0; k < s.users/100; k++ {
			us := s.user(k * 100)
			us.Role = "supervisor"
			u.SetUser(&us)
		}
		y := u.Apply()
		took := time.Since(t0)
		overlay := float64(heapAfterGC()) - float64(before) - heap
		b.ReportMetric(float64(took.Milliseconds()), "refresh-ms")
		b.ReportMetric(overlay/(1<<20), "refresh-extra-heap-MiB")
		b.ReportMetric(float64(changes), "refresh-patients")
		runtime.KeepAlive(x)
		runtime.KeepAlive(y)
	}
}

func envInt(tb testing.TB, name string, def int) int {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 {
		tb.Fatalf("%s=%q: want a non-negative integer", name, v)
	}
	return n
}

// resetPeakRSS resets the kernel's peak-RSS mark (VmHWM) of this process.
func resetPeakRSS(tb testing.TB) {
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		tb.Logf("cannot reset the peak RSS (%v): peak-RSS-MiB includes everything before", err)
	}
}

// rss reads a /proc/self/status figure (VmHWM, VmRSS) in bytes.
func rss(tb testing.TB, field string) float64 {
	raw, err := os.ReadFile("/proc/self/status")
	if err != nil {
		tb.Fatal(err)
	}
	var kb float64
	for _, line := range splitLines(string(raw)) {
		if n, _ := fmt.Sscanf(line, field+": %f kB", &kb); n == 1 {
			return kb * 1024
		}
	}
	tb.Fatalf("no %s in /proc/self/status", field)
	return 0
}

func splitLines(s string) []string {
	var out []string
	for len(s) > 0 {
		i := 0
		for i < len(s) && s[i] != '\n' {
			i++
		}
		out = append(out, s[:i])
		if i < len(s) {
			i++
		}
		s = s[i:]
	}
	return out
}
