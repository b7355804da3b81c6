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

	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// fetchRecorder records a fetcher's reports.
type fetchRecorder struct {
	mu        sync.Mutex
	errs      []error
	highWater int64
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
	}
}

func (r *fetchRecorder) state() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs), r.highWater
}

// TestFetcher reads a partition of the real broker: every message in
// offset order from where it is asked to start (an offset, the first, the
// last), through hand-overs smaller than a fetch response, waits for new
// ones until its context's deadline, reports an offset beyond the end as
// an error instead of a message, and stops at once when closed.
func TestFetcher(t *testing.T) {
	t.Parallel() // own topic
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
	read := func(t *testing.T, f *fetcher, from, to int) {
		t.Helper()
		for want := from; want < to; want++ {
			m, err := fetch(t, f, 30*time.Second)
			if err != nil {
				t.Fatalf("fetch of offset %d: %v", want, err)
			}
			if m.Offset != int64(want) || string(m.Value) != fmt.Sprintf("message-%d", want) || m.Partition != 0 || m.Topic != topic {
				t.Fatalf("fetched offset %d %q of %s/%d, want offset %d", m.Offset, m.Value, m.Topic, m.Partition, want)
			}
		}
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
		f, _ := start(t, 1000, kafka.LastOffset)
		if m, err := fetch(t, f, time.Second); err == nil {
			t.Fatalf("fetched offset %d before anything new was produced", m.Offset)
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
