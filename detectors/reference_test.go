package detectors_test

import (
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestNormalizeLastName(t *testing.T) {
	tests := []struct{ in, want string }{
		{"Smith", "smith"},
		{"  SMITH ", "smith"},
		{"O'Brien", "obrien"},
		{"O’Brien", "obrien"},
		{"Smith-Jones", "smithjones"},
		{"Smith Jones", "smithjones"},
		{"Van der Berg", "vanderberg"},
		{"King Jr.", "king"},
		{"King III", "king"},
		{"Jr", "jr"},
		{"Müller", "müller"},
		{"", ""},
		{" - ", ""},
	}
	for _, tc := range tests {
		if got := detectors.NormalizeLastName(tc.in); got != tc.want {
			t.Errorf("NormalizeLastName(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestNormalizeAddress(t *testing.T) {
	same := [][]schemas.Address{
		{
			{Line: "12 Oak Street, Apt. 4", City: "Springfield", State: "MA", PostalCode: "01101-2345"},
			{Line: "12 oak st #4", City: "springfield", State: "ma", PostalCode: "01101"},
			{Line: "12  Oak  St.  Apartment 4", City: " Springfield ", State: "MA", PostalCode: "011012345"},
			{Line: "12 Oak St Unit 4", City: "Springfield", State: "MA", PostalCode: "01101"},
			{Line: "12 Oak St Apt #4", City: "Springfield", State: "MA", PostalCode: "01101"},
		},
		{
			{Line: "5 North Main Avenue", City: "Boston", PostalCode: "02110"},
			{Line: "5 N. Main Ave", City: "Boston", PostalCode: "02110"},
		},
	}
	for _, group := range same {
		want := detectors.NormalizeAddress(group[0])
		for _, a := range group[1:] {
			if got := detectors.NormalizeAddress(a); got != want {
				t.Errorf("NormalizeAddress(%+v) = %q, want %q", a, got, want)
			}
		}
	}
	different := [][2]schemas.Address{
		{{Line: "12 Oak St Apt 4", City: "Springfield"}, {Line: "12 Oak St Apt 5", City: "Springfield"}},
		{{Line: "12 Oak St", City: "Springfield"}, {Line: "12 Oak Ave", City: "Springfield"}},
		{{Line: "12 Oak St", City: "Springfield"}, {Line: "12 Oak St", City: "Shelbyville"}},
	}
	for _, p := range different {
		if detectors.NormalizeAddress(p[0]) == detectors.NormalizeAddress(p[1]) {
			t.Errorf("%+v and %+v normalise alike", p[0], p[1])
		}
	}
	if got := detectors.NormalizeAddress(schemas.Address{City: "Springfield", PostalCode: "01101"}); got != "" {
		t.Errorf("address without a street line = %q, want empty", got)
	}
}

func TestReferenceIndexStripsDemographics(t *testing.T) {
	x := refFixture{
		users:    []schemas.User{{UserID: "u1", FirstName: "Dana", LastName: "Smith", Address: schemas.Address{Line: "1 A St"}, Role: "nurse"}},
		patients: []schemas.Patient{{PatientID: "p1", FirstName: "Pat", LastName: "Smith", DateOfBirth: "1970-01-01", Address: schemas.Address{Line: "1 A St"}, VIP: true}},
	}.index(t)
	u, ok := x.User("u1")
	if !ok || u.FirstName != "" || u.LastName != "" || u.Address != (schemas.Address{}) || u.Role != "nurse" {
		t.Errorf("User = %+v", u)
	}
	p, ok := x.Patient("p1")
	if !ok || p.FirstName != "" || p.LastName != "" || p.DateOfBirth != "" || p.Address != (schemas.Address{}) || !p.VIP {
		t.Errorf("Patient = %+v", p)
	}
	ut, _ := x.UserTokens("u1")
	pt, _ := x.PatientTokens("p1")
	if ut != pt || ut.LastName.IsZero() {
		t.Errorf("tokens %x / %x, want equal and set", ut, pt)
	}
}

func TestReferenceIndexRejectsShortKey(t *testing.T) {
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("short")
	if _, err := detectors.NewReferenceIndex(nil, nil, nil, opts); err == nil {
		t.Error("short hash key accepted")
	}
}

func TestReferenceIndexStats(t *testing.T) {
	start := mustTime(t, "2026-01-02T00:00:00Z")
	x := refFixture{
		users:    []schemas.User{{UserID: "u1"}, {UserID: "u1", Role: "later"}},
		patients: []schemas.Patient{{PatientID: "p1"}},
		encounters: []schemas.Encounter{
			{EncounterID: "e1", PatientID: "p1", Department: "a", Start: start},
			{EncounterID: "e1", PatientID: "p1", Department: "b", Start: start},
			{EncounterID: "e2", PatientID: "p1", Start: start, End: tp(t, "2026-01-01T00:00:00Z")}, // ends before it starts
			{EncounterID: "", PatientID: "p1", Start: start},
		},
	}.index(t)
	got := x.Stats()
	want := detectors.ReferenceStats{Users: 1, Patients: 1, Encounters: 1, Duplicates: 2, InvalidEncounters: 2}
	if got != want {
		t.Errorf("Stats = %+v, want %+v", got, want)
	}
	if u, _ := x.User("u1"); u.Role != "later" {
		t.Errorf("duplicate user: kept role %q, want the last occurrence", u.Role)
	}
	ev := access("x", "2026-01-02T01:00:00Z", "u9", "nurse", "B", "p1")
	if c := x.Care(ev); !c.Explained || c.EncounterID != "e1" {
		t.Errorf("duplicate encounter: last occurrence (department b) should explain: %+v", c)
	}
}

func TestCare(t *testing.T) {
	fx := refFixture{
		users: []schemas.User{{UserID: "u-card", Department: "Cardiology"}},
		encounters: []schemas.Encounter{
			// A long cardiology stay, then a short one that ends earlier:
			// the prefix maximum must still find the long one.
			{EncounterID: "e-long", PatientID: "p1", Department: "Cardiology", Start: mustTime(t, "2026-03-01T00:00:00Z"), End: tp(t, "2026-03-20T00:00:00Z")},
			{EncounterID: "e-short", PatientID: "p1", Department: "cardiology", Start: mustTime(t, "2026-03-05T00:00:00Z"), End: tp(t, "2026-03-05T06:00:00Z")},
			{EncounterID: "e-open", PatientID: "p2", Department: "ICU", Start: mustTime(t, "2026-03-01T00:00:00Z")},
			{EncounterID: "e-team", PatientID: "p3", Department: "Neurology", Start: mustTime(t, "2026-03-10T00:00:00Z"), End: tp(t, "2026-03-11T00:00:00Z"), CareTeam: []string{"u-oncall", "u-oncall"}},
		},
	}
	x := fx.index(t)
	tests := []struct {
		name      string
		ev        *schemas.AccessEvent
		encounter string // "" = unexplained
	}{
		{"inside the long stay", access("1", "2026-03-10T00:00:00Z", "u-card", "nurse", "Cardiology", "p1"), "e-long"},
		{"department compared case-insensitively", access("2", "2026-03-10T00:00:00Z", "u-card", "nurse", "CARDIOLOGY ", "p1"), "e-long"},
		{"24h before the start", access("3", "2026-02-28T00:00:00Z", "u-card", "nurse", "Cardiology", "p1"), "e-long"},
		{"24h and 1s before the start", access("4", "2026-02-27T23:59:59Z", "u-card", "nurse", "Cardiology", "p1"), ""},
		{"24h after the end", access("5", "2026-03-21T00:00:00Z", "u-card", "nurse", "Cardiology", "p1"), "e-long"},
		{"24h and 1ns after the end", access("6", "2026-03-21T00:00:00.000000001Z", "u-card", "nurse", "Cardiology", "p1"), ""},
		{"other department", access("7", "2026-03-10T00:00:00Z", "u-x", "nurse", "Oncology", "p1"), ""},
		{"open encounter, years later", access("8", "2029-01-01T00:00:00Z", "u-x", "nurse", "icu", "p2"), "e-open"},
		{"care team, other department", access("9", "2026-03-10T12:00:00Z", "u-oncall", "physician", "Hospitalist", "p3"), "e-team"},
		{"care team, outside the slack", access("10", "2026-03-13T00:00:00Z", "u-oncall", "physician", "Hospitalist", "p3"), ""},
		{"department from the reference user", access("11", "2026-03-10T00:00:00Z", "u-card", "", "", "p1"), "e-long"},
		{"patient without encounters", access("12", "2026-03-10T00:00:00Z", "u-card", "nurse", "Cardiology", "p9"), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := x.Care(tc.ev)
			if c.Explained != (tc.encounter != "") || c.EncounterID != tc.encounter {
				t.Errorf("Care = %+v, want encounter %q", c, tc.encounter)
			}
			if c.Reason == "" {
				t.Error("empty Reason")
			}
		})
	}
	// A narrower slack moves the boundary.
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = caseHashKey
	opts.CareSlackBefore, opts.CareSlackAfter = time.Hour, 0
	y, err := detectors.NewReferenceIndex(fx.users, nil, fx.encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	if c := y.Care(access("a", "2026-03-20T00:00:01Z", "u-card", "nurse", "Cardiology", "p1")); c.Explained {
		t.Errorf("zero after-slack: explained %+v", c)
	}
	if c := y.Care(access("b", "2026-02-28T23:00:00Z", "u-card", "nurse", "Cardiology", "p1")); !c.Explained {
		t.Errorf("1h before-slack: unexplained %+v", c)
	}
}

func TestReferenceHolder(t *testing.T) {
	h := detectors.NewReferenceHolder(nil)
	if _, ok := h.Load().User("u1"); ok {
		t.Fatal("empty holder knows u1")
	}
	if c := h.Load().Care(access("1", "2026-01-01T00:00:00Z", "u1", "", "", "p1")); c.Explained || c.Reason == "" {
		t.Errorf("empty holder Care = %+v", c)
	}
	a := refFixture{users: []schemas.User{{UserID: "u1", Role: "a"}}}.index(t)
	b := refFixture{users: []schemas.User{{UserID: "u1", Role: "b"}}}.index(t)
	h.Store(a)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			if i%2 == 0 {
				h.Store(a)
			} else {
				h.Store(b)
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < 1000; i++ {
			if u, ok := h.Load().User("u1"); !ok || (u.Role != "a" && u.Role != "b") {
				t.Errorf("Load during swaps: %+v %v", u, ok)
				return
			}
		}
	}()
	wg.Wait()
	h.Store(b)
	if u, _ := h.Load().User("u1"); u.Role != "b" {
		t.Errorf("after Store(b): role %q", u.Role)
	}
}
