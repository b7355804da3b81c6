package replay

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Source yields an export's events in order. Next returns io.EOF at the
// end; a line that is not an event gives a *schemas.DecodeError or
// *schemas.NotAccessError (see IsLineError) and reading goes on; any other
// error is an I/O error.
type Source interface {
	Next() (ev *schemas.AccessEvent, line int, err error)
}

// IsLineError reports whether err concerns one line only.
func IsLineError(err error) bool {
	var de *schemas.DecodeError
	return errors.As(err, &de) || errors.Is(err, schemas.ErrNotAccess)
}

// LineTally counts what an export held besides events.
type LineTally struct {
	Lines      int                          // records read (non-blank lines, CSV rows)
	BadLines   int                          // lines that could not be decoded
	BadClasses map[schemas.ErrorClass]int   // by error class
	Ignored    map[schemas.IgnoreReason]int // not chart accesses, by reason
}

// NewLineTally returns an empty tally.
func NewLineTally() LineTally {
	return LineTally{BadClasses: map[schemas.ErrorClass]int{}, Ignored: map[schemas.IgnoreReason]int{}}
}

// IgnoredTotal is the number of lines that were not chart accesses.
func (t LineTally) IgnoredTotal() int {
	n := 0
	for _, c := range t.Ignored {
		n += c
	}
	return n
}

// Count records a line error; it returns true for a bad line (to report).
func (t *LineTally) Count(err error) bool {
	if r, ok := schemas.IgnoreReasonOf(err); ok {
		t.Ignored[r]++
		return false
	}
	t.BadLines++
	t.BadClasses[schemas.ErrorClassOf(err)]++
	return true
}

// Stats summarises one replay.
type Stats struct {
	LineTally                    // lines read, bad lines and not chart accesses
	Events    int                // lines decoded and processed
	Findings  map[string]int     // emitted findings (versions included) by detector
	Late      uint64             // events behind their engine's watermark
	DetErrors int                // detector errors
	NoZone    []string           // facilities seen without a configured time zone
	Coverage  detectors.Coverage // accesses by what explained them
}

// TotalFindings is the number of findings emitted, versions included.
func (s Stats) TotalFindings() int {
	n := 0
	for _, c := range s.Findings {
		n += c
	}
	return n
}

// Replayer feeds decoded lines to per-partition engines in input order.
//
// Three stages run concurrently: Run's caller goroutine reads and decodes
// lines in chunks and hands each chunk's events to the engines by
// partition; each engine runs on its own goroutine over its share of every
// chunk, in order; and the writer takes the chunks in input order, waits
// for every engine to finish each, and writes their findings merged back
// into input order. The output is therefore exactly what one goroutine
// feeding the engines event by event would write, whatever the number of
// engines or CPUs.
type Replayer struct {
	NewEngine func() (*detectors.Engine, error)
	Partition func(key []byte) int // user_id → partition in [0, N)
	N         int                  // partitions, one engine each
	Zones     map[string]string    // facility → time zone; others are reported in Stats.NoZone
	Emit      func(*schemas.Finding) error
	// OnBad is called for the first MaxBad bad lines (never with content).
	OnBad  func(line int, err error)
	MaxBad int
	// OnDetectorError is called with the running count of detector errors.
	OnDetectorError func(n int, err error)
	// Observe sees every decoded event, in input order, before the engines.
	Observe func(ev *schemas.AccessEvent)
	// Peers, when set, judges the volume detector's days against the whole
	// peer group across the engines (--peers group); nil leaves each engine
	// comparing a user with its own partition's users.
	Peers *detectors.PeerStage
}

// chunk is a run of consecutive input events on their way through the
// engines.
type chunk struct {
	share   [][]item              // by partition, in input order
	results [][]findings          // by partition, filled by its engine
	peers   []detectors.PeerBatch // by partition: what its engine handed the peer stage
	wm      []time.Time           // by partition: the engine's watermark after its share
	done    sync.WaitGroup        // one per partition
}

type item struct {
	idx int // position in the chunk
	ev  *schemas.AccessEvent
}

type findings struct {
	idx int
	fs  []schemas.Finding
	err error
}

// ChunkSize is the number of events the reader hands the engines at once.
const ChunkSize = 2048

// Run replays src to its end (or ctx's end, or the first write error).
func (r *Replayer) Run(ctx context.Context, src Source) (Stats, error) {
	st := Stats{LineTally: NewLineTally(), Findings: map[string]int{}}
	engines := make([]*detectors.Engine, r.N)
	for i := range engines {
		e, err := r.NewEngine()
		if err != nil {
			return st, err
		}
		defer e.Close()
		if r.Peers != nil {
			e.DeferPeers()
		}
		engines[i] = e
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// Engines.
	feeds := make([]chan *chunk, r.N)
	flushed := make([]findings, r.N)
	flushedPeers := make([]detectors.PeerBatch, r.N)
	var engWG sync.WaitGroup
	for i, e := range engines {
		feeds[i] = make(chan *chunk, 4)
		engWG.Add(1)
		go func() {
			defer engWG.Done()
			for c := range feeds[i] {
				for _, it := range c.share[i] {
					fs, err := e.Process(ctx, it.ev)
					if len(fs) > 0 || err != nil {
						c.results[i] = append(c.results[i], findings{idx: it.idx, fs: fs, err: err})
					}
				}
				if r.Peers != nil {
					c.peers[i], c.wm[i] = e.TakePeers(), e.Watermark()
				}
				c.done.Done()
			}
			// The end of the file closes every window, like a drained
			// partition.
			fs, err := e.Flush(ctx)
			flushed[i] = findings{fs: fs, err: err}
			if r.Peers != nil {
				flushedPeers[i] = e.TakePeers()
			}
		}()
	}

	// Writer: chunks in input order, findings merged back into it.
	ordered := make(chan *chunk, 8)
	writeErr := make(chan error, 1)
	go func() {
		var err error
		for c := range ordered {
			c.done.Wait()
			if err == nil {
				err = r.writeChunk(&st, c)
				if err == nil && r.Peers != nil {
					// The peer stage after the whole chunk, in partition
					// order: what it judges depends on the stream only.
					for i := range c.peers {
						r.Peers.Add(i, c.peers[i], c.wm[i])
					}
					err = r.emitAll(&st, engines[0].AdmitPeerFindings(r.Peers.Ready()), nil)
				}
				if err != nil {
					cancel()
				}
			}
		}
		writeErr <- err
	}()

	// Reader and decoder.
	noZone := map[string]bool{}
	readErr := func() error {
		var c *chunk
		n := 0
		send := func() {
			if c == nil {
				return
			}
			c.done.Add(r.N)
			ordered <- c
			for i := range feeds {
				feeds[i] <- c
			}
			c, n = nil, 0
		}
		for {
			ev, lineNo, err := src.Next()
			if err == io.EOF {
				send()
				return nil
			}
			if err != nil && !IsLineError(err) {
				return fmt.Errorf("replay: reading events: %w", err)
			}
			if lineNo%4096 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			st.Lines++
			if err != nil {
				if st.Count(err) && st.BadLines <= r.MaxBad {
					r.OnBad(lineNo, err)
				}
				continue
			}
			st.Events++
			if r.Observe != nil {
				r.Observe(ev)
			}
			if _, ok := r.Zones[ev.FacilityID]; !ok && !noZone[ev.FacilityID] && len(noZone) < 100 {
				noZone[ev.FacilityID] = true
			}
			if c == nil {
				c = &chunk{share: make([][]item, r.N), results: make([][]findings, r.N),
					peers: make([]detectors.PeerBatch, r.N), wm: make([]time.Time, r.N)}
			}
			p := r.Partition([]byte(ev.UserID))
			c.share[p] = append(c.share[p], item{idx: n, ev: ev})
			n++
			if n == ChunkSize {
				send()
			}
		}
	}()
	for i := range feeds {
		close(feeds[i])
	}
	engWG.Wait()
	close(ordered)
	werr := <-writeErr
	switch {
	case werr != nil:
		return st, werr
	case readErr != nil:
		return st, readErr
	}
	for i, e := range engines {
		if err := r.emitAll(&st, flushed[i].fs, flushed[i].err); err != nil {
			return st, err
		}
		st.Late += e.LateEvents()
		st.Coverage.Add(e.Coverage())
	}
	if r.Peers != nil {
		for i := range engines {
			r.Peers.Add(i, flushedPeers[i], detectors.EndOfTime)
		}
		if err := r.emitAll(&st, engines[0].AdmitPeerFindings(r.Peers.Flush()), nil); err != nil {
			return st, err
		}
	}
	st.NoZone = make([]string, 0, len(noZone))
	for f := range noZone {
		st.NoZone = append(st.NoZone, f)
	}
	slices.Sort(st.NoZone)
	return st, nil
}

// writeChunk writes a chunk's findings in input order: each engine's
// results are in its share's order, so a k-way merge on the index does it.
func (r *Replayer) writeChunk(st *Stats, c *chunk) error {
	pos := make([]int, len(c.results))
	for {
		best := -1
		for p, res := range c.results {
			if pos[p] < len(res) && (best < 0 || res[pos[p]].idx < c.results[best][pos[best]].idx) {
				best = p
			}
		}
		if best < 0 {
			return nil
		}
		f := c.results[best][pos[best]]
		pos[best]++
		if err := r.emitAll(st, f.fs, f.err); err != nil {
			return err
		}
	}
}

func (r *Replayer) emitAll(st *Stats, fs []schemas.Finding, err error) error {
	if err != nil {
		st.DetErrors++
		r.OnDetectorError(st.DetErrors, err)
	}
	for i := range fs {
		st.Findings[fs[i].Detector]++
		if err := r.Emit(&fs[i]); err != nil {
			return fmt.Errorf("replay: writing findings: %w", err)
		}
	}
	return nil
}

// FindingEncoder writes findings as NDJSON without HTML escaping.
type FindingEncoder struct{ enc *json.Encoder }

// NewFindingEncoder returns an encoder writing to w.
func NewFindingEncoder(w io.Writer) *FindingEncoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return &FindingEncoder{enc: enc}
}

// Encode writes one finding and a newline.
func (e *FindingEncoder) Encode(f *schemas.Finding) error { return e.enc.Encode(f) }
