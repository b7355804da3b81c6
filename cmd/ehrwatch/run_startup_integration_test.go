package main

import (
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

var listenRe = regexp.MustCompile(`"listen":"([^"]+)"[^\n]*"message":"operational endpoint listening"`)

// TestRunWaitsForClickHouse: `ehrwatch run` started while ClickHouse is
// unreachable keeps running, answers /readyz 503 with the reason and logs
// its attempts; once ClickHouse is back it loads, consumes and stores
// everything, and becomes ready.
func TestRunWaitsForClickHouse(t *testing.T) {
	e := newRunEnv(t, 1, 1000)
	proxy := ingesttest.NewProxy(t, testenv.ClickHouseAddr(t))
	proxy.Cut()
	b, err := os.ReadFile(e.config)
	if err != nil {
		t.Fatal(err)
	}
	conf := strings.Replace(string(b), `"`+testenv.ClickHouseAddr(t)+`"`, `"`+proxy.Addr()+`"`, 1)
	if err := os.WriteFile(e.config, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	msgs := ingesttest.Fixture{N: 300, Users: 5, Prefix: "wait"}.Messages()
	ingesttest.Produce(t, e.brokers, e.topic, msgs)

	c := e.start()
	var addr string
	if !c.waitUntil(30*time.Second, "the operational endpoint", func() bool {
		m := listenRe.FindSubmatch(e.logs.Bytes())
		if m != nil {
			addr = string(m[1])
		}
		return m != nil
	}) {
		t.Fatal("no operational endpoint logged")
	}
	readyz := func() (int, string) {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if !c.waitUntil(30*time.Second, "the wait is logged twice", func() bool {
		return strings.Count(string(e.logs.Bytes()), "ClickHouse unreachable at start-up; waiting") >= 2
	}) {
		t.Fatal("ehrwatch does not log its wait for ClickHouse")
	}
	if code, body := readyz(); code != 503 || !strings.Contains(body, "waiting for ClickHouse") {
		t.Errorf("/readyz %d %q while ClickHouse is unreachable, want 503 naming the wait", code, body)
	}

	proxy.Restore()
	if !c.waitUntil(time.Minute, "every event stored", func() bool {
		return ingesttest.TableCounts(t, e.conn, "access_events").Unique == uint64(len(msgs))
	}) {
		t.Fatalf("events not stored after ClickHouse came back")
	}
	if !c.waitUntil(30*time.Second, "/readyz 200", func() bool {
		code, _ := readyz()
		return code == 200
	}) {
		code, body := readyz()
		t.Errorf("/readyz %d %q after ClickHouse came back, want 200", code, body)
	}
	if err := c.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("ehrwatch run exited with %v after SIGTERM", err)
	}
}
