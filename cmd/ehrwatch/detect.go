package main

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// engineSet is the production ingest.ProcessorFactory: one
// detectors.Engine per assigned partition. It keeps the live engines so
// their counters (Engine.Stats) can be exported, and adds the counters of
// revoked partitions' engines to running totals, so the exported counters
// never go backwards.
type engineSet struct {
	newEngine func() (*detectors.Engine, error)
	// monitor, when set, sees every event before the engines (the
	// unmapped role and department names report).
	monitor *detectors.VocabularyMonitor

	mu      sync.Mutex
	live    map[*detectors.Engine]struct{}
	retired detectors.EngineStats
}

func newEngineSet(newEngine func() (*detectors.Engine, error)) *engineSet {
	return &engineSet{
		newEngine: newEngine,
		live:      map[*detectors.Engine]struct{}{},
		retired:   detectors.EngineStats{Findings: map[string]uint64{}, DetectorErrors: map[string]uint64{}},
	}
}

// NewProcessor implements ingest.ProcessorFactory.
func (s *engineSet) NewProcessor(string, int) (ingest.Processor, error) {
	e, err := s.newEngine()
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	s.live[e] = struct{}{}
	s.mu.Unlock()
	return &partitionEngine{Engine: e, set: s}, nil
}

// partitionEngine is one partition's Engine; Close retires its counters.
// It is a ingest.StatefulProcessor through the Engine's Snapshot and
// Restore.
type partitionEngine struct {
	*detectors.Engine
	set *engineSet
}

var _ ingest.StatefulProcessor = (*partitionEngine)(nil)

// Process counts the event's role and department names, then runs the
// detectors.
func (p *partitionEngine) Process(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	if m := p.set.monitor; m != nil {
		m.Observe(ev)
	}
	return p.Engine.Process(ctx, ev)
}

// Close closes the engine's detectors and retires its counters.
func (p *partitionEngine) Close() error {
	s := p.set
	s.mu.Lock()
	if _, ok := s.live[p.Engine]; ok {
		delete(s.live, p.Engine)
		addStats(&s.retired, p.Engine.Stats())
	}
	s.mu.Unlock()
	return p.Engine.Close()
}

func addStats(dst *detectors.EngineStats, s detectors.EngineStats) {
	dst.Events += s.Events
	dst.LateEvents += s.LateEvents
	dst.Suppressed += s.Suppressed
	dst.Collapsed += s.Collapsed
	dst.Overflow += s.Overflow
	for k, v := range s.Findings {
		dst.Findings[k] += v
	}
	for k, v := range s.DetectorErrors {
		dst.DetectorErrors[k] += v
	}
	dst.Coverage.Add(s.Coverage)
}

// stats sums the retired and the live engines' counters.
func (s *engineSet) stats() detectors.EngineStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := detectors.EngineStats{Findings: map[string]uint64{}, DetectorErrors: map[string]uint64{}}
	addStats(&out, s.retired)
	for e := range s.live {
		addStats(&out, e.Stats())
	}
	return out
}

var (
	engineEventsDesc = prometheus.NewDesc("ehrwatch_engine_events_total",
		"Events the detector engines processed (replays after a restore included).", nil, nil)
	engineLateDesc = prometheus.NewDesc("ehrwatch_engine_late_events_total",
		"Events older than their partition's watermark (max event time minus detection.allowed_lateness) when they arrived.", nil, nil)
	engineFindingsDesc = prometheus.NewDesc("ehrwatch_engine_findings_total",
		"Findings (and new versions of findings) the detector engines emitted, by detector; ehrwatch_findings_total counts those stored.", []string{"detector"}, nil)
	engineErrorsDesc = prometheus.NewDesc("ehrwatch_engine_detector_errors_total",
		"Detect and flush errors, by detector.", []string{"detector"}, nil)
	engineSuppressedDesc = prometheus.NewDesc("ehrwatch_engine_suppressed_findings_total",
		"Findings an allowlist entry matched (stored as suppressed).", nil, nil)
	engineCollapsedDesc = prometheus.NewDesc("ehrwatch_engine_collapsed_findings_total",
		"Repeats folded into an earlier finding with the same id.", nil, nil)
	engineOverflowDesc = prometheus.NewDesc("ehrwatch_engine_open_findings_overflow_total",
		"Findings emitted without collapsing because detection.max_open_findings was reached.", nil, nil)
	// One label, "by", with five values: what explained the access (care_team,
	// department_encounter, own_continuity, department_involvement) or
	// unexplained. Departments and roles are not labels (unbounded); replay
	// and the demo print them.
	engineExplainedDesc = prometheus.NewDesc("ehrwatch_engine_accesses_total",
		"Accesses the detector engines processed, by what explained them (explanation coverage).", []string{"by"}, nil)
)

// Describe implements prometheus.Collector.
func (s *engineSet) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{engineEventsDesc, engineLateDesc, engineFindingsDesc, engineErrorsDesc,
		engineSuppressedDesc, engineCollapsedDesc, engineOverflowDesc, engineExplainedDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (s *engineSet) Collect(ch chan<- prometheus.Metric) {
	st := s.stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	counter(engineEventsDesc, st.Events)
	counter(engineLateDesc, st.LateEvents)
	counter(engineSuppressedDesc, st.Suppressed)
	counter(engineCollapsedDesc, st.Collapsed)
	counter(engineOverflowDesc, st.Overflow)
	for _, by := range detectors.ExplainedBy {
		counter(engineExplainedDesc, st.Coverage.By[by], by)
	}
	for _, f := range detectors.Registry() {
		counter(engineFindingsDesc, st.Findings[f.Name], f.Name)
		counter(engineErrorsDesc, st.DetectorErrors[f.Name], f.Name)
	}
}
