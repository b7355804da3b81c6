package ingest

import (
	"github.com/ehrwatch/ehrwatch/schemas"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDefaultConfigsAreValid(t *testing.T) {
	if err := schemas.UnderKey("pipeline", DefaultConfig().Validate()); err != nil {
		t.Errorf("DefaultConfig: %v", err)
	}
	if err := schemas.UnderKey("kafka", DefaultKafkaConfig().Validate()); err != nil {
		t.Errorf("DefaultKafkaConfig: %v", err)
	}
	if err := schemas.UnderKey("pipeline", DefaultConfig().ValidateWith(DefaultKafkaConfig())); err != nil {
		t.Errorf("defaults together: %v", err)
	}
}

func TestKafkaConfigValidateNamesEveryBadKey(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*KafkaConfig)
		keys   []string
	}{
		{"no brokers", func(c *KafkaConfig) { c.Brokers = nil }, []string{"kafka.brokers"}},
		{"bad broker", func(c *KafkaConfig) { c.Brokers = []string{"a:1", "b"} }, []string{"kafka.brokers[1]"}},
		{"no group", func(c *KafkaConfig) { c.GroupID = " " }, []string{"kafka.group_id"}},
		{"bad and duplicate topics", func(c *KafkaConfig) { c.Topics = []string{"a b", "x", "x"} }, []string{"kafka.topics[0]", "kafka.topics[2]"}},
		{"dlq is a source", func(c *KafkaConfig) { c.DLQTopic = c.Topics[0] }, []string{"kafka.dlq_topic"}},
		{"start offset", func(c *KafkaConfig) { c.StartOffset = "earliest" }, []string{"kafka.start_offset"}},
		{"fetch sizes", func(c *KafkaConfig) { c.MinBytes, c.MaxBytes = 0, 10 }, []string{"kafka.min_bytes", "kafka.max_bytes"}},
		{"timeouts", func(c *KafkaConfig) {
			c.SessionTimeout, c.HeartbeatInterval, c.RebalanceTimeout = 6*time.Second, 3*time.Second, 0
		}, []string{"kafka.heartbeat_interval", "kafka.rebalance_timeout"}},
		{"sasl without mechanism", func(c *KafkaConfig) { c.SASL.Username = "u" }, []string{"kafka.sasl.mechanism"}},
		{"sasl incomplete", func(c *KafkaConfig) { c.SASL.Mechanism = SASLSCRAMSHA256 }, []string{"kafka.sasl.username", "kafka.sasl.password_file"}},
		{"sasl both passwords", func(c *KafkaConfig) {
			c.SASL = SASLConfig{Mechanism: SASLPlain, Username: "u", Password: "p", PasswordFile: "f"}
		}, []string{"kafka.sasl.password, kafka.sasl.password_file"}},
		{"tls files without tls", func(c *KafkaConfig) { c.TLS.CAFile = "ca.pem" }, []string{"kafka.tls.enabled"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := DefaultKafkaConfig()
			tc.modify(&c)
			err := schemas.UnderKey("kafka", c.Validate())
			if err == nil {
				t.Fatal("no error")
			}
			for _, k := range tc.keys {
				if !strings.Contains(err.Error(), k+":") {
					t.Errorf("error does not name %s:\n%v", k, err)
				}
			}
		})
	}
}

func TestConfigValidateNamesEveryBadKey(t *testing.T) {
	c := Config{BatchMaxWait: time.Microsecond, DrainTimeout: time.Minute, ShutdownTimeout: time.Second,
		HandoffLinger: -time.Millisecond, SnapshotEvents: -1, SnapshotInterval: time.Millisecond, WarmupHorizon: time.Second,
		Retry: RetryConfig{InitialInterval: time.Second, MaxInterval: time.Millisecond, Multiplier: 0.5, Jitter: -1}}
	err := schemas.UnderKey("pipeline", c.Validate())
	if err == nil {
		t.Fatal("no error")
	}
	for _, k := range []string{"batch_max_rows", "batch_max_wait", "queue_size", "commit_interval", "lag_interval",
		"drain_timeout", "retry.max_interval", "retry.multiplier", "retry.jitter",
		"snapshot_events", "snapshot_interval", "snapshot_max_bytes", "handoff_linger", "warmup_horizon"} {
		if !strings.Contains(err.Error(), "pipeline."+k+":") {
			t.Errorf("error does not name pipeline.%s:\n%v", k, err)
		}
	}
	k := DefaultKafkaConfig()
	k.SessionTimeout = 6 * time.Second
	if err := schemas.UnderKey("pipeline", DefaultConfig().ValidateWith(k)); err == nil || !strings.Contains(err.Error(), "kafka.session_timeout") {
		t.Errorf("a drain timeout above the session timeout is not reported: %v", err)
	}
}

func TestKafkaClientsCarryTLSAndSASL(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for mech, name := range map[string]string{SASLPlain: "PLAIN", SASLSCRAMSHA256: "SCRAM-SHA-256", SASLSCRAMSHA512: "SCRAM-SHA-512"} {
		c := DefaultKafkaConfig()
		c.TLS.Enabled = true
		c.TLS.ServerName = "kafka.example"
		c.SASL = SASLConfig{Mechanism: mech, Username: "ehrwatch", PasswordFile: pw}
		if err := schemas.UnderKey("kafka", c.Validate()); err != nil {
			t.Fatalf("%s: %v", mech, err)
		}
		d, err := c.Dialer()
		if err != nil {
			t.Fatalf("%s: Dialer: %v", mech, err)
		}
		tr, err := c.Transport()
		if err != nil {
			t.Fatalf("%s: Transport: %v", mech, err)
		}
		if d.SASLMechanism == nil || d.SASLMechanism.Name() != name || tr.SASL == nil || tr.SASL.Name() != name {
			t.Errorf("%s: mechanisms %v / %v, want %s", mech, d.SASLMechanism, tr.SASL, name)
		}
		if d.TLS == nil || tr.TLS == nil || d.TLS.ServerName != "kafka.example" || tr.TLS.ServerName != "kafka.example" {
			t.Errorf("%s: TLS not configured", mech)
		}
	}
	c := DefaultKafkaConfig()
	c.SASL = SASLConfig{Mechanism: SASLPlain, Username: "u", PasswordFile: filepath.Join(dir, "missing")}
	if _, err := c.Dialer(); err == nil || !strings.Contains(err.Error(), "kafka.sasl.password_file") {
		t.Errorf("missing password file: %v", err)
	}
	if _, err := c.Transport(); err == nil || !strings.Contains(err.Error(), "kafka.sasl.password_file") {
		t.Errorf("missing password file (transport): %v", err)
	}
}
