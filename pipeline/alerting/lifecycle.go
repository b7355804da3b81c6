package alerting

import (
	"context"
	"time"
)

// LifecycleStore is what the lifecycle loop reads and records.
// ClickHouseStore implements it on the alerts, alert_state_history,
// alert_lifecycle, alert_findings and findings tables.
type LifecycleStore interface {
	// FiringAlerts returns the notified alerts (notified_version > 0) that
	// triage has not closed, at their latest version.
	FiringAlerts(ctx context.Context) ([]Alert, error)
	// ClosedAlerts returns the notified alerts closed in triage whose
	// closing has not yet been delivered to output. CloseKey identifies the
	// closing (a reopened and closed again alert is resolved again).
	ClosedAlerts(ctx context.Context, output string) ([]Alert, error)
	// MarkResolved records that output got the closing of a.
	MarkResolved(ctx context.Context, output string, a Alert) error
	// MarkDelivered records that the outputs delivered these
	// notifications (the alert's NotifiedVersion).
	MarkDelivered(ctx context.Context, sent []Sent) error
	// PendingNotifications returns the alerts notified between maxAge and
	// minAge ago whose notified version output has neither delivered nor
	// dead-lettered for good (queue_full and shutdown failures are
	// pending): notifications a crash or a shutdown lost.
	PendingNotifications(ctx context.Context, output string, minAge, maxAge time.Duration) ([]Alert, error)
	// FindingsWithoutAlert counts the findings stored between lookback
	// and grace ago that some rule with min_count ≤ 1 takes (unsuppressed,
	// at or above its min_severity, its detectors) and that no alert
	// counts: the invariant, which must be 0.
	FindingsWithoutAlert(ctx context.Context, rules []RuleConfig, lookback, grace time.Duration) (uint64, error)
}

// Sent is one delivered notification.
type Sent struct {
	Output  string
	AlertID string
	Version uint64 // the alert's NotifiedVersion
}

// Pending notifications are looked for among alerts notified between
// pendingMaxAge and 3 × lifecycle.interval ago (or, in a process younger
// than that, before it started): younger ones may still be in an output's
// queue. A resend that races a slow delivery carries the same key.
const (
	pendingMaxAge = 24 * time.Hour
	maxUnrecorded = 100_000
)

// recordSent remembers a delivered notification until the next tick
// writes it.
func (m *Manager) recordSent(output string, a Alert) {
	if a.Resolved || a.NotifiedVersion == 0 {
		return
	}
	m.sentMu.Lock()
	defer m.sentMu.Unlock()
	if len(m.sent) >= maxUnrecorded {
		// Forgetting one only means it may be re-sent, with the same key.
		m.sent = m.sent[1:]
	}
	m.sent = append(m.sent, Sent{Output: output, AlertID: a.AlertID, Version: a.NotifiedVersion})
}

// firingFactor: an open alert is sent with endsAt = now + firingFactor ×
// lifecycle.interval, so two refreshes can fail before Alertmanager
// resolves it on its own.
const firingFactor = 3

// tickTimeout bounds a lifecycle tick whose interval is shorter.
const tickTimeout = 30 * time.Second

// lifecycle is the loop that keeps Alertmanager in step with triage.
type lifecycle struct {
	m      *Manager
	store  LifecycleStore
	cfg    LifecycleConfig
	stop   chan struct{}
	done   chan struct{}
	ticked chan struct{} // non-blocking signal after each tick, for tests
	// started is when the loop was created: alerts notified before it
	// cannot be in this process's queues.
	started time.Time
}

func (l *lifecycle) start() { go l.run() }

func (l *lifecycle) run() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	// Deliveries are recorded within a second, so a crash soon after a
	// delivery does not make the next process send it again.
	f := time.NewTicker(min(l.cfg.Interval, time.Second))
	defer f.Stop()
	l.tick()
	for {
		select {
		case <-l.stop:
			l.flushSent(context.Background())
			return
		case <-t.C:
			l.tick()
		case <-f.C:
			l.flushSent(context.Background())
		}
	}
}

// flushSent writes the delivered notifications recorded so far.
func (l *lifecycle) flushSent(parent context.Context) {
	m := l.m
	m.sentMu.Lock()
	sent := m.sent
	m.sent = nil
	m.sentMu.Unlock()
	if len(sent) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(parent, tickTimeout)
	defer cancel()
	if err := l.store.MarkDelivered(ctx, sent); err != nil {
		l.fail("mark_delivered", err)
		m.sentMu.Lock()
		m.sent = append(sent, m.sent...)
		m.sentMu.Unlock()
	}
}

func (l *lifecycle) close() {
	close(l.stop)
	<-l.done
}

// tick re-sends the firing alerts to Alertmanager, delivers the closings,
// and recomputes the invariant. Every failure is retried at the next tick.
func (l *lifecycle) tick() {
	// A slow tick delays the next one (the ticker drops ticks); it is not
	// cut at one interval, which would starve a loaded server's queries.
	ctx, cancel := context.WithTimeout(context.Background(), max(l.cfg.Interval, tickTimeout))
	defer cancel()
	go func() {
		select {
		case <-l.stop:
			cancel()
		case <-ctx.Done():
		}
	}()
	m := l.m
	var am *output
	for _, o := range m.outputs {
		if o.name == OutputAlertmanager {
			am = o
		}
	}
	if am != nil {
		if firing, err := l.store.FiringAlerts(ctx); err != nil {
			l.fail("firing", err)
		} else {
			var send []Alert
			for _, a := range firing {
				if am.wants(a) {
					send = append(send, a)
				}
			}
			for i := 0; i < len(send); i += 100 {
				chunk := send[i:min(i+100, len(send))]
				if err := am.n.(*alertmanager).sendMany(ctx, chunk); err != nil {
					m.m.lifecycle.WithLabelValues(OutputAlertmanager, "refresh", "error").Add(float64(len(chunk)))
					m.log.Warn().Str("error", err.Error()).Int("alerts", len(chunk)).Msg("refreshing firing alerts in Alertmanager; next tick retries")
					break
				}
				m.m.lifecycle.WithLabelValues(OutputAlertmanager, "refresh", "ok").Add(float64(len(chunk)))
			}
			m.m.firing.Set(float64(len(send)))
		}
	}
	for _, o := range m.outputs {
		if o.name != OutputAlertmanager && o.name != OutputWebhook {
			continue
		}
		closed, err := l.store.ClosedAlerts(ctx, o.name)
		if err != nil {
			l.fail("closed", err)
			break
		}
		for _, a := range closed {
			if !o.wants(a) {
				continue
			}
			if err := o.n.send(ctx, &a); err != nil {
				m.m.lifecycle.WithLabelValues(o.name, "resolve", "error").Inc()
				m.log.Warn().Str("error", err.Error()).Str("alert_id", a.AlertID).Msg("resolving a closed alert; next tick retries")
				continue
			}
			if err := l.store.MarkResolved(ctx, o.name, a); err != nil {
				l.fail("mark_resolved", err)
				continue
			}
			m.m.lifecycle.WithLabelValues(o.name, "resolve", "ok").Inc()
		}
	}
	l.flushSent(ctx)
	// Notifications lost by a crash or a shutdown go out again, with the
	// same idempotency key (Alertmanager gets every firing alert above).
	// An alert notified before this process started is in no queue of
	// ours: it is pending at once. Later ones get 3 intervals to leave
	// through the queue first.
	minAge := min(firingFactor*l.cfg.Interval, time.Since(l.started))
	for _, o := range m.outputs {
		if o.name == OutputAlertmanager {
			continue
		}
		pending, err := l.store.PendingNotifications(ctx, o.name, minAge, pendingMaxAge)
		if err != nil {
			l.fail("pending", err)
			break
		}
		for _, a := range pending {
			if o.wants(a) {
				o.enqueue(a)
				m.m.lifecycle.WithLabelValues(o.name, "resend", "queued").Inc()
			}
		}
	}
	if n, err := l.store.FindingsWithoutAlert(ctx, m.cfg.Rules, l.cfg.InvariantLookback, l.cfg.InvariantGrace); err != nil {
		l.fail("invariant", err)
	} else {
		m.m.withoutAlert.Set(float64(n))
		if n > 0 {
			m.log.Error().Uint64("findings", n).Msg("findings at or above the alerting threshold without an alert")
		}
	}
	select {
	case l.ticked <- struct{}{}:
	default:
	}
}

func (l *lifecycle) fail(op string, err error) {
	l.m.m.lifecycleErrs.WithLabelValues(op).Inc()
	l.m.log.Warn().Str("operation", op).Str("error", err.Error()).Msg("alert lifecycle; next tick retries")
}

// wants reports whether the output takes a at all (its min_severity).
func (o *output) wants(a Alert) bool {
	return o.cfg.MinSeverity == "" || a.Severity.Rank() >= o.cfg.MinSeverity.Rank()
}
