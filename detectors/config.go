package detectors

import (
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// BaseConfig holds the keys every detector configuration shares. Detector
// configurations embed it with `yaml:",inline"`, so in YAML they sit next to
// the detector's own keys:
//
//	detectors:
//	  vip:
//	    enabled: true
//	    severity: high
type BaseConfig struct {
	// Enabled turns the detector on. A disabled detector is not constructed.
	Enabled bool `yaml:"enabled"`
	// Severity is the detector's base severity, before the escalations each
	// detector documents.
	Severity schemas.Severity `yaml:"severity"`
}

// IsEnabled reports whether the detector should run.
func (b *BaseConfig) IsEnabled() bool { return b.Enabled }

// Validate checks the shared keys.
func (b *BaseConfig) Validate() error {
	if !b.Severity.Valid() {
		return fieldErrorf("severity", "must be one of info, low, medium, high, critical (got %q)", b.Severity)
	}
	return nil
}

// Enabler is implemented by configurations that can be switched off; the
// Engine constructs a detector only when its configuration reports enabled.
// Configurations that do not implement it are always enabled.
type Enabler interface {
	IsEnabled() bool
}

// ExplainedPolicy says what a relationship detector (family, co-worker, VIP,
// deceased) does with an access that a care relationship explains.
type ExplainedPolicy struct {
	// Report emits a finding for explained accesses too; when false they
	// produce nothing.
	Report bool `yaml:"report"`
	// Severity is the severity of findings for explained accesses.
	Severity schemas.Severity `yaml:"severity"`
}

// Validate checks the policy; keys are relative to "explained".
func (p *ExplainedPolicy) Validate() error {
	if p.Report && !p.Severity.Valid() {
		return fieldErrorf("explained.severity", "must be one of info, low, medium, high, critical when explained.report is true (got %q)", p.Severity)
	}
	return nil
}

// severity is the severity of a relationship detector's finding: an access
// that care explains gets the policy's severity, or no finding (ok false)
// when the policy does not report explained accesses; any other access gets
// sev, raised one level when the action copies data out of the EHR.
func (p ExplainedPolicy) severity(explained bool, sev schemas.Severity, a schemas.Action) (_ schemas.Severity, ok bool) {
	switch {
	case explained:
		return p.Severity, p.Report
	case isDisclosure(a):
		return RaiseSeverity(sev, 1), true
	}
	return sev, true
}

// FieldError is a configuration error tied to one key, such as
// "detectors.deceased.grace_period: must be ≥ 0". Its Key is a dotted path.
// It is schemas.FieldError, so the allowlist entries schemas validates
// report their keys the same way.
type FieldError = schemas.FieldError

func fieldErrorf(key, format string, args ...any) error {
	return schemas.FieldErrorf(key, format, args...)
}

// prefixErrors is schemas.UnderKey: the one way a nested key gets its path.
func prefixErrors(prefix string, err error) error { return schemas.UnderKey(prefix, err) }

// Configs maps detector names to their configurations.
type Configs map[string]Config

// DefaultConfigs returns every factory's default configuration.
func DefaultConfigs(factories []Factory) Configs {
	out := make(Configs, len(factories))
	for _, f := range factories {
		out[f.Name] = f.DefaultConfig()
	}
	return out
}

// DecodeConfigs builds detector configurations from a YAML mapping keyed by
// detector name (the value of the "detectors" key of a configuration file).
// Every factory starts from its DefaultConfig; the YAML overrides only the
// keys it sets. node may be nil, a document node or a mapping node.
//
// Unknown detector names, unknown keys (at any depth), values of the wrong
// type and Validate failures are all collected, so one call reports every
// bad key; errors are FieldErrors keyed like
// "detectors.deceased.grace_period".
func DecodeConfigs(node *yaml.Node, factories []Factory) (Configs, error) {
	const prefix = "detectors"
	cfgs := DefaultConfigs(factories)
	node = unwrapDocument(node)
	var errs []error
	if node != nil && !isNull(node) {
		if node.Kind != yaml.MappingNode {
			return nil, fieldErrorf(prefix, "line %d: must be a mapping of detector name to settings", node.Line)
		}
		seen := map[string]bool{}
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			name := k.Value
			key := prefix + "." + name
			if seen[name] {
				errs = append(errs, fieldErrorf(key, "line %d: detector configured twice", k.Line))
				continue
			}
			seen[name] = true
			cfg, ok := cfgs[name]
			if !ok {
				errs = append(errs, fieldErrorf(key, "line %d: unknown detector (known: %s)", k.Line, strings.Join(factoryNames(factories), ", ")))
				continue
			}
			if err := decodeStrict(v, cfg, key); err != nil {
				errs = append(errs, err)
			}
		}
	}
	// Validate in registry order, so error output is stable.
	for _, f := range factories {
		if err := cfgs[f.Name].Validate(); err != nil {
			errs = append(errs, prefixErrors(prefix+"."+f.Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfgs, nil
}

// decodeStrict decodes node into out (a pointer) after checking that every
// mapping key, at every depth, names a field of out's type. Unknown keys are
// reported with their full dotted path; type errors keep the line numbers of
// the original document.
func decodeStrict(node *yaml.Node, out any, path string) error {
	node = unwrapDocument(node)
	if node == nil || isNull(node) {
		return nil
	}
	var errs []error
	checkKnownKeys(node, reflect.TypeOf(out), path, &errs)
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	if err := node.Decode(out); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for _, msg := range te.Errors {
				errs = append(errs, fieldErrorf(path, "%s", msg))
			}
			return errors.Join(errs...)
		}
		return fieldErrorf(path, "%v", err)
	}
	return nil
}

var (
	timeType     = reflect.TypeOf(time.Time{})
	durationType = reflect.TypeOf(time.Duration(0))
)

// checkKnownKeys walks node alongside type t and records every mapping key
// that t does not have, the same check yaml's KnownFields makes, but
// reporting all keys with dotted paths.
func checkKnownKeys(node *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch {
	case t.Kind() == reflect.Struct && t != timeType:
		if node.Kind != yaml.MappingNode {
			if !isNull(node) {
				*errs = append(*errs, fieldErrorf(path, "line %d: must be a mapping", node.Line))
			}
			return
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(node.Content); i += 2 {
			k, v := node.Content[i], node.Content[i+1]
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fieldErrorf(path+"."+k.Value, "line %d: unknown key (known: %s)", k.Line, strings.Join(sortedKeys(fields), ", ")))
				continue
			}
			checkKnownKeys(v, ft, path+"."+k.Value, errs)
		}
	case t.Kind() == reflect.Slice && node.Kind == yaml.SequenceNode:
		for i, item := range node.Content {
			checkKnownKeys(item, t.Elem(), fmt.Sprintf("%s[%d]", path, i), errs)
		}
	case t.Kind() == reflect.Map && node.Kind == yaml.MappingNode:
		for i := 0; i+1 < len(node.Content); i += 2 {
			checkKnownKeys(node.Content[i+1], t.Elem(), path+"."+node.Content[i].Value, errs)
		}
	}
}

// yamlFields lists the YAML keys of struct type t (following inline
// embedding) and the type each key decodes into.
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := f.Tag.Get("yaml")
		name, opts, _ := strings.Cut(tag, ",")
		if name == "-" {
			continue
		}
		if strings.Contains(opts, "inline") {
			ft := f.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				for k, v := range yamlFields(ft) {
					out[k] = v
				}
			}
			continue
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func unwrapDocument(n *yaml.Node) *yaml.Node {
	for n != nil && n.Kind == yaml.DocumentNode {
		if len(n.Content) == 0 {
			return nil
		}
		n = n.Content[0]
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

func factoryNames(factories []Factory) []string {
	names := make([]string, len(factories))
	for i, f := range factories {
		names[i] = f.Name
	}
	return names
}

// nonNegative returns a FieldError when d < 0.
func nonNegative(key string, d time.Duration) error {
	if d < 0 {
		return fieldErrorf(key, "must be ≥ 0 (got %s)", d)
	}
	return nil
}
