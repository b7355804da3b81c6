package ingest

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// DLQ headers: where a dead letter came from and why.
const (
	HeaderSourceTopic     = "ehrwatch-source-topic"
	HeaderSourcePartition = "ehrwatch-source-partition"
	HeaderSourceOffset    = "ehrwatch-source-offset"
	HeaderErrorClass      = "ehrwatch-error-class"
	HeaderErrorField      = "ehrwatch-error-field"
	HeaderDeadLetteredAt  = "ehrwatch-dead-lettered-at"
	// HeaderRecordID names the refused finding of a rejected_by_storage
	// dead letter (absent for a message).
	HeaderRecordID = "ehrwatch-record-id"
	// HeaderPayloadSize and HeaderPayloadSHA256 describe the whole
	// payload; HeaderPayloadTruncated is "true" when the message carries
	// only its first bytes because the whole did not fit the DLQ topic's
	// max.message.bytes.
	HeaderPayloadSize      = "ehrwatch-payload-size"
	HeaderPayloadSHA256    = "ehrwatch-payload-sha256"
	HeaderPayloadTruncated = "ehrwatch-payload-truncated"
)

// ClassImplausibleEventTime is the dead-letter class of an event whose
// event_time lies outside pipeline.event_time around its logged_time (or
// its Kafka timestamp).
const ClassImplausibleEventTime = "implausible_event_time"

// generation is this member's share of one consumer-group generation.
type generation struct {
	gen   *kafka.Generation
	parts []*partition
	wg    sync.WaitGroup // partition consumers still running
}

// partition is one assigned partition for the life of a generation.
type partition struct {
	topic     string
	id        int
	start     int64 // assigned offset: committed, or kafka.FirstOffset/LastOffset
	tracker   *offsetTracker
	committed int64 // last committed by this generation, or the absolute start; -1 unknown
	highWater int64 // from the last lag measurement or fetched message; -1 unknown
	mu        sync.Mutex
	consumed  prometheus.Counter
	log       zerolog.Logger
	// fetchFailedAt is when the partition's fetcher last reported an error
	// (unix nanoseconds; 0: none since the last answered fetch), and
	// fetchFailures how many it reported in a row, none more than
	// fetchRecovered apart.
	fetchFailedAt atomic.Int64
	fetchFailures atomic.Int32
}

// fetchFailing is how many errors in a row make a partition's fetcher
// "failing" on /readyz. The fetcher retries a failed fetch after 100ms,
// then 200ms, 400ms… (fetchRetry), so a lost broker reaches it in about
// 0.3s, while a single fetch that timed out under load does not.
const fetchFailing = 3

// fetchError records an error reported by pt's fetcher.
func (p *Pipeline) fetchError(pt *partition) {
	now := time.Now().UnixNano()
	prev := pt.fetchFailedAt.Swap(now)
	if prev == 0 || time.Duration(now-prev) > fetchRecovered {
		pt.fetchFailures.Store(0)
	}
	if pt.fetchFailures.Add(1) == fetchFailing {
		p.health.set(pt.fetchKey(), "fetching fails (kafka-go retries; see the logs)")
	}
}

// fetchKey is pt's /readyz condition while its fetcher fails.
func (pt *partition) fetchKey() string { return "fetch " + pt.topic + "/" + strconv.Itoa(pt.id) }

func (pt *partition) setHighWater(hw int64) {
	pt.mu.Lock()
	pt.highWater = max(pt.highWater, hw)
	pt.mu.Unlock()
}

// consumeGenerations joins generation after generation until the group is
// closed.
func (p *Pipeline) consumeGenerations(cg *kafka.ConsumerGroup) {
	for {
		gen, err := cg.Next(context.Background())
		if errors.Is(err, kafka.ErrGroupClosed) {
			return
		}
		if err != nil {
			if errors.Is(err, kafka.RebalanceInProgress) {
				p.log.Debug().Err(err).Msg("consumer group rebalancing")
				continue
			}
			p.health.set("kafka", "consumer group: "+err.Error())
			p.log.Warn().Err(err).Msg("consumer group join failed; retrying")
			continue
		}
		p.health.clear("kafka")
		p.metrics.generations.Inc()
		p.startGeneration(gen)
	}
}

// startGeneration starts a consumer per assigned partition, a committer
// and a lag probe, all bound to gen: when the generation ends (rebalance,
// lost membership, shutdown) kafka-go waits for all of them before it
// rejoins or leaves, so the last commit happens while the generation is
// still the group's.
func (p *Pipeline) startGeneration(gen *kafka.Generation) {
	g := &generation{gen: gen}
	for topic, assigned := range gen.Assignments {
		for _, a := range assigned {
			start := a.Offset
			committed := int64(-1)
			if start >= 0 {
				committed = start
			}
			g.parts = append(g.parts, &partition{
				topic:     topic,
				id:        a.ID,
				start:     start,
				tracker:   newOffsetTracker(start),
				committed: committed,
				highWater: -1,
				consumed:  p.metrics.consumed.WithLabelValues(topic),
				log:       p.log.With().Str("topic", topic).Int("partition", a.ID).Logger(),
			})
		}
	}
	slices.SortFunc(g.parts, func(a, b *partition) int {
		return cmp.Or(cmp.Compare(a.topic, b.topic), cmp.Compare(a.id, b.id))
	})
	assigned := zerolog.Arr()
	for _, pt := range g.parts {
		assigned.Str(pt.topic + "/" + strconv.Itoa(pt.id) + "@" + offsetString(pt.start))
	}
	p.log.Info().Int32("generation", gen.ID).Str("member_id", gen.MemberID).Array("partitions", assigned).
		Msg("generation started")
	p.metrics.assigned.Set(float64(len(g.parts)))

	g.wg.Add(len(g.parts))
	for _, pt := range g.parts {
		gen.Start(func(ctx context.Context) {
			defer g.wg.Done()
			p.consumePartition(ctx, pt)
		})
	}
	gen.Start(func(ctx context.Context) { p.commitLoop(ctx, g) })
	if len(g.parts) > 0 {
		gen.Start(func(ctx context.Context) { p.lagLoop(ctx, g) })
	}
}

func offsetString(o int64) string {
	switch o {
	case kafka.FirstOffset:
		return "first"
	case kafka.LastOffset:
		return "last"
	}
	return strconv.FormatInt(o, 10)
}

// handoffChunk is the most records a partition consumer hands to the sink
// at once.
const handoffChunk = 256

// chunker collects one partition's processed records and hands them to
// the sink in chunks: when handoffChunk are collected, or when no message
// arrived within the handoff linger since the chunk's first record. The
// linger is a context derived when the chunk gets its first record, with
// which the consumer fetches until the chunk is handed on.
type chunker struct {
	p      *Pipeline
	linger time.Duration
	recs   []record
	lctx   context.Context // fetch context while recs is not empty
	cancel context.CancelFunc
}

// fetchContext is the context to fetch the next message with.
func (c *chunker) fetchContext(ctx context.Context) context.Context {
	if c.lctx != nil {
		return c.lctx
	}
	return ctx
}

// lingerExpired reports whether a fetch error is only the end of the
// linger, not of ctx.
func (c *chunker) lingerExpired(ctx context.Context, err error) bool {
	return c.lctx != nil && ctx.Err() == nil && c.lctx.Err() != nil && errors.Is(err, context.DeadlineExceeded)
}

// add appends r and hands the chunk on when it is full or there is no
// linger; it reports false when the hand-off failed (see flush).
func (c *chunker) add(ctx context.Context, r record) bool {
	c.recs = append(c.recs, r)
	if len(c.recs) >= handoffChunk || c.linger <= 0 {
		return c.flush(ctx)
	}
	if c.lctx == nil {
		c.lctx, c.cancel = context.WithTimeout(ctx, c.linger)
	}
	return true
}

// flush hands the chunk to the sink. When that fails (ctx ended, or the
// sink failed) the chunk stays pending, to be handed on by drain or
// dropped.
func (c *chunker) flush(ctx context.Context) bool {
	if len(c.recs) == 0 {
		c.stopLinger()
		return true
	}
	if !c.p.sink.submitChunk(ctx, c.recs) {
		return false
	}
	c.p.stats.handedOn.Add(int64(len(c.recs)))
	c.recs = newChunk() // the sink owns the old one
	c.stopLinger()
	return true
}

func (c *chunker) stopLinger() {
	if c.cancel != nil {
		c.cancel()
	}
	c.lctx, c.cancel = nil, nil
}

// drop unregisters the pending chunk's offsets: they were fetched but
// never handed on, and will be consumed again by the next owner.
func (c *chunker) drop() {
	c.stopLinger()
	for i := len(c.recs) - 1; i >= 0; i-- {
		if r := &c.recs[i]; r.snapshot == nil {
			r.tracker.Cancel(r.pos.Offset)
		}
	}
	c.recs = nil
}

// consumePartition fetches, decodes, detects and submits one partition's
// messages in offset order until the generation ends, then drains: it
// stops fetching, hands on what it processed and waits (bounded by the
// drain timeout) until that is stored, so the committer's final commit
// covers it.
func (p *Pipeline) consumePartition(ctx context.Context, pt *partition) {
	proc, err := p.newProcessor(pt.topic, pt.id)
	if err != nil {
		p.failFatal(fmt.Errorf("create detectors for %s/%d: %w", pt.topic, pt.id, err))
		return
	}
	defer func() { closeProcessor(pt, proc) }()
	proc, from, ok := p.restore(ctx, pt, proc)
	if !ok {
		return
	}
	r := p.kc.startFetcher(ctx, pt.topic, pt.id, from, pt.log, fetchHooks{
		onError: func(err error, pause time.Duration) {
			p.metrics.fetchErrors.Inc()
			p.fetchError(pt) // how a lost broker reaches /readyz
			pt.log.Warn().Err(err).Dur("pause", pause).Msg("fetch failed; retrying")
		},
		onFetched: func(highWater int64) {
			pt.setHighWater(highWater)
			if pt.fetchFailedAt.Swap(0) != 0 && pt.fetchFailures.Swap(0) >= fetchFailing {
				p.health.clear(pt.fetchKey())
			}
		},
		onSkipped: func(from, to int64) {
			if pt.start >= 0 {
				from = max(from, pt.start) // below it: consumed by an earlier owner, only re-read to warm up
			}
			if to > from {
				p.metrics.fetchSkipped.Add(float64(to - from))
			}
		},
	})
	defer p.health.clear(pt.fetchKey())
	snap := p.newSnapshotter(pt, proc)
	warm := &warmup{p: p, pt: pt, snap: snap, from: from, last: -1, started: time.Now()}
	chunk := &chunker{p: p, linger: p.cfg.HandoffLinger, recs: newChunk()}
	defer chunk.stopLinger()
	for {
		// While fetches fail, the fetcher retries them, and the linger
		// hands on what was processed before.
		m, err := r.Fetch(chunk.fetchContext(ctx))
		if err != nil {
			if chunk.lingerExpired(ctx, err) {
				// Nothing more arrived in time: hand on what there is.
				if !chunk.flush(ctx) {
					break
				}
				continue
			}
			break // ctx ended
		}
		if pt.start >= 0 && m.Offset < pt.start {
			// Below the committed offset: stored and alerted on by a
			// previous owner; only the detectors' state is rebuilt.
			if m.Offset <= warm.last {
				continue // a redelivery
			}
			warm.process(ctx, proc, &m)
			if snap != nil && snap.due(true) {
				if row := snap.take(m.Offset); row != nil && !p.sink.submit(ctx, record{snapshot: row}) {
					break
				}
			}
			continue
		}
		warm.done()
		pt.consumed.Inc()
		p.stats.consumed.Add(1)
		if err := pt.tracker.Begin(m.Offset); err != nil {
			// A partition fetcher delivers increasing offsets; anything else
			// is a redelivery of something already in flight.
			pt.log.Warn().Int64("offset", m.Offset).Err(err).Msg("skipping out-of-order message")
			continue
		}
		rec := p.process(ctx, pt, proc, &m)
		if snap != nil {
			snap.processed(m.Offset)
		}
		if !chunk.add(ctx, rec) {
			break
		}
		if snap != nil && snap.due(false) {
			// Hand on the chunk (which ends with the event at m.Offset)
			// before snapshotting; the snapshot follows it.
			if !chunk.flush(ctx) {
				break
			}
			if row := snap.take(m.Offset); row != nil && !p.sink.submit(ctx, record{snapshot: row}) {
				break
			}
		}
	}
	// Stop fetching first: the fetched messages not yet taken are dropped,
	// not committed, and will be consumed again by the next owner.
	r.Close()
	dctx, cancel := p.drainContext()
	defer cancel()
	start := time.Now()
	// Then hand on what was processed but not yet handed on, so a graceful
	// stop stores it; if that fails, its offsets are unregistered.
	// Then snapshot the detectors behind it, so the next owner restores
	// them where this one stopped instead of rebuilding them.
	if !chunk.flush(dctx) {
		chunk.drop()
	} else if row := snap.takeFinal(); row != nil {
		p.sink.submit(dctx, record{snapshot: row})
	}
	err = p.sink.barrier(dctx)
	next, _ := pt.tracker.Committable()
	ev := pt.log.Info()
	if err != nil {
		ev = pt.log.Warn().Str("error", safeError(err))
	}
	ev.Int("unstored", pt.tracker.Pending()).Int64("next_offset", next).Dur("drain", time.Since(start)).
		Msg("partition stopped")
}

func closeProcessor(pt *partition, proc Processor) {
	if c, ok := proc.(interface{ Close() error }); ok {
		if err := c.Close(); err != nil {
			pt.log.Warn().Err(err).Msg("closing detectors failed")
		}
	}
}

func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// process decodes m and runs the partition's detectors on it.
func (p *Pipeline) process(ctx context.Context, pt *partition, proc Processor, m *kafka.Message) record {
	rec := record{
		pos:      store.Position{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset},
		tracker:  pt.tracker,
		received: m.Time,
	}
	ev, err := p.decode(m.Value)
	if reason, ok := schemas.IgnoreReasonOf(err); ok {
		// Well formed but not a chart access (a login, say): counted,
		// committed like a handled message, never dead-lettered.
		p.metrics.ignored.WithLabelValues(string(reason)).Inc()
		return rec
	}
	if err != nil {
		class, field := string(schemas.ErrorClassOf(err)), ""
		var de *schemas.DecodeError
		if errors.As(err, &de) {
			field = de.Field
		}
		rec.dead = p.deadLetter(pt, m, class, field)
		return rec
	}
	if !p.plausible(ev, m) {
		rec.dead = p.deadLetter(pt, m, ClassImplausibleEventTime, "event_time")
		return rec
	}
	rec.event = ev
	findings, err := proc.Process(ctx, ev)
	if err != nil {
		p.metrics.detectorErrors.Inc()
		// Detector errors name detectors and event ids, by contract.
		pt.log.Warn().Int64("offset", m.Offset).Str("event_id", ev.EventID).Err(err).Msg("detector error")
	}
	for i := range findings {
		findings[i].ReceivedAt = m.Time
	}
	rec.findings = findings
	return rec
}

// Event times the tables can hold whatever the configured window: the
// TTL expressions convert them to DateTime (1970..2106).
var (
	minEventTime = time.Date(1970, 1, 2, 0, 0, 0, 0, time.UTC)
	maxEventTime = time.Date(2105, 12, 31, 0, 0, 0, 0, time.UTC)
)

// plausible reports whether ev's event_time lies within pipeline.event_time
// of its reference time: logged_time when the event has one, else the
// Kafka message timestamp; without either only the absolute bounds apply.
// It depends on the message alone, never on the clock, so a partition
// re-read (warm-up, replay) decides the same.
func (p *Pipeline) plausible(ev *schemas.AccessEvent, m *kafka.Message) bool {
	t := ev.EventTime
	if t.Before(minEventTime) || !t.Before(maxEventTime) {
		return false
	}
	ref := m.Time
	if ev.LoggedTime != nil {
		ref = *ev.LoggedTime
	} else if ref.IsZero() || ref.Unix() <= 0 {
		return true // no reference time (a message format without timestamps)
	}
	return !t.Before(ref.Add(-p.cfg.EventTime.MaxPast)) && !t.After(ref.Add(p.cfg.EventTime.MaxFuture))
}

// deadLetter builds the dlq row and DLQ message for m, which failed with
// class (and field). The log line and the row's error name the class and
// field only. A payload larger than pipeline.dead_letter_max_payload (for
// the row) or the DLQ topic's limit (for the message) is kept as its first
// bytes; both carry the whole payload's size and SHA-256. Only those
// prefixes are kept, not m.Value.
func (p *Pipeline) deadLetter(pt *partition, m *kafka.Message, class, field string) *deadLetter {
	text := class
	if field != "" {
		text += ": " + field
	}
	now := time.Now().UTC()
	pt.log.Warn().Int64("offset", m.Offset).Str("error_class", class).Str("field", field).Int("bytes", len(m.Value)).
		Msg("dead-lettering message")
	sum := sha256.Sum256(m.Value)
	row := store.DLQRow{
		Position:      store.Position{Topic: m.Topic, Partition: int32(m.Partition), Offset: m.Offset},
		Key:           bytes.Clone(m.Key[:min(len(m.Key), maxDLQKeyBytes)]),
		PayloadSize:   int64(len(m.Value)),
		PayloadSHA256: hex.EncodeToString(sum[:]),
		ErrorClass:    class,
		Error:         text,
		ReceivedAt:    now,
	}
	keep := min(len(m.Value), max(p.cfg.DeadLetterMaxPayload, p.sink.dlqMaxMessageBytes()))
	prefix := bytes.Clone(m.Value[:keep])
	row.Payload = prefix[:min(keep, p.cfg.DeadLetterMaxPayload)]
	row.PayloadTruncated = len(row.Payload) < len(m.Value)
	headers := []kafka.Header{
		{Key: HeaderSourceTopic, Value: []byte(m.Topic)},
		{Key: HeaderSourcePartition, Value: []byte(strconv.Itoa(m.Partition))},
		{Key: HeaderSourceOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
		{Key: HeaderErrorClass, Value: []byte(class)},
		{Key: HeaderErrorField, Value: []byte(field)},
		{Key: HeaderDeadLetteredAt, Value: []byte(now.Format(time.RFC3339Nano))},
		{Key: HeaderPayloadSize, Value: []byte(strconv.FormatInt(row.PayloadSize, 10))},
		{Key: HeaderPayloadSHA256, Value: []byte(row.PayloadSHA256)},
	}
	return &deadLetter{
		row: row,
		msg: boundMessage(kafka.Message{Key: row.Key, Value: prefix, Headers: headers}, p.sink.dlqMaxMessageBytes()),
	}
}

// commitLoop commits durable offsets every CommitInterval and after every
// stored batch. When the generation ends it waits for the partitions to
// drain and commits once more.
func (p *Pipeline) commitLoop(ctx context.Context, g *generation) {
	tick := time.NewTicker(p.cfg.CommitInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			g.wg.Wait()
			p.finalCommit(g)
			for _, pt := range g.parts {
				p.metrics.lag.DeleteLabelValues(pt.topic, partitionLabel(pt.id))
				p.metrics.committed.DeleteLabelValues(pt.topic, partitionLabel(pt.id))
			}
			p.metrics.assigned.Set(0)
			p.log.Info().Int32("generation", g.gen.ID).Msg("generation ended")
			return
		case <-tick.C:
			p.clearRecoveredFetches(g)
		case <-p.sink.flushed:
		}
		_ = p.commit(g)
	}
}

// finalCommit commits after the partitions drained. The generation has
// ended locally but not yet at the coordinator, which accepts commits
// from this member until it rejoins or leaves; a commit refused because the
// group moved on (this member was evicted) is not retried: the new owner
// starts from the last accepted commit.
func (p *Pipeline) finalCommit(g *generation) {
	dctx, cancel := p.drainContext()
	defer cancel()
	b := newBackoff(RetryConfig{InitialInterval: 50 * time.Millisecond, MaxInterval: time.Second, Multiplier: 2, Jitter: 0.2})
	for {
		err := p.commit(g)
		if err == nil || generationGone(err) {
			return
		}
		p.metrics.retries.WithLabelValues(opCommit).Inc()
		if !sleep(dctx, b.Next()) {
			return
		}
	}
}

// generationGone reports commit errors that mean this member no longer
// owns its partitions.
func generationGone(err error) bool {
	return errors.Is(err, kafka.IllegalGeneration) || errors.Is(err, kafka.UnknownMemberId) ||
		errors.Is(err, kafka.RebalanceInProgress) || errors.Is(err, kafka.FencedInstanceID)
}

// fetchRecovered is how long a partition fetcher must go without an error
// before its /readyz condition clears on an idle partition (the fetcher
// retries within fetchRetry's cap, 2s).
const fetchRecovered = 3 * time.Second

// clearRecoveredFetches clears the fetch condition of partitions whose
// fetcher reported no error for fetchRecovered and commit_interval.
func (p *Pipeline) clearRecoveredFetches(g *generation) {
	quiet := max(fetchRecovered, p.cfg.CommitInterval)
	for _, pt := range g.parts {
		at := pt.fetchFailedAt.Load()
		if at != 0 && time.Since(time.Unix(0, at)) > quiet && pt.fetchFailedAt.CompareAndSwap(at, 0) &&
			pt.fetchFailures.Swap(0) >= fetchFailing {
			p.health.clear(pt.fetchKey())
		}
	}
}

// commit commits every partition's committable offset that moved. When
// none moved, it commits the last committed offsets again: a heartbeat of
// the commit path, so that a lost coordinator shows on /readyz within
// commit_interval even when no message arrives. A failure (other than the
// generation having ended) makes the pipeline not ready until a commit
// succeeds.
func (p *Pipeline) commit(g *generation) error {
	offsets := map[string]map[int]int64{}
	var moved []*partition
	for _, pt := range g.parts {
		next, ok := pt.tracker.Committable()
		if !ok || next <= pt.committed {
			continue
		}
		if offsets[pt.topic] == nil {
			offsets[pt.topic] = map[int]int64{}
		}
		offsets[pt.topic][pt.id] = next
		moved = append(moved, pt)
	}
	if len(moved) == 0 {
		for _, pt := range g.parts {
			if c := p.committedOf(pt); c >= 0 {
				if offsets[pt.topic] == nil {
					offsets[pt.topic] = map[int]int64{}
				}
				offsets[pt.topic][pt.id] = c
			}
		}
		if len(offsets) == 0 {
			p.health.clear(opCommit) // nothing this member could commit
			return nil
		}
	}
	if err := g.gen.CommitOffsets(offsets); err != nil {
		p.metrics.commits.WithLabelValues("error").Inc()
		if generationGone(err) {
			p.log.Info().Int32("generation", g.gen.ID).Err(err).Msg("offset commit refused: the generation has ended")
		} else {
			p.health.set(opCommit, "offset commit failed: "+err.Error())
			p.log.Warn().Int32("generation", g.gen.ID).Err(err).Msg("offset commit failed; will retry")
		}
		return err
	}
	p.health.clear(opCommit)
	p.metrics.commits.WithLabelValues("ok").Inc()
	p.metrics.lastCommit.SetToCurrentTime()
	for _, pt := range moved {
		pt.mu.Lock()
		pt.committed = offsets[pt.topic][pt.id]
		pt.mu.Unlock()
		p.metrics.committed.WithLabelValues(pt.topic, partitionLabel(pt.id)).Set(float64(pt.committed))
		p.updateLag(pt)
	}
	return nil
}

// updateLag sets pt's lag gauge from what is known.
func (p *Pipeline) updateLag(pt *partition) {
	pt.mu.Lock()
	hw := pt.highWater
	pt.mu.Unlock()
	c := p.committedOf(pt)
	if hw < 0 || c < 0 {
		return
	}
	p.metrics.lag.WithLabelValues(pt.topic, partitionLabel(pt.id)).Set(float64(max(hw-c, 0)))
}

func (p *Pipeline) committedOf(pt *partition) int64 {
	pt.mu.Lock()
	defer pt.mu.Unlock()
	return pt.committed
}

// lagLoop measures the high watermarks of the generation's partitions
// every LagInterval, so lag shows even when a fetcher is stuck.
func (p *Pipeline) lagLoop(ctx context.Context, g *generation) {
	client := p.kc.admin()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, pt := range g.parts {
		req.Topics[pt.topic] = append(req.Topics[pt.topic], kafka.LastOffsetOf(pt.id))
	}
	byKey := map[string]*partition{}
	for _, pt := range g.parts {
		byKey[pt.topic+"/"+strconv.Itoa(pt.id)] = pt
	}
	tick := time.NewTicker(p.cfg.LagInterval)
	defer tick.Stop()
	for {
		rctx, cancel := context.WithTimeout(context.Background(), p.kc.cfg.RequestTimeout)
		res, err := client.ListOffsets(rctx, req)
		cancel()
		if err == nil {
			for topic, offs := range res.Topics {
				for _, o := range offs {
					if pt := byKey[topic+"/"+strconv.Itoa(o.Partition)]; pt != nil && o.Error == nil {
						pt.setHighWater(o.LastOffset)
						p.updateLag(pt)
					}
				}
			}
		} else {
			p.log.Debug().Err(err).Msg("lag measurement failed")
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}
