package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// maxSnapshotExpansion bounds the decompressed size of a snapshot relative
// to Config.SnapshotMaxBytes, so a corrupt row cannot exhaust memory.
const maxSnapshotExpansion = 64

// restore prepares a newly assigned partition's Processor and returns it
// with the offset to start reading at. Every offset below the committed
// offset C (pt.start) that is read again only rebuilds detector state:
// its events, findings and dead letters were stored (and its findings
// alerted on) by the previous owner, so consumePartition drops them.
//
// With a StatefulProcessor and an absolute C, it loads the newest snapshot
// below C (offset X), restores it, and returns X+1: the events X+1..C-1 go
// through the detectors again, so they reach the state they had at C.
// Without a usable snapshot (none, snapshots off, unreadable, or its next
// event no longer retained by Kafka) it returns a fresh Processor and the
// warm-up start (see warmupStart): the detectors are rebuilt from there.
// Reading the snapshot or the partition's offsets is retried while
// ClickHouse or Kafka is unreachable; ok is false only when ctx ends (or
// the factory fails) first.
func (p *Pipeline) restore(ctx context.Context, pt *partition, proc Processor) (Processor, int64, bool) {
	sp, stateful := proc.(StatefulProcessor)
	if !stateful || pt.start < 0 {
		return proc, pt.start, true
	}
	var snap store.Snapshot
	var found bool
	if p.snapshots != nil {
		group := p.kc.cfg.GroupID
		b := newBackoff(p.cfg.Retry)
		for {
			rctx, cancel := context.WithTimeout(ctx, p.kc.cfg.RequestTimeout*3)
			var err error
			snap, found, err = p.snapshots.Latest(rctx, group, pt.topic, int32(pt.id), pt.start)
			cancel()
			if err == nil {
				p.health.clear(opRestore)
				break
			}
			if ctx.Err() != nil {
				return proc, 0, false
			}
			pause := b.Next()
			p.health.set(opRestore, "cannot read detector snapshots: "+safeError(err))
			pt.log.Warn().Str("error", safeError(err)).Dur("pause", pause).Msg("reading the detector snapshot failed; retrying")
			if !sleep(ctx, pause) {
				return proc, 0, false
			}
		}
	}
	first, ok := p.firstOffsetRetrying(ctx, pt)
	if !ok {
		return proc, 0, false
	}
	warmup := func(result string, msg string, log zerolog.Logger) (Processor, int64, bool) {
		from, ok := p.warmupStart(ctx, pt, first)
		if !ok {
			return proc, 0, false
		}
		p.metrics.restores.WithLabelValues(result).Inc()
		log.Info().Int64("committed", pt.start).Int64("warmup_from", from).Int64("warmup_events", pt.start-from).
			Dur("warmup_horizon", p.cfg.WarmupHorizon).Msg(msg)
		return proc, from, true
	}
	if !found {
		return warmup(restoreNone, "no detector snapshot below the committed offset; rebuilding detector state from the warm-up start", pt.log)
	}
	log := pt.log.With().Int64("snapshot_offset", snap.Offset).Int64("committed", pt.start).
		Time("taken_at", snap.TakenAt).Int("bytes", len(snap.Data)).Logger()
	if snap.Offset+1 < first {
		log.Warn().Int64("first_offset", first).Msg("the events after the detector snapshot are no longer in Kafka")
		return warmup(restoreExpired, "rebuilding detector state from the warm-up start (not exact: the events the snapshot needs are gone)", log)
	}
	start := time.Now()
	if err := restoreFrom(sp, snap.Data, p.cfg.SnapshotMaxBytes*maxSnapshotExpansion); err != nil {
		log.Error().Str("error", safeError(err)).Msg("restoring the detector snapshot failed")
		closeProcessor(pt, proc)
		fresh, ferr := p.newProcessor(pt.topic, pt.id)
		if ferr != nil {
			p.failFatal(fmt.Errorf("create detectors for %s/%d: %w", pt.topic, pt.id, ferr))
			return nopProcessor{}, 0, false
		}
		proc = fresh
		return warmup(restoreFailed, "rebuilding detector state from the warm-up start", log)
	}
	p.metrics.restores.WithLabelValues(restoreRestored).Inc()
	log.Info().Int64("replay", pt.start-snap.Offset-1).Dur("took", time.Since(start)).
		Msg("detectors restored from snapshot; replaying the events after it into the detectors")
	return proc, snap.Offset + 1, true
}

// warmupStart is where a partition without a usable snapshot rebuilds its
// detectors from: its oldest retained offset first, or, with
// pipeline.warmup_horizon set, the first message Kafka timestamped within
// the horizon before now (never before first, never after the committed
// offset).
func (p *Pipeline) warmupStart(ctx context.Context, pt *partition, first int64) (int64, bool) {
	from := first
	if h := p.cfg.WarmupHorizon; h > 0 {
		at, ok := p.listOffsetRetrying(ctx, pt, kafka.TimeOffsetOf(pt.id, time.Now().Add(-h)))
		if !ok {
			return 0, false
		}
		if at < 0 { // no message that recent
			at = pt.start
		}
		from = max(from, at)
	}
	return min(max(from, 0), pt.start), true
}

// firstOffsetRetrying is the partition's log start offset, retried while
// Kafka does not answer; ok is false when ctx ends first.
func (p *Pipeline) firstOffsetRetrying(ctx context.Context, pt *partition) (int64, bool) {
	return p.listOffsetRetrying(ctx, pt, kafka.FirstOffsetOf(pt.id))
}

// listOffsetRetrying answers one ListOffsets request for pt: the log start
// offset for kafka.FirstOffsetOf, or the first offset at or after a
// timestamp (-1 when there is none) for kafka.TimeOffsetOf.
func (p *Pipeline) listOffsetRetrying(ctx context.Context, pt *partition, req kafka.OffsetRequest) (int64, bool) {
	b := newBackoff(p.cfg.Retry)
	for {
		off, err := p.listOffset(ctx, pt, req)
		if err == nil {
			return off, true
		}
		if ctx.Err() != nil {
			return 0, false
		}
		pause := b.Next()
		pt.log.Warn().Err(err).Dur("pause", pause).Msg("listing the partition's offsets failed; retrying")
		if !sleep(ctx, pause) {
			return 0, false
		}
	}
}

func (p *Pipeline) listOffset(ctx context.Context, pt *partition, req kafka.OffsetRequest) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, p.kc.cfg.RequestTimeout)
	defer cancel()
	res, err := p.kc.admin().ListOffsets(rctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{pt.topic: {req}},
	})
	if err != nil {
		return 0, err
	}
	for _, o := range res.Topics[pt.topic] {
		if o.Partition != pt.id {
			continue
		}
		if o.Error != nil {
			return 0, o.Error
		}
		if req.Timestamp == kafka.FirstOffset {
			return o.FirstOffset, nil
		}
		// kafka-go files a timestamp answer under Offsets, except "no such
		// message" (offset and timestamp -1), which it files as LastOffset.
		for off := range o.Offsets {
			return off, nil
		}
		return -1, nil
	}
	return 0, fmt.Errorf("no offsets for %s/%d", pt.topic, pt.id)
}

// restoreFrom decompresses data into sp's Restore as it reads, so the
// decompressed snapshot is never held whole beside what Restore decodes
// from it, and checks the gzip checksum by reading to the end. An error
// means sp may hold part of the snapshot: the caller discards it.
func restoreFrom(sp StatefulProcessor, data []byte, limit int) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("snapshot is not gzip: %w", err)
	}
	br := &boundedReader{r: zr, left: int64(limit)}
	err = sp.Restore(br)
	if err == nil {
		// Restore may stop at the end of what it decodes; the checksum
		// is read with the rest.
		if _, cerr := io.Copy(io.Discard, br); cerr != nil {
			err = fmt.Errorf("decompress snapshot: %w", cerr)
		}
	}
	if br.over { // whatever Restore made of the error
		return fmt.Errorf("snapshot decompresses to more than %d bytes", limit)
	}
	return err
}

var errSnapshotTooLarge = errors.New("snapshot too large")

// boundedReader reads at most left bytes from r, then fails with
// errSnapshotTooLarge (and sets over) if r has more.
type boundedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (b *boundedReader) Read(p []byte) (int, error) {
	if b.left <= 0 {
		var one [1]byte
		if n, err := io.ReadFull(b.r, one[:]); n == 0 {
			return 0, err // io.EOF at the end, or the gzip checksum's error
		}
		b.over = true
		return 0, errSnapshotTooLarge
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.r.Read(p)
	b.left -= int64(n)
	return n, err
}

// snapshotter decides when a partition's detectors are snapshotted and
// takes the snapshots; it belongs to the partition's goroutine.
type snapshotter struct {
	p      *Pipeline
	pt     *partition
	sp     StatefulProcessor
	events int
	last   time.Time
	buf    bytes.Buffer
	// offset is the last offset the detectors processed; dirty says
	// whether they processed any since the last snapshot (or the restore).
	offset int64
	dirty  bool
}

// newSnapshotter returns nil when snapshots are off or proc has no state.
func (p *Pipeline) newSnapshotter(pt *partition, proc Processor) *snapshotter {
	sp, ok := proc.(StatefulProcessor)
	if !ok || p.snapshots == nil {
		return nil
	}
	return &snapshotter{p: p, pt: pt, sp: sp, last: time.Now()}
}

// processed records that the detectors have processed the message at
// offset.
func (s *snapshotter) processed(offset int64) {
	s.offset, s.dirty = offset, true
}

// due counts one processed message and reports whether a snapshot is due.
//
// During a warm-up (warm) only snapshot_interval counts, when it is set:
// the re-read runs at 100 000 events a second or more, where
// snapshot_events would encode the whole state several times a second
// (a third more CPU per event on the benchmark's stream, docs/benchmarks.md
// §5). A kill during a warm-up then loses at most snapshot_interval of it.
// The events still count, so after a warm-up of snapshot_events or more
// its first new event snapshots the rebuilt state.
func (s *snapshotter) due(warm bool) bool {
	s.events++
	cfg := s.p.cfg
	if warm && cfg.SnapshotInterval > 0 {
		return s.events%1024 == 0 && time.Since(s.last) >= cfg.SnapshotInterval
	}
	return (cfg.SnapshotEvents > 0 && s.events >= cfg.SnapshotEvents) ||
		(cfg.SnapshotInterval > 0 && time.Since(s.last) >= cfg.SnapshotInterval)
}

// take snapshots the detectors, which have processed every message up to
// and including offset, and returns the row to store, or nil when the
// snapshot failed (counted and logged; the next one is tried after the
// next interval).
func (s *snapshotter) take(offset int64) *store.SnapshotRow {
	s.events, s.last, s.dirty = 0, time.Now(), false
	start := time.Now()
	s.buf.Reset()
	zw, _ := gzip.NewWriterLevel(&s.buf, gzip.BestSpeed)
	err := s.sp.Snapshot(zw)
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	m := s.p.metrics
	m.snapshotSeconds.Observe(time.Since(start).Seconds())
	if err != nil {
		m.snapshots.WithLabelValues("error").Inc()
		s.pt.log.Warn().Int64("offset", offset).Str("error", safeError(err)).Msg("detector snapshot failed")
		return nil
	}
	if s.buf.Len() > s.p.cfg.SnapshotMaxBytes {
		m.snapshots.WithLabelValues("too_large").Inc()
		s.pt.log.Warn().Int64("offset", offset).Int("bytes", s.buf.Len()).Int("max", s.p.cfg.SnapshotMaxBytes).
			Msg("detector snapshot larger than pipeline.snapshot_max_bytes; not stored")
		return nil
	}
	m.snapshots.WithLabelValues("ok").Inc()
	m.snapshotBytes.Observe(float64(s.buf.Len()))
	s.pt.log.Debug().Int64("offset", offset).Int("bytes", s.buf.Len()).Dur("took", time.Since(start)).Msg("detector snapshot taken")
	return &store.SnapshotRow{
		Position: store.Position{Topic: s.pt.topic, Partition: int32(s.pt.id), Offset: offset},
		Group:    s.p.kc.cfg.GroupID,
		Data:     bytes.Clone(s.buf.Bytes()),
		TakenAt:  time.Now().UTC(),
	}
}

// takeFinal snapshots the detectors when their partition is revoked or the
// pipeline stops, if they processed anything since the last snapshot (or
// the restore): the next owner then restores exactly this state and
// continues at the committed offset. It returns nil when there is nothing
// new (or s is nil: snapshots off).
func (s *snapshotter) takeFinal() *store.SnapshotRow {
	if s == nil || !s.dirty {
		return nil
	}
	return s.take(s.offset)
}

// warmup feeds the messages below the committed offset, which a previous
// owner stored, dead-lettered and alerted on, to the detectors only: their
// findings are dropped, nothing is stored, dead-lettered or committed.
type warmup struct {
	p           *Pipeline
	pt          *partition
	snap        *snapshotter
	from, last  int64 // where the warm-up started; the last offset it processed (-1: none)
	events      int
	undecodable int
	ignored     int // well-formed, not chart accesses (schemas.ErrNotAccess)
	started     time.Time
	logged      bool
}

// process runs the detectors on m and drops what they return.
func (w *warmup) process(ctx context.Context, proc Processor, m *kafka.Message) {
	w.last = m.Offset
	w.events++
	w.p.metrics.replayed.Inc()
	w.p.stats.replayed.Add(1)
	if ev, err := w.p.decode(m.Value); errors.Is(err, schemas.ErrNotAccess) {
		w.ignored++
	} else if err != nil {
		w.undecodable++ // dead-lettered by the owner that committed it
	} else if !w.p.plausible(ev, m) {
		w.undecodable++ // dead-lettered too: the detectors never saw it
	} else {
		// Errors were counted and logged by the owner that committed it.
		_, _ = proc.Process(ctx, ev)
	}
	if w.snap != nil {
		w.snap.processed(m.Offset)
	}
	if m.Offset == w.pt.start-1 {
		w.done()
	}
}

// done logs the end of the warm-up once.
func (w *warmup) done() {
	if w.logged || w.events == 0 {
		return
	}
	w.logged = true
	took := time.Since(w.started)
	w.pt.log.Info().Int64("from", w.from).Int64("committed", w.pt.start).Int("events", w.events).
		Int("undecodable", w.undecodable).Int("not_accesses", w.ignored).Dur("took", took).
		Float64("events_per_second", math.Round(float64(w.events)/max(took.Seconds(), 1e-9))).
		Msg("detector state rebuilt up to the committed offset")
}
