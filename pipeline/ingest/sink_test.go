package ingest

import (
	"context"
	"errors"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// fakeStore records batches; fail, when set, decides each Write's error.
type fakeStore struct {
	mu      sync.Mutex
	batches [][]int64 // offsets of event rows, per successful write
	tokens  []string
	calls   int
	fail    func(call int) error
}

func (f *fakeStore) Write(_ context.Context, b *store.Batch) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(f.calls); err != nil {
			return err
		}
	}
	var offs []int64
	for _, e := range b.Events {
		offs = append(offs, e.Offset)
	}
	f.batches = append(f.batches, offs)
	f.tokens = append(f.tokens, b.Token(store.TableEvents))
	return nil
}

func (f *fakeStore) snapshot() [][]int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]int64(nil), f.batches...)
}

// fakeDLQ records dead letters; fail decides each call's error.
type fakeDLQ struct {
	mu    sync.Mutex
	got   []string
	calls int
	fail  func(call int, msgs []kafka.Message) error
}

func (f *fakeDLQ) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail != nil {
		if err := f.fail(f.calls, msgs); err != nil {
			var we kafka.WriteErrors
			if errors.As(err, &we) {
				for i, e := range we {
					if e == nil {
						f.got = append(f.got, string(msgs[i].Value))
					}
				}
			}
			return err
		}
	}
	for _, m := range msgs {
		f.got = append(f.got, string(m.Value))
	}
	return nil
}

func testSinkConfig() Config {
	c := DefaultConfig()
	c.BatchMaxRows = 10
	c.BatchMaxWait = 50 * time.Millisecond
	c.QueueSize = 5
	c.Retry = RetryConfig{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond, Multiplier: 2, Jitter: 0.1}
	return c
}

func newTestSink(t *testing.T, cfg Config, st Sink, dlq DeadLetterWriter) (*sink, *Health) {
	t.Helper()
	h := NewHealth(nil)
	s := newSink(cfg, st, dlq, newMetrics(prometheus.NewRegistry()), h, zerolog.New(zerolog.NewTestWriter(t)))
	ctx, cancel := context.WithCancel(context.Background())
	s.start(ctx)
	t.Cleanup(func() {
		cancel()
		s.wait()
	})
	return s, h
}

func eventRecord(tr *offsetTracker, off int64) record {
	if err := tr.Begin(off); err != nil {
		panic(err)
	}
	return record{
		pos:     store.Position{Topic: "t", Partition: 0, Offset: off},
		tracker: tr,
		event:   &schemas.AccessEvent{EventID: fmt.Sprintf("e%d", off)},
	}
}

func TestSinkFlushesAtMaxRows(t *testing.T) {
	st := &fakeStore{}
	cfg := testSinkConfig()
	cfg.BatchMaxWait = time.Hour
	s, _ := newTestSink(t, cfg, st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	for off := range int64(25) {
		if !s.submit(context.Background(), eventRecord(tr, off)) {
			t.Fatal("submit failed")
		}
	}
	waitFor(t, "two full batches", func() bool { return len(st.snapshot()) == 2 })
	got := st.snapshot()
	if len(got[0]) != 10 || len(got[1]) != 10 || got[0][0] != 0 || got[1][0] != 10 {
		t.Fatalf("batches %v, want 0..9 and 10..19", got)
	}
	// A batch is stored before its offsets are marked done: wait for them.
	waitFor(t, "offsets up to 20 committable", func() bool { return committable(t, tr) >= 20 })
	if next := committable(t, tr); next != 20 {
		t.Fatalf("committable %d, want 20", next)
	}
	// The remaining 5 wait for a barrier (or the hour-long timer).
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if next := committable(t, tr); next != 25 {
		t.Fatalf("after barrier: committable %d, want 25", next)
	}
}

func TestSinkFlushesAfterMaxWait(t *testing.T) {
	st := &fakeStore{}
	s, _ := newTestSink(t, testSinkConfig(), st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	start := time.Now()
	for off := range int64(3) {
		s.submit(context.Background(), eventRecord(tr, off))
	}
	waitFor(t, "timed flush", func() bool { return len(st.snapshot()) == 1 })
	if took := time.Since(start); took < 40*time.Millisecond {
		t.Errorf("flushed after %s, before batch_max_wait", took)
	}
	if got := st.snapshot()[0]; len(got) != 3 {
		t.Errorf("batch %v, want 3 rows", got)
	}
}

// TestSinkBackpressure: while the store fails, nothing is acked, the
// bounded queue fills and submit blocks; readiness names the reason; once
// the store recovers every record is stored once, in order, and acked.
func TestSinkBackpressure(t *testing.T) {
	var mu sync.Mutex
	down := true
	st := &fakeStore{fail: func(int) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("dial tcp 127.0.0.1:8123: connect: connection refused")
		}
		return nil
	}}
	cfg := testSinkConfig()
	s, h := newTestSink(t, cfg, st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	// Capacity: one batch being retried, one batch filling, the queue.
	capacity := 2*cfg.BatchMaxRows + cfg.QueueSize
	accepted := 0
	for off := int64(0); ; off++ {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		rec := eventRecord(tr, off)
		ok := s.submit(ctx, rec)
		cancel()
		if !ok {
			tr.Cancel(off)
			break
		}
		accepted++
		if accepted > capacity+1 {
			t.Fatalf("accepted %d records with the store down; bound is %d", accepted, capacity)
		}
	}
	if accepted < capacity-1 {
		t.Fatalf("accepted only %d records before blocking, want about %d", accepted, capacity)
	}
	if next := committable(t, tr); next != 0 {
		t.Fatalf("commit position moved to %d while the store was down", next)
	}
	waitFor(t, "not ready", func() bool { ok, _ := h.status(); return !ok })
	if _, reason := h.status(); !strings.Contains(reason, "connection refused") || !strings.Contains(reason, opClickHouse) {
		t.Errorf("readiness reason %q does not say why", reason)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if ok, reason := h.status(); !ok {
		t.Errorf("still not ready after recovery: %s", reason)
	}
	var all []int64
	for _, b := range st.snapshot() {
		all = append(all, b...)
	}
	if len(all) != accepted {
		t.Fatalf("stored %d records, accepted %d", len(all), accepted)
	}
	for i, off := range all {
		if off != int64(i) {
			t.Fatalf("stored offsets out of order or duplicated at %d: %v", i, all)
		}
	}
	if next := committable(t, tr); next != int64(accepted) {
		t.Fatalf("committable %d, want %d", next, accepted)
	}
}

// TestSinkRetriesWithSameToken: a retried batch is the same batch, so its
// deduplication token does not change.
func TestSinkRetriesWithSameToken(t *testing.T) {
	var tokens []string
	st := &fakeStore{}
	st.fail = func(call int) error {
		if call <= 2 {
			return errors.New("timeout")
		}
		return nil
	}
	wrapped := sinkFunc(func(ctx context.Context, b *store.Batch) error {
		tokens = append(tokens, b.Token(store.TableEvents))
		return st.Write(ctx, b)
	})
	s, _ := newTestSink(t, testSinkConfig(), wrapped, &fakeDLQ{})
	tr := newOffsetTracker(0)
	for off := range int64(4) {
		s.submit(context.Background(), eventRecord(tr, off))
	}
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(tokens) != 3 || tokens[0] != tokens[1] || tokens[1] != tokens[2] {
		t.Fatalf("tokens over 3 attempts: %v, want 3 identical", tokens)
	}
}

type sinkFunc func(context.Context, *store.Batch) error

func (f sinkFunc) Write(ctx context.Context, b *store.Batch) error { return f(ctx, b) }

func TestSinkPermanentErrorFails(t *testing.T) {
	perm := Permanent(errors.New("UNKNOWN_TABLE"))
	st := &fakeStore{fail: func(int) error { return perm }}
	s, _ := newTestSink(t, testSinkConfig(), st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	s.submit(context.Background(), eventRecord(tr, 0))
	if err := s.barrier(context.Background()); !errors.Is(err, perm) {
		t.Fatalf("barrier: %v, want the permanent error", err)
	}
	if !errors.Is(s.err(), perm) {
		t.Fatalf("sink err %v", s.err())
	}
	if s.submit(context.Background(), eventRecord(tr, 1)) {
		t.Fatal("submit accepted after a permanent failure")
	}
	if next := committable(t, tr); next != 0 {
		t.Fatalf("commit position moved to %d after a failed write", next)
	}
}

// TestSinkDeadLettersRetryOnlyFailedMessages: a partially failed DLQ
// produce is retried with the failed messages only, and the offsets are
// acked only after both the DLQ topic and the store have them.
func TestSinkDeadLettersRetryOnlyFailedMessages(t *testing.T) {
	dlq := &fakeDLQ{fail: func(call int, msgs []kafka.Message) error {
		if call == 1 {
			we := make(kafka.WriteErrors, len(msgs))
			we[1] = kafka.NotEnoughReplicas
			return we
		}
		return nil
	}}
	st := &fakeStore{}
	s, _ := newTestSink(t, testSinkConfig(), st, dlq)
	tr := newOffsetTracker(0)
	for off := range int64(3) {
		if err := tr.Begin(off); err != nil {
			t.Fatal(err)
		}
		s.submit(context.Background(), record{
			pos:     store.Position{Topic: "t", Offset: off},
			tracker: tr,
			dead: &deadLetter{
				row: store.DLQRow{Position: store.Position{Topic: "t", Offset: off}, ErrorClass: "syntax"},
				msg: kafka.Message{Value: []byte(fmt.Sprintf("bad%d", off))},
			},
		})
	}
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(dlq.got, ","); got != "bad0,bad2,bad1" {
		t.Fatalf("DLQ got %s, want each message once (bad1 retried)", got)
	}
	if next := committable(t, tr); next != 3 {
		t.Fatalf("committable %d, want 3", next)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSinkAfterStoreHook: the hook sees a batch's findings after its
// INSERTs succeeded and before its offsets are acked; a failing hook is
// retried on its own (the batch is not inserted again), holds the offsets
// back and makes the pipeline not ready until it succeeds.
func TestSinkAfterStoreHook(t *testing.T) {
	st := &fakeStore{}
	var mu sync.Mutex
	var calls int
	var seen []string
	var writesAtFirstCall int
	fail := true
	cfg := testSinkConfig()
	h := NewHealth(nil)
	s := newSink(cfg, st, &fakeDLQ{}, newMetrics(prometheus.NewRegistry()), h, zerolog.New(zerolog.NewTestWriter(t)))
	tr := newOffsetTracker(0)
	s.afterStore = func(_ context.Context, fs []schemas.Finding) error {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if calls == 1 {
			writesAtFirstCall = len(st.snapshot())
		}
		if next, _ := tr.Committable(); next > 0 {
			t.Errorf("offsets acked (committable %d) before the hook succeeded", next)
		}
		if fail {
			return errors.New("alerts table: connection refused")
		}
		for _, f := range fs {
			seen = append(seen, f.FindingID)
		}
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.start(ctx)
	t.Cleanup(func() { cancel(); s.wait() })

	for off := range int64(3) {
		rec := eventRecord(tr, off)
		if off != 1 {
			rec.findings = []schemas.Finding{{FindingID: fmt.Sprintf("f%d", off)}}
		}
		s.submit(ctx, rec)
	}
	waitFor(t, "hook retried", func() bool { mu.Lock(); defer mu.Unlock(); return calls >= 3 })
	if ok, reason := h.status(); ok || !strings.Contains(reason, opAfterStore) {
		t.Errorf("ready=%v reason %q while the hook fails", ok, reason)
	}
	if next := committable(t, tr); next != 0 {
		t.Fatalf("committable %d while the hook fails", next)
	}
	mu.Lock()
	fail = false
	mu.Unlock()
	if err := s.barrier(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if writesAtFirstCall != 1 || len(st.snapshot()) != 1 || st.calls != 1 {
		t.Errorf("the batch was written %d times (stored before the hook: %d); want once, before", st.calls, writesAtFirstCall)
	}
	if strings.Join(seen, ",") != "f0,f2" {
		t.Errorf("hook saw %v, want f0,f2", seen)
	}
	if next := committable(t, tr); next != 3 {
		t.Errorf("committable %d after the hook succeeded, want 3", next)
	}
	if ok, reason := h.status(); !ok {
		t.Errorf("not ready after recovery: %s", reason)
	}
}

// TestSinkStoresSnapshotsWithTheirBatch: a snapshot row travels in the
// batch it lands in, counts as a row, and acks no offset.
func TestSinkStoresSnapshotsWithTheirBatch(t *testing.T) {
	var got []store.Batch
	var mu sync.Mutex
	st := sinkFunc(func(_ context.Context, b *store.Batch) error {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, store.Batch{Events: b.Events, Snapshots: b.Snapshots})
		return nil
	})
	s, _ := newTestSink(t, testSinkConfig(), st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	s.submit(context.Background(), eventRecord(tr, 0))
	s.submit(context.Background(), record{snapshot: &store.SnapshotRow{
		Position: store.Position{Topic: "t", Offset: 0}, Group: "g", Data: []byte{1, 2, 3},
	}})
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || len(got[0].Events) != 1 || len(got[0].Snapshots) != 1 || got[0].Snapshots[0].Offset != 0 {
		t.Fatalf("batches %+v, want the event and its snapshot in one", got)
	}
	if next := committable(t, tr); next != 1 {
		t.Fatalf("committable %d, want 1", next)
	}
	// A snapshot alone is flushed by the timer too.
	s.submit(context.Background(), record{snapshot: &store.SnapshotRow{Position: store.Position{Topic: "t", Offset: 0}, Group: "g"}})
	mu.Unlock()
	waitFor(t, "a timed flush of a lone snapshot", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 2 })
	mu.Lock()
}

// TestSinkChunksSplitAcrossBatches: a chunk larger than a batch is split
// over batches of batch_max_rows, in order, and every offset is acked
// once stored; chunks count against queue_size record by record.
func TestSinkChunksSplitAcrossBatches(t *testing.T) {
	var mu sync.Mutex
	down := true
	st := &fakeStore{fail: func(int) error {
		mu.Lock()
		defer mu.Unlock()
		if down {
			return errors.New("connection refused")
		}
		return nil
	}}
	cfg := testSinkConfig()
	cfg.BatchMaxWait = time.Hour
	s, _ := newTestSink(t, cfg, st, &fakeDLQ{})
	tr := newOffsetTracker(0)
	// With the store down: one batch retrying, one filling, queue_size
	// records queued, and the rest of a chunk the batcher holds.
	const chunk = 3
	bound := 2*cfg.BatchMaxRows + cfg.QueueSize + chunk
	accepted := 0
	for off := int64(0); ; off += chunk {
		recs := make([]record, chunk)
		for i := range recs {
			recs[i] = eventRecord(tr, off+int64(i))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		ok := s.submitChunk(ctx, recs)
		cancel()
		if !ok {
			for i := chunk - 1; i >= 0; i-- {
				tr.Cancel(off + int64(i))
			}
			break
		}
		accepted += chunk
		if accepted > bound {
			t.Fatalf("accepted %d records with the store down; bound is %d", accepted, bound)
		}
	}
	if next := committable(t, tr); next != 0 {
		t.Fatalf("commit position moved to %d while the store was down", next)
	}
	mu.Lock()
	down = false
	mu.Unlock()
	// One chunk bigger than the whole queue still goes through.
	big := make([]record, 4*cfg.BatchMaxRows+3)
	for i := range big {
		big[i] = eventRecord(tr, int64(accepted+i))
	}
	if !s.submitChunk(context.Background(), big) {
		t.Fatal("chunk larger than the queue refused")
	}
	accepted += len(big)
	if err := s.barrier(context.Background()); err != nil {
		t.Fatal(err)
	}
	var all []int64
	for _, b := range st.snapshot() {
		if len(b) > cfg.BatchMaxRows {
			t.Errorf("batch of %d rows, max %d", len(b), cfg.BatchMaxRows)
		}
		all = append(all, b...)
	}
	if len(all) != accepted {
		t.Fatalf("stored %d records, accepted %d", len(all), accepted)
	}
	for i, off := range all {
		if off != int64(i) {
			t.Fatalf("stored offsets out of order or duplicated at %d", i)
		}
	}
	if next := committable(t, tr); next != int64(accepted) {
		t.Fatalf("committable %d, want %d", next, accepted)
	}
}
