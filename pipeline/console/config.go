package console

import (
	"errors"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Config is the `console` section: how the web console behaves. The
// console is served on the API's listener (api.listen) with its TLS,
// tokens and identity providers; nothing here opens a port.
type Config struct {
	// QueueRefresh is how often an open queue page asks whether new alerts
	// arrived (it then offers to reload; it never reorders what the
	// analyst is looking at).
	QueueRefresh time.Duration `yaml:"queue_refresh"`
	// QueueLimit is the most alerts the queue shows at once (the counts
	// above it cover every matching alert).
	QueueLimit int `yaml:"queue_limit"`
	// SLA is how long an alert of each severity may wait, from its first
	// finding, before the queue marks it as past its SLA.
	SLA SLAConfig `yaml:"sla"`
}

// SLAConfig is the time to handle an alert, per severity.
type SLAConfig struct {
	Critical time.Duration `yaml:"critical"`
	High     time.Duration `yaml:"high"`
	Medium   time.Duration `yaml:"medium"`
	Low      time.Duration `yaml:"low"`
	Info     time.Duration `yaml:"info"`
}

// DefaultConfig returns the defaults: refresh every 10 s, at most 500
// alerts on the queue, SLAs of 1 h (critical), 4 h (high), 24 h (medium),
// 72 h (low) and 7 days (info).
func DefaultConfig() Config {
	return Config{
		QueueRefresh: 10 * time.Second,
		QueueLimit:   500,
		SLA: SLAConfig{
			Critical: time.Hour, High: 4 * time.Hour, Medium: 24 * time.Hour,
			Low: 72 * time.Hour, Info: 7 * 24 * time.Hour,
		},
	}
}

// Validate reports every bad setting as a schemas.FieldError keyed
// relative to the section ("queue_limit", "sla.high"); the caller nests it
// with schemas.UnderKey("console", …).
func (c Config) Validate() error {
	var errs []error
	if c.QueueRefresh < time.Second || c.QueueRefresh > 10*time.Minute {
		errs = append(errs, schemas.FieldErrorf("queue_refresh", "must be between 1s and 10m, got %s", c.QueueRefresh))
	}
	if c.QueueLimit < 1 || c.QueueLimit > 10000 {
		errs = append(errs, schemas.FieldErrorf("queue_limit", "must be between 1 and 10000, got %d", c.QueueLimit))
	}
	for _, s := range []struct {
		key string
		d   time.Duration
	}{{"critical", c.SLA.Critical}, {"high", c.SLA.High}, {"medium", c.SLA.Medium}, {"low", c.SLA.Low}, {"info", c.SLA.Info}} {
		if s.d <= 0 {
			errs = append(errs, schemas.FieldErrorf("sla."+s.key, "must be > 0, got %s", s.d))
		}
	}
	return errors.Join(errs...)
}

// SLAFor returns the SLA of a severity (the info SLA for an unknown one).
func (c Config) SLAFor(severity string) time.Duration {
	switch severity {
	case "critical":
		return c.SLA.Critical
	case "high":
		return c.SLA.High
	case "medium":
		return c.SLA.Medium
	case "low":
		return c.SLA.Low
	}
	return c.SLA.Info
}
