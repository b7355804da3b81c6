package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/api"
	webconsole "github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Config is the whole ehrwatch configuration: one YAML file, then
// EHRWATCH_* environment variables, then command-line flags. Each section is
// owned, defaulted and validated by its package. Every command reads the
// same file (and rejects unknown keys in every section); each uses the
// sections it needs.
type Config struct {
	Kafka      ingest.KafkaConfig `yaml:"kafka"`
	ClickHouse store.Config       `yaml:"clickhouse"`
	Pipeline   ingest.Config      `yaml:"pipeline"`
	// Detection configures the detectors (detectors.EngineConfig: lateness,
	// open findings, each detector's settings, static allowlist entries).
	Detection DetectionConfig `yaml:"detection"`
	// Peers says whether `ehrwatch run` compares volume and break_glass
	// with the whole peer group (through a peers topic) or within a
	// partition.
	Peers PeersConfig `yaml:"peers"`
	// Reference says where reference data comes from and how often it is
	// refreshed (detectors.ReferenceConfig).
	Reference detectors.ReferenceConfig `yaml:"reference"`
	Alerting  alerting.Config           `yaml:"alerting"`
	// FHIR is how FHIR AuditEvents are mapped where the standard leaves a
	// choice (schemas.FHIRConfig; docs/feeds.md).
	FHIR schemas.FHIRConfig `yaml:"fhir"`
	// API is the triage and report API. `ehrwatch serve` always serves it
	// (on 127.0.0.1:8080 when api.listen is empty); `ehrwatch run` serves
	// it too, on its own listener with its own TLS settings, only when
	// api.listen is set.
	API api.Config `yaml:"api"`
	// Console is the web console served on the API listener
	// (pipeline/console).
	Console webconsole.Config `yaml:"console"`
	HTTP    HTTPConfig        `yaml:"http"`
	Log     LogConfig         `yaml:"log"`
}

// DefaultConfig is what an empty file means.
func DefaultConfig() Config {
	apiCfg := api.DefaultConfig()
	apiCfg.Listen = "" // run: no API unless asked; serve: apiDefaultListen
	return Config{
		Kafka:      ingest.DefaultKafkaConfig(),
		ClickHouse: store.DefaultConfig(),
		Pipeline:   ingest.DefaultConfig(),
		Detection:  DetectionConfig{detectors.DefaultEngineConfig(detectors.Registry())},
		Peers:      DefaultPeersConfig(),
		Reference:  detectors.DefaultReferenceConfig(),
		Alerting:   alerting.DefaultConfig(),
		FHIR:       schemas.DefaultFHIRConfig(),
		API:        apiCfg,
		Console:    webconsole.DefaultConfig(),
		HTTP:       DefaultHTTPConfig(),
		Log:        DefaultLogConfig(),
	}
}

// apiDefaultListen is where `ehrwatch serve` listens when api.listen is
// empty.
var apiDefaultListen = api.DefaultConfig().Listen

// Validate reports every bad value, each naming its key. It does not
// require what only `ehrwatch run` needs (see ValidateRun), so that `serve`,
// `report` and `migrate` accept a file without, say, a hash key.
func (c *Config) Validate() error {
	return errors.Join(
		schemas.UnderKey("kafka", c.Kafka.Validate()),
		schemas.UnderKey("clickhouse", c.ClickHouse.Validate()),
		schemas.UnderKey("pipeline", c.Pipeline.Validate()),
		schemas.UnderKey("pipeline", c.Pipeline.ValidateWith(c.Kafka)),
		schemas.UnderKey("detection", c.Detection.Validate(detectors.Registry())),
		schemas.UnderKey("peers", c.Peers.Validate()),
		schemas.UnderKey("peers", c.Peers.ValidateWith(c.Kafka, c.Detection.EngineConfig)),
		schemas.UnderKey("reference", c.Reference.Validate()),
		schemas.UnderKey("alerting", c.Alerting.Validate()),
		schemas.UnderKey("fhir", c.FHIR.Validate()),
		c.validateAPI(),
		schemas.UnderKey("console", c.Console.Validate()),
		schemas.UnderKey("http", c.HTTP.Validate()),
		schemas.UnderKey("log", c.Log.Validate()),
	)
}

// ValidateRun adds what the production process needs beyond valid values:
// the reference hash key (and directory, for source: files), and a way to
// authenticate when it serves the API.
func (c *Config) ValidateRun() error {
	errs := []error{c.Validate(), schemas.UnderKey("reference", c.Reference.ValidateRequired())}
	if c.API.Listen != "" {
		errs = append(errs, c.validateAPIAuth())
	}
	return errors.Join(errs...)
}

// ValidateServe adds what `ehrwatch serve` needs: a way to authenticate.
func (c *Config) ValidateServe() error {
	return errors.Join(c.Validate(), c.validateAPIAuth())
}

// ValidateFor is the check a command makes at start-up: run, serve, or
// (migrate, report) Validate.
func (c *Config) ValidateFor(command string) error {
	switch command {
	case "run":
		return c.ValidateRun()
	case "serve":
		return c.ValidateServe()
	}
	return c.Validate()
}

// configCommands are the commands `config validate --for` knows.
var configCommands = []string{"run", "serve", "migrate", "report"}

func (c *Config) validateAPIAuth() error {
	if len(c.API.Tokens) == 0 && len(c.API.OIDC) == 0 {
		return errors.New("api.tokens, api.oidc: the API needs at least one way to authenticate: a token (`ehrwatch serve hash-token`) or an OpenID Connect issuer")
	}
	return nil
}

// validateAPI checks the api section (an empty listen address is valid:
// `run` then serves no API) and that it explains accesses the way the
// detectors do.
func (c *Config) validateAPI() error {
	a := c.API
	if a.Listen == "" {
		a.Listen = apiDefaultListen
	}
	errs := []error{schemas.UnderKey("api", a.Validate())}
	if _, port, _ := net.SplitHostPort(c.API.Listen); c.API.Listen != "" && c.API.Listen == c.HTTP.Listen && port != "0" {
		errs = append(errs, fmt.Errorf("api.listen: must differ from http.listen: the API never shares the operational listener"))
	}
	if c.API.CareSlackBefore != c.Reference.CareSlackBefore {
		errs = append(errs, fmt.Errorf("api.care_slack_before: must equal reference.care_slack_before (%s), so reports explain accesses as the detectors do", c.Reference.CareSlackBefore))
	}
	if c.API.CareSlackAfter != c.Reference.CareSlackAfter {
		errs = append(errs, fmt.Errorf("api.care_slack_after: must equal reference.care_slack_after (%s), so reports explain accesses as the detectors do", c.Reference.CareSlackAfter))
	}
	for _, fac := range sortedStringKeys(c.Reference.Facilities) {
		if z, ok := c.API.FacilityTimeZones[fac]; ok && z != c.Reference.Facilities[fac] {
			errs = append(errs, fmt.Errorf("api.facility_time_zones.%s: %q differs from reference.facilities.%s (%q)", fac, z, fac, c.Reference.Facilities[fac]))
		}
	}
	return errors.Join(errs...)
}

func sortedStringKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// DetectionConfig is the "detection" section: detectors.EngineConfig,
// parsed with detectors.ParseEngineConfig so that unknown detectors and
// keys are reported with their full key ("detection.detectors.vip.severty").
// It cannot be overridden from the environment.
type DetectionConfig struct {
	detectors.EngineConfig
}

// UnmarshalYAML parses the section from its node. Errors are returned as
// a *yaml.TypeError, one line per bad key, so decoding goes on and the
// other sections' mistakes are reported too.
func (d *DetectionConfig) UnmarshalYAML(n *yaml.Node) error {
	cfg, err := detectors.ParseEngineConfig(n, detectors.Registry())
	if err != nil {
		te := &yaml.TypeError{}
		for _, e := range flattenErrors(err) {
			te.Errors = append(te.Errors, "detection."+e.Error())
		}
		return te
	}
	d.EngineConfig = cfg
	return nil
}

// MarshalYAML writes the section in the form UnmarshalYAML reads.
func (d DetectionConfig) MarshalYAML() (any, error) {
	type section struct {
		AllowedLateness time.Duration               `yaml:"allowed_lateness"`
		MaxOpenFindings int                         `yaml:"max_open_findings"`
		Explanation     detectors.ExplanationConfig `yaml:"explanation"`
		Detectors       map[string]detectors.Config `yaml:"detectors"`
		Allowlist       []detectors.AllowlistEntry  `yaml:"allowlist"`
	}
	s := section{
		AllowedLateness: d.AllowedLateness,
		MaxOpenFindings: d.MaxOpenFindings,
		Explanation:     d.Explanation,
		Detectors:       map[string]detectors.Config(d.Detectors),
		Allowlist:       d.Allowlist,
	}
	if s.Allowlist == nil {
		s.Allowlist = []detectors.AllowlistEntry{}
	}
	return s, nil
}

// flagValueError names flag in the errors a section's Validate reports for the
// value the flag set ("--log: want debug, info, warn or error, got ...").
func flagValueError(flag string, err error) error {
	var out []error
	for _, e := range flattenErrors(err) {
		var fe *schemas.FieldError
		if errors.As(e, &fe) {
			out = append(out, fmt.Errorf("%s: %s", flag, fe.Msg))
		} else {
			out = append(out, fmt.Errorf("%s: %v", flag, e))
		}
	}
	return errors.Join(out...)
}

// flattenErrors returns the leaves of an errors.Join tree.
func flattenErrors(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flattenErrors(e)...)
		}
		return out
	}
	return []error{err}
}

// HTTPConfig is the operational HTTP endpoint (/metrics, /healthz,
// /readyz).
type HTTPConfig struct {
	// Listen is the host:port to serve on (":9464": every interface).
	Listen string `yaml:"listen"`
}

// DefaultHTTPConfig serves on port 9464.
func DefaultHTTPConfig() HTTPConfig { return HTTPConfig{Listen: ":9464"} }

// Validate reports a bad listen address.
func (c HTTPConfig) Validate() error {
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		return schemas.FieldErrorf("listen", "want [host]:port, got %q", c.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return schemas.FieldErrorf("listen", "bad port %q", port)
	}
	return nil
}

// LogConfig is how ehrwatch logs (to stderr). Logs never carry patient
// data.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `yaml:"level"`
	// Format is json (production) or console (human-readable).
	Format string `yaml:"format"`
}

// DefaultLogConfig logs JSON at info level.
func DefaultLogConfig() LogConfig { return LogConfig{Level: "info", Format: "json"} }

// Validate reports every bad log setting.
func (c LogConfig) Validate() error {
	var errs []error
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, schemas.FieldErrorf("level", "want debug, info, warn or error, got %q", c.Level))
	}
	if c.Format != "json" && c.Format != "console" {
		errs = append(errs, schemas.FieldErrorf("format", "want json or console, got %q", c.Format))
	}
	return errors.Join(errs...)
}

// LoadConfig reads path (empty: defaults only), applies environment
// overrides from environ, and validates (Validate). Unknown keys are
// errors; every bad key is reported, unknown keys and wrong types together
// with invalid values.
func LoadConfig(path string, environ []string) (Config, error) {
	cfg, err := loadConfig(path, environ)
	if err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

// LoadRunConfig is LoadConfig with ValidateRun: what `ehrwatch run` uses.
func LoadRunConfig(path string, environ []string) (Config, error) {
	return LoadConfigFor("run", path, environ)
}

// LoadConfigFor is LoadConfig with the start-up checks of command
// (ValidateFor): what each command and `ehrwatch config validate --for`
// use, so that a file that validates also starts.
func LoadConfigFor(command, path string, environ []string) (Config, error) {
	cfg, err := loadConfig(path, environ)
	if err != nil {
		return cfg, err
	}
	if err := cfg.ValidateFor(command); err != nil {
		return cfg, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

func loadConfig(path string, environ []string) (Config, error) {
	cfg := DefaultConfig()
	var typeErr error
	if path != "" {
		raw, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return cfg, fmt.Errorf("read config: %w\nhint: check the path, or start from the defaults: ehrwatch config defaults > %s", err, path)
		}
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				return cfg, fmt.Errorf("config %s: %w", path, err)
			}
			// Unknown keys and wrong types: keep going, so the invalid
			// values of the other keys are reported with them.
			typeErr = keyPathErrors("config "+path, raw, te)
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, errors.Join(typeErr, err)
	}
	if len(cfg.API.FacilityTimeZones) == 0 && len(cfg.Reference.Facilities) > 0 {
		cfg.API.FacilityTimeZones = maps.Clone(cfg.Reference.Facilities)
	}
	if typeErr != nil {
		if verr := cfg.Validate(); verr != nil {
			return cfg, errors.Join(typeErr, fmt.Errorf("invalid config: %w", verr))
		}
		return cfg, typeErr
	}
	return cfg, nil
}

// applyEnv overrides leaf settings from EHRWATCH_<SECTION>_<KEY> variables,
// named after the YAML keys (clickhouse.password_file →
// EHRWATCH_CLICKHOUSE_PASSWORD_FILE). Lists are comma-separated.
func applyEnv(cfg *Config, environ []string) error {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, "EHRWATCH_") {
			env[k] = v
		}
	}
	if len(env) == 0 {
		return nil
	}
	known := map[string]bool{}
	err := walkEnv(reflect.ValueOf(cfg).Elem(), "EHRWATCH", "", env, known)
	var errs []error
	for _, name := range sortedStringKeys(env) {
		if known[name] {
			continue
		}
		msg := fmt.Sprintf("%s: unknown configuration variable (EHRWATCH_* variables set configuration keys, e.g. EHRWATCH_KAFKA_BROKERS for kafka.brokers)", name)
		if strings.HasPrefix(name, "EHRWATCH_DETECTION_") {
			msg = fmt.Sprintf("%s: the detection section cannot be set from the environment; set it in the file", name)
		} else if s := closestName(name, known); s != "" {
			msg = fmt.Sprintf("%s: unknown configuration variable; did you mean %s?", name, s)
		}
		errs = append(errs, errors.New(msg))
	}
	return errors.Join(append([]error{err}, errs...)...)
}

// closestName returns the name in known closest to name (edit distance at
// most 3), or "".
func closestName(name string, known map[string]bool) string {
	return closest(name, sortedBoolKeys(known), 3)
}

func sortedBoolKeys(m map[string]bool) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

var durationType = reflect.TypeOf(time.Duration(0))

// walkEnv sets every leaf of v that env names and records each leaf's
// variable name in known.
func walkEnv(v reflect.Value, envPrefix, keyPrefix string, env map[string]string, known map[string]bool) error {
	t := v.Type()
	var errs []error
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		name := envPrefix + "_" + strings.ToUpper(tag)
		key := strings.TrimPrefix(keyPrefix+"."+tag, ".")
		fv := v.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			errs = append(errs, walkEnv(fv, name, key, env, known))
			continue
		}
		known[name] = true
		raw, ok := env[name]
		if !ok {
			continue
		}
		if err := setFromString(fv, raw); err != nil {
			errs = append(errs, fmt.Errorf("%s (from %s): %w", key, name, err))
		}
	}
	return errors.Join(errs...)
}

func setFromString(fv reflect.Value, raw string) error {
	switch {
	case fv.Type() == durationType:
		d, err := time.ParseDuration(raw)
		if err != nil {
			return errors.New("not a duration (e.g. 500ms, 10s)")
		}
		fv.SetInt(int64(d))
	case fv.Kind() == reflect.String:
		fv.SetString(raw)
	case fv.Kind() == reflect.Bool:
		b, err := strconv.ParseBool(raw)
		if err != nil {
			return errors.New("not a boolean")
		}
		fv.SetBool(b)
	case fv.Kind() >= reflect.Int && fv.Kind() <= reflect.Int64:
		n, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return errors.New("not an integer")
		}
		fv.SetInt(n)
	case fv.Kind() >= reflect.Uint && fv.Kind() <= reflect.Uint64:
		n, err := strconv.ParseUint(raw, 10, 64)
		if err != nil {
			return errors.New("not a non-negative integer")
		}
		fv.SetUint(n)
	case fv.Kind() == reflect.Float64:
		n, err := strconv.ParseFloat(raw, 64)
		if err != nil {
			return errors.New("not a number")
		}
		fv.SetFloat(n)
	case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
		var parts []string
		for _, p := range strings.Split(raw, ",") {
			if p = strings.TrimSpace(p); p != "" {
				parts = append(parts, p)
			}
		}
		fv.Set(reflect.ValueOf(parts))
	default:
		return fmt.Errorf("cannot be set from the environment (type %s)", fv.Type())
	}
	return nil
}
