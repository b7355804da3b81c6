package detectors_test

import (
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/detectors"
)

func yamlNode(t *testing.T, src string) *yaml.Node {
	t.Helper()
	var n yaml.Node
	if err := yaml.Unmarshal([]byte(src), &n); err != nil {
		t.Fatal(err)
	}
	return &n
}

func TestRegistry(t *testing.T) {
	want := []string{"break_glass", "self_access", "family", "coworker", "vip", "deceased", "terminated", "volume", "bulk_export", "off_hours"}
	env := refFixture{}.env(t)
	var got []string
	for _, f := range detectors.Registry() {
		got = append(got, f.Name)
		if f.Description == "" || f.DefaultConfig == nil || f.New == nil {
			t.Errorf("%s: incomplete factory", f.Name)
			continue
		}
		cfg := f.DefaultConfig()
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s: default config invalid: %v", f.Name, err)
		}
		d, err := f.New(cfg, env)
		if err != nil || d == nil {
			t.Errorf("%s: New(default) = %v, %v", f.Name, d, err)
		}
		if _, err := f.New(wrongConfig{}, env); err == nil {
			t.Errorf("%s: New accepted a foreign config type", f.Name)
		}
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("registry = %v, want %v", got, want)
	}
}

type wrongConfig struct{}

func (wrongConfig) Validate() error { return nil }

func TestDecodeConfigsDefaults(t *testing.T) {
	for _, src := range []string{"", "~", "{}"} {
		cfgs, err := detectors.DecodeConfigs(yamlNode(t, src), detectors.Registry())
		if err != nil {
			t.Fatalf("%q: %v", src, err)
		}
		if len(cfgs) != len(detectors.Registry()) {
			t.Errorf("%q: %d configs", src, len(cfgs))
		}
	}
	if _, err := detectors.DecodeConfigs(nil, detectors.Registry()); err != nil {
		t.Errorf("nil node: %v", err)
	}
}

func TestDecodeConfigsOverrides(t *testing.T) {
	cfgs, err := detectors.DecodeConfigs(yamlNode(t, `
deceased:
  grace_period: 48h
  legitimate_categories: [billing_coding]
vip:
  enabled: false
  explained: {report: true, severity: low}
break_glass:
  placeholder_reasons: ["n/a"]
`), detectors.Registry())
	if err != nil {
		t.Fatal(err)
	}
	dc := cfgs["deceased"].(*detectors.DeceasedConfig)
	def := detectors.DefaultDeceasedConfig()
	if dc.GracePeriod != 48*time.Hour || len(dc.LegitimateCategories) != 1 || dc.Severity != def.Severity || !dc.Enabled || len(def.LegitimateCategories) < 2 {
		t.Errorf("deceased = %+v", dc)
	}
	vip := cfgs["vip"].(*detectors.VIPConfig)
	if vip.Enabled || !vip.Explained.Report || vip.Explained.Severity != "low" || vip.Severity != "high" {
		t.Errorf("vip = %+v", vip)
	}
}

// TestDecodeConfigsReportsEveryBadKey: one call names every problem.
func TestDecodeConfigsReportsEveryBadKey(t *testing.T) {
	_, err := detectors.DecodeConfigs(yamlNode(t, `
deceased:
  grace_period: -1h
  grace_perod: 2h
vip:
  explained:
    sevrity: low
  severity: urgent
nonsense:
  enabled: true
break_glass:
  min_reason_length: ten
terminated: [1, 2]
`), detectors.Registry())
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"detectors.deceased.grace_perod: line 4: unknown key",
		"detectors.vip.explained.sevrity: line 7: unknown key",
		"detectors.nonsense: line 9: unknown detector",
		"detectors.break_glass: line 12: cannot unmarshal",
		"detectors.terminated: line 13: must be a mapping",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// Validate errors appear once the keys decode.
	_, err = detectors.DecodeConfigs(yamlNode(t, "deceased: {grace_period: -1h}\nvip: {severity: urgent}\n"), detectors.Registry())
	for _, want := range []string{"detectors.deceased.grace_period: must be ≥ 0", `detectors.vip.severity: must be one of`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestConfigValidateBranches(t *testing.T) {
	tests := []struct {
		name string
		cfg  detectors.Config
		key  string
	}{
		{"break_glass min_reason_length", func() detectors.Config {
			c := detectors.DefaultBreakGlassConfig()
			c.MinReasonLength = -1
			return c
		}(), "min_reason_length"},
		{"break_glass peer_window_days", func() detectors.Config {
			c := detectors.DefaultBreakGlassConfig()
			c.PeerWindowDays = 0
			return c
		}(), "peer_window_days"},
		{"break_glass peer_factor", func() detectors.Config {
			c := detectors.DefaultBreakGlassConfig()
			c.PeerFactor = 0.5
			return c
		}(), "peer_factor"},
		{"coworker same_department_severity", func() detectors.Config {
			c := detectors.DefaultCoworkerConfig()
			c.SameDepartmentSeverity = "bad"
			return c
		}(), "same_department_severity"},
		{"family explained.severity", func() detectors.Config {
			c := detectors.DefaultFamilyConfig()
			c.Explained.Severity = ""
			return c
		}(), "explained.severity"},
		{"terminated grace_period", func() detectors.Config {
			c := detectors.DefaultTerminatedConfig()
			c.GracePeriod = -time.Second
			return c
		}(), "grace_period"},
		{"terminated failure_severity", func() detectors.Config {
			c := detectors.DefaultTerminatedConfig()
			c.FailureSeverity = "x"
			return c
		}(), "failure_severity"},
	}
	for _, tc := range tests {
		err := tc.cfg.Validate()
		if err == nil || !strings.HasPrefix(err.Error(), tc.key+":") {
			t.Errorf("%s: Validate() = %v, want an error keyed %s", tc.name, err, tc.key)
		}
	}
}

func TestParseEngineConfig(t *testing.T) {
	cfg, err := detectors.ParseEngineConfig(yamlNode(t, `
allowed_lateness: 5m
detectors:
  deceased: {grace_period: 24h}
allowlist:
  - {user_id: u1, detector: vip, reason: liaison, owner: privacy, expires_at: 2027-01-01}
`), detectors.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AllowedLateness != 5*time.Minute || cfg.MaxOpenFindings != 100000 || len(cfg.Allowlist) != 1 ||
		!cfg.Allowlist[0].ExpiresAt.Equal(mustTime(t, "2027-01-01T00:00:00Z")) ||
		cfg.Detectors["deceased"].(*detectors.DeceasedConfig).GracePeriod != 24*time.Hour {
		t.Errorf("cfg = %+v", cfg)
	}

	_, err = detectors.ParseEngineConfig(yamlNode(t, `
allowed_lateness: -1m
alowed_lateness: 1m
detectors:
  vip: {severity: huge}
allowlist:
  - {user_id: u1, detector: vipp, reason: r, owner: o, expires_at: 2027-01-01, ticket: 1}
  - {detector: vip}
`), detectors.Registry())
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"alowed_lateness: line 3: unknown key",
		"detectors.vip.severity: must be one of",
		"allowlist[0].ticket: line 7: unknown key",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	// With the keys fixed, validation reports the values.
	_, err = detectors.ParseEngineConfig(yamlNode(t, `
allowed_lateness: -1m
allowlist:
  - {user_id: u1, detector: vipp, reason: r, owner: o, expires_at: 2027-01-01}
  - {detector: vip}
`), detectors.Registry())
	for _, want := range []string{
		"allowed_lateness: must be ≥ 0",
		`allowlist[0].detector: unknown detector "vipp"`,
		"allowlist[1].owner: required",
		"allowlist[1].user_id: at least one of",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

// TestParseEngineConfigExplanation: the explanation section's mistakes are
// reported by path, together with the detectors'.
func TestParseEngineConfigExplanation(t *testing.T) {
	_, err := detectors.ParseEngineConfig(yamlNode(t, `
explanation:
  own_horizon: -1h
  breadth_min_days: 0
detectors:
  coworker: {chance: {days: 0}}
  deceased: {no_relationship_severity: nope}
`), detectors.Registry())
	for _, want := range []string{
		"explanation.own_horizon: must be ≥ 0",
		"explanation.breadth_min_days: must be 1–365",
		"detectors.coworker.chance.days: must be > 0",
		"detectors.deceased.no_relationship_severity: must be one of",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	cfg, err := detectors.ParseEngineConfig(yamlNode(t, "explanation: {own_horizon: 0s}\n"), detectors.Registry())
	if err != nil || cfg.Explanation.OwnHorizon != 0 || cfg.Explanation.DepartmentHorizon != 72*time.Hour {
		t.Errorf("own_horizon 0 keeps the other defaults: %+v, %v", cfg.Explanation, err)
	}
}
