package ingest

import (
	"context"
	"crypto/tls"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// kafkaClients are the kafka-go building blocks every connection shares:
// a Dialer for the consumer group and the partition fetchers, a Transport
// for the DLQ writer and the admin client (lag).
type kafkaClients struct {
	cfg       KafkaConfig
	dialer    *kafka.Dialer
	transport *kafka.Transport
	logger    kafka.Logger
	errLogger kafka.Logger
}

func newKafkaClients(cfg KafkaConfig, log zerolog.Logger) (*kafkaClients, error) {
	dialer, err := cfg.Dialer()
	if err != nil {
		return nil, err
	}
	transport, err := cfg.Transport()
	if err != nil {
		return nil, err
	}
	kl := log.With().Str("component", "kafka-go").Logger()
	return &kafkaClients{
		cfg:       cfg,
		dialer:    dialer,
		transport: transport,
		// kafka-go's messages are about connections, offsets and groups,
		// never message contents.
		logger:    kafka.LoggerFunc(func(msg string, args ...any) { kl.Debug().Msgf(msg, args...) }),
		errLogger: kafka.LoggerFunc(func(msg string, args ...any) { kl.Warn().Msgf(msg, args...) }),
	}, nil
}

// Dialer returns a kafka-go Dialer (for readers and consumer groups) with
// the configured client id, timeouts, TLS and SASL; it reads the password
// file.
func (c KafkaConfig) Dialer() (*kafka.Dialer, error) {
	tlsCfg, mech, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafka.Dialer{
		ClientID:      c.ClientID,
		Timeout:       c.DialTimeout,
		DualStack:     true,
		KeepAlive:     30 * time.Second,
		TLS:           tlsCfg,
		SASLMechanism: mech,
	}, nil
}

// Transport returns a kafka-go Transport (for writers and admin clients)
// with the configured client id, timeouts, TLS and SASL; it reads the
// password file.
func (c KafkaConfig) Transport() (*kafka.Transport, error) {
	tlsCfg, mech, err := c.security()
	if err != nil {
		return nil, err
	}
	return &kafka.Transport{
		ClientID:    c.ClientID,
		DialTimeout: c.DialTimeout,
		TLS:         tlsCfg,
		SASL:        mech,
		MetadataTTL: 30 * time.Second,
	}, nil
}

// security is the TLS configuration and SASL mechanism of every Kafka
// connection, Dialer and Transport alike; it reads the password file.
func (c KafkaConfig) security() (*tls.Config, sasl.Mechanism, error) {
	tlsCfg, err := c.TLS.Config()
	if err != nil {
		return nil, nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := c.SASL.mechanism()
	if err != nil {
		return nil, nil, err
	}
	return tlsCfg, mech, nil
}

// mechanism builds the SASL mechanism, reading the password file.
func (s SASLConfig) mechanism() (sasl.Mechanism, error) {
	if s.Mechanism == "" {
		return nil, nil
	}
	password, err := credentials.Secret("kafka.sasl.password", s.Password, s.PasswordFile)
	if err != nil {
		return nil, err
	}
	switch s.Mechanism {
	case SASLPlain:
		return plain.Mechanism{Username: s.Username, Password: password}, nil
	case SASLSCRAMSHA256, SASLSCRAMSHA512:
		algo := scram.SHA256
		if s.Mechanism == SASLSCRAMSHA512 {
			algo = scram.SHA512
		}
		m, err := scram.Mechanism(algo, s.Username, password)
		if err != nil {
			// The error is about the user name or password (SASLprep);
			// it must not echo them.
			return nil, fmt.Errorf("kafka.sasl: cannot use the credentials with %s", s.Mechanism)
		}
		return m, nil
	}
	return nil, fmt.Errorf("kafka.sasl.mechanism: unknown mechanism %q", s.Mechanism)
}

func (k *kafkaClients) startOffset() int64 {
	if k.cfg.StartOffset == "last" {
		return kafka.LastOffset
	}
	return kafka.FirstOffset
}

func (k *kafkaClients) groupConfig() kafka.ConsumerGroupConfig {
	return kafka.ConsumerGroupConfig{
		ID:                    k.cfg.GroupID,
		Brokers:               k.cfg.Brokers,
		Dialer:                k.dialer,
		Topics:                k.cfg.Topics,
		HeartbeatInterval:     k.cfg.HeartbeatInterval,
		SessionTimeout:        k.cfg.SessionTimeout,
		RebalanceTimeout:      k.cfg.RebalanceTimeout,
		JoinGroupBackoff:      k.cfg.JoinGroupBackoff,
		WatchPartitionChanges: true,
		StartOffset:           k.startOffset(),
		Timeout:               k.cfg.RequestTimeout,
		Logger:                k.logger,
		ErrorLogger:           k.errLogger,
	}
}

// dlqWriter produces dead letters synchronously, acknowledged by all
// in-sync replicas. kafka-go retries inside one call (MaxAttempts); the
// flusher retries the calls.
//
// maxMessageBytes is the DLQ topic's max.message.bytes: no batch is larger.
func (k *kafkaClients) dlqWriter(maxMessageBytes int) *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(k.cfg.Brokers...),
		Topic:        k.cfg.DLQTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		MaxAttempts:  3,
		BatchSize:    dlqBatchSize,
		BatchBytes:   int64(max(maxMessageBytes-dlqBatchMargin, minDLQMessageBytes-dlqBatchMargin)),
		BatchTimeout: 5 * time.Millisecond,
		ReadTimeout:  k.cfg.RequestTimeout,
		WriteTimeout: k.cfg.RequestTimeout,
		Transport:    k.transport,
		// Brokers that auto-create topics create the DLQ topic on first
		// use; others need it created beforehand.
		AllowAutoTopicCreation: true,
		Logger:                 k.logger,
		ErrorLogger:            k.errLogger,
	}
}

func (k *kafkaClients) admin() *kafka.Client {
	return &kafka.Client{
		Addr:      kafka.TCP(k.cfg.Brokers...),
		Timeout:   k.cfg.RequestTimeout,
		Transport: k.transport,
	}
}

// DLQ message sizing. Kafka refuses a record batch larger than the topic's
// max.message.bytes (error 10, MESSAGE_TOO_LARGE), and kafka-go's Writer
// refuses, client-side, a message larger than its BatchBytes (1 MiB by
// default). The DLQ producer reads the topic's limit and sizes the writer
// from it; boundMessage cuts a dead letter to what fits.
const (
	// defaultMaxMessageBytes is Kafka's default message.max.bytes, used when
	// the DLQ topic's config cannot be read (it does not exist yet, say).
	defaultMaxMessageBytes = 1048588
	// dlqBatchMargin is kept free below the limit in every produced batch
	// (kafka-go estimates a record's size, the batch adds a header), and
	// dlqMessageMargin below it for one message's key, value and headers.
	dlqBatchMargin   = 4 << 10
	dlqMessageMargin = 8 << 10
	// maxDLQKeyBytes bounds a dead letter's key.
	maxDLQKeyBytes = 4 << 10
	// minDLQMessageBytes is the least a DLQ message is allowed.
	minDLQMessageBytes = 16 << 10
	// dlqBatchSize bounds the messages per produced batch, so kafka-go's
	// size estimate stays within dlqBatchMargin of the real size.
	dlqBatchSize = 100
)

// boundMessage returns m cut to fit a topic whose max.message.bytes is
// limit: its value is cut to its first bytes when the whole does not fit,
// and flagged with HeaderPayloadTruncated; a key is cut to maxDLQKeyBytes. It keeps m's other headers
// (HeaderPayloadSize and HeaderPayloadSHA256 describe the whole payload).
func boundMessage(m kafka.Message, limit int) kafka.Message {
	hs := make([]kafka.Header, 0, len(m.Headers)+1)
	size := int64(-1)
	for _, h := range m.Headers {
		switch h.Key {
		case HeaderPayloadTruncated:
			continue
		case HeaderPayloadSize:
			if n, err := strconv.ParseInt(string(h.Value), 10, 64); err == nil {
				size = n
			}
		}
		hs = append(hs, h)
	}
	if len(m.Key) > maxDLQKeyBytes { // a key this long is itself the problem
		m.Key = m.Key[:maxDLQKeyBytes]
	}
	headerBytes := 0
	for _, h := range hs {
		headerBytes += len(h.Key) + len(h.Value) + 10
	}
	budget := max(limit, minDLQMessageBytes) - dlqMessageMargin - len(m.Key) - headerBytes - 64
	value := m.Value
	if len(value) > budget {
		value = value[:max(budget, 0)]
	}
	if int64(len(value)) < size || len(value) < len(m.Value) {
		hs = append(hs, kafka.Header{Key: HeaderPayloadTruncated, Value: []byte("true")})
	}
	m.Value, m.Headers = value, hs
	return m
}

// dlqProducer is the DLQ writer the pipeline builds: a synchronous
// kafka.Writer sized from the DLQ topic's max.message.bytes.
type dlqProducer struct {
	kc  *kafkaClients
	log zerolog.Logger

	mu    sync.Mutex
	w     *kafka.Writer
	limit int
}

func newDLQProducer(kc *kafkaClients, log zerolog.Logger) *dlqProducer {
	d := &dlqProducer{kc: kc, log: log, limit: defaultMaxMessageBytes}
	d.w = kc.dlqWriter(d.limit)
	return d
}

// configure reads the DLQ topic's max.message.bytes and sizes the writer
// from it; when it cannot, it keeps the current size (Kafka's default at
// first).
func (d *dlqProducer) configure(ctx context.Context) {
	limit, err := d.kc.topicMaxMessageBytes(ctx, d.kc.cfg.DLQTopic)
	if err != nil {
		d.log.Warn().Err(err).Int("max_message_bytes", d.MaxMessageBytes()).
			Msg("cannot read the DLQ topic's max.message.bytes; assuming the current limit")
		return
	}
	d.resize(limit)
	d.log.Info().Str("topic", d.kc.cfg.DLQTopic).Int("max_message_bytes", limit).Msg("DLQ producer sized")
}

func (d *dlqProducer) resize(limit int) {
	limit = max(limit, minDLQMessageBytes)
	d.mu.Lock()
	defer d.mu.Unlock()
	if limit == d.limit {
		return
	}
	old := d.w
	d.limit, d.w = limit, d.kc.dlqWriter(limit)
	go func() { _ = old.Close() }() // only the flusher writes, and it is here
}

// tooLarge reacts to a message the brokers refused as too large: it reads
// the topic's limit again and, when that did not change, halves its own.
func (d *dlqProducer) tooLarge(ctx context.Context) {
	prev := d.MaxMessageBytes()
	limit, err := d.kc.topicMaxMessageBytes(ctx, d.kc.cfg.DLQTopic)
	if err != nil || limit >= prev {
		limit = prev / 2
	}
	d.resize(limit)
	d.log.Warn().Int("max_message_bytes", d.MaxMessageBytes()).Msg("DLQ topic refused a message as too large; resized")
}

// MaxMessageBytes is the DLQ topic's limit as last read.
func (d *dlqProducer) MaxMessageBytes() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.limit
}

// WriteMessages produces msgs synchronously.
func (d *dlqProducer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	d.mu.Lock()
	w := d.w
	d.mu.Unlock()
	return w.WriteMessages(ctx, msgs...)
}

// Close closes the writer.
func (d *dlqProducer) Close() error {
	d.mu.Lock()
	w := d.w
	d.mu.Unlock()
	return w.Close()
}

// topicMaxMessageBytes reads a topic's effective max.message.bytes (its
// own setting, else the broker's message.max.bytes) with DescribeConfigs.
func (k *kafkaClients) topicMaxMessageBytes(ctx context.Context, topic string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, k.cfg.RequestTimeout)
	defer cancel()
	res, err := k.admin().DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{
		Resources: []kafka.DescribeConfigRequestResource{{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: topic, ConfigNames: []string{"max.message.bytes"},
		}},
	})
	if err != nil {
		return 0, fmt.Errorf("describe configs of %s: %w", topic, err)
	}
	for _, r := range res.Resources {
		if r.Error != nil {
			return 0, fmt.Errorf("describe configs of %s: %w", topic, r.Error)
		}
		for _, e := range r.ConfigEntries {
			if e.ConfigName == "max.message.bytes" {
				n, err := strconv.Atoi(e.ConfigValue)
				if err != nil || n <= 0 {
					return 0, fmt.Errorf("topic %s: max.message.bytes %q is not a size", topic, e.ConfigValue)
				}
				return n, nil
			}
		}
	}
	return 0, fmt.Errorf("topic %s: no max.message.bytes in its config", topic)
}
