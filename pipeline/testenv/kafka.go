package testenv

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
)

// KafkaEnv names the environment variable holding the bootstrap address
// (host:port, or a comma-separated list) of the Kafka broker used by
// integration tests.
const KafkaEnv = "EHRDEV_KAFKA"

const (
	kafkaPingTimeout  = 5 * time.Second
	kafkaAdminTimeout = 30 * time.Second
)

// Kafka returns the bootstrap address of the test Kafka broker from
// EHRDEV_KAFKA. It skips the test under -short and fails it, with
// instructions for starting a broker, when the variable is unset or the
// broker does not answer a metadata request.
func Kafka(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: skipping Kafka integration test in -short mode")
	}
	addr := strings.TrimSpace(os.Getenv(KafkaEnv))
	if addr == "" {
		t.Fatal(kafkaHowTo(KafkaEnv + " is not set"))
	}
	if err := pingKafka(addr); err != nil {
		t.Fatal(kafkaHowTo(fmt.Sprintf("Kafka at %s=%s is not reachable: %v", KafkaEnv, addr, err)))
	}
	return addr
}

func kafkaHowTo(problem string) string {
	return "testenv: " + problem + "\n" +
		"This is an integration test and needs a real Kafka broker. From the repository root, run\n" +
		"\teval \"$(deployments/dev/kafka.sh env)\"\n" +
		"to start one and export " + KafkaEnv + ", or run `make test`, which does both.\n" +
		"(`go test -short` skips integration tests.)"
}

func pingKafka(addr string) error {
	c, done := kafkaClient(addr, kafkaPingTimeout)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaPingTimeout)
	defer cancel()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}})
	if err != nil {
		return err
	}
	if len(md.Brokers) == 0 {
		return errors.New("metadata lists no brokers")
	}
	return nil
}

// kafkaClient returns a client with its own transport, so its first metadata
// request really goes to the broker; done closes the transport's connections.
func kafkaClient(brokers string, timeout time.Duration) (*kafka.Client, func()) {
	tr := &kafka.Transport{DialTimeout: timeout}
	c := &kafka.Client{
		Addr:      kafka.TCP(strings.Split(brokers, ",")...),
		Timeout:   timeout,
		Transport: tr,
	}
	return c, tr.CloseIdleConnections
}

// NewTopic creates a topic with a unique name derived from t.Name() and the
// given number of partitions (replication factor 1), waits until every
// partition has a leader, and deletes the topic when the test ends.
//
// The topic is created through kafka.DefaultTransport, which refreshes that
// transport's metadata cache, so a kafka.Writer using the default transport
// for the same address can produce to it at once.
func NewTopic(t testing.TB, brokers string, partitions int) string {
	t.Helper()
	if partitions < 1 {
		t.Fatalf("testenv: NewTopic: partitions must be >= 1, got %d", partitions)
	}
	name := topicName(t.Name())
	ctx, cancel := context.WithTimeout(context.Background(), kafkaAdminTimeout)
	defer cancel()

	c := &kafka.Client{Addr: kafka.TCP(strings.Split(brokers, ",")...), Timeout: kafkaAdminTimeout}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{
		Topics: []kafka.TopicConfig{{Topic: name, NumPartitions: partitions, ReplicationFactor: 1}},
	})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		t.Fatalf("testenv: create topic %q: %v", name, err)
	}
	t.Cleanup(func() { deleteTopic(t, brokers, name) })

	if err := waitTopicReady(ctx, brokers, name, partitions); err != nil {
		t.Fatalf("testenv: topic %q not ready: %v", name, err)
	}
	return name
}

func waitTopicReady(ctx context.Context, brokers, name string, partitions int) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := topicReady(ctx, brokers, name, partitions)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-tick.C:
		}
	}
}

// topicReady asks the broker (through a fresh transport: kafka-go transports
// answer metadata requests from their cache) whether every partition of the
// topic has a leader.
func topicReady(ctx context.Context, brokers, name string, partitions int) error {
	c, done := kafkaClient(brokers, kafkaPingTimeout)
	defer done()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
	if err != nil {
		return err
	}
	for _, tp := range md.Topics {
		if tp.Name != name {
			continue
		}
		if tp.Error != nil {
			return tp.Error
		}
		if len(tp.Partitions) != partitions {
			return fmt.Errorf("%d of %d partitions in metadata", len(tp.Partitions), partitions)
		}
		for _, p := range tp.Partitions {
			if p.Error != nil {
				return fmt.Errorf("partition %d: %w", p.ID, p.Error)
			}
			if p.Leader.Host == "" {
				return fmt.Errorf("partition %d has no leader", p.ID)
			}
		}
		return nil
	}
	return errors.New("topic not in metadata")
}

// DeleteTopicAtEnd deletes a topic the code under test creates (such as
// ehrwatch run's peers topic) when the test ends; a topic that was never
// created is only logged.
func DeleteTopicAtEnd(t testing.TB, brokers, name string) {
	t.Helper()
	t.Cleanup(func() { deleteTopic(t, brokers, name) })
}

func deleteTopic(t testing.TB, brokers, name string) {
	c, done := kafkaClient(brokers, kafkaAdminTimeout)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), kafkaAdminTimeout)
	defer cancel()
	res, err := c.DeleteTopics(ctx, &kafka.DeleteTopicsRequest{Topics: []string{name}})
	if err == nil {
		err = res.Errors[name]
	}
	if err != nil {
		// Names are unique, so a leftover topic harms no other test.
		t.Logf("testenv: delete topic %q: %v", name, err)
	}
}

// topicName turns a test name into a legal, unique Kafka topic name
// ([a-zA-Z0-9-], at most 249 characters; '.' and '_' avoided because Kafka
// treats them as colliding in metric names).
func topicName(testName string) string {
	var b strings.Builder
	for _, r := range testName {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('-')
		}
	}
	base := strings.Trim(b.String(), "-")
	if len(base) > 100 {
		base = base[:100]
	}
	var rnd [4]byte
	_, _ = rand.Read(rnd[:]) // crypto/rand.Read never fails (Go 1.24+)
	return "test-" + base + "-" + hex.EncodeToString(rnd[:])
}
