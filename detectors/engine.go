package detectors

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// EndOfTime is the watermark Flush hands to every WatermarkFlusher: later
// than any event, so every window closes.
var EndOfTime = time.Date(9999, 12, 31, 23, 59, 59, 999999999, time.UTC)

// EngineConfig configures one Engine. Its YAML form is the "detection"
// section of the configuration file (see ParseEngineConfig):
//
//	allowed_lateness: 10m
//	max_open_findings: 100000
//	detectors:
//	  deceased: {grace_period: 720h}
//	allowlist:
//	  - {user_id: u1, detector: vip, reason: "…", owner: privacy-office, expires_at: 2027-01-01}
type EngineConfig struct {
	// AllowedLateness is how far behind the newest event time an event may
	// arrive and still count as on time: the watermark is the maximum event
	// time seen minus AllowedLateness. Default 10m.
	AllowedLateness time.Duration `yaml:"allowed_lateness"`
	// MaxOpenFindings bounds the findings the Engine remembers to collapse
	// repeats (see Engine); past it, findings are emitted without collapsing,
	// never dropped. 0 disables collapsing. Default 100000.
	MaxOpenFindings int `yaml:"max_open_findings"`
	// Detectors holds each detector's configuration by name; detectors
	// missing from it run with their defaults. Names without a factory are
	// ignored, so one Configs can serve engines built from subsets.
	Detectors Configs `yaml:"-"`
	// Explanation configures continuity of care and the per-user breadth
	// the relationship detectors rank by (see ExplanationConfig).
	Explanation ExplanationConfig `yaml:"explanation"`
	// Allowlist holds the entries from the configuration file.
	Allowlist []AllowlistEntry `yaml:"allowlist"`
	// AllowlistSource, when set, is read on every finding and replaces
	// Allowlist; use an AllowlistHolder to merge the configuration's entries
	// with the ClickHouse table and refresh them without a restart.
	AllowlistSource func() *Allowlist `yaml:"-"`
}

// DefaultEngineConfig returns the defaults, with every factory's default
// detector configuration.
func DefaultEngineConfig(factories []Factory) EngineConfig {
	return EngineConfig{
		AllowedLateness: 10 * time.Minute,
		MaxOpenFindings: 100000,
		Explanation:     DefaultExplanationConfig(),
		Detectors:       DefaultConfigs(factories),
	}
}

// Validate checks the engine-level keys and every detector configuration.
func (c *EngineConfig) Validate(factories []Factory) error {
	var errs []error
	errs = append(errs, nonNegative("allowed_lateness", c.AllowedLateness))
	if c.MaxOpenFindings < 0 {
		errs = append(errs, fieldErrorf("max_open_findings", "must be ≥ 0 (got %d)", c.MaxOpenFindings))
	}
	if c.Explanation != (ExplanationConfig{}) {
		errs = append(errs, c.Explanation.Validate())
	}
	for _, f := range factories {
		if cfg, ok := c.Detectors[f.Name]; ok {
			if err := cfg.Validate(); err != nil {
				errs = append(errs, prefixErrors("detectors."+f.Name, err))
			}
		}
	}
	known := map[string]bool{AnyDetector: true}
	for _, f := range factories {
		known[f.Name] = true
	}
	for i := range c.Allowlist {
		e := &c.Allowlist[i]
		key := fmt.Sprintf("allowlist[%d]", i)
		if err := e.Validate(); err != nil {
			errs = append(errs, prefixErrors(key, err))
		}
		if e.Detector != "" && !known[e.Detector] {
			errs = append(errs, fieldErrorf(key+".detector", "unknown detector %q (known: %s, or *)", e.Detector, strings.Join(factoryNames(factories), ", ")))
		}
	}
	return errors.Join(errs...)
}

// ParseEngineConfig builds an EngineConfig from the YAML mapping of the
// "detection" section, starting from DefaultEngineConfig. It rejects unknown
// keys, unknown detector names and invalid values, and reports all of them
// at once, keyed like "detectors.deceased.grace_period" or
// "allowlist[2].owner". node may be nil (all defaults).
func ParseEngineConfig(node *yaml.Node, factories []Factory) (EngineConfig, error) {
	cfg := DefaultEngineConfig(factories)
	node = unwrapDocument(node)
	if node == nil || isNull(node) {
		return cfg, cfg.Validate(factories)
	}
	if node.Kind != yaml.MappingNode {
		return EngineConfig{}, fmt.Errorf("line %d: detection settings must be a mapping", node.Line)
	}
	var errs []error
	var detectorsNode *yaml.Node
	known := []string{"allowed_lateness", "allowlist", "detectors", "explanation", "max_open_findings"}
	for i := 0; i+1 < len(node.Content); i += 2 {
		k, v := node.Content[i], node.Content[i+1]
		switch k.Value {
		case "allowed_lateness":
			errs = append(errs, decodeStrict(v, &cfg.AllowedLateness, k.Value))
		case "max_open_findings":
			errs = append(errs, decodeStrict(v, &cfg.MaxOpenFindings, k.Value))
		case "allowlist":
			errs = append(errs, decodeStrict(v, &cfg.Allowlist, k.Value))
		case "explanation":
			// Validated here too, so its mistakes are reported together
			// with the detectors' (which DecodeConfigs validates).
			if err := decodeStrict(v, &cfg.Explanation, k.Value); err != nil {
				errs = append(errs, err)
			} else {
				errs = append(errs, cfg.Explanation.Validate())
			}
		case "detectors":
			detectorsNode = v
		default:
			errs = append(errs, fieldErrorf(k.Value, "line %d: unknown key (known: %s)", k.Line, strings.Join(known, ", ")))
		}
	}
	dcfg, err := DecodeConfigs(detectorsNode, factories)
	if err != nil {
		errs = append(errs, err)
	} else {
		cfg.Detectors = dcfg
	}
	if err := errors.Join(errs...); err != nil {
		return EngineConfig{}, err
	}
	if err := cfg.Validate(factories); err != nil {
		return EngineConfig{}, err
	}
	return cfg, nil
}

// Engine runs the enabled detectors for one partition. It is not safe for
// concurrent use: one goroutine calls Process, Flush, Snapshot and Restore.
// Stats and LateEvents may be called from any goroutine.
//
// # Time
//
// The Engine tracks the partition's watermark: the maximum event time seen
// minus AllowedLateness. An event older than the watermark is late: it is
// counted, and still handed to every detector (per-event findings about it
// are as valid as any). Whenever the watermark advances, every
// WatermarkFlusher's FlushUntil runs. The wall clock is never read.
//
// # Repeats
//
// Per-event detectors key their findings by (user, patient, facility-local
// day), so one user opening one patient's record twenty times in a day
// yields one finding id. The Engine emits the first finding for an id at
// once and folds later ones into it: their event ids are collected (up to
// schemas.MaxFindingEventIDs) and counted. It emits the id again, as a
// new version carrying all event ids so far, when a later finding ranks
// higher (a higher severity, or unsuppressed where the earlier one was
// suppressed), and once more when the watermark passes the end of the
// finding's window, if repeats were folded in since its last version.
// Storage keeps the latest version of a finding id. A late event whose
// window has already closed is emitted on its own under the same id.
//
// # Allowlist
//
// Every finding is matched against the allowlist at the event's time (the
// window's end for windowed findings); matches are marked Suppressed and
// kept.
type Engine struct {
	lateness   time.Duration
	maxOpen    int
	env        Env
	runners    []*runner
	allowStat  *Allowlist
	allowSrc   func() *Allowlist
	maxEvent   time.Time
	watermark  time.Time
	open       map[string]*openFinding
	openMinEnd time.Time // earliest window end among open; zero when none
	explain    *explainer

	events     atomic.Uint64
	late       atomic.Uint64
	suppressed atomic.Uint64
	collapsed  atomic.Uint64
	overflow   atomic.Uint64
}

type runner struct {
	name     string
	det      Detector
	flusher  WatermarkFlusher
	snap     Snapshotter
	findings atomic.Uint64
	errors   atomic.Uint64
}

// openFinding is a finding whose window is still open, remembered to fold
// repeats into it.
type openFinding struct {
	Last     schemas.Finding `json:"last"`      // the latest emitted version
	EventIDs []string        `json:"event_ids"` // all event ids so far, capped
	Count    int             `json:"count"`     // events folded in, including the first
	Pending  int             `json:"pending"`   // events folded in since Last was emitted
}

// NewEngine builds an engine running, in factory order, every factory whose
// configuration (cfg.Detectors, else its default) is enabled. env is handed
// to every detector constructor.
func NewEngine(cfg EngineConfig, factories []Factory, env Env) (*Engine, error) {
	if cfg.Detectors == nil {
		cfg.Detectors = Configs{}
	}
	if err := cfg.Validate(factories); err != nil {
		return nil, err
	}
	if cfg.Explanation == (ExplanationConfig{}) {
		cfg.Explanation = DefaultExplanationConfig()
	}
	e := &Engine{
		explain:  newExplainer(cfg.Explanation),
		lateness: cfg.AllowedLateness,
		maxOpen:  cfg.MaxOpenFindings,
		env:      env,
		allowSrc: cfg.AllowlistSource,
		open:     map[string]*openFinding{},
	}
	if len(cfg.Allowlist) > 0 {
		a, err := NewAllowlist(cfg.Allowlist)
		if err != nil {
			return nil, err
		}
		e.allowStat = a
	}
	seen := map[string]bool{}
	for _, f := range factories {
		if seen[f.Name] {
			return nil, fmt.Errorf("detectors: factory %q listed twice", f.Name)
		}
		seen[f.Name] = true
		c, ok := cfg.Detectors[f.Name]
		if !ok {
			c = f.DefaultConfig()
			if err := c.Validate(); err != nil {
				return nil, prefixErrors("detectors."+f.Name, err)
			}
		}
		if en, ok := c.(Enabler); ok && !en.IsEnabled() {
			continue
		}
		denv := env
		denv.explain = e.explain
		d, err := f.New(c, denv)
		if err != nil {
			return nil, fmt.Errorf("detectors.%s: %w", f.Name, err)
		}
		r := &runner{name: f.Name, det: d}
		r.flusher, _ = d.(WatermarkFlusher)
		r.snap, _ = d.(Snapshotter)
		e.runners = append(e.runners, r)
	}
	return e, nil
}

// Detectors returns the names of the running detectors, in run order.
func (e *Engine) Detectors() []string {
	names := make([]string, len(e.runners))
	for i, r := range e.runners {
		names[i] = r.name
	}
	return names
}

// Process runs every detector on ev and returns the findings it completes,
// in detector order, then those of windows the advancing watermark closed.
// A detector error does not stop the others: Process returns every finding
// together with the joined errors, which name detectors and event ids only.
func (e *Engine) Process(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	if ev == nil {
		return nil, errors.New("detectors: nil event")
	}
	if ev.EventTime.IsZero() {
		return nil, fmt.Errorf("detectors: event %s has no event_time", ev.EventID)
	}
	e.events.Add(1)
	if !e.watermark.IsZero() && ev.EventTime.Before(e.watermark) {
		e.late.Add(1)
	}
	var out []schemas.Finding
	var errs []error
	ref := refOf(e.env)
	e.explain.begin(ev, ref)
	defer e.explain.end(ev, ref)
	for _, r := range e.runners {
		fs, err := r.det.Detect(ctx, ev)
		if err != nil {
			r.errors.Add(1)
			errs = append(errs, fmt.Errorf("detector %s: event %s: %w", r.name, ev.EventID, err))
		}
		for i := range fs {
			out = e.admit(out, r, fs[i], ev.UserDepartment, ev.EventTime)
		}
	}
	if ev.EventTime.After(e.maxEvent) {
		e.maxEvent = ev.EventTime
		if wm := e.maxEvent.Add(-e.lateness); wm.After(e.watermark) {
			e.watermark = wm
			out, errs = e.advance(ctx, wm, out, errs)
		}
	}
	return out, errors.Join(errs...)
}

// Flush closes everything at the end of the input (a replay, or shutdown
// of a bounded run): every WatermarkFlusher flushes until EndOfTime and
// every remembered finding with folded repeats is emitted in its final
// version. The watermark itself does not move.
func (e *Engine) Flush(ctx context.Context) ([]schemas.Finding, error) {
	out, errs := e.advance(ctx, EndOfTime, nil, nil)
	return out, errors.Join(errs...)
}

// Close closes every detector that holds resources.
func (e *Engine) Close() error {
	var errs []error
	for _, r := range e.runners {
		if c, ok := r.det.(Closer); ok {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("detector %s: %w", r.name, err))
			}
		}
	}
	return errors.Join(errs...)
}

// advance flushes windowed detectors up to wm and retires the remembered
// findings whose windows end at or before it.
func (e *Engine) advance(ctx context.Context, wm time.Time, out []schemas.Finding, errs []error) ([]schemas.Finding, []error) {
	ref := refOf(e.env)
	if wm != EndOfTime {
		e.explain.prune(wm)
	}
	for _, r := range e.runners {
		if r.flusher == nil {
			continue
		}
		fs, err := r.flusher.FlushUntil(ctx, wm)
		if err != nil {
			r.errors.Add(1)
			errs = append(errs, fmt.Errorf("detector %s: flush: %w", r.name, err))
		}
		for i := range fs {
			dept := ""
			if u, ok := ref.User(fs[i].UserID); ok {
				dept = u.Department
			}
			out = e.admit(out, r, fs[i], dept, fs[i].WindowEnd)
		}
	}
	if e.openMinEnd.IsZero() || wm.Before(e.openMinEnd) {
		return out, errs
	}
	var retired []*openFinding
	var minEnd time.Time
	for id, o := range e.open {
		if end := o.Last.WindowEnd; !end.After(wm) {
			retired = append(retired, o)
			delete(e.open, id)
		} else if minEnd.IsZero() || end.Before(minEnd) {
			minEnd = end
		}
	}
	e.openMinEnd = minEnd
	slices.SortFunc(retired, func(a, b *openFinding) int {
		if c := a.Last.WindowEnd.Compare(b.Last.WindowEnd); c != 0 {
			return c
		}
		return strings.Compare(a.Last.FindingID, b.Last.FindingID)
	})
	for _, o := range retired {
		if o.Pending > 0 {
			out = append(out, e.version(o, o.Last))
			e.countFinding(o.Last.Detector)
		}
	}
	return out, errs
}

// admit normalises a detector's finding, applies the allowlist, folds it
// into a remembered finding with the same id or emits it.
func (e *Engine) admit(out []schemas.Finding, r *runner, f schemas.Finding, dept string, at time.Time) []schemas.Finding {
	f.Detector = r.name
	f.WindowStart, f.WindowEnd = f.WindowStart.UTC(), f.WindowEnd.UTC()
	// A score always lies in its severity's band (schemas/score.go).
	f.Score = schemas.ClampScore(f.Severity, f.Score)
	if len(f.EventIDs) > schemas.MaxFindingEventIDs {
		f.EventIDs = f.EventIDs[:schemas.MaxFindingEventIDs]
	}
	allow := e.allowStat
	if e.allowSrc != nil {
		allow = e.allowSrc()
	}
	if allow.Apply(&f, dept, at) {
		e.suppressed.Add(1)
	}

	if o, ok := e.open[f.FindingID]; ok {
		o.Count++
		for _, id := range f.EventIDs {
			if len(o.EventIDs) < schemas.MaxFindingEventIDs && !slices.Contains(o.EventIDs, id) {
				o.EventIDs = append(o.EventIDs, id)
			}
		}
		if findingRank(f) > findingRank(o.Last) {
			v := e.version(o, f)
			o.Last, o.Pending = v, 0
			r.findings.Add(1)
			return append(out, v)
		}
		o.Pending++
		e.collapsed.Add(1)
		return out
	}
	r.findings.Add(1)
	if e.maxOpen == 0 || !f.WindowEnd.After(e.watermark) {
		return append(out, f)
	}
	if len(e.open) >= e.maxOpen {
		e.overflow.Add(1)
		return append(out, f)
	}
	e.open[f.FindingID] = &openFinding{Last: f, EventIDs: slices.Clone(f.EventIDs), Count: 1}
	if e.openMinEnd.IsZero() || f.WindowEnd.Before(e.openMinEnd) {
		e.openMinEnd = f.WindowEnd
	}
	return append(out, f)
}

// version returns f carrying every event id folded into o so far and, when
// more than one event was folded, an "accesses" fact with their count.
func (e *Engine) version(o *openFinding, f schemas.Finding) schemas.Finding {
	f.EventIDs = slices.Clone(o.EventIDs)
	if o.Count > 1 {
		facts := make(map[string]string, len(f.Evidence.Facts)+1)
		for k, v := range f.Evidence.Facts {
			facts[k] = v
		}
		facts["accesses"] = strconv.Itoa(o.Count)
		f.Evidence.Facts = facts
	}
	return f
}

func (e *Engine) countFinding(detector string) {
	for _, r := range e.runners {
		if r.name == detector {
			r.findings.Add(1)
			return
		}
	}
}

// findingRank orders versions of one finding: unsuppressed above
// suppressed, then by severity.
func findingRank(f schemas.Finding) int {
	r := f.Severity.Rank()
	if !f.Suppressed {
		r += 10
	}
	return r
}

// Coverage returns how many of the accesses processed since the Engine
// was built each kind of explanation covered; safe from any goroutine.
func (e *Engine) Coverage() Coverage { return e.explain.coverage() }

// Watermark returns the partition's watermark (zero before the first event).
func (e *Engine) Watermark() time.Time { return e.watermark }

// MaxEventTime returns the newest event time seen.
func (e *Engine) MaxEventTime() time.Time { return e.maxEvent }

// LateEvents returns how many events arrived behind the watermark.
func (e *Engine) LateEvents() uint64 { return e.late.Load() }

// EngineStats are the Engine's counters, for metrics. Counters are
// cumulative since the Engine was built (they are not part of snapshots).
type EngineStats struct {
	Events     uint64 // events processed
	LateEvents uint64 // events older than the watermark when they arrived
	// Findings counts emitted findings (versions included) by detector.
	Findings map[string]uint64
	// DetectorErrors counts Detect and FlushUntil errors by detector.
	DetectorErrors map[string]uint64
	Suppressed     uint64 // findings an allowlist entry matched
	Collapsed      uint64 // findings folded into an earlier one with the same id
	Overflow       uint64 // findings emitted uncollapsed because MaxOpenFindings was reached
	// Coverage counts accesses by what explained them (see Coverage).
	Coverage Coverage
}

// Stats returns the counters; it is safe from any goroutine.
func (e *Engine) Stats() EngineStats {
	s := EngineStats{
		Events:         e.events.Load(),
		LateEvents:     e.late.Load(),
		Findings:       make(map[string]uint64, len(e.runners)),
		DetectorErrors: make(map[string]uint64, len(e.runners)),
		Suppressed:     e.suppressed.Load(),
		Collapsed:      e.collapsed.Load(),
		Overflow:       e.overflow.Load(),
		Coverage:       e.explain.coverage(),
	}
	for _, r := range e.runners {
		s.Findings[r.name] = r.findings.Load()
		s.DetectorErrors[r.name] = r.errors.Load()
	}
	return s
}

// engineSnapshotVersion is the version of the snapshot envelope. Version
// 2 keys the explainer's own continuity by patient-id hash (own_h);
// Restore still reads version 1, whose "own" is keyed by patient id.
const engineSnapshotVersion = 2

type engineSnapshot struct {
	Version      int                `json:"version"`
	MaxEventTime time.Time          `json:"max_event_time"`
	Watermark    time.Time          `json:"watermark"`
	Open         []*openFinding     `json:"open,omitempty"`
	Detectors    []detectorSnapshot `json:"detectors,omitempty"`
	// Explanation is the explainer's state (continuity, breadth); absent in
	// snapshots taken before it existed, which restore to an empty one.
	Explanation *explainerState `json:"explanation,omitempty"`
}

type detectorSnapshot struct {
	Name  string `json:"name"`
	State []byte `json:"state"`
}

// Snapshot writes the engine's state: one versioned JSON envelope with the
// watermark, the maximum event time, the remembered open findings and the
// state of every Snapshotter detector by name. The pipeline stores it with
// the Kafka offsets it reflects. The same state always yields the same
// bytes.
func (e *Engine) Snapshot(w io.Writer) error {
	s := engineSnapshot{Version: engineSnapshotVersion, MaxEventTime: e.maxEvent, Watermark: e.watermark, Explanation: &e.explain.state}
	for _, o := range e.open {
		s.Open = append(s.Open, o)
	}
	slices.SortFunc(s.Open, func(a, b *openFinding) int { return strings.Compare(a.Last.FindingID, b.Last.FindingID) })
	for _, r := range e.runners {
		if r.snap == nil {
			continue
		}
		var buf bytes.Buffer
		if err := r.snap.Snapshot(&buf); err != nil {
			return fmt.Errorf("detector %s: snapshot: %w", r.name, err)
		}
		s.Detectors = append(s.Detectors, detectorSnapshot{Name: r.name, State: buf.Bytes()})
	}
	enc := json.NewEncoder(w)
	return enc.Encode(&s)
}

// Restore replaces the engine's state with a snapshot. Call it on a fresh
// Engine, before the first Process. Detector states are matched by name:
// states of detectors that no longer run are ignored, and detectors without
// a state in the snapshot start empty.
func (e *Engine) Restore(r io.Reader) error {
	var s engineSnapshot
	dec := json.NewDecoder(r)
	if err := dec.Decode(&s); err != nil {
		return fmt.Errorf("detectors: decoding engine snapshot: %w", err)
	}
	if s.Version != engineSnapshotVersion && s.Version != 1 {
		return fmt.Errorf("detectors: engine snapshot version %d, want %d or 1", s.Version, engineSnapshotVersion)
	}
	byName := map[string][]byte{}
	for _, d := range s.Detectors {
		byName[d.Name] = d.State
	}
	for _, rn := range e.runners {
		state, ok := byName[rn.name]
		if !ok || rn.snap == nil {
			continue
		}
		if err := rn.snap.Restore(bytes.NewReader(state)); err != nil {
			return fmt.Errorf("detector %s: restore: %w", rn.name, err)
		}
	}
	e.maxEvent, e.watermark = s.MaxEventTime, s.Watermark
	e.explain.state = explainerState{Users: map[string]*userExplain{}}
	if s.Explanation != nil {
		e.explain.state = *s.Explanation
		if e.explain.state.Users == nil {
			e.explain.state.Users = map[string]*userExplain{}
		}
		for id, us := range e.explain.state.Users {
			if us == nil { // "null" in the snapshot: nothing kept for the user
				delete(e.explain.state.Users, id)
				continue
			}
			us.upgradeOwn()
		}
	}
	e.open = make(map[string]*openFinding, len(s.Open))
	e.openMinEnd = time.Time{}
	for _, o := range s.Open {
		if o == nil {
			continue
		}
		e.open[o.Last.FindingID] = o
		if e.openMinEnd.IsZero() || o.Last.WindowEnd.Before(e.openMinEnd) {
			e.openMinEnd = o.Last.WindowEnd
		}
	}
	return nil
}
