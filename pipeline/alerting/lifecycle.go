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
	// FindingsWithoutAlert counts the findings stored between lookback
	// and grace ago that some rule with min_count ≤ 1 takes (unsuppressed,
	// at or above its min_severity, its detectors) and that no alert
	// counts: the invariant, which must be 0.
	FindingsWithoutAlert(ctx context.Context, rules []RuleConfig, lookback, grace time.Duration) (uint64, error)
}

// firingFactor: an open alert is sent with endsAt = now + firingFactor ×
// lifecycle.interval, so two refreshes can fail before Alertmanager
// resolves it on its own.
const firingFactor = 3

// lifecycle is the loop that keeps Alertmanager in step with triage.
type lifecycle struct {
	m      *Manager
	store  LifecycleStore
	cfg    LifecycleConfig
	stop   chan struct{}
	done   chan struct{}
	ticked chan struct{} // non-blocking signal after each tick, for tests
}

func (l *lifecycle) start() { go l.run() }

func (l *lifecycle) run() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Interval)
	defer t.Stop()
	for {
		l.tick()
		select {
		case <-l.stop:
			return
		case <-t.C:
		}
	}
}

func (l *lifecycle) close() {
	close(l.stop)
	<-l.done
}

// tick re-sends the firing alerts to Alertmanager, delivers the closings,
// and recomputes the invariant. Every failure is retried at the next tick.
func (l *lifecycle) tick() {
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.Interval)
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
