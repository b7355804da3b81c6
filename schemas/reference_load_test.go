package schemas

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

func TestLoadReferenceDir(t *testing.T) {
	rs, err := LoadReferenceDir("testdata/reference")
	if err != nil {
		t.Fatal(err)
	}
	if len(rs.Users) != 4 || len(rs.Patients) != 4 || len(rs.Encounters) != 3 {
		t.Fatalf("counts: %d users, %d patients, %d encounters", len(rs.Users), len(rs.Patients), len(rs.Encounters))
	}
	u, ok := rs.User("u-300")
	if !ok || u.Status != UserTerminated || u.TerminatedAt == nil {
		t.Fatalf("u-300: %+v %v", u, ok)
	}
	if _, off := u.TerminatedAt.Zone(); off != -6*3600 {
		t.Fatalf("terminated_at offset %d", off)
	}
	if u.Address != (Address{}) {
		t.Fatalf("null address not empty: %+v", u.Address)
	}
	u, _ = rs.User("u-100234")
	if u.Address.City != "Springfield" || u.Role != "registered-nurse" {
		t.Fatalf("u-100234: %+v", u)
	}
	if _, ok := rs.User("nobody"); ok {
		t.Fatal("unknown user found")
	}
	p, ok := rs.Patient("MRN-00099120")
	if !ok || !p.VIP || p.DeceasedAt == nil || p.DateOfBirth != "1951-11-03" {
		t.Fatalf("patient: %+v", p)
	}
	encs := rs.EncountersOf("MRN-00482913")
	if len(encs) != 2 || encs[0].EncounterID != "enc-7781100" || encs[1].EncounterID != "enc-7781230" {
		t.Fatalf("encounters not sorted by start: %+v", encs)
	}
	if encs[1].End != nil || len(encs[1].CareTeam) != 1 || encs[0].End == nil {
		t.Fatalf("encounter fields: %+v", encs)
	}
	if got := rs.EncountersOf("MRN-555"); got != nil {
		t.Fatalf("encounters for a patient without any: %+v", got)
	}
	// The returned slice cannot grow into its neighbour.
	if cap(encs) != len(encs) {
		t.Fatalf("cap %d > len %d", cap(encs), len(encs))
	}
}

func TestLoadReferenceDirMissingFile(t *testing.T) {
	dir := t.TempDir()
	for _, f := range []string{UsersFile, PatientsFile} {
		b, err := os.ReadFile(filepath.Join("testdata/reference", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, err := LoadReferenceDir(dir)
	if !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), EncountersFile) {
		t.Fatalf("err = %v", err)
	}
	// A bad line names the file and the line, and unwraps to the DecodeError.
	if err := os.WriteFile(filepath.Join(dir, EncountersFile), []byte("{}\n{\"encounter_id\":\"e\"}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = LoadReferenceDir(dir)
	var de *DecodeError
	if !errors.As(err, &de) || de.Line != 1 || de.Field != "encounter_id" || de.Class != ClassMissingField {
		t.Fatalf("err = %v", err)
	}
	if !strings.Contains(err.Error(), EncountersFile+": schemas: line 1: field encounter_id: missing_field") {
		t.Fatalf("message %q", err)
	}
}

func TestReadNDJSONErrors(t *testing.T) {
	const okUser = `{"user_id":"u1","status":"active"}`
	cases := []struct {
		name  string
		load  func(io.Reader) error
		in    string
		line  int
		field string
		class ErrorClass
	}{
		{"users: unknown field", loadUsers, okUser + "\n" + `{"user_id":"u2","status":"active","salary":1}`, 2, "salary", ClassUnknownField},
		{"users: unknown nested field", loadUsers, `{"user_id":"u2","status":"active","address":{"street":"x"}}`, 1, "address.street", ClassUnknownField},
		{"users: unknown field named like data", loadUsers, `{"user_id":"u2","status":"active","Jane Doe":1}`, 1, "(redacted)", ClassUnknownField},
		{"users: duplicate member", loadUsers, `{"user_id":"u2","user_id":"u3","status":"active"}`, 1, "user_id", ClassDuplicateField},
		{"users: duplicate nested member", loadUsers, `{"user_id":"u2","status":"active","address":{"city":"a","city":"b"}}`, 1, "address.city", ClassDuplicateField},
		{"users: missing status", loadUsers, `{"user_id":"u2"}`, 1, "status", ClassMissingField},
		{"users: missing id", loadUsers, `{"status":"active"}`, 1, "user_id", ClassMissingField},
		{"users: bad status", loadUsers, `{"user_id":"u2","status":"fired"}`, 1, "status", ClassInvalidValue},
		{"users: terminated without date", loadUsers, `{"user_id":"u2","status":"terminated"}`, 1, "terminated_at", ClassMissingField},
		{"users: terminated_at without offset", loadUsers, `{"user_id":"u2","status":"terminated","terminated_at":"2026-01-31T17:00:00"}`, 1, "terminated_at", ClassInvalidTime},
		{"users: wrong type", loadUsers, `{"user_id":7,"status":"active"}`, 1, "user_id", ClassWrongType},
		{"users: wrong nested type", loadUsers, `{"user_id":"u","status":"active","address":{"city":1}}`, 1, "address.city", ClassWrongType},
		{"users: address not object", loadUsers, `{"user_id":"u","status":"active","address":"x"}`, 1, "address", ClassWrongType},
		{"users: duplicate user_id", loadUsers, okUser + "\n\n" + okUser, 3, "user_id", ClassDuplicateID},
		{"users: syntax", loadUsers, okUser + "\n{\"user_id\":", 2, "", ClassSyntax},
		{"users: top-level array", loadUsers, `[]`, 1, "", ClassWrongType},
		{"users: invalid UTF-8", loadUsers, "{\"user_id\":\"u\xff\",\"status\":\"active\"}", 1, "", ClassInvalidUTF8},
		{"users: long name", loadUsers, `{"user_id":"u","status":"active","first_name":"` + strings.Repeat("n", MaxReferenceStringLen+1) + `"}`, 1, "first_name", ClassTooLarge},
		{"users: long id", loadUsers, `{"user_id":"` + strings.Repeat("u", MaxIDLen+1) + `","status":"active"}`, 1, "user_id", ClassTooLarge},
		{"users: control char in id", loadUsers, `{"user_id":"u\t1","status":"active"}`, 1, "user_id", ClassInvalidValue},
		{"users: deep nesting", loadUsers, `{"user_id":"u","status":"active","address":` + strings.Repeat("[", 50) + strings.Repeat("]", 50) + `}`, 1, "", ClassTooDeep},
		{"users: line too long", loadUsers, okUser + "\n" + `{"user_id":"` + strings.Repeat("u", MaxNDJSONLineSize) + `"}`, 2, "", ClassTooLarge},
		{"patients: bad date", loadPatients, `{"patient_id":"p","date_of_birth":"1984-02-30"}`, 1, "date_of_birth", ClassInvalidTime},
		{"patients: date with time", loadPatients, `{"patient_id":"p","date_of_birth":"1984-02-03T00:00:00Z"}`, 1, "date_of_birth", ClassInvalidTime},
		{"patients: US date", loadPatients, `{"patient_id":"p","date_of_birth":"02/03/1984"}`, 1, "date_of_birth", ClassInvalidTime},
		{"patients: vip not bool", loadPatients, `{"patient_id":"p","vip":"yes"}`, 1, "vip", ClassWrongType},
		{"patients: duplicate id", loadPatients, `{"patient_id":"p"}` + "\n" + `{"patient_id":"p"}`, 2, "patient_id", ClassDuplicateID},
		{"patients: too many next of kin", loadPatients, `{"patient_id":"p","next_of_kin_user_ids":[` + strings.Repeat(`"u",`, MaxNextOfKin) + `"u"]}`, 1, "next_of_kin_user_ids", ClassTooLarge},
		{"patients: empty next of kin", loadPatients, `{"patient_id":"p","next_of_kin_user_ids":[""]}`, 1, "next_of_kin_user_ids", ClassInvalidValue},
		{"patients: guarantor with control char", loadPatients, `{"patient_id":"p","guarantor_user_id":"u\u0007"}`, 1, "guarantor_user_id", ClassInvalidValue},
		{"patients: empty id", loadPatients, `{"patient_id":""}`, 1, "patient_id", ClassMissingField},
		{"encounters: end before start", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"2026-01-05T11:00:00Z","end":"2026-01-05T11:59:00+01:00"}`, 1, "end", ClassInvalidValue},
		{"encounters: no start", loadEncounters, `{"encounter_id":"e","patient_id":"p"}`, 1, "start", ClassMissingField},
		{"encounters: null start", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":null}`, 1, "start", ClassMissingField},
		{"encounters: care_team not array", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"2026-01-05T11:00:00Z","care_team":"u1"}`, 1, "care_team", ClassWrongType},
		{"encounters: care_team item not string", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"2026-01-05T11:00:00Z","care_team":["u1",2]}`, 1, "care_team", ClassWrongType},
		{"encounters: empty care_team item", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"2026-01-05T11:00:00Z","care_team":["u1",""]}`, 1, "care_team", ClassInvalidValue},
		{"encounters: huge care_team", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"2026-01-05T11:00:00Z","care_team":[` + strings.Repeat(`"u",`, MaxCareTeam) + `"u"]}`, 1, "care_team", ClassTooLarge},
		{"encounters: start before 1900", loadEncounters, `{"encounter_id":"e","patient_id":"p","start":"1899-01-05T11:00:00Z"}`, 1, "start", ClassInvalidTime},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := c.load(strings.NewReader(c.in))
			var de *DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("err = %v (%T)", err, err)
			}
			if de.Line != c.line || de.Field != c.field || de.Class != c.class {
				t.Fatalf("got line %d field %q class %q (%v), want line %d field %q class %q", de.Line, de.Field, de.Class, err, c.line, c.field, c.class)
			}
		})
	}
}

func loadUsers(r io.Reader) error      { _, err := LoadUsers(r); return err }
func loadPatients(r io.Reader) error   { _, err := LoadPatients(r); return err }
func loadEncounters(r io.Reader) error { _, err := LoadEncounters(r); return err }

func TestReadNDJSONErrorsDoNotLeak(t *testing.T) {
	const secret = "Zebediah-Featherstonehaugh"
	for _, in := range []string{
		`{"patient_id":"p","date_of_birth":"` + secret + `"}`,
		`{"patient_id":"p","first_name":7,"last_name":"` + secret + `"}`,
		`{"patient_id":"p","` + secret + `":"x"}`,
		`{"patient_id":"` + secret + `\u0000"}`,
		`{"patient_id":"p","deceased_at":"` + secret + `"}`,
	} {
		_, err := LoadPatients(strings.NewReader(in))
		if err == nil {
			t.Fatalf("no error for %s", in)
		}
		for k := 0; k+6 <= len(secret); k++ {
			if strings.Contains(err.Error(), secret[k:k+6]) {
				t.Fatalf("error %q leaks part of a value", err)
			}
		}
	}
}

func TestReadNDJSONStreamsAndStops(t *testing.T) {
	in := `{"user_id":"a","status":"active"}` + "\r\n" + `{"user_id":"b","status":"active"}` + "\n   \n" + `{"user_id":"c","status":"active"}`
	var lines []int
	var ids []string
	stop := errors.New("stop")
	err := ReadNDJSON(strings.NewReader(in), func(line int, u *User) error {
		lines = append(lines, line)
		ids = append(ids, u.UserID)
		if u.UserID == "c" {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v", err)
	}
	if strings.Join(ids, ",") != "a,b,c" || lines[2] != 4 {
		t.Fatalf("ids %v lines %v", ids, lines)
	}
	// A reader error is wrapped, not turned into a DecodeError.
	ioErr := errors.New("disk on fire")
	_, err = LoadUsers(iotest.ErrReader(ioErr))
	if !errors.Is(err, ioErr) || ErrorClassOf(err) != ClassOther {
		t.Fatalf("err = %v", err)
	}
}

func TestNewReferenceSetRejectsDuplicates(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		u     []User
		p     []Patient
		e     []Encounter
		field string
	}{
		{u: []User{{UserID: "a"}, {UserID: "a"}}, field: "user_id"},
		{p: []Patient{{PatientID: "a"}, {PatientID: "a"}}, field: "patient_id"},
		{e: []Encounter{{EncounterID: "x", PatientID: "a", Start: now}, {EncounterID: "x", PatientID: "b", Start: now}}, field: "encounter_id"},
	}
	for _, c := range cases {
		_, err := NewReferenceSet(c.u, c.p, c.e)
		assertDecodeError(t, err, c.field, ClassDuplicateID)
	}
}

func TestReferenceValidateRequiredLists(t *testing.T) {
	// Each required member, emptied in a valid record, fails Validate with
	// missing_field naming it: the Go lists the schema test compares with
	// are the ones Validate enforces.
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	check := func(name string, required []string, mk func() interface{ Validate() error }, clear func(any, string)) {
		if err := mk().Validate(); err != nil {
			t.Fatalf("%s: valid record rejected: %v", name, err)
		}
		for _, f := range required {
			v := mk()
			clear(v, f)
			assertDecodeError(t, v.Validate(), f, ClassMissingField)
		}
	}
	check("user", userRequired, func() interface{ Validate() error } { return &User{UserID: "u", Status: UserActive} },
		func(v any, f string) {
			u := v.(*User)
			switch f {
			case "user_id":
				u.UserID = ""
			case "status":
				u.Status = ""
			default:
				t.Fatalf("test does not know %s", f)
			}
		})
	check("patient", patientRequired, func() interface{ Validate() error } { return &Patient{PatientID: "p"} },
		func(v any, f string) {
			if f != "patient_id" {
				t.Fatalf("test does not know %s", f)
			}
			v.(*Patient).PatientID = ""
		})
	check("encounter", encounterRequired, func() interface{ Validate() error } {
		return &Encounter{EncounterID: "e", PatientID: "p", Start: now}
	}, func(v any, f string) {
		e := v.(*Encounter)
		switch f {
		case "encounter_id":
			e.EncounterID = ""
		case "patient_id":
			e.PatientID = ""
		case "start":
			e.Start = time.Time{}
		default:
			t.Fatalf("test does not know %s", f)
		}
	})
}

func TestValidDate(t *testing.T) {
	for s, want := range map[string]bool{
		"2024-02-29": true, "2023-02-29": false, "1900-02-29": false, "2000-02-29": true,
		"2024-04-31": false, "2024-12-31": true, "2024-13-01": false, "2024-00-10": false,
		"2024-1-01": false, "20240101": false, "2024-01-01Z": false, "": false, "abcd-ef-gh": false,
	} {
		if validDate(s) != want {
			t.Errorf("validDate(%q) != %v", s, want)
		}
	}
}

// TestBindCoversReferenceTypes binds a record of each type with every
// member set, so a field kind the binder does not handle fails here rather
// than at run time.
func TestBindCoversReferenceTypes(t *testing.T) {
	d := getDoc()
	defer putDoc(d)
	lines := map[string]any{
		`{"user_id":"u","first_name":"f","last_name":"l","role":"r","department":"d","address":{"line":"1","city":"c","state":"s","postal_code":"p"},"status":"terminated","terminated_at":"2026-01-01T00:00:00Z","patient_id":"p"}`:                 &User{},
		`{"patient_id":"p","first_name":"f","last_name":"l","address":{"line":"1"},"date_of_birth":"2000-01-01","vip":true,"deceased_at":"2026-01-01T00:00:00Z","employee_user_id":"u","next_of_kin_user_ids":["u2","u3"],"guarantor_user_id":"u4"}`: &Patient{},
		`{"encounter_id":"e","patient_id":"p","department":"d","start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z","care_team":["a","b"]}`:                                                                                                   &Encounter{},
	}
	for line, v := range lines {
		if de := bindLine(d, []byte(line), v); de != nil {
			t.Fatalf("%T: %v", v, de)
		}
		if err := v.(interface{ Validate() error }).Validate(); err != nil {
			t.Fatalf("%T: %v", v, err)
		}
	}
}
