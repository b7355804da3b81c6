package ingest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// harness is one integration test's Kafka topics, consumer group and
// ClickHouse database, plus the captured logs of every pipeline it starts.
type harness struct {
	t          *testing.T
	brokers    string
	topic      string
	dlqTopic   string
	group      string
	partitions int
	chAddr     string
	conn       clickhouse.Conn
	db         string
	logs       *ingesttest.LogBuffer
}

func newHarness(t *testing.T, partitions int) *harness {
	t.Helper()
	brokers := testenv.Kafka(t)
	conn, db := testenv.ClickHouse(t)
	ingesttest.Migrate(t, conn)
	h := &harness{
		t:          t,
		brokers:    brokers,
		topic:      testenv.NewTopic(t, brokers, partitions),
		dlqTopic:   testenv.NewTopic(t, brokers, 1),
		partitions: partitions,
		chAddr:     testenv.ClickHouseAddr(t),
		conn:       conn,
		db:         db,
		logs:       &ingesttest.LogBuffer{},
	}
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
	return h
}

// configs are test-speed settings: the broker's minimum session timeout,
// short batch waits and backoffs.
func (h *harness) configs() (ingest.Config, ingest.KafkaConfig) {
	cfg := ingest.DefaultConfig()
	cfg.BatchMaxWait = 200 * time.Millisecond
	cfg.CommitInterval = 200 * time.Millisecond
	cfg.LagInterval = 500 * time.Millisecond
	cfg.DrainTimeout = 4 * time.Second
	cfg.ShutdownTimeout = 15 * time.Second
	cfg.Retry.MaxInterval = time.Second
	k := ingest.DefaultKafkaConfig()
	k.Brokers = strings.Split(h.brokers, ",")
	k.GroupID = h.group
	k.Topics = []string{h.topic}
	k.DLQTopic = h.dlqTopic
	k.MaxWait = 200 * time.Millisecond
	k.SessionTimeout = 6 * time.Second
	k.RebalanceTimeout = 6 * time.Second
	k.HeartbeatInterval = time.Second
	k.JoinGroupBackoff = 500 * time.Millisecond
	return cfg, k
}

// running is a pipeline under test.
type running struct {
	p    *ingest.Pipeline
	http *httptest.Server
	stop context.CancelFunc
	done chan error
}

// start runs a pipeline until the test ends or stop is called.
func (h *harness) start(cfg ingest.Config, k ingest.KafkaConfig, deps ingest.Deps) *running {
	h.t.Helper()
	if deps.ClickHouse == nil && deps.Sink == nil {
		deps.ClickHouse = h.conn
	}
	deps.Logger = zerolog.New(h.logs).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	if deps.NewProcessor == nil {
		deps.NewProcessor = newTestDetector
	}
	p, err := ingest.New(cfg, k, deps)
	if err != nil {
		h.t.Fatalf("ingest.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{p: p, http: httptest.NewServer(p.Handler()), stop: cancel, done: make(chan error, 1)}
	go func() { r.done <- p.Run(ctx) }()
	h.t.Cleanup(func() {
		r.stop()
		r.wait(h.t)
		r.http.Close()
	})
	return r
}

// wait waits for Run to return and fails the test on an error.
func (r *running) wait(t *testing.T) {
	t.Helper()
	select {
	case err, ok := <-r.done:
		if ok && err != nil {
			t.Errorf("Run: %v", err)
		}
		if ok {
			close(r.done)
		}
	case <-time.After(30 * time.Second):
		t.Errorf("Run did not return within 30s of being stopped")
	}
}

func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	resp, err := http.Get(r.http.URL + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// metric returns the value of one sample of the pipeline's /metrics, or -1.
func (r *running) metric(t *testing.T, name string) float64 {
	t.Helper()
	_, body := r.get(t, "/metrics")
	total, found := 0.0, false
	for _, line := range strings.Split(body, "\n") {
		if !strings.HasPrefix(line, name) || strings.HasPrefix(line, "#") {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if rest != "" && rest[0] != ' ' && rest[0] != '{' {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err == nil {
			total += v
			found = true
		}
	}
	if !found {
		return -1
	}
	return total
}

// waitDrained waits until every produced message is committed.
func (h *harness) waitDrained(timeout time.Duration) {
	h.t.Helper()
	ingesttest.WaitFor(h.t, timeout, "consumer lag 0", func() bool {
		return ingesttest.Lag(h.t, h.brokers, h.group, h.topic, h.partitions) == 0
	})
}

// testDetector is a stand-in for the detectors' Engine: one finding per
// user per 500 of that user's events, with a deterministic id, so the
// findings table is exercised and checkable.
type testDetector struct{ seen map[string]int }

func newTestDetector(string, int) (ingest.Processor, error) {
	return &testDetector{seen: map[string]int{}}, nil
}

func (d *testDetector) Process(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	d.seen[ev.UserID]++
	n := d.seen[ev.UserID]
	if n%500 != 0 {
		return nil, nil
	}
	start := ev.EventTime.Truncate(time.Hour)
	return []schemas.Finding{{
		FindingID:   schemas.FindingID("test_volume", []string{ev.UserID, strconv.Itoa(n)}, start, start.Add(time.Hour)),
		Detector:    "test_volume",
		Severity:    schemas.SeverityLow,
		Score:       10,
		FacilityID:  ev.FacilityID,
		UserID:      ev.UserID,
		PatientID:   ev.PatientID,
		WindowStart: start,
		WindowEnd:   start.Add(time.Hour),
		EventIDs:    []string{ev.EventID},
		Explanation: "test finding",
	}}, nil
}

func expectedFindings(msgs []ingesttest.Message) uint64 {
	perUser := map[string]int{}
	var n uint64
	for _, m := range msgs {
		if m.EventID == "" {
			continue
		}
		perUser[string(m.Key)]++
		if perUser[string(m.Key)]%500 == 0 {
			n++
		}
	}
	return n
}

// TestPipelineStoresEveryEvent: 100 000 events in, exactly 100 000 rows in
// access_events, every offset committed, lag 0.
func TestPipelineStoresEveryEvent(t *testing.T) {
	h := newHarness(t, 4)
	msgs := ingesttest.Fixture{N: 100_000, Users: 200}.Messages()
	ingesttest.Produce(t, h.brokers, h.topic, msgs)

	cfg, k := h.configs()
	start := time.Now()
	r := h.start(cfg, k, ingest.Deps{})
	h.waitDrained(3 * time.Minute)
	took := time.Since(start)
	t.Logf("100000 events stored and committed in %s (%.0f events/s, including group join)", took, 100000/took.Seconds())

	if c := ingesttest.TableCounts(t, h.conn, "access_events"); c.Rows != 100_000 || c.Unique != 100_000 {
		t.Errorf("access_events: %+v, want exactly 100000 rows, 100000 unique", c)
	}
	if missing, n := ingesttest.MissingEvents(t, h.conn, msgs); n > 0 {
		t.Errorf("%d events missing, e.g. %v", n, missing)
	}
	if c, want := ingesttest.TableCounts(t, h.conn, "findings"), expectedFindings(msgs); c.Rows != want || c.Unique != want {
		t.Errorf("findings: %+v, want %d", c, want)
	}
	if c := ingesttest.TableCounts(t, h.conn, "dlq"); c.Rows != 0 {
		t.Errorf("dlq: %+v, want empty", c)
	}
	ingesttest.WaitFor(t, 10*time.Second, "lag metric 0", func() bool { return r.metric(t, "ehrwatch_consumer_lag") == 0 })
	// Polled, not read once: under load an idle partition's long poll can
	// time out three times in a row, which marks its fetch failing until
	// the reader has been quiet for 3 s.
	code, body := 0, ""
	for deadline := time.Now().Add(20 * time.Second); code != http.StatusOK && time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		code, body = r.get(t, "/readyz")
	}
	if code != http.StatusOK {
		t.Errorf("/readyz: %d %s for 20 s", code, body)
	}
	if got := r.metric(t, "ehrwatch_rows_stored_total{table=\"access_events\"}"); got != 100_000 {
		t.Errorf("rows stored metric %v, want 100000", got)
	}
	if st := r.p.Stats(); st.Consumed != 100_000 || st.Stored != 100_000 {
		t.Errorf("stats %+v", st)
	}
}

// TestPipelineSurvivesClickHouseOutage: ClickHouse is cut off for 30s in
// the middle of the stream. The pipeline stops fetching (bounded memory),
// says why on /readyz, loses nothing and drains the lag after recovery.
func TestPipelineSurvivesClickHouseOutage(t *testing.T) {
	t.Parallel() // idle for most of the 30s outage
	h := newHarness(t, 2)
	proxy := ingesttest.NewProxy(t, h.chAddr)
	opts := testenv.ClickHouseOptions(proxy.Addr(), h.db)
	opts.ReadTimeout = 5 * time.Second
	conn, err := clickhouse.Open(opts)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	msgs := ingesttest.Fixture{N: 30_000, Users: 50, Prefix: "out"}.Messages()
	first, rest := msgs[:5000], msgs[5000:]
	ingesttest.Produce(t, h.brokers, h.topic, first)
	cfg, k := h.configs()
	cfg.BatchMaxRows = 2000
	cfg.QueueSize = 1000
	k.QueueCapacity = 500
	r := h.start(cfg, k, ingest.Deps{ClickHouse: conn})
	h.waitDrained(time.Minute)

	proxy.Cut()
	outage := time.Now()
	ingesttest.Produce(t, h.brokers, h.topic, rest)
	ingesttest.WaitFor(t, 20*time.Second, "/readyz 503", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusServiceUnavailable
	})
	code, body := r.get(t, "/readyz")
	t.Logf("during the outage: /readyz %d %q", code, body)
	if !strings.Contains(body, "clickhouse_insert") {
		t.Errorf("/readyz reason %q does not name ClickHouse", body)
	}
	stored := r.p.Stats().Stored
	// Bound on what is held in memory: two batches, the queue, and each
	// partition reader's prefetch queue (plus one in hand per partition).
	bound := int64(2*cfg.BatchMaxRows + cfg.QueueSize + h.partitions*(k.QueueCapacity+1))
	for time.Since(outage) < 30*time.Second {
		st := r.p.Stats()
		if held := st.Consumed - st.Stored; held > bound {
			t.Fatalf("holding %d processed messages during the outage; bound is %d", held, bound)
		}
		if code, _ := r.get(t, "/readyz"); code != http.StatusServiceUnavailable {
			t.Fatalf("/readyz %d during the outage", code)
		}
		time.Sleep(time.Second)
	}
	st := r.p.Stats()
	if st.Stored > stored+int64(cfg.BatchMaxRows) {
		t.Errorf("stored %d events while ClickHouse was unreachable", st.Stored-stored)
	}
	if pending := int64(len(msgs)) - st.Consumed; pending <= 0 {
		t.Errorf("consumed everything (%d) during the outage: fetching did not stop", st.Consumed)
	}
	t.Logf("after 30s outage: consumed %d, stored %d, lag %d", st.Consumed, st.Stored,
		ingesttest.Lag(t, h.brokers, h.group, h.topic, h.partitions))

	proxy.Restore()
	recovered := time.Now()
	h.waitDrained(2 * time.Minute)
	t.Logf("lag drained %s after ClickHouse came back", time.Since(recovered))
	ingesttest.WaitFor(t, 10*time.Second, "/readyz 200", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == http.StatusOK
	})
	c := ingesttest.TableCounts(t, h.conn, "access_events")
	if c.Final != uint64(len(msgs)) || c.Unique != uint64(len(msgs)) {
		t.Errorf("access_events %+v, want %d unique", c, len(msgs))
	}
	if missing, n := ingesttest.MissingEvents(t, h.conn, msgs); n > 0 {
		t.Errorf("%d events missing, e.g. %v", n, missing)
	}
	if got := r.metric(t, "ehrwatch_retries_total{operation=\"clickhouse_insert\"}"); got < 1 {
		t.Errorf("retries metric %v, want > 0", got)
	}
}

// TestPipelineDeadLettersPoison: one poison message per 1000. The DLQ
// topic and table hold exactly those, with provenance; offsets keep
// moving; everything else is stored.
func TestPipelineDeadLettersPoison(t *testing.T) {
	t.Parallel() // own topic, group and database
	h := newHarness(t, 3)
	msgs := ingesttest.Fixture{N: 20_000, Users: 100, PoisonEvery: 1000, Prefix: "dlq"}.Messages()
	poison := map[string]ingesttest.Message{}
	for _, m := range msgs {
		if m.EventID == "" {
			poison[string(m.Value)] = m
		}
	}
	if len(poison) != 20 {
		t.Fatalf("fixture has %d poison messages, want 20", len(poison))
	}
	ingesttest.Produce(t, h.brokers, h.topic, msgs)
	cfg, k := h.configs()
	r := h.start(cfg, k, ingest.Deps{})
	h.waitDrained(2 * time.Minute)

	if c := ingesttest.TableCounts(t, h.conn, "access_events"); c.Rows != 19_980 || c.Unique != 19_980 {
		t.Errorf("access_events %+v, want 19980", c)
	}
	if c := ingesttest.TableCounts(t, h.conn, "dlq"); c.Rows != 20 || c.Unique != 20 {
		t.Errorf("dlq table %+v, want 20", c)
	}
	ctx := context.Background()
	rows, err := h.conn.Query(ctx, "SELECT kafka_topic, kafka_partition, kafka_offset, error_class, error, payload FROM dlq")
	if err != nil {
		t.Fatal(err)
	}
	for rows.Next() {
		var topic, class, text, payload string
		var part uint32
		var off uint64
		if err := rows.Scan(&topic, &part, &off, &class, &text, &payload); err != nil {
			t.Fatal(err)
		}
		m, ok := poison[payload]
		if !ok {
			t.Errorf("dlq row %s/%d/%d holds a message that is not poison", topic, part, off)
			continue
		}
		if topic != h.topic || class != m.Class || !strings.HasPrefix(text, class) {
			t.Errorf("dlq row %s/%d/%d: topic %q class %q error %q, want %q %q", topic, part, off, topic, class, text, h.topic, m.Class)
		}
		for _, marker := range ingesttest.PHIMarkers {
			if strings.Contains(text, marker) {
				t.Errorf("dlq error column carries patient data: %q", text)
			}
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()

	// The DLQ topic: exactly the poison messages, once each, with headers.
	dlq := readTopic(t, h.brokers, h.dlqTopic, 0)
	if len(dlq) != 20 {
		t.Errorf("DLQ topic has %d messages, want 20", len(dlq))
	}
	seen := map[string]bool{}
	for _, m := range dlq {
		if seen[string(m.Value)] {
			t.Errorf("DLQ topic holds a message twice")
		}
		seen[string(m.Value)] = true
		want, ok := poison[string(m.Value)]
		if !ok {
			t.Errorf("DLQ topic holds a message that is not poison")
			continue
		}
		hdr := map[string]string{}
		for _, x := range m.Headers {
			hdr[x.Key] = string(x.Value)
		}
		if hdr[ingest.HeaderSourceTopic] != h.topic || hdr[ingest.HeaderErrorClass] != want.Class ||
			hdr[ingest.HeaderSourcePartition] == "" || hdr[ingest.HeaderSourceOffset] == "" || hdr[ingest.HeaderDeadLetteredAt] == "" {
			t.Errorf("DLQ headers %v, want source topic %s, class %s, partition, offset, time", hdr, h.topic, want.Class)
		}
		if string(m.Key) != string(want.Key) {
			t.Errorf("DLQ key %q, want %q", m.Key, want.Key)
		}
	}
	if got := r.metric(t, "ehrwatch_dlq_messages_total"); got != 20 {
		t.Errorf("dlq metric %v, want 20", got)
	}
	for _, class := range []string{"syntax", "unknown_field", "missing_field", "invalid_value"} {
		if !h.logs.Contains(`"error_class":"` + class + `"`) {
			t.Errorf("no log line names error class %s", class)
		}
	}
}

// readTopic reads every message of one partition up to its end offset.
func readTopic(t *testing.T, brokers, topic string, partition int) []kafka.Message {
	t.Helper()
	end, _ := ingesttest.Offsets(t, brokers, "unused-"+topic, topic, partition+1)
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: strings.Split(brokers, ","), Topic: topic, Partition: partition, MaxWait: 200 * time.Millisecond})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var out []kafka.Message
	for int64(len(out)) < end[partition] {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("read %s: %v", topic, err)
		}
		out = append(out, m)
	}
	return out
}

// TestPipelineRebalance: two instances share the group; one is stopped in
// the middle of the stream and the other takes over its partitions; the
// table ends up complete.
func TestPipelineRebalance(t *testing.T) {
	t.Parallel() // own topic, group and database
	h := newHarness(t, 4)
	msgs := ingesttest.Fixture{N: 60_000, Users: 300, Prefix: "reb"}.Messages()
	cfg, k := h.configs()
	cfg.BatchMaxRows = 2000

	a := h.start(cfg, k, ingest.Deps{})
	b := h.start(cfg, k, ingest.Deps{})
	ingesttest.WaitFor(t, 30*time.Second, "both instances assigned", func() bool {
		return a.metric(t, "ehrwatch_assigned_partitions") > 0 && b.metric(t, "ehrwatch_assigned_partitions") > 0
	})

	// Produce while both consume, stop a halfway through.
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < len(msgs); i += 5000 {
			ingesttest.Produce(t, h.brokers, h.topic, msgs[i:min(i+5000, len(msgs))])
			time.Sleep(100 * time.Millisecond)
		}
	}()
	ingesttest.WaitFor(t, time.Minute, "a stored some events", func() bool { return a.p.Stats().Stored > 5000 })
	a.stop()
	a.wait(t)
	stoppedAt := b.p.Stats().Stored
	wg.Wait()
	ingesttest.WaitFor(t, 30*time.Second, "b owns every partition", func() bool {
		return b.metric(t, "ehrwatch_assigned_partitions") == float64(h.partitions)
	})
	h.waitDrained(2 * time.Minute)
	t.Logf("a stored %d, b stored %d (%d after a stopped)", a.p.Stats().Stored, b.p.Stats().Stored, b.p.Stats().Stored-stoppedAt)

	c := ingesttest.TableCounts(t, h.conn, "access_events")
	if c.Final != uint64(len(msgs)) || c.Unique != uint64(len(msgs)) {
		t.Errorf("access_events %+v, want %d unique", c, len(msgs))
	}
	if missing, n := ingesttest.MissingEvents(t, h.conn, msgs); n > 0 {
		t.Errorf("%d events missing, e.g. %v", n, missing)
	}
	// A graceful stop commits what it stored, so the takeover re-reads
	// nothing: together the two instances inserted every event once.
	if stored := a.p.Stats().Stored + b.p.Stats().Stored; stored != int64(len(msgs)) {
		t.Errorf("the instances inserted %d events in all, want exactly %d", stored, len(msgs))
	}
	if c.Rows != c.Unique {
		t.Errorf("access_events has %d rows for %d events after a graceful handover", c.Rows, c.Unique)
	}
	if !h.logs.Contains("generation ended") || !h.logs.Contains("partition stopped") {
		t.Errorf("logs do not show the handover")
	}
}

// TestPipelineStopsOnPermanentError: an INSERT that can never succeed
// (the table is missing) stops the pipeline with the error instead of
// retrying forever, and nothing is committed.
func TestPipelineStopsOnPermanentError(t *testing.T) {
	t.Parallel() // own topic, group and database
	h := newHarness(t, 1)
	if err := h.conn.Exec(context.Background(), "DROP TABLE findings"); err != nil {
		t.Fatal(err)
	}
	msgs := ingesttest.Fixture{N: 1000, Users: 1, Prefix: "perm"}.Messages() // user-0000 gets 2 findings
	ingesttest.Produce(t, h.brokers, h.topic, msgs)
	cfg, k := h.configs()
	r := h.start(cfg, k, ingest.Deps{})
	select {
	case err := <-r.done:
		close(r.done)
		if err == nil || ingest.Retryable(err) {
			t.Fatalf("Run returned %v, want a permanent error", err)
		}
		t.Logf("Run returned: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("pipeline kept running after a permanent error")
	}
	if lag := ingesttest.Lag(t, h.brokers, h.group, h.topic, h.partitions); lag != 1000 {
		t.Errorf("lag %d, want 1000 (nothing committed)", lag)
	}
	if !h.logs.Contains("write failed permanently") {
		t.Errorf("no log line about the permanent failure")
	}
}
