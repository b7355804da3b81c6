package ingest

import (
	"bytes"
	stdgzip "compress/gzip"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
)

// TestSnapshotterDue: snapshot_events and snapshot_interval both count
// on new events; while a warm-up re-reads, only the interval does (when
// set), and the first new event after one of snapshot_events or more
// snapshots the rebuilt state.
func TestSnapshotterDue(t *testing.T) {
	newSnap := func(events int, interval time.Duration, sinceLast time.Duration) *snapshotter {
		return &snapshotter{p: &Pipeline{cfg: Config{SnapshotEvents: events, SnapshotInterval: interval}}, last: time.Now().Add(-sinceLast)}
	}
	firstDue := func(s *snapshotter, warm bool, max int) int {
		for i := 1; i <= max; i++ {
			if s.due(warm) {
				return i
			}
		}
		return 0
	}
	if n := firstDue(newSnap(10, time.Hour, 0), false, 100); n != 10 {
		t.Errorf("new events: due at event %d, want 10 (snapshot_events)", n)
	}
	s := newSnap(10, time.Hour, 0)
	if n := firstDue(s, true, 5000); n != 0 {
		t.Errorf("warm-up within the interval: due at event %d, want never", n)
	}
	if !s.due(false) {
		t.Error("the first new event after a warm-up of 5 000 events: not due, want a snapshot of the rebuilt state")
	}
	if n := firstDue(newSnap(10, time.Hour, 2*time.Hour), true, 5000); n == 0 || n > 1024 {
		t.Errorf("warm-up past the interval: due at event %d, want within 1 024 events", n)
	}
	if n := firstDue(newSnap(10, 0, 0), true, 100); n != 10 {
		t.Errorf("warm-up without an interval: due at event %d, want 10 (snapshot_events)", n)
	}
	if n := firstDue(newSnap(0, time.Hour, 2*time.Hour), false, 10); n != 1 {
		t.Errorf("new events past the interval: due at event %d, want 1", n)
	}
}

// bytesState is a StatefulProcessor whose state is bytes.
type bytesState struct {
	Processor
	state []byte
}

func (b *bytesState) Snapshot(w io.Writer) error { _, err := w.Write(b.state); return err }

func (b *bytesState) Restore(r io.Reader) (err error) { b.state, err = io.ReadAll(r); return err }

// prefixState is a StatefulProcessor that restores the first 16 bytes of
// its snapshot and reads no further.
type prefixState struct {
	Processor
	state []byte
}

func (p *prefixState) Snapshot(w io.Writer) error { _, err := w.Write(p.state); return err }

func (p *prefixState) Restore(r io.Reader) error {
	p.state = make([]byte, 16)
	_, err := io.ReadFull(r, p.state)
	return err
}

// TestRestoreFromReadsStdlibGzip: snapshots are gzip (RFC 1952) whichever
// library wrote them. Those stored before session 9 were compressed with
// the standard library's compress/gzip and must still restore, and a
// snapshot taken now must be readable by it (an older binary, or a
// person with gunzip). The decompression bound and the gzip checksum hold
// although restoreFrom streams, also when Restore stops reading early.
func TestRestoreFromReadsStdlibGzip(t *testing.T) {
	state := bytes.Repeat([]byte(`{"users":{"u1":{"own_h":{"1":{"at":1}}}}}`), 1000)
	var old bytes.Buffer
	zw, _ := stdgzip.NewWriterLevel(&old, stdgzip.BestSpeed)
	if _, err := zw.Write(state); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	var got bytesState
	if err := restoreFrom(&got, old.Bytes(), len(state)); err != nil {
		t.Fatalf("a snapshot written by compress/gzip: %v", err)
	}
	if !bytes.Equal(got.state, state) {
		t.Fatal("a snapshot written by compress/gzip restored different bytes")
	}
	if err := restoreFrom(&got, old.Bytes(), len(state)-1); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("a snapshot larger than the bound: %v, want refused", err)
	}
	// A Restore that stops before the end (a JSON decoder reads one
	// value) still has the checksum checked, and the bound.
	var head prefixState
	if err := restoreFrom(&head, old.Bytes(), len(state)); err != nil || len(head.state) != 16 {
		t.Fatalf("a Restore that reads 16 bytes: %v, %d bytes", err, len(head.state))
	}
	if err := restoreFrom(&head, old.Bytes(), len(state)-1); err == nil || !strings.Contains(err.Error(), "more than") {
		t.Fatalf("a Restore that reads 16 bytes of a snapshot larger than the bound: %v, want refused", err)
	}
	corrupt := bytes.Clone(old.Bytes())
	corrupt[len(corrupt)-8] ^= 0xff // the CRC-32 of the gzip trailer
	if err := restoreFrom(&head, corrupt, len(state)); err == nil {
		t.Fatal("a snapshot with a wrong checksum restored")
	}

	s := &snapshotter{p: &Pipeline{cfg: Config{SnapshotMaxBytes: 1 << 20}, metrics: newMetrics(prometheus.NewRegistry()), kc: &kafkaClients{}},
		pt: &partition{log: zerolog.Nop()}, sp: &bytesState{state: state}}
	row := s.take(7)
	if row == nil {
		t.Fatal("no snapshot taken")
	}
	zr, err := stdgzip.NewReader(bytes.NewReader(row.Data))
	if err != nil {
		t.Fatalf("compress/gzip cannot open a snapshot taken now: %v", err)
	}
	if raw, err := io.ReadAll(zr); err != nil || !bytes.Equal(raw, state) {
		t.Fatalf("compress/gzip reads a snapshot taken now as %d bytes (%v), want the state", len(raw), err)
	}
}
