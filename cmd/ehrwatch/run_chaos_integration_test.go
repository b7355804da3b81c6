package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// The chaos suite: `ehrwatch run` (the real binary, every detector,
// alerting with a webhook output, the default snapshot settings) over a
// small synthetic hospital whose reference data is in ClickHouse, once
// without interruption and once through each kind of trouble. What
// analysts see, the stored findings and alerts, must be the same, and
// every alert must have reached the webhook receiver.

// chaosHospital is 60 users at one facility over 10 days (about 17 500
// events), with incidents after a 6-day warm-up, so the volume and
// off-hours baselines hold state when trouble strikes.
func chaosHospital(t *testing.T) (*synth.Hospital, []ingesttest.Message) {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.Days, cfg.WarmupDays = 10, 6
	cfg.Facilities = []synth.FacilityConfig{{ID: "chaos", TimeZone: "America/New_York", Source: "epic", Users: 60, Patients: 1500}}
	cfg.IncidentRate, cfg.BenignRate = 5, 5
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	msgs := make([]ingesttest.Message, len(h.Events))
	for i := range h.Events {
		b, err := json.Marshal(&h.Events[i])
		if err != nil {
			t.Fatal(err)
		}
		msgs[i] = ingesttest.Message{Message: kafka.Message{Key: []byte(h.Events[i].UserID), Value: b}, EventID: h.Events[i].EventID}
	}
	return h, msgs
}

// webhookReceiver counts the webhook deliveries of each environment (by
// URL path): per alert id, the webhook ids (idempotency keys) seen and
// how often, and each webhook id's payload type. onPost, when set, runs
// before the answer.
type webhookReceiver struct {
	srv    *httptest.Server
	secret string
	mu     sync.Mutex
	posts  map[string]map[string]map[string]int // path → alert id → webhook id → deliveries
	types  map[string]string                    // path + " " + webhook id → payload type
	onPost map[string]func()
}

func newWebhookReceiver(t *testing.T) *webhookReceiver {
	t.Helper()
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	r := &webhookReceiver{secret: "whsec_" + base64.StdEncoding.EncodeToString(key),
		posts: map[string]map[string]map[string]int{}, types: map[string]string{}, onPost: map[string]func(){}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p alerting.WebhookPayload
		if err := json.Unmarshal(body, &p); err != nil || p.Data.AlertID == "" {
			http.Error(w, "bad payload", http.StatusBadRequest)
			return
		}
		r.mu.Lock()
		byAlert := r.posts[req.URL.Path]
		if byAlert == nil {
			byAlert = map[string]map[string]int{}
			r.posts[req.URL.Path] = byAlert
		}
		if byAlert[p.Data.AlertID] == nil {
			byAlert[p.Data.AlertID] = map[string]int{}
		}
		byAlert[p.Data.AlertID][req.Header.Get(alerting.HeaderWebhookID)]++
		r.types[req.URL.Path+" "+req.Header.Get(alerting.HeaderWebhookID)] = p.Type
		hook := r.onPost[req.URL.Path]
		r.mu.Unlock()
		if hook != nil {
			hook()
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *webhookReceiver) setHook(path string, fn func()) {
	r.mu.Lock()
	r.onPost[path] = fn
	r.mu.Unlock()
}

// deliveries returns, for path, each alert id's webhook ids and counts.
func (r *webhookReceiver) deliveries(path string) map[string]map[string]int {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]map[string]int{}
	for a, ids := range r.posts[path] {
		out[a] = map[string]int{}
		for id, n := range ids {
			out[a][id] = n
		}
	}
	return out
}

// payloadType is the type of the payload delivered to path with webhookID.
func (r *webhookReceiver) payloadType(path, webhookID string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.types[path+" "+webhookID]
}

func (r *webhookReceiver) total(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ids := range r.posts[path] {
		for _, c := range ids {
			n += c
		}
	}
	return n
}

// chaosEnv is one run environment (topic, group, database) of the suite,
// with the hospital's reference data and the webhook output to path.
func chaosEnv(t *testing.T, bin string, h *synth.Hospital, hook *webhookReceiver, path string, o runOptions) *runEnv {
	t.Helper()
	o.bin = bin
	o.sections = func(hashKey string) string {
		return fmt.Sprintf(`reference:
  source: clickhouse
  hash_key_file: %q
  facilities: {chaos: America/New_York}
alerting:
  outputs:
    webhook:
      enabled: true
      url: %q
      secret: %q
      delivery: {initial_backoff: 100ms, max_backoff: 1s, max_attempts: 20}
`, hashKey, hook.srv.URL+path, hook.secret)
	}
	e := newRunEnvWith(t, 4, 2000, o)
	seedReference(t, e.conn, h)
	return e
}

// chaosFindings are the stored findings (latest versions), one line each,
// every column but detected_at.
func chaosFindings(t *testing.T, conn clickhouse.Conn) []string {
	t.Helper()
	return queryLines(t, conn, `SELECT concat(finding_id, '|', detector, '|', severity, '|', toString(score), '|', user_id, '|',
 patient_id, '|', toString(window_start), '|', toString(window_end), '|', toString(event_ids), '|', explanation, '|',
 evidence, '|', toString(suppressed), '|', suppression_reason, '|', toString(kafka_partition), '@', toString(kafka_offset))
 FROM findings FINAL ORDER BY finding_id`)
}

// chaosAlerts are the stored alerts (latest versions): id, rule,
// severity and finding count.
func chaosAlerts(t *testing.T, conn clickhouse.Conn) []string {
	t.Helper()
	return queryLines(t, conn, `SELECT concat(alert_id, '|', rule, '|', severity, '|', toString(finding_count))
 FROM alerts FINAL ORDER BY alert_id`)
}

func queryLines(t *testing.T, conn clickhouse.Conn, q string) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			t.Fatal(err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// diffLines reports the lines only in want or only in got; it returns
// whether they differ.
func diffLines(t *testing.T, what string, want, got []string) bool {
	t.Helper()
	if slices.Equal(want, got) {
		return false
	}
	in := func(xs []string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	w, g := in(want), in(got)
	n := 0
	for _, x := range want {
		if !g[x] && n < 15 {
			t.Errorf("%s only in the uninterrupted run: %.300s", what, x)
			n++
		}
	}
	for _, x := range got {
		if !w[x] && n < 30 {
			t.Errorf("%s only after the trouble: %.300s", what, x)
			n++
		}
	}
	t.Errorf("%s: %d in the uninterrupted run, %d after the trouble", what, len(want), len(got))
	return true
}

// compareWithReference checks an environment's findings, alerts and
// webhook deliveries against the uninterrupted run's.
func compareWithReference(t *testing.T, e *runEnv, hook *webhookReceiver, path string, wantFindings, wantAlerts []string) {
	t.Helper()
	t.Run("findings", func(t *testing.T) {
		diffLines(t, "finding", wantFindings, chaosFindings(t, e.conn))
	})
	t.Run("alerts", func(t *testing.T) { compareAlerts(t, e, hook, path, wantAlerts) })
}

// compareAlerts checks the stored alerts against wantAlerts and the
// webhook deliveries against the stored alerts. The findings they come
// from are compared first: a difference here with equal findings is the
// alerting engine's.
func compareAlerts(t *testing.T, e *runEnv, hook *webhookReceiver, path string, wantAlerts []string) {
	got := chaosAlerts(t, e.conn)
	if diffLines(t, "alert", wantAlerts, got) {
		t.Log("the findings are compared in the sibling subtest; with equal findings, alert differences come from " +
			"the alerting engine (one event-time watermark over all partitions, in-memory grouping), not the pipeline")
	}
	// Every stored alert was notified at least once; a redelivery of a
	// version carries the same webhook id, so each (alert, version) maps
	// to one id, and the ids never mix alerts.
	dels := hook.deliveries(path)
	missing, dups := 0, 0
	for _, line := range got {
		id := strings.SplitN(line, "|", 2)[0]
		if len(dels[id]) == 0 {
			missing++
			if missing <= 10 {
				t.Errorf("alert %s was never notified", id)
			}
		}
	}
	for id, byKey := range dels {
		for key, n := range byKey {
			if !strings.HasPrefix(key, id+"_v") {
				t.Errorf("alert %s delivered with webhook id %q", id, key)
			}
			dups += n - 1
		}
	}
	if missing > 0 {
		t.Errorf("%d of %d alerts never notified", missing, len(got))
	}
	t.Logf("%d alerts; %d webhook deliveries for %d alert ids, %d of them repeats with the same webhook id; "+
		"%d unsuppressed findings at medium or above in no alert", len(got), hook.total(path), len(dels), dups,
		len(unalerted(t, e.conn)))
}

// unalerted lists the unsuppressed findings at or above the default
// rule's threshold (medium) that no stored alert carries.
func unalerted(t *testing.T, conn clickhouse.Conn) []string {
	t.Helper()
	return queryLines(t, conn, `SELECT concat(finding_id, '|', detector, '|', severity) FROM findings FINAL
 WHERE NOT suppressed AND severity IN ('medium', 'high', 'critical')
   AND finding_id NOT IN (SELECT arrayJoin(finding_ids) FROM alerts FINAL) ORDER BY finding_id`)
}

// TestRunChaosKeepsFindingsAndAlerts runs the hospital once without
// interruption, then, each in its own topic, group and database and with
// the events arriving in chunks while the trouble goes on:
//
//   - kills: 20 SIGKILLs of `ehrwatch run` at random moments, during a
//     flush (which includes the after-store alerting), and while a webhook
//     notification is being delivered, each followed by a restart;
//   - rebalances: a second instance joins and leaves the group 15 times
//     while the first keeps running, and ClickHouse is cut off (a TCP
//     proxy refuses every connection) for 5 s around one of the leaves;
//   - broker restart: a private broker (deployments/dev/kafka.sh with its
//     own state directory; the shared one is never restarted) is stopped
//     and started again, with its data, while `ehrwatch run` consumes.
//
// After each, the stored findings (every column) and alerts (id, rule,
// severity, finding count) equal the uninterrupted run's, and every alert
// reached the webhook receiver.
func TestRunChaosKeepsFindingsAndAlerts(t *testing.T) {
	t.Parallel() // mostly waiting on child processes
	bin := buildEhrwatch(t)
	h, msgs := chaosHospital(t)
	hook := newWebhookReceiver(t)

	ref := chaosEnv(t, bin, h, hook, "/ref", runOptions{})
	ingesttest.Produce(t, ref.brokers, ref.topic, msgs)
	c := ref.start()
	ingesttest.WaitFor(t, 2*time.Minute, "the uninterrupted run to drain (events and peers topic)", ref.drained)
	if err := c.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Fatalf("uninterrupted run exited with %v", err)
	}
	wantFindings, wantAlerts := chaosFindings(t, ref.conn), chaosAlerts(t, ref.conn)
	t.Logf("uninterrupted run: %d events, %d findings, %d alerts, %d webhook deliveries",
		len(msgs), len(wantFindings), len(wantAlerts), hook.total("/ref"))
	if len(wantFindings) < 20 || len(wantAlerts) < 5 {
		t.Fatalf("the hospital is too quiet to test anything: %d findings, %d alerts", len(wantFindings), len(wantAlerts))
	}
	compareWithReference(t, ref, hook, "/ref", wantFindings, wantAlerts)

	t.Run("kills", func(t *testing.T) {
		t.Parallel()
		e := chaosEnv(t, bin, h, hook, "/kill", runOptions{})
		chaosKills(t, e, hook, msgs)
		compareWithReference(t, e, hook, "/kill", wantFindings, wantAlerts)
	})
	t.Run("rebalances", func(t *testing.T) {
		t.Parallel()
		var proxy *ingesttest.Proxy
		e := chaosEnv(t, bin, h, hook, "/rebalance", runOptions{clickhouse: func(addr string) string {
			proxy = ingesttest.NewProxy(t, addr)
			return proxy.Addr()
		}})
		chaosRebalances(t, e, hook, proxy, msgs)
		compareWithReference(t, e, hook, "/rebalance", wantFindings, wantAlerts)
	})
	t.Run("broker restart", func(t *testing.T) {
		t.Parallel()
		brokers, restart := privateBroker(t)
		e := chaosEnv(t, bin, h, hook, "/broker", runOptions{brokers: brokers})
		chaosBrokerRestart(t, e, hook, restart, msgs)
		compareWithReference(t, e, hook, "/broker", wantFindings, wantAlerts)
	})
}

// privateBroker starts a Kafka broker of the test's own with
// deployments/dev/kafka.sh and its own state directory (the shared test
// broker must never be restarted), stopped when the test ends. restart
// stops it and starts it again with its data, on the same port. Before
// it restarts or stops anything it checks that the broker is the one the
// test started in its own state directory, not the shared one (were the
// script to ignore the state variable, it would report the shared broker
// as already running).
func privateBroker(t *testing.T) (brokers string, restart func()) {
	t.Helper()
	state := t.TempDir()
	script := filepath.Join("..", "..", "deployments", "dev", "kafka.sh")
	kafkaSh := func(cmd string) string {
		t.Helper()
		c := exec.Command("bash", script, cmd)
		c.Env = append(os.Environ(), "EHRDEV_STATE="+state)
		var stderr bytes.Buffer
		c.Stderr = &stderr
		out, err := c.Output()
		if err != nil {
			t.Fatalf("kafka.sh %s (state %s): %v\n%s", cmd, state, err, stderr.Bytes())
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		return lines[len(lines)-1]
	}
	// ours reports whether addr is the broker whose port file is in state.
	ours := func(addr string) bool {
		port, err := os.ReadFile(filepath.Join(state, "kafka", "port"))
		return err == nil && strings.HasSuffix(addr, ":"+strings.TrimSpace(string(port)))
	}
	addr := kafkaSh("start")
	if !ours(addr) || addr == strings.TrimSpace(os.Getenv(testenv.KafkaEnv)) {
		t.Fatalf("kafka.sh start gave %s, which is not a broker in %s: it would restart someone else's broker", addr, state)
	}
	t.Cleanup(func() {
		if ours(addr) {
			kafkaSh("stop")
		}
	})
	return addr, func() {
		t.Helper()
		if !ours(addr) {
			t.Fatalf("%s is not the broker in %s; not restarting it", addr, state)
		}
		start := time.Now()
		if got := kafkaSh("restart"); got != addr {
			t.Fatalf("the broker came back on %s, not %s", got, addr)
		}
		t.Logf("broker restarted in %s", time.Since(start).Round(100*time.Millisecond))
	}
}

// chaosBrokerRestart produces half of msgs, restarts the broker while
// `ehrwatch run` is consuming them, produces the rest and lets it finish.
func chaosBrokerRestart(t *testing.T, e *runEnv, hook *webhookReceiver, restart func(), msgs []ingesttest.Message) {
	half := len(msgs) / 2
	ingesttest.Produce(t, e.brokers, e.topic, msgs[:half])
	c := e.start()
	if !c.waitUntil(60*time.Second, "a stored batch", func() bool { return c.flushed >= 1 }) {
		t.Fatal("no stored batch within 60s")
	}
	restart()
	ingesttest.Produce(t, e.brokers, e.topic, msgs[half:])
	ingesttest.WaitFor(t, 3*time.Minute, "lag 0 on the events and the peers topic after the broker restart", e.drained)
	settle(hook, "/broker")
	if err := c.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("ehrwatch exited with %v after SIGTERM", err)
	}
	logRestores(t, e)
}

// chaosKills produces msgs in 20 chunks and SIGKILLs `ehrwatch run` once
// per chunk, then lets a last run finish.
func chaosKills(t *testing.T, e *runEnv, hook *webhookReceiver, msgs []ingesttest.Message) {
	const kills = 20
	seed := uint64(time.Now().UnixNano())
	t.Logf("random seed %d", seed)
	rng := mrand.New(mrand.NewPCG(seed, 10))
	modes := map[string]int{}
	for k := range kills {
		ingesttest.Produce(t, e.brokers, e.topic, msgs[k*len(msgs)/kills:(k+1)*len(msgs)/kills])
		c := e.start()
		if !c.waitUntil(40*time.Second, "partition assignment", func() bool { return len(c.members) > 0 }) {
			t.Fatalf("kill %d: no partition assignment within 40s", k+1)
		}
		mode := []string{"random", "during flush", "on notification"}[k%3]
		switch mode {
		case "random":
			time.Sleep(time.Duration(rng.IntN(1500)) * time.Millisecond)
		case "during flush":
			if !c.waitUntil(10*time.Second, "a flush", func() bool { return c.flushes > c.flushed }) {
				mode = "no flush in time"
			}
		case "on notification":
			// Killed while the receiver holds a delivery: the process
			// never learns that it arrived.
			hit := make(chan struct{})
			var once sync.Once
			hook.setHook("/kill", func() {
				once.Do(func() {
					_ = c.cmd.Process.Signal(syscall.SIGKILL)
					close(hit)
				})
			})
			select {
			case <-hit:
			case <-c.exited:
			case <-time.After(5 * time.Second):
				mode = "no notification in time"
			}
			hook.setHook("/kill", nil)
		}
		modes[mode]++
		_ = c.signal(syscall.SIGKILL, 10*time.Second)
		if k%5 != 4 { // every fifth time, let the session time out by itself
			e.expireMember(c.member())
		}
	}
	t.Logf("%d kills: %v", kills, modes)
	if modes["during flush"] < 3 || modes["on notification"] < 2 {
		t.Errorf("only %d kills during a flush and %d during a notification; want at least 3 and 2", modes["during flush"], modes["on notification"])
	}
	final := e.start()
	if !final.waitUntil(40*time.Second, "partition assignment", func() bool { return len(final.members) > 0 }) {
		t.Fatal("final run: no partition assignment within 40s")
	}
	ingesttest.WaitFor(t, 3*time.Minute, "lag 0 on the events and the peers topic after the last restart", e.drained)
	settle(hook, "/kill")
	if err := final.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("final run exited with %v after SIGTERM", err)
	}
	logRestores(t, e)
}

// chaosRebalances keeps one instance running while a second one joins and
// leaves 15 times, producing a chunk of msgs before each join; ClickHouse
// is cut off for 5 s around the eighth leave.
func chaosRebalances(t *testing.T, e *runEnv, hook *webhookReceiver, proxy *ingesttest.Proxy, msgs []ingesttest.Message) {
	const cycles = 15
	a := e.start()
	gensOf := func(c *child) int {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.members)
	}
	if !a.waitUntil(40*time.Second, "partition assignment", func() bool { return len(a.members) > 0 }) {
		t.Fatal("no partition assignment within 40s")
	}
	for k := range cycles {
		ingesttest.Produce(t, e.brokers, e.topic, msgs[k*len(msgs)/cycles:(k+1)*len(msgs)/cycles])
		before := gensOf(a)
		b := e.start()
		if !b.waitUntil(60*time.Second, "the joiner's assignment", func() bool { return len(b.members) > 0 }) {
			t.Fatalf("rebalance %d: the second instance got no assignment within 60s", k+1)
		}
		if !a.waitUntil(60*time.Second, "the first instance's next generation", func() bool { return len(a.members) > before }) {
			t.Fatalf("rebalance %d: the first instance did not rejoin within 60s", k+1)
		}
		time.Sleep(300 * time.Millisecond)
		outage := k == cycles/2
		var cutAt time.Time
		if outage {
			// Both instances running: ClickHouse goes away for 5 s, while the
			// second one drains and leaves and the first takes its
			// partitions back (and reads their snapshots). (`ehrwatch run`
			// cannot start without ClickHouse, so none starts meanwhile.)
			cutAt = time.Now()
			proxy.Cut()
			time.Sleep(time.Second)
		}
		before = gensOf(a)
		if err := b.signal(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Errorf("rebalance %d: the second instance exited with %v", k+1, err)
		}
		if !a.waitUntil(60*time.Second, "the first instance's generation alone", func() bool { return len(a.members) > before }) {
			t.Fatalf("rebalance %d: the first instance did not take the partitions back within 60s", k+1)
		}
		if outage {
			time.Sleep(time.Until(cutAt.Add(5 * time.Second)))
			proxy.Restore()
			t.Logf("rebalance %d: ClickHouse was cut off for %s", k+1, time.Since(cutAt).Round(100*time.Millisecond))
		}
	}
	t.Logf("%d joins and leaves; the first instance went through %d generations", cycles, gensOf(a))
	ingesttest.WaitFor(t, 3*time.Minute, "lag 0 on the events and the peers topic after the rebalances", e.drained)
	settle(hook, "/rebalance")
	if err := a.signal(syscall.SIGTERM, 30*time.Second); err != nil {
		t.Errorf("the first instance exited with %v after SIGTERM", err)
	}
	logRestores(t, e)
}

// settle waits until no webhook delivery arrived for a second (alerting
// delivers in the background).
func settle(hook *webhookReceiver, path string) {
	last := -1
	for n := hook.total(path); n != last; n = hook.total(path) {
		last = n
		time.Sleep(time.Second)
	}
}

var warmupRe = regexp.MustCompile(`"events":(\d+),[^\n]*"events_per_second":([\d.]+)[^\n]*"message":"detector state rebuilt up to the committed offset"`)

// logRestores reports how the partitions' detectors started over all
// runs, from the logs.
func logRestores(t *testing.T, e *runEnv) {
	t.Helper()
	logs := string(e.logs.Bytes())
	var events, rate float64
	for _, m := range warmupRe.FindAllStringSubmatch(logs, -1) {
		var n, r float64
		fmt.Sscan(m[1], &n)
		fmt.Sscan(m[2], &r)
		events, rate = events+n, max(rate, r)
	}
	t.Logf("warm-ups re-read %v events into the detectors; fastest %v events/s", events, rate)
	t.Logf("partition starts: %d restored from a snapshot, %d rebuilt without one (%d finished); %d snapshots taken",
		strings.Count(logs, "detectors restored from snapshot"),
		strings.Count(logs, "rebuilding detector state from the warm-up start"),
		strings.Count(logs, "detector state rebuilt up to the committed offset"),
		strings.Count(logs, `"message":"detector snapshot taken"`))
}
