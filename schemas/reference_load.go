package schemas

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"sync"
	"time"
)

// Validator is a record type that can check its own invariants; the
// reference-data record types (User, Patient, Encounter) implement it
// through their pointer.
type Validator[T any] interface {
	*T
	Validate() error
}

// ReadNDJSON reads newline-delimited JSON from r: one object per line,
// blank lines skipped, lines of at most MaxNDJSONLineSize bytes. Each line
// is decoded strictly into a T — unknown members, duplicate members, wrong
// types, invalid UTF-8, times without an offset (see ParseTime), nesting
// beyond MaxJSONDepth and strings beyond MaxReferenceStringLen are errors;
// null counts as absent — then checked with its Validate method and handed
// to fn with its 1-based line number. fn's v is only valid during the call.
//
// Reading stops at the first error, which is returned: a *DecodeError
// carrying the line number (and field) for bad data, fn's error as is
// (a *DecodeError from fn gets the line number if it has none), or the
// reader's error wrapped.
func ReadNDJSON[T any, PT Validator[T]](r io.Reader, fn func(line int, v *T) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxNDJSONLineSize)
	d := getDoc()
	defer putDoc(d)
	line := 0
	for sc.Scan() {
		line++
		b := sc.Bytes()
		if isBlank(b) {
			continue
		}
		var v T
		if de := bindLine(d, b, &v); de != nil {
			de.Line = line
			return de
		}
		if err := PT(&v).Validate(); err != nil {
			return withLine(err, line)
		}
		if err := fn(line, &v); err != nil {
			return withLine(err, line)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return &DecodeError{Class: ClassTooLarge, Detail: reasonText[rLineTooLong], Line: line + 1, Offset: -1}
		}
		return fmt.Errorf("schemas: reading line %d: %w", line+1, err)
	}
	return nil
}

func withLine(err error, line int) error {
	var de *DecodeError
	if errors.As(err, &de) && de.Line == 0 {
		de.Line = line
	}
	return err
}

func isBlank(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' {
			return false
		}
	}
	return true
}

// LoadUsers reads users.ndjson (see ReadNDJSON); a user_id seen on an
// earlier line is a duplicate_id error.
func LoadUsers(r io.Reader) ([]User, error) {
	var out []User
	seen := make(map[string]struct{})
	err := ReadNDJSON(r, func(line int, u *User) error {
		if _, dup := seen[u.UserID]; dup {
			return newErr("user_id", ClassDuplicateID, rDuplicateID, -1)
		}
		seen[u.UserID] = struct{}{}
		out = append(out, *u)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LoadPatients reads patients.ndjson (see ReadNDJSON); a patient_id seen
// on an earlier line is a duplicate_id error.
func LoadPatients(r io.Reader) ([]Patient, error) {
	var out []Patient
	seen := make(map[string]struct{})
	err := ReadNDJSON(r, func(line int, p *Patient) error {
		if _, dup := seen[p.PatientID]; dup {
			return newErr("patient_id", ClassDuplicateID, rDuplicateID, -1)
		}
		seen[p.PatientID] = struct{}{}
		out = append(out, *p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LoadEncounters reads encounters.ndjson (see ReadNDJSON); an encounter_id
// seen on an earlier line is a duplicate_id error.
func LoadEncounters(r io.Reader) ([]Encounter, error) {
	var out []Encounter
	seen := make(map[string]struct{})
	err := ReadNDJSON(r, func(line int, e *Encounter) error {
		if _, dup := seen[e.EncounterID]; dup {
			return newErr("encounter_id", ClassDuplicateID, rDuplicateID, -1)
		}
		seen[e.EncounterID] = struct{}{}
		out = append(out, *e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Reference-data file names inside a reference directory.
const (
	UsersFile      = "users.ndjson"
	PatientsFile   = "patients.ndjson"
	EncountersFile = "encounters.ndjson"
)

// ReferenceSet is one consistent load of reference data with lookup
// indexes. It is immutable once built: share it between goroutines freely,
// and swap a new one in atomically to refresh.
type ReferenceSet struct {
	// Users and Patients are in file order.
	Users    []User
	Patients []Patient
	// Encounters are sorted by patient_id, then start, then encounter_id.
	Encounters []Encounter

	users      map[string]int
	patients   map[string]int
	encounters map[string][2]int // patient_id → [lo, hi) in Encounters
}

// NewReferenceSet indexes already-loaded records. It takes ownership of
// the slices (sorting encounters in place) and fails on a duplicate key.
func NewReferenceSet(users []User, patients []Patient, encounters []Encounter) (*ReferenceSet, error) {
	s := &ReferenceSet{
		Users:      users,
		Patients:   patients,
		Encounters: encounters,
		users:      make(map[string]int, len(users)),
		patients:   make(map[string]int, len(patients)),
		encounters: make(map[string][2]int),
	}
	for i := range users {
		if _, dup := s.users[users[i].UserID]; dup {
			return nil, newErr("user_id", ClassDuplicateID, rDuplicateID, -1)
		}
		s.users[users[i].UserID] = i
	}
	for i := range patients {
		if _, dup := s.patients[patients[i].PatientID]; dup {
			return nil, newErr("patient_id", ClassDuplicateID, rDuplicateID, -1)
		}
		s.patients[patients[i].PatientID] = i
	}
	sort.SliceStable(encounters, func(i, j int) bool {
		a, b := &encounters[i], &encounters[j]
		if a.PatientID != b.PatientID {
			return a.PatientID < b.PatientID
		}
		if !a.Start.Equal(b.Start) {
			return a.Start.Before(b.Start)
		}
		return a.EncounterID < b.EncounterID
	})
	for i := 0; i < len(encounters); {
		j := i + 1
		for j < len(encounters) && encounters[j].PatientID == encounters[i].PatientID {
			j++
		}
		s.encounters[encounters[i].PatientID] = [2]int{i, j}
		i = j
	}
	ids := make(map[string]struct{}, len(encounters))
	for i := range encounters {
		if _, dup := ids[encounters[i].EncounterID]; dup {
			return nil, newErr("encounter_id", ClassDuplicateID, rDuplicateID, -1)
		}
		ids[encounters[i].EncounterID] = struct{}{}
	}
	return s, nil
}

// LoadReferenceDir loads users.ndjson, patients.ndjson and
// encounters.ndjson from dir (all three must exist) into a ReferenceSet.
// Errors name the file and wrap the underlying *DecodeError or I/O error.
func LoadReferenceDir(dir string) (*ReferenceSet, error) {
	users, err := loadFile(dir, UsersFile, LoadUsers)
	if err != nil {
		return nil, err
	}
	patients, err := loadFile(dir, PatientsFile, LoadPatients)
	if err != nil {
		return nil, err
	}
	encounters, err := loadFile(dir, EncountersFile, LoadEncounters)
	if err != nil {
		return nil, err
	}
	return NewReferenceSet(users, patients, encounters)
}

func loadFile[T any](dir, name string, load func(io.Reader) ([]T, error)) ([]T, error) {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return nil, fmt.Errorf("schemas: reference data: %w", err)
	}
	defer f.Close()
	out, err := load(f)
	if err != nil {
		return nil, fmt.Errorf("schemas: reference data %s: %w", name, err)
	}
	return out, nil
}

// ReferenceVisitor receives the records of a reference directory one at
// a time (see StreamReferenceDir). A record is only valid during the
// call. An error returned by a callback stops the read and comes back
// with the file and line.
type ReferenceVisitor struct {
	User      func(*User) error
	Patient   func(*Patient) error
	Encounter func(*Encounter) error
}

// DuplicateIDError is the duplicate_id error for a record whose key
// (field, e.g. "patient_id") was seen before; a ReferenceVisitor callback
// returns it to reject a file as LoadReferenceDir does.
func DuplicateIDError(field string) error {
	return newErr(field, ClassDuplicateID, rDuplicateID, -1)
}

// StreamReferenceDir reads users.ndjson, patients.ndjson and
// encounters.ndjson from dir (all three must exist), in that order, line
// by line, and hands every record to v, so a caller can index the data
// without ever holding it whole. Errors are those of LoadReferenceDir,
// except that duplicate ids are the visitor's to report
// (DuplicateIDError): keeping every id seen would cost what streaming
// saves.
func StreamReferenceDir(dir string, v ReferenceVisitor) error {
	if err := streamFile(dir, UsersFile, v.User); err != nil {
		return err
	}
	if err := streamFile(dir, PatientsFile, v.Patient); err != nil {
		return err
	}
	return streamFile(dir, EncountersFile, v.Encounter)
}

func streamFile[T any, PT Validator[T]](dir, name string, fn func(PT) error) error {
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		return fmt.Errorf("schemas: reference data: %w", err)
	}
	defer f.Close()
	err = ReadNDJSON[T, PT](f, func(_ int, v *T) error {
		if fn == nil {
			return nil
		}
		return fn(PT(v))
	})
	if err != nil {
		return fmt.Errorf("schemas: reference data %s: %w", name, err)
	}
	return nil
}

// User returns the user with the given id.
func (s *ReferenceSet) User(id string) (*User, bool) {
	i, ok := s.users[id]
	if !ok {
		return nil, false
	}
	return &s.Users[i], true
}

// Patient returns the patient with the given id.
func (s *ReferenceSet) Patient(id string) (*Patient, bool) {
	i, ok := s.patients[id]
	if !ok {
		return nil, false
	}
	return &s.Patients[i], true
}

// EncountersOf returns the patient's encounters, oldest first. The slice
// aliases the set: do not modify it.
func (s *ReferenceSet) EncountersOf(patientID string) []Encounter {
	r, ok := s.encounters[patientID]
	if !ok {
		return nil
	}
	return s.Encounters[r[0]:r[1]:r[1]]
}

// ---- strict binding of a parsed line onto a struct, by json tags ----

var timeType = reflect.TypeFor[time.Time]()

type bindField struct {
	name  string
	index int
}

var bindFields sync.Map // reflect.Type → []bindField

// fieldsOf lists the json-tagged fields of struct type t.
func fieldsOf(t reflect.Type) []bindField {
	if v, ok := bindFields.Load(t); ok {
		return v.([]bindField)
	}
	var fs []bindField
	for i := range t.NumField() {
		sf := t.Field(i)
		name := jsonName(sf)
		if name == "" {
			continue
		}
		fs = append(fs, bindField{name: name, index: i})
	}
	bindFields.Store(t, fs)
	return fs
}

// jsonName is a struct field's JSON member name, or "" if it has none.
func jsonName(sf reflect.StructField) string {
	if !sf.IsExported() {
		return ""
	}
	tag := sf.Tag.Get("json")
	if tag == "-" {
		return ""
	}
	for i := 0; i < len(tag); i++ {
		if tag[i] == ',' {
			tag = tag[:i]
			break
		}
	}
	if tag == "" {
		return sf.Name
	}
	return tag
}

func bindLine(d *jdoc, line []byte, v any) *DecodeError {
	if de := d.parse(line); de != nil {
		return de
	}
	if d.nodes[0].kind != jObject {
		return newErr("", ClassWrongType, rNotObject, 0)
	}
	return bindValue(d, 0, reflect.ValueOf(v).Elem(), "", "")
}

// joinPath names a nested field for an error message.
func joinPath(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

// bindValue stores node n into v. parent and name locate v for errors; the
// path is only built when there is one.
func bindValue(d *jdoc, n int32, v reflect.Value, parent, name string) *DecodeError {
	node := &d.nodes[n]
	pos := int(node.start)
	if node.kind == jNull {
		v.SetZero()
		return nil
	}
	t := v.Type()
	switch {
	case t == timeType, t.Kind() == reflect.Pointer && t.Elem() == timeType:
		if node.kind != jString {
			return newErr(joinPath(parent, name), ClassWrongType, rWantString, pos)
		}
		if node.dlen > maxTimeLen {
			return newErr(joinPath(parent, name), ClassInvalidTime, rTimeFormat, pos)
		}
		tm, r := parseTime(d.text(n))
		if r != rNone {
			return newErr(joinPath(parent, name), ClassInvalidTime, r, pos)
		}
		if t == timeType {
			v.Set(reflect.ValueOf(tm))
		} else {
			v.Set(reflect.ValueOf(&tm))
		}
	case t.Kind() == reflect.String:
		if node.kind != jString {
			return newErr(joinPath(parent, name), ClassWrongType, rWantString, pos)
		}
		if node.dlen > MaxReferenceStringLen {
			return newErr(joinPath(parent, name), ClassTooLarge, rValueTooLarge, pos)
		}
		v.SetString(string(d.text(n)))
	case t.Kind() == reflect.Bool:
		if node.kind != jTrue && node.kind != jFalse {
			return newErr(joinPath(parent, name), ClassWrongType, rWantBool, pos)
		}
		v.SetBool(node.kind == jTrue)
	case t.Kind() == reflect.Slice && t.Elem().Kind() == reflect.String:
		if node.kind != jArray {
			return newErr(joinPath(parent, name), ClassWrongType, rWantArray, pos)
		}
		if node.count > MaxCareTeam {
			return newErr(joinPath(parent, name), ClassTooLarge, rTooManyItems, pos)
		}
		s := reflect.MakeSlice(t, int(node.count), int(node.count))
		for c, k := d.first(n), 0; k < int(node.count); c, k = d.nodes[c].next, k+1 {
			if de := bindValue(d, c, s.Index(k), parent, name); de != nil {
				return de
			}
		}
		v.Set(s)
	case t.Kind() == reflect.Struct:
		if node.kind != jObject {
			return newErr(joinPath(parent, name), ClassWrongType, rWantObject, pos)
		}
		path := joinPath(parent, name)
		fs := fieldsOf(t)
		var seen uint64
		for c, k := d.first(n), int32(0); k < node.count; c, k = d.nodes[c].next, k+1 {
			key := d.key(c)
			fi := -1
			for i := range fs {
				if string(key) == fs[i].name {
					fi = i
					break
				}
			}
			if fi < 0 {
				return newErr(joinPath(path, echoName(key)), ClassUnknownField, rUnknownField, int(d.nodes[c].kstart)-1)
			}
			if seen&(1<<fi) != 0 {
				return newErr(joinPath(path, fs[fi].name), ClassDuplicateField, rDuplicateField, int(d.nodes[c].kstart)-1)
			}
			seen |= 1 << fi
			if de := bindValue(d, c, v.Field(fs[fi].index), path, fs[fi].name); de != nil {
				return de
			}
		}
	default:
		// Unreachable for this package's record types; a test binds each.
		return newErr(joinPath(parent, name), ClassWrongType, rNone, pos)
	}
	return nil
}
