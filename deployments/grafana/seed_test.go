package grafana_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	chdeploy "github.com/ehrwatch/ehrwatch/deployments/clickhouse" // package clickhouse
	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// demo is a ClickHouse test database loaded the way a deployment fills
// it: reference data through deployments/clickhouse/reference/*.sql,
// events and findings through the pipeline's store.Writer (findings from
// the real detectors engine), alerts through alerting.Manager with its
// ClickHouse store, triage state through triage.Store.Update, dead letters
// and delivery failures through their writers.
type demo struct {
	conn     clickhouse.Conn
	h        *synth.Hospital
	ref      *detectors.ReferenceIndex
	events   map[string]*schemas.AccessEvent
	from, to time.Time // covers every event, finding and alert

	patientID string // has accesses, explained and unexplained, and an alert citing a finding on it
	userID    string // has accesses, findings and alerts
	crafted   map[string]string
	closed    map[string]triage.Disposition // alert id -> disposition seeded
}

const hashKey = "deployments-test-hash-key-0123456789"

func newDemo(t *testing.T) *demo {
	t.Helper()
	ctx := context.Background()
	conn, _ := testenv.ClickHouse(t)
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatalf("migrate: %v", err)
	}

	cfg := synth.DefaultConfig()
	cfg.Days, cfg.WarmupDays = 10, 5
	cfg.Facilities = []synth.FacilityConfig{
		{ID: "nyc", TimeZone: "America/New_York", Source: "epic", Users: 70, Patients: 400},
		{ID: "chi", TimeZone: "America/Chicago", Source: "cerner", Users: 60, Patients: 300},
	}
	cfg.IncidentRate, cfg.BenignRate = 15, 5
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatalf("synth: %v", err)
	}
	d := &demo{conn: conn, h: h, events: map[string]*schemas.AccessEvent{}, crafted: map[string]string{},
		closed: map[string]triage.Disposition{}}
	d.from, d.to = h.Facilities[0].Start, h.Facilities[0].End
	for _, f := range h.Facilities {
		d.from, d.to = minT(d.from, f.Start), maxT(d.to, f.End)
	}
	d.from, d.to = d.from.Add(-48*time.Hour), d.to.Add(48*time.Hour)

	// Reference data, loaded with the compose stack's loader SQL.
	dir := t.TempDir()
	if err := h.WriteReference(dir); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"users", "patients", "encounters"} {
		q, err := chdeploy.FileLoader(filepath.Join("..", "clickhouse", "reference", table+".sql"),
			filepath.Join(dir, "reference", table+".ndjson"))
		if err != nil {
			t.Fatal(err)
		}
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("load %s with deployments/clickhouse/reference/%s.sql: %v", table, table, err)
		}
	}
	d.ref, err = detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters,
		detectors.ReferenceOptions{CareSlackBefore: 24 * time.Hour, CareSlackAfter: 24 * time.Hour, HashKey: []byte(hashKey)})
	if err != nil {
		t.Fatal(err)
	}

	// Detectors over the stream in arrival order, as one partition would.
	locs, err := detectors.FacilityLocations(h.TimeZones())
	if err != nil {
		t.Fatal(err)
	}
	holder := detectors.NewReferenceHolder(d.ref)
	eng, err := detectors.NewEngine(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Registry(),
		detectors.Env{Reference: holder.Load, Location: locs})
	if err != nil {
		t.Fatal(err)
	}
	var findings []schemas.Finding
	events := make([]*schemas.AccessEvent, 0, len(h.Events))
	for i := range h.Events {
		ev := &h.Events[i]
		events = append(events, ev)
		d.events[ev.EventID] = ev
		fs, err := eng.Process(ctx, ev)
		if err != nil {
			t.Fatalf("detectors: %v", err)
		}
		findings = append(findings, fs...)
	}
	fs, err := eng.Flush(ctx)
	if err != nil {
		t.Fatal(err)
	}
	findings = append(findings, fs...)
	if len(findings) == 0 {
		t.Fatal("the synthetic hospital produced no findings")
	}

	// Alerts from the findings.
	acfg := alerting.DefaultConfig()
	mgr, err := alerting.New(acfg, alerting.Options{Store: alerting.NewClickHouseStore(conn)})
	if err != nil {
		t.Fatal(err)
	}
	alertsByFinding := map[string]bool{}
	for i := 0; i < len(findings); i += 500 {
		as, err := mgr.Observe(ctx, findings[i:min(len(findings), i+500)])
		if err != nil {
			t.Fatalf("alerting: %v", err)
		}
		for _, a := range as {
			for _, id := range a.FindingIDs {
				alertsByFinding[id] = true
			}
		}
	}
	if err := mgr.Close(ctx); err != nil {
		t.Fatal(err)
	}

	// The patient and user the investigation dashboards are run for.
	d.choosePatient(t, findings, alertsByFinding)
	d.deletedEncounter(t)
	events = append(events, d.craftEvents(t)...)

	// Events and findings through the pipeline's writer, three partitions.
	w := store.NewWriter(conn)
	for i := 0; i < len(events); i += 5000 {
		b := &store.Batch{}
		for j := i; j < min(len(events), i+5000); j++ {
			b.Events = append(b.Events, store.EventRow{
				Position: store.Position{Topic: "ehr-access", Partition: int32(j % 3), Offset: int64(j / 3)},
				Event:    events[j]})
		}
		if err := w.Write(ctx, b); err != nil {
			t.Fatalf("write events: %v", err)
		}
	}
	b := &store.Batch{}
	for i := range findings {
		b.Findings = append(b.Findings, store.FindingRow{
			Position: store.Position{Topic: "ehr-access", Partition: int32(i % 3), Offset: int64(i)},
			Finding:  &findings[i]})
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	for i, class := range []string{"syntax", "schema", "syntax"} {
		b.DeadLetters = append(b.DeadLetters, store.DLQRow{
			Position: store.Position{Topic: "ehr-access", Partition: 1, Offset: int64(900000 + i)},
			Key:      []byte("u-x"), Payload: []byte("{not json"), ErrorClass: class, Error: class + ": test",
			ReceivedAt: now.Add(-time.Duration(i) * time.Minute)})
	}
	if err := w.Write(ctx, b); err != nil {
		t.Fatalf("write findings: %v", err)
	}
	if err := alerting.NewClickHouseStore(conn).WriteDeliveryFailures(ctx, []alerting.DeliveryFailure{{
		Output: "webhook", AlertID: "al-test", Version: 1, Attempts: 8, ErrorClass: "timeout",
		HTTPStatus: 0, FirstAttemptAt: now.Add(-time.Hour), FailedAt: now}}); err != nil {
		t.Fatal(err)
	}

	d.seedTriage(t)
	return d
}

func minT(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}

func maxT(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// choosePatient picks the patient with the most accesses among those with
// an alerted finding and both explained and unexplained accesses; the user
// is that finding's user.
func (d *demo) choosePatient(t *testing.T, findings []schemas.Finding, alerted map[string]bool) {
	t.Helper()
	type stat struct{ n, explained int }
	per := map[string]*stat{}
	for _, ev := range d.events {
		s := per[ev.PatientID]
		if s == nil {
			s = &stat{}
			per[ev.PatientID] = s
		}
		s.n++
		if d.ref.Care(ev).Explained {
			s.explained++
		}
	}
	best := -1
	for _, f := range findings {
		s := per[f.PatientID]
		if f.PatientID == "" || f.Suppressed || !alerted[f.FindingID] || s == nil || s.explained == 0 || s.explained == s.n {
			continue
		}
		if s.n > best {
			best, d.patientID, d.userID = s.n, f.PatientID, f.UserID
		}
	}
	if d.patientID == "" {
		t.Fatal("no patient with an alerted finding and both explained and unexplained accesses")
	}
}

// deletedEncounter stores, for the chosen patient, an encounter over the
// whole data range with every user on its care team and every department
// of the users, marked deleted (migration 0082): it would explain every
// access, so a dashboard that reads deleted encounters reports the
// patient's accesses explained where the detectors do not.
func (d *demo) deletedEncounter(t *testing.T) {
	t.Helper()
	team := make([]string, 0, len(d.h.Users))
	for _, u := range d.h.Users {
		team = append(team, u.UserID)
	}
	if err := d.conn.Exec(context.Background(), `INSERT INTO encounters
 (encounter_id, patient_id, department, start_time, end_time, care_team, deleted)
 VALUES (?, ?, ?, ?, ?, ?, true)`, "enc-deleted-everyone", d.patientID, d.h.Users[0].Department, d.from, d.to, team); err != nil {
		t.Fatalf("insert the deleted encounter: %v", err)
	}
}

// craftEvents adds accesses to the chosen patient that exercise the
// department branches of the care rule: an event without a department
// (the users table's department explains it) and one whose department
// differs from the encounter's only in case and spacing.
func (d *demo) craftEvents(t *testing.T) []*schemas.AccessEvent {
	t.Helper()
	var enc *schemas.Encounter
	for i := range d.h.Encounters {
		e := &d.h.Encounters[i]
		if e.PatientID == d.patientID && e.Department != "" && e.Start.After(d.from) && e.Start.Before(d.to.Add(-72*time.Hour)) {
			enc = e
			break
		}
	}
	if enc == nil {
		t.Fatal("the chosen patient has no encounter to craft events around")
	}
	var sameDept, otherDept *schemas.User
	for i := range d.h.Users {
		u := &d.h.Users[i]
		if slices.Contains(enc.CareTeam, u.UserID) || u.Status != schemas.UserActive {
			continue
		}
		switch {
		case strings.EqualFold(strings.TrimSpace(u.Department), strings.TrimSpace(enc.Department)) && sameDept == nil:
			sameDept = u
		case !strings.EqualFold(u.Department, enc.Department) && otherDept == nil:
			otherDept = u
		}
	}
	if sameDept == nil || otherDept == nil {
		t.Fatal("no users to craft events with")
	}
	mk := func(id string, u *schemas.User, dept string, at time.Time) *schemas.AccessEvent {
		ev := &schemas.AccessEvent{EventID: id, EventTime: at, Source: "epic", FacilityID: d.h.Facilities[0].ID,
			UserID: u.UserID, UserRole: u.Role, UserDepartment: dept, WorkstationID: "ws-crafted",
			PatientID: d.patientID, Action: schemas.ActionView, Resource: "chart", Outcome: schemas.OutcomeSuccess}
		d.events[id] = ev
		return ev
	}
	evs := []*schemas.AccessEvent{
		// No department on the event: the users table's department (equal to the encounter's) explains it.
		mk("evt-crafted-nodept", sameDept, "", enc.Start.Add(time.Hour)),
		// Another department's user claiming the encounter's department in other case and spacing.
		mk("evt-crafted-case", otherDept, "  "+strings.ToUpper(enc.Department)+" ", enc.Start.Add(2*time.Hour)),
		// 30h before the encounter starts, from another department: outside the slack, unexplained
		// unless another encounter covers it.
		mk("evt-crafted-early", otherDept, otherDept.Department, enc.Start.Add(-30*time.Hour)),
	}
	for _, ev := range evs[:2] {
		if c := d.ref.Care(ev); !c.Explained {
			t.Fatalf("crafted event %s should be explained by the department: %s", ev.EventID, c.Reason)
		}
		d.crafted[ev.EventID] = "department"
	}
	return evs
}

// seedTriage closes, per detector, the first alert as a confirmed
// violation and the second as a false positive, triages the third, and
// leaves the rest new; changes are dated inside the data range.
func (d *demo) seedTriage(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	rows, err := d.conn.Query(ctx, `SELECT alert_id, if(detector != '', detector, rule) FROM alerts FINAL ORDER BY first_seen, alert_id`)
	if err != nil {
		t.Fatal(err)
	}
	perDetector := map[string][]string{}
	var order []string
	for rows.Next() {
		var id, det string
		if err := rows.Scan(&id, &det); err != nil {
			t.Fatal(err)
		}
		if perDetector[det] == nil {
			order = append(order, det)
		}
		perDetector[det] = append(perDetector[det], id)
	}
	if err := rows.Close(); err != nil {
		t.Fatal(err)
	}
	if len(order) == 0 {
		t.Fatal("no alerts were stored")
	}
	clock := d.to.Add(-72 * time.Hour)
	st := triage.NewStore(d.conn, triage.Options{Now: func() time.Time { clock = clock.Add(time.Minute); return clock }})
	actor := triage.Actor{Name: "analyst@test"}
	closed, triaged := triage.StatusClosed, triage.StatusTriaged
	assignee := "analyst@test"
	for _, det := range order {
		ids := perDetector[det]
		for i, id := range ids {
			var ch triage.Change
			switch i {
			case 0, 1:
				disp := triage.DispositionConfirmedViolation
				if i == 1 {
					disp = triage.DispositionFalsePositive
				}
				ch = triage.Change{Status: &closed, Disposition: &disp}
				d.closed[id] = disp
			case 2:
				ch = triage.Change{Status: &triaged, Assignee: &assignee}
			default:
				continue
			}
			if _, err := st.Update(ctx, id, ch, actor); err != nil {
				t.Fatalf("triage %s: %v", id, err)
			}
		}
	}
}

// query runs q and returns the column names, the database types and the rows.
func query(ctx context.Context, conn driver.Conn, q string) ([]string, []string, [][]any, error) {
	rows, err := conn.Query(ctx, q)
	if err != nil {
		return nil, nil, nil, err
	}
	defer rows.Close()
	cts := rows.ColumnTypes()
	names, types := rows.Columns(), make([]string, len(cts))
	for i, ct := range cts {
		types[i] = ct.DatabaseTypeName()
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cts))
		for i, ct := range cts {
			vals[i] = newOf(ct)
		}
		if err := rows.Scan(vals...); err != nil {
			return nil, nil, nil, fmt.Errorf("scan: %w", err)
		}
		out = append(out, vals)
	}
	return names, types, out, rows.Err()
}
