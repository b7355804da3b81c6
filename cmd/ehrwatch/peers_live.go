package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// PeersConfig says where `ehrwatch run` finds the peers that volume and
// break_glass compare a user with (docs/detectors.md, "Results independent
// of partitioning").
type PeersConfig struct {
	// Mode is group (the whole peer group, the default: every partition
	// hands its closed days and its watermark over through Topic, and one
	// peer stage judges a day once every partition has passed it, so the
	// findings do not depend on the partition count) or partition (the
	// users of the same Kafka partition: no peers topic, but volume and
	// break_glass findings change with the number of partitions).
	Mode string `yaml:"mode"`
	// Topic is the peers topic (mode group); empty: kafka.group_id +
	// ".peers", so deployments with their own consumer groups on one
	// cluster do not share it. `ehrwatch run` creates it when missing, with
	// one partition, Retention and ReplicationFactor, and refuses to start
	// when it has more than one partition, a shorter retention, size-based
	// retention or compaction.
	Topic string `yaml:"topic"`
	// Retention is the peers topic's retention.ms when run creates it, and
	// the least it accepts on an existing topic: at least
	// detection.detectors.break_glass.peer_window_days + 1 days (a new
	// stage owner rebuilds the 30-day break-glass comparison from the
	// topic), plus the longest the slowest partition may lag behind; the
	// default, 40 days, allows 9 days of lag.
	Retention time.Duration `yaml:"retention"`
	// ReplicationFactor of the peers topic when run creates it; -1: the
	// brokers' default.replication.factor.
	ReplicationFactor int `yaml:"replication_factor"`
	// GroupID is the peer stage's consumer group (mode group); empty:
	// kafka.group_id + "-peers".
	GroupID string `yaml:"group_id"`
	// StallAfter: when the peer stage has days waiting and the slowest
	// partition's watermark has not moved for this long, /readyz names the
	// partitions holding the judgement back (readiness is not affected).
	StallAfter time.Duration `yaml:"stall_after"`
	// IdleTimeout: a partition whose watermark has not moved for this long
	// while others' did is taken as idle: the stage owner produces a marker
	// moving it to the slowest active partition's watermark, so days are
	// judged without it; what it hands over later for a judged day is
	// dropped. 0: wait for every partition, however long.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// DefaultPeersRetention is the peers topic's default retention: the
// 30-day break-glass peer window, the day being judged, and 9 days for
// the slowest partition's lag.
const DefaultPeersRetention = 40 * 24 * time.Hour

// DefaultPeersConfig compares with the whole peer group.
func DefaultPeersConfig() PeersConfig {
	return PeersConfig{Mode: "group", Retention: DefaultPeersRetention, ReplicationFactor: -1,
		StallAfter: 30 * time.Minute, IdleTimeout: 6 * time.Hour}
}

// Validate reports every bad key.
func (c PeersConfig) Validate() error {
	var errs []error
	if c.Mode != "partition" && c.Mode != "group" {
		errs = append(errs, schemas.FieldErrorf("mode", "want group or partition, got %q", c.Mode))
	}
	if c.Topic != "" {
		if err := validTopicName(c.Topic); err != nil {
			errs = append(errs, schemas.FieldErrorf("topic", "%v", err))
		}
	}
	if c.Retention <= 0 {
		errs = append(errs, schemas.FieldErrorf("retention", "must be > 0, got %s", c.Retention))
	}
	if c.ReplicationFactor != -1 && (c.ReplicationFactor < 1 || c.ReplicationFactor > math.MaxInt16) {
		errs = append(errs, schemas.FieldErrorf("replication_factor", "want -1 (the brokers' default) or 1..%d, got %d", math.MaxInt16, c.ReplicationFactor))
	}
	if c.StallAfter <= 0 {
		errs = append(errs, schemas.FieldErrorf("stall_after", "must be > 0, got %s", c.StallAfter))
	}
	if c.IdleTimeout < 0 {
		errs = append(errs, schemas.FieldErrorf("idle_timeout", "must be ≥ 0 (0: never), got %s", c.IdleTimeout))
	}
	return errors.Join(errs...)
}

// ValidateWith checks the keys that depend on other sections (mode
// group): the peers topic's name (derived from kafka.group_id when
// empty), that it is neither a source nor the DLQ topic, and that
// retention covers break_glass's peer window plus a day.
func (c PeersConfig) ValidateWith(kc ingest.KafkaConfig, ecfg detectors.EngineConfig) error {
	if c.Mode != "group" {
		return nil
	}
	var errs []error
	topic := c.topicName(kc.GroupID)
	if c.Topic == "" {
		if err := validTopicName(topic); err != nil {
			errs = append(errs, schemas.FieldErrorf("topic", "derived from kafka.group_id as %q: %v; set peers.topic", topic, err))
		}
	}
	if slices.Contains(kc.Topics, topic) || topic == kc.DLQTopic {
		errs = append(errs, schemas.FieldErrorf("topic", "%q is also a source or the DLQ topic; the peers topic needs its own", topic))
	}
	if min := minPeersRetention(ecfg); c.Retention > 0 && c.Retention < min {
		errs = append(errs, schemas.FieldErrorf("retention", "%s is shorter than detection.detectors.break_glass.peer_window_days plus one day (%s): a new stage owner could not rebuild the break-glass comparison", c.Retention, min))
	}
	return errors.Join(errs...)
}

// minPeersRetention is break_glass's peer window plus the day judged.
func minPeersRetention(ecfg detectors.EngineConfig) time.Duration {
	days := detectors.DefaultBreakGlassConfig().PeerWindowDays
	if b, ok := ecfg.Detectors["break_glass"].(*detectors.BreakGlassConfig); ok {
		days = b.PeerWindowDays
	}
	return time.Duration(days+1) * 24 * time.Hour
}

// topicName returns the peers topic: Topic, or kafka.group_id + ".peers".
func (c PeersConfig) topicName(kafkaGroup string) string {
	if c.Topic != "" {
		return c.Topic
	}
	return kafkaGroup + ".peers"
}

// validTopicName applies Kafka's rules for topic names.
func validTopicName(s string) error {
	if s == "" || s == "." || s == ".." {
		return fmt.Errorf("%q is not a valid Kafka topic name", s)
	}
	if len(s) > 249 {
		return fmt.Errorf("a Kafka topic name has at most 249 characters, got %d", len(s))
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not a valid Kafka topic name (letters, digits, '.', '_' and '-' only)", s)
		}
	}
	return nil
}

// group returns the peer stage's consumer group.
func (c PeersConfig) group(kafkaGroup string) string {
	if c.GroupID != "" {
		return c.GroupID
	}
	return kafkaGroup + "-peers"
}

// peerRecord is one message of the peers topic: what a source partition's
// engine handed over, and, on the last record of a hand-over, its
// watermark after it.
type peerRecord struct {
	Topic     string              `json:"topic"`
	Partition int                 `json:"partition"`
	Watermark time.Time           `json:"watermark,omitzero"`
	Batch     detectors.PeerBatch `json:"batch"`
	// Idle marks a marker the stage owner produced for an idle partition
	// (peers.idle_timeout), not the partition itself.
	Idle bool `json:"idle,omitempty"`
}

// peerRecordDays bounds the days (and activities) per record, so a record
// of a large partition's day stays well below Kafka's 1 MB message limit.
const peerRecordDays = 200

// markerStep is how far a partition's watermark must move (to the next
// multiple) before it is handed over without days: every day end the stage
// waits for (facility-local and UTC midnights) is a multiple of 15 minutes,
// so the marker that passes a day end is sent with the event that moved
// the watermark past it, and which markers are sent depends on the stream
// only.
const markerStep = int64(15 * time.Minute)

// peerSender produces source partitions' hand-overs to the peers topic,
// synchronously (acknowledged by all in-sync replicas), on partition 0.
type peerSender struct {
	w       *kafka.Writer
	metrics *peerMetrics
}

func newPeerSender(kc ingest.KafkaConfig, topic string, m *peerMetrics) (*peerSender, error) {
	tr, err := kc.Transport()
	if err != nil {
		return nil, err
	}
	return &peerSender{metrics: m, w: &kafka.Writer{
		Addr:         kafka.TCP(kc.Brokers...),
		Topic:        topic,
		Balancer:     kafka.BalancerFunc(func(kafka.Message, ...int) int { return 0 }),
		RequiredAcks: kafka.RequireAll,
		MaxAttempts:  3,
		BatchSize:    1000,
		BatchBytes:   900 << 10,
		BatchTimeout: time.Millisecond,
		ReadTimeout:  kc.RequestTimeout,
		WriteTimeout: kc.RequestTimeout,
		Transport:    tr,
	}}, nil
}

func (s *peerSender) Close() error { return s.w.Close() }

// send produces one hand-over as records of at most peerRecordDays days,
// the watermark on the last one only (so the stage never judges with a
// watermark before it holds every day the hand-over carries).
func (s *peerSender) send(ctx context.Context, topic string, partition int, b detectors.PeerBatch, wm time.Time) error {
	return s.sendRecord(ctx, peerRecord{Topic: topic, Partition: partition, Watermark: wm, Batch: b})
}

func (s *peerSender) sendRecord(ctx context.Context, last peerRecord) error {
	topic, partition, b := last.Topic, last.Partition, last.Batch
	var msgs []kafka.Message
	add := func(r peerRecord) error {
		v, err := json.Marshal(&r)
		if err != nil {
			return err
		}
		msgs = append(msgs, kafka.Message{Key: []byte(topic + "/" + strconv.Itoa(partition)), Value: v})
		return nil
	}
	for len(b.Days) > peerRecordDays || len(b.Activity) > peerRecordDays {
		part := detectors.PeerBatch{Days: b.Days[:min(len(b.Days), peerRecordDays)], Activity: b.Activity[:min(len(b.Activity), peerRecordDays)]}
		b.Days, b.Activity = b.Days[len(part.Days):], b.Activity[len(part.Activity):]
		if err := add(peerRecord{Topic: topic, Partition: partition, Batch: part}); err != nil {
			return err
		}
	}
	last.Batch = b
	if err := add(last); err != nil {
		return err
	}
	err := s.w.WriteMessages(ctx, msgs...)
	if s.metrics != nil {
		if err != nil {
			s.metrics.sent.WithLabelValues("error").Inc()
		} else {
			s.metrics.sent.WithLabelValues("ok").Add(float64(len(msgs)))
		}
	}
	return err
}

// peerSource is a partition's detectors in mode group: after every event
// it hands what the engine deferred (closed days, activity, break-glass
// findings) and its watermark to the peers topic, before the event's
// findings go on, so before its offset can be committed. A hand-over that
// cannot be produced is kept and retried with the next event; a snapshot
// is refused while one is kept, so a snapshot never reflects days that
// are not in the topic (after a crash, the partition is re-read from an
// older snapshot and hands them over again; the stage ignores repeats).
type peerSource struct {
	*partitionEngine
	topic     string
	partition int
	send      *peerSender
	log       zerolog.Logger

	pending detectors.PeerBatch
	wm      time.Time // the newest watermark not yet produced
	sentWM  int64     // the last produced watermark, in markerStep units
	failed  bool
}

var _ ingest.StatefulProcessor = (*peerSource)(nil)

func (p *peerSource) Process(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	fs, err := p.partitionEngine.Process(ctx, ev)
	b := p.partitionEngine.TakePeers()
	p.pending.Days = append(p.pending.Days, b.Days...)
	p.pending.Activity = append(p.pending.Activity, b.Activity...)
	p.pending.BreakGlass = append(p.pending.BreakGlass, b.BreakGlass...)
	p.wm = p.partitionEngine.Watermark()
	if p.empty() && (p.wm.IsZero() || p.wm.UnixNano()/markerStep <= p.sentWM) {
		return fs, err
	}
	// Not bound to the generation: a rebalance ends ctx while the
	// partition drains, and the hand-over must still go out before the
	// drained offsets are committed.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), peerSendTimeout)
	defer cancel()
	if serr := p.flush(sctx); serr != nil {
		err = errors.Join(err, serr)
	}
	return fs, err
}

// peerSendTimeout bounds one hand-over (kafka-go retries inside it).
const peerSendTimeout = 10 * time.Second

func (p *peerSource) empty() bool {
	return len(p.pending.Days) == 0 && len(p.pending.Activity) == 0 && len(p.pending.BreakGlass) == 0
}

func (p *peerSource) flush(ctx context.Context) error {
	if err := p.send.send(ctx, p.topic, p.partition, p.pending, p.wm); err != nil {
		if !p.failed {
			p.log.Warn().Str("error", err.Error()).Msg("peer hand-over not produced; kept and retried with the next event")
		}
		p.failed = true
		return fmt.Errorf("peers: hand-over to the peers topic failed (kept): %w", err)
	}
	p.failed = false
	p.pending = detectors.PeerBatch{}
	if !p.wm.IsZero() {
		p.sentWM = p.wm.UnixNano() / markerStep
	}
	return nil
}

// Snapshot produces what is kept first: a snapshot must not reflect days
// that are not in the peers topic.
func (p *peerSource) Snapshot(w io.Writer) error {
	if !p.empty() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*peerSendTimeout)
		err := p.flush(ctx)
		cancel()
		if err != nil {
			return err
		}
	}
	return p.partitionEngine.Snapshot(w)
}

// peerMetrics are the peer stage's metrics (mode group).
type peerMetrics struct {
	sent      *prometheus.CounterVec
	pending   prometheus.Gauge
	heldBack  prometheus.Gauge
	judged    prometheus.Counter
	idle      prometheus.Counter
	watermark *prometheus.GaugeVec
}

func newPeerMetrics(reg prometheus.Registerer) (*peerMetrics, error) {
	m := &peerMetrics{
		sent: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ehrwatch_peers_records_produced_total",
			Help: "Records produced to the peers topic by this instance's partitions, by result."}, []string{"result"}),
		pending: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ehrwatch_peers_pending",
			Help: "Facility-days and break-glass findings the peer stage holds until every partition's watermark passes them (0 on instances that do not own the stage)."}),
		heldBack: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ehrwatch_peers_held_back_seconds",
			Help: "How long the peer stage has had work pending while the slowest partition's watermark did not move."}),
		judged: prometheus.NewCounter(prometheus.CounterOpts{Name: "ehrwatch_peers_findings_total",
			Help: "Findings the peer stage judged and stored (volume, and break_glass versions with the peer comparison)."}),
		idle: prometheus.NewCounter(prometheus.CounterOpts{Name: "ehrwatch_peers_idle_markers_total",
			Help: "Markers the peer stage produced for partitions idle longer than peers.idle_timeout."}),
		watermark: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ehrwatch_peers_source_watermark_seconds",
			Help: "Each source partition's watermark as the peer stage last received it (unix seconds of event time)."}, []string{"topic", "partition"}),
	}
	for _, c := range []prometheus.Collector{m.sent, m.pending, m.heldBack, m.judged, m.idle, m.watermark} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// peerJudge is the peer stage of `ehrwatch run` (mode group). It consumes
// the peers topic in its own consumer group, so one instance at a time
// owns it. When it is assigned the topic's partition it reads the topic
// from its first offset, feeding a fresh detectors.PeerStage, and stores
// (then alerts on) what the stage judges from the committed offset on;
// what it judges below the committed offset the previous owner stored.
// After each stored judgement it commits the offset after the record.
type peerJudge struct {
	cfg       PeersConfig
	kc        ingest.KafkaConfig
	ecfg      detectors.EngineConfig
	env       detectors.Env
	newEngine func() (*detectors.Engine, error)
	writer    *store.Writer
	observe   func(context.Context, []schemas.Finding) error
	send      *peerSender // idle markers
	health    *ingest.Health
	metrics   *peerMetrics
	log       zerolog.Logger

	mu      sync.Mutex
	sources map[string]int // "topic/partition" → source index
	names   []string
	stage   *detectors.PeerStage
	wms     []time.Time
	wmMoved []time.Time // when each source's own watermark last moved
	movedAt time.Time   // when the slowest watermark last moved
	minWM   time.Time
}

// sourcePartitions lists the source topics' partitions.
func sourcePartitions(ctx context.Context, kc ingest.KafkaConfig) ([]string, error) {
	d, err := kc.Dialer()
	if err != nil {
		return nil, err
	}
	var out []string
	for _, t := range kc.Topics {
		ps, err := d.LookupPartitions(ctx, "tcp", kc.Brokers[0], t)
		if err != nil {
			return nil, fmt.Errorf("peers: partitions of %s: %w", t, err)
		}
		if len(ps) == 0 {
			return nil, fmt.Errorf("peers: topic %s has no partitions", t)
		}
		n := 0
		for _, p := range ps {
			n = max(n, p.ID+1)
		}
		for i := 0; i < n; i++ {
			out = append(out, t+"/"+strconv.Itoa(i))
		}
	}
	return out, nil
}

// run consumes the peers topic until ctx ends.
func (j *peerJudge) run(ctx context.Context) error {
	names, err := sourcePartitions(ctx, j.kc)
	if err != nil {
		return err
	}
	j.names = names
	j.sources = map[string]int{}
	for i, n := range names {
		j.sources[n] = i
	}
	d, err := j.kc.Dialer()
	if err != nil {
		return err
	}
	j.health.SetDetail("peers", j.detail)
	cg, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
		ID: j.cfg.group(j.kc.GroupID), Brokers: j.kc.Brokers, Dialer: d, Topics: []string{j.cfg.Topic},
		HeartbeatInterval: j.kc.HeartbeatInterval, SessionTimeout: j.kc.SessionTimeout,
		RebalanceTimeout: j.kc.RebalanceTimeout, JoinGroupBackoff: j.kc.JoinGroupBackoff,
		StartOffset: kafka.FirstOffset, Timeout: j.kc.RequestTimeout,
	})
	if err != nil {
		return fmt.Errorf("peers: consumer group: %w", err)
	}
	defer cg.Close()
	for {
		gen, err := cg.Next(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			j.log.Warn().Str("error", err.Error()).Msg("peer stage: joining its consumer group failed; retrying")
			if !sleepCtx(ctx, time.Second) {
				return nil
			}
			continue
		}
		for _, a := range gen.Assignments[j.cfg.Topic] {
			if a.ID != 0 {
				continue
			}
			committed := max(a.Offset, 0)
			gen.Start(func(gctx context.Context) { j.consume(gctx, gen, committed) })
		}
	}
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// consume rebuilds the stage from the topic's start and judges from
// committed on, until the generation ends.
func (j *peerJudge) consume(ctx context.Context, gen *kafka.Generation, committed int64) {
	stage, err := detectors.NewPeerStage(j.ecfg, j.env, len(j.names))
	if err != nil {
		j.log.Error().Str("error", err.Error()).Msg("peer stage")
		return
	}
	eng, err := j.newEngine()
	if err != nil {
		j.log.Error().Str("error", err.Error()).Msg("peer stage: engine")
		return
	}
	defer eng.Close()
	j.mu.Lock()
	j.stage, j.wms, j.movedAt, j.minWM = stage, make([]time.Time, len(j.names)), time.Now(), time.Time{}
	j.wmMoved = make([]time.Time, len(j.names))
	for i := range j.wmMoved {
		j.wmMoved[i] = j.movedAt
	}
	j.mu.Unlock()
	lastIdleCheck := time.Now()
	defer func() {
		j.log.Info().Msg("peer stage released")
		j.mu.Lock()
		j.stage = nil
		j.mu.Unlock()
		j.metrics.pending.Set(0)
		j.metrics.heldBack.Set(0)
	}()
	d, _ := j.kc.Dialer()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: j.kc.Brokers, Topic: j.cfg.Topic, Partition: 0, Dialer: d,
		MaxBytes: 16 << 20, MaxWait: 500 * time.Millisecond})
	defer r.Close()
	if err := r.SetOffset(kafka.FirstOffset); err != nil {
		j.log.Error().Str("error", err.Error()).Msg("peer stage: cannot position its reader")
		return
	}
	j.log.Info().Int("sources", len(j.names)).Int64("committed", committed).Msg("peer stage assigned; rebuilding from the peers topic")
	next := committed // the offset to commit: every record below it judged and stored
	done := committed
	// commit commits next. A failed commit is not the end of the stage:
	// returning would leave this generation's only consumer of the peers
	// topic stopped while the generation itself lives on (a broker
	// restart need not end it), so nothing would be judged until the
	// next rebalance. It is retried with the next commit instead; should
	// this owner go first, the next one judges from the last commit again.
	commitFailed := false
	commit := func() {
		if next <= done {
			return
		}
		err := gen.CommitOffsets(map[string]map[int]int64{j.cfg.Topic: {0: next}})
		if err == nil {
			if commitFailed {
				j.log.Info().Msg("peer stage: committing again")
			}
			done, commitFailed = next, false
			return
		}
		if !commitFailed && ctx.Err() == nil {
			j.log.Warn().Str("error", err.Error()).Msg("peer stage: commit failed; retried with the next judgement or idle second")
		}
		commitFailed = true
	}
	for {
		if j.cfg.IdleTimeout > 0 && time.Since(lastIdleCheck) >= time.Second {
			lastIdleCheck = time.Now()
			j.markIdle(ctx)
		}
		fctx, cancel := context.WithTimeout(ctx, time.Second)
		m, err := r.FetchMessage(fctx)
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if errors.Is(err, context.DeadlineExceeded) {
				// Nothing new for a second: commit what is judged.
				commit()
				continue
			}
			// kafka-go's reader reconnects by itself; an error here is
			// reported and the fetch tried again, for the same reason a
			// failed commit does not end the stage.
			j.log.Warn().Str("error", err.Error()).Msg("peer stage: fetch failed; retrying")
			if !sleepCtx(ctx, time.Second) {
				return
			}
			continue
		}
		var rec peerRecord
		if err := json.Unmarshal(m.Value, &rec); err != nil {
			j.log.Warn().Int64("offset", m.Offset).Msg("peer stage: undecodable record skipped")
			continue
		}
		src, ok := j.sources[rec.Topic+"/"+strconv.Itoa(rec.Partition)]
		if !ok {
			j.log.Warn().Str("topic", rec.Topic).Int("partition", rec.Partition).
				Msg("peer stage: record from a partition it does not know (partitions added? restart to count them)")
			continue
		}
		j.mu.Lock()
		stage.Add(src, rec.Batch, rec.Watermark)
		if !rec.Watermark.IsZero() && rec.Watermark.After(j.wms[src]) {
			j.wms[src] = rec.Watermark
			if !rec.Idle {
				j.wmMoved[src] = time.Now()
			}
			j.metrics.watermark.WithLabelValues(rec.Topic, strconv.Itoa(rec.Partition)).Set(float64(rec.Watermark.Unix()))
			if mw := minTime(j.wms); !mw.Equal(j.minWM) {
				j.minWM, j.movedAt = mw, time.Now()
			}
		}
		fs := stage.Ready()
		j.metrics.pending.Set(float64(stage.Pending()))
		j.mu.Unlock()
		if m.Offset < committed {
			continue // judged and stored by a previous owner
		}
		if len(fs) > 0 {
			if !j.store(ctx, eng.AdmitPeerFindings(fs), m.Offset) {
				return
			}
		}
		next = m.Offset + 1
		if len(fs) > 0 {
			commit()
		}
	}
}

// markIdle produces, for every partition whose watermark has not moved
// for peers.idle_timeout while another's did, a marker moving it to the
// slowest active partition's watermark. The marker goes through the peers
// topic like any hand-over, so a new stage owner re-reading the topic
// judges with it exactly as this one did.
func (j *peerJudge) markIdle(ctx context.Context) {
	now := time.Now()
	j.mu.Lock()
	var target time.Time
	for i, w := range j.wms {
		if now.Sub(j.wmMoved[i]) < j.cfg.IdleTimeout && !w.IsZero() && (target.IsZero() || w.Before(target)) {
			target = w
		}
	}
	var idle []int
	if !target.IsZero() {
		for i, w := range j.wms {
			if now.Sub(j.wmMoved[i]) >= j.cfg.IdleTimeout && w.Before(target) {
				idle = append(idle, i)
			}
		}
	}
	j.mu.Unlock()
	for _, i := range idle {
		topic, ps, _ := strings.Cut(j.names[i], "/")
		part, _ := strconv.Atoi(ps)
		sctx, cancel := context.WithTimeout(ctx, peerSendTimeout)
		err := j.send.sendRecord(sctx, peerRecord{Topic: topic, Partition: part, Watermark: target, Idle: true})
		cancel()
		if err != nil {
			j.log.Warn().Str("error", err.Error()).Msg("peer stage: idle marker not produced; retrying")
			return
		}
		j.metrics.idle.Inc()
		j.log.Warn().Str("topic", topic).Int("partition", part).Dur("idle", now.Sub(j.wmMoved[i]).Round(time.Second)).
			Time("watermark", target).Msg("peer stage: partition idle; days are judged without it, and what it hands over later for them is dropped")
	}
}

// store writes the judged findings and hands them to alerting, retrying
// until both succeed or ctx ends (the generation: the next owner judges
// them again). The rows carry the peers topic's position with the highest
// offset, so in ReplacingMergeTree(kafka_offset) the stage's version of a
// break-glass finding wins over those its partition raised at the access.
func (j *peerJudge) store(ctx context.Context, fs []schemas.Finding, offset int64) bool {
	b := &store.Batch{Findings: peerStageRows(j.cfg.Topic, fs)}
	pause := 200 * time.Millisecond
	for {
		err := j.writer.Write(ctx, b)
		if err == nil {
			err = j.observe(ctx, fs)
		}
		if err == nil {
			j.health.SetCondition("peers_store", "")
			j.metrics.judged.Add(float64(len(fs)))
			return true
		}
		j.health.SetCondition("peers_store", "peer stage: storing judged findings failed (retrying): "+ingest.Redact(err))
		j.log.Warn().Int64("offset", offset).Str("error", ingest.Redact(err)).Msg("peer stage: storing judged findings failed; retrying")
		if !sleepCtx(ctx, pause) {
			return false
		}
		pause = min(2*pause, 10*time.Second)
	}
}

// peerStageOffset is the kafka_offset of every row the peer stage
// stores. The findings table is a ReplacingMergeTree(kafka_offset), where
// the row with the highest offset is a finding's version, and a partition
// stores a finding's versions at the offsets of the events that produced
// them; the stage judges a finding (break_glass with the peer comparison,
// volume) only once its window is closed in every partition, so its
// version is the last and must win, whatever the offset of the event that
// let the stage judge it (in the demo, an event of any partition).
const peerStageOffset = math.MaxInt64

// peerStageRows positions the stage's findings for storage.
func peerStageRows(topic string, fs []schemas.Finding) []store.FindingRow {
	rows := make([]store.FindingRow, len(fs))
	for i := range fs {
		rows[i] = store.FindingRow{Position: store.Position{Topic: topic, Partition: 0, Offset: peerStageOffset}, Finding: &fs[i]}
	}
	return rows
}

func minTime(ts []time.Time) time.Time {
	m := ts[0]
	for _, t := range ts[1:] {
		if t.Before(m) {
			m = t
		}
	}
	return m
}

// detail is the /readyz line (readiness unaffected): the partitions that
// hold the peer judgement back once they have not moved for stall_after.
func (j *peerJudge) detail() string {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.stage == nil || j.stage.Pending() == 0 {
		j.metrics.heldBack.Set(0)
		return ""
	}
	held := time.Since(j.movedAt)
	j.metrics.heldBack.Set(held.Seconds())
	if held < j.cfg.StallAfter {
		return ""
	}
	var slow []string
	for i, w := range j.wms {
		if w.Equal(j.minWM) {
			slow = append(slow, j.names[i])
		}
	}
	const show = 10
	more := ""
	if len(slow) > show {
		more, slow = fmt.Sprintf(" and %d more", len(slow)-show), slow[:show]
	}
	return fmt.Sprintf("%d day(s) wait for %s%s, whose watermark has not moved for %s (idle or not consumed): volume findings and break-glass peer comparisons are held back",
		j.stage.Pending(), strings.Join(slow, ", "), more, held.Round(time.Second))
}
