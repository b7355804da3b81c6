package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

var checkLineRe = regexp.MustCompile(`^(native|http)\s+(\S+(?: \S+)*?)\s+(ok|FAIL|skipped)\s+(.*)$`)

type checkResult struct{ status, detail string }

// runCheckCommand runs `ehrwatch check clickhouse` against addr over HTTP
// with a fresh database name, and returns the lines by "proto/check", the
// error and the database name.
func runCheckCommand(t *testing.T, addr string, extra ...string) (map[string]checkResult, string, error) {
	t.Helper()
	var b [4]byte
	_, _ = rand.Read(b[:])
	db := "ehrwatch_ci_" + hex.EncodeToString(b[:])
	config := filepath.Join(t.TempDir(), "ehrwatch.yaml")
	conf := fmt.Sprintf("clickhouse:\n  addrs: [%q]\n  protocol: http\n  database: %s\n  dial_timeout: 3s\n", addr, db)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"check", "clickhouse", "--config", config}, extra...), &stdout, &stderr)
	t.Logf("ehrwatch check clickhouse:\n%s%s", stdout.String(), stderr.String())
	if strings.Contains(stdout.String(), "DB::Exception") {
		t.Errorf("the output quotes a server message")
	}
	lines := map[string]checkResult{}
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		m := checkLineRe.FindStringSubmatch(l)
		if m == nil {
			t.Errorf("line %q is not <protocol> <check> ok|FAIL|skipped <detail>", l)
			continue
		}
		lines[m[1]+"/"+m[2]] = checkResult{m[3], m[4]}
	}
	return lines, db, err
}

// scratchDatabases lists the databases left on the server whose name
// starts with db.
func scratchDatabases(t *testing.T, addr, db string) []string {
	t.Helper()
	conn, err := clickhouse.Open(testenv.ClickHouseOptions(addr, ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rows, err := conn.Query(context.Background(), "SELECT name FROM system.databases WHERE startsWith(name, ?)", db)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			t.Fatal(err)
		}
		out = append(out, n)
	}
	return out
}

// TestCheckClickHouse runs the conformance command against the dev engine
// over HTTP (the protocol it speaks): every check passes or is skipped with
// its reason, and the scratch database is gone afterwards.
func TestCheckClickHouse(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	lines, db, err := runCheckCommand(t, addr, "--protocol", "both")
	if err != nil {
		t.Errorf("check failed: %v", err)
	}
	for _, name := range []string{"connect", "create database", "migrate", "insert batch", "retry collapses",
		"newest finding wins", "report queries", "grants parse", "drop database"} {
		if got := lines["http/"+name]; got.status != "ok" {
			t.Errorf("http %s: %s %s, want ok", name, got.status, got.detail)
		}
	}
	// The dev engine refuses access management: skipped, with the code.
	if got := lines["http/grants apply"]; got.status != "ok" && (got.status != "skipped" || !strings.Contains(got.detail, "code 497")) {
		t.Errorf("http grants apply: %s %s, want ok or skipped for code 497", got.status, got.detail)
	}
	// No native address in the config: skipped, saying so.
	if got := lines["native/all"]; got.status != "skipped" || !strings.Contains(got.detail, "no address for native") {
		t.Errorf("native: %s %s, want skipped: no address for native", got.status, got.detail)
	}
	for k, l := range lines {
		if l.status == "FAIL" || (l.status == "skipped" && strings.TrimSpace(l.detail) == "") {
			t.Errorf("%s: %s %q", k, l.status, l.detail)
		}
	}
	if left := scratchDatabases(t, addr, db); len(left) > 0 {
		t.Errorf("scratch databases left behind: %v", left)
	}
}

// TestCheckClickHouseFails: a retried batch that does not collapse (the
// retry is sent with other offsets, hence another deduplication token) and
// an unreachable server are reported as FAIL with exit status 1.
func TestCheckClickHouseFails(t *testing.T) {
	addr := testenv.ClickHouseAddr(t)
	t.Run("retry does not collapse", func(t *testing.T) {
		checkMutateRetry = func(b *store.Batch) {
			for i := range b.Events {
				b.Events[i].Offset += 1000
			}
		}
		t.Cleanup(func() { checkMutateRetry = nil })
		lines, db, err := runCheckCommand(t, addr)
		if exitCode(err) != 1 {
			t.Errorf("exit status %d (%v), want 1", exitCode(err), err)
		}
		if got := lines["http/retry collapses"]; got.status != "FAIL" || !strings.Contains(got.detail, "48 rows raw") {
			t.Errorf("retry collapses: %s %s, want FAIL with 48 rows raw", got.status, got.detail)
		}
		if got := lines["http/drop database"]; got.status != "ok" {
			t.Errorf("drop database after a failure: %s %s, want ok", got.status, got.detail)
		}
		if left := scratchDatabases(t, addr, db); len(left) > 0 {
			t.Errorf("scratch databases left behind: %v", left)
		}
	})
	t.Run("unreachable", func(t *testing.T) {
		lines, _, err := runCheckCommand(t, "127.0.0.1:1")
		if exitCode(err) != 1 {
			t.Errorf("exit status %d (%v), want 1", exitCode(err), err)
		}
		if got := lines["http/connect"]; got.status != "FAIL" {
			t.Errorf("connect: %s %s, want FAIL", got.status, got.detail)
		}
		if got := lines["http/migrate"]; got.status != "skipped" || got.detail != "connect failed" {
			t.Errorf("migrate: %s %s, want skipped: connect failed", got.status, got.detail)
		}
	})
}
