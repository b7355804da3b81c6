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

// ReadReference reads the latest version of every live row of the users,
// patients and encounters tables (migration 0006; rows marked deleted,
// 0082, left out) and of the vocabulary table (0017; deleted rows left
// out) into memory (see StreamReference, which hands the rows over one at
// a time instead). Rows that fail their schemas Validate are skipped and
// counted; a failed query is an error (the caller keeps its previous
// data).
func ReadReference(ctx context.Context, conn driver.Conn) (*ReferenceLoad, error) {
	out := &ReferenceLoad{}
	rd, err := StreamReference(ctx, conn, ReferenceVisitor{
		User:      func(u *schemas.User) error { out.Users = append(out.Users, *u); return nil },
		Patient:   func(p *schemas.Patient) error { out.Patients = append(out.Patients, *p); return nil },
		Encounter: func(e *schemas.Encounter) error { out.Encounters = append(out.Encounters, *e); return nil },
	})
	if err != nil {
		return nil, err
	}
	vocab, skipped, err := ReadVocabulary(ctx, conn)
	if err != nil {
		return nil, err
	}
	out.Vocabulary, out.Skipped = vocab, rd.Skipped
	for k, n := range skipped {
		out.Skipped[k] += n
	}
	return out, nil
}

// ReferenceVisitor receives reference rows one at a time, as schemas
// types only (the caller indexes them: detectors.ReferenceBuilder). A row
// is only valid during the call; an error from a callback stops the read
// and is returned as is.
type ReferenceVisitor struct {
	User      func(*schemas.User) error
	Patient   func(*schemas.Patient) error
	Encounter func(*schemas.Encounter) error
	// The callbacks below are called by StreamReferenceChanges only.

	// DeletedUser and DeletedPatient receive the ids of rows whose latest
	// version is marked deleted, or fails validation (a whole read would
	// leave it out too).
	DeletedUser    func(userID string) error
	DeletedPatient func(patientID string) error
	// EncountersChanged announces a patient whose encounters changed: all
	// of the patient's current encounters are passed to Encounter (none
	// when all were deleted). A patient may also first appear in
	// Encounter; it is then changed too.
	EncountersChanged func(patientID string) error
}

// ReferenceRead is what a streamed read returns besides the rows.
type ReferenceRead struct {
	// Skipped counts rows that failed validation and were left out, by
	// "table: error class: field" (never by value).
	Skipped map[string]int
	// Through is the server's clock when the read began: every row written
	// before it with updated_at defaulted was read. Pass it (less a margin
	// for inserts still in flight) as since to the next
	// StreamReferenceChanges.
	Through time.Time
}

// StreamReference reads the latest version of every live row of the
// users, patients and encounters tables (SELECT … FINAL, so the row with
// the highest updated_at per key wins; rows marked deleted left out) and
// hands them to v one at a time, never holding the tables in memory.
func StreamReference(ctx context.Context, conn driver.Conn, v ReferenceVisitor) (*ReferenceRead, error) {
	return streamReference(ctx, conn, nil, v)
}

// StreamReferenceChanges reads what changed since a time: the latest
// version of every user and patient with a row written after since
// (updated_at > since), deleted or not, and all current encounters of
// every patient with an encounter row written after since. It selects the
// changed keys first (a scan of two columns that the updated_at skip index
// of migration 0082 mostly prunes), then reads those keys FINAL, so its
// cost follows the changes, not the tables.
func StreamReferenceChanges(ctx context.Context, conn driver.Conn, since time.Time, v ReferenceVisitor) (*ReferenceRead, error) {
	return streamReference(ctx, conn, &since, v)
}

const (
	userColumns    = `user_id, first_name, last_name, role, department, address_line, city, state, postal_code, status, terminated_at, patient_id, deleted`
	patientColumns = `patient_id, first_name, last_name, address_line, city, state, postal_code, date_of_birth, vip, deceased_at,
 employee_user_id, next_of_kin_user_ids, guarantor_user_id, deleted`
	encounterColumns = `encounter_id, patient_id, department, start_time, end_time, care_team`
)

func streamReference(ctx context.Context, conn driver.Conn, since *time.Time, v ReferenceVisitor) (*ReferenceRead, error) {
	out := &ReferenceRead{Skipped: map[string]int{}}
	skip := func(table string, err error) {
		out.Skipped[table+": "+refErrorKey(err)]++
	}
	if err := conn.QueryRow(ctx, `SELECT now64(3, 'UTC')`).Scan(&out.Through); err != nil {
		return nil, refQueryError("users", err)
	}
	out.Through = out.Through.UTC()
	var args []any
	where := func(key, table string) string {
		if since == nil {
			return ` WHERE NOT deleted`
		}
		return ` WHERE ` + key + ` IN (SELECT ` + key + ` FROM ` + table + ` WHERE updated_at > toDateTime64(?, 3, 'UTC'))`
	}
	if since != nil {
		args = []any{since.UTC().Format("2006-01-02 15:04:05.000")}
	}

	err := scanRows(ctx, conn, "users", `SELECT `+userColumns+` FROM users FINAL`+where("user_id", "users"), args, func(rows driver.Rows) error {
		var u schemas.User
		var status string
		var deleted bool
		if err := rows.Scan(&u.UserID, &u.FirstName, &u.LastName, &u.Role, &u.Department, &u.Address.Line, &u.Address.City,
			&u.Address.State, &u.Address.PostalCode, &status, &u.TerminatedAt, &u.PatientID, &deleted); err != nil {
			return err
		}
		u.Status = schemas.UserStatus(status)
		u.TerminatedAt = utcPtr(u.TerminatedAt)
		if !deleted {
			if err := u.Validate(); err != nil {
				skip("users", err)
				deleted = true
			}
		}
		if deleted {
			if u.UserID == "" {
				return nil
			}
			return call(v.DeletedUser, u.UserID)
		}
		return call(v.User, &u)
	})
	if err != nil {
		return nil, err
	}

	err = scanRows(ctx, conn, "patients", `SELECT `+patientColumns+` FROM patients FINAL`+where("patient_id", "patients"), args, func(rows driver.Rows) error {
		var p schemas.Patient
		var dob *time.Time
		var deleted bool
		if err := rows.Scan(&p.PatientID, &p.FirstName, &p.LastName, &p.Address.Line, &p.Address.City, &p.Address.State,
			&p.Address.PostalCode, &dob, &p.VIP, &p.DeceasedAt, &p.EmployeeUserID, &p.NextOfKinUserIDs, &p.GuarantorUserID, &deleted); err != nil {
			return err
		}
		if dob != nil {
			p.DateOfBirth = dob.Format(time.DateOnly)
		}
		p.DeceasedAt = utcPtr(p.DeceasedAt)
		if len(p.NextOfKinUserIDs) == 0 {
			p.NextOfKinUserIDs = nil
		}
		if !deleted {
			if err := p.Validate(); err != nil {
				skip("patients", err)
				deleted = true
			}
		}
		if deleted {
			if p.PatientID == "" {
				return nil
			}
			return call(v.DeletedPatient, p.PatientID)
		}
		return call(v.Patient, &p)
	})
	if err != nil {
		return nil, err
	}

	encWhere := ` WHERE NOT deleted`
	if since != nil {
		err = scanRows(ctx, conn, "encounters", `SELECT DISTINCT patient_id FROM encounters WHERE updated_at > toDateTime64(?, 3, 'UTC')`, args,
			func(rows driver.Rows) error {
				var pid string
				if err := rows.Scan(&pid); err != nil {
					return err
				}
				return call(v.EncountersChanged, pid)
			})
		if err != nil {
			return nil, err
		}
		encWhere = where("patient_id", "encounters") + ` AND NOT deleted`
	}
	err = scanRows(ctx, conn, "encounters", `SELECT `+encounterColumns+` FROM encounters FINAL`+encWhere, args, func(rows driver.Rows) error {
		var e schemas.Encounter
		if err := rows.Scan(&e.EncounterID, &e.PatientID, &e.Department, &e.Start, &e.End, &e.CareTeam); err != nil {
			return err
		}
		e.Start = e.Start.UTC()
		e.End = utcPtr(e.End)
		if len(e.CareTeam) == 0 {
			e.CareTeam = nil
		}
		if err := e.Validate(); err != nil {
			skip("encounters", err)
			return nil
		}
		return call(v.Encounter, &e)
	})
	if err != nil {
		return nil, err
	}

	return out, nil
}

// ReadVocabulary reads the hospital's vocabulary (migration 0017), the
// latest version of every entry without deleted ones; entries that fail
// validation are left out and counted by "vocabulary: error class: field".
// Read it before the rows: a detectors.ReferenceBuilder needs it first.
func ReadVocabulary(ctx context.Context, conn driver.Conn) ([]schemas.VocabularyEntry, map[string]int, error) {
	var out []schemas.VocabularyEntry
	skipped := map[string]int{}
	err := scanRows(ctx, conn, "vocabulary", `SELECT kind, name, categories, note FROM vocabulary FINAL WHERE NOT deleted ORDER BY kind, name`, nil,
		func(rows driver.Rows) error {
			var e schemas.VocabularyEntry
			var kind string
			if err := rows.Scan(&kind, &e.Name, &e.Categories, &e.Note); err != nil {
				return err
			}
			e.Kind = schemas.VocabularyKind(kind)
			if err := e.Validate(); err != nil {
				skipped["vocabulary: "+refErrorKey(err)]++
				return nil
			}
			out = append(out, e)
			return nil
		})
	if err != nil {
		return nil, nil, err
	}
	return out, skipped, nil
}

func call[T any](fn func(T) error, v T) error {
	if fn == nil {
		return nil
	}
	if err := fn(v); err != nil {
		return callbackError{err}
	}
	return nil
}

// callbackError marks an error returned by a visitor callback, which is
// returned as is rather than as a failed query.
type callbackError struct{ err error }

func (e callbackError) Error() string { return e.err.Error() }

// scanRows runs a query and calls fn for every row. Errors of the query
// and of Scan are a *ReferenceError naming the table.
func scanRows(ctx context.Context, conn driver.Conn, table, query string, args []any, fn func(driver.Rows) error) error {
	rows, err := conn.Query(ctx, query, args...)
	if err != nil {
		return refQueryError(table, err)
	}
	for rows.Next() {
		if err := fn(rows); err != nil {
			rows.Close()
			var ce callbackError
			if errors.As(err, &ce) {
				return ce.err
			}
			return refQueryError(table, err)
		}
	}
	if err := closeRows(rows); err != nil {
		return refQueryError(table, err)
	}
	return nil
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
