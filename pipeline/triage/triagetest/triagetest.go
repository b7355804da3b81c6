// Package triagetest seeds a ClickHouse test database with a small
// hospital (users, patients, encounters, access events, findings, alerts)
// for the triage, api and CLI tests. Test-only: nothing else may import it.
package triagetest

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Fixture PHI: distinctive strings that tests grep logs for (the user and
// patient names in the fixture are equally distinctive).
const (
	PatientMain  = "MRN-QX7731"
	PatientOther = "MRN-QX9999"
	PatientName  = "Oriana Vexley"
)

// TS parses an RFC 3339 time (panics on error).
func TS(s string) time.Time {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// TP is TS as a pointer.
func TP(s string) *time.Time { t := TS(s); return &t }

// Fixture is the seeded hospital.
type Fixture struct {
	Users      []schemas.User
	Patients   []schemas.Patient
	Encounters []schemas.Encounter
	Events     []schemas.AccessEvent
	Findings   []schemas.Finding
}

// NewFixture returns the hospital: four users, two patients, a Cardiology
// stay around the US spring-forward night, eight accesses, three findings.
func NewFixture() Fixture {
	var f Fixture
	f.Users = []schemas.User{
		{UserID: "u-alice", FirstName: "Quillon", LastName: "Marchetti", Role: "nurse", Department: "Cardiology", Status: schemas.UserActive},
		{UserID: "u-bob", FirstName: "Bertrand", LastName: "Oyelaran", Role: "physician", Department: "Oncology", Status: schemas.UserActive},
		{UserID: "u-carol", FirstName: "Carys", LastName: "Thistlewood", Role: "clerk", Department: "cardiology ", Status: schemas.UserActive},
		{UserID: "u-dave", FirstName: "Dov", LastName: "Abernethy", Role: "radiologist", Department: "Radiology", Status: schemas.UserActive},
	}
	f.Patients = []schemas.Patient{
		{PatientID: PatientMain, FirstName: "Oriana", LastName: "Vexley"},
		{PatientID: PatientOther, FirstName: "Tobiah", LastName: "Wrenfield"},
	}
	f.Encounters = []schemas.Encounter{
		// Cardiology stay around the US spring-forward night (2026-03-08).
		{EncounterID: "enc-1", PatientID: PatientMain, Department: "Cardiology", Start: TS("2026-03-07T10:00:00Z"),
			End: TP("2026-03-08T12:00:00Z"), CareTeam: []string{"u-dave"}},
		// Another patient, open encounter in oncology.
		{EncounterID: "enc-2", PatientID: PatientOther, Department: "Oncology", Start: TS("2026-03-01T00:00:00Z")},
	}
	ev := func(id, at, user, role, dept, patient string, action schemas.Action) schemas.AccessEvent {
		return schemas.AccessEvent{EventID: id, EventTime: TS(at), Source: "epic", FacilityID: "fac-nyc", UserID: user,
			UserRole: role, UserDepartment: dept, WorkstationID: "ws-1", PatientID: patient, Action: action,
			Resource: "chart", Outcome: schemas.OutcomeSuccess}
	}
	f.Events = []schemas.AccessEvent{
		// 01:59 EST, explained by the department.
		ev("ev-1", "2026-03-08T06:59:00Z", "u-alice", "nurse", "Cardiology", PatientMain, schemas.ActionView),
		// 03:00 EDT (the clock skipped 02:00–03:00), explained.
		ev("ev-2", "2026-03-08T07:00:00Z", "u-alice", "nurse", "Cardiology", PatientMain, schemas.ActionUpdate),
		// Oncology physician, break-glass with a formula-looking reason: unexplained.
		func() schemas.AccessEvent {
			e := ev("ev-3", "2026-03-08T08:00:00Z", "u-bob", "physician", "Oncology", PatientMain, schemas.ActionView)
			e.BreakGlass, e.BreakGlassReason = true, `=HYPERLINK("http://x.test","click"), "urgent"`
			return e
		}(),
		// Care team member from another department, 23h after the end: explained by the care team.
		ev("ev-4", "2026-03-09T11:00:00Z", "u-dave", "radiologist", "Radiology", PatientMain, schemas.ActionView),
		// 25h after the end: outside the slack, unexplained.
		ev("ev-5", "2026-03-09T13:00:00Z", "u-alice", "nurse", "Cardiology", PatientMain, schemas.ActionPrint),
		// No department on the event: the users table's (cardiology, odd case and spacing) explains it.
		ev("ev-6", "2026-03-08T09:00:00Z", "u-carol", "", "", PatientMain, schemas.ActionView),
		// Bob on another patient, explained by the open oncology encounter.
		ev("ev-7", "2026-03-08T10:00:00Z", "u-bob", "physician", "Oncology", PatientOther, schemas.ActionExport),
		// Outside every report range used below.
		ev("ev-8", "2026-04-02T10:00:00Z", "u-bob", "physician", "Oncology", PatientMain, schemas.ActionView),
	}
	f.Findings = []schemas.Finding{
		{FindingID: "f-1", Detector: "no_care_relationship", Severity: schemas.SeverityHigh, Score: 75, FacilityID: "fac-nyc",
			UserID: "u-bob", PatientID: PatientMain, WindowStart: TS("2026-03-08T08:00:00Z"), WindowEnd: TS("2026-03-08T08:00:00Z"),
			EventIDs: []string{"ev-3"}, Explanation: "no encounter explains the access",
			Evidence: schemas.Evidence{WouldExplain: "an encounter in Oncology"}},
		{FindingID: "f-2", Detector: "break_glass", Severity: schemas.SeverityMedium, Score: 50, FacilityID: "fac-nyc",
			UserID: "u-bob", PatientID: PatientMain, WindowStart: TS("2026-03-08T08:00:00Z"), WindowEnd: TS("2026-03-08T08:00:00Z"),
			EventIDs: []string{"ev-3"}, Explanation: "break-glass access", Suppressed: true, SuppressionReason: "allowlisted"},
		{FindingID: "f-3", Detector: "volume", Severity: schemas.SeverityLow, Score: 20, FacilityID: "fac-nyc",
			UserID: "u-alice", WindowStart: TS("2026-03-09T05:00:00Z"), WindowEnd: TS("2026-03-10T05:00:00Z"),
			EventIDs: []string{"ev-5"}, Explanation: "more prints than usual"},
	}
	return f
}

// AlertRow is an alerts table row.
type AlertRow struct {
	ID, Detector, Severity, User, Patient string
	First, Last                           time.Time
	FindingIDs                            []string
	Version                               uint64
}

// Alerts are the seeded alerts.
func Alerts() []AlertRow {
	return []AlertRow{
		{"al-1", "no_care_relationship", "high", "u-bob", PatientMain, TS("2026-03-08T08:00:00Z"), TS("2026-03-08T08:00:00Z"), []string{"f-1", "f-2"}, 1},
		{"al-2", "volume", "low", "u-alice", "", TS("2026-03-09T05:00:00Z"), TS("2026-03-10T05:00:00Z"), []string{"f-3"}, 1},
		{"al-3", "break_glass", "critical", "u-bob", PatientOther, TS("2026-03-08T10:00:00Z"), TS("2026-03-08T10:00:00Z"), nil, 1},
		{"al-4", "off_hours", "medium", "u-carol", PatientMain, TS("2026-03-08T09:00:00Z"), TS("2026-03-08T09:00:00Z"), nil, 1},
	}
}

// NewDB migrates a fresh database and seeds it with f.
func NewDB(t testing.TB, f Fixture) clickhouse.Conn {
	t.Helper()
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if err := Migrate(ctx, conn); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	Seed(t, conn, f)
	return conn
}

// Seed inserts f and Alerts() into conn's database.
func Seed(t testing.TB, conn clickhouse.Conn, f Fixture) {
	t.Helper()
	ctx := context.Background()
	send := func(what, q string, rows [][]any) {
		t.Helper()
		if len(rows) == 0 {
			return
		}
		b, err := conn.PrepareBatch(ctx, q)
		if err != nil {
			t.Fatalf("seed %s: %v", what, err)
		}
		for _, r := range rows {
			if err := b.Append(r...); err != nil {
				t.Fatalf("seed %s: %v", what, err)
			}
		}
		if err := b.Send(); err != nil {
			t.Fatalf("seed %s: %v", what, err)
		}
	}
	var rows [][]any
	for _, u := range f.Users {
		rows = append(rows, []any{u.UserID, u.FirstName, u.LastName, u.Role, u.Department, "", "", "", "", string(u.Status), u.PatientID})
	}
	send("users", "INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state, postal_code, status, patient_id)", rows)
	rows = nil
	for _, p := range f.Patients {
		rows = append(rows, []any{p.PatientID, p.FirstName, p.LastName, p.VIP, p.EmployeeUserID})
	}
	send("patients", "INSERT INTO patients (patient_id, first_name, last_name, vip, employee_user_id)", rows)
	rows = nil
	for _, e := range f.Encounters {
		team := e.CareTeam
		if team == nil {
			team = []string{}
		}
		rows = append(rows, []any{e.EncounterID, e.PatientID, e.Department, e.Start, e.End, team})
	}
	send("encounters", "INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team)", rows)
	rows = nil
	for i, e := range f.Events {
		var enc *string
		if e.EncounterID != "" {
			enc = &e.EncounterID
		}
		rows = append(rows, []any{e.EventID, e.EventTime, e.LoggedTime, e.Source, e.FacilityID, e.UserID, e.UserRole,
			e.UserDepartment, e.WorkstationID, nil, e.PatientID, enc, string(e.Action), e.Resource, e.BreakGlass,
			e.BreakGlassReason, string(e.Outcome), "access", uint32(0), uint64(i)})
	}
	const evq = `INSERT INTO access_events (event_id, event_time, logged_time, source, facility_id, user_id, user_role,
 user_department, workstation_id, client_ip, patient_id, encounter_id, action, resource, break_glass,
 break_glass_reason, outcome, kafka_topic, kafka_partition, kafka_offset)`
	send("events", evq, rows)
	// A redelivered copy of ev-1 in a second part: FINAL must collapse it.
	if len(rows) > 0 {
		send("events (duplicate)", evq, rows[:1])
	}
	rows = nil
	for _, fd := range f.Findings {
		rows = append(rows, []any{fd.FindingID, fd.Detector, string(fd.Severity), fd.Score, fd.FacilityID, fd.UserID,
			fd.PatientID, fd.WindowStart, fd.WindowEnd, fd.EventIDs, fd.Explanation, mustJSON(fd.Evidence),
			fd.Suppressed, fd.SuppressionReason, uint32(0), uint64(0)})
	}
	send("findings", `INSERT INTO findings (finding_id, detector, severity, score, facility_id, user_id, patient_id,
 window_start, window_end, event_ids, explanation, evidence, suppressed, suppression_reason, kafka_partition, kafka_offset)`, rows)
	rows = nil
	for _, a := range Alerts() {
		fids := a.FindingIDs
		if fids == nil {
			fids = []string{}
		}
		rows = append(rows, []any{a.ID, "default", a.Detector, a.Severity, uint8(50), "fac-nyc", a.User, a.Patient,
			a.First, a.Last, uint32(len(fids)), fids, "alert " + a.ID, a.Version})
	}
	send("alerts", `INSERT INTO alerts (alert_id, rule, detector, severity, score, facility_id, user_id, patient_id,
 first_seen, last_seen, finding_count, finding_ids, explanation, version)`, rows)
}

// Migrate runs store.Migrate with the default parameters.
func Migrate(ctx context.Context, conn clickhouse.Conn) error {
	_, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams())
	return err
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}
