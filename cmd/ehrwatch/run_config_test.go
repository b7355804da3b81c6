package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ehrwatch.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultConfigIsValid(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestPipelineSectionsFromFileAndEnvironment: the kafka, pipeline, http and
// log sections load from YAML, and EHRWATCH_<SECTION>_<KEY> overrides them,
// nested keys and lists included.
func TestPipelineSectionsFromFileAndEnvironment(t *testing.T) {
	path := writeConfig(t, `
kafka:
  brokers: [k1:9092]
  topics: [audit]
  sasl: {mechanism: scram-sha-512, username: ehrwatch, password_file: /run/secrets/kafka}
pipeline:
  batch_max_rows: 500
  retry: {max_interval: 3s}
http:
  listen: 127.0.0.1:9999
log:
  format: console
`)
	cfg, err := LoadConfig(path, []string{
		"EHRWATCH_KAFKA_BROKERS=a:9092, b:9092",
		"EHRWATCH_KAFKA_SESSION_TIMEOUT=45s",
		"EHRWATCH_KAFKA_REBALANCE_TIMEOUT=45s",
		"EHRWATCH_PIPELINE_RETRY_MULTIPLIER=1.5",
		"EHRWATCH_KAFKA_TLS_ENABLED=true",
		"EHRWATCH_LOG_LEVEL=debug",
	})
	if err != nil {
		t.Fatal(err)
	}
	k, p := cfg.Kafka, cfg.Pipeline
	if strings.Join(k.Brokers, ",") != "a:9092,b:9092" || k.Topics[0] != "audit" || k.SASL.Mechanism != "scram-sha-512" ||
		k.SASL.PasswordFile != "/run/secrets/kafka" || k.SessionTimeout != 45*time.Second || !k.TLS.Enabled {
		t.Errorf("kafka section: %+v", k)
	}
	if p.BatchMaxRows != 500 || p.Retry.MaxInterval != 3*time.Second || p.Retry.Multiplier != 1.5 || p.BatchMaxWait != time.Second {
		t.Errorf("pipeline section: %+v", p)
	}
	if cfg.HTTP.Listen != "127.0.0.1:9999" || cfg.Log.Level != "debug" || cfg.Log.Format != "console" {
		t.Errorf("http/log sections: %+v %+v", cfg.HTTP, cfg.Log)
	}
}

// TestConfigValidateReportsEveryBadKey: `ehrwatch config validate` lists
// every bad value with its key, not just the first.
func TestConfigValidateReportsEveryBadKey(t *testing.T) {
	path := writeConfig(t, `
kafka:
  group_id: ""
  start_offset: newest
  heartbeat_interval: 20s
  sasl: {mechanism: plain}
clickhouse:
  protocol: grpc
  database: ""
pipeline:
  batch_max_rows: -1
  queue_size: 0
  retry: {multiplier: 0}
http:
  listen: "9464"
log:
  format: xml
`)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"config", "validate", path}, &out, &errOut)
	if err == nil {
		t.Fatal("config validate accepted a bad file")
	}
	for _, key := range []string{"kafka.group_id", "kafka.start_offset", "kafka.heartbeat_interval", "kafka.sasl.username",
		"clickhouse.protocol", "clickhouse.database", "pipeline.batch_max_rows", "pipeline.queue_size",
		"pipeline.retry.multiplier", "http.listen", "log.format"} {
		if !strings.Contains(err.Error(), key+":") {
			t.Errorf("not reported: %s\n%v", key, err)
		}
	}
	if exitCode(err) != 1 {
		t.Errorf("exit code %d, want 1", exitCode(err))
	}
}

func TestRunNeedsConfig(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"run"}, &out, &errOut)
	if exitCode(err) != 2 {
		t.Errorf("run without --config: %v (exit %d), want a usage error", err, exitCode(err))
	}
	err = run(context.Background(), []string{"run", "--config", writeConfig(t, ""), "--log-level", "chatty"}, &out, &errOut)
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "--log.level") {
		t.Errorf("bad --log-level: %v (exit %d), want a usage error naming it", err, exitCode(err))
	}
}
