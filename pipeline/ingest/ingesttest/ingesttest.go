// Package ingesttest is test-only support for the pipeline's integration
// tests and for the end-to-end tests of `ehrwatch run`: synthetic access
// events whose patient data is easy to spot, a Kafka producer, offset and
// table checks, a log capture that fails the test when patient data shows
// up, and a TCP proxy that can cut a connection path on demand.
//
// Nothing in this package may be imported by non-test code.
package ingesttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// PHI markers: every patient id, patient name, address, client address and
// break-glass reason in the fixtures contains one of them, and none of them
// occurs in anything else the tests produce, so finding one in a log is
// finding patient data in a log.
var PHIMarkers = []string{"MRN-PHI-", "PHI-NAME-", "PHI-ADDR-", "PHI-REASON-", "10.250."}

// Fixture describes a synthetic stream.
type Fixture struct {
	// N is the number of messages.
	N int
	// Users spreads the events over this many user ids (Kafka keys).
	Users int
	// PoisonEvery makes every PoisonEvery-th message (1-based: messages
	// PoisonEvery-1, 2*PoisonEvery-1, …) undecodable; 0 makes none.
	PoisonEvery int
	// Prefix makes event ids unique across fixtures (default "ev").
	Prefix string
}

// Message is one fixture message.
type Message struct {
	kafka.Message
	// EventID is the event's id; empty for a poison message.
	EventID string
	// Class is the expected error class of a poison message.
	Class string
}

// Messages generates the fixture's messages, keyed by user id.
func (f Fixture) Messages() []Message {
	users := max(f.Users, 1)
	prefix := f.Prefix
	if prefix == "" {
		prefix = "ev"
	}
	base := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	out := make([]Message, f.N)
	for i := range f.N {
		user := fmt.Sprintf("user-%04d", i%users)
		if f.PoisonEvery > 0 && (i+1)%f.PoisonEvery == 0 {
			value, class := poison(i, (i+1)/f.PoisonEvery)
			out[i] = Message{Message: kafka.Message{Key: []byte(user), Value: value}, Class: class}
			continue
		}
		at := base.Add(time.Duration(i) * 10 * time.Millisecond)
		logged := at.Add(1500 * time.Millisecond) // the pipeline checks event times against it
		ev := schemas.AccessEvent{
			EventID:        fmt.Sprintf("%s-%08d", prefix, i),
			EventTime:      at,
			LoggedTime:     &logged,
			Source:         "epic",
			FacilityID:     "fac-1",
			UserID:         user,
			UserRole:       "nurse",
			UserDepartment: "cardiology",
			WorkstationID:  fmt.Sprintf("ws-%03d", i%97),
			ClientIP:       fmt.Sprintf("10.250.%d.%d", (i/250)%250, i%250+1),
			PatientID:      fmt.Sprintf("MRN-PHI-%07d", i%5003),
			Action:         schemas.ActionView,
			Resource:       "chart",
			Outcome:        schemas.OutcomeSuccess,
		}
		if i%37 == 0 {
			ev.BreakGlass = true
			ev.BreakGlassReason = fmt.Sprintf("PHI-REASON-%d patient in ED bay 4, family asked", i)
		}
		value, err := json.Marshal(ev)
		if err != nil {
			panic(err)
		}
		out[i] = Message{Message: kafka.Message{Key: []byte(user), Value: value}, EventID: ev.EventID}
	}
	return out
}

// poison returns the k-th undecodable message (at index i), full of
// patient data, and the error class the decoder gives it.
func poison(i, k int) ([]byte, string) {
	mrn := fmt.Sprintf("MRN-PHI-9%06d", i%1000000)
	switch k % 4 {
	case 0: // truncated JSON
		return []byte(`{"event_id":"p` + fmt.Sprint(i) + `","patient_id":"` + mrn + `","break_glass_reason":"PHI-REASON-x`), "syntax"
	case 1: // a field the schema does not know, holding a name
		return []byte(`{"event_id":"p` + fmt.Sprint(i) + `","event_time":"2026-03-02T08:00:00Z","facility_id":"fac-1","user_id":"u","patient_id":"` + mrn +
			`","action":"view","patient_name":"PHI-NAME-Jane Roe"}`), "unknown_field"
	case 2: // a required field missing
		return []byte(`{"event_id":"p` + fmt.Sprint(i) + `","event_time":"2026-03-02T08:00:00Z","facility_id":"fac-1","patient_id":"` + mrn +
			`","action":"view","break_glass_reason":"PHI-ADDR-12 Elm Street"}`), "missing_field"
	default: // an action that does not exist
		return []byte(`{"event_id":"p` + fmt.Sprint(i) + `","event_time":"2026-03-02T08:00:00Z","facility_id":"fac-1","user_id":"u","patient_id":"` + mrn +
			`","action":"PHI-NAME-peek"}`), "invalid_value"
	}
}

// Produce writes msgs to topic, keyed (same key, same partition), and waits
// for every message to be acknowledged by all in-sync replicas.
func Produce(t testing.TB, brokers, topic string, msgs []Message) {
	t.Helper()
	w := &kafka.Writer{
		Addr:         kafka.TCP(strings.Split(brokers, ",")...),
		Topic:        topic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    5000,
		BatchBytes:   4 << 20,
		BatchTimeout: 10 * time.Millisecond,
		Compression:  kafka.Lz4,
	}
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const chunk = 20000
	for start := 0; start < len(msgs); start += chunk {
		end := min(start+chunk, len(msgs))
		batch := make([]kafka.Message, end-start)
		for i := range batch {
			batch[i] = msgs[start+i].Message
		}
		if err := writeRetrying(ctx, w, batch); err != nil {
			t.Fatalf("ingesttest: produce %d messages to %s: %v", len(batch), topic, err)
		}
	}
}

// writeRetrying writes batch, and writes again the messages the broker
// refused (kafka.WriteErrors: e.g. no leader yet right after a broker
// restart), for up to 30 s. Only the refused ones are written again, so
// nothing is produced twice.
func writeRetrying(ctx context.Context, w *kafka.Writer, batch []kafka.Message) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := w.WriteMessages(ctx, batch...)
		var we kafka.WriteErrors
		if err == nil || !errors.As(err, &we) || time.Now().After(deadline) {
			return err
		}
		var again []kafka.Message
		for i, e := range we {
			if e != nil {
				again = append(again, batch[i])
			}
		}
		batch = again
		select {
		case <-ctx.Done():
			return err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// Migrate applies the schema to the test database behind conn.
func Migrate(t testing.TB, conn clickhouse.Conn) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatalf("ingesttest: migrate: %v", err)
	}
}

// Offsets returns the end offsets of topic and the group's committed
// offsets, per partition (-1: nothing committed).
func Offsets(t testing.TB, brokers, group, topic string, partitions int) (end, committed map[int]int64) {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Timeout: 10 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	var parts []int
	for p := range partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p))
		parts = append(parts, p)
	}
	lo, err := c.ListOffsets(ctx, req)
	if err != nil {
		t.Fatalf("ingesttest: list offsets: %v", err)
	}
	end = map[int]int64{}
	for _, po := range lo.Topics[topic] {
		if po.Error != nil {
			t.Fatalf("ingesttest: list offsets of %s/%d: %v", topic, po.Partition, po.Error)
		}
		end[po.Partition] = po.LastOffset
	}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		t.Fatalf("ingesttest: fetch committed offsets: %v", err)
	}
	committed = map[int]int64{}
	for _, po := range of.Topics[topic] {
		committed[po.Partition] = po.CommittedOffset
	}
	return end, committed
}

// Lag is the sum over partitions of end offset minus committed offset
// (a partition with no commit counts in full).
func Lag(t testing.TB, brokers, group, topic string, partitions int) int64 {
	t.Helper()
	end, committed := Offsets(t, brokers, group, topic, partitions)
	var lag int64
	for p, e := range end {
		c := committed[p]
		if c < 0 {
			c = 0
		}
		lag += e - c
	}
	return lag
}

// WaitFor polls cond every 100ms until it holds, failing the test after
// timeout with what's description.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Counts are facts about one table.
type Counts struct {
	Rows   uint64 // count()
	Final  uint64 // count() FINAL (duplicates collapsed)
	Unique uint64 // uniqExact of the row identity
}

// TableCounts returns Counts for access_events (identity event_id), dlq
// (kafka_offset per partition) or findings (finding_id).
func TableCounts(t testing.TB, conn clickhouse.Conn, table string) Counts {
	t.Helper()
	id := map[string]string{
		"access_events": "event_id",
		"dlq":           "(kafka_topic, kafka_partition, kafka_offset)",
		"findings":      "finding_id",
	}[table]
	if id == "" {
		t.Fatalf("ingesttest: no identity for table %s", table)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var c Counts
	if err := conn.QueryRow(ctx, "SELECT count(), uniqExact("+id+") FROM "+table).Scan(&c.Rows, &c.Unique); err != nil {
		t.Fatalf("ingesttest: count %s: %v", table, err)
	}
	if err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" FINAL").Scan(&c.Final); err != nil {
		t.Fatalf("ingesttest: count %s FINAL: %v", table, err)
	}
	return c
}

// MissingEvents returns the fixture event ids that access_events lacks
// (at most 20 of them) and how many are missing in all.
func MissingEvents(t testing.TB, conn clickhouse.Conn, msgs []Message) ([]string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, "SELECT DISTINCT event_id FROM access_events")
	if err != nil {
		t.Fatalf("ingesttest: read event ids: %v", err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatalf("ingesttest: scan event id: %v", err)
		}
		have[id] = true
	}
	if err := rows.Err(); err != nil {
		t.Fatalf("ingesttest: read event ids: %v", err)
	}
	var missing []string
	n := 0
	for _, m := range msgs {
		if m.EventID != "" && !have[m.EventID] {
			n++
			if len(missing) < 20 {
				missing = append(missing, m.EventID)
			}
		}
	}
	return missing, n
}

// LogBuffer is a concurrency-safe io.Writer that keeps everything written
// to it, for checking logs after a test.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *LogBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Bytes returns a copy of everything written so far.
func (b *LogBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// Contains reports whether the log holds s.
func (b *LogBuffer) Contains(s string) bool { return bytes.Contains(b.Bytes(), []byte(s)) }

// AssertNoPHI fails the test for every PHI marker found in logs, quoting
// the offending line.
func AssertNoPHI(t testing.TB, what string, logs []byte) {
	t.Helper()
	if len(logs) == 0 {
		t.Errorf("ingesttest: %s: no log output captured; the PHI check would be vacuous", what)
		return
	}
	for _, line := range bytes.Split(logs, []byte("\n")) {
		for _, m := range PHIMarkers {
			if bytes.Contains(line, []byte(m)) {
				t.Errorf("ingesttest: %s: patient data (%q) in log line: %s", what, m, line)
			}
		}
	}
}
