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
	if exitCode(err) != 2 || !strings.Contains(err.Error(), "--log-level: want debug") {
		t.Errorf("bad --log-level: %v (exit %d), want a usage error naming it", err, exitCode(err))
	}
}

// TestConfigDefaultsRoundTrip: `ehrwatch config defaults` prints every
// section, and what it prints loads back into the same configuration and
// validates (with a hash key file added, which has no default).
func TestConfigDefaultsRoundTrip(t *testing.T) {
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"config", "defaults"}, &out, &errOut); err != nil {
		t.Fatalf("config defaults: %v\n%s", err, errOut.String())
	}
	for _, section := range []string{"kafka:", "clickhouse:", "pipeline:", "detection:", "reference:", "alerting:", "api:", "http:", "log:",
		"snapshot_events:", "allowed_lateness:", "volume:", "refresh_interval:", "hash_key_file:"} {
		if !strings.Contains(out.String(), "\n"+section) && !strings.Contains(out.String(), " "+section) {
			t.Errorf("defaults lack %q", section)
		}
	}
	path := writeConfig(t, out.String())
	cfg, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatalf("defaults do not load back: %v", err)
	}
	var again bytes.Buffer
	if err := writeDefaultConfigFrom(&again, cfg); err != nil {
		t.Fatal(err)
	}
	if want := strings.TrimPrefix(out.String(), defaultConfigHeader); again.String() != want {
		t.Errorf("defaults changed on a round trip:\n%s\nvs\n%s", again.String(), want)
	}
	key := filepath.Join(t.TempDir(), "hash.key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRunConfig(path, []string{"EHRWATCH_REFERENCE_HASH_KEY_FILE=" + key}); err != nil {
		t.Errorf("defaults plus a hash key do not validate for run: %v", err)
	}
	if _, err := LoadRunConfig(path, nil); err == nil || !strings.Contains(err.Error(), "reference.hash_key_file: required") {
		t.Errorf("run without a hash key: %v", err)
	}
}

// TestConfigDetectionReferenceAlertingAPI: the sections added for `run`
// report their bad keys by full name, together with every other section's,
// and unknown detector keys are named.
func TestConfigDetectionReferenceAlertingAPI(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short.key")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := writeConfig(t, `
kafka:
  start_offset: newest
detection:
  allowed_lateness: -1m
  detectors:
    vip: {severty: high}
    nosuch: {}
reference:
  source: ldap
  refresh_interval: 10ms
  hash_key_file: `+short+`
  facilities: {nyc: Mars/Olympus_Mons}
alerting:
  rules: [{name: "Bad Name"}]
api:
  listen: 127.0.0.1:9464
  care_slack_before: 12h
http:
  listen: 127.0.0.1:9464
`)
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"config", "validate", path}, &out, &errOut)
	if err == nil {
		t.Fatal("config validate accepted a bad file")
	}
	for _, key := range []string{"kafka.start_offset", "detection.detectors.vip.severty", "detection.detectors.nosuch",
		"reference.source", "reference.refresh_interval", "reference.hash_key_file", "reference.facilities.nyc",
		"alerting.rules[0]", "api.listen", "api.care_slack_before"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("not reported: %s\n%v", key, err)
		}
	}

	// A good file: the sections load, api facility zones default to the
	// reference's, and serve-only files need no hash key.
	path = writeConfig(t, `
detection:
  allowed_lateness: 5m
  detectors:
    vip: {severity: critical}
  allowlist:
    - {user_id: u1, detector: vip, reason: "security desk", owner: privacy-office, expires_at: 2030-01-01T00:00:00Z}
reference:
  source: clickhouse
  refresh_interval: 1m
  facilities: {nyc: America/New_York}
alerting:
  enabled: false
`)
	cfg, err := LoadConfig(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Detection.AllowedLateness != 5*time.Minute || len(cfg.Detection.Allowlist) != 1 ||
		cfg.Detection.Detectors["vip"].(interface{ IsEnabled() bool }) == nil {
		t.Errorf("detection: %+v", cfg.Detection)
	}
	if cfg.Reference.RefreshInterval != time.Minute || cfg.API.FacilityTimeZones["nyc"] != "America/New_York" || cfg.Alerting.Enabled {
		t.Errorf("reference/api/alerting: %+v %+v", cfg.Reference, cfg.API.FacilityTimeZones)
	}
}

func writeDefaultConfigFrom(w *bytes.Buffer, cfg Config) error {
	out, err := marshalConfig(cfg)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
