package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestMigrateTwice applies every migration on the real engine, then again:
// the second run must apply nothing and fail on nothing.
func TestMigrateTwice(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	first, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams())
	if err != nil {
		t.Fatalf("first migrate: %v", err)
	}
	if len(first.Applied) != len(ms) || len(first.Skipped) != 0 {
		t.Fatalf("first run: applied %v skipped %v, want all %d applied", first.Applied, first.Skipped, len(ms))
	}
	second, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams())
	if err != nil {
		t.Fatalf("second migrate: %v", err)
	}
	if len(second.Applied) != 0 || len(second.Skipped) != len(ms) {
		t.Fatalf("second run: applied %v skipped %v, want none applied", second.Applied, second.Skipped)
	}
	for _, table := range []string{"access_events", "findings", "alerts", "alert_state", "alert_state_history", "dlq", "users", "patients", "encounters", "user_hourly_activity", "allowlist", "detector_snapshots"} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.tables WHERE database = currentDatabase() AND name = ?", table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 1 {
			t.Errorf("table %s missing after migrate", table)
		}
	}
}

// TestMigrateDetectsEditedMigration: an applied migration whose text changed
// must stop migrate rather than be skipped.
func TestMigrateDetectsEditedMigration(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum) VALUES (2, 'access_events', 'edited')"); err != nil {
		t.Fatal(err)
	}
	_, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams())
	if err == nil {
		t.Fatal("migrate accepted an applied migration with a different checksum")
	}
}

func roundTripEvent(i int) *schemas.AccessEvent {
	zones := []*time.Location{time.UTC, time.FixedZone("EDT", -4*3600), time.FixedZone("EST", -5*3600), time.FixedZone("IST", 5*3600+1800)}
	base := time.Date(2026, 11, 1, 5, 30, 0, 0, time.UTC) // 01:30 EDT, then 01:30 EST an hour later
	at := base.Add(time.Duration(i) * 1733 * time.Millisecond).In(zones[i%len(zones)])
	ev := &schemas.AccessEvent{
		EventID:          fmt.Sprintf("evt-%06d", i),
		EventTime:        at,
		Source:           "epic",
		FacilityID:       fmt.Sprintf("fac-%d", i%3),
		UserID:           fmt.Sprintf("u%04d", i%250),
		UserRole:         []string{"nurse", "physician", "clerk"}[i%3],
		UserDepartment:   []string{"ED", "ICU", "cardiology", "oncology"}[i%4],
		WorkstationID:    fmt.Sprintf("ws-%d", i%40),
		PatientID:        fmt.Sprintf("MRN-%07d", i*7%5000),
		Action:           schemas.Actions[i%len(schemas.Actions)],
		Resource:         []string{"", "notes", "labs"}[i%3],
		BreakGlass:       i%97 == 0,
		BreakGlassReason: "",
		Outcome:          schemas.OutcomeSuccess,
	}
	if i%2 == 0 {
		lt := at.Add(2500 * time.Millisecond)
		ev.LoggedTime = &lt
	}
	if i%3 == 0 {
		ev.ClientIP = fmt.Sprintf("10.0.%d.%d", i%256, i%200)
	}
	if i%5 == 0 {
		ev.EncounterID = fmt.Sprintf("enc-%d", i)
	}
	if ev.BreakGlass {
		ev.BreakGlassReason = "trauma activation — patient unresponsive"
	}
	if i%11 == 0 {
		ev.Outcome = schemas.OutcomeFailure
	}
	return ev
}

// TestAccessEventsRoundTrip batch-inserts 10 000 events through the
// product's writer (clickhouse-go PrepareBatch) and reads every one back:
// instants, millisecond precision, nullables and booleans must survive.
func TestAccessEventsRoundTrip(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	const n = 10_000
	want := make(map[string]*schemas.AccessEvent, n)
	var b store.Batch
	for i := 0; i < n; i++ {
		ev := roundTripEvent(i)
		want[ev.EventID] = ev
		b.Events = append(b.Events, store.EventRow{Position: store.Position{Topic: "events", Partition: int32(i % 4), Offset: int64(i / 4)}, Event: ev})
	}
	if err := store.NewWriter(conn).Write(ctx, &b); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT event_id, event_time, logged_time, source, facility_id, user_id, user_role,
		user_department, workstation_id, client_ip, patient_id, encounter_id, action, resource, break_glass,
		break_glass_reason, outcome, kafka_partition, kafka_offset FROM access_events ORDER BY event_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := 0
	for rows.Next() {
		var (
			g               schemas.AccessEvent
			logged          *time.Time
			clientIP, encID *string
			action, outcome string
			partition       uint32
			offset          uint64
		)
		if err := rows.Scan(&g.EventID, &g.EventTime, &logged, &g.Source, &g.FacilityID, &g.UserID, &g.UserRole,
			&g.UserDepartment, &g.WorkstationID, &clientIP, &g.PatientID, &encID, &action, &g.Resource,
			&g.BreakGlass, &g.BreakGlassReason, &outcome, &partition, &offset); err != nil {
			t.Fatal(err)
		}
		got++
		w, ok := want[g.EventID]
		if !ok {
			t.Fatalf("unexpected event id %s", g.EventID)
		}
		if !g.EventTime.Equal(w.EventTime) {
			t.Errorf("%s: event_time %v, want %v", g.EventID, g.EventTime, w.EventTime)
		}
		if g.EventTime.Location().String() != "UTC" {
			t.Errorf("%s: event_time read back in %s, want UTC", g.EventID, g.EventTime.Location())
		}
		switch {
		case (logged == nil) != (w.LoggedTime == nil):
			t.Errorf("%s: logged_time null=%v, want null=%v", g.EventID, logged == nil, w.LoggedTime == nil)
		case logged != nil && !logged.Equal(*w.LoggedTime):
			t.Errorf("%s: logged_time %v, want %v", g.EventID, *logged, *w.LoggedTime)
		}
		if (clientIP == nil) != (w.ClientIP == "") || (clientIP != nil && *clientIP != w.ClientIP) {
			t.Errorf("%s: client_ip %v, want %q", g.EventID, clientIP, w.ClientIP)
		}
		if (encID == nil) != (w.EncounterID == "") || (encID != nil && *encID != w.EncounterID) {
			t.Errorf("%s: encounter_id %v, want %q", g.EventID, encID, w.EncounterID)
		}
		g.Action, g.Outcome = schemas.Action(action), schemas.Outcome(outcome)
		if g.Source != w.Source || g.FacilityID != w.FacilityID || g.UserID != w.UserID || g.UserRole != w.UserRole ||
			g.UserDepartment != w.UserDepartment || g.WorkstationID != w.WorkstationID || g.PatientID != w.PatientID ||
			g.Action != w.Action || g.Resource != w.Resource || g.BreakGlass != w.BreakGlass ||
			g.BreakGlassReason != w.BreakGlassReason || g.Outcome != w.Outcome {
			t.Errorf("%s: read back %+v, want %+v", g.EventID, g, *w)
		}
		var idx int
		fmt.Sscanf(g.EventID, "evt-%06d", &idx)
		if partition != uint32(idx%4) || offset != uint64(idx/4) {
			t.Errorf("%s: kafka position %d/%d, want %d/%d", g.EventID, partition, offset, idx%4, idx/4)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Fatalf("read back %d events, want %d", got, n)
	}
}

// applyMigration runs one migration's statements (single-node form) on
// conn again, as a re-run after an interruption would.
func applyMigration(t *testing.T, ctx context.Context, conn driver.Conn, version int) {
	t.Helper()
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range ms {
		if m.Version != version {
			continue
		}
		stmts, err := m.Statements(schemas.DefaultMigrationParams())
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range stmts {
			if err := conn.Exec(ctx, s); err != nil {
				t.Fatalf("migration %04d: %v\n%s", version, err, s)
			}
		}
		return
	}
	t.Fatalf("no migration %04d", version)
}
