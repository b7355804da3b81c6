package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const demoUsage = `usage: ehrwatch demo [flags]

Runs the real ehrwatch pipeline on a synthetic hospital, with no external
services: an in-process Kafka broker, the hospital's access stream produced
to it keyed by user_id, a kafka-go consumer group, decoding, one detector
engine per partition and alerting. Findings and alerts stay in memory
(--out writes them as NDJSON) unless --clickhouse names a server, which
then also receives the hospital's users, patients and encounters (the
reference tables), so that ` + "`ehrwatch report`" + ` explains accesses afterwards.

It prints alerts as they fire and, at the end, how the detectors did
against the generator's ground truth. It exits non-zero if the pipeline
fails. With --serve ADDR it then keeps serving the results (from
ClickHouse with --clickhouse, else from memory) on ADDR until Ctrl-C,
signed in with a fresh token it prints.

flags:
`

// demoOptions are the settings of `ehrwatch demo`.
type demoOptions struct {
	days       int
	warmup     int
	users      int
	seed       uint64
	partitions int
	rate       float64
	clickhouse string
	chDatabase string
	out        string
	color      string
	quiet      bool
	timeout    time.Duration
	serve      string

	// onServe, for tests, is told where --serve listens and its token.
	onServe func(demoServed)
	// wrapSink, for tests, wraps the sink the pipeline writes to.
	wrapSink func(ingest.Sink) ingest.Sink
	// logs, for tests, receives the pipeline's logs (default stderr).
	logLevel string
}

const demoTopic = "ehr-access"

func runDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := synth.DefaultConfig()
	o := demoOptions{}
	fs := flag.NewFlagSet("demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, demoUsage)
	fs.IntVar(&o.days, "days", def.Days, "days to simulate")
	fs.IntVar(&o.warmup, "warmup-days", -1, "days before volume and off-hours incidents are injected (-1: 8, or days/2 below 9 days)")
	fs.IntVar(&o.users, "users", 500, "EHR accounts, spread over the two facilities (at least 60 each)")
	fs.Uint64Var(&o.seed, "seed", def.Seed, "random seed: the same flags give the same hospital, stream and findings")
	fs.IntVar(&o.partitions, "partitions", 4, "partitions of the demo topic (one detector engine each)")
	fs.Float64Var(&o.rate, "rate", 0, "events per second to produce (0: as fast as possible)")
	fs.StringVar(&o.clickhouse, "clickhouse", "", "store events, findings and alerts in this ClickHouse server (host:port native, or http://host:port) after running the migrations")
	fs.StringVar(&o.chDatabase, "clickhouse-database", "ehrwatch_demo", "ClickHouse database to create and use (with --clickhouse)")
	fs.StringVar(&o.out, "out", "", "write findings.ndjson, alerts.ndjson and truth.ndjson into this directory")
	fs.StringVar(&o.color, "color", "auto", "colour alerts: auto (on a terminal, unless NO_COLOR is set), always or never")
	fs.BoolVar(&o.quiet, "quiet", false, "do not print alerts as they fire; only the summary")
	fs.DurationVar(&o.timeout, "timeout", 10*time.Minute, "give up when the pipeline has not consumed every event by then")
	fs.StringVar(&o.logLevel, "log-level", "warn", "pipeline log level on stderr: debug, info, warn or error")
	fs.StringVar(&o.serve, "serve", "", "afterwards, serve the results on this address (e.g. 127.0.0.1:8080) until Ctrl-C, with a printed sign-in token")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("demo: unexpected argument %q", fs.Arg(0))}
	}
	switch {
	case o.days < 1 || o.days > 366:
		return usageError{"demo: --days must be in 1..366"}
	case o.partitions < 1 || o.partitions > 64:
		return usageError{"demo: --partitions must be in 1..64"}
	case o.rate < 0:
		return usageError{"demo: --rate must be ≥ 0"}
	case o.color != "auto" && o.color != "always" && o.color != "never":
		return usageError{"demo: --color must be auto, always or never"}
	case o.timeout <= 0:
		return usageError{"demo: --timeout must be > 0"}
	}
	if o.serve != "" {
		if _, _, err := net.SplitHostPort(o.serve); err != nil {
			return usageError{"demo: --serve: want HOST:PORT (e.g. 127.0.0.1:8080)"}
		}
	}
	if err := flagValueError("--log-level", LogConfig{Level: o.logLevel, Format: "console"}.Validate()); err != nil {
		return usageError{"demo: " + err.Error()}
	}
	_, err := demo(ctx, o, stdout, stderr)
	return err
}

// demoConfig turns the flags into a generator configuration.
func demoConfig(o demoOptions) (synth.Config, error) {
	cfg := synth.DefaultConfig()
	cfg.Seed, cfg.Days = o.seed, o.days
	switch {
	case o.warmup >= 0:
		cfg.WarmupDays = o.warmup
	case o.days >= 9:
		cfg.WarmupDays = 8
	default:
		cfg.WarmupDays = o.days / 2
	}
	if o.users != 500 {
		cfg = cfg.WithUsers(o.users)
	}
	return cfg, cfg.Validate()
}

// demoStream is what a first pass over the generated stream learns: its
// length, the last event of every partition and the ground truth.
type demoStream struct {
	events    int
	lastEvent map[int]string // partition → id of its last event
	perPart   []int
	late      int // logged more than a minute after the fact
	truth     []synth.Label
}

func scanStream(h *synth.Hospital, part func([]byte) int, partitions int) (demoStream, error) {
	s := demoStream{lastEvent: map[int]string{}, perPart: make([]int, partitions)}
	truth, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		p := part([]byte(ev.UserID))
		s.lastEvent[p] = ev.EventID
		s.perPart[p]++
		s.events++
		if ev.LoggedTime != nil && ev.LoggedTime.Sub(ev.EventTime) > time.Minute {
			s.late++
		}
		return nil
	})
	s.truth = truth
	return s, err
}

// demoOutcome is what a demo run measured, for tests.
type demoOutcome struct {
	hospital *synth.Hospital
	stream   demoStream
	stats    ingest.Stats
	score    synth.ScoreReport
	alerts   int
	findings []schemas.Finding // every stored version, sorted
}

func demo(ctx context.Context, o demoOptions, stdout, stderr io.Writer) (*demoOutcome, error) {
	began := time.Now()
	con := newConsole(stdout, stderr, o.color)

	// 1. The hospital, and a first pass over its stream: length, the last
	// event of each partition (where the engine flushes), ground truth.
	cfg, err := demoConfig(o)
	if err != nil {
		return nil, usageError{"demo: " + err.Error()}
	}
	h, err := synth.New(cfg)
	if err != nil {
		return nil, err
	}
	part := replay.MustPartitioner("fnv1a", o.partitions) // kafka.Hash, as the producer below
	stream, err := scanStream(h, part, o.partitions)
	if err != nil {
		return nil, err
	}
	sc := synth.NewScorer(h, stream.truth)
	printDemoHeader(con, h, stream, sc, o)

	// 2. Detection: one engine per partition over the hospital's reference
	// data.
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = newHashKey()
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		return nil, err
	}
	ecfg := detectors.DefaultEngineConfig(detectors.Registry())
	newEngine, err := replay.NewEngineFactory(idx, h.TimeZones(), ecfg)
	if err != nil {
		return nil, err
	}

	// 3. The broker.
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(int32(o.partitions), demoTopic),
		kfake.DefaultNumPartitions(1), kfake.AllowAutoTopicCreation())
	if err != nil {
		return nil, fmt.Errorf("demo: start in-process Kafka: %w", err)
	}
	defer cluster.Close()
	brokers := cluster.ListenAddrs()

	// 4. Storage and alerting.
	log := con.logger(o.logLevel)
	var chConn clickhouse.Conn
	var alertStore alerting.Store
	if o.clickhouse != "" {
		chConn, err = demoClickHouse(ctx, o)
		if err != nil {
			return nil, err
		}
		defer chConn.Close()
		// The reference tables, so that reports (and the console) explain
		// accesses by the same care relationships the detectors used.
		if err := store.WriteReference(ctx, chConn, h.Users, h.Patients, h.Encounters); err != nil {
			return nil, fmt.Errorf("demo: clickhouse: load the reference tables: %w", err)
		}
		alertStore = alerting.NewClickHouseStore(chConn)
	}
	// The demo replays days in seconds, and partitions drift apart by
	// days of event time (live, they move together): alerting must keep
	// its groups open for the whole simulated span, or findings from a
	// partition that is behind would come too late to be grouped.
	acfg := alerting.DefaultConfig()
	acfg.Limits.Lateness = time.Duration(cfg.Days+1) * 24 * time.Hour
	mgr, err := alerting.New(acfg, alerting.Options{Store: alertStore, Logger: log, Version: version})
	if err != nil {
		return nil, err
	}
	sink := newDemoSink(mgr, sc, con, h, o.quiet)
	sink.keepEvents = o.serve != "" && o.clickhouse == "" // the in-memory store needs them
	if chConn != nil {
		sink.store = store.NewWriter(chConn)
	}
	var pipeSink ingest.Sink = sink
	if o.wrapSink != nil {
		pipeSink = o.wrapSink(pipeSink)
	}

	// 5. The pipeline: ingest.New as in `ehrwatch run` (engines per
	// partition, alerting after each stored batch), with the memory sink
	// and batch settings for a short burst instead of a steady stream.
	kcfg := ingest.DefaultKafkaConfig()
	kcfg.Brokers = brokers
	kcfg.GroupID = "ehrwatch-demo"
	kcfg.Topics = []string{demoTopic}
	kcfg.DLQTopic = demoTopic + ".dlq"
	kcfg.ClientID = "ehrwatch-demo"
	kcfg.MaxWait = 500 * time.Millisecond
	kcfg.QueueCapacity = 5000
	kcfg.MaxBytes = 16 << 20
	kcfg.JoinGroupBackoff = 200 * time.Millisecond
	pcfg := ingest.DefaultConfig()
	pcfg.BatchMaxRows = 20000
	pcfg.BatchMaxWait = 100 * time.Millisecond
	pcfg.QueueSize = 20000
	pcfg.LagInterval = time.Second
	pcfg.CommitInterval = 500 * time.Millisecond
	pcfg.DrainTimeout = 5 * time.Second
	pcfg.ShutdownTimeout = 15 * time.Second
	engines := &demoEngines{}
	// Volume and break_glass compare a user with the whole peer group:
	// every partition's engine is in this process, so one peer stage
	// serves them all, as in `ehrwatch replay`.
	hub, err := newDemoPeers(ecfg, h.TimeZones(), stream.perPart)
	if err != nil {
		return nil, err
	}
	hub.store = func(ctx context.Context, fs []schemas.Finding) error {
		// Retried like the pipeline's own writes, for a while: a failure
		// that lasts fails the pipeline's writes too.
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		pause := 100 * time.Millisecond
		for {
			err := pipeSink.Write(ctx, &store.Batch{Findings: peerStageRows(demoTopic+".peers", fs)})
			if err == nil {
				err = sink.afterStore(ctx, fs)
			}
			if err == nil {
				return nil
			}
			if !sleepCtx(ctx, pause) {
				return fmt.Errorf("peer stage: storing %d judged findings failed: %s", len(fs), ingest.Redact(err))
			}
			pause = min(2*pause, 5*time.Second)
		}
	}
	p, err := ingest.New(pcfg, kcfg, ingest.Deps{
		Logger:      log,
		Sink:        pipeSink,
		DeadLetters: &memoryDLQ{},
		AfterStore:  sink.afterStore,
		NewProcessor: func(_ string, partition int) (ingest.Processor, error) {
			e, err := newEngine()
			if err != nil {
				return nil, err
			}
			e.DeferPeers()
			engines.add(e)
			return &demoProcessor{eng: e, last: stream.lastEvent[partition], part: partition, peers: hub}, nil
		},
	})
	if err != nil {
		return nil, err
	}
	pctx, stopPipeline := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPipeline()
	runDone := make(chan error, 1)
	go func() { runDone <- p.Run(pctx) }()

	// 6. Produce the stream while the pipeline joins and consumes.
	prodCtx, stopProducing := context.WithCancel(ctx)
	defer stopProducing()
	prodDone := make(chan error, 1)
	var produced atomic.Int64
	go func() { prodDone <- produceDemo(prodCtx, h, brokers, o.rate, &produced) }()

	// 7. Watch until every event is stored (or dead-lettered), the
	// pipeline fails, the user interrupts or the timeout passes.
	progress := newProgress(con, int64(stream.events))
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	deadline := time.NewTimer(o.timeout)
	defer deadline.Stop()
	var runErr, prodErr error
	pipelineStopped := false
	interrupted := false
wait:
	for {
		select {
		case runErr = <-runDone:
			pipelineStopped = true
			if runErr == nil {
				runErr = errors.New("the pipeline stopped before consuming every event")
			}
			break wait
		case err := <-prodDone:
			if err != nil {
				prodErr = err
				break wait
			}
			prodDone = nil
		case <-ctx.Done():
			interrupted = true
			break wait
		case <-deadline.C:
			runErr = fmt.Errorf("timed out after %s with %d of %d events stored", o.timeout, p.Stats().Stored, stream.events)
			break wait
		case <-tick.C:
		}
		st := p.Stats()
		progress.update(st.Consumed, sink.findingCount(), sink.alertCount())
		if st.Stored+st.DeadLettered >= int64(stream.events) && prodDone == nil {
			break
		}
	}
	stopProducing()
	st := p.Stats()
	progress.done(st.Consumed, sink.findingCount(), sink.alertCount())
	consumeTook := progress.elapsed()

	// 8. Stop the pipeline in order (flush, commit, leave the group) and
	// the alerting.
	stopPipeline()
	if !pipelineStopped {
		if err := <-runDone; err != nil && runErr == nil {
			runErr = err
		}
	}
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	_ = mgr.Close(cctx)
	cancel()

	if o.out != "" {
		if err := sink.writeFiles(o.out, stream.truth); err != nil {
			return nil, err
		}
	}
	res := demoResult{
		took: time.Since(began), consumeTook: consumeTook, stats: p.Stats(), total: stream.events,
		late: engines.late(), interrupted: interrupted, coverage: engines.coverage(),
	}
	outcome := &demoOutcome{hospital: h, stream: stream, stats: res.stats, findings: sink.allFindings(), alerts: len(sink.allAlerts())}
	outcome.score = printDemoSummary(con, h, sc, sink, res, o)
	switch {
	case prodErr != nil:
		return outcome, fmt.Errorf("demo: producing to the in-process broker: %w", prodErr)
	case runErr != nil:
		return outcome, fmt.Errorf("demo: pipeline failed: %s", ingest.Redact(runErr))
	case interrupted:
		return outcome, ctx.Err()
	}
	if o.serve != "" {
		cluster.Close() // the broker's work is done; the results stay
		return outcome, serveDemo(ctx, o, con, h, sink, chConn, log)
	}
	return outcome, nil
}

// demoProcessor is a partition's detectors. On the partition's last event
// it also flushes the engine, as a bounded input ends: every window still
// open closes and its findings are stored with that event. After every
// event it hands the peer stage what the engine deferred and its
// watermark, and returns, with the event's own findings, whatever the
// stage could judge then (findings of any partition's users).
type demoProcessor struct {
	eng   *detectors.Engine
	last  string
	part  int
	peers *demoPeers
}

func (d *demoProcessor) Process(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	fs, err := d.eng.Process(ctx, ev)
	end := ev.EventID == d.last
	if end {
		more, ferr := d.eng.Flush(ctx)
		fs, err = append(fs, more...), errors.Join(err, ferr)
	}
	if judged := d.peers.exchange(d.part, d.eng, end); len(judged) > 0 {
		// Stored by the stage, as in `ehrwatch run`, not with this event:
		// this event's offset says nothing about the judged finding's
		// version (it is from any partition), and a break-glass finding's
		// earlier versions may sit at higher offsets of their own.
		err = errors.Join(err, d.peers.store(ctx, judged))
	}
	return fs, err
}

// demoPeers is the demo's peer stage, shared by every partition's
// processor (they run on their own goroutines). A day is judged once
// every partition's watermark has passed it, so what is judged does not
// depend on how the partitions' goroutines interleave; a partition with
// no events at all counts as ended from the start.
type demoPeers struct {
	// store writes what the stage judged (peerStageRows) and hands it to
	// alerting, as peerJudge.store does.
	store func(context.Context, []schemas.Finding) error

	mu    sync.Mutex
	stage *detectors.PeerStage
	wm    []time.Time // last watermark handed over, by partition
	ended []bool
	left  int // partitions not yet at their last event
}

func newDemoPeers(ecfg detectors.EngineConfig, zones map[string]string, perPart []int) (*demoPeers, error) {
	st, err := replay.NewPeerStage(ecfg, zones, len(perPart))
	if err != nil {
		return nil, err
	}
	d := &demoPeers{stage: st, wm: make([]time.Time, len(perPart)), ended: make([]bool, len(perPart)), left: len(perPart)}
	for i, n := range perPart {
		if n == 0 {
			d.ended[i] = true
			d.left--
			st.Add(i, detectors.PeerBatch{}, detectors.EndOfTime)
		}
	}
	return d, nil
}

// exchange hands the stage what e deferred since the last call and its
// watermark (the end of time after its last event, once), and returns
// what the stage judged, admitted by e.
func (d *demoPeers) exchange(part int, e *detectors.Engine, end bool) []schemas.Finding {
	b := e.TakePeers()
	wm := e.Watermark()
	if end {
		wm = detectors.EndOfTime
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ended[part] || (wm.Equal(d.wm[part]) && len(b.Days) == 0 && len(b.Activity) == 0 && len(b.BreakGlass) == 0) {
		return nil
	}
	d.wm[part] = wm
	d.stage.Add(part, b, wm)
	var fs []schemas.Finding
	if end {
		d.ended[part] = true
		d.left--
	}
	if d.left == 0 {
		fs = d.stage.Flush()
	} else {
		fs = d.stage.Ready()
	}
	if len(fs) == 0 {
		return nil
	}
	return e.AdmitPeerFindings(fs)
}

func (d *demoProcessor) Close() error { return d.eng.Close() }

// demoEngines remembers every engine the pipeline created, for counters.
type demoEngines struct {
	mu  sync.Mutex
	all []*detectors.Engine
}

func (d *demoEngines) add(e *detectors.Engine) {
	d.mu.Lock()
	d.all = append(d.all, e)
	d.mu.Unlock()
}

func (d *demoEngines) coverage() detectors.Coverage {
	d.mu.Lock()
	defer d.mu.Unlock()
	var c detectors.Coverage
	for _, e := range d.all {
		c.Add(e.Coverage())
	}
	return c
}

func (d *demoEngines) late() uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	var n uint64
	for _, e := range d.all {
		n += e.LateEvents()
	}
	return n
}

// memoryDLQ accepts dead letters (the demo's stream has none).
type memoryDLQ struct{ n atomic.Int64 }

func (m *memoryDLQ) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	m.n.Add(int64(len(msgs)))
	return nil
}

// produceDemo produces the hospital's stream to the demo topic, keyed by
// user_id with kafka-go's Hash balancer, in large synchronous batches.
func produceDemo(ctx context.Context, h *synth.Hospital, brokers []string, rate float64, produced *atomic.Int64) error {
	const chunk = 8192
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        demoTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireOne,
		BatchSize:    chunk,
		BatchBytes:   1000 << 10, // the broker's default message.max.bytes is 1 MiB
		BatchTimeout: time.Millisecond,
	}
	defer w.Close()
	msgs := make([]kafka.Message, 0, chunk)
	start := time.Now()
	flush := func() error {
		if len(msgs) == 0 {
			return nil
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return summarizeWriteError(err)
		}
		n := produced.Add(int64(len(msgs)))
		msgs = msgs[:0]
		return pace(ctx, start, int(n), rate)
	}
	size := chunk
	if rate > 0 {
		size = max(1, min(chunk, int(rate/10)))
	}
	_, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		v, err := json.Marshal(ev)
		if err != nil {
			return err
		}
		msgs = append(msgs, kafka.Message{Key: []byte(ev.UserID), Value: v})
		if len(msgs) >= size {
			return flush()
		}
		return nil
	})
	if err != nil {
		return err
	}
	return flush()
}

// summarizeWriteError keeps the first of kafka-go's per-message errors.
func summarizeWriteError(err error) error {
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil {
				return fmt.Errorf("%d of %d messages failed, first: %w", we.Count(), len(we), e)
			}
		}
	}
	return err
}

// demoClickHouse creates and migrates the demo database.
func demoClickHouse(ctx context.Context, o demoOptions) (clickhouse.Conn, error) {
	c := store.DefaultConfig()
	addr := o.clickhouse
	if rest, ok := strings.CutPrefix(addr, "http://"); ok {
		c.Protocol, addr = "http", rest
	}
	c.Addrs = []string{strings.TrimSuffix(addr, "/")}
	c.Database = o.chDatabase
	if err := flagValueError("--clickhouse", c.Validate()); err != nil {
		return nil, usageError{"demo: " + err.Error()}
	}
	if err := store.CreateDatabase(ctx, c); err != nil {
		return nil, fmt.Errorf("demo: clickhouse: %s", ingest.Redact(err))
	}
	conn, err := store.Open(c)
	if err != nil {
		return nil, fmt.Errorf("demo: clickhouse: %w", err)
	}
	if _, err := store.Migrate(ctx, conn, c.MigrationParams()); err != nil {
		conn.Close()
		return nil, fmt.Errorf("demo: clickhouse migrations: %s", ingest.Redact(err))
	}
	return conn, nil
}

// demoSink is the pipeline's sink in the demo: it stores batches in
// ClickHouse when configured and keeps the findings in memory; its
// afterStore hands them to alerting once stored, as `ehrwatch run` does.
type demoSink struct {
	store ingest.Sink // nil: memory only
	mgr   *alerting.Manager
	sc    *synth.Scorer
	con   *console
	h     *synth.Hospital
	quiet bool

	// keepEvents keeps every stored event (for the in-memory store).
	keepEvents bool

	mu       sync.Mutex
	events   []schemas.AccessEvent
	done     map[*store.Batch]bool
	findings []schemas.Finding
	offsets  []int64        // findings[i]'s kafka_offset
	byID     map[string]int // finding id → index of its latest version
	alerts   map[string]alerting.Alert
	nFind    atomic.Int64
	nAlert   atomic.Int64
}

func newDemoSink(mgr *alerting.Manager, sc *synth.Scorer, con *console, h *synth.Hospital, quiet bool) *demoSink {
	return &demoSink{mgr: mgr, sc: sc, con: con, h: h, quiet: quiet,
		done: map[*store.Batch]bool{}, byID: map[string]int{}, alerts: map[string]alerting.Alert{}}
}

func (s *demoSink) Write(ctx context.Context, b *store.Batch) error {
	if s.store != nil {
		if err := s.store.Write(ctx, b); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.done[b] {
		return nil // a retried batch
	}
	s.done[b] = true
	if s.keepEvents {
		for _, r := range b.Events {
			s.events = append(s.events, *r.Event)
		}
	}
	for i := range b.Findings {
		f := *b.Findings[i].Finding
		off := b.Findings[i].Offset
		// As in the findings table (ReplacingMergeTree(kafka_offset)), the
		// version at the highest offset is the finding: the peer stage's
		// rows (peerStageOffset) may arrive before a partition's earlier
		// version of the same break-glass finding.
		if j, ok := s.byID[f.FindingID]; !ok || off >= s.offsets[j] {
			s.byID[f.FindingID] = len(s.findings)
		}
		s.findings = append(s.findings, f)
		s.offsets = append(s.offsets, off)
	}
	s.nFind.Store(int64(len(s.byID)))
	return nil
}

// afterStore is the pipeline's after-store hook, as in `ehrwatch run`:
// alerting sees every stored batch's findings before its offsets are
// committed. New and escalated alerts are printed.
func (s *demoSink) afterStore(ctx context.Context, findings []schemas.Finding) error {
	alerts, err := s.mgr.Observe(ctx, findings)
	s.mu.Lock()
	var show []alerting.Alert
	for _, a := range alerts {
		s.alerts[a.AlertID] = a
		if a.Notify && (a.Change == alerting.ChangeNew || a.Change == alerting.ChangeEscalated) {
			show = append(show, a)
		}
	}
	s.nAlert.Store(int64(len(s.alerts)))
	s.mu.Unlock()
	if !s.quiet {
		for _, a := range show {
			s.con.alert(s.alertLine(a))
		}
	}
	return err
}

func (s *demoSink) findingCount() int64 { return s.nFind.Load() }

// allEvents returns the stored events (kept with keepEvents only).
func (s *demoSink) allEvents() []schemas.AccessEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}
func (s *demoSink) alertCount() int64 { return s.nAlert.Load() }

// latestFindings returns the latest version of every finding, sorted.
func (s *demoSink) latestFindings() []schemas.Finding {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]schemas.Finding, 0, len(s.byID))
	for _, i := range s.byID {
		f := s.findings[i]
		// The latest version carries every event id folded in; earlier
		// versions' ids are a subset.
		out = append(out, f)
	}
	sortFindings(out)
	return out
}

// allFindings returns every emitted version, in a deterministic order.
func (s *demoSink) allFindings() []schemas.Finding {
	s.mu.Lock()
	idx := make([]int, len(s.findings))
	for i := range idx {
		idx[i] = i
	}
	// Versions of one id in version order (offset, then arrival), as the
	// findings table orders them.
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(s.offsets[a], s.offsets[b]) })
	out := make([]schemas.Finding, len(idx))
	for i, j := range idx {
		out[i] = s.findings[j]
	}
	s.mu.Unlock()
	sortFindings(out)
	return out
}

func (s *demoSink) allAlerts() []alerting.Alert {
	s.mu.Lock()
	out := make([]alerting.Alert, 0, len(s.alerts))
	for _, a := range s.alerts {
		out = append(out, a)
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b alerting.Alert) int {
		if c := a.FirstSeen.Compare(b.FirstSeen); c != 0 {
			return c
		}
		return strings.Compare(a.AlertID, b.AlertID)
	})
	return out
}

// sortFindings orders findings by window, user, detector and id; versions
// of one id keep their order.
func sortFindings(fs []schemas.Finding) {
	slices.SortStableFunc(fs, func(a, b schemas.Finding) int {
		if c := a.WindowStart.Compare(b.WindowStart); c != 0 {
			return c
		}
		return strings.Compare(a.UserID+"\x00"+a.Detector+"\x00"+a.FindingID, b.UserID+"\x00"+b.Detector+"\x00"+b.FindingID)
	})
}

// writeFiles writes findings.ndjson (every version, as stored),
// alerts.ndjson (the latest version of each alert) and truth.ndjson.
func (s *demoSink) writeFiles(dir string, truth []synth.Label) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	var buf bytes.Buffer
	enc := replay.NewFindingEncoder(&buf)
	for _, f := range s.allFindings() {
		if err := enc.Encode(&f); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "findings.ndjson"), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	buf.Reset()
	je := json.NewEncoder(&buf)
	je.SetEscapeHTML(false)
	for _, a := range s.allAlerts() {
		if err := je.Encode(a); err != nil {
			return err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "alerts.ndjson"), buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	if err := synth.WriteTruth(filepath.Join(dir, "truth.ndjson"), truth); err != nil {
		return fmt.Errorf("demo: --out: %w", err)
	}
	return nil
}
