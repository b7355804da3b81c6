package alerting

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ErrClosed is returned by Observe after Close.
var ErrClosed = errors.New("alerting: manager closed")

// Options are the Manager's collaborators.
type Options struct {
	// Store persists alerts and dead letters. Nil: nothing is persisted
	// (dry runs, tests); dead letters are only counted. When it is also a
	// StateStore (ClickHouseStore is), the engine's state is persisted
	// too (see StateStore).
	Store Store
	// State overrides the StateStore taken from Store
	// (NewMemoryStateStore in tests).
	State StateStore
	// Lifecycle overrides the LifecycleStore taken from Store. Without
	// one the lifecycle loop does not run.
	Lifecycle LifecycleStore
	// Logger receives operational messages: ids, classes and counts only.
	// The zero value discards them.
	Logger zerolog.Logger
	// Registerer receives the metrics. Nil: metrics are kept unregistered.
	// The global default registry is never used implicitly.
	Registerer prometheus.Registerer
	// Version is ehrwatch's version, sent as the CEF device version.
	Version string
	// Now is the wall clock, used only for delivery (retries, webhook
	// timestamps, syslog timestamps). Nil: time.Now.
	Now func() time.Time
}

// Manager turns findings into alerts, persists them and hands them to the
// outputs. Observe and Close may be called from different goroutines.
type Manager struct {
	cfg     Config
	store   Store
	log     zerolog.Logger
	m       *metrics
	outputs []*output
	dl      *deadLetters
	life    *lifecycle // nil: off

	sentMu sync.Mutex
	sent   []Sent // delivered notifications not yet recorded

	mu      sync.Mutex
	eng     *engine
	state   StateStore       // nil: state in memory
	pending map[string]Alert // written alerts that failed to persist, by id (memory mode)
	closed  bool

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg (keys under "alerting"), reads the outputs' secret
// files and starts one delivery worker per enabled output.
func New(cfg Config, opts Options) (*Manager, error) {
	if err := schemas.UnderKey("alerting", cfg.Validate()); err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	var notifiers []namedNotifier
	if cfg.Enabled {
		var err error
		if notifiers, err = buildNotifiers(cfg, opts.Version, now); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, fmt.Errorf("alerting: register metrics: %w", err)
	}
	mgr := &Manager{
		cfg:     cfg,
		store:   opts.Store,
		log:     opts.Logger.With().Str("component", "alerting").Logger(),
		m:       m,
		eng:     newEngine(cfg),
		pending: map[string]Alert{},
	}
	mgr.state = opts.State
	if mgr.state == nil {
		mgr.state, _ = opts.Store.(StateStore)
	}
	mgr.eng.persistent = mgr.state != nil
	mgr.dl = newDeadLetters(opts.Store, m, mgr.log)
	ls := opts.Lifecycle
	if ls == nil {
		ls, _ = opts.Store.(LifecycleStore)
	}
	if cfg.Enabled && cfg.Lifecycle.Enabled && ls != nil {
		mgr.life = &lifecycle{m: mgr, store: ls, cfg: cfg.Lifecycle, started: time.Now(),
			stop: make(chan struct{}), done: make(chan struct{}), ticked: make(chan struct{}, 1)}
	}
	for _, n := range notifiers {
		if am, ok := n.n.(*alertmanager); ok && mgr.life != nil {
			am.firingFor = firingFactor * cfg.Lifecycle.Interval
		}
		o := newOutput(n.name, n.common, n.n, m, mgr.dl, mgr.log, now)
		o.onSent = mgr.delivered
		mgr.outputs = append(mgr.outputs, o)
	}
	mgr.dl.start()
	for _, o := range mgr.outputs {
		o.start()
	}
	if mgr.life != nil {
		mgr.life.start()
	}
	return mgr, nil
}

// Observe groups findings into alerts, writes the new and updated alerts
// to the store in one batch, hands the ones due a notification to the
// outputs (never waiting for delivery), and returns them.
//
// Observe uses finding time only. It is idempotent: findings it has
// already counted change nothing, so a batch retried after an error (or
// re-read after a restart within the state's lifetime) yields the same
// alert ids and no extra count. When the write fails, the alerts are kept
// and written (and notified) with the next call; the error is returned so
// the caller does not commit its input.
func (m *Manager) Observe(ctx context.Context, findings []schemas.Finding) ([]Alert, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil, ErrClosed
	}
	if !m.cfg.Enabled {
		return nil, nil
	}
	if m.state != nil {
		return m.observePersistent(ctx, findings)
	}
	res := m.eng.observe(findings)
	m.recordEngineMetrics(res)

	for _, a := range res.alerts {
		if old, ok := m.pending[a.AlertID]; ok {
			a.Notify = a.Notify || old.Notify
			if old.Change.rank() > a.Change.rank() {
				a.Change = old.Change
			}
		}
		m.pending[a.AlertID] = a
	}
	if len(m.pending) == 0 {
		return nil, nil
	}
	batch := make([]Alert, 0, len(m.pending))
	for _, a := range m.pending {
		batch = append(batch, a)
	}
	sort.Slice(batch, func(i, j int) bool { return batch[i].AlertID < batch[j].AlertID })
	if m.store != nil {
		if err := m.store.WriteAlerts(ctx, batch); err != nil {
			m.m.persistErrs.Inc()
			m.m.persistPend.Set(float64(len(m.pending)))
			m.log.Error().Str("error", err.Error()).Int("alerts", len(batch)).Msg("write alerts; will retry with the next batch")
			return nil, err
		}
	}
	clear(m.pending)
	m.m.persistPend.Set(0)
	m.dispatch(batch, findings)
	return batch, nil
}

// delivered is every output's onSent: it records the age of the notified
// event (ehrwatch_event_to_alert_seconds) and tells the lifecycle loop.
// Kafka timestamps are wall-clock times, so this uses the wall clock, not
// Options.Now.
func (m *Manager) delivered(output string, a Alert) {
	if !a.eventAt.IsZero() && !a.Resolved {
		det := a.Detector
		if det == "" {
			det = "multiple"
		}
		m.m.eventToAlert.WithLabelValues(output, det).Observe(max(time.Since(a.eventAt).Seconds(), 0))
	}
	if m.life != nil {
		m.recordSent(output, a)
	}
}

// stampEventTimes sets each alert's eventAt: the newest Kafka timestamp
// among this batch's findings that the alert lists, or, when it lists none
// of them (its finding ids are capped to the earliest), the newest of the
// batch.
func stampEventTimes(alerts []Alert, findings []schemas.Finding) {
	var newest time.Time
	at := make(map[string]time.Time, len(findings))
	for i := range findings {
		t := findings[i].ReceivedAt
		if t.IsZero() {
			continue
		}
		if t.After(at[findings[i].FindingID]) {
			at[findings[i].FindingID] = t
		}
		if t.After(newest) {
			newest = t
		}
	}
	if newest.IsZero() {
		return
	}
	for i := range alerts {
		var t time.Time
		for _, id := range alerts[i].FindingIDs {
			if ft := at[id]; ft.After(t) {
				t = ft
			}
		}
		if t.IsZero() {
			t = newest
		}
		alerts[i].eventAt = t
	}
}

func (m *Manager) recordEngineMetrics(res observeResult) {
	m.m.findings.WithLabelValues("observed").Add(float64(res.observed))
	m.m.findings.WithLabelValues("suppressed").Add(float64(res.suppressed))
	m.m.findings.WithLabelValues("invalid").Add(float64(res.invalid))
	if m.eng.tooLate > 0 {
		m.m.findings.WithLabelValues("too_late").Add(float64(m.eng.tooLate))
		m.eng.tooLate = 0
	}
	for kind, n := range m.eng.evictions {
		m.m.evictions.WithLabelValues(kind).Add(float64(n))
		delete(m.eng.evictions, kind)
	}
	for kind, n := range m.eng.stateSizes() {
		m.m.state.WithLabelValues(kind).Set(float64(n))
	}
}

// Close shuts alerting down; call it after the last Observe and before
// closing the ClickHouse connection. It stops accepting findings, lets
// each output deliver what is queued until ctx is done, then dead-letters
// whatever is still queued or retrying (class shutdown), and writes the
// dead letters with a last flush (bounded by ctx, or 10s once ctx has
// expired). It is idempotent.
func (m *Manager) Close(ctx context.Context) error {
	m.closeOnce.Do(func() {
		if m.life != nil {
			m.life.close()
		}
		m.mu.Lock()
		m.closed = true
		if n := len(m.pending); n > 0 {
			m.log.Error().Int("alerts", n).Msg("closing with alerts not yet written; they will be rebuilt from the findings on reprocessing")
		}
		m.mu.Unlock()

		for _, o := range m.outputs {
			o.q.close()
		}
		for _, o := range m.outputs {
			select {
			case <-o.done:
			case <-ctx.Done():
				o.cancel() // abort retries and in-flight sends
				<-o.done
			}
			o.cancel()
		}
		var errs []error
		for _, o := range m.outputs {
			if err := o.n.close(); err != nil {
				errs = append(errs, fmt.Errorf("alerting: close output %s: %w", o.name, err))
			}
		}
		fctx, cancel := flushContext(ctx)
		defer cancel()
		if err := m.dl.shutdown(fctx); err != nil {
			errs = append(errs, err)
		}
		m.closeErr = errors.Join(errs...)
	})
	return m.closeErr
}

// flushContext is ctx, or, when ctx is already done, a short context of
// its own so the last dead letters still get a chance.
func flushContext(ctx context.Context) (context.Context, context.CancelFunc) {
	if ctx.Err() == nil {
		return context.WithCancel(ctx)
	}
	return context.WithTimeout(context.WithoutCancel(ctx), deadLetterWriteLimit)
}

// observePersistent is Observe with a StateStore: load the state the
// findings touch, apply them, write the changed state and alerts back,
// then notify. The working set is dropped whatever happens, so a failed
// call leaves nothing behind and its retry starts again from the store.
func (m *Manager) observePersistent(ctx context.Context, findings []schemas.Finding) ([]Alert, error) {
	defer m.eng.reset()
	fail := func(op string, err error) ([]Alert, error) {
		m.m.persistErrs.Inc()
		m.log.Error().Str("error", err.Error()).Str("operation", op).Msg("alert state; the batch will be retried")
		return nil, err
	}
	if keys := m.eng.neededKeys(findings); !keys.empty() {
		recs, err := m.state.LoadState(ctx, keys)
		if err != nil {
			return fail("load", err)
		}
		if err := m.eng.install(recs); err != nil {
			return fail("decode", err)
		}
		if more := m.eng.riskGroupKeys(findings); len(more) > 0 {
			recs, err := m.state.LoadState(ctx, StateKeys{Groups: more})
			if err != nil {
				return fail("load", err)
			}
			if err := m.eng.install(recs); err != nil {
				return fail("decode", err)
			}
		}
	}
	m.m.loaded.Add(float64(len(m.eng.versions)))
	res := m.eng.observe(findings)
	m.recordEngineMetrics(res)
	recs, err := m.eng.dirtyRecords()
	if err != nil {
		return fail("encode", err)
	}
	batch := res.alerts
	sort.Slice(batch, func(i, j int) bool { return batch[i].AlertID < batch[j].AlertID })
	if len(recs) == 0 && len(batch) == 0 {
		return nil, nil
	}
	if err := m.state.WriteState(ctx, recs, batch, m.eng.members); err != nil {
		return fail("write", err)
	}
	m.dispatch(batch, findings)
	return batch, nil
}

// dispatch hands a stored batch of alerts to the outputs: it stamps the
// alerts' event times from the findings, counts them by rule and change,
// and enqueues those to notify on every output.
func (m *Manager) dispatch(batch []Alert, findings []schemas.Finding) {
	stampEventTimes(batch, findings)
	for _, a := range batch {
		m.m.alerts.WithLabelValues(a.Rule, string(a.Change)).Inc()
		if !a.Notify {
			continue
		}
		for _, o := range m.outputs {
			o.enqueue(a)
		}
	}
}
