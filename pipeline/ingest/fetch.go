package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/backoff"
)

// fetcher reads one partition's messages for its consumer. A goroutine of
// its own keeps a connection to the partition's leader, sends one fetch
// request at a time (kafka-go's Conn.ReadBatchWith) and hands the
// response's messages to the consumer in slices of up to fetchChunk, over
// a channel that holds about kafka.queue_capacity messages: the next fetch
// overlaps the processing of the last one, and the consumer takes a
// message with a slice index. A kafka.Reader, which the consumer used
// before, hands over every message on its own with a channel send and
// receive, and a goroutine switch whenever its queue runs empty or full;
// that was about a third of the pipeline's fetch cost (docs/benchmarks.md
// §2).
//
// The fetch goroutine does what the partition reader did: it finds the
// leader (each bootstrap broker in turn), resolves kafka.FirstOffset and
// kafka.LastOffset, skips ahead to the first offset when retention deleted
// the one it wants (logged as an error and reported to onSkipped), and
// connects afresh after every failed fetch but an empty one (see failed).
// It reports every failed fetch to onError and retries it after a pause
// (fetchRetry), and every fetch that was answered (with messages or none)
// to onFetched.
//
// Memory is bounded by the channel and, in the fetch goroutine, one fetch
// response (kafka.max_bytes, or the first record batch when that is
// larger, KIP-74), which kafka-go reads from the socket as the messages
// are taken.
type fetcher struct {
	// The consumer's side.
	cur []kafka.Message // the slice being taken, cur[i] next
	i   int
	ch  chan []kafka.Message
	// free holds slices the consumer is done with, for the fetch
	// goroutine to fill again.
	free   chan []kafka.Message
	cancel context.CancelFunc
	done   chan struct{}

	// The fetch goroutine's side.
	kc        *kafkaClients
	topic     string
	partition int
	log       zerolog.Logger
	hooks     fetchHooks
	// offset is the next offset to fetch, or kafka.FirstOffset or
	// kafka.LastOffset until the first connection resolves it.
	offset int64
	// last is the partition's last offset when the connection was made.
	last int64
	next int // the bootstrap broker to look the leader up with next

	mu     sync.Mutex
	conn   *kafka.Conn // nil: connect at the next fetch
	closed bool
}

// fetchChunk is the most messages handed to the consumer at once.
const fetchChunk = 256

// fetchRetry is the pause between failed fetches: kafka-go's partition
// reader's (100ms doubling to 2s). Its cap keeps the failures of a lost
// broker closer together than fetchRecovered, so /readyz stays "failing"
// until a fetch succeeds.
var fetchRetry = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.2}

// fetchHooks are the fetch goroutine's reports (see fetcher): a failed
// fetch, an answered one, and offsets [from, to) that retention deleted
// before they were consumed, which the fetcher skips.
type fetchHooks struct {
	onError   func(err error, pause time.Duration)
	onFetched func(highWater int64)
	onSkipped func(from, to int64)
}

// startFetcher starts fetching the partition from offset (an offset, or
// kafka.FirstOffset or kafka.LastOffset) until ctx ends or Close.
func (k *kafkaClients) startFetcher(ctx context.Context, topic string, partition int, offset int64, log zerolog.Logger, h fetchHooks) *fetcher {
	chunk := min(fetchChunk, max(k.cfg.QueueCapacity, 1))
	slots := max(1, (k.cfg.QueueCapacity+chunk-1)/chunk)
	ctx, cancel := context.WithCancel(ctx)
	f := &fetcher{
		ch: make(chan []kafka.Message, slots), free: make(chan []kafka.Message, slots+2),
		cancel: cancel, done: make(chan struct{}),
		kc: k, topic: topic, partition: partition, log: log, hooks: h, offset: offset,
	}
	stop := context.AfterFunc(ctx, f.closeConn) // interrupts a fetch waiting on the broker
	go func() {
		defer close(f.done)
		defer stop()
		f.run(ctx, chunk)
	}()
	return f
}

// errFetcherClosed is what Fetch returns after Close.
var errFetcherClosed = errors.New("fetcher closed")

// Fetch returns the partition's next message. It waits for one until ctx
// ends (ctx's deadline included: then it returns context.DeadlineExceeded).
// A message's Value is its own allocation, which the caller may keep.
func (f *fetcher) Fetch(ctx context.Context) (kafka.Message, error) {
	if f.i < len(f.cur) {
		f.i++
		return f.cur[f.i-1], nil
	}
	if f.cur != nil {
		clear(f.cur) // no message is kept alive by the slice
		select {
		case f.free <- f.cur[:0]:
		default:
		}
		f.cur = nil
	}
	select {
	case c, ok := <-f.ch:
		if !ok {
			return kafka.Message{}, errFetcherClosed
		}
		f.cur, f.i = c, 1
		return c[0], nil
	case <-ctx.Done():
		return kafka.Message{}, ctx.Err()
	}
}

// Close stops fetching and waits until the fetch goroutine has ended;
// messages fetched but not taken are dropped.
func (f *fetcher) Close() {
	f.cancel()
	<-f.done
}

// run fetches until ctx ends.
func (f *fetcher) run(ctx context.Context, chunk int) {
	defer close(f.ch)
	defer f.closeConn()
	b := backoff.New(fetchRetry)
	for ctx.Err() == nil {
		err := f.fetch(ctx, chunk)
		if err == nil {
			b.Reset()
			continue
		}
		if ctx.Err() != nil {
			return
		}
		pause := b.Next()
		f.hooks.onError(err, pause)
		if !sleep(ctx, pause) {
			return
		}
	}
}

// fetch sends one fetch request and hands the response's messages on.
func (f *fetcher) fetch(ctx context.Context, chunk int) error {
	conn, err := f.connection(ctx)
	if err != nil {
		return err
	}
	wait := f.kc.cfg.MaxWait
	_ = conn.SetReadDeadline(time.Now().Add(wait + f.kc.cfg.RequestTimeout))
	batch := conn.ReadBatchWith(kafka.ReadBatchConfig{MinBytes: f.kc.cfg.MinBytes, MaxBytes: f.kc.cfg.MaxBytes, MaxWait: wait})
	buf := f.slice(chunk)
	for {
		m, err := batch.ReadMessage()
		if err != nil {
			break
		}
		f.offset = m.Offset + 1
		if buf = append(buf, m); len(buf) == chunk {
			if !f.send(ctx, buf) {
				break
			}
			buf = f.slice(chunk)
			// The consumer may have kept the goroutine waiting for long.
			_ = conn.SetReadDeadline(time.Now().Add(f.kc.cfg.RequestTimeout))
		}
	}
	if len(buf) > 0 {
		f.send(ctx, buf)
	}
	// The batch's offset has moved past what was read, and past records
	// that are not messages (transaction markers); a batch that failed
	// before it was read has offset 0. Close reports the batch's error (nil
	// at the end of the response) and closes the connection after a
	// network failure.
	f.offset = max(f.offset, batch.Offset())
	if err := batch.Close(); err != nil {
		return f.failed(ctx, conn, err)
	}
	f.hooks.onFetched(batch.HighWaterMark())
	return nil
}

// slice returns an empty slice for chunk messages.
func (f *fetcher) slice(chunk int) []kafka.Message {
	select {
	case s := <-f.free:
		return s
	default:
		return make([]kafka.Message, 0, chunk)
	}
}

// send hands msgs to the consumer; false when ctx ended first.
func (f *fetcher) send(ctx context.Context, msgs []kafka.Message) bool {
	select {
	case f.ch <- msgs:
		return true
	case <-ctx.Done():
		return false
	}
}

// failed handles an error of a fetch on conn: it returns nil when the
// next fetch should simply go ahead (the broker had nothing within
// kafka.max_wait, or the offset was out of range and a new connection
// found where the partition's messages are), and the error otherwise.
//
// Every other error drops conn. kafka-go stops reading a fetch response
// at its error code, leaving the rest on the connection, where the next
// request would read it as its own answer; and it closes the connection
// itself only after errors that are not Kafka's.
func (f *fetcher) failed(ctx context.Context, conn *kafka.Conn, err error) error {
	if errors.Is(err, kafka.RequestTimedOut) {
		// An empty fetch past its deadline: read to its end, conn is
		// fine. (A response the deadline cut short reads the same and
		// leaves bytes behind; the next fetch then fails with an error
		// that is not Kafka's, is reported, and drops conn.)
		return nil
	}
	f.dropConn(conn)
	if !errors.Is(err, kafka.OffsetOutOfRange) {
		return err
	}
	// A new connection reads the partition's offsets and skips what
	// retention deleted (position).
	off := f.offset
	if _, cerr := f.connection(ctx); cerr != nil {
		return fmt.Errorf("offset %d out of range, and reading the partition's offsets failed: %w", off, cerr)
	}
	if f.offset > f.last {
		return fmt.Errorf("offset %d is beyond the partition's last offset %d", f.offset, f.last)
	}
	// The leader has caught up, or the offset moved past deleted ones (to
	// the end, when retention deleted everything).
	return nil
}

// skipDeleted moves the offset to first, the partition's first offset,
// which retention moved past messages the fetcher was asked for; it
// reports them to onSkipped.
func (f *fetcher) skipDeleted(first int64) {
	f.log.Error().Int64("from", f.offset).Int64("to", first).
		Msg("offsets deleted by retention before they were fetched; skipping to the first offset")
	f.hooks.onSkipped(f.offset, first)
	f.offset = first
}

// connection returns the connection to the partition's leader, dialling
// it first when there is none.
func (f *fetcher) connection(ctx context.Context) (*kafka.Conn, error) {
	f.mu.Lock()
	conn, closed := f.conn, f.closed
	f.mu.Unlock()
	if closed {
		return nil, errFetcherClosed
	}
	if conn != nil {
		return conn, nil
	}
	var errs []error
	brokers := f.kc.cfg.Brokers
	for range brokers {
		broker := brokers[f.next%len(brokers)]
		f.next++
		c, err := f.kc.dialer.DialLeader(ctx, "tcp", broker, f.topic, f.partition)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		f.mu.Lock()
		closed := f.closed
		if !closed {
			f.conn = c
		}
		f.mu.Unlock()
		if closed {
			_ = c.Close()
			return nil, errFetcherClosed
		}
		if err := f.position(c); err != nil {
			f.dropConn(c)
			return nil, err
		}
		return c, nil
	}
	return nil, fmt.Errorf("connect to the leader of %s/%d: %w", f.topic, f.partition, errors.Join(errs...))
}

// position resolves kafka.FirstOffset and kafka.LastOffset, moves an
// offset that retention deleted to the first one, and seeks conn there.
func (f *fetcher) position(conn *kafka.Conn) error {
	first, last, err := readOffsets(conn, f.kc.cfg.RequestTimeout)
	if err != nil {
		return fmt.Errorf("read the offsets of %s/%d: %w", f.topic, f.partition, err)
	}
	switch {
	case f.offset == kafka.FirstOffset:
		f.offset = first
	case f.offset == kafka.LastOffset:
		f.offset = last
	case f.offset < first:
		f.skipDeleted(first)
	}
	f.last = last
	return f.seek(conn)
}

// readOffsets reads the partition's first and last offsets on conn.
func readOffsets(conn *kafka.Conn, timeout time.Duration) (first, last int64, err error) {
	_ = conn.SetDeadline(time.Now().Add(timeout))
	defer func() { _ = conn.SetDeadline(time.Time{}) }()
	return conn.ReadOffsets()
}

// seek positions conn at f.offset without asking the broker; the next
// fetch tells whether it is in range.
func (f *fetcher) seek(conn *kafka.Conn) error {
	if _, err := conn.Seek(f.offset, kafka.SeekAbsolute|kafka.SeekDontCheck); err != nil {
		f.dropConn(conn)
		return err
	}
	return nil
}

// dropConn closes conn; the next fetch dials a new one.
func (f *fetcher) dropConn(conn *kafka.Conn) {
	f.mu.Lock()
	if f.conn == conn {
		f.conn = nil
	}
	f.mu.Unlock()
	_ = conn.Close()
}

// closeConn closes the connection and keeps the fetcher from opening
// another: a fetch waiting on the broker returns at once.
func (f *fetcher) closeConn() {
	f.mu.Lock()
	c := f.conn
	f.conn, f.closed = nil, true
	f.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}
