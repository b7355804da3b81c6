package alerting_test

import (
	"context"
	"net"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// migrated returns a connection to a fresh database with every migration
// applied.
func migrated(t *testing.T) driver.Conn {
	t.Helper()
	conn, _ := testenv.ClickHouse(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	return conn
}

func newCHManager(t *testing.T, conn driver.Conn, cfg alerting.Config) *alerting.Manager {
	t.Helper()
	mgr, err := alerting.New(cfg, alerting.Options{
		Store:      alerting.NewClickHouseStore(conn),
		Logger:     zerolog.Nop(),
		Registerer: prometheus.NewRegistry(),
		Version:    "test",
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = mgr.Close(ctx)
	})
	return mgr
}

type alertRow struct {
	AlertID, Rule, Detector, Severity, FacilityID, UserID, PatientID, Explanation string
	Score                                                                         uint8
	FirstSeen, LastSeen                                                           time.Time
	FindingCount                                                                  uint32
	FindingIDs                                                                    []string
	Version                                                                       uint64
}

func readAlerts(t *testing.T, conn driver.Conn) map[string]alertRow {
	t.Helper()
	rows, err := conn.Query(context.Background(), `SELECT alert_id, rule, detector, severity, score, facility_id, user_id, patient_id,
		first_seen, last_seen, finding_count, finding_ids, explanation, version FROM alerts FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string]alertRow{}
	for rows.Next() {
		var r alertRow
		if err := rows.Scan(&r.AlertID, &r.Rule, &r.Detector, &r.Severity, &r.Score, &r.FacilityID, &r.UserID, &r.PatientID,
			&r.FirstSeen, &r.LastSeen, &r.FindingCount, &r.FindingIDs, &r.Explanation, &r.Version); err != nil {
			t.Fatal(err)
		}
		if _, dup := out[r.AlertID]; dup {
			t.Fatalf("alert %s twice under FINAL", r.AlertID)
		}
		out[r.AlertID] = r
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func countRows(t *testing.T, conn driver.Conn, query string) uint64 {
	t.Helper()
	var n uint64
	if err := conn.QueryRow(context.Background(), query).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestClickHouseAlertsPersistedAndIdempotent(t *testing.T) {
	conn := migrated(t)
	fs := dayOfFindings()
	cfg := alerting.DefaultConfig()
	mgr := newCHManager(t, conn, cfg)

	// Stream the findings in three batches, as a pipeline would.
	var emitted []alerting.Alert
	for i := 0; i < len(fs); i += 25 {
		got, err := mgr.Observe(context.Background(), fs[i:min(i+25, len(fs))])
		if err != nil {
			t.Fatal(err)
		}
		emitted = append(emitted, got...)
	}
	want := finalState(emitted)
	stored := readAlerts(t, conn)
	if len(stored) != len(want) {
		t.Fatalf("%d alerts stored, want %d", len(stored), len(want))
	}
	for id, a := range want {
		r, ok := stored[id]
		if !ok {
			t.Fatalf("alert %s not stored", id)
		}
		if r.Rule != a.Rule || r.Detector != a.Detector || r.Severity != string(a.Severity) || r.Score != a.Score ||
			r.FacilityID != a.FacilityID || r.UserID != a.UserID || r.PatientID != a.PatientID ||
			!r.FirstSeen.Equal(a.FirstSeen) || !r.LastSeen.Equal(a.LastSeen) || r.FindingCount != a.FindingCount ||
			!slices.Equal(r.FindingIDs, a.FindingIDs) || r.Explanation != a.Explanation || r.Version != a.Version {
			t.Errorf("alert %s read back as\n%+v\nwant\n%+v", id, r, a)
		}
	}
	if _, ok := byRuleMap(stored)[alerting.RulePatientSurge]; !ok {
		t.Error("no patient_surge alert stored")
	}
	rowsBefore := countRows(t, conn, "SELECT count() FROM alerts")

	// The same manager re-observing everything writes nothing.
	if got, err := mgr.Observe(context.Background(), fs); err != nil || len(got) != 0 {
		t.Fatalf("re-observe: %d alerts, %v", len(got), err)
	}
	if n := countRows(t, conn, "SELECT count() FROM alerts"); n != rowsBefore {
		t.Errorf("re-observe wrote %d rows", n-rowsBefore)
	}

	// A restarted manager reprocessing the same findings yields the same
	// ids and, under FINAL, no duplicates and the same content.
	mgr2 := newCHManager(t, conn, cfg)
	if _, err := mgr2.Observe(context.Background(), fs); err != nil {
		t.Fatal(err)
	}
	again := readAlerts(t, conn)
	if len(again) != len(stored) {
		t.Fatalf("after reprocessing: %d alerts under FINAL, want %d", len(again), len(stored))
	}
	for id, r := range stored {
		if a := again[id]; a.Version != r.Version || a.FindingCount != r.FindingCount || a.Explanation != r.Explanation {
			t.Errorf("alert %s changed on reprocessing: %+v → %+v", id, r, a)
		}
	}
	if n := countRows(t, conn, "SELECT uniqExact(alert_id) FROM alerts"); n != uint64(len(stored)) {
		t.Errorf("%d distinct ids, want %d", n, len(stored))
	}

	// A restart part-way (only the second half reprocessed) never
	// overrides the fuller rows: the version orders by finding count.
	mgr3 := newCHManager(t, conn, cfg)
	if _, err := mgr3.Observe(context.Background(), fs[len(fs)/2:]); err != nil {
		t.Fatal(err)
	}
	partial := readAlerts(t, conn)
	for id, r := range stored {
		if partial[id].FindingCount != r.FindingCount {
			t.Errorf("alert %s regressed from %d to %d findings", id, r.FindingCount, partial[id].FindingCount)
		}
	}
}

func byRuleMap(m map[string]alertRow) map[string]alertRow {
	out := map[string]alertRow{}
	for _, r := range m {
		out[r.Rule] = r
	}
	return out
}

func TestClickHouseDeadLettersForADownReceiver(t *testing.T) {
	conn := migrated(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg := rulesOnly()
	w := &cfg.Outputs.Webhook
	w.Enabled, w.URL, w.Secret, w.Delivery = true, "http://"+addr+"/hook", testSecret, fastDelivery(3)
	mgr := newCHManager(t, conn, cfg)
	alerts, err := mgr.Observe(context.Background(), []schemas.Finding{
		finding("vip", "high", "U1", 1, at("09:00")),
		finding("vip", "high", "U2", 2, at("09:00")),
	})
	if err != nil || len(alerts) != 2 {
		t.Fatalf("observe: %v %+v", err, alerts)
	}
	waitFor(t, "dead letters in ClickHouse", func() bool {
		return countRows(t, conn, "SELECT count() FROM alert_delivery_failures FINAL") == 2
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := mgr.Close(ctx); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(context.Background(), `SELECT output, alert_id, version, attempts, error_class, http_status,
		first_attempt_at, failed_at FROM alert_delivery_failures FINAL ORDER BY alert_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	wantIDs := []string{alerts[0].AlertID, alerts[1].AlertID}
	slices.Sort(wantIDs)
	i := 0
	for rows.Next() {
		var f alerting.DeliveryFailure
		var first *time.Time
		if err := rows.Scan(&f.Output, &f.AlertID, &f.Version, &f.Attempts, &f.ErrorClass, &f.HTTPStatus, &first, &f.FailedAt); err != nil {
			t.Fatal(err)
		}
		if f.Output != "webhook" || f.AlertID != wantIDs[i] || f.Attempts != 3 || f.ErrorClass != alerting.ClassRefused ||
			f.HTTPStatus != 0 || first == nil || f.FailedAt.Before(*first) || time.Since(f.FailedAt) > time.Minute {
			t.Errorf("row %d: %+v first=%v", i, f, first)
		}
		i++
	}
	if i != 2 {
		t.Fatalf("%d rows", i)
	}
}

func TestClickHouseStoreErrorsCarryNoRowData(t *testing.T) {
	conn, _ := testenv.ClickHouse(t) // no migrations: the tables do not exist
	mgr := newCHManager(t, conn, rulesOnly())
	f := finding("vip", "high", "U1", 1, at("09:00"))
	_, err := mgr.Observe(context.Background(), []schemas.Finding{f})
	if err == nil {
		t.Fatal("write to a missing table succeeded")
	}
	msg := err.Error()
	if strings.Contains(msg, "PAT-") || strings.Contains(msg, "U1") || !strings.Contains(msg, "clickhouse") {
		t.Fatalf("error %q", msg)
	}
	t.Logf("error: %s", msg)
}
