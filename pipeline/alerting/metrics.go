package alerting

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on the registerer given in Options. Every label
// value comes from a closed set (rule names from the configuration, output
// names, error classes), never from a finding.
type metrics struct {
	findings      *prometheus.CounterVec // result
	alerts        *prometheus.CounterVec // rule, change
	state         *prometheus.GaugeVec   // kind
	evictions     *prometheus.CounterVec // kind
	persistErrs   prometheus.Counter
	persistPend   prometheus.Gauge
	loaded        prometheus.Counter
	lifecycle     *prometheus.CounterVec // output, kind, result
	lifecycleErrs *prometheus.CounterVec // operation
	firing        prometheus.Gauge
	withoutAlert  prometheus.Gauge
	sent          *prometheus.CounterVec // output
	failed        *prometheus.CounterVec // output, class
	dropped       *prometheus.CounterVec // output, reason
	queued        *prometheus.GaugeVec   // output
	latency       *prometheus.HistogramVec
	attemptErrors *prometheus.CounterVec   // output, class
	eventToAlert  *prometheus.HistogramVec // output, detector

	deadLetters           prometheus.Counter
	deadLettersLost       prometheus.Counter
	deadLetterWriteErrors prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	const ns, sub = "ehrwatch", "alerting"
	m := &metrics{
		findings: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "findings_total",
			Help: "Findings offered to alerting, by result (observed, suppressed, invalid, too_late)."}, []string{"result"}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "alerts_total",
			Help: "Alert rows emitted, by rule and change (new, escalated, repeated, updated)."}, []string{"rule", "change"}),
		state: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "state_entries",
			Help: "Entries held in memory, by kind (groups, risk_users, surge_patients)."}, []string{"kind"}),
		evictions: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "state_evictions_total",
			Help: "State entries dropped, by kind (group_expired: by finding time; group, risk_user, surge_patient, surge_user: by cap)."}, []string{"kind"}),
		persistErrs: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "persist_errors_total",
			Help: "Failed writes of alerts to ClickHouse (the alerts are retried with the next Observe)."}),
		persistPend: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "persist_pending",
			Help: "Alerts waiting to be written after a failed write."}),
		loaded: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "state_loaded_total",
			Help: "Persisted state records (groups, risk users, surge patients) loaded to apply findings."}),
		lifecycle: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lifecycle_sends_total",
			Help: "Lifecycle deliveries, by output, kind (refresh: a firing alert re-sent with a new endsAt; resolve: a closing) and result (ok, error)."}, []string{"output", "kind", "result"}),
		lifecycleErrs: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "lifecycle_errors_total",
			Help: "Failed lifecycle-loop store operations, by operation (firing, closed, mark_resolved, invariant); retried at the next tick."}, []string{"operation"}),
		firing: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "firing_alerts",
			Help: "Notified alerts not closed in triage, kept firing in Alertmanager."}),
		withoutAlert: prometheus.NewGauge(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "findings_without_alert",
			Help: "Invariant, must be 0: stored findings at or above a rule's threshold (min_count <= 1) that no alert counts, stored between lifecycle.invariant_lookback and lifecycle.invariant_grace ago."}),
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "notifications_sent_total",
			Help: "Alert notifications delivered, by output."}, []string{"output"}),
		failed: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "notifications_failed_total",
			Help: "Alert notifications given up after their last attempt (dead-lettered), by output and error class."}, []string{"output", "class"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "notifications_dropped_total",
			Help: "Alert notifications dropped before an attempt (dead-lettered), by output and reason (queue_full, shutdown)."}, []string{"output", "reason"}),
		queued: prometheus.NewGaugeVec(prometheus.GaugeOpts{Namespace: ns, Subsystem: sub, Name: "notifications_queued",
			Help: "Alert notifications waiting in an output's queue."}, []string{"output"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: ns, Subsystem: sub, Name: "notification_latency_seconds",
			Help:    "Time from enqueue to successful delivery, retries included, by output.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600}}, []string{"output"}),
		eventToAlert: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "ehrwatch_event_to_alert_seconds",
			Help: "Age of the notified event when a notification was delivered: from the Kafka timestamp of the event behind the finding that made the alert notify, to the output's successful send, by output and detector (\"multiple\" for an alert over several detectors). Same buckets as ehrwatch_event_to_stored_seconds.",
			// 10 ms .. ~10 min, 25% steps (ingest.LatencyBuckets).
			Buckets: prometheus.ExponentialBuckets(0.01, 1.25, 50)}, []string{"output", "detector"}),
		attemptErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "notification_attempt_errors_total",
			Help: "Failed delivery attempts (retried or not), by output and error class."}, []string{"output", "class"}),
		deadLetters: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letters_total",
			Help: "Delivery failures recorded for alert_delivery_failures."}),
		deadLettersLost: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letters_lost_total",
			Help: "Delivery failures that could not be written (buffer overflow or write errors at shutdown)."}),
		deadLetterWriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Namespace: ns, Subsystem: sub, Name: "dead_letter_write_errors_total",
			Help: "Failed writes to alert_delivery_failures (retried)."}),
	}
	if reg == nil {
		return m, nil
	}
	for _, c := range []prometheus.Collector{m.findings, m.alerts, m.state, m.evictions, m.persistErrs, m.persistPend, m.loaded, m.lifecycle, m.lifecycleErrs, m.firing, m.withoutAlert,
		m.sent, m.failed, m.dropped, m.queued, m.latency, m.eventToAlert, m.attemptErrors, m.deadLetters, m.deadLettersLost, m.deadLetterWriteErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}
