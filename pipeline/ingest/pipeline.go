package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Processor runs the detectors of one partition. The pipeline calls
// Process for every decoded event of that partition, one at a time, in
// offset order, from one goroutine. Findings are stored with the event's
// partition and offset. An error is counted and logged (so it must not
// carry patient data) and never stops consumption: the event and any
// findings returned with the error are still stored.
//
// *detectors.Engine is the production Processor. If a Processor has a
// Close() error method, it is called when its partition is revoked.
type Processor interface {
	Process(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error)
}

// StatefulProcessor is a Processor whose state can be checkpointed
// (*detectors.Engine is one). When snapshots are on, the pipeline calls
// Snapshot from the partition's goroutine between two Process calls, every
// Config.SnapshotEvents events or Config.SnapshotInterval and when the
// partition is revoked or the pipeline stops, and stores the bytes with
// the offset of the last event processed; when the partition is next
// assigned (after a restart, a kill or a rebalance), it calls Restore on a
// fresh Processor, before any Process, with the newest snapshot below the
// committed offset, and feeds it the events after the snapshot's offset;
// without a usable snapshot it feeds a fresh Processor the partition from
// the warm-up start (Config.WarmupHorizon). What Process returns for
// offsets below the committed one is dropped. Snapshot must write the same
// bytes for the same state, and Process on a restored Processor must
// return what it would have returned without the interruption.
type StatefulProcessor interface {
	Processor
	Snapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// ProcessorFactory creates the Processor for a partition when it is
// assigned to this instance. Its state lives as long as the assignment. An
// error stops the pipeline.
type ProcessorFactory func(topic string, partition int) (Processor, error)

// SnapshotStore finds the snapshot a partition's detectors restore from:
// the newest of (group, topic, partition) whose offset is below before,
// the committed offset. *store.SnapshotReader is the production one.
type SnapshotStore interface {
	Latest(ctx context.Context, group, topic string, partition int32, before int64) (store.Snapshot, bool, error)
}

// AfterStoreFunc is called with the findings of every stored batch, after
// its INSERTs succeeded and before its offsets are acknowledged for
// commit. An error is retried (the hook only, with pipeline.retry) until
// it succeeds or is permanent (see Retryable); a permanent one stops the
// pipeline. The same findings may be passed again after a retry or a
// restart: the hook must be idempotent.
type AfterStoreFunc func(ctx context.Context, findings []schemas.Finding) error

// Deps are the pipeline's collaborators.
type Deps struct {
	// Logger receives the pipeline's logs. They carry topics, partitions,
	// offsets, event ids, error classes and counts; never payloads or
	// patient data.
	Logger zerolog.Logger
	// ClickHouse stores the batches (through a store.Writer) unless Sink
	// is set.
	ClickHouse driver.Conn
	// Sink overrides ClickHouse: DiscardSink for benchmarks.
	Sink Sink
	// DeadLetters overrides the DLQ producer built from the Kafka config.
	DeadLetters DeadLetterWriter
	// NewProcessor creates each partition's detectors; nil runs none.
	NewProcessor ProcessorFactory
	// Snapshots finds detector snapshots to restore from; default: the
	// detector_snapshots table through ClickHouse. Without either (a Sink
	// and no ClickHouse), snapshots are off.
	Snapshots SnapshotStore
	// AfterStore, when set, sees every stored batch's findings before its
	// offsets are committed (alerting); see AfterStoreFunc.
	AfterStore AfterStoreFunc
	// Decode overrides schemas.DecodeEventOwned. It is handed each
	// message's value, which kafka-go allocates for that message and the
	// pipeline never modifies, so the event may point into it.
	Decode func([]byte) (*schemas.AccessEvent, error)
	// Metrics is the process's registry, which the pipeline registers its
	// metrics (and the Go and process collectors) with; nil: its own.
	Metrics *prometheus.Registry
	// Health is the process's readiness, which the pipeline reports its
	// conditions to (kafka, commits, fetches…); nil: its own, registered
	// with Metrics.
	Health *Health
}

// Pipeline consumes access events from Kafka in a consumer group, runs the
// detectors per partition, stores events, findings and dead letters in
// ClickHouse and commits what is stored. See the package documentation
// for its guarantees.
type Pipeline struct {
	cfg          Config
	kc           *kafkaClients
	log          zerolog.Logger
	metrics      *metrics
	health       *Health
	sink         *sink
	ownDLQ       *dlqProducer // sized and closed by Run when the pipeline built it
	decode       func([]byte) (*schemas.AccessEvent, error)
	newProcessor ProcessorFactory
	snapshots    SnapshotStore // nil: snapshots off

	running  atomic.Bool
	fatal    chan error
	fatalSet sync.Once
	// shutdownAt is the shutdown deadline (unix nanoseconds); 0 while
	// running normally.
	shutdownAt atomic.Int64

	stats counters
}

// counters back Stats.
type counters struct {
	consumed, handedOn, stored, deadLettered, replayed atomic.Int64
}

// New builds a pipeline; it validates cfg and kafkaCfg and connects to
// nothing until Run.
func New(cfg Config, kafkaCfg KafkaConfig, deps Deps) (*Pipeline, error) {
	if err := errors.Join(schemas.UnderKey("pipeline", cfg.Validate()), schemas.UnderKey("kafka", kafkaCfg.Validate()),
		schemas.UnderKey("pipeline", cfg.ValidateWith(kafkaCfg))); err != nil {
		return nil, err
	}
	kc, err := newKafkaClients(kafkaCfg, deps.Logger)
	if err != nil {
		return nil, err
	}
	reg := deps.Metrics
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	p := &Pipeline{
		cfg:          cfg,
		kc:           kc,
		log:          deps.Logger,
		metrics:      newMetrics(reg),
		decode:       deps.Decode,
		newProcessor: deps.NewProcessor,
		fatal:        make(chan error, 1),
	}
	p.health = deps.Health
	if p.health == nil {
		p.health = NewHealth(reg)
	}
	if p.decode == nil {
		p.decode = schemas.DecodeEventOwned
	}
	if p.newProcessor == nil {
		p.newProcessor = func(string, int) (Processor, error) { return nopProcessor{}, nil }
	}
	st := deps.Sink
	if st == nil {
		if deps.ClickHouse == nil {
			return nil, errors.New("pipeline: Deps.ClickHouse or Deps.Sink is required")
		}
		w := store.NewWriter(deps.ClickHouse)
		w.MaxPartitionsPerInsert = cfg.MaxPartitionsPerInsert
		w.OnInsert = func(table string, rows int, took time.Duration, err error) {
			p.metrics.insertSeconds.WithLabelValues(table).Observe(took.Seconds())
		}
		st = w
	}
	dlq := deps.DeadLetters
	if dlq == nil {
		p.ownDLQ = newDLQProducer(kc, deps.Logger.With().Str("component", "dlq").Logger())
		dlq = p.ownDLQ
	}
	p.sink = newSink(cfg, st, dlq, p.metrics, p.health, p.log.With().Str("component", "sink").Logger())
	p.sink.stats = &p.stats
	p.sink.afterStore = deps.AfterStore
	if cfg.snapshotsOn() {
		p.snapshots = deps.Snapshots
		if p.snapshots == nil && deps.ClickHouse != nil {
			p.snapshots = store.NewSnapshotReader(deps.ClickHouse)
		}
	}
	p.health.set("kafka", "not started")
	return p, nil
}

type nopProcessor struct{}

func (nopProcessor) Process(context.Context, *schemas.AccessEvent) ([]schemas.Finding, error) {
	return nil, nil
}

// Registry is the registry the pipeline's metrics are in (Deps.Metrics,
// or its own).
func (p *Pipeline) Registry() *prometheus.Registry { return p.metrics.reg }

// SetCondition is Health.SetCondition on the pipeline's Health.
func (p *Pipeline) SetCondition(component, reason string) { p.health.SetCondition(component, reason) }

// SetDetail is Health.SetDetail on the pipeline's Health.
func (p *Pipeline) SetDetail(component string, fn func() string) { p.health.setDetail(component, fn) }

// Ready reports whether the pipeline is consuming and storing normally;
// when it is not, reason says why (e.g. ClickHouse unreachable).
func (p *Pipeline) Ready() (ready bool, reason string) { return p.health.status() }

// Stats are running totals since New.
type Stats struct {
	Consumed     int64 // messages fetched
	HandedOn     int64 // messages processed and handed to the sink
	Stored       int64 // events durably stored
	DeadLettered int64 // messages durably dead-lettered
	// Replayed counts messages below the committed offset re-read into
	// the detectors only, to rebuild their state (the warm-up).
	Replayed int64
}

// Stats returns running totals.
func (p *Pipeline) Stats() Stats {
	return Stats{
		Consumed:     p.stats.consumed.Load(),
		HandedOn:     p.stats.handedOn.Load(),
		Stored:       p.stats.stored.Load(),
		DeadLettered: p.stats.deadLettered.Load(),
		Replayed:     p.stats.replayed.Load(),
	}
}

// Run consumes until ctx ends, then shuts down in order, within
// Config.ShutdownTimeout: stop fetching, flush what was processed, commit
// it, leave the group, close. It returns nil after a shutdown caused by
// ctx, and the error when the pipeline stopped because storing failed
// permanently. Run may be called once.
func (p *Pipeline) Run(ctx context.Context) error {
	if !p.running.CompareAndSwap(false, true) {
		return errors.New("pipeline: Run called twice")
	}
	p.log.Info().Strs("topics", p.kc.cfg.Topics).Str("group_id", p.kc.cfg.GroupID).
		Int("batch_max_rows", p.cfg.BatchMaxRows).Dur("batch_max_wait", p.cfg.BatchMaxWait).
		Msg("pipeline starting")

	if err := p.waitForTopics(ctx); err != nil {
		p.log.Info().Msg("pipeline stopped before it joined the group")
		return nil
	}
	if p.ownDLQ != nil {
		// Before any dead letter is cut to fit it.
		p.ownDLQ.configure(ctx)
	}
	// The sink outlives ctx: it must flush during the shutdown.
	sinkCtx, cancelSink := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSink()
	p.sink.start(sinkCtx)

	cg, err := kafka.NewConsumerGroup(p.kc.groupConfig())
	if err != nil {
		cancelSink()
		p.sink.wait()
		return fmt.Errorf("kafka consumer group: %w", err)
	}
	p.health.set("kafka", "joining consumer group "+p.kc.cfg.GroupID)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		p.consumeGenerations(cg)
	}()

	var runErr error
	select {
	case <-ctx.Done():
		p.log.Info().Msg("stopping: stop fetching, flush, commit, leave the group")
	case runErr = <-p.fatal:
	case <-p.sink.failed:
		runErr = p.sink.err()
	}
	if runErr != nil {
		p.log.Error().Str("error", safeError(runErr)).Msg("stopping after a permanent error")
	}
	deadline := time.Now().Add(p.cfg.ShutdownTimeout)
	p.shutdownAt.Store(deadline.UnixNano())
	p.health.set("shutdown", "shutting down")

	// Closing the group ends the generation: every partition stops
	// fetching, waits for its processed messages to be stored, the last
	// offsets are committed while the generation is still valid, and only
	// then does the member leave the group.
	closed := make(chan struct{})
	go func() {
		_ = cg.Close()
		close(closed)
	}()
	timer := time.NewTimer(time.Until(deadline))
	defer timer.Stop()
	select {
	case <-closed:
		<-loopDone
	case <-timer.C:
		p.log.Error().Dur("shutdown_timeout", p.cfg.ShutdownTimeout).
			Msg("shutdown deadline passed before every partition drained; what was not committed will be consumed again")
	}
	cancelSink()
	p.sink.wait()
	if p.ownDLQ != nil {
		closeWithin(p.ownDLQ.Close, time.Until(deadline)+time.Second)
	}
	p.kc.transport.CloseIdleConnections()
	if runErr == nil {
		runErr = p.sink.err()
	}
	st := p.Stats()
	p.log.Info().Int64("consumed", st.Consumed).Int64("stored", st.Stored).
		Int64("dead_lettered", st.DeadLettered).Msg("pipeline stopped")
	return runErr
}

// waitForTopics returns once the brokers answer and every source topic
// exists, or with ctx's error. kafka-go's consumer group would otherwise
// end and rejoin generation after generation while a topic is missing.
func (p *Pipeline) waitForTopics(ctx context.Context) error {
	client := p.kc.admin()
	warned := false
	for {
		rctx, cancel := context.WithTimeout(ctx, p.kc.cfg.RequestTimeout)
		md, err := client.Metadata(rctx, &kafka.MetadataRequest{Topics: p.kc.cfg.Topics})
		cancel()
		var missing []string
		if err == nil {
			found := map[string]bool{}
			for _, t := range md.Topics {
				if t.Error == nil && len(t.Partitions) > 0 {
					found[t.Name] = true
				}
			}
			for _, t := range p.kc.cfg.Topics {
				if !found[t] {
					missing = append(missing, t)
				}
			}
			if len(missing) == 0 {
				return nil
			}
			err = fmt.Errorf("topics %s do not exist", strings.Join(missing, ", "))
		}
		p.health.set("kafka", err.Error())
		if !warned {
			p.log.Warn().Err(err).Msg("waiting for the brokers and source topics")
			warned = true
		}
		if !sleep(ctx, 2*time.Second) {
			return ctx.Err()
		}
	}
}

// closeWithin calls closeFn, giving up waiting after d (kafka-go's Close
// can block on an unresponsive broker).
func closeWithin(closeFn func() error, d time.Duration) {
	done := make(chan struct{})
	go func() {
		_ = closeFn()
		close(done)
	}()
	t := time.NewTimer(max(d, 0))
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// failFatal stops the pipeline with err.
func (p *Pipeline) failFatal(err error) {
	p.fatalSet.Do(func() { p.fatal <- err })
}

// drainContext bounds the drain of a revoked partition: DrainTimeout, and
// never past the shutdown deadline.
func (p *Pipeline) drainContext() (context.Context, context.CancelFunc) {
	deadline := time.Now().Add(p.cfg.DrainTimeout)
	if at := p.shutdownAt.Load(); at != 0 {
		if sd := time.Unix(0, at); sd.Before(deadline) {
			deadline = sd
		}
	}
	return context.WithDeadline(context.Background(), deadline)
}
