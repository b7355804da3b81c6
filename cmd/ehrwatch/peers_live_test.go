package main

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

func TestPeersConfigValidate(t *testing.T) {
	if err := DefaultPeersConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	if DefaultPeersConfig().Mode != "group" {
		t.Errorf("default mode %q, want group (findings independent of the partition count)", DefaultPeersConfig().Mode)
	}
	c := PeersConfig{Mode: "cluster", Topic: "a/b", StallAfter: -time.Second, ReplicationFactor: 0}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad mode and stall_after accepted")
	}
	for _, want := range []string{"mode", "topic", "retention", "replication_factor", "stall_after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	cfg := DefaultConfig()
	cfg.Peers.Mode = "bogus"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "peers.mode") {
		t.Errorf("Config.Validate: %v, want an error naming peers.mode", err)
	}
	// The topic is derived from the consumer group, so two deployments
	// (or parallel tests) on one cluster do not share it.
	if got := DefaultPeersConfig().topicName("ward-a"); got != "ward-a.peers" {
		t.Errorf("derived topic %q, want ward-a.peers", got)
	}
	cfg = DefaultConfig()
	cfg.Kafka.GroupID = "ehr watch" // a valid group id, not a valid topic prefix
	cfg.Peers.Retention = 20 * 24 * time.Hour
	err = cfg.Validate()
	for _, want := range []string{"peers.topic", "set peers.topic", "peers.retention", "peer_window_days"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Config.Validate: %v, want it to say %s", err, want)
		}
	}
	cfg = DefaultConfig()
	cfg.Peers.Topic = cfg.Kafka.DLQTopic
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "its own") {
		t.Errorf("peers.topic = the DLQ topic: %v", err)
	}
	cfg = DefaultConfig()
	cfg.Peers.Mode, cfg.Kafka.GroupID, cfg.Peers.Retention = "partition", "ehr watch", time.Hour
	if err := cfg.Validate(); err != nil {
		t.Errorf("mode partition needs no peers topic: %v", err)
	}
}

// TestEnsurePeersTopic: `ehrwatch run` creates a missing peers topic with
// one partition and peers.retention, accepts it on the next start, and
// refuses a topic with two partitions or a retention shorter than
// peers.retention (the test broker's default is 24 hours).
func TestEnsurePeersTopic(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs Kafka")
	}
	brokers := testenv.Kafka(t)
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers = []string{brokers}
	ctx := context.Background()
	log := zerolog.Nop()
	c := DefaultPeersConfig()

	c.Topic = testenv.NewTopic(t, brokers, 1) + ".peers"
	testenv.DeleteTopicAtEnd(t, brokers, c.Topic)
	for i := range 2 { // created, then found as it is
		if err := ensurePeersTopic(ctx, kc, c, log); err != nil {
			t.Fatalf("ensure (%d): %v", i, err)
		}
	}
	cl := &kafka.Client{Addr: kafka.TCP(brokers), Timeout: 10 * time.Second, Transport: &kafka.Transport{}} // not the default transport: its metadata is cached
	md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{c.Topic}})
	if err != nil || len(md.Topics) != 1 || len(md.Topics[0].Partitions) != 1 {
		t.Fatalf("created topic: %+v, %v; want one partition", md, err)
	}
	res, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: c.Topic, ConfigNames: []string{"retention.ms"}}}})
	if err != nil || len(res.Resources) != 1 || len(res.Resources[0].ConfigEntries) != 1 ||
		res.Resources[0].ConfigEntries[0].ConfigValue != strconv.FormatInt(DefaultPeersRetention.Milliseconds(), 10) {
		t.Fatalf("created topic's retention.ms: %+v, %v; want %d", res, err, DefaultPeersRetention.Milliseconds())
	}

	c.Topic = testenv.NewTopic(t, brokers, 2)
	if err := ensurePeersTopic(ctx, kc, c, log); err == nil || !strings.Contains(err.Error(), "has 2 partitions") {
		t.Errorf("two partitions: %v, want a refusal", err)
	}
	c.Topic = testenv.NewTopic(t, brokers, 1) // the broker's 24-hour retention
	err = ensurePeersTopic(ctx, kc, c, log)
	if err == nil || !strings.Contains(err.Error(), "retention.ms is 86400000") || !strings.Contains(err.Error(), "peers.retention") {
		t.Errorf("24-hour retention: %v, want a refusal naming retention.ms and peers.retention", err)
	}
	c.Retention = 12 * time.Hour
	if err := ensurePeersTopic(ctx, kc, c, log); err != nil {
		t.Errorf("24-hour retention, 12 hours required: %v", err)
	}
}

// TestPeerJudgeNamesTheSlowPartitions: with a day waiting and the slowest
// watermark unmoved for stall_after, /readyz's detail names the partitions
// holding it back (here one that never handed anything over).
func TestPeerJudgeNamesTheSlowPartitions(t *testing.T) {
	stage, err := detectors.NewPeerStage(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Env{}, 2)
	if err != nil {
		t.Fatal(err)
	}
	day := time.Date(2026, 10, 26, 0, 0, 0, 0, time.UTC)
	stage.Add(0, detectors.PeerBatch{Days: []detectors.PeerDay{{Facility: "f", User: "u1", Day: int32(day.Unix() / 86400),
		Start: day.UnixNano(), End: day.Add(24 * time.Hour).UnixNano(), Distinct: 30, Accesses: 30, Value: 30}}}, day.Add(25*time.Hour))
	if fs := stage.Ready(); len(fs) != 0 || stage.Pending() == 0 {
		t.Fatalf("judged %d findings with partition 1 silent; pending %d", len(fs), stage.Pending())
	}
	m, err := newPeerMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	j := &peerJudge{cfg: PeersConfig{StallAfter: 30 * time.Minute}, metrics: m, names: []string{"ehr/0", "ehr/1"},
		stage: stage, wms: []time.Time{day.Add(25 * time.Hour), {}}, movedAt: time.Now()}
	if d := j.detail(); d != "" {
		t.Errorf("detail %q before stall_after", d)
	}
	j.movedAt = time.Now().Add(-time.Hour)
	d := j.detail()
	if !strings.Contains(d, "ehr/1") || strings.Contains(d, "ehr/0") {
		t.Errorf("detail %q, want it to name ehr/1 only", d)
	}
}

// TestPeerJudgeMarksIdlePartitions: a partition whose watermark has not
// moved for peers.idle_timeout while another's did gets a marker, through
// the peers topic, moving it to the slowest active partition's watermark;
// read back, it lets the stage judge the day without the idle partition.
func TestPeerJudgeMarksIdlePartitions(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	topic := testenv.NewTopic(t, brokers, 1)
	kc := ingest.DefaultKafkaConfig()
	kc.Brokers = strings.Split(brokers, ",")
	m, err := newPeerMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	sender, err := newPeerSender(kc, topic, m)
	if err != nil {
		t.Fatal(err)
	}
	defer sender.Close()
	day := time.Date(2026, 10, 26, 0, 0, 0, 0, time.UTC)
	now := time.Now()
	j := &peerJudge{cfg: PeersConfig{IdleTimeout: time.Minute}, metrics: m, send: sender, names: []string{"ehr/0", "ehr/1", "ehr/2"},
		wms:     []time.Time{day.Add(26 * time.Hour), day.Add(25 * time.Hour), {}},
		wmMoved: []time.Time{now, now.Add(-2 * time.Minute), now.Add(-2 * time.Minute)}}
	j.markIdle(context.Background())
	// ehr/0 is active: ehr/1 (behind it) and ehr/2 (never heard of) are idle.
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: kc.Brokers, Topic: topic, Partition: 0})
	defer r.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	stage, err := detectors.NewPeerStage(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Env{}, 3)
	if err != nil {
		t.Fatal(err)
	}
	stage.Add(0, detectors.PeerBatch{Days: []detectors.PeerDay{{Facility: "f", User: "u1", Day: int32(day.Unix() / 86400),
		Start: day.UnixNano(), End: day.Add(24 * time.Hour).UnixNano(), Distinct: 30, Accesses: 30, Value: 30}}}, j.wms[0])
	stage.Add(1, detectors.PeerBatch{}, j.wms[1])
	got := map[int]time.Time{}
	for len(got) < 2 {
		msg, err := r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("reading the idle markers: %v (got %v)", err, got)
		}
		var rec peerRecord
		if err := json.Unmarshal(msg.Value, &rec); err != nil {
			t.Fatal(err)
		}
		if !rec.Idle || rec.Topic != "ehr" {
			t.Fatalf("record %+v, want an idle marker", rec)
		}
		got[rec.Partition] = rec.Watermark
		stage.Add(rec.Partition, rec.Batch, rec.Watermark)
	}
	for _, p := range []int{1, 2} {
		if !got[p].Equal(j.wms[0]) {
			t.Errorf("marker for ehr/%d at %v, want the active partition's watermark %v", p, got[p], j.wms[0])
		}
	}
	if _, ok := got[0]; ok {
		t.Error("the active partition got an idle marker")
	}
	if stage.Ready(); stage.Pending() != 0 {
		t.Errorf("%d days still pending after the idle markers", stage.Pending())
	}
}
