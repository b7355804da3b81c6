package ingest

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/schemas"
)

func header(m kafka.Message, key string) (string, bool) {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value), true
		}
	}
	return "", false
}

// messageSize is kafka-go's estimate of a record's size (what its Writer
// compares with BatchBytes), plus the record batch header.
func messageSize(m kafka.Message) int {
	n := 4 + 1 + 1 + 8 + 4 + len(m.Key) + 4 + len(m.Value) + 61
	for _, h := range m.Headers {
		n += 10 + len(h.Key) + len(h.Value)
	}
	return n
}

// TestBoundMessage: a payload that fits the DLQ topic's limit is kept
// whole; a larger one is cut to its first bytes and flagged, keeping the
// whole payload's size header; cutting again to a smaller limit keeps it
// flagged.
func TestBoundMessage(t *testing.T) {
	payload := bytes.Repeat([]byte("x"), 5_000_000)
	base := kafka.Message{Key: []byte("user-1"), Value: payload, Headers: []kafka.Header{
		{Key: HeaderErrorClass, Value: []byte("too_large")},
		{Key: HeaderPayloadSize, Value: []byte(strconv.Itoa(len(payload)))},
		{Key: HeaderPayloadSHA256, Value: []byte(strings.Repeat("a", 64))},
	}}
	for _, limit := range []int{defaultMaxMessageBytes, 64 << 10, 1} {
		m := boundMessage(base, limit)
		if v, _ := header(m, HeaderPayloadTruncated); v != "true" {
			t.Errorf("limit %d: a 5 MB payload is not flagged truncated", limit)
		}
		if !bytes.Equal(m.Value, payload[:len(m.Value)]) || len(m.Value) == 0 {
			t.Errorf("limit %d: value is not a non-empty prefix of the payload", limit)
		}
		if n := messageSize(m); n > max(limit, minDLQMessageBytes)-dlqBatchMargin {
			t.Errorf("limit %d: message of about %d bytes does not fit the writer's batch", limit, n)
		}
		if v, _ := header(m, HeaderPayloadSize); v != "5000000" {
			t.Errorf("limit %d: size header %q", limit, v)
		}
		again := boundMessage(m, limit/2)
		if v, _ := header(again, HeaderPayloadTruncated); v != "true" || strings.Count(headersText(again), HeaderPayloadTruncated) != 1 {
			t.Errorf("limit %d: cut again: headers %s", limit, headersText(again))
		}
	}
	huge := base
	huge.Key = bytes.Repeat([]byte("k"), 2<<20)
	if m := boundMessage(huge, defaultMaxMessageBytes); messageSize(m) > defaultMaxMessageBytes-dlqBatchMargin || len(m.Value) == 0 {
		t.Errorf("a 2 MiB key: message of about %d bytes, value %d bytes", messageSize(m), len(m.Value))
	}
	small := base
	small.Value = []byte(`{"event_id":`)
	small.Headers = []kafka.Header{{Key: HeaderPayloadSize, Value: []byte("12")}}
	m := boundMessage(small, defaultMaxMessageBytes)
	if _, cut := header(m, HeaderPayloadTruncated); cut || string(m.Value) != `{"event_id":` {
		t.Errorf("a small payload was cut: %q %s", m.Value, headersText(m))
	}
}

func headersText(m kafka.Message) string {
	var b strings.Builder
	for _, h := range m.Headers {
		b.WriteString(h.Key + "=" + string(h.Value) + " ")
	}
	return b.String()
}

// TestPlausibleEventTime: the window applies around logged_time, else the
// Kafka timestamp; the absolute bounds apply whatever the window.
func TestPlausibleEventTime(t *testing.T) {
	cfg := DefaultConfig()
	p := &Pipeline{cfg: cfg}
	ref := time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) time.Time { return ref.Add(d) }
	ptr := func(t time.Time) *time.Time { return &t }
	day := 24 * time.Hour
	cases := []struct {
		name   string
		event  time.Time
		logged *time.Time
		kafka  time.Time
		want   bool
	}{
		{"on time, logged", at(-time.Second), ptr(ref), time.Time{}, true},
		{"29 days before logged_time", at(-29 * day), ptr(ref), time.Time{}, true},
		{"31 days before logged_time", at(-31 * day), ptr(ref), time.Time{}, false},
		{"23h after logged_time", at(23 * time.Hour), ptr(ref), time.Time{}, true},
		{"25h after logged_time", at(25 * time.Hour), ptr(ref), time.Time{}, false},
		{"logged_time wins over the Kafka timestamp", at(-40 * day), ptr(at(-40 * day)), ref, true},
		{"no logged_time: the Kafka timestamp", at(-31 * day), nil, ref, false},
		{"no logged_time, recent", at(-time.Hour), nil, ref, true},
		{"no reference time at all: the absolute bounds only", at(-400 * day), nil, time.Time{}, true},
		{"1950", time.Date(1950, 1, 1, 0, 0, 0, 0, time.UTC), ptr(time.Date(1950, 1, 1, 0, 0, 1, 0, time.UTC)), time.Time{}, false},
		{"2200", time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC), ptr(time.Date(2200, 1, 1, 0, 0, 1, 0, time.UTC)), time.Time{}, false},
	}
	for _, c := range cases {
		ev := &schemas.AccessEvent{EventTime: c.event, LoggedTime: c.logged}
		if got := p.plausible(ev, &kafka.Message{Time: c.kafka}); got != c.want {
			t.Errorf("%s: plausible %v, want %v", c.name, got, c.want)
		}
	}
	// A backfill: a wider window.
	p.cfg.EventTime.MaxPast = 13 * 366 * day
	if !p.plausible(&schemas.AccessEvent{EventTime: ref.AddDate(-12, 0, 0)}, &kafka.Message{Time: ref}) {
		t.Error("an event 12 years old is implausible with a 13-year window")
	}
}

func TestDeadLetterConfigValidate(t *testing.T) {
	c := DefaultConfig()
	c.DeadLetterMaxPayload, c.MaxPartitionsPerInsert = 10, 0
	c.EventTime = EventTimeConfig{MaxPast: 0, MaxFuture: 200 * 365 * 24 * time.Hour}
	err := schemas.UnderKey("pipeline", c.Validate())
	if err == nil {
		t.Fatal("no error")
	}
	for _, k := range []string{"dead_letter_max_payload", "max_partitions_per_insert", "event_time.max_past", "event_time.max_future"} {
		if !strings.Contains(err.Error(), "pipeline."+k+":") {
			t.Errorf("error does not name pipeline.%s:\n%v", k, err)
		}
	}
}

// TestProduceCutsMessagesTheBrokersRefuse: a dead letter the brokers refuse
// as too large (error 10, the topic's limit lowered meanwhile) is cut and
// produced on the retry; the others of the call are not produced twice.
func TestProduceCutsMessagesTheBrokersRefuse(t *testing.T) {
	const brokerLimit = 50_000
	dlq := &fakeDLQ{fail: func(_ int, msgs []kafka.Message) error {
		we := make(kafka.WriteErrors, len(msgs))
		failed := false
		for i, m := range msgs {
			if len(m.Value) > brokerLimit {
				we[i], failed = kafka.MessageSizeTooLarge, true
			}
		}
		if failed {
			return we
		}
		return nil
	}}
	s := &sink{dlq: dlq}
	big := kafka.Message{Value: bytes.Repeat([]byte("z"), 900_000), Headers: []kafka.Header{{Key: HeaderPayloadSize, Value: []byte("900000")}}}
	small := kafka.Message{Value: []byte("small")}
	p := &pending{dlq: []kafka.Message{small, big}}
	err := s.produceDeadLetters(context.Background(), p)
	if err == nil || !Retryable(err) {
		t.Fatalf("first attempt: %v, want a retryable error", err)
	}
	if len(p.dlq) != 1 || len(p.dlq[0].Value) > brokerLimit {
		t.Fatalf("left for the retry: %d messages, first of %d bytes", len(p.dlq), len(p.dlq[0].Value))
	}
	if err := s.produceDeadLetters(context.Background(), p); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if len(dlq.got) != 2 || dlq.got[0] != "small" || len(dlq.got[1]) > brokerLimit {
		t.Errorf("produced %d messages, want the small one once and the cut one", len(dlq.got))
	}
}
