package main

import (
	"bytes"
	"context"
	"fmt"
	"regexp"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// TestBenchPipelineSmoke runs `ehrwatch bench pipeline` on a small stream
// against the real broker and checks that every measurement is reported:
// (a), (a'), and (b) with and without detectors, each (b) as a share of
// both loops and with the time its last batch took to be stored. It
// asserts no rates: they are the benchmark's, in docs/benchmarks.md §2.
func TestBenchPipelineSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test")
	}
	brokers := testenv.Kafka(t)
	yaml := fmt.Sprintf("kafka:\n  brokers: [%q]\n  group_id: unused\n  topics: [unused]\n  max_wait: 200ms\n"+
		"pipeline:\n  batch_max_wait: 300ms\n", brokers)
	cfg := writeConfig(t, yaml)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"bench", "pipeline", "--config", cfg, "--events", "3000",
		"--users", "60", "--days", "2", "--partitions", "3", "--skip-clickhouse"}, &out, &errOut)
	t.Logf("output:\n%s", out.String())
	if err != nil {
		t.Fatalf("bench pipeline: %v\n%s", err, errOut.String())
	}
	const rate = `\s+3000 events in\s+\S+ =\s+\d+ events/s`
	for _, line := range []string{
		`\(a\) kafka-go fetch loop` + rate + `\s+cpu`,
		`\(a'\) kafka-go batch loop` + rate + `\s+\(\d+\.\d+ of \(a\)\)`,
		`\(b\) ehrwatch, no detectors, no sink` + rate + `\s+\(\d+\.\d+ of \(a\), \d+\.\d+ of \(a'\)\).*; all stored \S+ later`,
		`\(b\) ehrwatch, detectors, no sink` + rate + `\s+\(\d+\.\d+ of \(a\), \d+\.\d+ of \(a'\)\).*; all stored \S+ later`,
		`\(d\) warm-up, detectors only` + rate,
	} {
		if !regexp.MustCompile(line).MatchString(out.String()) {
			t.Errorf("no line matching %s", line)
		}
	}
}
