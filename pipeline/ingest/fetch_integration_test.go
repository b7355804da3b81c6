package ingest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// fetchRecorder records a fetcher's reports.
type fetchRecorder struct {
	mu        sync.Mutex
	errs      []error
	highWater int64
	skipped   [][2]int64
}

func (r *fetchRecorder) hooks() fetchHooks {
	return fetchHooks{
		onError: func(err error, _ time.Duration) {
			r.mu.Lock()
			r.errs = append(r.errs, err)
			r.mu.Unlock()
		},
		onFetched: func(hw int64) {
			r.mu.Lock()
			r.highWater = max(r.highWater, hw)
			r.mu.Unlock()
		},
		onSkipped: func(from, to int64) {
			r.mu.Lock()
			r.skipped = append(r.skipped, [2]int64{from, to})
			r.mu.Unlock()
		},
	}
}

func (r *fetchRecorder) state() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs), r.highWater
}

// TestFetcher reads a partition of the real broker: every message in
// offset order from where it is asked to start (an offset, the first, the
// last), through hand-overs smaller than a fetch response and across a
// lost connection, waits for new ones until its context's deadline,
// reports an offset beyond the end as an error instead of a message,
// skips and reports offsets retention deleted (before it starts and while
// it reads), and stops at once when closed.
func TestFetcher(t *testing.T) {
	t.Parallel() // own topics
	var startOn func(t *testing.T, topic string, queue int, offset int64, maxBytes ...int) (*fetcher, *fetchRecorder)
	brokers := testenv.Kafka(t)
	topic := testenv.NewTopic(t, brokers, 1)
	const n = 1000
	msgs := make([]ingesttest.Message, n)
	for i := range msgs {
		msgs[i].Message = kafka.Message{Key: []byte("k"), Value: fmt.Appendf(nil, "message-%d", i)}
	}
	for i := 0; i < n; i += 50 { // a record batch each, so a small kafka.max_bytes takes many fetches
		ingesttest.Produce(t, brokers, topic, msgs[i:i+50])
	}

	cfg := DefaultKafkaConfig()
	cfg.Brokers = strings.Split(brokers, ",")
	cfg.MaxWait = 200 * time.Millisecond
	start := func(t *testing.T, queue int, offset int64, maxBytes ...int) (*fetcher, *fetchRecorder) {
		return startOn(t, topic, queue, offset, maxBytes...)
	}
	startOn = func(t *testing.T, topic string, queue int, offset int64, maxBytes ...int) (*fetcher, *fetchRecorder) {
		t.Helper()
		c := cfg
		c.QueueCapacity = queue
		if len(maxBytes) > 0 {
			c.MaxBytes = maxBytes[0]
		}
		kc, err := newKafkaClients(c, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		rec := &fetchRecorder{}
		f := kc.startFetcher(t.Context(), topic, 0, offset, zerolog.Nop(), rec.hooks())
		t.Cleanup(f.Close)
		return f, rec
	}
	fetch := func(t *testing.T, f *fetcher, timeout time.Duration) (kafka.Message, error) {
		t.Helper()
		ctx, cancel := context.WithTimeout(t.Context(), timeout)
		defer cancel()
		return f.Fetch(ctx)
	}
	readFrom := func(t *testing.T, f *fetcher, topic string, from, to int) {
		t.Helper()
		for want := from; want < to; want++ {
			m, err := fetch(t, f, 30*time.Second)
			if err != nil {
				t.Fatalf("fetch of offset %d: %v", want, err)
			}
			if m.Offset != int64(want) || string(m.Value) != fmt.Sprintf("message-%d", want%n) || m.Partition != 0 || m.Topic != topic {
				t.Fatalf("fetched offset %d %q of %s/%d, want offset %d", m.Offset, m.Value, m.Topic, m.Partition, want)
			}
		}
	}
	read := func(t *testing.T, f *fetcher, from, to int) {
		t.Helper()
		readFrom(t, f, topic, from, to)
	}

	t.Run("from an offset, in small hand-overs", func(t *testing.T) {
		for _, queue := range []int{1, 7, 1000} {
			f, rec := start(t, queue, 300)
			read(t, f, 300, n)
			if _, err := fetch(t, f, 300*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("queue %d: fetch past the end: %v, want the deadline", queue, err)
			}
			if errs, hw := rec.state(); errs != 0 || hw != n {
				t.Errorf("queue %d: %d errors reported, high watermark %d; want none and %d", queue, errs, hw, n)
			}
		}
	})
	t.Run("from the first offset", func(t *testing.T) {
		f, _ := start(t, 1000, kafka.FirstOffset)
		read(t, f, 0, n)
	})
	t.Run("after a lost connection", func(t *testing.T) {
		f, _ := start(t, 7, 0, 64) // a record batch per fetch: the loss falls between fetches

		read(t, f, 0, 500)
		f.mu.Lock()
		conn := f.conn
		f.mu.Unlock()
		if conn == nil {
			t.Fatal("no connection after 500 messages")
		}
		_ = conn.Close() // as a broker that goes away would
		read(t, f, 500, n)
	})
	t.Run("from the last offset", func(t *testing.T) {
		f, rec := start(t, 1000, kafka.LastOffset)
		conn := func() *kafka.Conn {
			f.mu.Lock()
			defer f.mu.Unlock()
			return f.conn
		}
		ingesttest.WaitFor(t, 30*time.Second, "a connection", func() bool { return conn() != nil })
		first := conn()
		if m, err := fetch(t, f, time.Second); err == nil { // five fetches that wait kafka.max_wait for nothing
			t.Fatalf("fetched offset %d before anything new was produced", m.Offset)
		}
		if c := conn(); c != first {
			t.Errorf("the connection changed while the partition was idle (%p, then %p): empty fetches are not failures", first, c)
		}
		if errs, _ := rec.state(); errs != 0 {
			t.Errorf("%d errors reported while the partition was idle", errs)
		}
		ingesttest.Produce(t, brokers, topic, []ingesttest.Message{{Message: kafka.Message{Key: []byte("k"), Value: []byte("late")}}})
		m, err := fetch(t, f, 30*time.Second)
		if err != nil || m.Offset < n || string(m.Value) != "late" {
			t.Fatalf("fetched %d %q (%v), want the new message", m.Offset, m.Value, err)
		}
	})
	t.Run("beyond the last offset", func(t *testing.T) {
		f, rec := start(t, 1000, 1_000_000)
		if m, err := fetch(t, f, 2*time.Second); err == nil {
			t.Fatalf("fetched offset %d beyond the end", m.Offset)
		}
		ingesttest.WaitFor(t, 30*time.Second, "the fetcher to report the offset", func() bool {
			errs, _ := rec.state()
			return errs > 0
		})
	})
	t.Run("after retention deleted offsets", func(t *testing.T) {
		gone := testenv.NewTopic(t, brokers, 1)
		for i := 0; i < 100; i += 50 {
			ingesttest.Produce(t, brokers, gone, msgs[i:i+50])
		}
		deleteRecords(t, brokers, gone, 60) // offsets 0-59, as retention would
		for _, from := range []int64{10, kafka.FirstOffset} {
			f, rec := startOn(t, gone, 1000, from)
			m, err := fetch(t, f, 30*time.Second)
			if err != nil || m.Offset != 60 || string(m.Value) != "message-60" {
				t.Fatalf("from %d: fetched %d %q (%v), want offset 60, the first left", from, m.Offset, m.Value, err)
			}
			rec.mu.Lock()
			skipped := rec.skipped
			rec.mu.Unlock()
			want := [][2]int64{{10, 60}}
			if from == kafka.FirstOffset {
				want = nil // nothing asked for was deleted
			}
			if fmt.Sprint(skipped) != fmt.Sprint(want) {
				t.Errorf("from %d: skipped %v, want %v", from, skipped, want)
			}
		}
	})
	t.Run("when retention deletes offsets while it reads", func(t *testing.T) {
		gone := testenv.NewTopic(t, brokers, 1)
		produce := func(from, to int) {
			for i := from; i < to; i += 10 { // a record batch each
				ingesttest.Produce(t, brokers, gone, msgs[i%n:i%n+10])
			}
		}
		produce(0, 100)
		// A record batch per fetch and a hand-over of one message: while
		// the test has not read offsets 0-9, the fetcher holds them and
		// has not asked for offset 10 yet.
		f, rec := startOn(t, gone, 1, 0, 64)
		check := func(want [][2]int64) {
			t.Helper()
			rec.mu.Lock()
			skipped, errs := rec.skipped, len(rec.errs)
			rec.mu.Unlock()
			if fmt.Sprint(skipped) != fmt.Sprint(want) || errs != 0 {
				t.Fatalf("skipped %v with %d errors reported, want %v and none (a skip is not a failed fetch)", skipped, errs, want)
			}
		}
		readFrom(t, f, gone, 0, 5)
		deleteRecords(t, brokers, gone, 60) // offsets 0-59, 5-9 already fetched
		readFrom(t, f, gone, 5, 10)
		readFrom(t, f, gone, 60, 100) // the next fetch, of offset 10, finds it deleted
		check([][2]int64{{10, 60}})

		// Everything deleted: the fetcher skips to the end and waits there.
		produce(100, 120)
		readFrom(t, f, gone, 100, 105)
		deleteRecords(t, brokers, gone, 120)
		readFrom(t, f, gone, 105, 110)
		ingesttest.WaitFor(t, 30*time.Second, "the second skip", func() bool {
			rec.mu.Lock()
			defer rec.mu.Unlock()
			return len(rec.skipped) == 2
		})
		produce(120, 130) // only now: the fetcher skipped to an empty partition's end
		readFrom(t, f, gone, 120, 130)
		check([][2]int64{{10, 60}, {110, 120}})
	})
	t.Run("close while waiting", func(t *testing.T) {
		f, _ := start(t, 1000, n+10) // nothing there yet: the fetch waits on the broker
		fetched := make(chan error, 1)
		go func() {
			_, err := f.Fetch(t.Context())
			fetched <- err
		}()
		time.Sleep(300 * time.Millisecond)
		f.Close()
		select {
		case err := <-fetched:
			if !errors.Is(err, errFetcherClosed) {
				t.Fatalf("Fetch after Close: %v, want errFetcherClosed", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("Fetch did not return after Close")
		}
	})
}

// deleteRecords deletes a single-partition topic's records below offset
// with Kafka's DeleteRecords request (API key 21), which kafka-go 0.4
// does not wrap: what retention does to a partition, at once.
func deleteRecords(t *testing.T, brokers, topic string, offset int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	req := &deleteRecordsRequest{TimeoutMs: 10_000, Topics: []deleteRecordsTopic{{
		Name: topic, Partitions: []deleteRecordsPartition{{Partition: 0, Offset: offset}}}}}
	res, err := (&kafka.Transport{}).RoundTrip(ctx, kafka.TCP(strings.Split(brokers, ",")[0]), req)
	if err != nil {
		t.Fatalf("delete records: %v", err)
	}
	for _, rt := range res.(*deleteRecordsResponse).Topics {
		for _, rp := range rt.Partitions {
			if rp.ErrorCode != 0 || rp.LowWatermark != offset {
				t.Fatalf("delete records of %s/%d: error %d, low watermark %d", rt.Name, rp.Partition, rp.ErrorCode, rp.LowWatermark)
			}
		}
	}
}

func init() { protocol.Register(&deleteRecordsRequest{}, &deleteRecordsResponse{}) }

type deleteRecordsRequest struct {
	Topics    []deleteRecordsTopic `kafka:"min=v0,max=v1"`
	TimeoutMs int32                `kafka:"min=v0,max=v1"`
}

type deleteRecordsTopic struct {
	Name       string                   `kafka:"min=v0,max=v1"`
	Partitions []deleteRecordsPartition `kafka:"min=v0,max=v1"`
}

type deleteRecordsPartition struct {
	Partition int32 `kafka:"min=v0,max=v1"`
	Offset    int64 `kafka:"min=v0,max=v1"`
}

func (*deleteRecordsRequest) ApiKey() protocol.ApiKey { return protocol.DeleteRecords }

// Broker is the partition's leader (the test's topics have one partition).
func (r *deleteRecordsRequest) Broker(c protocol.Cluster) (protocol.Broker, error) {
	p, ok := c.Topics[r.Topics[0].Name].Partitions[0]
	if !ok {
		return protocol.Broker{}, fmt.Errorf("no partition 0 of %s in the metadata", r.Topics[0].Name)
	}
	return c.Brokers[p.Leader], nil
}

type deleteRecordsResponse struct {
	ThrottleTimeMs int32                        `kafka:"min=v0,max=v1"`
	Topics         []deleteRecordsResponseTopic `kafka:"min=v0,max=v1"`
}

type deleteRecordsResponseTopic struct {
	Name       string                           `kafka:"min=v0,max=v1"`
	Partitions []deleteRecordsResponsePartition `kafka:"min=v0,max=v1"`
}

type deleteRecordsResponsePartition struct {
	Partition    int32 `kafka:"min=v0,max=v1"`
	LowWatermark int64 `kafka:"min=v0,max=v1"`
	ErrorCode    int16 `kafka:"min=v0,max=v1"`
}

func (*deleteRecordsResponse) ApiKey() protocol.ApiKey { return protocol.DeleteRecords }
