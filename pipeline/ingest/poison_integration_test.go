package ingest_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// poisonHospital is a tiny synthetic hospital for the real detector engine.
func poisonHospital(t *testing.T) *synth.Hospital { return smallHospital(t, "poison", 2, 1, 600) }

// bigTopic creates a topic that accepts messages of up to maxBytes.
func bigTopic(t *testing.T, brokers string, partitions, maxBytes int) string {
	t.Helper()
	name := testenv.NewTopic(t, brokers, 1) + "-big" // a unique name; that topic is deleted with the test
	c := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: 1,
		ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(maxBytes)}},
	}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		_, _ = c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
	})
	ingesttest.WaitFor(t, 30*time.Second, "topic "+name+" has leaders", func() bool {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		if err != nil || len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) != partitions {
			return false
		}
		for _, p := range md.Topics[0].Partitions {
			if p.Error != nil || p.Leader.ID < 0 {
				return false
			}
		}
		return true
	})
	return name
}

// poisonCase is one bad message and what the DLQ must say about it.
type poisonCase struct {
	name  string
	msg   kafka.Message
	class string
	size  int
}

// TestPoisonSuite: on the real broker and ClickHouse engine, with the real
// detector engine, a stream of good events (a small hospital, and a
// backfill of 150 events in 150 distinct months) interleaved with
// undecodable messages of 1 MiB, 5 MB and 50 MB (the source topic accepts
// 64 MiB, the DLQ topic keeps Kafka's default limit), ordinary poison,
// implausible event times and rows ClickHouse refuses (a constraint):
// every good event is stored exactly once, every bad message is in the DLQ
// topic and the dlq table with its class (oversized ones as their first
// bytes with size and SHA-256), the pipeline never stops and the lag
// reaches 0.
func TestPoisonSuite(t *testing.T) {
	t.Parallel() // own topics, group and database
	brokers := testenv.Kafka(t)
	conn, db := testenv.ClickHouse(t)
	ctx := context.Background()
	params := schemas.DefaultMigrationParams()
	params.RetentionDays = 20 * 365 // the backfill reaches 12.5 years back
	if _, err := store.Migrate(ctx, conn, params); err != nil {
		t.Fatal(err)
	}
	// Rows a deployment's own rule refuses (server error 469).
	if err := conn.Exec(ctx, "ALTER TABLE access_events ADD CONSTRAINT no_test_department CHECK user_department != 'refused-by-server'"); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, brokers: brokers, dlqTopic: testenv.NewTopic(t, brokers, 1), partitions: 2,
		chAddr: testenv.ClickHouseAddr(t), conn: conn, db: db, logs: &ingesttest.LogBuffer{}}
	h.topic = bigTopic(t, brokers, h.partitions, 64<<20)
	h.group = h.topic + "-group"
	t.Cleanup(func() {
		ingesttest.AssertNoPHI(t, t.Name()+" logs", h.logs.Bytes())
		if t.Failed() {
			tail := h.logs.Bytes()
			if len(tail) > 8000 {
				tail = tail[len(tail)-8000:]
			}
			t.Logf("last pipeline logs:\n%s", tail)
		}
	})

	hosp := poisonHospital(t)
	good := hospitalMessages(t, hosp)
	goodIDs := map[string]bool{}
	for i := range hosp.Events {
		goodIDs[hosp.Events[i].EventID] = true
	}
	now := time.Now().UTC()
	event := func(id, user string, at time.Time, logged *time.Time, dept string) kafka.Message {
		ev := schemas.AccessEvent{EventID: id, EventTime: at, LoggedTime: logged, Source: "epic", FacilityID: "poison",
			UserID: user, UserRole: "nurse", UserDepartment: dept, WorkstationID: "ws-1",
			PatientID: "MRN-PHI-0000042", Action: schemas.ActionView, Resource: "chart", Outcome: schemas.OutcomeSuccess}
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		return kafka.Message{Key: []byte(user), Value: b}
	}
	// The backfill: no logged_time, so its events are judged against the
	// Kafka timestamp (now), with a window widened to 13 years.
	var backfill []kafka.Message
	for k := 1; k <= 150; k++ {
		id := fmt.Sprintf("backfill-%03d", k)
		goodIDs[id] = true
		backfill = append(backfill, event(id, fmt.Sprintf("backfill-user-%d", k%5), now.AddDate(0, -k, 0), nil, "records"))
	}
	big := func(n int, tag string) []byte {
		b := make([]byte, 0, n)
		b = append(b, `{"event_id":"`+tag+`","patient_id":"MRN-PHI-7777777","note":"`...)
		b = append(b, bytes.Repeat([]byte("PHI-NAME-x "), (n-len(b))/11+1)...)
		return b[:n]
	}
	later := now.Add(48 * time.Hour)
	loggedRecently := now.Add(-time.Hour)
	bad := []poisonCase{
		{name: "1 MiB", msg: kafka.Message{Key: []byte("big-1"), Value: big(1<<20, "big-1")}, class: "too_large"},
		{name: "5 MB", msg: kafka.Message{Key: []byte("big-5"), Value: big(5_000_000, "big-5")}, class: "too_large"},
		{name: "50 MB", msg: kafka.Message{Key: []byte("big-50"), Value: big(50_000_000, "big-50")}, class: "too_large"},
		{name: "syntax", msg: kafka.Message{Key: []byte("u1"), Value: []byte(`{"event_id":"x","patient_id":"MRN-PHI-1234567`)}, class: "syntax"},
		{name: "future", msg: event("future-1", "u2", later, &loggedRecently, "records"), class: ingest.ClassImplausibleEventTime},
		{name: "future, no logged_time", msg: event("future-2", "u3", now.Add(72*time.Hour), nil, "records"), class: ingest.ClassImplausibleEventTime},
		{name: "1950", msg: event("old-1950", "u4", time.Date(1950, 6, 1, 0, 0, 0, 0, time.UTC), nil, "records"), class: ingest.ClassImplausibleEventTime},
	}
	for k := range 3 {
		at := hosp.Events[k*50].EventTime
		bad = append(bad, poisonCase{name: fmt.Sprintf("refused %d", k),
			msg:   event(fmt.Sprintf("refused-%d", k), hosp.Events[k*50].UserID, at, &at, "refused-by-server"),
			class: store.ClassRejectedByStorage})
	}
	for i := range bad {
		bad[i].size = len(bad[i].msg.Value)
	}
	// Interleave: bad messages spread through the good ones.
	var msgs []kafka.Message
	step := len(good) / (len(bad) + 1)
	for i, b := range bad {
		msgs = append(msgs, good[i*step:(i+1)*step]...)
		msgs = append(msgs, b.msg)
		if i == 2 {
			msgs = append(msgs, backfill...)
		}
	}
	msgs = append(msgs, good[len(bad)*step:]...)

	w := &kafka.Writer{Addr: kafka.TCP(strings.Split(brokers, ",")...), Topic: h.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, BatchSize: 1000, BatchBytes: 64 << 20, BatchTimeout: 10 * time.Millisecond}
	pctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	if err := w.WriteMessages(pctx, msgs...); err != nil {
		t.Fatalf("produce: %v", err)
	}
	cancel()
	_ = w.Close()

	cfg, k := h.configs()
	cfg.EventTime.MaxPast = 13 * 366 * 24 * time.Hour
	start := time.Now()
	r := h.start(cfg, k, ingest.Deps{NewProcessor: engineFactory(t, hosp)})
	ingesttest.WaitFor(t, 3*time.Minute, "consumer lag 0", func() bool {
		select {
		case err := <-r.done:
			close(r.done)
			t.Fatalf("the pipeline stopped: %v", err)
		default:
		}
		return ingesttest.Lag(t, h.brokers, h.group, h.topic, h.partitions) == 0
	})
	t.Logf("%d messages (%d good, %d bad, %.0f MB) consumed to lag 0 in %s", len(msgs), len(goodIDs), len(bad),
		float64(totalBytes(msgs))/1e6, time.Since(start).Round(100*time.Millisecond))

	// Every good event exactly once (no FINAL: not even a duplicate row).
	c := ingesttest.TableCounts(t, h.conn, "access_events")
	if c.Rows != uint64(len(goodIDs)) || c.Unique != uint64(len(goodIDs)) {
		t.Errorf("access_events %+v, want %d rows, each once", c, len(goodIDs))
	}
	var months uint64
	if err := conn.QueryRow(ctx, "SELECT uniqExact(toYYYYMM(event_time)) FROM access_events WHERE startsWith(event_id, 'backfill-')").Scan(&months); err != nil {
		t.Fatal(err)
	}
	if months != 150 {
		t.Errorf("the backfill is stored over %d months, want 150", months)
	}
	rows, err := conn.Query(ctx, "SELECT event_id FROM access_events")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			t.Fatal(err)
		}
		if !goodIDs[id] {
			t.Errorf("access_events holds %s, which is not a good event", id)
		}
	}
	rows.Close()

	// The dlq table: one row per bad message, with its class and the
	// whole payload's size and hash.
	want := map[string]poisonCase{} // by sha256
	for _, b := range bad {
		sum := sha256.Sum256(b.msg.Value)
		want[hex.EncodeToString(sum[:])] = b
	}
	rows, err = conn.Query(ctx, `SELECT error_class, error, length(payload), payload_size, payload_sha256, payload_truncated,
		kafka_topic FROM dlq FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for rows.Next() {
		var class, text, sum, topic string
		var stored, size uint64
		var truncated bool
		if err := rows.Scan(&class, &text, &stored, &size, &sum, &truncated, &topic); err != nil {
			t.Fatal(err)
		}
		b, ok := want[sum]
		if !ok && class == store.ClassRejectedByStorage {
			// A refused event's payload is the event as canonical JSON.
			for _, x := range bad {
				if x.class == class && !seen[x.name] {
					b, ok = x, true
					break
				}
			}
		}
		if !ok {
			t.Errorf("dlq row of class %s (%d bytes) matches no bad message", class, size)
			continue
		}
		seen[b.name] = true
		if class != b.class || topic != h.topic || !strings.HasPrefix(text, class) {
			t.Errorf("%s: dlq row class %q error %q topic %q, want class %s", b.name, class, text, topic, b.class)
		}
		if class != store.ClassRejectedByStorage && int(size) != b.size {
			t.Errorf("%s: payload_size %d, want %d", b.name, size, b.size)
		}
		wantStored := min(b.size, cfg.DeadLetterMaxPayload)
		if class != store.ClassRejectedByStorage && (int(stored) != wantStored || truncated != (b.size > cfg.DeadLetterMaxPayload)) {
			t.Errorf("%s: %d payload bytes stored (truncated %v), want %d (truncated %v)", b.name, stored, truncated,
				wantStored, b.size > cfg.DeadLetterMaxPayload)
		}
	}
	rows.Close()
	if len(seen) != len(bad) {
		t.Errorf("dlq table holds %d of the %d bad messages: %v", len(seen), len(bad), seen)
	}

	// The DLQ topic (Kafka's default max.message.bytes): every bad message
	// once, cut to fit when it is too large.
	dlq := readTopic(t, h.brokers, h.dlqTopic, 0)
	if len(dlq) != len(bad) {
		t.Errorf("DLQ topic holds %d messages, want %d", len(dlq), len(bad))
	}
	classes := map[string]int{}
	for _, m := range dlq {
		hdr := map[string]string{}
		for _, x := range m.Headers {
			hdr[x.Key] = string(x.Value)
		}
		classes[hdr[ingest.HeaderErrorClass]]++
		if hdr[ingest.HeaderSourceTopic] != h.topic || hdr[ingest.HeaderSourceOffset] == "" {
			t.Errorf("DLQ message headers %v lack the source", hdr)
		}
		if len(m.Value) > 1048588 {
			t.Errorf("DLQ message of %d bytes exceeds the topic's limit", len(m.Value))
		}
		b, ok := want[hdr[ingest.HeaderPayloadSHA256]]
		if !ok {
			continue // a refused event: checked by class below
		}
		size, _ := strconv.Atoi(hdr[ingest.HeaderPayloadSize])
		cut := hdr[ingest.HeaderPayloadTruncated] == "true"
		if size != b.size || cut != (len(m.Value) < b.size) || !bytes.Equal(m.Value, b.msg.Value[:len(m.Value)]) {
			t.Errorf("%s: DLQ message of %d bytes (size header %d, truncated %v), want a prefix of the %d-byte message",
				b.name, len(m.Value), size, cut, b.size)
		}
		if b.size <= 1000 && cut {
			t.Errorf("%s: a small message was cut", b.name)
		}
	}
	for _, b := range bad {
		classes[b.class]--
	}
	for class, n := range classes {
		if n != 0 {
			t.Errorf("DLQ topic: %+d messages of class %s", n, class)
		}
	}

	// Ready again once the suite is consumed. Not checked at one instant:
	// under load a long poll of an idle partition can time out now and
	// then, and three in a row mark the partition's fetch failing until
	// its reader has been quiet for fetchRecovered (3 s); the bad input
	// must not keep the pipeline unready.
	var code int
	var body string
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if code, body = r.get(t, "/readyz"); code == 200 || time.Now().After(deadline) {
			break
		}
	}
	if code != 200 {
		t.Errorf("/readyz %d %q for 20 s after the suite, want 200", code, body)
	}
	if got := r.metric(t, "ehrwatch_clickhouse_refused_rows_total"); got != 3 {
		t.Errorf("refused rows metric %v, want 3", got)
	}
	if st := r.p.Stats(); st.Stored != int64(len(goodIDs)) || st.DeadLettered != int64(len(bad)) {
		t.Errorf("stats %+v, want %d stored and %d dead-lettered", st, len(goodIDs), len(bad))
	}
}

func totalBytes(msgs []kafka.Message) int {
	n := 0
	for _, m := range msgs {
		n += len(m.Value)
	}
	return n
}

// TestDLQSizedFromTopicConfig: the DLQ producer reads the DLQ topic's
// max.message.bytes before consuming, so a dead letter larger than it is
// cut to fit up-front, not after the brokers refused it.
func TestDLQSizedFromTopicConfig(t *testing.T) {
	t.Parallel() // own topics, group and database
	h := newHarness(t, 1)
	const limit = 200_000
	h.dlqTopic = bigTopic(t, h.brokers, 1, limit)
	value := append([]byte(`{"event_id":"big","patient_id":"MRN-PHI-0000001","x":"`), bytes.Repeat([]byte("y"), 300_000)...)
	msgs := ingesttest.Fixture{N: 50, Users: 2, Prefix: "sized"}.Messages()
	msgs = append(msgs, ingesttest.Message{Message: kafka.Message{Key: []byte("user-0000"), Value: value}})
	ingesttest.Produce(t, h.brokers, h.topic, msgs)
	cfg, k := h.configs()
	h.start(cfg, k, ingest.Deps{})
	h.waitDrained(time.Minute)

	dlq := readTopic(t, h.brokers, h.dlqTopic, 0)
	if len(dlq) != 1 {
		t.Fatalf("DLQ topic holds %d messages, want 1", len(dlq))
	}
	m := dlq[0]
	hdr := map[string]string{}
	for _, x := range m.Headers {
		hdr[x.Key] = string(x.Value)
	}
	if len(m.Value) >= limit || hdr[ingest.HeaderPayloadTruncated] != "true" ||
		hdr[ingest.HeaderPayloadSize] != strconv.Itoa(len(value)) || !bytes.HasPrefix(value, m.Value) {
		t.Errorf("DLQ message of %d bytes, headers %v: want a flagged prefix under %d bytes", len(m.Value), hdr, limit)
	}
	if !h.logs.Contains(`"max_message_bytes":200000`) {
		t.Error("the DLQ producer did not log the topic's limit")
	}
	if h.logs.Contains("refused a message as too large") {
		t.Error("the brokers refused a dead letter: the limit was not read up-front")
	}
}
