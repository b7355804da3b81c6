package ingest_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// ownBroker starts a Kafka broker of the test's own (deployments/dev/kafka.sh
// with a private state directory and ports), so the test can kill it
// without touching the shared one. It returns the bootstrap address and a
// function that SIGKILLs the broker.
func ownBroker(t *testing.T) (string, func()) {
	t.Helper()
	shared := testenv.Kafka(t) // the shared broker's jars are installed: fail with instructions if not
	script, err := filepath.Abs("../../deployments/dev/kafka.sh")
	if err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	run := func(arg string) ([]byte, error) {
		cmd := exec.Command("bash", script, arg)
		cmd.Env = append(os.Environ(), "EHRDEV_STATE="+state)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Logf("kafka.sh %s: %s", arg, stderr.String())
		}
		return out, err
	}
	pidFile := filepath.Join(state, "kafka", "kafka.pid")
	out, err := run("start")
	if err != nil {
		if _, serr := os.Stat(pidFile); serr == nil {
			_, _ = run("stop") // ours, half started
		}
		t.Fatalf("start a private broker: %v", err)
	}
	lines := strings.Fields(strings.TrimSpace(string(out)))
	addr := lines[len(lines)-1]
	// Never kill the shared broker: the script must have started ours, in
	// our state directory.
	if addr == shared || strings.Contains(shared, addr) {
		t.Fatalf("kafka.sh returned the shared broker %s, not a private one (state variable ignored?)", addr)
	}
	if _, err := os.Stat(pidFile); err != nil {
		t.Fatalf("the private broker has no pid file in its state directory: %v", err)
	}
	t.Cleanup(func() { _, _ = run("stop") })
	kill := func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatalf("private broker pid: %v", err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Fatal(err)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatalf("kill the private broker: %v", err)
		}
	}
	return addr, kill
}

// privateTopic creates a topic on a broker of the test's own.
func privateTopic(t *testing.T, brokers, name string, partitions int) string {
	t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(brokers), Timeout: 30 * time.Second}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: name, NumPartitions: partitions, ReplicationFactor: 1}}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("create topic %s: %v", name, err)
	}
	ingesttest.WaitFor(t, 30*time.Second, "topic "+name+" has leaders", func() bool {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
		return err == nil && len(md.Topics) == 1 && md.Topics[0].Error == nil && len(md.Topics[0].Partitions) == partitions
	})
	return name
}

// TestReadinessFollowsKafka: when the broker is lost, /readyz answers 503
// with the reason (failing offset commits or fetches), even with no
// message arriving: the commit path is exercised every commit_interval.
// The measured delay is logged (docs/benchmarks.md); the pipeline keeps
// running.
func TestReadinessFollowsKafka(t *testing.T) {
	t.Parallel() // own broker, topics, group and database
	brokers, kill := ownBroker(t)
	conn, db := testenv.ClickHouse(t)
	ingesttest.Migrate(t, conn)
	h := &harness{t: t, brokers: brokers, partitions: 2, chAddr: testenv.ClickHouseAddr(t), conn: conn, db: db,
		logs: &ingesttest.LogBuffer{}}
	// Topics on the private broker, which goes with the test: no clean-up.
	h.topic, h.dlqTopic = privateTopic(t, brokers, "ready", 2), privateTopic(t, brokers, "ready-dlq", 1)
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
	cfg, k := h.configs()
	cfg.CommitInterval = time.Second                                     // the default
	cfg.DrainTimeout, cfg.ShutdownTimeout = 2*time.Second, 5*time.Second // the broker is gone when the test stops it
	msgs := ingesttest.Fixture{N: 200, Users: 10, Prefix: "ready"}.Messages()
	ingesttest.Produce(t, h.brokers, h.topic, msgs)
	r := h.start(cfg, k, ingest.Deps{})
	h.waitDrained(time.Minute)
	ingesttest.WaitFor(t, 30*time.Second, "/readyz 200", func() bool {
		code, _ := r.get(t, "/readyz")
		return code == 200
	})

	kill()
	lost := time.Now()
	var body string
	ingesttest.WaitFor(t, time.Minute, "/readyz 503 after the broker was lost", func() bool {
		var code int
		code, body = r.get(t, "/readyz")
		return code == 503
	})
	t.Logf("/readyz 503 %s after the broker was killed (commit_interval %s): %s",
		time.Since(lost).Round(10*time.Millisecond), cfg.CommitInterval, strings.TrimSpace(body))
	if !strings.Contains(body, "offset_commit") && !strings.Contains(body, "fetch ") {
		t.Errorf("/readyz %q does not name the failing commits or fetches", body)
	}
	select {
	case err := <-r.done:
		close(r.done)
		t.Errorf("the pipeline stopped when the broker was lost: %v", err)
	default:
	}
}
