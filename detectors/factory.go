package detectors

import "fmt"

// NewEngineFactory validates cfg against the full Registry once and returns
// a function that builds a fresh Engine, running every enabled detector,
// for each partition (`ehrwatch run` calls it whenever a partition is
// assigned; `ehrwatch demo` and `replay` call it the same way).
//
// env is shared by every Engine it builds: pass a ReferenceHolder's Load as
// env.Reference and FacilityLocations' lookup as env.Location, and, to
// refresh the allowlist without a restart, an AllowlistHolder's Load as
// cfg.AllowlistSource. A static cfg.Allowlist is indexed once here and
// shared (an Allowlist is immutable).
//
// The returned function is safe to call from any goroutine; each Engine it
// returns belongs to one goroutine (see Engine).
func NewEngineFactory(cfg EngineConfig, env Env) (func() (*Engine, error), error) {
	factories := Registry()
	if cfg.Detectors == nil {
		cfg.Detectors = Configs{}
	}
	if err := cfg.Validate(factories); err != nil {
		return nil, err
	}
	if cfg.AllowlistSource == nil && len(cfg.Allowlist) > 0 {
		a, err := NewAllowlist(cfg.Allowlist)
		if err != nil {
			return nil, err
		}
		cfg.AllowlistSource = func() *Allowlist { return a }
		cfg.Allowlist = nil
	}
	// Build one engine now, so a configuration that no detector accepts
	// fails at startup rather than at the first assignment.
	probe, err := NewEngine(cfg, factories, env)
	if err != nil {
		return nil, err
	}
	if err := probe.Close(); err != nil {
		return nil, fmt.Errorf("detectors: closing probe engine: %w", err)
	}
	return func() (*Engine, error) { return NewEngine(cfg, factories, env) }, nil
}
