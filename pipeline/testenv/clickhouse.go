package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ClickHouseEnv names the environment variable holding the host:port of the
// ClickHouse HTTP interface used by integration tests. Locally and in CI that
// is the chDB-backed adapter started by deployments/dev/clickhouse.sh (the
// real ClickHouse engine behind the HTTP protocol; see its README for limits).
const ClickHouseEnv = "EHRDEV_CLICKHOUSE"

const (
	clickHousePingTimeout = 5 * time.Second
	clickHouseDDLTimeout  = 60 * time.Second
)

// reachable caches successful reachability checks per address, so a test
// binary pings the server once, not once per test.
var reachable sync.Map // addr -> struct{}

// ClickHouseAddr returns the host:port of the test ClickHouse HTTP interface
// from EHRDEV_CLICKHOUSE. It skips the test under -short and fails it,
// with instructions for starting the server, when the variable is unset or
// the server does not answer /ping.
func ClickHouseAddr(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: skipping ClickHouse integration test in -short mode")
	}
	addr := strings.TrimSpace(os.Getenv(ClickHouseEnv))
	if addr == "" {
		t.Fatal(clickHouseHowTo(ClickHouseEnv + " is not set"))
	}
	addr = strings.TrimPrefix(strings.TrimPrefix(addr, "http://"), "https://")
	addr = strings.TrimSuffix(addr, "/")
	if _, ok := reachable.Load(addr); !ok {
		if err := pingClickHouse(addr); err != nil {
			t.Fatal(clickHouseHowTo(fmt.Sprintf("ClickHouse at %s=%s is not reachable: %v", ClickHouseEnv, addr, err)))
		}
		reachable.Store(addr, struct{}{})
	}
	return addr
}

func clickHouseHowTo(problem string) string {
	return "testenv: " + problem + "\n" +
		"This is an integration test and needs a ClickHouse HTTP endpoint. From the repository root, run\n" +
		"\teval \"$(deployments/dev/clickhouse.sh env)\"\n" +
		"to start one and export " + ClickHouseEnv + ", or run `make test`, which does both.\n" +
		"(`go test -short` skips integration tests.)"
}

func pingClickHouse(addr string) error {
	c := &http.Client{Timeout: clickHousePingTimeout}
	resp, err := c.Get("http://" + addr + "/ping")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /ping: HTTP %d", resp.StatusCode)
	}
	return nil
}

// ClickHouseOptions returns the clickhouse-go options integration tests use
// to reach the server at addr with database db ("" means the server's
// default database). It is exported so that code a test runs outside the
// test function (a child process, a pipeline under test) connects exactly as
// the helper does.
//
// The protocol is HTTP because that is what the test server speaks; the
// compression is off because the adapter does not implement ClickHouse's
// native LZ4/ZSTD HTTP compression (gzip/deflate would work but buy nothing
// on loopback).
func ClickHouseOptions(addr, db string) *clickhouse.Options {
	return &clickhouse.Options{
		Protocol: clickhouse.HTTP,
		Addr:     []string{addr},
		Auth:     clickhouse.Auth{Database: db},
		ClientInfo: clickhouse.ClientInfo{
			Products: []struct{ Name, Version string }{{Name: "ehrwatch-tests", Version: "0"}},
		},
		Compression:     &clickhouse.Compression{Method: clickhouse.CompressionNone},
		DialTimeout:     10 * time.Second,
		ReadTimeout:     2 * time.Minute,
		MaxOpenConns:    16,
		MaxIdleConns:    4,
		ConnMaxLifetime: 10 * time.Minute,
	}
}

// ClickHouse creates a fresh, uniquely named database on the test server and
// returns a connection bound to it (every unqualified table name resolves
// there) together with the database name. When the test ends the connection
// is closed and the database dropped, unless EHRDEV_KEEP_DB=1, which
// keeps it (and logs its name) for a post-mortem look.
func ClickHouse(t testing.TB) (clickhouse.Conn, string) {
	t.Helper()
	addr := ClickHouseAddr(t)
	db := uniqueDatabaseName(t.Name())

	admin, err := clickhouse.Open(ClickHouseOptions(addr, ""))
	if err != nil {
		t.Fatalf("testenv: open ClickHouse admin connection to %s: %v", addr, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clickHouseDDLTimeout)
	defer cancel()
	if err := admin.Exec(ctx, "CREATE DATABASE "+quoteIdent(db)); err != nil {
		_ = admin.Close()
		t.Fatalf("testenv: create database %s on %s: %v", db, addr, err)
	}

	conn, err := clickhouse.Open(ClickHouseOptions(addr, db))
	if err == nil {
		err = conn.Ping(ctx)
	}
	if err != nil {
		_ = admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(db)+" SYNC")
		_ = admin.Close()
		t.Fatalf("testenv: connect to ClickHouse database %s on %s: %v", db, addr, err)
	}

	t.Cleanup(func() {
		_ = conn.Close()
		defer admin.Close()
		if os.Getenv("EHRDEV_KEEP_DB") == "1" {
			t.Logf("testenv: keeping ClickHouse database %s (EHRDEV_KEEP_DB=1)", db)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), clickHouseDDLTimeout)
		defer cancel()
		if err := admin.Exec(ctx, "DROP DATABASE IF EXISTS "+quoteIdent(db)+" SYNC"); err != nil {
			t.Errorf("testenv: drop ClickHouse database %s: %v", db, err)
		}
	})
	return conn, db
}

// uniqueDatabaseName turns a test name into test_<sanitized>_<random>, a
// valid unquoted ClickHouse identifier that no other test run will reuse.
func uniqueDatabaseName(testName string) string {
	var b strings.Builder
	lastUnderscore := false
	for _, r := range strings.ToLower(testName) {
		ok := (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9')
		switch {
		case ok:
			b.WriteRune(r)
			lastUnderscore = false
		case !lastUnderscore:
			b.WriteByte('_')
			lastUnderscore = true
		}
	}
	name := strings.Trim(b.String(), "_")
	if len(name) > 40 {
		name = strings.TrimRight(name[:40], "_")
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		panic(err) // crypto/rand never fails on supported platforms
	}
	return "test_" + name + "_" + hex.EncodeToString(rnd[:])
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}
