package alerting_test

import (
	"bytes"
	"github.com/ehrwatch/ehrwatch/schemas"
	"os"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
)

func TestDefaultConfigIsValid(t *testing.T) {
	if err := schemas.UnderKey("alerting", alerting.DefaultConfig().Validate()); err != nil {
		t.Fatal(err)
	}
	// Enabling an output without its required keys names the key.
	c := alerting.DefaultConfig()
	c.Outputs.Webhook.Enabled = true
	if err := schemas.UnderKey("alerting", c.Validate()); err == nil || !strings.HasPrefix(err.Error(), "alerting.outputs.webhook.url:") {
		t.Fatalf("got %v", err)
	}
}

func TestConfigFileDecodesEveryKey(t *testing.T) {
	raw, err := os.ReadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := alerting.DefaultConfig()
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		t.Fatal(err)
	}
	if err := schemas.UnderKey("alerting", cfg.Validate()); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Rules) != 2 || cfg.Rules[1].Window != 12*time.Hour || cfg.Rules[1].Detectors[2] != "vip" {
		t.Errorf("rules: %+v", cfg.Rules)
	}
	if cfg.PatientSurge.Window != 30*time.Minute || cfg.UserRisk.HalfLife != 8*time.Hour || cfg.Limits.Lateness != 12*time.Hour {
		t.Errorf("durations: %+v %+v %+v", cfg.PatientSurge, cfg.UserRisk, cfg.Limits)
	}
	o := cfg.Outputs
	if !o.Alertmanager.Enabled || o.Alertmanager.Labels["team"] != "privacy" || o.Alertmanager.Delivery.MaxAttempts != 6 ||
		o.Webhook.Delivery.WhenFull != alerting.DropNewest || o.Slack.URLFile == "" || !o.Slack.Blocks ||
		o.Syslog.Facility != "authpriv" || !o.Syslog.TLS.Enabled || !o.Syslog.IncludePatientID {
		t.Errorf("outputs: %+v", o)
	}
	// Round trip: encoding and decoding again gives the same config.
	out, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	again := alerting.Config{}
	if err := yaml.Unmarshal(out, &again); err != nil {
		t.Fatal(err)
	}
	out2, _ := yaml.Marshal(again)
	if !bytes.Equal(out, out2) {
		t.Errorf("round trip changed the config:\n%s\n---\n%s", out, out2)
	}
}

func TestConfigUnknownKeyIsAnError(t *testing.T) {
	cfg := alerting.DefaultConfig()
	dec := yaml.NewDecoder(strings.NewReader("outputs:\n  webhook:\n    secrett: x\n"))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err == nil || !strings.Contains(err.Error(), "secrett") {
		t.Fatalf("got %v", err)
	}
}

func TestConfigValidateNamesTheKey(t *testing.T) {
	secret := "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	cases := []struct {
		name string
		edit func(c *alerting.Config)
		key  string
	}{
		{"api base url", func(c *alerting.Config) { c.APIBaseURL = "ehrwatch.local" }, "alerting.api_base_url"},
		{"rule name", func(c *alerting.Config) { c.Rules[0].Name = "User Detector" }, "alerting.rules[0].name"},
		{"reserved rule name", func(c *alerting.Config) { c.Rules[0].Name = "user_risk" }, "alerting.rules[0].name"},
		{"duplicate rule", func(c *alerting.Config) { c.Rules = append(c.Rules, c.Rules[0]) }, "alerting.rules[1].name"},
		{"no group_by", func(c *alerting.Config) { c.Rules[0].GroupBy = nil }, "alerting.rules[0].group_by"},
		{"bad group_by", func(c *alerting.Config) { c.Rules[0].GroupBy = []string{"user", "ward"} }, "alerting.rules[0].group_by[1]"},
		{"repeated group_by", func(c *alerting.Config) { c.Rules[0].GroupBy = []string{"user", "user"} }, "alerting.rules[0].group_by[1]"},
		{"group_by without user or patient", func(c *alerting.Config) { c.Rules[0].GroupBy = []string{"detector"} }, "alerting.rules[0].group_by"},
		{"empty detector", func(c *alerting.Config) { c.Rules[0].Detectors = []string{" "} }, "alerting.rules[0].detectors[0]"},
		{"rule severity", func(c *alerting.Config) { c.Rules[0].MinSeverity = "severe" }, "alerting.rules[0].min_severity"},
		{"min count", func(c *alerting.Config) { c.Rules[0].MinCount = -1 }, "alerting.rules[0].min_count"},
		{"window short", func(c *alerting.Config) { c.Rules[0].Window = time.Second }, "alerting.rules[0].window"},
		{"window long", func(c *alerting.Config) { c.Rules[0].Window = 800 * time.Hour }, "alerting.rules[0].window"},
		{"window fraction", func(c *alerting.Config) { c.Rules[0].Window = time.Hour + time.Millisecond }, "alerting.rules[0].window"},
		{"repeat", func(c *alerting.Config) { c.Rules[0].RepeatInterval = -time.Second }, "alerting.rules[0].repeat_interval"},
		{"risk window", func(c *alerting.Config) { c.UserRisk.Window = 0 }, "alerting.user_risk.window"},
		{"risk half life", func(c *alerting.Config) { c.UserRisk.HalfLife = -1 }, "alerting.user_risk.half_life"},
		{"risk threshold", func(c *alerting.Config) { c.UserRisk.Threshold = 0 }, "alerting.user_risk.threshold"},
		{"risk critical", func(c *alerting.Config) { c.UserRisk.CriticalThreshold = 10 }, "alerting.user_risk.critical_threshold"},
		{"risk severity", func(c *alerting.Config) { c.UserRisk.Severity = "" }, "alerting.user_risk.severity"},
		{"risk finding severity", func(c *alerting.Config) { c.UserRisk.MinFindingSeverity = "x" }, "alerting.user_risk.min_finding_severity"},
		{"risk finding cap", func(c *alerting.Config) { c.UserRisk.PerFindingCap = -1 }, "alerting.user_risk.per_finding_cap"},
		{"risk detector cap", func(c *alerting.Config) { c.UserRisk.PerDetectorCap = -1 }, "alerting.user_risk.per_detector_cap"},
		{"risk alert window", func(c *alerting.Config) { c.UserRisk.AlertWindow = 0 }, "alerting.user_risk.alert_window"},
		{"risk repeat", func(c *alerting.Config) { c.UserRisk.RepeatInterval = -1 }, "alerting.user_risk.repeat_interval"},
		{"surge window", func(c *alerting.Config) { c.PatientSurge.Window = 0 }, "alerting.patient_surge.window"},
		{"surge users", func(c *alerting.Config) { c.PatientSurge.MinUsers = 1 }, "alerting.patient_surge.min_users"},
		{"surge severity", func(c *alerting.Config) { c.PatientSurge.Severity = "x" }, "alerting.patient_surge.severity"},
		{"surge finding severity", func(c *alerting.Config) { c.PatientSurge.MinFindingSeverity = "x" }, "alerting.patient_surge.min_finding_severity"},
		{"surge facts", func(c *alerting.Config) { c.PatientSurge.ExplainedFacts = map[string]string{"": "x"} }, "alerting.patient_surge.explained_facts"},
		{"surge alert window", func(c *alerting.Config) { c.PatientSurge.AlertWindow = 0 }, "alerting.patient_surge.alert_window"},
		{"surge repeat", func(c *alerting.Config) { c.PatientSurge.RepeatInterval = -1 }, "alerting.patient_surge.repeat_interval"},
		{"lateness", func(c *alerting.Config) { c.Limits.Lateness = -1 }, "alerting.limits.lateness"},
		{"max groups", func(c *alerting.Config) { c.Limits.MaxGroups = 0 }, "alerting.limits.max_groups"},
		{"tracked < ids", func(c *alerting.Config) { c.Limits.MaxTrackedFindings = 10; c.Limits.MaxFindingIDs = 20 }, "alerting.limits.max_tracked_findings"},
		{"surge users cap", func(c *alerting.Config) { c.Limits.MaxSurgeUsersPerPatient = 3 }, "alerting.limits.max_surge_users_per_patient"},
		{"am url", func(c *alerting.Config) { c.Outputs.Alertmanager.Enabled = true }, "alerting.outputs.alertmanager.url"},
		{"am http", func(c *alerting.Config) {
			c.Outputs.Alertmanager.Enabled, c.Outputs.Alertmanager.URL = true, "http://am.example.org:9093"
		}, "alerting.outputs.alertmanager.url"},
		{"am userinfo", func(c *alerting.Config) {
			c.Outputs.Alertmanager.Enabled, c.Outputs.Alertmanager.URL = true, "https://u:p@am.example.org"
		}, "alerting.outputs.alertmanager.url"},
		{"am token twice", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.BearerToken, a.BearerTokenFile = true, "https://am", "t", "/f"
		}, "alerting.outputs.alertmanager.bearer_token"},
		{"am reserved label", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.Labels = true, "https://am", map[string]string{"severity": "x"}
		}, "alerting.outputs.alertmanager.labels"},
		{"am bad label", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.Labels = true, "https://am", map[string]string{"team-name": "x"}
		}, "alerting.outputs.alertmanager.labels"},
		{"am alertname", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.Alertname = true, "https://am", ""
		}, "alerting.outputs.alertmanager.alertname"},
		{"am queue", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.Delivery.QueueSize = true, "https://am", 0
		}, "alerting.outputs.alertmanager.delivery.queue_size"},
		{"am min severity", func(c *alerting.Config) {
			a := &c.Outputs.Alertmanager
			a.Enabled, a.URL, a.MinSeverity = true, "https://am", "urgent"
		}, "alerting.outputs.alertmanager.min_severity"},
		{"webhook secret missing", func(c *alerting.Config) {
			c.Outputs.Webhook.Enabled, c.Outputs.Webhook.URL = true, "https://hooks"
		}, "alerting.outputs.webhook.secret_file"},
		{"webhook secret twice", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.SecretFile = true, "https://hooks", secret, "/f"
		}, "alerting.outputs.webhook.secret"},
		{"webhook secret prefix", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret = true, "https://hooks", "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
		}, "alerting.outputs.webhook.secret"},
		{"webhook secret short", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret = true, "https://hooks", "whsec_c2hvcnQ="
		}, "alerting.outputs.webhook.secret"},
		{"webhook tls on http", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.TLS.Enabled = true, "http://127.0.0.1:1", secret, true
		}, "alerting.outputs.webhook.url"},
		{"webhook when_full", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.WhenFull = true, "https://hooks", secret, "block"
		}, "alerting.outputs.webhook.delivery.when_full"},
		{"webhook attempts", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.MaxAttempts = true, "https://hooks", secret, 0
		}, "alerting.outputs.webhook.delivery.max_attempts"},
		{"webhook backoff", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.InitialBackoff = true, "https://hooks", secret, 0
		}, "alerting.outputs.webhook.delivery.initial_backoff"},
		{"webhook max backoff", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.MaxBackoff = true, "https://hooks", secret, time.Millisecond
		}, "alerting.outputs.webhook.delivery.max_backoff"},
		{"webhook elapsed", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.MaxElapsed = true, "https://hooks", secret, 0
		}, "alerting.outputs.webhook.delivery.max_elapsed"},
		{"webhook timeout", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.Delivery.Timeout = true, "https://hooks", secret, 0
		}, "alerting.outputs.webhook.delivery.timeout"},
		{"webhook tls files", func(c *alerting.Config) {
			w := &c.Outputs.Webhook
			w.Enabled, w.URL, w.Secret, w.TLS.CAFile = true, "https://hooks", secret, "/ca.pem"
		}, "alerting.outputs.webhook.tls.enabled"},
		{"slack url and file", func(c *alerting.Config) {
			s := &c.Outputs.Slack
			s.Enabled, s.URL, s.URLFile = true, "https://hooks.slack.com/x", "/f"
		}, "alerting.outputs.slack.url"},
		{"slack scheme", func(c *alerting.Config) {
			c.Outputs.Slack.Enabled, c.Outputs.Slack.URL = true, "ftp://hooks.slack.com/x"
		}, "alerting.outputs.slack.url"},
		{"syslog address", func(c *alerting.Config) {
			c.Outputs.Syslog.Enabled, c.Outputs.Syslog.Address = true, "siem"
		}, "alerting.outputs.syslog.address"},
		{"syslog facility", func(c *alerting.Config) {
			s := &c.Outputs.Syslog
			s.Enabled, s.Address, s.Facility = true, "siem:514", "local9"
		}, "alerting.outputs.syslog.facility"},
		{"syslog hostname", func(c *alerting.Config) {
			s := &c.Outputs.Syslog
			s.Enabled, s.Address, s.Hostname = true, "siem:514", "my host"
		}, "alerting.outputs.syslog.hostname"},
		{"syslog app name", func(c *alerting.Config) {
			s := &c.Outputs.Syslog
			s.Enabled, s.Address, s.AppName = true, "siem:514", ""
		}, "alerting.outputs.syslog.app_name"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := alerting.DefaultConfig()
			tc.edit(&c)
			err := schemas.UnderKey("alerting", c.Validate())
			if err == nil {
				t.Fatalf("accepted")
			}
			if !strings.HasPrefix(err.Error(), tc.key) {
				t.Fatalf("error %q does not start with %q", err, tc.key)
			}
			if strings.Contains(err.Error(), "LaLaSw") || strings.Contains(err.Error(), "u:p@") {
				t.Fatalf("error echoes a secret: %q", err)
			}
		})
	}
}

func TestDisabledConfigSkipsValidation(t *testing.T) {
	c := alerting.DefaultConfig()
	c.Enabled = false
	c.Rules[0].Window = 0
	if err := schemas.UnderKey("alerting", c.Validate()); err != nil {
		t.Fatal(err)
	}
}
