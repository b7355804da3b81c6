package alerting

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Config is the `alerting` section: how findings become alerts and where
// alerts are sent. Zero durations and counts are errors unless a field's
// comment says what zero means.
type Config struct {
	// Enabled turns alerting on. When false, New returns a Manager whose
	// Observe does nothing.
	Enabled bool `yaml:"enabled"`
	// APIBaseURL is the root of ehrwatch's API as analysts reach it
	// (https://ehrwatch.example.org). Notifications link to
	// {api_base_url}/api/v1/alerts/{alert_id}. Empty: no links.
	APIBaseURL string `yaml:"api_base_url"`
	// Rules group related findings into alerts. Each finding is offered to
	// every rule; a rule it matches adds it to that rule's group.
	Rules []RuleConfig `yaml:"rules"`
	// UserRisk raises a user_risk alert when one user's findings add up.
	UserRisk UserRiskConfig `yaml:"user_risk"`
	// PatientSurge raises a patient_surge ("dynamic VIP") alert when many
	// unrelated users open one patient's record in a short time.
	PatientSurge PatientSurgeConfig `yaml:"patient_surge"`
	// Limits bound the in-memory state.
	Limits LimitsConfig `yaml:"limits"`
	// Outputs are the notification channels; each is optional.
	Outputs OutputsConfig `yaml:"outputs"`
	// Lifecycle keeps notified alerts firing until triage closes them and
	// checks that no finding at or above a rule's threshold lacks an
	// alert. It needs ClickHouse (ehrwatch run).
	Lifecycle LifecycleConfig `yaml:"lifecycle"`
}

// LifecycleConfig is the lifecycle loop (see the package documentation,
// "Lifecycle").
type LifecycleConfig struct {
	// Enabled runs the loop.
	Enabled bool `yaml:"enabled"`
	// Interval is how often the loop runs: it re-sends every open alert to
	// Alertmanager with endsAt = now + 3 × interval, resolves the alerts
	// closed in triage (Alertmanager endsAt = now; webhook alert.resolved)
	// and recomputes the invariant. Keep it well inside Alertmanager's
	// resolve_timeout.
	Interval time.Duration `yaml:"interval"`
	// InvariantLookback bounds the findings the invariant checks, by when
	// they were stored.
	InvariantLookback time.Duration `yaml:"invariant_lookback"`
	// InvariantGrace leaves out findings stored this recently: alerting
	// sees a batch's findings right after they are stored, so only a
	// finding older than this without an alert is a violation.
	InvariantGrace time.Duration `yaml:"invariant_grace"`
}

// Group-by dimensions of a rule.
const (
	GroupByUser     = "user"
	GroupByDetector = "detector"
	GroupByPatient  = "patient"
	GroupByFacility = "facility"
)

// Names of the built-in rules; a configured rule may not use them.
const (
	RuleUserRisk     = "user_risk"
	RulePatientSurge = "patient_surge"
)

// RuleConfig groups findings that share the group_by values and fall in
// the same window into one alert.
type RuleConfig struct {
	// Name identifies the rule in alert ids, the alerts table and metric
	// labels: lower-case letters, digits and underscores.
	Name string `yaml:"name"`
	// GroupBy lists the dimensions that must match: user, detector,
	// patient, facility. It must contain user or patient.
	GroupBy []string `yaml:"group_by"`
	// Detectors limits the rule to these detectors. Empty: all detectors.
	Detectors []string `yaml:"detectors"`
	// MinSeverity is the lowest finding severity the rule takes; lower
	// findings never join its groups.
	MinSeverity schemas.Severity `yaml:"min_severity"`
	// MinCount is how many findings a group needs before it raises an
	// alert. 0 means 1.
	MinCount int `yaml:"min_count"`
	// Window is the length of the tumbling, epoch-aligned windows in
	// finding time (24h: one alert per group per UTC day).
	Window time.Duration `yaml:"window"`
	// RepeatInterval is how long, in finding time, an alert stays quiet
	// after a notification: later findings update the stored alert but are
	// re-notified only once this much time has passed since the last
	// notification, or at once when the severity rises. 0: never re-notify
	// except on a severity rise.
	RepeatInterval time.Duration `yaml:"repeat_interval"`
}

// UserRiskConfig accumulates each user's finding scores over a rolling
// window and raises a user_risk alert over a threshold.
type UserRiskConfig struct {
	Enabled bool `yaml:"enabled"`
	// Window is the rolling window the scores are summed over.
	Window time.Duration `yaml:"window"`
	// HalfLife decays a finding's contribution: it counts half after one
	// half-life. 0: no decay.
	HalfLife time.Duration `yaml:"half_life"`
	// Threshold is the accumulated risk that raises the alert.
	Threshold float64 `yaml:"threshold"`
	// CriticalThreshold raises the alert's severity to critical. 0: off.
	CriticalThreshold float64 `yaml:"critical_threshold"`
	// Severity of the alert below CriticalThreshold.
	Severity schemas.Severity `yaml:"severity"`
	// MinFindingSeverity is the lowest finding severity that contributes.
	MinFindingSeverity schemas.Severity `yaml:"min_finding_severity"`
	// PerFindingCap caps one finding's contribution (finding scores are
	// 0–100). 0: no cap.
	PerFindingCap float64 `yaml:"per_finding_cap"`
	// PerDetectorCap caps what one detector contributes in the window, so
	// one noisy detector cannot raise a risk alert alone (the rules already
	// group repeats of one detector). 0: no cap.
	PerDetectorCap float64 `yaml:"per_detector_cap"`
	// AlertWindow buckets risk alerts: one alert id per user per tumbling
	// window of finding time; crossings within it update that alert.
	AlertWindow time.Duration `yaml:"alert_window"`
	// RepeatInterval as for rules.
	RepeatInterval time.Duration `yaml:"repeat_interval"`
}

// PatientSurgeConfig raises a patient_surge alert when MinUsers distinct
// users, none of whose access a care relationship explains, have findings
// on one patient within Window.
type PatientSurgeConfig struct {
	Enabled bool `yaml:"enabled"`
	// Window is the sliding window, in finding time.
	Window time.Duration `yaml:"window"`
	// MinUsers is how many distinct unrelated users raise the alert.
	MinUsers int `yaml:"min_users"`
	// Severity of the alert.
	Severity schemas.Severity `yaml:"severity"`
	// MinFindingSeverity is the lowest finding severity that counts.
	MinFindingSeverity schemas.Severity `yaml:"min_finding_severity"`
	// ExplainedFacts mark a finding as explained by a care relationship
	// when any of these evidence facts has the given value (the detectors
	// write care=explained). Explained findings never count.
	ExplainedFacts map[string]string `yaml:"explained_facts"`
	// AlertWindow buckets surge alerts: one alert id per patient per
	// tumbling window of finding time.
	AlertWindow time.Duration `yaml:"alert_window"`
	// RepeatInterval as for rules.
	RepeatInterval time.Duration `yaml:"repeat_interval"`
}

// LimitsConfig bounds the in-memory state. Groups, risk users and surge
// patients expire by finding time (their window end plus Lateness behind
// the newest finding seen); the caps evict the least recently updated
// entries first when a burst outruns expiry.
type LimitsConfig struct {
	// Lateness is how long state is kept past its window for late
	// findings when alerting has no StateStore (the demo, dry runs); a
	// later finding is counted as too_late. With ClickHouse (ehrwatch run)
	// the state is persisted and no late finding is dropped.
	Lateness time.Duration `yaml:"lateness"`
	// MaxGroups caps open groups over all rules (including user_risk and
	// patient_surge alerts).
	MaxGroups int `yaml:"max_groups"`
	// MaxFindingIDs caps the finding ids stored with an alert (the earliest
	// ones); finding_count keeps counting.
	MaxFindingIDs int `yaml:"max_finding_ids"`
	// MaxTrackedFindings caps the finding ids a group remembers to count
	// each finding once when findings are re-observed.
	MaxTrackedFindings int `yaml:"max_tracked_findings"`
	// MaxTrackedEntities caps the distinct patients and users a group
	// remembers for its counts ("on 3 patients").
	MaxTrackedEntities int `yaml:"max_tracked_entities"`
	// MaxRiskUsers caps users with risk state.
	MaxRiskUsers int `yaml:"max_risk_users"`
	// MaxRiskEntriesPerUser caps the findings kept per user for risk; the
	// oldest go first.
	MaxRiskEntriesPerUser int `yaml:"max_risk_entries_per_user"`
	// MaxSurgePatients caps patients with surge state.
	MaxSurgePatients int `yaml:"max_surge_patients"`
	// MaxSurgeUsersPerPatient caps users tracked per patient.
	MaxSurgeUsersPerPatient int `yaml:"max_surge_users_per_patient"`
}

// OutputsConfig holds one optional configuration per output kind. Every
// output has these keys:
//
//   - enabled: send to this output (default false).
//   - min_severity: the lowest alert severity sent; empty sends all.
//   - include_patient_id: send patient ids and the detectors' full
//     explanations, which name patients by id. Default false: the output
//     gets a summary built from user ids, detectors and counts only, plus
//     the link to the alert in ehrwatch's API. Labels (Alertmanager) never
//     carry patient data either way.
//   - delivery: the queue and retry policy (DeliveryConfig).
//
// The HTTP outputs also have tls (credentials.TLS, for https URLs; off
// means the system roots) and allow_http (permit plain http to a host
// other than loopback).
type OutputsConfig struct {
	Alertmanager AlertmanagerConfig `yaml:"alertmanager"`
	Webhook      WebhookConfig      `yaml:"webhook"`
	Slack        SlackConfig        `yaml:"slack"`
	Syslog       SyslogConfig       `yaml:"syslog"`
}

// Queue-full policies.
const (
	DropOldest = "drop_oldest"
	DropNewest = "drop_newest"
)

// DeliveryConfig is an output's queue and retry policy. Delivery never
// blocks Observe: alerts go to a bounded queue drained by one worker.
type DeliveryConfig struct {
	// QueueSize bounds the alerts waiting for this output.
	QueueSize int `yaml:"queue_size"`
	// WhenFull is drop_oldest (default: the newest alerts are the ones an
	// analyst needs next) or drop_newest. Either way the dropped alert is
	// counted and dead-lettered with error class queue_full; it is still in
	// the alerts table.
	WhenFull string `yaml:"when_full"`
	// MaxAttempts bounds delivery attempts per alert, the first included.
	MaxAttempts int `yaml:"max_attempts"`
	// InitialBackoff is the wait before the first retry; it doubles per
	// retry up to MaxBackoff, with ±50% jitter.
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
	// MaxElapsed gives up once this much wall time has passed since the
	// first attempt.
	MaxElapsed time.Duration `yaml:"max_elapsed"`
	// Timeout bounds one attempt.
	Timeout time.Duration `yaml:"timeout"`
}

// outputCommon are the settings every output has.
type outputCommon struct {
	Enabled          bool
	MinSeverity      schemas.Severity
	IncludePatientID bool
	Delivery         DeliveryConfig
}

// httpCommon are the settings of the HTTP outputs.
type httpCommon struct {
	TLS       credentials.TLS
	AllowHTTP bool
}

func (a AlertmanagerConfig) common() outputCommon {
	return outputCommon{a.Enabled, a.MinSeverity, a.IncludePatientID, a.Delivery}
}
func (w WebhookConfig) common() outputCommon {
	return outputCommon{w.Enabled, w.MinSeverity, w.IncludePatientID, w.Delivery}
}
func (s SlackConfig) common() outputCommon {
	return outputCommon{s.Enabled, s.MinSeverity, s.IncludePatientID, s.Delivery}
}
func (s SyslogConfig) common() outputCommon {
	return outputCommon{s.Enabled, s.MinSeverity, s.IncludePatientID, s.Delivery}
}

// AlertmanagerConfig posts alerts to a Prometheus Alertmanager (API v2).
type AlertmanagerConfig struct {
	Enabled          bool             `yaml:"enabled"`
	MinSeverity      schemas.Severity `yaml:"min_severity"`
	IncludePatientID bool             `yaml:"include_patient_id"`
	Delivery         DeliveryConfig   `yaml:"delivery"`
	TLS              credentials.TLS  `yaml:"tls"`
	AllowHTTP        bool             `yaml:"allow_http"`
	// URL is the Alertmanager base URL (http://alertmanager:9093); alerts go
	// to {url}/api/v2/alerts.
	URL string `yaml:"url"`
	// BearerToken or BearerTokenFile authenticates to a proxy in front.
	BearerToken     string `yaml:"bearer_token"`
	BearerTokenFile string `yaml:"bearer_token_file"`
	// Alertname is the alertname label.
	Alertname string `yaml:"alertname"`
	// Labels are added to every alert (team: privacy). They may not
	// override the labels ehrwatch sets.
	Labels map[string]string `yaml:"labels"`
	// ResolveAfter sets endsAt to the send time plus this. 0: no endsAt,
	// so Alertmanager's resolve_timeout applies. Used only when the
	// lifecycle loop is off; with it on, endsAt is always the send time
	// plus 3 × lifecycle.interval and alerts are resolved by triage.
	ResolveAfter time.Duration `yaml:"resolve_after"`
}

// WebhookConfig posts alerts to a generic endpoint, signed per the
// Standard Webhooks specification.
type WebhookConfig struct {
	Enabled          bool             `yaml:"enabled"`
	MinSeverity      schemas.Severity `yaml:"min_severity"`
	IncludePatientID bool             `yaml:"include_patient_id"`
	Delivery         DeliveryConfig   `yaml:"delivery"`
	TLS              credentials.TLS  `yaml:"tls"`
	AllowHTTP        bool             `yaml:"allow_http"`
	// URL receives the POSTs.
	URL string `yaml:"url"`
	// Secret or SecretFile hold one or more (whitespace-separated, for
	// rotation) signing secrets, each "whsec_" + base64 of 24–64 bytes.
	Secret     string `yaml:"secret"`
	SecretFile string `yaml:"secret_file"`
}

// SlackConfig posts to a Slack-compatible incoming webhook.
type SlackConfig struct {
	Enabled          bool             `yaml:"enabled"`
	MinSeverity      schemas.Severity `yaml:"min_severity"`
	IncludePatientID bool             `yaml:"include_patient_id"`
	Delivery         DeliveryConfig   `yaml:"delivery"`
	TLS              credentials.TLS  `yaml:"tls"`
	AllowHTTP        bool             `yaml:"allow_http"`
	// URL or URLFile: the incoming-webhook URL, which is itself a secret.
	URL     string `yaml:"url"`
	URLFile string `yaml:"url_file"`
	// Blocks adds Block Kit blocks carrying the same text.
	Blocks bool `yaml:"blocks"`
}

// SyslogConfig sends CEF over RFC 5424 syslog on TCP (RFC 6587 octet
// counting), optionally TLS.
type SyslogConfig struct {
	Enabled          bool             `yaml:"enabled"`
	MinSeverity      schemas.Severity `yaml:"min_severity"`
	IncludePatientID bool             `yaml:"include_patient_id"`
	Delivery         DeliveryConfig   `yaml:"delivery"`
	// Address is host:port of the collector.
	Address string          `yaml:"address"`
	TLS     credentials.TLS `yaml:"tls"`
	// Facility is the syslog facility name (local0 … local7, auth,
	// authpriv, security, daemon, user).
	Facility string `yaml:"facility"`
	// Hostname is the HOSTNAME field. Empty: the machine's host name.
	Hostname string `yaml:"hostname"`
	// AppName is the APP-NAME field.
	AppName string `yaml:"app_name"`
}

// DefaultConfig returns the defaults: alerting on, one rule grouping a
// user's findings of one detector per UTC day, user risk and patient surge
// on, no outputs.
func DefaultConfig() Config {
	d := DefaultDeliveryConfig()
	return Config{
		Enabled: true,
		Rules: []RuleConfig{{
			Name:           "user_detector",
			GroupBy:        []string{GroupByUser, GroupByDetector},
			MinSeverity:    schemas.SeverityMedium,
			MinCount:       1,
			Window:         24 * time.Hour,
			RepeatInterval: 6 * time.Hour,
		}},
		UserRisk: UserRiskConfig{
			Enabled:            true,
			Window:             24 * time.Hour,
			HalfLife:           12 * time.Hour,
			Threshold:          150,
			CriticalThreshold:  300,
			Severity:           schemas.SeverityHigh,
			MinFindingSeverity: schemas.SeverityLow,
			PerFindingCap:      100,
			PerDetectorCap:     100,
			AlertWindow:        24 * time.Hour,
			RepeatInterval:     12 * time.Hour,
		},
		PatientSurge: PatientSurgeConfig{
			Enabled:            true,
			Window:             time.Hour,
			MinUsers:           5,
			Severity:           schemas.SeverityHigh,
			MinFindingSeverity: schemas.SeverityInfo,
			ExplainedFacts:     map[string]string{"care": "explained"},
			AlertWindow:        24 * time.Hour,
			RepeatInterval:     6 * time.Hour,
		},
		Limits: LimitsConfig{
			Lateness:                24 * time.Hour,
			MaxGroups:               50_000,
			MaxFindingIDs:           100,
			MaxTrackedFindings:      500,
			MaxTrackedEntities:      200,
			MaxRiskUsers:            100_000,
			MaxRiskEntriesPerUser:   100,
			MaxSurgePatients:        50_000,
			MaxSurgeUsersPerPatient: 200,
		},
		Lifecycle: LifecycleConfig{
			Enabled:           true,
			Interval:          time.Minute,
			InvariantLookback: 7 * 24 * time.Hour,
			InvariantGrace:    5 * time.Minute,
		},
		Outputs: OutputsConfig{
			Alertmanager: AlertmanagerConfig{Delivery: d, Alertname: "EhrwatchAlert"},
			Webhook:      WebhookConfig{Delivery: d},
			Slack:        SlackConfig{Delivery: d},
			Syslog:       SyslogConfig{Delivery: d, Facility: "local4", AppName: "ehrwatch"},
		},
	}
}

// DefaultDeliveryConfig: 1000 queued alerts, drop-oldest, 8 attempts from
// 1s doubling to 5m, giving up after 1h; 15s per attempt (the Standard
// Webhooks recommendation).
func DefaultDeliveryConfig() DeliveryConfig {
	return DeliveryConfig{
		QueueSize:      1000,
		WhenFull:       DropOldest,
		MaxAttempts:    8,
		InitialBackoff: time.Second,
		MaxBackoff:     5 * time.Minute,
		MaxElapsed:     time.Hour,
		Timeout:        15 * time.Second,
	}
}

var (
	ruleNameRe  = regexp.MustCompile(`^[a-z][a-z0-9_]{0,62}$`)
	labelNameRe = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// Validate reports every bad setting, each naming its key relative to the
// alerting section.
func (c Config) Validate() error {
	var errs []error
	if !c.Enabled {
		return nil
	}
	if c.APIBaseURL != "" {
		u, err := url.Parse(c.APIBaseURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			errs = append(errs, schemas.FieldErrorf("api_base_url", "want an absolute http(s) URL"))
		}
	}
	seen := map[string]bool{}
	for i, r := range c.Rules {
		key := fmt.Sprintf("rules[%d]", i)
		errs = append(errs, schemas.UnderKey(key, r.validate()))
		if seen[r.Name] {
			errs = append(errs, schemas.FieldErrorf(key+".name", "duplicate rule name %q", r.Name))
		}
		seen[r.Name] = true
	}
	errs = append(errs, schemas.UnderKey("user_risk", c.UserRisk.validate()))
	errs = append(errs, schemas.UnderKey("patient_surge", c.PatientSurge.validate()))
	errs = append(errs, schemas.UnderKey("limits", c.Limits.validate()))
	if l := c.Lifecycle; l.Enabled {
		if l.Interval < 100*time.Millisecond {
			errs = append(errs, schemas.FieldErrorf("lifecycle.interval", "must be ≥ 100ms (got %s)", l.Interval))
		}
		if l.InvariantLookback <= 0 {
			errs = append(errs, schemas.FieldErrorf("lifecycle.invariant_lookback", "must be > 0"))
		}
		if l.InvariantGrace < 0 {
			errs = append(errs, schemas.FieldErrorf("lifecycle.invariant_grace", "must be ≥ 0"))
		}
	}
	if c.PatientSurge.Enabled && c.Limits.MaxSurgeUsersPerPatient < c.PatientSurge.MinUsers {
		errs = append(errs, schemas.FieldErrorf("limits.max_surge_users_per_patient", "must be ≥ patient_surge.min_users (%d)", c.PatientSurge.MinUsers))
	}
	errs = append(errs, schemas.UnderKey("outputs", c.Outputs.validate()))
	return errors.Join(errs...)
}

func (r RuleConfig) validate() error {
	var errs []error
	if !ruleNameRe.MatchString(r.Name) {
		errs = append(errs, schemas.FieldErrorf("name", "want lower-case letters, digits and underscores, starting with a letter (got %q)", r.Name))
	}
	if r.Name == RuleUserRisk || r.Name == RulePatientSurge {
		errs = append(errs, schemas.FieldErrorf("name", "%q is reserved for the built-in rule", r.Name))
	}
	if len(r.GroupBy) == 0 {
		errs = append(errs, schemas.FieldErrorf("group_by", "required (user, detector, patient, facility)"))
	}
	dims := map[string]bool{}
	for j, g := range r.GroupBy {
		switch g {
		case GroupByUser, GroupByDetector, GroupByPatient, GroupByFacility:
		default:
			errs = append(errs, schemas.FieldErrorf(fmt.Sprintf("group_by[%d]", j), "want user, detector, patient or facility (got %q)", g))
		}
		if dims[g] {
			errs = append(errs, schemas.FieldErrorf(fmt.Sprintf("group_by[%d]", j), "%q listed twice", g))
		}
		dims[g] = true
	}
	if !dims[GroupByUser] && !dims[GroupByPatient] {
		errs = append(errs, schemas.FieldErrorf("group_by", "must contain user or patient"))
	}
	for j, d := range r.Detectors {
		if strings.TrimSpace(d) == "" {
			errs = append(errs, schemas.FieldErrorf(fmt.Sprintf("detectors[%d]", j), "empty"))
		}
	}
	if !r.MinSeverity.Valid() {
		errs = append(errs, schemas.FieldErrorf("min_severity", "want info, low, medium, high or critical (got %q)", r.MinSeverity))
	}
	if r.MinCount < 0 {
		errs = append(errs, schemas.FieldErrorf("min_count", "must be ≥ 0"))
	}
	errs = append(errs, windowOK("window", r.Window))
	if r.RepeatInterval < 0 {
		errs = append(errs, schemas.FieldErrorf("repeat_interval", "must be ≥ 0"))
	}
	return errors.Join(errs...)
}

func windowOK(key string, d time.Duration) error {
	if d < time.Minute {
		return schemas.FieldErrorf(key, "must be ≥ 1m (got %s)", d)
	}
	if d > 31*24*time.Hour {
		return schemas.FieldErrorf(key, "must be ≤ 744h (got %s)", d)
	}
	if d%time.Second != 0 {
		return schemas.FieldErrorf(key, "must be whole seconds (got %s)", d)
	}
	return nil
}

func (u UserRiskConfig) validate() error {
	var errs []error
	if !u.Enabled {
		return nil
	}
	errs = append(errs, windowOK("window", u.Window))
	if u.HalfLife < 0 {
		errs = append(errs, schemas.FieldErrorf("half_life", "must be ≥ 0"))
	}
	if !(u.Threshold > 0) || math.IsInf(u.Threshold, 0) {
		errs = append(errs, schemas.FieldErrorf("threshold", "must be > 0"))
	}
	if u.CriticalThreshold != 0 && (u.CriticalThreshold < u.Threshold || math.IsInf(u.CriticalThreshold, 0)) {
		errs = append(errs, schemas.FieldErrorf("critical_threshold", "must be 0 (off) or ≥ threshold (%g)", u.Threshold))
	}
	if !u.Severity.Valid() {
		errs = append(errs, schemas.FieldErrorf("severity", "want info, low, medium, high or critical (got %q)", u.Severity))
	}
	if !u.MinFindingSeverity.Valid() {
		errs = append(errs, schemas.FieldErrorf("min_finding_severity", "want info, low, medium, high or critical (got %q)", u.MinFindingSeverity))
	}
	if u.PerFindingCap < 0 || math.IsNaN(u.PerFindingCap) {
		errs = append(errs, schemas.FieldErrorf("per_finding_cap", "must be ≥ 0"))
	}
	if u.PerDetectorCap < 0 || math.IsNaN(u.PerDetectorCap) {
		errs = append(errs, schemas.FieldErrorf("per_detector_cap", "must be ≥ 0"))
	}
	errs = append(errs, windowOK("alert_window", u.AlertWindow))
	if u.RepeatInterval < 0 {
		errs = append(errs, schemas.FieldErrorf("repeat_interval", "must be ≥ 0"))
	}
	return errors.Join(errs...)
}

func (p PatientSurgeConfig) validate() error {
	var errs []error
	if !p.Enabled {
		return nil
	}
	errs = append(errs, windowOK("window", p.Window))
	if p.MinUsers < 2 {
		errs = append(errs, schemas.FieldErrorf("min_users", "must be ≥ 2"))
	}
	if !p.Severity.Valid() {
		errs = append(errs, schemas.FieldErrorf("severity", "want info, low, medium, high or critical (got %q)", p.Severity))
	}
	if !p.MinFindingSeverity.Valid() {
		errs = append(errs, schemas.FieldErrorf("min_finding_severity", "want info, low, medium, high or critical (got %q)", p.MinFindingSeverity))
	}
	for k := range p.ExplainedFacts {
		if strings.TrimSpace(k) == "" {
			errs = append(errs, schemas.FieldErrorf("explained_facts", "empty fact name"))
		}
	}
	errs = append(errs, windowOK("alert_window", p.AlertWindow))
	if p.RepeatInterval < 0 {
		errs = append(errs, schemas.FieldErrorf("repeat_interval", "must be ≥ 0"))
	}
	return errors.Join(errs...)
}

func (l LimitsConfig) validate() error {
	var errs []error
	if l.Lateness < 0 {
		errs = append(errs, schemas.FieldErrorf("lateness", "must be ≥ 0"))
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"max_groups", l.MaxGroups},
		{"max_finding_ids", l.MaxFindingIDs},
		{"max_tracked_findings", l.MaxTrackedFindings},
		{"max_tracked_entities", l.MaxTrackedEntities},
		{"max_risk_users", l.MaxRiskUsers},
		{"max_risk_entries_per_user", l.MaxRiskEntriesPerUser},
		{"max_surge_patients", l.MaxSurgePatients},
		{"max_surge_users_per_patient", l.MaxSurgeUsersPerPatient},
	} {
		if f.v <= 0 {
			errs = append(errs, schemas.FieldErrorf(f.name, "must be > 0"))
		}
	}
	if l.MaxTrackedFindings < l.MaxFindingIDs {
		errs = append(errs, schemas.FieldErrorf("max_tracked_findings", "must be ≥ max_finding_ids (%d)", l.MaxFindingIDs))
	}
	return errors.Join(errs...)
}

func (o OutputsConfig) validate() error {
	var errs []error
	errs = append(errs, schemas.UnderKey("alertmanager", o.Alertmanager.validate()))
	errs = append(errs, schemas.UnderKey("webhook", o.Webhook.validate()))
	errs = append(errs, schemas.UnderKey("slack", o.Slack.validate()))
	errs = append(errs, schemas.UnderKey("syslog", o.Syslog.validate()))
	return errors.Join(errs...)
}

func (c outputCommon) validate() error {
	var errs []error
	if c.MinSeverity != "" && !c.MinSeverity.Valid() {
		errs = append(errs, schemas.FieldErrorf("min_severity", "want empty or info, low, medium, high, critical (got %q)", c.MinSeverity))
	}
	errs = append(errs, schemas.UnderKey("delivery", c.Delivery.validate()))
	return errors.Join(errs...)
}

func (d DeliveryConfig) validate() error {
	var errs []error
	if d.QueueSize <= 0 {
		errs = append(errs, schemas.FieldErrorf("queue_size", "must be > 0"))
	}
	if d.WhenFull != DropOldest && d.WhenFull != DropNewest {
		errs = append(errs, schemas.FieldErrorf("when_full", "want drop_oldest or drop_newest (got %q)", d.WhenFull))
	}
	if d.MaxAttempts <= 0 {
		errs = append(errs, schemas.FieldErrorf("max_attempts", "must be > 0"))
	}
	if d.InitialBackoff <= 0 {
		errs = append(errs, schemas.FieldErrorf("initial_backoff", "must be > 0"))
	}
	if d.MaxBackoff < d.InitialBackoff {
		errs = append(errs, schemas.FieldErrorf("max_backoff", "must be ≥ initial_backoff"))
	}
	if d.MaxElapsed <= 0 {
		errs = append(errs, schemas.FieldErrorf("max_elapsed", "must be > 0"))
	}
	if d.Timeout <= 0 {
		errs = append(errs, schemas.FieldErrorf("timeout", "must be > 0"))
	}
	return errors.Join(errs...)
}

// validateHTTPURL checks an output URL; it never echoes the URL, which
// can carry a token (Slack).
func validateHTTPURL(key, raw string, h httpCommon) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return schemas.FieldErrorf(key, "want an absolute http(s) URL")
	}
	switch u.Scheme {
	case "https":
	case "http":
		if h.TLS.Enabled {
			return schemas.FieldErrorf(key, "tls.enabled needs an https URL")
		}
		if !h.AllowHTTP && !isLoopback(u.Hostname()) {
			return schemas.FieldErrorf(key, "plain http to a non-loopback host; use https or set allow_http")
		}
	default:
		return schemas.FieldErrorf(key, "want an http(s) URL")
	}
	if u.User != nil {
		return schemas.FieldErrorf(key, "credentials in the URL are not allowed; use the token settings")
	}
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a AlertmanagerConfig) validate() error {
	var errs []error
	if !a.Enabled {
		return nil
	}
	if a.URL == "" {
		errs = append(errs, schemas.FieldErrorf("url", "required"))
	}
	errs = append(errs, validateHTTPURL("url", a.URL, httpCommon{a.TLS, a.AllowHTTP}))
	if a.BearerToken != "" && a.BearerTokenFile != "" {
		errs = append(errs, schemas.FieldErrorf("bearer_token, bearer_token_file", "set one, not both"))
	}
	if strings.TrimSpace(a.Alertname) == "" {
		errs = append(errs, schemas.FieldErrorf("alertname", "required"))
	}
	for name := range a.Labels {
		if !labelNameRe.MatchString(name) || strings.HasPrefix(name, "__") {
			errs = append(errs, schemas.FieldErrorf("labels", "%q is not a valid label name", name))
		}
		if reservedLabels[name] {
			errs = append(errs, schemas.FieldErrorf("labels", "%q is set by ehrwatch", name))
		}
	}
	if a.ResolveAfter < 0 {
		errs = append(errs, schemas.FieldErrorf("resolve_after", "must be ≥ 0"))
	}
	errs = append(errs, schemas.UnderKey("tls", a.TLS.Validate()))
	errs = append(errs, a.common().validate())
	return errors.Join(errs...)
}

func (w WebhookConfig) validate() error {
	var errs []error
	if !w.Enabled {
		return nil
	}
	if w.URL == "" {
		errs = append(errs, schemas.FieldErrorf("url", "required"))
	}
	errs = append(errs, validateHTTPURL("url", w.URL, httpCommon{w.TLS, w.AllowHTTP}))
	if w.Secret == "" && w.SecretFile == "" {
		errs = append(errs, schemas.FieldErrorf("secret_file", "required (or secret)"))
	}
	if w.Secret != "" && w.SecretFile != "" {
		errs = append(errs, schemas.FieldErrorf("secret, secret_file", "set one, not both"))
	}
	if w.Secret != "" {
		if _, err := parseWebhookSecrets(w.Secret); err != nil {
			errs = append(errs, schemas.FieldErrorf("secret", "%v", err))
		}
	}
	errs = append(errs, schemas.UnderKey("tls", w.TLS.Validate()))
	errs = append(errs, w.common().validate())
	return errors.Join(errs...)
}

func (s SlackConfig) validate() error {
	var errs []error
	if !s.Enabled {
		return nil
	}
	if (s.URL == "") == (s.URLFile == "") {
		errs = append(errs, schemas.FieldErrorf("url, url_file", "set exactly one"))
	}
	if s.URL != "" {
		errs = append(errs, validateHTTPURL("url", s.URL, httpCommon{s.TLS, s.AllowHTTP}))
	}
	errs = append(errs, schemas.UnderKey("tls", s.TLS.Validate()))
	errs = append(errs, s.common().validate())
	return errors.Join(errs...)
}

func (s SyslogConfig) validate() error {
	var errs []error
	if !s.Enabled {
		return nil
	}
	host, port, err := net.SplitHostPort(s.Address)
	if err != nil || host == "" || port == "" {
		errs = append(errs, schemas.FieldErrorf("address", "want host:port"))
	}
	if _, ok := syslogFacilities[s.Facility]; !ok {
		errs = append(errs, schemas.FieldErrorf("facility", "unknown facility %q", s.Facility))
	}
	if s.Hostname != "" && !printASCII(s.Hostname, 255) {
		errs = append(errs, schemas.FieldErrorf("hostname", "want 1–255 printable ASCII characters without spaces"))
	}
	if !printASCII(s.AppName, 48) {
		errs = append(errs, schemas.FieldErrorf("app_name", "want 1–48 printable ASCII characters without spaces"))
	}
	errs = append(errs, schemas.UnderKey("tls", s.TLS.Validate()))
	errs = append(errs, s.common().validate())
	return errors.Join(errs...)
}

// printASCII reports whether s is 1..max characters of PRINTUSASCII
// (RFC 5424 §6: %d33-126).
func printASCII(s string, max int) bool {
	if len(s) == 0 || len(s) > max {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 33 || s[i] > 126 {
			return false
		}
	}
	return true
}
