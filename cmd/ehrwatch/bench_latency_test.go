package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"strconv"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// TestBenchLatencySmoke runs `ehrwatch bench latency` briefly at a low rate
// against the real broker and the dev ClickHouse engine, and checks that it
// reports (a), (b) and (c) with samples and percentiles. It asserts no
// timings: the figures are the benchmark's, in docs/benchmarks.md.
func TestBenchLatencySmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	chAddr := testenv.ClickHouseAddr(t)
	yaml := fmt.Sprintf("kafka:\n  brokers: [%q]\n  group_id: unused\n  topics: [unused]\n  max_wait: 200ms\n"+
		"clickhouse:\n  addrs: [%q]\n  protocol: http\n  database: latsmoke\npipeline:\n  batch_max_wait: 300ms\n", brokers, chAddr)
	cfg := writeConfig(t, yaml)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"bench", "latency", "--config", cfg, "--rates", "200",
		"--duration", "3s", "--burst", "2x500ms/2s", "--users", "120", "--days", "2", "--partitions", "2",
		"--incidents-every", "500ms"}, &out, &errOut)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("bench latency: %v\n%s", err, errOut.String())
	}
	for _, what := range []string{`\(a\) produce -> event stored`, `\(b\) produce -> finding stored`,
		`\(c\) produce -> alert delivered`, `\(c\)   terminated`} {
		re := regexp.MustCompile(what + `\s+(\d+)\s+(\d+\.\d+)s\s+(\d+\.\d+)s\s+(\d+\.\d+)s\s+<=(\d+\.\d+)s`)
		m := re.FindStringSubmatch(out.String())
		if m == nil {
			t.Errorf("no percentiles for %s", what)
			continue
		}
		if n, _ := strconv.Atoi(m[1]); n == 0 {
			t.Errorf("%s: no samples", what)
		}
	}
	// Every event reached access_events in some INSERT; how many rows
	// each had depends on the machine.
	if m := regexp.MustCompile(`(?m)^\s+access_events\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+\.\d+)\s+(\d+)$`).FindStringSubmatch(out.String()); m == nil {
		t.Errorf("no INSERT line for access_events")
	} else if inserts, _ := strconv.Atoi(m[1]); inserts == 0 {
		t.Errorf("access_events: no INSERT counted")
	} else if p := regexp.MustCompile(`(\d+) events produced`).FindStringSubmatch(out.String()); p == nil || p[1] != m[2] {
		t.Errorf("access_events: %s rows inserted, want every event produced (%v)", m[2], p)
	}
	if !regexp.MustCompile(`batch_max_wait 300ms`).MatchString(out.String()) {
		t.Errorf("the bounds are not printed with the configured values")
	}
}
