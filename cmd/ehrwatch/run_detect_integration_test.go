package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// seedReference writes a synthetic hospital's users, patients and
// encounters into the reference tables (migration 0006).
func seedReference(t *testing.T, conn clickhouse.Conn, h *synth.Hospital) {
	t.Helper()
	ctx := context.Background()
	b, err := conn.PrepareBatch(ctx, `INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state,
 postal_code, status, terminated_at, patient_id)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range h.Users {
		if err := b.Append(u.UserID, u.FirstName, u.LastName, u.Role, u.Department, u.Address.Line, u.Address.City, u.Address.State,
			u.Address.PostalCode, string(u.Status), u.TerminatedAt, u.PatientID); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, `INSERT INTO patients (patient_id, first_name, last_name, address_line, city, state, postal_code,
 date_of_birth, vip, deceased_at, employee_user_id)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range h.Patients {
		var dob *time.Time
		if p.DateOfBirth != "" {
			d, err := time.Parse(time.DateOnly, p.DateOfBirth)
			if err != nil {
				t.Fatal(err)
			}
			dob = &d
		}
		if err := b.Append(p.PatientID, p.FirstName, p.LastName, p.Address.Line, p.Address.City, p.Address.State,
			p.Address.PostalCode, dob, p.VIP, p.DeceasedAt, p.EmployeeUserID); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
	b, err = conn.PrepareBatch(ctx, `INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team)`)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range h.Encounters {
		team := e.CareTeam
		if team == nil {
			team = []string{}
		}
		if err := b.Append(e.EncounterID, e.PatientID, e.Department, e.Start, e.End, team); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Send(); err != nil {
		t.Fatal(err)
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func httpGet(t *testing.T, url, token string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// metricValue sums the samples of name (with its labels, if given) in a
// Prometheus text exposition; -1 when there is none.
func metricValue(body, name string) float64 {
	total, found := 0.0, false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) {
			continue
		}
		if rest := strings.TrimPrefix(line, name); rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			total, found = total+v, true
		}
	}
	if !found {
		return -1
	}
	return total
}

// TestRunDetectsAlertsAndServesAPI runs `ehrwatch run` in-process on a
// synthetic hospital whose reference data is in ClickHouse: the detectors
// find incidents (the relationship ones need the reference data and the
// hash key), alerting stores alerts after the findings, snapshots are
// taken, the engine and reference metrics are on /metrics, an allowlist
// row added to ClickHouse is picked up by the next refresh, and the API
// answers on its own listener, never on the operational one.
func TestRunDetectsAlertsAndServesAPI(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	conn, db := testenv.ClickHouse(t)
	ingesttest.Migrate(t, conn)
	cfg := synth.DefaultConfig()
	cfg.Days, cfg.WarmupDays = 10, 6
	cfg.Facilities = []synth.FacilityConfig{{ID: "e2e", TimeZone: "America/Chicago", Source: "epic", Users: 60, Patients: 1500}}
	cfg.IncidentRate = 5
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	seedReference(t, conn, h)
	// A department no vocabulary rule covers, and one the vocabulary
	// table maps: the first is reported (metric, /readyz detail), the
	// second is not.
	if err := conn.Exec(context.Background(), `INSERT INTO users (user_id, role, department, status) VALUES
 ('usr-e2e-odd1', 'Volunteer', 'Gift Shop', 'active'), ('usr-e2e-odd2', 'Volunteer', 'The Pit', 'active')`); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(context.Background(), `INSERT INTO vocabulary (kind, name, categories) VALUES
 ('department', 'the pit', ['emergency']), ('role', 'volunteer', [])`); err != nil {
		t.Fatal(err)
	}

	topic := testenv.NewTopic(t, brokers, 2)
	dlq := testenv.NewTopic(t, brokers, 1)
	msgs := make([]ingesttest.Message, len(h.Events))
	for i := range h.Events {
		b, err := json.Marshal(&h.Events[i])
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = ingesttest.Message{Message: kafka.Message{Key: []byte(h.Events[i].UserID), Value: b}, EventID: h.Events[i].EventID}
	}
	ingesttest.Produce(t, brokers, topic, msgs)

	opsAddr, apiAddr := freeAddr(t), freeAddr(t)
	const token = "e2e-privacy-officer-token-0123"
	config := testRunConfig{
		Brokers: brokers, Group: topic + "-group", Topic: topic, DLQ: dlq,
		ClickHouse: testenv.ClickHouseAddr(t), Database: db,
		Pipeline: []string{"snapshot_events: 2000"},
		Sections: fmt.Sprintf(`detection:
  detectors:
    vip: {severity: critical}
reference:
  source: clickhouse
  refresh_interval: 1s
  hash_key_file: %q
  facilities: {e2e: America/Chicago}
api:
  listen: %q
  tokens:
    - {name: po, role: privacy_officer, hash: %q}
http:
  listen: %q
`, writeHashKey(t), apiAddr, api.HashToken(token), opsAddr),
	}.write(t)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs ingesttest.LogBuffer
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"run", "--config", config}, io.Discard, &logs) }()
	t.Cleanup(func() {
		ingesttest.AssertNoPHI(t, "ehrwatch run logs", logs.Bytes())
		if t.Failed() {
			tail := logs.Bytes()
			if len(tail) > 6000 {
				tail = tail[len(tail)-6000:]
			}
			t.Logf("last logs:\n%s", tail)
		}
	})
	ingesttest.WaitFor(t, 2*time.Minute, "lag 0", func() bool {
		select {
		case err := <-done:
			t.Fatalf("ehrwatch run returned early: %v", err)
		default:
		}
		return ingesttest.Lag(t, brokers, topic+"-group", topic, 2) == 0
	})

	qctx := context.Background()
	perDetector := map[string]uint64{}
	rows, err := conn.Query(qctx, "SELECT detector, count() FROM findings FINAL GROUP BY detector")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var d string
		var n uint64
		if err := rows.Scan(&d, &n); err != nil {
			t.Fatal(err)
		}
		perDetector[d] = n
	}
	rows.Close()
	for _, d := range []string{"vip", "family", "coworker", "self_access", "terminated", "deceased", "bulk_export", "break_glass"} {
		if perDetector[d] == 0 {
			t.Errorf("no %s finding stored (findings by detector: %v)", d, perDetector)
		}
	}
	t.Logf("findings by detector: %v", perDetector)
	var vipSeverities []string
	if err := conn.QueryRow(qctx, "SELECT groupUniqArray(severity) FROM findings FINAL WHERE detector = 'vip'").Scan(&vipSeverities); err != nil {
		t.Fatal(err)
	}
	if strings.Join(vipSeverities, ",") != "critical" {
		t.Errorf("vip findings have severities %v; detection.detectors.vip.severity is critical", vipSeverities)
	}
	var alerts uint64
	if err := conn.QueryRow(qctx, "SELECT count() FROM alerts FINAL").Scan(&alerts); err != nil {
		t.Fatal(err)
	}
	t.Logf("%d alerts", alerts)
	if alerts == 0 {
		t.Error("no alert stored")
	}

	_, body := httpGet(t, "http://"+opsAddr+"/metrics", "")
	for name, check := range map[string]func(float64) bool{
		`ehrwatch_engine_findings_total{detector="vip"}`:                     func(v float64) bool { return v > 0 },
		"ehrwatch_engine_late_events_total":                                  func(v float64) bool { return v >= 0 },
		`ehrwatch_reference_records{kind="users"}`:                           func(v float64) bool { return v == float64(len(h.Users)+2) },
		`ehrwatch_detector_snapshots_total{result="ok"}`:                     func(v float64) bool { return v > 0 },
		`ehrwatch_reference_refreshes_total{result="ok",source="reference"}`: func(v float64) bool { return v >= 1 },
		"ehrwatch_after_store_duration_seconds_count":                        func(v float64) bool { return v > 0 },
		`ehrwatch_findings_total{detector="vip"}`:                            func(v float64) bool { return v > 0 },
		`ehrwatch_vocabulary_unmapped_names{kind="department"}`:              func(v float64) bool { return v == 1 },
		`ehrwatch_vocabulary_unmapped_names{kind="role"}`:                    func(v float64) bool { return v == 0 },
	} {
		if v := metricValue(body, name); !check(v) {
			t.Errorf("metric %s = %v", name, v)
		}
	}

	// Polled for up to 20 s: under load an idle partition's long poll can
	// time out three times in a row, which marks its fetch failing for 3 s.
	code, body := 0, ""
	for deadline := time.Now().Add(20 * time.Second); code != http.StatusOK && time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		code, body = httpGet(t, "http://"+opsAddr+"/readyz", "")
	}
	if code != http.StatusOK ||
		!strings.Contains(body, "vocabulary: 1 role/department name(s) map to no category") || !strings.Contains(body, `department "Gift Shop" (0 events)`) {
		t.Errorf("/readyz: %d %q, want 200 with the unmapped department as a detail", code, body)
	}

	// An allowlist row added in ClickHouse is in use after the next refresh.
	if err := conn.Exec(qctx, `INSERT INTO allowlist (entry_id, user_id, detector, reason, owner, expires_at)
VALUES ('a1', 'usr-e2e-0001', 'vip', 'security desk', 'privacy-office', '2030-01-01 00:00:00')`); err != nil {
		t.Fatal(err)
	}
	ingesttest.WaitFor(t, 30*time.Second, "the allowlist refresh", func() bool {
		_, body := httpGet(t, "http://"+opsAddr+"/metrics", "")
		return metricValue(body, `ehrwatch_reference_records{kind="allowlist"}`) == 1
	})

	// The API is on its own listener, with authentication; the
	// operational listener does not serve it.
	if code, body := httpGet(t, "http://"+apiAddr+"/api/v1/alerts", token); code != http.StatusOK || !strings.Contains(body, "alert_id") {
		t.Errorf("API /api/v1/alerts: %d %.300s", code, body)
	}
	if code, _ := httpGet(t, "http://"+apiAddr+"/api/v1/alerts", ""); code != http.StatusUnauthorized {
		t.Errorf("API without a token: %d, want 401", code)
	}
	if code, _ := httpGet(t, "http://"+opsAddr+"/api/v1/alerts", token); code != http.StatusNotFound {
		t.Errorf("ops listener /api/v1/alerts: %d, want 404", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ehrwatch run: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("ehrwatch run did not stop within 30s")
	}
	for _, s := range []string{"reference data loaded", "api listening", "ehrwatch stopped"} {
		if !bytes.Contains(logs.Bytes(), []byte(s)) {
			t.Errorf("logs lack %q", s)
		}
	}
}
