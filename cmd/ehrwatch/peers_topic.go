package main

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
)

// peersTopicACLs is what the fix of an authorization error says.
const peersTopicACLs = "ACLs for the ehrwatch principal on the peers topic: DESCRIBE, DESCRIBE_CONFIGS, READ, WRITE (and CREATE, on the topic or the cluster, only for ehrwatch to create it); on the consumer group peers.group_id: READ"

// ensurePeersTopic makes sure the peers topic is fit for the peer stage
// (mode group) before anything is produced to it: when the brokers do not
// have it, it creates it (CreateTopics: one partition,
// peers.replication_factor, retention.ms = peers.retention, no size limit,
// cleanup.policy delete) and waits until its partition has a leader; when
// they do, it fails unless the topic has exactly one partition (the stage
// must see every hand-over in one order), a retention.ms of at least
// peers.retention or none, no retention.bytes, and no compaction (a new
// stage owner rebuilds from the first offset, so nothing the last
// peer_window_days need may be deleted). Metadata requests never
// auto-create the topic, so brokers with auto-creation on do not create it
// with their own defaults.
func ensurePeersTopic(ctx context.Context, kc ingest.KafkaConfig, c PeersConfig, log zerolog.Logger) error {
	topic := c.Topic
	client := func() (*kafka.Client, func(), error) {
		// A fresh transport each time: a transport answers metadata from
		// its cache.
		tr, err := kc.Transport()
		if err != nil {
			return nil, nil, err
		}
		return &kafka.Client{Addr: kafka.TCP(kc.Brokers...), Transport: tr, Timeout: kc.RequestTimeout}, tr.CloseIdleConnections, nil
	}
	// partitions returns the topic's partition count and whether they all
	// have a leader; 0 when the brokers do not have it.
	partitions := func() (int, bool, error) {
		cl, done, err := client()
		if err != nil {
			return 0, false, err
		}
		defer done()
		md, err := cl.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return 0, false, fmt.Errorf("peers.topic: metadata of %q: %w", topic, err)
		}
		for _, tp := range md.Topics {
			if tp.Name != topic {
				continue
			}
			switch {
			case errors.Is(tp.Error, kafka.UnknownTopicOrPartition):
				return 0, false, nil
			case tp.Error != nil:
				return 0, false, fmt.Errorf("peers.topic: metadata of %q: %w (%s)", topic, tp.Error, peersTopicACLs)
			}
			led := true
			for _, p := range tp.Partitions {
				led = led && p.Error == nil && p.Leader.Host != ""
			}
			return len(tp.Partitions), led, nil
		}
		return 0, false, nil
	}
	n, _, err := partitions()
	if err != nil {
		return err
	}
	if n == 0 {
		if err := createPeersTopic(ctx, client, c, log); err != nil {
			return err
		}
		wait := time.NewTicker(100 * time.Millisecond)
		defer wait.Stop()
		patience := max(3*kc.RequestTimeout, 10*time.Second)
		deadline := time.Now().Add(patience)
		for {
			n2, led, err := partitions()
			if err == nil && n2 > 0 && led {
				n = n2
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("peers.topic: %q created but its partition has no leader after %s (last error: %v)", topic, patience, err)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-wait.C:
			}
		}
	}
	if n != 1 {
		return fmt.Errorf("peers.topic: %q has %d partitions; the peer stage needs exactly one (every partition's hand-overs in one order): delete it or set peers.topic to a topic with one partition", topic, n)
	}
	return checkPeersTopicConfig(ctx, client, c)
}

// createPeersTopic creates the peers topic; another instance creating it
// at the same time is fine.
func createPeersTopic(ctx context.Context, client func() (*kafka.Client, func(), error), c PeersConfig, log zerolog.Logger) error {
	cl, done, err := client()
	if err != nil {
		return err
	}
	defer done()
	retention := strconv.FormatInt(c.Retention.Milliseconds(), 10)
	res, err := cl.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{
		Topic: c.Topic, NumPartitions: 1, ReplicationFactor: c.ReplicationFactor,
		ConfigEntries: []kafka.ConfigEntry{
			{ConfigName: "retention.ms", ConfigValue: retention},
			{ConfigName: "retention.bytes", ConfigValue: "-1"},
			{ConfigName: "cleanup.policy", ConfigValue: "delete"},
		},
	}}})
	if err == nil {
		err = res.Errors[c.Topic]
	}
	switch {
	case err == nil:
		log.Info().Str("topic", c.Topic).Int("replication_factor", c.ReplicationFactor).Dur("retention", c.Retention).
			Msg("peers topic created (one partition)")
		return nil
	case errors.Is(err, kafka.TopicAlreadyExists):
		return nil // another instance was quicker; checked below
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.ClusterAuthorizationFailed):
		return fmt.Errorf("peers.topic: %q does not exist and ehrwatch may not create it (%w): create it with one partition, retention.ms=%s, cleanup.policy=delete, or grant CREATE; %s",
			c.Topic, err, retention, peersTopicACLs)
	}
	return fmt.Errorf("peers.topic: creating %q (one partition, replication factor %d, retention.ms=%s): %w", c.Topic, c.ReplicationFactor, retention, err)
}

// checkPeersTopicConfig fails unless the topic keeps its records at
// least peers.retention, without a size limit or compaction.
func checkPeersTopicConfig(ctx context.Context, client func() (*kafka.Client, func(), error), c PeersConfig) error {
	cl, done, err := client()
	if err != nil {
		return err
	}
	defer done()
	res, err := cl.DescribeConfigs(ctx, &kafka.DescribeConfigsRequest{Resources: []kafka.DescribeConfigRequestResource{{
		ResourceType: kafka.ResourceTypeTopic, ResourceName: c.Topic,
		ConfigNames: []string{"retention.ms", "retention.bytes", "cleanup.policy"},
	}}})
	if err == nil && len(res.Resources) == 1 {
		err = res.Resources[0].Error
	}
	if err != nil {
		return fmt.Errorf("peers.topic: reading the configuration of %q: %w (%s)", c.Topic, err, peersTopicACLs)
	}
	got := map[string]string{}
	for _, r := range res.Resources {
		for _, e := range r.ConfigEntries {
			got[e.ConfigName] = e.ConfigValue
		}
	}
	var errs []error
	want := c.Retention.Milliseconds()
	ms, err := strconv.ParseInt(got["retention.ms"], 10, 64)
	switch {
	case err != nil:
		errs = append(errs, fmt.Errorf("retention.ms %q is not a number", got["retention.ms"]))
	case ms >= 0 && ms < want:
		errs = append(errs, fmt.Errorf("retention.ms is %d (%s), shorter than peers.retention (%s): a new stage owner rebuilds from the topic and needs break_glass's peer_window_days plus the longest lag; raise the topic's retention.ms to at least %d (kafka-configs --alter --entity-type topics --entity-name %s --add-config retention.ms=%d) or, if the lag allows it, lower peers.retention",
			ms, time.Duration(ms)*time.Millisecond, c.Retention, want, c.Topic, want))
	}
	if b := got["retention.bytes"]; b != "" && b != "-1" {
		errs = append(errs, fmt.Errorf("retention.bytes is %s: size-based retention can delete hand-overs the stage still needs; set it to -1", b))
	}
	if p := got["cleanup.policy"]; p != "" && (strings.Contains(p, "compact") || !strings.Contains(p, "delete")) {
		errs = append(errs, fmt.Errorf("cleanup.policy is %q: compaction drops hand-overs the stage still needs; set it to delete", p))
	}
	if len(errs) > 0 {
		return fmt.Errorf("peers.topic: %q is not fit for the peer stage: %w", c.Topic, errors.Join(errs...))
	}
	return nil
}
