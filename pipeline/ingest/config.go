package ingest

import (
	"errors"
	"fmt"
	"github.com/ehrwatch/ehrwatch/schemas"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// KafkaConfig is how ehrwatch consumes access events (the "kafka" section).
type KafkaConfig struct {
	// Brokers are bootstrap host:port pairs.
	Brokers []string `yaml:"brokers"`
	// GroupID is the consumer group; every ehrwatch instance of one
	// deployment uses the same id and Kafka spreads the partitions over them.
	GroupID string `yaml:"group_id"`
	// Topics are the access-event topics, keyed by user_id.
	Topics []string `yaml:"topics"`
	// StartOffset is where a group with no committed offset for a
	// partition starts: "first" (the oldest retained message) or "last"
	// (only messages produced from now on).
	StartOffset string `yaml:"start_offset"`
	// DLQTopic receives every message that cannot be decoded, unchanged,
	// with provenance headers. It must exist unless the brokers
	// auto-create topics.
	DLQTopic string `yaml:"dlq_topic"`
	// ClientID identifies ehrwatch in broker logs and quotas.
	ClientID string `yaml:"client_id"`

	// MinBytes and MaxBytes bound one fetch per partition; MaxWait is how
	// long the broker may wait for MinBytes to accumulate.
	MinBytes int           `yaml:"min_bytes"`
	MaxBytes int           `yaml:"max_bytes"`
	MaxWait  time.Duration `yaml:"max_wait"`
	// QueueCapacity is about how many fetched messages each partition may
	// hold ahead of processing, besides the fetch response being read
	// (handed over in slices of up to 256).
	QueueCapacity int `yaml:"queue_capacity"`

	// SessionTimeout: a member that has not sent a heartbeat for this long
	// is evicted from the group. The broker bounds it
	// (group.min/max.session.timeout.ms; 6s..30m by default).
	SessionTimeout time.Duration `yaml:"session_timeout"`
	// RebalanceTimeout is how long the coordinator waits for every member to
	// rejoin during a rebalance.
	RebalanceTimeout  time.Duration `yaml:"rebalance_timeout"`
	HeartbeatInterval time.Duration `yaml:"heartbeat_interval"`
	// JoinGroupBackoff is the pause before rejoining after a failed join.
	JoinGroupBackoff time.Duration `yaml:"join_group_backoff"`
	// DialTimeout bounds one connection attempt; RequestTimeout bounds one
	// coordinator request (offset commits, joins) and one DLQ produce.
	DialTimeout    time.Duration `yaml:"dial_timeout"`
	RequestTimeout time.Duration `yaml:"request_timeout"`

	TLS  credentials.TLS `yaml:"tls"`
	SASL SASLConfig      `yaml:"sasl"`
}

// SASLConfig authenticates to the brokers. Zero value: no SASL.
type SASLConfig struct {
	// Mechanism is "" (none), "plain", "scram-sha-256" or "scram-sha-512".
	// PLAIN sends the password in clear text: use it only with TLS.
	Mechanism    string `yaml:"mechanism"`
	Username     string `yaml:"username"`
	Password     string `yaml:"password"`
	PasswordFile string `yaml:"password_file"`
}

// The SASL mechanisms.
const (
	SASLPlain       = "plain"
	SASLSCRAMSHA256 = "scram-sha-256"
	SASLSCRAMSHA512 = "scram-sha-512"
)

// DefaultKafkaConfig consumes topic "ehr-access" from a local broker.
func DefaultKafkaConfig() KafkaConfig {
	return KafkaConfig{
		Brokers:           []string{"127.0.0.1:9092"},
		GroupID:           "ehrwatch",
		Topics:            []string{"ehr-access"},
		StartOffset:       "first",
		DLQTopic:          "ehr-access.dlq",
		ClientID:          "ehrwatch",
		MinBytes:          1,
		MaxBytes:          8 << 20,
		MaxWait:           500 * time.Millisecond,
		QueueCapacity:     1000,
		SessionTimeout:    30 * time.Second,
		RebalanceTimeout:  30 * time.Second,
		HeartbeatInterval: 3 * time.Second,
		JoinGroupBackoff:  2 * time.Second,
		DialTimeout:       10 * time.Second,
		RequestTimeout:    10 * time.Second,
	}
}

// Validate reports every bad setting, each naming its key relative to the
// kafka section.
func (c KafkaConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	if len(c.Brokers) == 0 {
		bad("brokers", "at least one host:port is required")
	}
	for i, b := range c.Brokers {
		if err := checkHostPort(b); err != nil {
			bad(fmt.Sprintf("brokers[%d]", i), "%v", err)
		}
	}
	if strings.TrimSpace(c.GroupID) == "" {
		bad("group_id", "required")
	}
	if len(c.Topics) == 0 {
		bad("topics", "at least one topic is required")
	}
	seen := map[string]bool{}
	for i, t := range c.Topics {
		if err := checkTopic(t); err != nil {
			bad(fmt.Sprintf("topics[%d]", i), "%v", err)
		}
		if seen[t] {
			bad(fmt.Sprintf("topics[%d]", i), "%q listed twice", t)
		}
		seen[t] = true
	}
	if c.StartOffset != "first" && c.StartOffset != "last" {
		bad("start_offset", "want first or last, got %q", c.StartOffset)
	}
	if err := checkTopic(c.DLQTopic); err != nil {
		bad("dlq_topic", "%v", err)
	} else if seen[c.DLQTopic] {
		bad("dlq_topic", "%q is also a source topic", c.DLQTopic)
	}
	if c.MinBytes < 1 {
		bad("min_bytes", "must be >= 1")
	}
	if c.MaxBytes < 1<<10 {
		bad("max_bytes", "must be >= 1024")
	} else if c.MaxBytes < c.MinBytes {
		bad("max_bytes", "must be >= min_bytes")
	}
	positive := func(key string, d time.Duration) {
		if d <= 0 {
			bad(key, "must be > 0")
		}
	}
	positive("max_wait", c.MaxWait)
	if c.QueueCapacity < 1 {
		bad("queue_capacity", "must be >= 1")
	}
	positive("session_timeout", c.SessionTimeout)
	positive("rebalance_timeout", c.RebalanceTimeout)
	positive("heartbeat_interval", c.HeartbeatInterval)
	if c.HeartbeatInterval > 0 && c.SessionTimeout > 0 && c.HeartbeatInterval*3 > c.SessionTimeout {
		bad("heartbeat_interval", "must be at most a third of session_timeout (%s)", c.SessionTimeout)
	}
	positive("join_group_backoff", c.JoinGroupBackoff)
	positive("dial_timeout", c.DialTimeout)
	positive("request_timeout", c.RequestTimeout)
	if err := schemas.UnderKey("tls", c.TLS.Validate()); err != nil {
		errs = append(errs, err)
	}
	if err := schemas.UnderKey("sasl", c.SASL.Validate()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Validate reports every bad SASL setting.
func (s SASLConfig) Validate() error {
	var errs []error
	switch s.Mechanism {
	case "":
		if s.Username != "" || s.Password != "" || s.PasswordFile != "" {
			errs = append(errs, schemas.FieldErrorf("mechanism", "required when username or password is set"))
		}
		return errors.Join(errs...)
	case SASLPlain, SASLSCRAMSHA256, SASLSCRAMSHA512:
	default:
		errs = append(errs, schemas.FieldErrorf("mechanism", "want plain, scram-sha-256 or scram-sha-512, got %q", s.Mechanism))
	}
	if s.Username == "" {
		errs = append(errs, schemas.FieldErrorf("username", "required with a mechanism"))
	}
	if s.Password != "" && s.PasswordFile != "" {
		errs = append(errs, schemas.FieldErrorf("password, password_file", "set one, not both"))
	}
	if s.Password == "" && s.PasswordFile == "" {
		errs = append(errs, schemas.FieldErrorf("password_file", "a password (or password file) is required with a mechanism"))
	}
	return errors.Join(errs...)
}

// Config tunes batching, committing, retrying and shutdown (the
// "pipeline" section).
type Config struct {
	// BatchMaxRows flushes a batch once it holds this many rows over all
	// tables (events, findings, dead letters).
	BatchMaxRows int `yaml:"batch_max_rows"`
	// BatchMaxWait flushes a non-empty batch this long after its first row,
	// whichever of the two comes first.
	BatchMaxWait time.Duration `yaml:"batch_max_wait"`
	// QueueSize bounds the processed messages waiting between the
	// partition consumers and the batcher. With one batch accumulating and
	// one being written, at most 2*BatchMaxRows+QueueSize processed
	// messages are held in memory, plus each partition consumer's chunk
	// being filled (at most 256); when that is full, consumers stop
	// fetching.
	QueueSize int `yaml:"queue_size"`
	// HandoffLinger is how long a partition consumer keeps fetching into
	// a chunk of processed messages (up to 256) before it hands the chunk
	// to the batcher, from the chunk's first message: the chunk goes as
	// soon as it is full or no message arrives within this time. It adds
	// at most this much latency; 0 hands over every message on its own.
	HandoffLinger time.Duration `yaml:"handoff_linger"`
	// CommitInterval is how often offsets that became durable are
	// committed (they are also committed right after each flush).
	CommitInterval time.Duration `yaml:"commit_interval"`
	// LagInterval is how often consumer lag is measured against the
	// partitions' high watermarks.
	LagInterval time.Duration `yaml:"lag_interval"`
	// DrainTimeout bounds the flush-and-commit of a partition that is
	// being revoked (rebalance or shutdown). It must stay below the Kafka
	// session and rebalance timeouts, or the group evicts this member and
	// its last commit is refused.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// ShutdownTimeout bounds the whole shutdown: stop fetching, flush,
	// commit, leave the group, close.
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// Retry is the backoff for writes to ClickHouse and the DLQ topic, and
	// for the after-store hook (alerting).
	Retry RetryConfig `yaml:"retry"`
	// SnapshotEvents and SnapshotInterval checkpoint each partition's
	// detector state: after this many events, or this long after the
	// previous snapshot (checked at each event), whichever comes first. The
	// snapshot is stored with the batch of the event it follows, and a
	// restarted or rebalanced partition restores the newest one below its
	// committed offset and replays from there (see the package
	// documentation). 0 turns a trigger off; both 0 turn snapshots off.
	// While a warm-up re-reads a partition, only SnapshotInterval counts
	// (when set).
	SnapshotEvents   int           `yaml:"snapshot_events"`
	SnapshotInterval time.Duration `yaml:"snapshot_interval"`
	// SnapshotMaxBytes bounds one compressed snapshot; a larger one is not
	// stored (it is counted and logged) and the previous one stays in use.
	SnapshotMaxBytes int `yaml:"snapshot_max_bytes"`
	// WarmupHorizon bounds how far back a partition without a usable
	// detector snapshot (never snapshotted, killed before the first
	// snapshot, snapshot unreadable or its events no longer in Kafka)
	// re-reads to rebuild its detectors: 0 (the default) re-reads
	// everything Kafka retains, which makes the findings exactly those of
	// an uninterrupted run as long as the topic still holds every event
	// the group consumed; a duration re-reads only the messages Kafka
	// timestamped within it before now (the producer's create time, or the
	// log append time, whichever the topic keeps), which is faster but
	// starts the multi-day baselines (volume, off-hours) short. The
	// messages below
	// the committed offset only feed the detectors: nothing is stored or
	// alerted on again.
	WarmupHorizon time.Duration `yaml:"warmup_horizon"`
	// DeadLetterMaxPayload bounds the payload a dead letter keeps in the
	// dlq table: a larger message is kept as its first bytes, flagged
	// payload_truncated, with its size and SHA-256. On the DLQ topic the
	// bound is the topic's max.message.bytes, read from the brokers.
	DeadLetterMaxPayload int `yaml:"dead_letter_max_payload"`
	// MaxPartitionsPerInsert bounds the months (partitions) one INSERT into
	// access_events or findings touches; a batch spanning more is split.
	// Keep it at or below the server's max_partitions_per_insert_block
	// (100 by default).
	MaxPartitionsPerInsert int `yaml:"max_partitions_per_insert"`
	// EventTime is the plausibility window of event times.
	EventTime EventTimeConfig `yaml:"event_time"`
}

// EventTimeConfig is the window around an event's reference time (its
// logged_time, else the Kafka message timestamp) in which its event_time
// must fall. An event outside it is dead-lettered as
// implausible_event_time before the detectors see it. Whatever the window,
// event times before 1970 or from 2106 on (which the tables' TTL cannot
// represent) are implausible.
type EventTimeConfig struct {
	// MaxPast is how far before its reference time an event may be. Widen
	// it to backfill an old log (e.g. 9000h for last year's).
	MaxPast time.Duration `yaml:"max_past"`
	// MaxFuture is how far after its reference time an event may be.
	MaxFuture time.Duration `yaml:"max_future"`
}

// RetryConfig is an exponential backoff with jitter.
type RetryConfig struct {
	// InitialInterval is the first pause; each next one is Multiplier
	// times longer, capped at MaxInterval.
	InitialInterval time.Duration `yaml:"initial_interval"`
	MaxInterval     time.Duration `yaml:"max_interval"`
	Multiplier      float64       `yaml:"multiplier"`
	// Jitter randomises each pause by ±Jitter (0..1) of its length.
	Jitter float64 `yaml:"jitter"`
}

// DefaultConfig flushes at 10 000 rows or 1 s.
func DefaultConfig() Config {
	return Config{
		BatchMaxRows:           10000,
		BatchMaxWait:           time.Second,
		QueueSize:              5000,
		HandoffLinger:          5 * time.Millisecond,
		CommitInterval:         time.Second,
		LagInterval:            5 * time.Second,
		DrainTimeout:           10 * time.Second,
		ShutdownTimeout:        30 * time.Second,
		SnapshotEvents:         50000,
		SnapshotInterval:       5 * time.Minute,
		SnapshotMaxBytes:       256 << 20,
		DeadLetterMaxPayload:   1 << 20,
		MaxPartitionsPerInsert: 100,
		EventTime:              EventTimeConfig{MaxPast: 30 * 24 * time.Hour, MaxFuture: 24 * time.Hour},
		Retry: RetryConfig{
			InitialInterval: 100 * time.Millisecond,
			MaxInterval:     10 * time.Second,
			Multiplier:      2,
			Jitter:          0.2,
		},
	}
}

// Validate reports every bad setting, keyed relative to the pipeline section.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	if c.BatchMaxRows < 1 || c.BatchMaxRows > 1_000_000 {
		bad("batch_max_rows", "must be in 1..1000000")
	}
	if c.BatchMaxWait < time.Millisecond {
		bad("batch_max_wait", "must be >= 1ms")
	}
	if c.QueueSize < 1 {
		bad("queue_size", "must be >= 1")
	}
	if c.HandoffLinger < 0 || c.HandoffLinger > time.Second {
		bad("handoff_linger", "must be in 0..1s")
	} else if c.HandoffLinger > c.BatchMaxWait && c.BatchMaxWait >= time.Millisecond {
		bad("handoff_linger", "must not exceed batch_max_wait (%s)", c.BatchMaxWait)
	}
	if c.CommitInterval < time.Millisecond {
		bad("commit_interval", "must be >= 1ms")
	}
	if c.LagInterval < time.Millisecond {
		bad("lag_interval", "must be >= 1ms")
	}
	if c.DrainTimeout <= 0 {
		bad("drain_timeout", "must be > 0")
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be > 0")
	} else if c.DrainTimeout > c.ShutdownTimeout {
		bad("drain_timeout", "must not exceed shutdown_timeout (%s)", c.ShutdownTimeout)
	}
	if c.SnapshotEvents < 0 {
		bad("snapshot_events", "must be >= 0 (0: no event-count trigger)")
	}
	if c.SnapshotInterval < 0 {
		bad("snapshot_interval", "must be >= 0 (0: no time trigger)")
	} else if c.SnapshotInterval > 0 && c.SnapshotInterval < time.Second {
		bad("snapshot_interval", "must be 0 or >= 1s")
	}
	if c.WarmupHorizon < 0 {
		bad("warmup_horizon", "must be >= 0 (0: everything Kafka retains)")
	} else if c.WarmupHorizon > 0 && c.WarmupHorizon < time.Minute {
		bad("warmup_horizon", "must be 0 or >= 1m")
	}
	if c.SnapshotMaxBytes < 1<<10 {
		bad("snapshot_max_bytes", "must be >= 1024")
	}
	if c.DeadLetterMaxPayload < 1<<10 || c.DeadLetterMaxPayload > 64<<20 {
		bad("dead_letter_max_payload", "must be in 1024..67108864")
	}
	if c.MaxPartitionsPerInsert < 1 || c.MaxPartitionsPerInsert > 10000 {
		bad("max_partitions_per_insert", "must be in 1..10000")
	}
	if c.EventTime.MaxPast <= 0 || c.EventTime.MaxPast > maxEventTimeSpan {
		bad("event_time.max_past", "must be in 0..%s (exclusive of 0)", maxEventTimeSpan)
	}
	if c.EventTime.MaxFuture <= 0 || c.EventTime.MaxFuture > maxEventTimeSpan {
		bad("event_time.max_future", "must be in 0..%s (exclusive of 0)", maxEventTimeSpan)
	}
	if err := schemas.UnderKey("retry", c.Retry.Validate()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// maxEventTimeSpan bounds the event-time window: 100 years.
const maxEventTimeSpan = 100 * 365 * 24 * time.Hour

// snapshotsOn reports whether detector snapshots are taken.
func (c Config) snapshotsOn() bool { return c.SnapshotEvents > 0 || c.SnapshotInterval > 0 }

// ValidateWith reports settings that are fine alone but not together with
// the Kafka settings k.
func (c Config) ValidateWith(k KafkaConfig) error {
	var errs []error
	if c.DrainTimeout > 0 && k.SessionTimeout > 0 && c.DrainTimeout >= k.SessionTimeout {
		errs = append(errs, schemas.FieldErrorf("drain_timeout", "must be below kafka.session_timeout (%s)", k.SessionTimeout))
	}
	if c.DrainTimeout > 0 && k.RebalanceTimeout > 0 && c.DrainTimeout >= k.RebalanceTimeout {
		errs = append(errs, schemas.FieldErrorf("drain_timeout", "must be below kafka.rebalance_timeout (%s)", k.RebalanceTimeout))
	}
	return errors.Join(errs...)
}

// Validate reports every bad retry setting.
func (r RetryConfig) Validate() error {
	var errs []error
	if r.InitialInterval <= 0 {
		errs = append(errs, schemas.FieldErrorf("initial_interval", "must be > 0"))
	}
	if r.MaxInterval < r.InitialInterval {
		errs = append(errs, schemas.FieldErrorf("max_interval", "must be >= initial_interval"))
	}
	if r.Multiplier < 1 {
		errs = append(errs, schemas.FieldErrorf("multiplier", "must be >= 1"))
	}
	if r.Jitter < 0 || r.Jitter > 1 {
		errs = append(errs, schemas.FieldErrorf("jitter", "must be in 0..1"))
	}
	return errors.Join(errs...)
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return fmt.Errorf("want host:port, got %q", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
		return fmt.Errorf("bad port %q", port)
	}
	return nil
}

// checkTopic applies Kafka's topic-name rules.
func checkTopic(t string) error {
	if t == "" {
		return errors.New("required")
	}
	if len(t) > 249 || t == "." || t == ".." {
		return fmt.Errorf("%q is not a legal topic name", t)
	}
	for _, r := range t {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-') {
			return fmt.Errorf("%q is not a legal topic name (letters, digits, '.', '_', '-')", t)
		}
	}
	return nil
}
