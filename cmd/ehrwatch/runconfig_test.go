package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// testRunConfig is the configuration the `ehrwatch run` integration tests
// start from: a test's topic, group, DLQ and database, with timings short
// enough for tests (200 ms batches and commits, 6 s sessions, a 4 s drain).
// Kafka and Pipeline add lines to their sections; Sections adds whole
// top-level sections.
type testRunConfig struct {
	Brokers, Group, Topic, DLQ string
	ClickHouse, Database       string
	Kafka, Pipeline            []string // "key: value" lines
	Sections                   string   // top-level YAML, ends with a newline
}

// YAML renders the configuration.
func (c testRunConfig) YAML(name string) string {
	var b strings.Builder
	fmt.Fprintf(&b, `# written by %s
kafka:
  brokers: [%q]
  group_id: %q
  topics: [%q]
  dlq_topic: %q
`, name, c.Brokers, c.Group, c.Topic, c.DLQ)
	writeSection(&b, []string{"max_wait: 200ms", "session_timeout: 6s", "rebalance_timeout: 6s", "heartbeat_interval: 1s"}, c.Kafka)
	fmt.Fprintf(&b, `clickhouse:
  addrs: [%q]
  protocol: http
  database: %q
pipeline:
`, c.ClickHouse, c.Database)
	writeSection(&b, []string{"batch_max_wait: 200ms", "commit_interval: 200ms", "drain_timeout: 4s", "shutdown_timeout: 15s"}, c.Pipeline)
	b.WriteString(c.Sections)
	return b.String()
}

// writeSection writes a section's default "key: value" lines, then the
// test's own lines; a test line whose key is one of the defaults replaces
// it (YAML refuses a key given twice). Indented lines continue the line
// before them.
func writeSection(b *strings.Builder, defaults, lines []string) {
	own := map[string]bool{}
	for _, l := range lines {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			own[k] = true
		}
	}
	for _, l := range defaults {
		if k, _, _ := strings.Cut(l, ":"); !own[k] {
			fmt.Fprintf(b, "  %s\n", l)
		}
	}
	for _, l := range lines {
		fmt.Fprintf(b, "  %s\n", l)
	}
}

// write puts the configuration in a file of t's temporary directory and
// returns its path.
func (c testRunConfig) write(t *testing.T) string {
	t.Helper()
	if c.Group != "" && c.Brokers != "" {
		// ehrwatch run creates its peers topic (peers.mode group, the
		// default) as kafka.group_id + ".peers".
		testenv.DeleteTopicAtEnd(t, c.Brokers, c.Group+".peers")
	}
	path := filepath.Join(t.TempDir(), "ehrwatch.yaml")
	if err := os.WriteFile(path, []byte(c.YAML(t.Name())), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
