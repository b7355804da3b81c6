package ingest

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Sink stores batches. *store.Writer is the production Sink. Write must be
// idempotent for a given *store.Batch: the pipeline calls it again with the
// same batch after a retryable error.
type Sink interface {
	Write(ctx context.Context, b *store.Batch) error
}

// DeadLetterWriter produces dead letters synchronously: when
// WriteMessages returns nil every message is acknowledged by the brokers.
// *kafka.Writer (sync, RequiredAcks all) is the production one.
type DeadLetterWriter interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// DiscardSink drops every batch; for benchmarks of everything but storage.
type DiscardSink struct{}

// Write does nothing.
func (DiscardSink) Write(context.Context, *store.Batch) error { return nil }

// record is one Kafka message after decoding and detection, on its way to
// storage (exactly one of event and dead is set), or a detector snapshot
// (snapshot set, nothing else): it is stored with the batch it lands in,
// which holds, or follows, the batch of the event it reflects.
type record struct {
	pos      store.Position
	tracker  *offsetTracker
	received time.Time // the message's Kafka timestamp
	event    *schemas.AccessEvent
	findings []schemas.Finding
	dead     *deadLetter
	snapshot *store.SnapshotRow
}

// deadLetter is an undecodable message: its dlq row and its copy for the
// DLQ topic.
type deadLetter struct {
	row store.DLQRow
	msg kafka.Message
}

// item travels from the partition consumers to the batcher: a chunk of
// one partition's records in offset order (snapshots behind the event they
// follow), or a barrier that is answered once everything sent before it is
// stored. A chunk holds credits (see credits) until the batcher has added
// all of it to its batches.
type item struct {
	recs    []record
	credits int
	barrier chan error
}

// credits bounds the records queued between the partition consumers and
// the batcher (pipeline.queue_size): the input channel carries chunks, so
// its capacity alone bounds chunks, not records. A chunk takes one credit
// per record (all of them, for a chunk larger than the whole queue).
type credits struct {
	mu      sync.Mutex
	size    int
	free    int
	waiters int
	changed chan struct{} // closed and replaced when credits are returned to waiters
}

func newCredits(size int) *credits {
	return &credits{size: size, free: size, changed: make(chan struct{})}
}

// acquire takes n (at most size) credits, blocking until they are free; it
// reports false when ctx ends or failed is closed first.
func (c *credits) acquire(ctx context.Context, n int, failed <-chan struct{}) bool {
	c.mu.Lock()
	for c.free < n {
		c.waiters++
		ch := c.changed
		c.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
		case <-failed:
		}
		c.mu.Lock()
		c.waiters--
		if ctx.Err() != nil || isClosed(failed) {
			c.mu.Unlock()
			return false
		}
	}
	c.free -= n
	c.mu.Unlock()
	return true
}

// release returns n credits.
func (c *credits) release(n int) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.free += n
	if c.waiters > 0 {
		close(c.changed)
		c.changed = make(chan struct{})
	}
	c.mu.Unlock()
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// pending is one batch on its way to storage.
type pending struct {
	seq      uint64
	batch    store.Batch
	dlq      []kafka.Message // dead letters not yet produced
	rejected int             // batch.Rejected already turned into dlq messages
	acks     map[*offsetTracker]ackRange
	messages int
	items    int // messages and snapshots
	barriers []chan error
	// received holds the Kafka timestamps of the batch's events, for
	// ehrwatch_event_to_stored_seconds.
	received []time.Time
}

type ackRange struct{ first, last int64 }

func (p *pending) add(r *record) {
	p.items++
	if r.snapshot != nil {
		p.batch.Snapshots = append(p.batch.Snapshots, *r.snapshot)
		return
	}
	p.messages++
	if r.dead != nil {
		p.batch.DeadLetters = append(p.batch.DeadLetters, r.dead.row)
		p.dlq = append(p.dlq, r.dead.msg)
	} else if r.event != nil { // nil: ignored (not a chart access), only acked
		p.batch.Events = append(p.batch.Events, store.EventRow{Position: r.pos, Event: r.event})
		p.received = append(p.received, r.received)
		for i := range r.findings {
			p.batch.Findings = append(p.batch.Findings, store.FindingRow{Position: r.pos, Finding: &r.findings[i]})
		}
	}
	if p.acks == nil {
		p.acks = map[*offsetTracker]ackRange{}
	}
	if a, ok := p.acks[r.tracker]; ok {
		p.acks[r.tracker] = ackRange{first: a.first, last: r.pos.Offset}
	} else {
		p.acks[r.tracker] = ackRange{first: r.pos.Offset, last: r.pos.Offset}
	}
}

// sink batches records from every partition and stores them: the batcher
// goroutine fills a batch until BatchMaxRows or BatchMaxWait, then hands it
// to the flusher goroutine, which produces its dead letters, inserts it
// (one INSERT per table), retrying until it succeeds, and then acks its
// offsets in their partitions' trackers. While the flusher retries, the
// batcher fills the next batch; when that is full too it stops reading the
// bounded input queue, and the consumers, blocked on it, stop fetching.
type sink struct {
	cfg     Config
	store   Sink
	dlq     DeadLetterWriter
	m       *metrics
	health  *Health
	log     zerolog.Logger
	in      chan item
	credits *credits // records queued in in
	flushCh chan *pending
	// flushed is signalled (without blocking) after every stored batch,
	// so the committer can commit promptly.
	flushed chan struct{}

	stats *counters // optional
	// afterStore, when set, sees each stored batch's findings before its
	// offsets are acked.
	afterStore AfterStoreFunc

	failOnce sync.Once
	failed   chan struct{} // closed on a permanent error
	failErr  error
	wg       sync.WaitGroup
}

func newSink(cfg Config, st Sink, dlq DeadLetterWriter, m *metrics, h *Health, log zerolog.Logger) *sink {
	return &sink{
		cfg:     cfg,
		store:   st,
		dlq:     dlq,
		m:       m,
		health:  h,
		log:     log,
		in:      make(chan item, cfg.QueueSize),
		credits: newCredits(cfg.QueueSize),
		flushCh: make(chan *pending),
		flushed: make(chan struct{}, 1),
		failed:  make(chan struct{}),
	}
}

// start runs the batcher and the flusher until ctx ends or a write fails
// permanently.
func (s *sink) start(ctx context.Context) {
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.batch(ctx) }()
	go func() { defer s.wg.Done(); s.flush(ctx) }()
}

// wait waits for the goroutines started by start.
func (s *sink) wait() { s.wg.Wait() }

// fail records a permanent error; submit and barrier fail from then on.
func (s *sink) fail(err error) {
	s.failOnce.Do(func() {
		s.failErr = err
		close(s.failed)
	})
}

// err is the permanent error, once there is one.
func (s *sink) err() error {
	select {
	case <-s.failed:
		return s.failErr
	default:
		return nil
	}
}

// submit hands r to the batcher, blocking while the queue is full. It
// reports false, without handing r on, when ctx ends first or the sink has
// failed.
func (s *sink) submit(ctx context.Context, r record) bool {
	return s.submitChunk(ctx, []record{r})
}

// submitChunk hands recs, one partition's records in order, to the batcher
// in one go, blocking while the queue is full. It reports false, without
// handing any of recs on, when ctx ends first or the sink has failed. The
// sink owns recs from then on.
func (s *sink) submitChunk(ctx context.Context, recs []record) bool {
	if len(recs) == 0 {
		return true
	}
	if s.err() != nil || ctx.Err() != nil {
		return false
	}
	n := min(len(recs), s.credits.size)
	if !s.credits.acquire(ctx, n, s.failed) {
		return false
	}
	events := 0 // counted before the hand-off: the batcher recycles recs
	for i := range recs {
		if recs[i].snapshot == nil {
			events++
		}
	}
	select {
	case s.in <- item{recs: recs, credits: n}:
		if events > 0 {
			s.m.inFlight.Add(float64(events))
		}
		return true
	case <-ctx.Done():
	case <-s.failed:
	}
	s.credits.release(n)
	return false
}

// barrier returns once every record submitted before it is stored (nil),
// or with an error when ctx ends first or the sink fails.
func (s *sink) barrier(ctx context.Context) error {
	if err := s.err(); err != nil {
		return err
	}
	done := make(chan error, 1)
	select {
	case s.in <- item{barrier: done}:
	case <-ctx.Done():
		return ctx.Err()
	case <-s.failed:
		return s.failErr
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.failed:
		return s.failErr
	}
}

func (s *sink) batch(ctx context.Context) {
	var seq uint64
	lastEvents := 0 // the previous batch's events: the next one's capacity
	next := func() *pending {
		seq++
		p := &pending{seq: seq}
		if lastEvents > 0 {
			p.batch.Events = make([]store.EventRow, 0, lastEvents)
			p.received = make([]time.Time, 0, lastEvents)
		}
		return p
	}
	cur := next()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	dispatch := func() bool {
		timer.Stop()
		p := cur
		lastEvents = min(len(p.batch.Events), s.cfg.BatchMaxRows)
		cur = next()
		select {
		case s.flushCh <- p:
			return true
		case <-ctx.Done():
			answer(p.barriers, ctx.Err())
		case <-s.failed:
			answer(p.barriers, s.failErr)
		}
		return false
	}
	for {
		select {
		case it := <-s.in:
			if it.barrier != nil {
				cur.barriers = append(cur.barriers, it.barrier)
				if !dispatch() {
					return
				}
				continue
			}
			for i := range it.recs {
				cur.add(&it.recs[i])
				if cur.items == 1 {
					timer.Reset(s.cfg.BatchMaxWait)
				}
				if cur.batch.Len() >= s.cfg.BatchMaxRows && !dispatch() {
					return
				}
			}
			// Only now is the whole chunk in batches: until here, the
			// records still to add counted against the queue.
			s.credits.release(it.credits)
			recycleChunk(it.recs)
		case <-timer.C:
			if cur.items > 0 && !dispatch() {
				return
			}
		case <-ctx.Done():
			answer(cur.barriers, ctx.Err())
			return
		case <-s.failed:
			return
		}
	}
}

func answer(barriers []chan error, err error) {
	for _, b := range barriers {
		b <- err
	}
}

func (s *sink) flush(ctx context.Context) {
	for {
		select {
		case p := <-s.flushCh:
			err := s.write(ctx, p)
			if err != nil && ctx.Err() == nil {
				s.fail(err) // before answering, so a waiter sees s.err()
			}
			answer(p.barriers, err)
			if err != nil {
				return
			}
		case <-ctx.Done():
			return
		}
	}
}

// write makes one batch durable, retrying until it is, hands its findings
// to the after-store hook, retrying that until it succeeds, and then acks
// its offsets.
func (s *sink) write(ctx context.Context, p *pending) error {
	if p.items == 0 {
		return nil
	}
	start := time.Now()
	log := s.log.With().Uint64("batch", p.seq).Logger()
	log.Debug().Int("messages", p.messages).Int("events", len(p.batch.Events)).
		Int("findings", len(p.batch.Findings)).Int("dead_letters", len(p.batch.DeadLetters)).
		Msg("flush started")
	op := ""
	err := retry(ctx, s.cfg.Retry, func(ctx context.Context) error {
		// ClickHouse first: rows it refuses become dead letters too.
		op = opClickHouse
		if err := s.store.Write(ctx, &p.batch); err != nil {
			return err
		}
		s.collectRejected(p, log)
		if len(p.dlq) > 0 {
			op = opDLQ
			return s.produceDeadLetters(ctx, p)
		}
		return nil
	}, func(err error, attempt int, pause time.Duration) {
		s.m.retries.WithLabelValues(op).Inc()
		reason := safeError(err)
		s.health.set(op, reason+" (retrying)")
		log.Warn().Str("operation", op).Str("error", reason).Int("attempt", attempt).
			Dur("pause", pause).Msg("write failed; retrying")
	})
	if err != nil {
		if ctx.Err() == nil {
			log.Error().Str("operation", op).Str("error", safeError(err)).Msg("write failed permanently")
		}
		return err
	}
	s.health.clear(opDLQ)
	s.health.clear(opClickHouse)
	s.observeAge(p, time.Now())
	if err := s.runAfterStore(ctx, p, log); err != nil {
		return err
	}
	for tr, r := range p.acks {
		tr.AckRange(r.first, r.last)
	}
	s.account(p, time.Since(start))
	log.Debug().Int("messages", p.messages).Dur("took", time.Since(start)).Msg("flush done")
	select {
	case s.flushed <- struct{}{}:
	default:
	}
	return nil
}

// runAfterStore hands p's findings to the after-store hook, retrying the
// hook alone (the rows are stored) with the sink's backoff.
func (s *sink) runAfterStore(ctx context.Context, p *pending, log zerolog.Logger) error {
	if s.afterStore == nil || len(p.batch.Findings) == 0 {
		return nil
	}
	findings := make([]schemas.Finding, len(p.batch.Findings))
	for i := range p.batch.Findings {
		findings[i] = *p.batch.Findings[i].Finding
	}
	start := time.Now()
	err := retry(ctx, s.cfg.Retry, func(ctx context.Context) error {
		return s.afterStore(ctx, findings)
	}, func(err error, attempt int, pause time.Duration) {
		s.m.retries.WithLabelValues(opAfterStore).Inc()
		reason := safeError(err)
		s.health.set(opAfterStore, reason+" (retrying)")
		log.Warn().Str("operation", opAfterStore).Str("error", reason).Int("attempt", attempt).
			Dur("pause", pause).Msg("after-store hook failed; retrying (the batch is stored, its offsets wait)")
	})
	s.m.afterStoreSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		if ctx.Err() == nil {
			s.health.set(opAfterStore, safeError(err))
			log.Error().Str("operation", opAfterStore).Str("error", safeError(err)).Msg("after-store hook failed permanently")
		}
		return err
	}
	s.health.clear(opAfterStore)
	return nil
}

// collectRejected logs and counts the rows the store refused since the
// last call and queues the dead letters of refused events and findings for
// the DLQ topic.
func (s *sink) collectRejected(p *pending, log zerolog.Logger) {
	for _, r := range p.batch.Rejected[p.rejected:] {
		var row *store.DLQRow
		pos := store.Position{}
		if r.DeadLetter >= 0 {
			row = &p.batch.DeadLetters[r.DeadLetter]
			pos = row.Position
		}
		ev := log.Warn()
		switch r.Table {
		case store.TableEvents:
			pos = p.batch.Events[r.Row].Position
			ev = ev.Str("event_id", p.batch.Events[r.Row].Event.EventID)
		case store.TableFindings:
			pos = p.batch.Findings[r.Row].Position
			ev = ev.Str("finding_id", p.batch.Findings[r.Row].Finding.FindingID)
		case store.TableDLQ:
			pos = p.batch.DeadLetters[r.Row].Position
		case store.TableSnapshots:
			pos = p.batch.Snapshots[r.Row].Position
		}
		s.m.refusedRows.WithLabelValues(r.Table).Inc()
		ev.Str("table", r.Table).Str("topic", pos.Topic).Int32("partition", pos.Partition).Int64("offset", pos.Offset).
			Str("error", store.RefusalText(r.Err)).Bool("dead_lettered", row != nil).
			Msg("ClickHouse refused a row; the rest of the batch is stored")
		if row != nil {
			p.dlq = append(p.dlq, boundMessage(refusedMessage(row), s.dlqMaxMessageBytes()))
		}
	}
	p.rejected = len(p.batch.Rejected)
}

// refusedMessage is the DLQ message of a row ClickHouse refused.
func refusedMessage(row *store.DLQRow) kafka.Message {
	headers := []kafka.Header{
		{Key: HeaderSourceTopic, Value: []byte(row.Topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(int(row.Partition)))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(row.Offset, 10))},
		{Key: HeaderErrorClass, Value: []byte(row.ErrorClass)},
		{Key: HeaderErrorField, Value: []byte(strings.TrimPrefix(row.Error, row.ErrorClass+": "))},
		{Key: HeaderDeadLetteredAt, Value: []byte(row.ReceivedAt.Format(time.RFC3339Nano))},
		{Key: HeaderPayloadSize, Value: []byte(strconv.FormatInt(row.PayloadSize, 10))},
		{Key: HeaderPayloadSHA256, Value: []byte(row.PayloadSHA256)},
	}
	if row.RecordID != "" {
		headers = append(headers, kafka.Header{Key: HeaderRecordID, Value: []byte(row.RecordID)})
	}
	return kafka.Message{Key: row.Key, Value: row.Payload, Headers: headers}
}

// dlqMaxMessageBytes is the DLQ topic's max.message.bytes as last read
// (Kafka's default for a DeadLetterWriter that does not tell).
func (s *sink) dlqMaxMessageBytes() int {
	if d, ok := s.dlq.(interface{ MaxMessageBytes() int }); ok {
		return d.MaxMessageBytes()
	}
	return defaultMaxMessageBytes
}

// produceDeadLetters writes p's dead letters to the DLQ topic, keeping only
// those that failed for the next attempt. When the brokers (or kafka-go)
// refuse a message as too large, the producer reads the topic's limit
// again (or halves its own), the messages are cut to the new limit and the
// error is retryable.
func (s *sink) produceDeadLetters(ctx context.Context, p *pending) error {
	err := s.dlq.WriteMessages(ctx, p.dlq...)
	if err == nil {
		p.dlq = nil
		return nil
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) && len(we) == len(p.dlq) {
		var left []kafka.Message
		for i, e := range we {
			if e != nil {
				left = append(left, p.dlq[i])
			}
		}
		p.dlq = left
	}
	if tooLarge(err) {
		limit := minDLQMessageBytes // a writer that does not tell: cut to the minimum
		if d, ok := s.dlq.(*dlqProducer); ok {
			d.tooLarge(ctx)
			limit = d.MaxMessageBytes()
		}
		for i := range p.dlq {
			p.dlq[i] = boundMessage(p.dlq[i], limit)
		}
		return fmt.Errorf("DLQ topic refused a message as too large; cut to %d bytes: %s", limit, err.Error())
	}
	return err
}

// tooLarge reports whether err (or one of a kafka.WriteErrors) is a
// message refused as too large, by the brokers (error 10) or by kafka-go.
func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	if errors.Is(err, kafka.MessageSizeTooLarge) || errors.As(err, &mtl) {
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && tooLarge(e) {
				return true
			}
		}
	}
	return false
}

// observeAge records how old the batch's events and findings are now that
// they are stored: now minus the Kafka timestamp of each event (for a
// finding, of the event that completed it). Timestamps in the future of
// this clock count as 0.
func (s *sink) observeAge(p *pending, now time.Time) {
	ev, fi := s.m.eventToStored.WithLabelValues(store.TableEvents), s.m.eventToStored.WithLabelValues(store.TableFindings)
	for _, t := range p.received {
		if !t.IsZero() {
			ev.Observe(max(now.Sub(t).Seconds(), 0))
		}
	}
	for i := range p.batch.Findings {
		if t := p.batch.Findings[i].Finding.ReceivedAt; !t.IsZero() {
			fi.Observe(max(now.Sub(t).Seconds(), 0))
		}
	}
}

func (s *sink) account(p *pending, took time.Duration) {
	refusedEvents := 0
	for _, r := range p.batch.Rejected {
		if r.Table == store.TableEvents {
			refusedEvents++
		}
	}
	if s.stats != nil {
		s.stats.stored.Add(int64(len(p.batch.Events) - refusedEvents))
		s.stats.deadLettered.Add(int64(len(p.batch.DeadLetters)))
	}
	s.m.flushSeconds.Observe(took.Seconds())
	s.m.inFlight.Sub(float64(p.messages))
	for _, t := range store.Tables {
		if n := p.batch.Rows(t); n > 0 {
			s.m.stored.WithLabelValues(t).Add(float64(n))
			s.m.batchRows.WithLabelValues(t).Observe(float64(n))
		}
	}
	for i := range p.batch.DeadLetters {
		s.m.deadLettered.WithLabelValues(p.batch.DeadLetters[i].ErrorClass).Inc()
	}
	for i := range p.batch.Findings {
		s.m.findings.WithLabelValues(p.batch.Findings[i].Finding.Detector).Inc()
	}
}

// chunkPool holds the partition consumers' chunk slices (handoffChunk
// records) for reuse once the batcher has copied their records into
// batches: pending.add keeps no reference to a record, only to what it
// points at.
var chunkPool = sync.Pool{New: func() any {
	recs := make([]record, 0, handoffChunk)
	return &recs
}}

// newChunk returns an empty chunk slice.
func newChunk() []record { return (*chunkPool.Get().(*[]record))[:0] }

// recycleChunk returns a chunk slice to chunkPool, cleared so it holds
// no events, findings or trackers alive.
func recycleChunk(recs []record) {
	if cap(recs) != handoffChunk {
		return
	}
	clear(recs)
	recs = recs[:0]
	chunkPool.Put(&recs)
}
