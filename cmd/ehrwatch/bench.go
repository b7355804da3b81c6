package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/pprof"
	"runtime/trace"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// runBench is `ehrwatch bench <what>`: pipeline (below), latency
// (bench_latency.go), detectors and memory (bench_detectors.go).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand("bench", args, benchUsage, stdout, stderr, benchCommands...); err != nil {
		return err
	}
	switch args[0] {
	case "latency":
		return runBenchLatency(ctx, args[1:], stdout, stderr)
	case "detectors":
		return runBenchDetectors(ctx, args[1:], stdout, stderr)
	case "memory":
		return runBenchMemory(ctx, args[1:], stdout, stderr)
	}
	return runBenchPipeline(ctx, args[1:], stdout, stderr)
}

// runBenchPipeline is `ehrwatch bench pipeline`: it produces a synthetic
// hospital's stream to a fresh topic and consumes it several times,
// measuring
//
//	(a) a bare kafka-go fetch loop (one partition reader per partition),
//	(a') a bare kafka-go batch loop (Conn.ReadBatchWith, as the pipeline's
//	    fetcher reads),
//	(b) the whole pipeline with the sink disabled, without detectors,
//	(b) the whole pipeline with the sink disabled, with the detectors
//	    (both timed to the last event handed to the sink, see
//	    pipelineNoSink),
//	(c) the whole pipeline into ClickHouse (a fresh database, dropped after),
//	(d) with the detectors, the warm-up of (b)'s group restarted without a
//	    detector snapshot: every partition re-reads its events into fresh
//	    detectors, storing nothing (what a kill before the first snapshot
//	    costs),
//
// and prints events/s and the ratios between them.
func runBenchPipeline(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench pipeline", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, "usage: ehrwatch bench pipeline --config FILE [flags]\n\nThroughput through a real broker: (a) a raw kafka-go fetch loop, (b) ehrwatch with\nthe sink disabled, without and with the detectors, (c) ehrwatch into ClickHouse.\nThe topic and database are created by the benchmark (docs/benchmarks.md).\n")
	configPath := fs.String("config", "", "configuration file (Kafka brokers and ClickHouse); the topic and database are created by the benchmark")
	events := fs.Int("events", 200_000, "events to produce and consume: the first N of the synthetic hospital's stream (0: all of it)")
	users := fs.Int("users", 500, "users of the synthetic hospital")
	days := fs.Int("days", 14, "days of the synthetic hospital")
	withDetectors := fs.Bool("detectors", true, "also run (b) and (c) with the real detectors: one engine per partition over the hospital's reference data")
	partitions := fs.Int("partitions", 4, "partitions of the benchmark topic")
	replication := fs.Int("replication", 1, "replication factor of the benchmark topic")
	skipCH := fs.Bool("skip-clickhouse", false, "skip (c), the run into ClickHouse")
	keep := fs.Bool("keep", false, "keep the benchmark topic and database")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the (b) runs to this file")
	traceFile := fs.String("trace", "", "write an execution trace of the (b) runs to this file (go tool trace; -pprof=sync shows what the goroutines wait on)")
	memProfile := fs.String("memprofile", "", "write an allocation profile of the process after the (b) runs to this file (go tool pprof -sample_index=alloc_space)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *events < 0 || *partitions < 1 {
		return usageError{"bench: --events must be >= 0 and --partitions >= 1"}
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	h, err := newBenchHospital(*users, *days)
	if err != nil {
		return err
	}
	log := newLogger(LogConfig{Level: "warn", Format: "console"}, stderr)

	var rnd [4]byte
	_, _ = rand.Read(rnd[:])
	id := hex.EncodeToString(rnd[:])
	topic := "ehrwatch-bench-" + id
	b := &bench{cfg: cfg, topic: topic, partitions: *partitions, events: *events, out: stdout, log: log, hospital: h}
	if err := b.setup(ctx, *replication); err != nil {
		return err
	}
	if !*keep {
		defer b.deleteTopic()
	}
	var detect ingest.ProcessorFactory
	if *withDetectors {
		newEngine, err := benchEngines(h)
		if err != nil {
			return err
		}
		detect = func(string, int) (ingest.Processor, error) { return newEngine() }
	}

	raw, err := b.rawFetch(ctx)
	if err != nil {
		return fmt.Errorf("(a) raw fetch: %w", err)
	}
	b.report("(a) kafka-go fetch loop", raw, measurement{})
	rawBatch, err := b.rawBatchFetch(ctx)
	if err != nil {
		return fmt.Errorf("(a') raw batch fetch: %w", err)
	}
	b.report("(a') kafka-go batch loop", rawBatch, raw)
	b.batchBase = rawBatch

	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	stopTrace, err := startTrace(*traceFile)
	if err != nil {
		return err
	}
	defer stopTrace()
	noSink, err := b.pipelineNoSink(ctx, "discard", ingest.Deps{Sink: ingest.DiscardSink{}, DeadLetters: discardDLQ{}})
	if err != nil {
		return fmt.Errorf("(b) pipeline without sink: %w", err)
	}
	b.report("(b) ehrwatch, no detectors, no sink", noSink, raw)
	if detect != nil {
		noSink, err = b.pipelineNoSink(ctx, "discard-detect", ingest.Deps{Sink: ingest.DiscardSink{}, DeadLetters: discardDLQ{}, NewProcessor: detect})
		if err != nil {
			return fmt.Errorf("(b) pipeline with detectors without sink: %w", err)
		}
		b.report("(b) ehrwatch, detectors, no sink", noSink, raw)
		// (d): the same group again, as after a kill before any snapshot.
		warm, err := b.warmup(ctx, "discard-detect", ingest.Deps{Sink: ingest.DiscardSink{}, DeadLetters: discardDLQ{},
			NewProcessor: detect, Snapshots: noSnapshots{}})
		if err != nil {
			return fmt.Errorf("(d) warm-up: %w", err)
		}
		b.report("(d) warm-up, detectors only", warm, raw)
	}
	stopProfile() // the (b) runs only
	stopTrace()
	if *memProfile != "" {
		if err := writeHeapProfile(*memProfile); err != nil {
			return err
		}
	}

	if *skipCH {
		return nil
	}
	chCfg := cfg.ClickHouse
	chCfg.Database = cfg.ClickHouse.Database + "_bench_" + id
	conn, err := b.database(ctx, chCfg, *keep)
	if err != nil {
		return fmt.Errorf("(c) clickhouse: %w", err)
	}
	defer conn.Close()
	intoCH, err := b.pipeline(ctx, "clickhouse", ingest.Deps{ClickHouse: conn, DeadLetters: discardDLQ{}, NewProcessor: detect})
	if err != nil {
		return fmt.Errorf("(c) pipeline into clickhouse: %w", err)
	}
	name := "(c) ehrwatch into ClickHouse"
	if detect != nil {
		name = "(c) ehrwatch, detectors, ClickHouse"
	}
	b.report(name, intoCH, raw)
	fmt.Fprintf(stdout, "(c)/(b) = %.2f\n", intoCH.rate()/noSink.rate())
	return nil
}

type bench struct {
	cfg        Config
	topic      string
	partitions int
	events     int
	out        io.Writer
	log        zerolog.Logger
	client     *kafka.Client
	hospital   *synth.Hospital
	// batchBase is (a'), reported beside (a) once measured.
	batchBase measurement
}

type measurement struct {
	events  int
	took    time.Duration
	cpu     time.Duration // this process's CPU time over took (every goroutine, GC included)
	mallocs uint64        // heap objects allocated by the whole process during the run (0: not measured)
	bytes   uint64        // heap bytes allocated
	// storedAfter is how long after took the last event was stored (the
	// runs into a discarding sink, see pipelineNoSink).
	storedAfter time.Duration
}

func (m measurement) rate() float64 { return float64(m.events) / m.took.Seconds() }

// cpuPerEvent is the process's CPU time per event, in µs.
func (m measurement) cpuPerEvent() float64 {
	return float64(m.cpu.Nanoseconds()) / 1e3 / float64(m.events)
}

// report prints m's rate and, beside it, the process's CPU per event: on
// a shared machine the rates (and their ratio to (a)) move with the load,
// while the CPU each event costs moves much less, so the "CPU ratio",
// (a)'s CPU per event over m's, says what the ratio of rates would be if
// both were bound by this process's CPU alone (docs/benchmarks.md §2).
func (b *bench) report(name string, m measurement, base measurement) {
	fmt.Fprintf(b.out, "%-32s %9d events in %8s = %9.0f events/s", name, m.events, m.took.Round(time.Millisecond), m.rate())
	if base.events > 0 {
		fmt.Fprintf(b.out, "   (%.2f of (a)", m.rate()/base.rate())
		if bb := b.batchBase; bb.events > 0 {
			fmt.Fprintf(b.out, ", %.2f of (a')", m.rate()/bb.rate())
		}
		fmt.Fprint(b.out, ")")
	}
	if m.cpu > 0 {
		fmt.Fprintf(b.out, "   cpu %.2f µs/event", m.cpuPerEvent())
		if base.cpu > 0 {
			fmt.Fprintf(b.out, " (cpu ratio %.2f)", base.cpuPerEvent()/m.cpuPerEvent())
		}
	}
	if m.mallocs > 0 && m.events > 0 {
		fmt.Fprintf(b.out, "; %.2f allocs/event, %.0f B/event", float64(m.mallocs)/float64(m.events), float64(m.bytes)/float64(m.events))
	}
	if m.storedAfter > 0 {
		fmt.Fprintf(b.out, "; all stored %s later", m.storedAfter.Round(time.Millisecond))
	}
	fmt.Fprintf(b.out, "; load average %s\n", loadAverage())
}

type discardDLQ struct{}

func (discardDLQ) WriteMessages(context.Context, ...kafka.Message) error { return nil }

// createTopic creates b.topic (and b.client) and returns the transport.
func (b *bench) createTopic(ctx context.Context, replication int) (*kafka.Transport, error) {
	tr, err := b.cfg.Kafka.Transport()
	if err != nil {
		return nil, err
	}
	b.client = &kafka.Client{Addr: kafka.TCP(b.cfg.Kafka.Brokers...), Transport: tr, Timeout: 30 * time.Second}
	res, err := b.client.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: b.topic, NumPartitions: b.partitions, ReplicationFactor: replication,
	}}})
	if err == nil {
		err = res.Errors[b.topic]
	}
	if err != nil {
		return nil, fmt.Errorf("create topic %s: %w", b.topic, err)
	}
	return tr, nil
}

// setup creates the topic and produces the events.
func (b *bench) setup(ctx context.Context, replication int) error {
	tr, err := b.createTopic(ctx, replication)
	if err != nil {
		return err
	}
	w := &kafka.Writer{
		Addr: kafka.TCP(b.cfg.Kafka.Brokers...), Topic: b.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 5000, BatchBytes: 1000 << 10,
		BatchTimeout: 10 * time.Millisecond, Compression: kafka.Lz4, Transport: tr,
	}
	defer w.Close()
	start := time.Now()
	const chunk = 20000
	msgs := make([]kafka.Message, 0, chunk)
	n := 0
	errEnough := errors.New("enough")
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("produce: %w", summarizeWriteError(err))
		}
		msgs = msgs[:0]
		return nil
	}
	_, err = b.hospital.EachEvent(func(ev *schemas.AccessEvent) error {
		if b.events > 0 && n == b.events {
			return errEnough
		}
		v, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		n++
		msgs = append(msgs, kafka.Message{Key: []byte(ev.UserID), Value: v})
		if len(msgs) == chunk {
			return flush()
		}
		return nil
	})
	if err != nil && !errors.Is(err, errEnough) {
		return err
	}
	if err := flush(); err != nil {
		return err
	}
	b.events = n
	fmt.Fprintf(b.out, "topic %s: %d partitions, %d events of a synthetic hospital (%d users) produced in %s\n",
		b.topic, b.partitions, b.events, len(b.hospital.Users), time.Since(start).Round(time.Millisecond))
	return nil
}

func (b *bench) deleteTopic() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, _ = b.client.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{b.topic}})
}

// rawFetch reads every partition to its end with FetchMessage and nothing
// else: the ceiling for the pipeline when it read with a kafka.Reader.
func (b *bench) rawFetch(ctx context.Context) (measurement, error) {
	k := b.cfg.Kafka
	return b.rawLoop(ctx, func(dialer *kafka.Dialer, partition int, last int64) error {
		if last == 0 {
			return nil
		}
		r := kafka.NewReader(kafka.ReaderConfig{
			Brokers: k.Brokers, Topic: b.topic, Partition: partition, Dialer: dialer,
			MinBytes: k.MinBytes, MaxBytes: k.MaxBytes, MaxWait: k.MaxWait, QueueCapacity: k.QueueCapacity,
		})
		defer r.Close()
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				return err
			}
			if m.Offset+1 >= last {
				return nil
			}
		}
	})
}

// rawBatchFetch reads every partition to its end as the pipeline's
// fetcher does, with nothing else: one fetch request at a time on a
// connection to the leader (Conn.ReadBatchWith), the messages read on the
// same goroutine. It is the ceiling for a consumer that does not pay
// kafka-go Reader's hand-over of every message, (a), which the pipeline
// no longer pays either (docs/benchmarks.md §2).
func (b *bench) rawBatchFetch(ctx context.Context) (measurement, error) {
	k := b.cfg.Kafka
	return b.rawLoop(ctx, func(dialer *kafka.Dialer, partition int, last int64) error {
		conn, err := dialer.DialLeader(ctx, "tcp", k.Brokers[0], b.topic, partition)
		if err != nil {
			return err
		}
		defer conn.Close()
		for offset := int64(0); offset < last; {
			_ = conn.SetReadDeadline(time.Now().Add(k.MaxWait + k.RequestTimeout))
			batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: k.MinBytes, MaxBytes: k.MaxBytes, MaxWait: k.MaxWait})
			for {
				m, err := batch.ReadMessage()
				if err != nil {
					break
				}
				offset = m.Offset + 1
			}
			if err := batch.Close(); err != nil {
				return err
			}
		}
		return nil
	})
}

// rawLoop times read over every partition at once, each on a goroutine
// of its own, with the partition's end offset.
func (b *bench) rawLoop(ctx context.Context, read func(dialer *kafka.Dialer, partition int, last int64) error) (measurement, error) {
	dialer, err := b.cfg.Kafka.Dialer()
	if err != nil {
		return measurement{}, err
	}
	var rs []kafka.OffsetRequest
	for p := range b.partitions {
		rs = append(rs, kafka.LastOffsetOf(p))
	}
	lo, err := b.client.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{b.topic: rs}})
	if err != nil {
		return measurement{}, err
	}
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	start, cpu0 := time.Now(), processCPU()
	var wg sync.WaitGroup
	errs := make([]error, b.partitions)
	for _, po := range lo.Topics[b.topic] {
		wg.Go(func() { errs[po.Partition] = read(dialer, po.Partition, po.LastOffset) })
	}
	wg.Wait()
	took, cpu := time.Since(start), processCPU()-cpu0
	runtime.ReadMemStats(&msAfter)
	return measurement{events: b.events, took: took, cpu: cpu, mallocs: msAfter.Mallocs - msBefore.Mallocs,
		bytes: msAfter.TotalAlloc - msBefore.TotalAlloc}, errors.Join(errs...)
}

// noSnapshots is a snapshot store without snapshots.
type noSnapshots struct{}

func (noSnapshots) Latest(context.Context, string, string, int32, int64) (store.Snapshot, bool, error) {
	return store.Snapshot{}, false, nil
}

// pipeline runs a pipeline in a fresh group until every event is stored
// (or discarded), timing from the first consumed message to the last
// stored one.
func (b *bench) pipeline(ctx context.Context, name string, deps ingest.Deps) (measurement, error) {
	return b.run(ctx, name, deps, func(p *ingest.Pipeline) runProgress {
		st := p.Stats()
		return runProgress{started: st.Consumed, done: st.Stored, stored: st.Stored}
	})
}

// pipelineNoSink is pipeline for a run into a sink that discards: it times
// from the first consumed message to the last one handed to the sink, and
// reports how much later the last one was stored. Not timed is the sink's
// wait for its last, partial batch (batch_max_wait, a second by default):
// that is the latency of a stream that stops, not the cost of its events
// (§7 measures latency). Until session 7 it was timed, and it was about a
// third of (b)'s time (docs/benchmarks.md §2).
func (b *bench) pipelineNoSink(ctx context.Context, name string, deps ingest.Deps) (measurement, error) {
	return b.run(ctx, name, deps, func(p *ingest.Pipeline) runProgress {
		st := p.Stats()
		return runProgress{started: st.Consumed, done: st.HandedOn, stored: st.Stored}
	})
}

// warmup runs a pipeline in the group of an earlier run, which committed
// every event, with no detector snapshot to restore (deps.Snapshots): each
// partition re-reads all its events into fresh detectors and stores
// nothing. It times the re-reading from the first re-read message.
func (b *bench) warmup(ctx context.Context, name string, deps ingest.Deps) (measurement, error) {
	return b.run(ctx, name, deps, func(p *ingest.Pipeline) runProgress {
		// Stats, not the registry: a Gather every 5 ms (and the process
		// collector's reads of /proc) cost the run about two allocations
		// per event on one partition.
		n := p.Stats().Replayed
		return runProgress{started: n, done: n, stored: int64(b.events)}
	})
}

// runProgress is a run's progress: messages started on, done (the run's
// measure) and stored.
type runProgress struct{ started, done, stored int64 }

// run runs a pipeline in group b.topic-name until progress reports every
// event done, timing from the first event it reports started.
func (b *bench) run(ctx context.Context, name string, deps ingest.Deps, progressOf func(*ingest.Pipeline) runProgress) (measurement, error) {
	k := b.cfg.Kafka
	k.GroupID = b.topic + "-" + name
	k.Topics = []string{b.topic}
	k.StartOffset = "first"
	deps.Logger = b.log
	p, err := ingest.New(b.cfg.Pipeline, k, deps)
	if err != nil {
		return measurement{}, err
	}
	// Allocations are counted from here, the group join and the whole
	// process included (nothing else runs in it meanwhile).
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()
	var start time.Time
	var cpu0 time.Duration
	var m measurement
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case err := <-done:
			done <- err
			if err == nil {
				err = errors.New("pipeline stopped early")
			}
			return measurement{}, err
		case <-ctx.Done():
			return measurement{}, ctx.Err()
		case <-tick.C:
		}
		pr := progressOf(p)
		if start.IsZero() && pr.started > 0 {
			start, cpu0 = time.Now(), processCPU()
		}
		if m.events > 0 && pr.stored >= int64(b.events) {
			m.storedAfter = time.Since(start) - m.took
			return m, nil
		}
		if m.events == 0 && pr.done >= int64(b.events) {
			runtime.ReadMemStats(&msAfter)
			m = measurement{events: b.events, took: time.Since(start), cpu: processCPU() - cpu0,
				mallocs: msAfter.Mallocs - msBefore.Mallocs, bytes: msAfter.TotalAlloc - msBefore.TotalAlloc}
			if pr.stored >= int64(b.events) {
				return m, nil
			}
		}
	}
}

// database creates and migrates a fresh database for (c).
func (b *bench) database(ctx context.Context, c store.Config, keep bool) (clickhouse.Conn, error) {
	if err := store.CreateDatabase(ctx, c); err != nil {
		return nil, err
	}
	conn, err := store.Open(c)
	if err != nil {
		return nil, err
	}
	if _, err := store.Migrate(ctx, conn, c.MigrationParams()); err != nil {
		conn.Close()
		return nil, err
	}
	if !keep {
		return &dropOnClose{Conn: conn, db: c.Database}, nil
	}
	return conn, nil
}

// dropOnClose drops the benchmark database when closed.
type dropOnClose struct {
	clickhouse.Conn
	db string
}

func (d *dropOnClose) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_ = d.Exec(ctx, "DROP DATABASE IF EXISTS `"+d.db+"`")
	return d.Conn.Close()
}

// startCPUProfile starts a CPU profile into path (nothing when path is
// empty); stop ends it and closes the file, and may be called again.
func startCPUProfile(path string) (stop func(), err error) {
	return startRecording(path, pprof.StartCPUProfile, pprof.StopCPUProfile)
}

// startTrace is startCPUProfile for an execution trace (go tool trace).
func startTrace(path string) (stop func(), err error) {
	return startRecording(path, trace.Start, trace.Stop)
}

// startRecording creates path and starts a recording into it with start;
// the returned function ends it with end and closes the file, once.
func startRecording(path string, start func(io.Writer) error, end func()) (stop func(), err error) {
	if path == "" {
		return func() {}, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := start(f); err != nil {
		f.Close()
		return nil, err
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			end()
			f.Close()
		})
	}, nil
}

// writeHeapProfile writes the process's allocation profile (every
// allocation since start, sampled at runtime.MemProfileRate) to path.
func writeHeapProfile(path string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
