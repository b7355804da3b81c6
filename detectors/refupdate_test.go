package detectors

import (
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// refData is a whole reference data set, by id.
type refData struct {
	users      map[string]schemas.User
	patients   map[string]schemas.Patient
	encounters map[string][]schemas.Encounter // by patient
}

var updStart = time.Date(2026, 5, 1, 0, 0, 0, 0, time.UTC)

func randomRefData(r *rand.Rand) refData {
	d := refData{users: map[string]schemas.User{}, patients: map[string]schemas.Patient{}, encounters: map[string][]schemas.Encounter{}}
	for i := 0; i < 40; i++ {
		d.users[fmt.Sprintf("u%d", i)] = randomUser(r, i)
	}
	for i := 0; i < 200; i++ {
		d.patients[fmt.Sprintf("p%d", i)] = randomPatient(r, i)
		d.encounters[fmt.Sprintf("p%d", i)] = randomEncounters(r, i, 0)
	}
	return d
}

func randomUser(r *rand.Rand, i int) schemas.User {
	u := schemas.User{UserID: fmt.Sprintf("u%d", i), LastName: fmt.Sprintf("Fam%d", r.IntN(10)),
		Address: schemas.Address{Line: fmt.Sprintf("%d Elm St", r.IntN(10)), City: "X"},
		Role:    []string{"nurse", "physician", "clerk"}[r.IntN(3)], Department: []string{"ICU", "icu ", "Cardiology", "Billing", ""}[r.IntN(5)],
		Status: schemas.UserActive}
	if r.IntN(10) == 0 {
		u.Status, u.TerminatedAt = schemas.UserTerminated, ptrTo(updStart.Add(time.Duration(r.IntN(100))*time.Hour))
	}
	if r.IntN(5) == 0 {
		u.PatientID = fmt.Sprintf("p%d", r.IntN(220))
	}
	return u
}

func randomPatient(r *rand.Rand, i int) schemas.Patient {
	p := schemas.Patient{PatientID: fmt.Sprintf("p%d", i), LastName: fmt.Sprintf("Fam%d", r.IntN(10)),
		Address: schemas.Address{Line: fmt.Sprintf("%d Elm St", r.IntN(10)), City: "X"}, VIP: r.IntN(10) == 0}
	if r.IntN(10) == 0 {
		p.DeceasedAt = ptrTo(updStart.Add(time.Duration(r.IntN(100)) * time.Hour))
	}
	if r.IntN(8) == 0 {
		p.EmployeeUserID = fmt.Sprintf("u%d", r.IntN(45))
	}
	if r.IntN(8) == 0 {
		p.NextOfKinUserIDs = []string{fmt.Sprintf("u%d", r.IntN(45))}
	}
	if r.IntN(8) == 0 {
		p.GuarantorUserID = fmt.Sprintf("u%d", r.IntN(45))
	}
	return p
}

func randomEncounters(r *rand.Rand, i, gen int) []schemas.Encounter {
	var out []schemas.Encounter
	for j := range r.IntN(4) {
		s := updStart.Add(time.Duration(r.IntN(400)) * time.Hour)
		e := schemas.Encounter{EncounterID: fmt.Sprintf("e%d-%d-%d", i, j, gen), PatientID: fmt.Sprintf("p%d", i),
			Department: []string{"ICU", "Cardiology", "Oncology", ""}[r.IntN(4)], Start: s}
		if r.IntN(4) > 0 {
			e.End = ptrTo(s.Add(time.Duration(r.IntN(200)) * time.Hour))
		}
		for range r.IntN(3) {
			e.CareTeam = append(e.CareTeam, fmt.Sprintf("u%d", r.IntN(45)))
		}
		out = append(out, e)
	}
	return out
}

func ptrTo[T any](v T) *T { return &v }

// mutate changes a copy of d: users and patients changed, deleted and
// added, patients' encounters replaced, dropped and added.
func mutate(r *rand.Rand, d refData) refData {
	n := refData{users: map[string]schemas.User{}, patients: map[string]schemas.Patient{}, encounters: map[string][]schemas.Encounter{}}
	for id, u := range d.users {
		switch r.IntN(6) {
		case 0:
			continue // deleted
		case 1:
			u = randomUser(r, int(atoiTail(id)))
		}
		n.users[id] = u
	}
	for i := 40; i < 45; i++ {
		n.users[fmt.Sprintf("u%d", i)] = randomUser(r, i)
	}
	for id, p := range d.patients {
		switch r.IntN(6) {
		case 0:
			continue
		case 1:
			p = randomPatient(r, int(atoiTail(id)))
		}
		n.patients[id] = p
	}
	for i := 200; i < 220; i++ {
		n.patients[fmt.Sprintf("p%d", i)] = randomPatient(r, i)
	}
	for pid, es := range d.encounters {
		switch r.IntN(5) {
		case 0:
			continue
		case 1:
			es = randomEncounters(r, int(atoiTail(pid)), 1)
		}
		n.encounters[pid] = es
	}
	for i := 200; i < 220; i++ {
		n.encounters[fmt.Sprintf("p%d", i)] = randomEncounters(r, i, 2)
	}
	return n
}

func atoiTail(id string) int64 {
	var n int64
	fmt.Sscanf(id[1:], "%d", &n)
	return n
}

func (d refData) index(t *testing.T) *ReferenceIndex {
	t.Helper()
	opts := DefaultReferenceOptions()
	opts.HashKey = []byte("ehrwatch-test-hash-key-0123456789")
	b, err := NewReferenceBuilder(nil, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range sortedKeys(d.users) {
		u := d.users[id]
		b.AddUser(&u)
	}
	for _, id := range sortedKeys(d.patients) {
		p := d.patients[id]
		b.AddPatient(&p)
	}
	for _, id := range sortedKeys(d.encounters) {
		for _, e := range d.encounters[id] {
			b.AddEncounter(&e)
		}
	}
	return b.Build()
}

// diff is the update from a to b, as a refresh reads it.
func diff(t *testing.T, x *ReferenceIndex, a, b refData) *ReferenceUpdate {
	u, err := x.Update(nil)
	if err != nil {
		t.Fatal(err)
	}
	for id := range a.users {
		if _, ok := b.users[id]; !ok {
			u.DeleteUser(id)
		}
	}
	for id, v := range b.users {
		if old, ok := a.users[id]; !ok || fmt.Sprint(old) != fmt.Sprint(v) {
			u.SetUser(&v)
		}
	}
	for id := range a.patients {
		if _, ok := b.patients[id]; !ok {
			u.DeletePatient(id)
		}
	}
	for id, v := range b.patients {
		if old, ok := a.patients[id]; !ok || fmt.Sprint(old) != fmt.Sprint(v) {
			u.SetPatient(&v)
		}
	}
	for _, pid := range sortedKeys(mergeKeys(a.encounters, b.encounters)) {
		if fmt.Sprint(a.encounters[pid]) == fmt.Sprint(b.encounters[pid]) {
			continue
		}
		u.ReplaceEncounters(pid)
		for _, e := range b.encounters[pid] {
			u.AddEncounter(&e)
		}
	}
	return u
}

func mergeKeys[V any](a, b map[string]V) map[string]bool {
	m := map[string]bool{}
	for k := range a {
		m[k] = true
	}
	for k := range b {
		m[k] = true
	}
	return m
}

// dump renders every answer the index gives about the ids and times
// probed, one line each.
func dump(x *ReferenceIndex) string {
	var lines []string
	add := func(f string, args ...any) { lines = append(lines, fmt.Sprintf(f, args...)) }
	tm := func(t *time.Time) string {
		if t == nil {
			return "-"
		}
		return t.UTC().Format(time.RFC3339)
	}
	for i := 0; i < 46; i++ {
		id := fmt.Sprintf("u%d", i)
		if u, ok := x.User(id); ok {
			add("user %s %s %s %s %s %s", id, u.Role, u.Department, u.Status, tm(u.TerminatedAt), u.PatientID)
		}
		tok, ok := x.UserTokens(id)
		pid, ok2 := x.PatientOf(id)
		add("user %s tokens %x %v chart %s %v", id, tok, ok, pid, ok2)
	}
	for i := 0; i < 221; i++ {
		id := fmt.Sprintf("p%d", i)
		if p, ok := x.Patient(id); ok {
			add("patient %s %v %s %s %v %s", id, p.VIP, tm(p.DeceasedAt), p.EmployeeUserID, p.NextOfKinUserIDs, p.GuarantorUserID)
		}
		tok, ok := x.PatientTokens(id)
		uid, ok2 := x.EmployeeOf(id)
		add("patient %s tokens %x %v employee %s %v", id, tok, ok, uid, ok2)
		for h := 0; h < 700; h += 53 {
			at := updStart.Add(time.Duration(h) * time.Hour)
			for _, uid := range []string{"u1", "u19", "u42"} {
				for _, dept := range []string{"", "ICU", "cardiology"} {
					ev := &schemas.AccessEvent{UserID: uid, UserDepartment: dept, PatientID: id, EventTime: at}
					add("care %s %s %s %d: %+v", id, uid, dept, h, x.care1(ev, true))
					e, ok := x.departmentInvolved(id, dept, at, 72*time.Hour)
					add("involved %s %s %d: %s %v", id, dept, h, e.id, ok)
					e, ok = x.involvedBefore(id, uid, dept, at, 96*time.Hour)
					add("before %s %s %s %d: %s %v", id, uid, dept, h, e.id, ok)
				}
			}
		}
	}
	add("kinds %d %d %d %d %v", x.kinds.patients, x.kinds.employees, x.kinds.vips, x.kinds.deceased, x.kinds.employeesByDept)
	add("names %v %v", x.refNames[0], x.refNames[1])
	add("stats users %d patients %d encounters %d", x.stats.Users, x.stats.Patients, x.stats.Encounters)
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// TestReferenceUpdateEqualsRebuild: applying the changes between two data
// sets to the first one's index answers exactly as the second one's index
// built whole, over three rounds of changes, and leaves the index it was
// applied to unchanged (copy-on-write).
func TestReferenceUpdateEqualsRebuild(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 7))
	d := randomRefData(r)
	x := d.index(t)
	for round := range 3 {
		before := dump(x)
		next := mutate(r, d)
		u := diff(t, x, d, next)
		if u.Changes() == 0 {
			t.Fatal("no changes generated")
		}
		y := u.Apply()
		if got := dump(x); got != before {
			t.Fatalf("round %d: Apply changed the index it was applied to", round)
		}
		want, got := dump(next.index(t)), dump(y)
		if got != want {
			gl, wl := strings.Split(got, "\n"), strings.Split(want, "\n")
			for i := range min(len(gl), len(wl)) {
				if gl[i] != wl[i] {
					t.Fatalf("round %d: incremental and whole differ (%d vs %d lines); first difference:\n got %s\nwant %s", round, len(gl), len(wl), gl[i], wl[i])
				}
			}
			t.Fatalf("round %d: %d lines incremental, %d whole", round, len(gl), len(wl))
		}
		if y.Overlay() == 0 {
			t.Errorf("round %d: no overlay after an update", round)
		}
		d, x = next, y
	}
}

// TestReferenceUpdateConcurrentReaders: detectors keep reading the index
// in the holder while updates are applied and swapped in (run with -race).
func TestReferenceUpdateConcurrentReaders(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 5))
	d := randomRefData(r)
	h := NewReferenceHolder(d.index(t))
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ref := h.Load()
				id := fmt.Sprintf("p%d", (i*7+g)%220)
				ref.Patient(id)
				ref.Care(&schemas.AccessEvent{UserID: "u3", PatientID: id, EventTime: updStart.Add(time.Duration(i%500) * time.Hour)})
				if x, ok := ref.(*ReferenceIndex); ok {
					x.departmentInvolved(id, "icu", updStart, time.Hour)
					x.EmployeeOf(id)
				}
			}
		}()
	}
	for range 5 {
		next := mutate(r, d)
		h.Store(diff(t, h.Index(), d, next).Apply())
		d = next
	}
	close(stop)
	wg.Wait()
}

// writeDir writes d as a reference directory.
func (d refData) writeDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	write := func(name string, recs []any) {
		var b strings.Builder
		for _, r := range recs {
			line, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(line)
			b.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var us, ps, es []any
	for _, id := range sortedKeys(d.users) {
		us = append(us, d.users[id])
	}
	for _, id := range sortedKeys(d.patients) {
		ps = append(ps, d.patients[id])
	}
	for _, id := range sortedKeys(d.encounters) {
		for _, e := range d.encounters[id] {
			es = append(es, e)
		}
	}
	write(schemas.UsersFile, us)
	write(schemas.PatientsFile, ps)
	write(schemas.EncountersFile, es)
	return dir
}

// TestLoadReferenceFilesStreams: the files streamed line by line index
// exactly as the same records handed over whole; a repeated id is a
// duplicate_id error naming the file and line.
func TestLoadReferenceFilesStreams(t *testing.T) {
	d := randomRefData(rand.New(rand.NewPCG(1, 2)))
	dir := d.writeDir(t)
	opts := DefaultReferenceOptions()
	opts.HashKey = []byte("ehrwatch-test-hash-key-0123456789")
	x, err := LoadReferenceFiles(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := dump(x), dump(d.index(t)); got != want {
		t.Error("the streamed files index differently from the same records")
	}
	f, err := os.OpenFile(filepath.Join(dir, schemas.EncountersFile), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	var e schemas.Encounter
	for _, id := range sortedKeys(d.encounters) {
		if len(d.encounters[id]) > 0 {
			e = d.encounters[id][0]
			break
		}
	}
	line, _ := json.Marshal(e)
	f.Write(append(line, '\n'))
	f.Close()
	_, err = LoadReferenceFiles(dir, opts)
	var de *schemas.DecodeError
	if !errors.As(err, &de) || de.Class != schemas.ClassDuplicateID || de.Field != "encounter_id" || de.Line == 0 ||
		!strings.Contains(err.Error(), schemas.EncountersFile) {
		t.Errorf("repeated encounter: %v, want a duplicate_id error naming the file and line", err)
	}
}
