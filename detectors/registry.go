package detectors

import "fmt"

// Factory describes one detector: its name (the key under "detectors:" in
// the configuration and the value of Finding.Detector), a one-line
// description for `ehrwatch detectors list`, its default configuration and
// its constructor. New must do no I/O; it receives a Config that has
// already passed Validate.
type Factory struct {
	// Name is the detector's configuration key and Finding.Detector value.
	Name string
	// Description is one line for listings and documentation.
	Description string
	// DefaultConfig returns a fresh, valid default configuration.
	DefaultConfig func() Config
	// New builds the detector from a validated configuration of the type
	// DefaultConfig returns.
	New func(cfg Config, env Env) (Detector, error)
}

// Registry returns every detector ehrwatch ships, in the order the Engine
// runs them (and so the order of the findings one event produces). It is
// the one explicit list; there is no init() registration. Each call returns
// a fresh slice the caller may filter.
func Registry() []Factory {
	return []Factory{
		NewFactory(breakGlassName,
			"every break-the-glass access, ranked by its reason, the user's role, the care relationship and the user's break-glass rate against peers",
			DefaultBreakGlassConfig, NewBreakGlass),
		NewFactory(selfAccessName,
			"a user opens their own medical record",
			DefaultSelfAccessConfig, NewSelfAccess),
		NewFactory(familyName,
			"a user opens the record of a likely relative (same last name and address, next of kin or guarantor)",
			DefaultFamilyConfig, NewFamily),
		NewFactory(coworkerName,
			"a user opens a co-worker's record without a care relationship",
			DefaultCoworkerConfig, NewCoworker),
		NewFactory(vipName,
			"a user opens a VIP patient's record without a care relationship",
			DefaultVIPConfig, NewVIP),
		NewFactory(deceasedName,
			"a deceased patient's record opened after the death by someone whose work does not continue after it: from the first day without a prior relationship, after the grace period with one",
			DefaultDeceasedConfig, NewDeceased),
		NewFactory(terminatedName,
			"a terminated or inactive account accesses a record",
			DefaultTerminatedConfig, NewTerminated),

		// Windowed detectors, after the per-event ones: their findings come
		// when the watermark closes a window.
		NewFactory(volumeName,
			"a user's daily volume of accesses or distinct patients far above their own baseline and their peers'",
			DefaultVolumeConfig, NewVolume),
		NewFactory(bulkExportName,
			"a burst of print or export actions by one user within a short window",
			DefaultBulkExportConfig, NewBulkExport),
		NewFactory(offHoursName,
			"access at a local hour the user rarely works, or outside the configured shift calendar",
			DefaultOffHoursConfig, NewOffHours),
	}
}

// NewFactory builds a Factory from a typed default-config function and a
// typed constructor, so that each registry entry is one line and the type
// assertion from Config to the detector's own configuration lives in one
// place.
func NewFactory[C Config, D Detector](name, description string, defaults func() C, ctor func(C, Env) (D, error)) Factory {
	return Factory{
		Name:          name,
		Description:   description,
		DefaultConfig: func() Config { return defaults() },
		New: func(cfg Config, env Env) (Detector, error) {
			c, ok := cfg.(C)
			if !ok {
				var want C
				return nil, fmt.Errorf("detectors.%s: configuration has type %T, want %T", name, cfg, want)
			}
			d, err := ctor(c, env)
			if err != nil {
				return nil, err
			}
			return d, nil
		},
	}
}
