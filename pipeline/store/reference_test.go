package store_test

import (
	"context"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestReadReferenceAndAllowlist loads the reference tables (migration
// 0006) and the allowlist (0008) from the real engine: the latest
// updated_at per id wins, address columns map to schemas.Address, NULLs to
// absent times, invalid rows are skipped and counted, deleted allowlist
// entries are dropped.
func TestReadReferenceAndAllowlist(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state, postal_code, status, terminated_at, patient_id, updated_at) VALUES
 ('u1', 'Ann', 'Lee', 'nurse', 'icu', '1 Oak St', 'Albany', 'NY', '12207', 'active', NULL, 'p9', '2026-01-01 00:00:00'),
 ('u1', 'Ann', 'Lee', 'nurse', 'icu', '1 Oak St', 'Albany', 'NY', '12207', 'terminated', '2026-02-01 00:00:00', 'p9', '2026-02-01 00:00:00'),
 ('u2', 'Bo', 'Ng', 'clerk', 'registration', '', '', '', '', 'terminated', NULL, '', '2026-01-01 00:00:00'),
 ('u3', 'Cy', 'Po', 'physician', 'cardiology', '', '', '', '', 'active', NULL, '', '2026-01-01 00:00:00')`,
		`INSERT INTO patients (patient_id, first_name, last_name, address_line, city, state, postal_code, date_of_birth, vip, deceased_at, employee_user_id, updated_at) VALUES
 ('p1', 'Di', 'Lee', '1 Oak Street', 'Albany', 'NY', '12207-1234', '1980-05-17', true, NULL, '', '2026-01-01 00:00:00'),
 ('p2', 'Ed', 'Fox', '', '', '', '', NULL, false, '2025-12-24 10:00:00', '', '2026-01-01 00:00:00'),
 ('p9', 'Ann', 'Lee', '1 Oak St', 'Albany', 'NY', '12207', NULL, false, NULL, 'u1', '2026-01-01 00:00:00')`,
		`INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team, updated_at) VALUES
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', NULL, ['u1'], '2026-01-01 00:00:00'),
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', '2026-03-03 08:00:00', ['u1', 'u3'], '2026-03-03 08:00:00'),
 ('e2', 'p2', 'cardiology', '2026-03-01 08:00:00', NULL, [], '2026-01-01 00:00:00'),
 ('e3', '', 'cardiology', '2026-03-01 08:00:00', NULL, [], '2026-01-01 00:00:00')`,
		`INSERT INTO patients (patient_id, first_name, last_name, vip, employee_user_id, next_of_kin_user_ids, guarantor_user_id, updated_at) VALUES
 ('p4', 'Fi', 'Ng', false, '', ['u2', 'u3'], 'u3', '2026-01-01 00:00:00')`,
		`INSERT INTO vocabulary (kind, name, categories, note, deleted, updated_at) VALUES
 ('department', 'Pit Crew', ['emergency'], 'the ED is called the pit here', false, '2026-01-01 00:00:00'),
 ('department', 'Pit Crew', ['emergency', 'critical_care'], '', false, '2026-02-01 00:00:00'),
 ('role', 'Records Lady', ['release_of_information'], '', false, '2026-01-01 00:00:00'),
 ('role', 'Records Lady', ['release_of_information'], '', true, '2026-02-01 00:00:00'),
 ('role', 'Wizard', ['magic'], '', false, '2026-01-01 00:00:00')`,
		`INSERT INTO allowlist (entry_id, user_id, patient_id, department, detector, reason, owner, expires_at, deleted, updated_at) VALUES
 ('a1', 'u3', '', '', 'vip', 'security desk', 'privacy-office', '2027-01-01 00:00:00', false, '2026-01-01 00:00:00'),
 ('a2', 'u1', '', '', '*', 'old exception', 'privacy-office', '2027-01-01 00:00:00', false, '2026-01-01 00:00:00'),
 ('a2', 'u1', '', '', '*', 'old exception', 'privacy-office', '2027-01-01 00:00:00', true, '2026-02-01 00:00:00'),
 ('a3', '', '', 'billing', 'deceased', 'no expiry', 'privacy-office', NULL, false, '2026-01-01 00:00:00')`,
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}

	ld, err := store.ReadReference(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(ld.Users) != 2 || len(ld.Patients) != 4 || len(ld.Encounters) != 2 || len(ld.Vocabulary) != 2 {
		t.Fatalf("loaded %d users, %d patients, %d encounters, %d vocabulary entries; want 2, 4, 2, 2 (%v)",
			len(ld.Users), len(ld.Patients), len(ld.Encounters), len(ld.Vocabulary), ld.Skipped)
	}
	// The unknown category ("magic") is the detectors' to reject: the
	// store reads the row as it is (see TestReferenceFromClickHouse in
	// cmd/ehrwatch for the index built from it).
	if v := ld.Vocabulary[0]; v.Kind != schemas.VocabularyDepartment || v.Name != "Pit Crew" || strings.Join(v.Categories, ",") != "emergency,critical_care" {
		t.Errorf("vocabulary (latest version, deleted rows left out) = %+v", ld.Vocabulary)
	}
	if v := ld.Vocabulary[1]; v.Kind != schemas.VocabularyRole || v.Name != "Wizard" || strings.Join(v.Categories, ",") != "magic" {
		t.Errorf("vocabulary[1] = %+v, want the Wizard role", v)
	}
	if len(ld.Skipped) != 2 || ld.Skipped["users: missing_field: terminated_at"] != 1 || ld.Skipped["encounters: missing_field: patient_id"] != 1 {
		t.Errorf("skipped %v", ld.Skipped)
	}
	var u1 schemas.User
	for _, u := range ld.Users {
		if u.UserID == "u1" {
			u1 = u
		}
	}
	if u1.Status != schemas.UserTerminated || u1.TerminatedAt == nil || !u1.TerminatedAt.Equal(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)) ||
		u1.Address != (schemas.Address{Line: "1 Oak St", City: "Albany", State: "NY", PostalCode: "12207"}) || u1.PatientID != "p9" {
		t.Errorf("u1 (latest version) = %+v", u1)
	}
	for _, p := range ld.Patients {
		switch p.PatientID {
		case "p1":
			if !p.VIP || p.DateOfBirth != "1980-05-17" || p.DeceasedAt != nil || p.Address.PostalCode != "12207-1234" {
				t.Errorf("p1 = %+v", p)
			}
		case "p2":
			if p.DeceasedAt == nil || p.DateOfBirth != "" || p.NextOfKinUserIDs != nil || p.GuarantorUserID != "" {
				t.Errorf("p2 = %+v", p)
			}
		case "p4":
			if strings.Join(p.NextOfKinUserIDs, ",") != "u2,u3" || p.GuarantorUserID != "u3" {
				t.Errorf("p4 (next of kin, guarantor) = %+v", p)
			}
		}
	}
	for _, e := range ld.Encounters {
		if e.EncounterID == "e1" && (e.End == nil || strings.Join(e.CareTeam, ",") != "u1,u3") {
			t.Errorf("e1 (latest version) = %+v", e)
		}
	}

	al, err := store.ReadAllowlist(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(al.Entries) != 1 || al.Entries[0].UserID != "u3" || al.Entries[0].Detector != "vip" {
		t.Errorf("allowlist entries %+v, want only a1", al.Entries)
	}
	if strings.Join(al.SkippedKeys(), ",") != "a3" || al.Skipped["a3"] != "expires_at" {
		t.Errorf("skipped %v, want a3 (no expiry)", al.Skipped)
	}
}

// TestSnapshotReaderLatest: the newest snapshot strictly below the given
// offset, of the given group, topic and partition only. The snapshots of
// one partition are an hour apart: of one hour the table keeps only the
// latest (migration 0090).
func TestSnapshotReaderLatest(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	w := store.NewWriter(conn)
	b := &store.Batch{}
	now := time.Now().UTC().Truncate(time.Millisecond)
	takenAt := func(off int64) time.Time { return now.Add(-time.Duration(40-off) * 6 * time.Minute) }
	for _, s := range []struct {
		group, topic string
		part         int32
		off          int64
	}{{"g", "t", 0, 10}, {"g", "t", 0, 20}, {"g", "t", 0, 30}, {"g", "t", 1, 25}, {"other", "t", 0, 24}, {"g", "u", 0, 24}} {
		b.Snapshots = append(b.Snapshots, store.SnapshotRow{
			Position: store.Position{Topic: s.topic, Partition: s.part, Offset: s.off}, Group: s.group,
			Data: []byte{0x1f, 0x8b, 0, byte(s.off), 0xff}, TakenAt: takenAt(s.off),
		})
	}
	if err := w.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	r := store.NewSnapshotReader(conn)
	for before, want := range map[int64]int64{31: 30, 30: 20, 25: 20, 21: 20, 20: 10, 11: 10, 10: -1, 0: -1} {
		s, ok, err := r.Latest(ctx, "g", "t", 0, before)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case want < 0 && ok:
			t.Errorf("before %d: got the snapshot at %d, want none", before, s.Offset)
		case want >= 0 && (!ok || s.Offset != want):
			t.Errorf("before %d: got %d (found %v), want %d", before, s.Offset, ok, want)
		case ok && (len(s.Data) != 5 || s.Data[3] != byte(want) || s.Data[4] != 0xff || !s.TakenAt.Equal(takenAt(want))):
			t.Errorf("before %d: snapshot bytes %v taken %s do not round-trip", before, s.Data, s.TakenAt)
		}
	}
}

// TestWriteReferenceRoundTrip writes users, patients and encounters with
// WriteReference and reads them back with ReadReference: every field
// survives, and writing the same rows again changes nothing a FINAL read
// sees.
func TestWriteReferenceRoundTrip(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	term := time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC)
	died := time.Date(2025, 12, 24, 10, 0, 0, 0, time.UTC)
	end := time.Date(2026, 3, 3, 8, 0, 0, 0, time.UTC)
	users := []schemas.User{
		{UserID: "u1", FirstName: "Ann", LastName: "Lee", Role: "nurse", Department: "icu",
			Address: schemas.Address{Line: "1 Oak St", City: "Albany", State: "NY", PostalCode: "12207"},
			Status:  schemas.UserTerminated, TerminatedAt: &term, PatientID: "p9"},
		{UserID: "u3", FirstName: "Cy", LastName: "Po", Role: "physician", Department: "cardiology", Status: schemas.UserActive},
	}
	patients := []schemas.Patient{
		{PatientID: "p1", FirstName: "Di", LastName: "Lee", DateOfBirth: "1980-05-17", VIP: true,
			NextOfKinUserIDs: []string{"u3"}, GuarantorUserID: "u3"},
		{PatientID: "p2", FirstName: "Ed", LastName: "Fox", DeceasedAt: &died},
		{PatientID: "p9", FirstName: "Ann", LastName: "Lee", EmployeeUserID: "u1",
			Address: schemas.Address{Line: "1 Oak St", City: "Albany", State: "NY", PostalCode: "12207"}},
	}
	encounters := []schemas.Encounter{
		{EncounterID: "e1", PatientID: "p1", Department: "icu", Start: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC), End: &end, CareTeam: []string{"u1", "u3"}},
		{EncounterID: "e2", PatientID: "p2", Department: "cardiology", Start: time.Date(2026, 3, 1, 8, 0, 0, 0, time.UTC)},
	}
	for range 2 {
		if err := store.WriteReference(ctx, conn, users, patients, encounters); err != nil {
			t.Fatal(err)
		}
	}
	ld, err := store.ReadReference(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	if len(ld.Skipped) != 0 {
		t.Errorf("skipped %v", ld.Skipped)
	}
	sortBy := func(a, b string) int { return strings.Compare(a, b) }
	slices.SortFunc(ld.Users, func(a, b schemas.User) int { return sortBy(a.UserID, b.UserID) })
	slices.SortFunc(ld.Patients, func(a, b schemas.Patient) int { return sortBy(a.PatientID, b.PatientID) })
	slices.SortFunc(ld.Encounters, func(a, b schemas.Encounter) int { return sortBy(a.EncounterID, b.EncounterID) })
	if !reflect.DeepEqual(ld.Users, users) {
		t.Errorf("users read back\n%+v\nwant\n%+v", ld.Users, users)
	}
	if !reflect.DeepEqual(ld.Patients, patients) {
		t.Errorf("patients read back\n%+v\nwant\n%+v", ld.Patients, patients)
	}
	if !reflect.DeepEqual(ld.Encounters, encounters) {
		t.Errorf("encounters read back\n%+v\nwant\n%+v", ld.Encounters, encounters)
	}

	// A failed write names the table, not a row.
	if err := conn.Exec(ctx, "DROP TABLE encounters"); err != nil {
		t.Fatal(err)
	}
	err = store.WriteReference(ctx, conn, nil, nil, encounters)
	if err == nil || !strings.HasPrefix(err.Error(), "write encounters: ") || strings.Contains(err.Error(), "p1") {
		t.Errorf("write into a dropped table: %v, want a \"write encounters: \" error without row data", err)
	}
}

// TestStreamReferenceChanges: after a read, StreamReferenceChanges hands
// over only what was written since: changed and deleted users and
// patients (deleted = true, migration 0082), and every current encounter
// of each patient with an encounter written since (deleted ones left out);
// a whole read leaves deleted rows out.
func TestStreamReferenceChanges(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO users (user_id, role, department, status, updated_at) VALUES
 ('u1', 'nurse', 'icu', 'active', '2026-01-01 00:00:00'), ('u2', 'clerk', 'billing', 'active', '2026-01-01 00:00:00')`)
	exec(`INSERT INTO patients (patient_id, last_name, vip, updated_at) VALUES
 ('p1', 'A', false, '2026-01-01 00:00:00'), ('p2', 'B', true, '2026-01-01 00:00:00'), ('p3', 'C', false, '2026-01-01 00:00:00')`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time, care_team, updated_at) VALUES
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', ['u1'], '2026-01-01 00:00:00'),
 ('e2', 'p2', 'icu', '2026-03-01 08:00:00', [], '2026-01-01 00:00:00'),
 ('e3', 'p2', 'cardiology', '2026-03-02 08:00:00', [], '2026-01-01 00:00:00')`)

	type seen struct{ users, deletedUsers, patients, deletedPatients, changed, encounters []string }
	visit := func(s *seen) store.ReferenceVisitor {
		return store.ReferenceVisitor{
			User:              func(u *schemas.User) error { s.users = append(s.users, u.UserID+":"+u.Role); return nil },
			DeletedUser:       func(id string) error { s.deletedUsers = append(s.deletedUsers, id); return nil },
			Patient:           func(p *schemas.Patient) error { s.patients = append(s.patients, p.PatientID); return nil },
			DeletedPatient:    func(id string) error { s.deletedPatients = append(s.deletedPatients, id); return nil },
			EncountersChanged: func(id string) error { s.changed = append(s.changed, id); return nil },
			Encounter: func(e *schemas.Encounter) error {
				s.encounters = append(s.encounters, e.PatientID+"/"+e.EncounterID)
				return nil
			},
		}
	}
	sorted := func(s *seen) string {
		out := ""
		for _, l := range [][]string{s.users, s.deletedUsers, s.patients, s.deletedPatients, s.changed, s.encounters} {
			slices.Sort(l)
			out += strings.Join(l, ",") + " | "
		}
		return out
	}
	var full seen
	rd, err := store.StreamReference(ctx, conn, visit(&full))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sorted(&full), "u1:nurse,u2:clerk |  | p1,p2,p3 |  |  | p1/e1,p2/e2,p2/e3 | "; got != want {
		t.Errorf("whole read:\n got %s\nwant %s", got, want)
	}
	var none seen
	if _, err := store.StreamReferenceChanges(ctx, conn, rd.Through, visit(&none)); err != nil {
		t.Fatal(err)
	}
	if got := sorted(&none); got != " |  |  |  |  |  | " {
		t.Errorf("changes with nothing written: %s", got)
	}

	time.Sleep(5 * time.Millisecond) // updated_at defaults to now64(3): after Through
	exec(`INSERT INTO users (user_id, role, department, status) VALUES ('u2', 'supervisor', 'billing', 'active')`)
	exec(`INSERT INTO users (user_id, status, deleted) VALUES ('u1', 'active', true)`)
	exec(`INSERT INTO patients (patient_id, vip, deleted) VALUES ('p3', false, true)`)
	exec(`INSERT INTO patients (patient_id, last_name, vip, next_of_kin_user_ids) VALUES ('p4', 'D', false, ['u2'])`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time, deleted) VALUES ('e3', 'p2', 'cardiology', '2026-03-02 08:00:00', true)`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time) VALUES ('e4', 'p5', 'icu', '2026-03-03 08:00:00')`)

	var ch seen
	rd2, err := store.StreamReferenceChanges(ctx, conn, rd.Through, visit(&ch))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := sorted(&ch), "u2:supervisor | u1 | p4 | p3 | p2,p5 | p2/e2,p5/e4 | "; got != want {
		t.Errorf("changes:\n got %s\nwant %s", got, want)
	}
	if !rd2.Through.After(rd.Through) {
		t.Errorf("Through did not advance: %s then %s", rd.Through, rd2.Through)
	}
	var after seen
	if _, err := store.StreamReference(ctx, conn, visit(&after)); err != nil {
		t.Fatal(err)
	}
	if got, want := sorted(&after), "u2:supervisor |  | p1,p2,p4 |  |  | p1/e1,p2/e2,p5/e4 | "; got != want {
		t.Errorf("whole read after the changes:\n got %s\nwant %s", got, want)
	}
}
