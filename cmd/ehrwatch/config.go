package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"reflect"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/pipeline"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
)

// Config is the whole ehrwatch configuration: one YAML file, then
// EHRWATCH_* environment variables, then command-line flags. Each section is
// owned, defaulted and validated by its package.
type Config struct {
	Kafka      pipeline.KafkaConfig `yaml:"kafka"`
	ClickHouse store.Config         `yaml:"clickhouse"`
	Pipeline   pipeline.Config      `yaml:"pipeline"`
	HTTP       HTTPConfig           `yaml:"http"`
	Log        LogConfig            `yaml:"log"`
}

// DefaultConfig is what an empty file means.
func DefaultConfig() Config {
	return Config{
		Kafka:      pipeline.DefaultKafkaConfig(),
		ClickHouse: store.DefaultConfig(),
		Pipeline:   pipeline.DefaultConfig(),
		HTTP:       DefaultHTTPConfig(),
		Log:        DefaultLogConfig(),
	}
}

// Validate reports every bad value, each naming its key.
func (c *Config) Validate() error {
	return errors.Join(
		c.Kafka.Validate("kafka"),
		c.ClickHouse.Validate("clickhouse"),
		c.Pipeline.Validate("pipeline"),
		c.Pipeline.ValidateWith("pipeline", c.Kafka, "kafka"),
		c.HTTP.Validate("http"),
		c.Log.Validate("log"),
	)
}

// HTTPConfig is the operational HTTP endpoint (/metrics, /healthz,
// /readyz).
type HTTPConfig struct {
	// Listen is the host:port to serve on (":9464": every interface).
	Listen string `yaml:"listen"`
}

// DefaultHTTPConfig serves on port 9464.
func DefaultHTTPConfig() HTTPConfig { return HTTPConfig{Listen: ":9464"} }

// Validate reports a bad listen address under prefix.
func (c HTTPConfig) Validate(prefix string) error {
	if _, port, err := net.SplitHostPort(c.Listen); err != nil {
		return fmt.Errorf("%s.listen: want [host]:port, got %q", prefix, c.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%s.listen: bad port %q", prefix, port)
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

// Validate reports every bad log setting under prefix.
func (c LogConfig) Validate(prefix string) error {
	var errs []error
	switch c.Level {
	case "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("%s.level: want debug, info, warn or error, got %q", prefix, c.Level))
	}
	if c.Format != "json" && c.Format != "console" {
		errs = append(errs, fmt.Errorf("%s.format: want json or console, got %q", prefix, c.Format))
	}
	return errors.Join(errs...)
}

// LoadConfig reads path (empty: defaults only), applies environment
// overrides from environ, and validates. Unknown keys are errors.
func LoadConfig(path string, environ []string) (Config, error) {
	cfg := DefaultConfig()
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		dec.KnownFields(true)
		if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
	}
	if err := applyEnv(&cfg, environ); err != nil {
		return cfg, err
	}
	if err := cfg.Validate(); err != nil {
		return cfg, fmt.Errorf("invalid config: %w", err)
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
	return walkEnv(reflect.ValueOf(cfg).Elem(), "EHRWATCH", "", env)
}

var durationType = reflect.TypeOf(time.Duration(0))

func walkEnv(v reflect.Value, envPrefix, keyPrefix string, env map[string]string) error {
	t := v.Type()
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
			if err := walkEnv(fv, name, key, env); err != nil {
				return err
			}
			continue
		}
		raw, ok := env[name]
		if !ok {
			continue
		}
		if err := setFromString(fv, raw); err != nil {
			return fmt.Errorf("%s (from %s): %w", key, name, err)
		}
	}
	return nil
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
