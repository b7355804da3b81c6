package ingest

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// metrics are the pipeline's Prometheus metrics, on a registry of their
// own. Labels are topics, partitions, tables, detector names and error
// classes: bounded sets, never ids or data.
type metrics struct {
	reg *prometheus.Registry

	consumed       *prometheus.CounterVec // topic
	stored         *prometheus.CounterVec // table
	deadLettered   *prometheus.CounterVec // error_class
	ignored        *prometheus.CounterVec // reason
	findings       *prometheus.CounterVec // detector
	detectorErrors prometheus.Counter
	fetchErrors    prometheus.Counter
	fetchSkipped   prometheus.Counter
	batchRows      *prometheus.HistogramVec // table
	insertSeconds  *prometheus.HistogramVec // table
	flushSeconds   prometheus.Histogram
	retries        *prometheus.CounterVec // operation
	inFlight       prometheus.Gauge
	lag            *prometheus.GaugeVec // topic, partition
	committed      *prometheus.GaugeVec // topic, partition
	commits        *prometheus.CounterVec
	lastCommit     prometheus.Gauge
	assigned       prometheus.Gauge
	generations    prometheus.Counter

	afterStoreSeconds prometheus.Histogram
	eventToStored     *prometheus.HistogramVec // table (access_events, findings)
	snapshots         *prometheus.CounterVec   // result
	snapshotBytes     prometheus.Histogram
	snapshotSeconds   prometheus.Histogram
	restores          *prometheus.CounterVec // result
	replayed          prometheus.Counter
	refusedRows       *prometheus.CounterVec // table
}

// LatencyBuckets are the buckets of the event-age histograms
// (ehrwatch_event_to_stored_seconds, and alerting's
// ehrwatch_event_to_alert_seconds): 10 ms to about 10 minutes, each 25%
// wider than the one before, so a percentile read from them is within
// 25% of the true value.
var LatencyBuckets = prometheus.ExponentialBuckets(0.01, 1.25, 50)

// newMetrics registers the pipeline's metrics (and the Go and process
// collectors) with reg.
func newMetrics(reg *prometheus.Registry) *metrics {
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	m := &metrics{reg: reg}
	m.consumed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_events_consumed_total", Help: "Messages fetched from Kafka.",
	}, []string{"topic"})
	m.stored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_rows_stored_total", Help: "Rows durably inserted into ClickHouse, by table.",
	}, []string{"table"})
	m.deadLettered = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_dlq_messages_total", Help: "Messages durably dead-lettered (DLQ topic and dlq table), by error class.",
	}, []string{"error_class"})
	m.ignored = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_events_ignored_total", Help: "Well-formed messages that are not chart accesses (logins, searches without a patient…), skipped and committed, by reason.",
	}, []string{"reason"})
	m.refusedRows = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_clickhouse_refused_rows_total",
		Help: "Rows ClickHouse refused for a reason retrying cannot cure, isolated by bisection, by table (events and findings are dead-lettered).",
	}, []string{"table"})
	f(m.refusedRows)
	m.findings = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_findings_total", Help: "Findings durably stored, by detector.",
	}, []string{"detector"})
	m.detectorErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ehrwatch_detector_errors_total", Help: "Events for which a detector returned an error (the event is still stored).",
	})
	m.fetchErrors = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ehrwatch_fetch_errors_total", Help: "Failed Kafka fetches (each retried after a pause).",
	})
	m.fetchSkipped = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ehrwatch_fetch_skipped_offsets_total",
		Help: "Offsets that retention deleted before they were consumed, skipped: access events ehrwatch never saw.",
	})
	m.batchRows = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ehrwatch_batch_rows", Help: "Rows per INSERT, by table.",
		Buckets: prometheus.ExponentialBuckets(1, 4, 10), // 1 .. 262144
	}, []string{"table"})
	m.insertSeconds = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ehrwatch_insert_duration_seconds", Help: "Duration of one INSERT attempt, by table.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12),
	}, []string{"table"})
	m.flushSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ehrwatch_flush_duration_seconds", Help: "Duration of one flush (DLQ produce and every table's INSERT, retries included).",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
	})
	m.retries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_retries_total", Help: "Retried operations, by operation.",
	}, []string{"operation"})
	m.inFlight = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ehrwatch_messages_in_flight", Help: "Messages fetched and processed but not yet durably stored.",
	})
	m.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_consumer_lag", Help: "High watermark minus committed offset, per assigned partition.",
	}, []string{"topic", "partition"})
	m.committed = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_committed_offset", Help: "Last offset committed, per assigned partition.",
	}, []string{"topic", "partition"})
	m.commits = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_offset_commits_total", Help: "Offset commit requests, by result.",
	}, []string{"result"})
	m.lastCommit = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ehrwatch_last_commit_timestamp_seconds", Help: "Unix time of the last successful offset commit.",
	})
	m.assigned = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "ehrwatch_assigned_partitions", Help: "Partitions assigned to this instance.",
	})
	m.generations = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ehrwatch_group_generations_total", Help: "Consumer group generations joined.",
	})
	m.afterStoreSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ehrwatch_after_store_duration_seconds", Help: "Duration of the after-store hook (alerting) for one batch, retries included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 14),
	})
	m.eventToStored = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ehrwatch_event_to_stored_seconds",
		Help:    "Age of a row when its INSERT succeeded: from the Kafka timestamp of its event (for a finding, of the event that completed it) to the end of the write, by table (access_events, findings).",
		Buckets: LatencyBuckets,
	}, []string{"table"})
	m.eventToStored.WithLabelValues(store.TableEvents)
	m.eventToStored.WithLabelValues(store.TableFindings)
	m.snapshots = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_detector_snapshots_total", Help: "Detector snapshots taken, by result (ok, error, too_large).",
	}, []string{"result"})
	m.snapshotBytes = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ehrwatch_detector_snapshot_bytes", Help: "Size of one compressed detector snapshot.",
		Buckets: prometheus.ExponentialBuckets(1024, 4, 11), // 1 KiB .. 1 GiB
	})
	m.snapshotSeconds = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "ehrwatch_detector_snapshot_duration_seconds", Help: "Time the partition consumer spends taking one snapshot (encode and compress).",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2.5, 14),
	})
	m.restores = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_detector_restores_total", Help: "Partition assignments by how their detectors started: restored (from a snapshot), none (no snapshot: rebuilt from the warm-up start), failed (unreadable snapshot: rebuilt), expired (the snapshot's events are no longer in Kafka: rebuilt, not exactly).",
	}, []string{"result"})
	m.replayed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "ehrwatch_replayed_messages_total", Help: "Messages below the committed offset re-read into the detectors only (after a restore, or to rebuild them without a snapshot); nothing of them is stored again.",
	})
	for _, c := range []prometheus.Collector{
		m.afterStoreSeconds, m.eventToStored, m.snapshots, m.snapshotBytes, m.snapshotSeconds, m.restores, m.replayed,
		m.consumed, m.stored, m.deadLettered, m.findings, m.detectorErrors, m.fetchErrors, m.fetchSkipped,
		m.batchRows, m.insertSeconds, m.flushSeconds, m.retries, m.inFlight, m.lag, m.committed,
		m.commits, m.lastCommit, m.assigned, m.generations,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		f(c)
	}
	// Pre-create the bounded label values, so rates start at zero.
	for _, t := range store.Tables {
		m.stored.WithLabelValues(t)
	}
	for _, c := range []string{ClassImplausibleEventTime, store.ClassRejectedByStorage} {
		m.deadLettered.WithLabelValues(c)
	}
	for _, c := range schemas.ErrorClasses {
		m.deadLettered.WithLabelValues(string(c))
	}
	for _, op := range []string{opClickHouse, opDLQ, opCommit, opAfterStore} {
		m.retries.WithLabelValues(op)
	}
	for _, r := range []string{"ok", "error", "too_large"} {
		m.snapshots.WithLabelValues(r)
	}
	for _, r := range []string{restoreRestored, restoreNone, restoreFailed, restoreExpired} {
		m.restores.WithLabelValues(r)
	}
	f(m.ignored)
	for _, r := range schemas.IgnoreReasons {
		m.ignored.WithLabelValues(string(r))
	}
	return m
}

// Retried operations.
const (
	opClickHouse = "clickhouse_insert"
	opDLQ        = "dlq_produce"
	opCommit     = "offset_commit"
	opAfterStore = "after_store"
	opRestore    = "snapshot_restore"
)

// Restore results.
const (
	restoreRestored = "restored"
	restoreNone     = "none"
	restoreFailed   = "failed"
	restoreExpired  = "expired"
)

func partitionLabel(p int) string { return strconv.Itoa(p) }
