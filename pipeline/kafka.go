package pipeline

import (
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/sasl"
	"github.com/segmentio/kafka-go/sasl/plain"
	"github.com/segmentio/kafka-go/sasl/scram"

	"github.com/ehrwatch/ehrwatch/pipeline/credentials"
)

// kafkaClients are the kafka-go building blocks every connection shares:
// a Dialer for the consumer group and the partition readers, a Transport
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
	tlsCfg, err := c.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := c.SASL.mechanism()
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
	tlsCfg, err := c.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("kafka.tls: %w", err)
	}
	mech, err := c.SASL.mechanism()
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

// reader returns a reader for one partition: no group (the generation
// owns the assignment), positioned by the caller with SetOffset.
func (k *kafkaClients) reader(topic string, partition int) *kafka.Reader {
	return kafka.NewReader(kafka.ReaderConfig{
		Brokers:          k.cfg.Brokers,
		Topic:            topic,
		Partition:        partition,
		Dialer:           k.dialer,
		QueueCapacity:    k.cfg.QueueCapacity,
		MinBytes:         k.cfg.MinBytes,
		MaxBytes:         k.cfg.MaxBytes,
		MaxWait:          k.cfg.MaxWait,
		ReadBatchTimeout: k.cfg.RequestTimeout,
		ReadBackoffMin:   100 * time.Millisecond,
		ReadBackoffMax:   2 * time.Second,
		MaxAttempts:      3,
		Logger:           k.logger,
		ErrorLogger:      k.errLogger,
	})
}

// dlqWriter produces dead letters synchronously, acknowledged by all
// in-sync replicas. kafka-go retries inside one call (MaxAttempts); the
// flusher retries the calls.
func (k *kafkaClients) dlqWriter() *kafka.Writer {
	return &kafka.Writer{
		Addr:         kafka.TCP(k.cfg.Brokers...),
		Topic:        k.cfg.DLQTopic,
		Balancer:     &kafka.Hash{},
		RequiredAcks: kafka.RequireAll,
		Async:        false,
		MaxAttempts:  3,
		BatchSize:    1000,
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
