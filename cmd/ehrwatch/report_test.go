package main

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// reportEnv is a seeded database and a config file pointing at it.
type reportEnv struct {
	config string
	db     string
	conn   driver.Conn
}

func newReportEnv(t *testing.T, extraAPI string) (*reportEnv, func() []cliAudit) {
	t.Helper()
	conn, db := testenv.ClickHouse(t)
	if err := tt.Migrate(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	tt.Seed(t, conn, tt.NewFixture())
	cfg := filepath.Join(t.TempDir(), "ehrwatch.yaml")
	doc := fmt.Sprintf(`# one file serves every command: report/serve accept the other sections
pipeline:
  batch_max_rows: 500
clickhouse:
  addrs: [%q]
  protocol: http
  database: %q
api:
  facility_time_zones: {fac-nyc: America/New_York}
  max_report_range: 8784h
%s`, testenv.ClickHouseAddr(t), db, extraAPI)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	audits := func() []cliAudit {
		rows, err := conn.Query(context.Background(), `SELECT principal, auth_method, channel, endpoint, patient_id, user_id, rows, params
FROM api_audit ORDER BY at`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var out []cliAudit
		for rows.Next() {
			var a cliAudit
			if err := rows.Scan(&a.principal, &a.method, &a.channel, &a.endpoint, &a.patient, &a.user, &a.rows, &a.params); err != nil {
				t.Fatal(err)
			}
			out = append(out, a)
		}
		return out
	}
	return &reportEnv{config: cfg, db: db, conn: conn}, audits
}

type cliAudit struct {
	principal, method, channel, endpoint, patient, user string
	rows                                                uint32
	params                                              string
}

func runCLI(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String(), errb.String(), err
}

func TestReportCLI(t *testing.T) {
	e, audits := newReportEnv(t, "")
	base := []string{"--config", e.config, "--from", "2026-03-01", "--to", "2026-04-01"}

	// Table: aligned columns, names, explained column, DST-correct local times.
	out, stderr, err := runCLI(append([]string{"report", "patient", "--id", tt.PatientMain, "--as", "po-jane"}, base...)...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	lines := strings.Split(out, "\n")
	if !strings.HasPrefix(lines[0], "Patient access report for patient "+tt.PatientMain) {
		t.Errorf("title: %q", lines[0])
	}
	header := lines[2]
	col := strings.Index(header, "EXPLAINED")
	if col < 0 || !strings.HasPrefix(header, "TIME (UTC)") {
		t.Fatalf("header: %q", header)
	}
	var explained []string
	for _, l := range lines[3:9] {
		explained = append(explained, strings.Fields(l[col:])[0])
	}
	if strings.Join(explained, ",") != "yes,yes,NO,yes,yes,NO" {
		t.Errorf("EXPLAINED column %v in\n%s", explained, out)
	}
	for _, want := range []string{"Quillon Marchetti", "2026-03-08T01:59:00.000-05:00", "2026-03-08T03:00:00.000-04:00",
		"yes: =HYPERLINK", "6 accesses, 2 not explained"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	// CSV and JSON; the user report.
	out, _, err = runCLI(append([]string{"report", "patient", "--id", tt.PatientMain, "--format", "csv"}, base...)...)
	if err != nil {
		t.Fatal(err)
	}
	recs, err := csv.NewReader(strings.NewReader(out)).ReadAll()
	if err != nil || len(recs) != 7 || !strings.HasPrefix(recs[3][13], "'=") {
		t.Fatalf("csv: %v %q", err, recs)
	}
	out, _, err = runCLI(append([]string{"report", "user", "--id", "u-bob", "--format", "json", "--limit", "1"}, base...)...)
	if err != nil {
		t.Fatal(err)
	}
	var rep triage.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Rows) != 1 || rep.NextCursor == "" || len(rep.Findings) != 2 {
		t.Fatalf("json: %v %s", err, out)
	}
	out, stderr, err = runCLI(append([]string{"report", "user", "--id", "u-bob", "--format", "table", "--cursor", rep.NextCursor}, base...)...)
	if err != nil || !strings.Contains(out, tt.PatientOther) || strings.Contains(out, "ev-3") {
		t.Fatalf("second page: %v\n%s\n%s", err, out, stderr)
	}

	// Every run left an audit row, under --as or the OS user.
	as := audits()
	if len(as) != 4 {
		t.Fatalf("%d audit rows: %+v", len(as), as)
	}
	if a := as[0]; a.principal != "po-jane" || a.method != "cli" || a.channel != "cli" || a.endpoint != "report patient" ||
		a.patient != tt.PatientMain || a.rows != 6 || !strings.Contains(a.params, `"os_user":`) {
		t.Errorf("first audit row: %+v", a)
	}
	if a := as[2]; a.principal != currentOSUser() || a.user != "u-bob" || a.rows != 1 {
		t.Errorf("user report audit row: %+v", a)
	}

	// Bad input: usage errors naming the flag, never the id, nothing printed, no audit row.
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", "patient", "--config", e.config, "--id", tt.PatientMain, "--from", "2026-04-01", "--to", "2026-03-01"}, "--from/--to"},
		{[]string{"report", "patient", "--config", e.config, "--id", tt.PatientMain, "--from", "2020-01-01", "--to", "2026-03-01"}, "range too long"},
		{[]string{"report", "patient", "--config", e.config, "--id", tt.PatientMain, "--from", "March", "--to", "2026-03-01"}, "--from"},
		{[]string{"report", "patient", "--config", e.config, "--from", "2026-03-01", "--to", "2026-04-01"}, "--id"},
		{append([]string{"report", "patient", "--id", tt.PatientMain, "--format", "xlsx"}, base...), "--format"},
		{append([]string{"report", "visit", "--id", tt.PatientMain}, base...), "report patient"},
	} {
		out, _, err := runCLI(c.args...)
		var u usageError
		if !errors.As(err, &u) || !strings.Contains(err.Error(), c.want) || strings.Contains(err.Error(), tt.PatientMain) || out != "" {
			t.Errorf("%v: err=%v out=%q", c.args, err, out)
		}
	}
	if n := len(audits()); n != 4 {
		t.Errorf("refused runs were audited: %d rows", n)
	}
}

// TestReportCLIWarnsOnEmptyReference: with the encounters table empty,
// the table output and stderr say why nothing is explained (every format),
// and the JSON carries the warning.
func TestReportCLIWarnsOnEmptyReference(t *testing.T) {
	e, _ := newReportEnv(t, "")
	base := []string{"report", "patient", "--id", tt.PatientMain, "--config", e.config, "--from", "2026-03-01", "--to", "2026-04-01"}
	out, stderr, err := runCLI(base...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	if strings.Contains(out+stderr, "WARNING") || strings.Contains(stderr, "warning") {
		t.Errorf("warning with the reference tables loaded:\n%s\n%s", out, stderr)
	}
	if err := e.conn.Exec(context.Background(), "TRUNCATE TABLE encounters"); err != nil {
		t.Fatal(err)
	}
	out, stderr, err = runCLI(base...)
	if err != nil {
		t.Fatalf("%v\n%s", err, stderr)
	}
	for _, want := range []string{"6 accesses, 6 not explained", "WARNING: The reference table encounters is empty"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	if !strings.Contains(stderr, "report: warning: The reference table encounters is empty") {
		t.Errorf("stderr lacks the warning:\n%s", stderr)
	}
	out, stderr, err = runCLI(append(base, "--format", "json")...)
	if err != nil {
		t.Fatal(err)
	}
	var rep triage.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || len(rep.Warnings) != 1 || !strings.HasPrefix(rep.Warnings[0], "The reference table encounters is empty") {
		t.Errorf("json warnings: %v %+v", err, rep.Warnings)
	}
	if !strings.Contains(stderr, "report: warning:") {
		t.Errorf("json: stderr lacks the warning:\n%s", stderr)
	}
	out, stderr, err = runCLI(append(base, "--format", "csv")...)
	if err != nil || strings.Contains(out, "WARNING") || !strings.Contains(stderr, "report: warning:") {
		t.Errorf("csv: %v: the warning belongs on stderr, not in the file:\n%s\n%s", err, out, stderr)
	}
}

// TestReportCLIRefusesWithoutAudit: no audit table, no report.
func TestReportCLIRefusesWithoutAudit(t *testing.T) {
	conn, db := testenv.ClickHouse(t)
	if err := tt.Migrate(context.Background(), conn); err != nil {
		t.Fatal(err)
	}
	tt.Seed(t, conn, tt.NewFixture())
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	doc := fmt.Sprintf("clickhouse:\n  addrs: [%q]\n  protocol: http\n  database: %q\n", testenv.ClickHouseAddr(t), db)
	if err := os.WriteFile(cfg, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(context.Background(), "DROP TABLE api_audit SYNC"); err != nil {
		t.Fatal(err)
	}
	out, _, err := runCLI("report", "patient", "--config", cfg, "--id", tt.PatientMain, "--from", "2026-03-01", "--to", "2026-04-01")
	if err == nil || out != "" || strings.Contains(err.Error(), tt.PatientMain) {
		t.Fatalf("err=%v out=%q", err, out)
	}
}

func TestServeCommand(t *testing.T) {
	// hash-token
	var out, errb bytes.Buffer
	if err := runServe(context.Background(), []string{"hash-token"}, strings.NewReader("a-long-enough-token-123\n"), &out, &errb); err != nil {
		t.Fatal(err)
	}
	if strings.TrimSpace(out.String()) != api.HashToken("a-long-enough-token-123") {
		t.Fatalf("hash-token: %q", out.String())
	}
	if err := runServe(context.Background(), []string{"hash-token"}, strings.NewReader("short\n"), &out, &errb); err == nil {
		t.Fatal("short token accepted")
	}

	// Unknown key in the api section is an error naming it.
	e, _ := newReportEnv(t, "  listne: 1\n")
	if _, _, err := runCLI("serve", "--config", e.config); err == nil || !strings.Contains(err.Error(), "listne") {
		t.Fatalf("typo in api section: %v", err)
	}
	// No authenticator configured.
	e, _ = newReportEnv(t, "")
	if _, _, err := runCLI("serve", "--config", e.config, "--listen", "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "api.tokens") {
		t.Fatalf("serve without tokens: %v", err)
	}

	// A real serve: start, answer, stop on cancel.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	e, _ = newReportEnv(t, fmt.Sprintf("  tokens:\n    - {name: po, role: privacy_officer, hash: %q}\n", api.HashToken("po-token-0123456789")))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	var logs bytes.Buffer
	go func() {
		done <- run(ctx, []string{"serve", "--config", e.config, "--listen", addr}, &bytes.Buffer{}, &syncWriter{w: &logs})
	}()
	var res *http.Response
	for i := 0; i < 100; i++ {
		req, _ := http.NewRequest("GET", "http://"+addr+"/api/v1/reports/patient-access?patient_id="+tt.PatientMain+"&from=2026-03-01&to=2026-04-01", nil)
		req.Header.Set("Authorization", "Bearer po-token-0123456789")
		if res, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	var rep triage.Report
	err = json.NewDecoder(res.Body).Decode(&rep)
	res.Body.Close()
	if err != nil || res.StatusCode != 200 || len(rep.Rows) != 6 {
		t.Fatalf("serve: %d %v %+v", res.StatusCode, err, rep)
	}
	// The console is on the same listener: its queue, behind its CSP.
	req, _ := http.NewRequest("GET", "http://"+addr+"/queue", nil)
	req.Header.Set("Authorization", "Bearer po-token-0123456789")
	if res, err = http.DefaultClient.Do(req); err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(page), "<h1>Alert queue</h1>") ||
		!strings.Contains(res.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("serve: GET /queue: %d %q", res.StatusCode, res.Header.Get("Content-Security-Policy"))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("serve returned %v", err)
	}
	if l := logs.String(); !strings.Contains(l, "api request") || strings.Contains(l, tt.PatientMain) || strings.Contains(l, "Marchetti") {
		t.Errorf("serve logs: %s", l)
	}
}

// syncWriter serialises writes from the server's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestReportCLIWarnsWithoutCareRelationships: with the encounters table
// empty every access is unexplained, and the report says why, plainly.
func TestReportCLIWarnsWithoutCareRelationships(t *testing.T) {
	e, _ := newReportEnv(t, "")
	base := []string{"report", "patient", "--id", tt.PatientMain, "--config", e.config, "--from", "2026-03-01", "--to", "2026-04-01"}
	_, stderr, err := runCLI(base...)
	if err != nil || strings.Contains(stderr, "warning") {
		t.Fatalf("with encounters loaded: %v, stderr %q", err, stderr)
	}
	conn, err := openTestConn(e.db)
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(context.Background(), "TRUNCATE TABLE encounters"); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := runCLI(base...)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, "report: warning: The reference table encounters is empty") ||
		!strings.Contains(out, "6 accesses, 6 not explained") || !strings.Contains(out, "WARNING: The reference table encounters is empty") ||
		strings.Count(stderr, "report: warning:") != 1 {
		t.Fatalf("no warning:\nstdout %s\nstderr %s", out, stderr)
	}
	out, _, err = runCLI(append(base, "--format", "json")...)
	if err != nil || !strings.Contains(out, `"warnings"`) {
		t.Fatalf("json: %v %s", err, out)
	}
}

func openTestConn(db string) (clickhouse.Conn, error) {
	return clickhouse.Open(testenv.ClickHouseOptions(os.Getenv(testenv.ClickHouseEnv), db))
}
