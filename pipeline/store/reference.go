package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ReferenceLoad is one read of the reference tables.
type ReferenceLoad struct {
	Users      []schemas.User
	Patients   []schemas.Patient
	Encounters []schemas.Encounter
	// Vocabulary is the hospital's mapping of role and department names
	// (migration 0017), without deleted rows. Whether its categories are
	// known is the detectors' business (detectors.KnownVocabulary): the
	// caller checks that before indexing.
	Vocabulary []schemas.VocabularyEntry
	// Skipped counts rows that failed validation and were left out, by
	// "table: error class: field" (never by value). Callers that leave out
	// more rows add them here (e.g. "vocabulary: categories").
	Skipped map[string]int
}

// ReadReference reads the latest version of every row of the users,
// patients and encounters tables (migration 0006) and of the vocabulary
// table (0017; deleted rows left out) (SELECT … FINAL, so the row with the
// highest updated_at per id wins). Rows that fail their
// schemas Validate are skipped and counted; a failed query is an error
// (the caller keeps its previous data). The rows are schemas types only:
// the caller indexes them (detectors.NewReferenceIndexWithVocabulary).
func ReadReference(ctx context.Context, conn driver.Conn) (*ReferenceLoad, error) {
	out := &ReferenceLoad{Skipped: map[string]int{}}
	skip := func(table string, err error) {
		out.Skipped[table+": "+refErrorKey(err)]++
	}

	rows, err := conn.Query(ctx, `SELECT user_id, first_name, last_name, role, department, address_line, city, state,
 postal_code, status, terminated_at, patient_id FROM users FINAL`)
	if err != nil {
		return nil, refQueryError("users", err)
	}
	for rows.Next() {
		var u schemas.User
		var status string
		if err := rows.Scan(&u.UserID, &u.FirstName, &u.LastName, &u.Role, &u.Department, &u.Address.Line, &u.Address.City,
			&u.Address.State, &u.Address.PostalCode, &status, &u.TerminatedAt, &u.PatientID); err != nil {
			rows.Close()
			return nil, refQueryError("users", err)
		}
		u.Status = schemas.UserStatus(status)
		u.TerminatedAt = utcPtr(u.TerminatedAt)
		if err := u.Validate(); err != nil {
			skip("users", err)
			continue
		}
		out.Users = append(out.Users, u)
	}
	if err := closeRows(rows); err != nil {
		return nil, refQueryError("users", err)
	}

	rows, err = conn.Query(ctx, `SELECT patient_id, first_name, last_name, address_line, city, state, postal_code,
 date_of_birth, vip, deceased_at, employee_user_id, next_of_kin_user_ids, guarantor_user_id FROM patients FINAL`)
	if err != nil {
		return nil, refQueryError("patients", err)
	}
	for rows.Next() {
		var p schemas.Patient
		var dob *time.Time
		if err := rows.Scan(&p.PatientID, &p.FirstName, &p.LastName, &p.Address.Line, &p.Address.City, &p.Address.State,
			&p.Address.PostalCode, &dob, &p.VIP, &p.DeceasedAt, &p.EmployeeUserID, &p.NextOfKinUserIDs, &p.GuarantorUserID); err != nil {
			rows.Close()
			return nil, refQueryError("patients", err)
		}
		if dob != nil {
			p.DateOfBirth = dob.Format(time.DateOnly)
		}
		p.DeceasedAt = utcPtr(p.DeceasedAt)
		if len(p.NextOfKinUserIDs) == 0 {
			p.NextOfKinUserIDs = nil
		}
		if err := p.Validate(); err != nil {
			skip("patients", err)
			continue
		}
		out.Patients = append(out.Patients, p)
	}
	if err := closeRows(rows); err != nil {
		return nil, refQueryError("patients", err)
	}

	rows, err = conn.Query(ctx, `SELECT encounter_id, patient_id, department, start_time, end_time, care_team
 FROM encounters FINAL`)
	if err != nil {
		return nil, refQueryError("encounters", err)
	}
	for rows.Next() {
		var e schemas.Encounter
		if err := rows.Scan(&e.EncounterID, &e.PatientID, &e.Department, &e.Start, &e.End, &e.CareTeam); err != nil {
			rows.Close()
			return nil, refQueryError("encounters", err)
		}
		e.Start = e.Start.UTC()
		e.End = utcPtr(e.End)
		if len(e.CareTeam) == 0 {
			e.CareTeam = nil
		}
		if err := e.Validate(); err != nil {
			skip("encounters", err)
			continue
		}
		out.Encounters = append(out.Encounters, e)
	}
	if err := closeRows(rows); err != nil {
		return nil, refQueryError("encounters", err)
	}

	rows, err = conn.Query(ctx, `SELECT kind, name, categories, note FROM vocabulary FINAL WHERE NOT deleted ORDER BY kind, name`)
	if err != nil {
		return nil, refQueryError("vocabulary", err)
	}
	for rows.Next() {
		var e schemas.VocabularyEntry
		var kind string
		if err := rows.Scan(&kind, &e.Name, &e.Categories, &e.Note); err != nil {
			rows.Close()
			return nil, refQueryError("vocabulary", err)
		}
		e.Kind = schemas.VocabularyKind(kind)
		if err := e.Validate(); err != nil {
			skip("vocabulary", err)
			continue
		}
		out.Vocabulary = append(out.Vocabulary, e)
	}
	if err := closeRows(rows); err != nil {
		return nil, refQueryError("vocabulary", err)
	}
	return out, nil
}

// AllowlistLoad is one read of the allowlist table.
type AllowlistLoad struct {
	// Entries are the live entries (not deleted), ordered by entry_id.
	Entries []schemas.AllowlistEntry
	// Skipped lists the entry ids of rows that fail
	// AllowlistEntry.Validate, with the key that is wrong ("expires_at").
	Skipped map[string]string
}

// ReadAllowlist reads the latest version of every allowlist entry
// (migration 0008; FINAL, highest updated_at wins) and keeps those not
// deleted. Entries that fail validation (no expiry, no owner, …) are
// skipped and reported by entry id, so one bad row does not block the
// others.
func ReadAllowlist(ctx context.Context, conn driver.Conn) (*AllowlistLoad, error) {
	rows, err := conn.Query(ctx, `SELECT entry_id, user_id, patient_id, department, detector, reason, owner, expires_at
 FROM allowlist FINAL WHERE NOT deleted ORDER BY entry_id`)
	if err != nil {
		return nil, refQueryError("allowlist", err)
	}
	out := &AllowlistLoad{Skipped: map[string]string{}}
	for rows.Next() {
		var id string
		var e schemas.AllowlistEntry
		var exp *time.Time
		if err := rows.Scan(&id, &e.UserID, &e.PatientID, &e.Department, &e.Detector, &e.Reason, &e.Owner, &exp); err != nil {
			rows.Close()
			return nil, refQueryError("allowlist", err)
		}
		if exp != nil {
			e.ExpiresAt = exp.UTC()
		}
		if err := e.Validate(); err != nil {
			out.Skipped[id] = refErrorKey(err)
			continue
		}
		out.Entries = append(out.Entries, e)
	}
	if err := closeRows(rows); err != nil {
		return nil, refQueryError("allowlist", err)
	}
	return out, nil
}

// SkippedKeys returns the skipped entries' ids, sorted.
func (a *AllowlistLoad) SkippedKeys() []string {
	ids := make([]string, 0, len(a.Skipped))
	for id := range a.Skipped {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func closeRows(rows driver.Rows) error {
	err := rows.Err()
	if cerr := rows.Close(); err == nil {
		err = cerr
	}
	return err
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC()
	return &u
}

// refErrorKey names a validation error by class and field, never value.
func refErrorKey(err error) string {
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		return string(de.Class) + ": " + de.Field
	}
	var fe *schemas.FieldError
	if errors.As(err, &fe) {
		return fe.Key
	}
	return "invalid"
}

// refQueryError wraps a failed reference query. ClickHouse errors are
// reported by code and name (server messages can quote rows).
func refQueryError(table string, err error) error {
	return &ReferenceError{Table: table, Err: err}
}

// ReferenceError is a failed read (or write) of a reference table. Its
// text names the table and the ClickHouse exception code (or the network
// error), never server messages.
type ReferenceError struct {
	Table string
	Err   error
	write bool
}

func (e *ReferenceError) Error() string {
	op := "read"
	if e.write {
		op = "write"
	}
	return fmt.Sprintf("%s %s: %s", op, e.Table, redactClickHouse(e.Err))
}

func (e *ReferenceError) Unwrap() error { return e.Err }

// redactClickHouse renders err without server messages: ClickHouse
// exceptions by code and name, HTTP errors by status.
func redactClickHouse(err error) string {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		name := ex.CodeName
		if name == "" {
			name = ex.Name
		}
		return fmt.Sprintf("clickhouse exception %d (%s)", ex.Code, name)
	}
	var he *clickhouse.HTTPError
	if errors.As(err, &he) {
		return fmt.Sprintf("clickhouse HTTP status %d", he.StatusCode)
	}
	return err.Error()
}

// WriteReference inserts users, patients and encounters into the reference
// tables (migration 0006), one INSERT per table; `ehrwatch demo
// --clickhouse` loads its synthetic hospital with it, so reports and the
// console explain accesses as the detectors did. The tables keep the
// latest updated_at per id, so loading the same rows again changes
// nothing a FINAL read sees. Errors name the table and the ClickHouse
// exception code, never a row.
func WriteReference(ctx context.Context, conn driver.Conn, users []schemas.User, patients []schemas.Patient, encounters []schemas.Encounter) error {
	send := func(table, q string, n int, row func(i int) []any) error {
		if n == 0 {
			return nil
		}
		b, err := conn.PrepareBatch(ctx, q)
		if err != nil {
			return &ReferenceError{Table: table, Err: err, write: true}
		}
		for i := range n {
			if err := b.Append(row(i)...); err != nil {
				_ = b.Abort()
				return &ReferenceError{Table: table, Err: err, write: true}
			}
		}
		if err := b.Send(); err != nil {
			return &ReferenceError{Table: table, Err: err, write: true}
		}
		return nil
	}
	err := send("users", `INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state,
 postal_code, status, terminated_at, patient_id)`, len(users), func(i int) []any {
		u := &users[i]
		return []any{u.UserID, u.FirstName, u.LastName, u.Role, u.Department, u.Address.Line, u.Address.City,
			u.Address.State, u.Address.PostalCode, string(u.Status), u.TerminatedAt, u.PatientID}
	})
	if err != nil {
		return err
	}
	err = send("patients", `INSERT INTO patients (patient_id, first_name, last_name, address_line, city, state, postal_code,
 date_of_birth, vip, deceased_at, employee_user_id, next_of_kin_user_ids, guarantor_user_id)`, len(patients), func(i int) []any {
		p := &patients[i]
		var dob *time.Time
		if d, err := time.Parse(time.DateOnly, p.DateOfBirth); err == nil {
			dob = &d
		}
		kin := p.NextOfKinUserIDs
		if kin == nil {
			kin = []string{}
		}
		return []any{p.PatientID, p.FirstName, p.LastName, p.Address.Line, p.Address.City, p.Address.State,
			p.Address.PostalCode, dob, p.VIP, p.DeceasedAt, p.EmployeeUserID, kin, p.GuarantorUserID}
	})
	if err != nil {
		return err
	}
	return send("encounters", `INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team)`,
		len(encounters), func(i int) []any {
			e := &encounters[i]
			team := e.CareTeam
			if team == nil {
				team = []string{}
			}
			return []any{e.EncounterID, e.PatientID, e.Department, e.Start, e.End, team}
		})
}
