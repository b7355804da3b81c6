package testenv_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// TestKafkaConsumerGroupRoundTrip produces keyed messages to a fresh
// 4-partition topic and consumes them through a kafka-go consumer group with
// explicit commits, checking exactly-once delivery, per-key order and that the
// committed offsets survive the reader.
func TestKafkaConsumerGroupRoundTrip(t *testing.T) {
	brokers := testenv.Kafka(t)
	const partitions, users, total = 4, 50, 2000
	topic := testenv.NewTopic(t, brokers, partitions)
	group := topic + "-group"

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	// Produce: message i belongs to user i%users and carries that user's
	// sequence number, so per-key order can be checked on the way out.
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers),
		Topic:        topic,
		Balancer:     &kafka.Hash{}, // same key -> same partition
		RequiredAcks: kafka.RequireAll,
		BatchTimeout: 5 * time.Millisecond,
		BatchSize:    200,
	}
	msgs := make([]kafka.Message, total)
	for i := range msgs {
		user := i % users
		msgs[i] = kafka.Message{
			Key:   []byte(userKey(user)),
			Value: []byte(strconv.Itoa(i / users)),
		}
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close writer: %v", err)
	}

	// Consume with FetchMessage + CommitMessages.
	r := newGroupReader(brokers, topic, group)
	nextSeq := make(map[string]int, users) // key -> next expected sequence
	keyPartition := make(map[string]int, users)
	seen := make(map[string]bool, total) // partition/offset
	var pending []kafka.Message
	for got := 0; got < total; got++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("fetch after %d of %d messages: %v", got, total, err)
		}
		po := fmt.Sprintf("%d/%d", m.Partition, m.Offset)
		if seen[po] {
			t.Fatalf("duplicate delivery of partition/offset %s", po)
		}
		seen[po] = true

		key := string(m.Key)
		if p, ok := keyPartition[key]; ok && p != m.Partition {
			t.Errorf("key %s on partitions %d and %d", key, p, m.Partition)
		}
		keyPartition[key] = m.Partition
		seq, err := strconv.Atoi(string(m.Value))
		if err != nil {
			t.Fatalf("bad value %q", m.Value)
		}
		if seq != nextSeq[key] {
			t.Fatalf("key %s: got sequence %d, want %d (order broken)", key, seq, nextSeq[key])
		}
		nextSeq[key]++

		pending = append(pending, m)
		if len(pending) == 100 || got == total-1 {
			if err := r.CommitMessages(ctx, pending...); err != nil {
				t.Fatalf("commit: %v", err)
			}
			pending = pending[:0]
		}
	}
	for u := range users {
		if n := nextSeq[userKey(u)]; n != total/users {
			t.Errorf("key %s: got %d messages, want %d", userKey(u), n, total/users)
		}
	}
	usedPartitions := map[int]bool{}
	for _, p := range keyPartition {
		usedPartitions[p] = true
	}
	if len(usedPartitions) < 2 {
		t.Errorf("all keys landed on %d partition(s); hash balancer not spreading", len(usedPartitions))
	}
	if err := r.Close(); err != nil { // leaves the group
		t.Fatalf("close reader: %v", err)
	}

	// Committed offsets must equal the end offsets of every partition.
	client := &kafka.Client{Addr: kafka.TCP(brokers), Timeout: 10 * time.Second}
	ends := endOffsets(ctx, t, client, topic, partitions)
	committed := committedOffsets(ctx, t, client, group, topic, partitions)
	for p := range partitions {
		if committed[p] != ends[p] {
			t.Errorf("partition %d: committed offset %d, end offset %d", p, committed[p], ends[p])
		}
	}

	// A second member of the group resumes from the commits: after one more
	// message is produced, it is the first and only thing the new reader sees.
	w2 := &kafka.Writer{Addr: kafka.TCP(brokers), Topic: topic, Balancer: &kafka.Hash{}, BatchTimeout: time.Millisecond}
	if err := w2.WriteMessages(ctx, kafka.Message{Key: []byte(userKey(0)), Value: []byte("sentinel")}); err != nil {
		t.Fatalf("produce sentinel: %v", err)
	}
	if err := w2.Close(); err != nil {
		t.Fatalf("close writer: %v", err)
	}
	r2 := newGroupReader(brokers, topic, group)
	defer r2.Close()
	m, err := r2.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("second reader fetch: %v", err)
	}
	if string(m.Value) != "sentinel" {
		t.Fatalf("second reader got %s=%q at %d/%d; want the sentinel (committed offsets not honoured)",
			m.Key, m.Value, m.Partition, m.Offset)
	}
	if err := r2.CommitMessages(ctx, m); err != nil {
		t.Fatalf("commit sentinel: %v", err)
	}
	short, cancelShort := context.WithTimeout(ctx, 2*time.Second)
	defer cancelShort()
	if m, err := r2.FetchMessage(short); err == nil {
		t.Fatalf("second reader got unexpected extra message %s=%q at %d/%d", m.Key, m.Value, m.Partition, m.Offset)
	} else if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second reader: %v", err)
	}
}

func userKey(u int) string { return fmt.Sprintf("user-%03d", u) }

// newGroupReader returns a consumer-group reader tuned for tests: fast
// heartbeats and rebalances, short fetch waits, synchronous commits.
func newGroupReader(brokers, topic, group string) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:           strings.Split(brokers, ","),
		GroupID:           group,
		GroupTopics:       []string{topic},
		StartOffset:       kafka.FirstOffset,
		MinBytes:          1,
		MaxBytes:          1 << 20,
		MaxWait:           250 * time.Millisecond,
		ReadBatchTimeout:  2 * time.Second,
		HeartbeatInterval: 500 * time.Millisecond,
		SessionTimeout:    6 * time.Second, // broker minimum (group.min.session.timeout.ms)
		RebalanceTimeout:  5 * time.Second,
		JoinGroupBackoff:  250 * time.Millisecond,
		ReadBackoffMin:    50 * time.Millisecond,
		ReadBackoffMax:    250 * time.Millisecond,
		CommitInterval:    0, // CommitMessages is synchronous
	})
}

func endOffsets(ctx context.Context, t *testing.T, c *kafka.Client, topic string, partitions int) map[int]int64 {
	t.Helper()
	reqs := make([]kafka.OffsetRequest, partitions)
	for p := range partitions {
		reqs[p] = kafka.LastOffsetOf(p)
	}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: reqs}})
	if err != nil {
		t.Fatalf("list offsets: %v", err)
	}
	out := make(map[int]int64, partitions)
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("list offsets partition %d: %v", po.Partition, po.Error)
		}
		out[po.Partition] = po.LastOffset
	}
	return out
}

func committedOffsets(ctx context.Context, t *testing.T, c *kafka.Client, group, topic string, partitions int) map[int]int64 {
	t.Helper()
	ps := make([]int, partitions)
	for p := range ps {
		ps[p] = p
	}
	res, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: ps}})
	if err == nil {
		err = res.Error
	}
	if err != nil {
		t.Fatalf("offset fetch: %v", err)
	}
	out := make(map[int]int64, partitions)
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("offset fetch partition %d: %v", po.Partition, po.Error)
		}
		out[po.Partition] = po.CommittedOffset
	}
	return out
}

// TestKafkaFailsWithInstructions checks that testenv.Kafka fails (never
// skips) with a how-to-start message when the broker is missing.
func TestKafkaFailsWithInstructions(t *testing.T) {
	if testing.Short() {
		t.Skip("testenv.Kafka skips under -short before looking at the broker")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	for _, tc := range []struct{ name, env, want string }{
		{"unset", "", "EHRDEV_KAFKA is not set"},
		{"closed port", closed, "Kafka at EHRDEV_KAFKA=" + closed + " is not reachable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testenv.KafkaEnv, tc.env)
			ft := &fakeT{TB: t}
			ft.run(func() { testenv.Kafka(ft) })
			if ft.skipped {
				t.Fatalf("testenv.Kafka skipped; it must fail")
			}
			if !ft.failed {
				t.Fatalf("testenv.Kafka did not fail")
			}
			for _, want := range []string{tc.want, `eval "$(deployments/dev/kafka.sh env)"`, "make test"} {
				if !strings.Contains(ft.msg, want) {
					t.Errorf("failure message lacks %q:\n%s", want, ft.msg)
				}
			}
		})
	}
}

// fakeT records Fatal/Skip calls instead of ending the real test. Methods
// not overridden go to the embedded real testing.TB.
type fakeT struct {
	testing.TB
	mu              sync.Mutex
	msg             string
	failed, skipped bool
}

func (f *fakeT) run(fn func()) {
	done := make(chan struct{})
	go func() { defer close(done); fn() }()
	<-done
}

func (f *fakeT) record(failed bool, args ...any) {
	f.mu.Lock()
	f.msg, f.failed, f.skipped = fmt.Sprint(args...), failed, !failed
	f.mu.Unlock()
	runtime.Goexit()
}

func (f *fakeT) Helper()                           {}
func (f *fakeT) Fatal(args ...any)                 { f.record(true, args...) }
func (f *fakeT) Fatalf(format string, args ...any) { f.record(true, fmt.Sprintf(format, args...)) }
func (f *fakeT) FailNow()                          { f.record(true, "FailNow") }
func (f *fakeT) Skip(args ...any)                  { f.record(false, args...) }
func (f *fakeT) Skipf(format string, args ...any)  { f.record(false, fmt.Sprintf(format, args...)) }
func (f *fakeT) SkipNow()                          { f.record(false, "SkipNow") }
