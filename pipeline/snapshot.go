package pipeline

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
)

// maxSnapshotExpansion bounds the decompressed size of a snapshot relative
// to Config.SnapshotMaxBytes, so a corrupt row cannot exhaust memory.
const maxSnapshotExpansion = 64

// restore prepares a newly assigned partition's Processor and returns it
// with the offset to start reading at.
//
// With snapshots on, a StatefulProcessor and an absolute committed offset
// C, it loads the newest snapshot below C (offset X), restores it, and
// returns X+1: the events X+1..C-1 are processed (and stored) again, so
// the detectors reach the state they had at C, and the findings they
// complete again carry the same ids. Without a usable snapshot it returns
// the Processor as is and C (or first/last for a new group). A snapshot
// that cannot be restored leaves a fresh Processor from the factory; a
// snapshot whose next event is no longer in Kafka is not used. Reading the
// snapshot is retried while ClickHouse is unreachable; ok is false only
// when ctx ends (or the factory fails) first.
func (p *Pipeline) restore(ctx context.Context, pt *partition, proc Processor) (Processor, int64, bool) {
	sp, stateful := proc.(StatefulProcessor)
	if p.snapshots == nil || !stateful || pt.start < 0 {
		return proc, pt.start, true
	}
	group := p.kc.cfg.GroupID
	var snap store.Snapshot
	var found bool
	b := backoff{cfg: p.cfg.Retry}
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
		pause := b.next()
		p.health.set(opRestore, "cannot read detector snapshots: "+safeError(err))
		pt.log.Warn().Str("error", safeError(err)).Dur("pause", pause).Msg("reading the detector snapshot failed; retrying")
		if !sleep(ctx, pause) {
			return proc, 0, false
		}
	}
	if !found {
		p.metrics.restores.WithLabelValues(restoreNone).Inc()
		pt.log.Info().Int64("committed", pt.start).Msg("no detector snapshot below the committed offset; detectors start empty")
		return proc, pt.start, true
	}
	log := pt.log.With().Int64("snapshot_offset", snap.Offset).Int64("committed", pt.start).
		Time("taken_at", snap.TakenAt).Int("bytes", len(snap.Data)).Logger()
	if first, err := p.firstOffset(ctx, pt); err == nil && snap.Offset+1 < first {
		p.metrics.restores.WithLabelValues(restoreExpired).Inc()
		log.Warn().Int64("first_offset", first).
			Msg("the events after the detector snapshot are no longer in Kafka; detectors start empty at the committed offset")
		return proc, pt.start, true
	}
	start := time.Now()
	if err := restoreFrom(sp, snap.Data, p.cfg.SnapshotMaxBytes*maxSnapshotExpansion); err != nil {
		p.metrics.restores.WithLabelValues(restoreFailed).Inc()
		log.Error().Str("error", safeError(err)).Msg("restoring the detector snapshot failed; detectors start empty at the committed offset")
		closeProcessor(pt, proc)
		fresh, ferr := p.newProcessor(pt.topic, pt.id)
		if ferr != nil {
			p.failFatal(fmt.Errorf("create detectors for %s/%d: %w", pt.topic, pt.id, ferr))
			return nopProcessor{}, 0, false
		}
		return fresh, pt.start, true
	}
	p.metrics.restores.WithLabelValues(restoreRestored).Inc()
	log.Info().Int64("replay", pt.start-snap.Offset-1).Dur("took", time.Since(start)).
		Msg("detectors restored from snapshot; replaying the events after it")
	return proc, snap.Offset + 1, true
}

// restoreFrom decompresses data and restores sp from it.
func restoreFrom(sp StatefulProcessor, data []byte, limit int) error {
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("snapshot is not gzip: %w", err)
	}
	raw, err := io.ReadAll(io.LimitReader(zr, int64(limit)+1))
	if err != nil {
		return fmt.Errorf("decompress snapshot: %w", err)
	}
	if len(raw) > limit {
		return fmt.Errorf("snapshot decompresses to more than %d bytes", limit)
	}
	return sp.Restore(bytes.NewReader(raw))
}

// firstOffset is the partition's log start offset.
func (p *Pipeline) firstOffset(ctx context.Context, pt *partition) (int64, error) {
	rctx, cancel := context.WithTimeout(ctx, p.kc.cfg.RequestTimeout)
	defer cancel()
	res, err := p.kc.admin().ListOffsets(rctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{pt.topic: {kafka.FirstOffsetOf(pt.id)}},
	})
	if err != nil {
		return 0, err
	}
	for _, o := range res.Topics[pt.topic] {
		if o.Partition == pt.id {
			if o.Error != nil {
				return 0, o.Error
			}
			return o.FirstOffset, nil
		}
	}
	return 0, fmt.Errorf("no offsets for %s/%d", pt.topic, pt.id)
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
}

// newSnapshotter returns nil when snapshots are off or proc has no state.
func (p *Pipeline) newSnapshotter(pt *partition, proc Processor) *snapshotter {
	sp, ok := proc.(StatefulProcessor)
	if !ok || p.snapshots == nil {
		return nil
	}
	return &snapshotter{p: p, pt: pt, sp: sp, last: time.Now()}
}

// due counts one processed message and reports whether a snapshot is due.
func (s *snapshotter) due() bool {
	s.events++
	cfg := s.p.cfg
	return (cfg.SnapshotEvents > 0 && s.events >= cfg.SnapshotEvents) ||
		(cfg.SnapshotInterval > 0 && time.Since(s.last) >= cfg.SnapshotInterval)
}

// take snapshots the detectors, which have processed every message up to
// and including offset, and returns the row to store, or nil when the
// snapshot failed (counted and logged; the next one is tried after the
// next interval).
func (s *snapshotter) take(offset int64) *store.SnapshotRow {
	s.events, s.last = 0, time.Now()
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
