package replay

import (
	"fmt"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors"
)

// NewPartitioner maps a Kafka key to one of n partitions the way the
// named producer partitioner does: fnv1a (kafka-go's Hash, sarama) or
// murmur2 (Java clients, librdkafka consistent_random).
func NewPartitioner(name string, n int) (func(key []byte) int, error) {
	parts := make([]int, n)
	for i := range parts {
		parts[i] = i
	}
	var b kafka.Balancer
	switch name {
	case "fnv1a":
		b = &kafka.Hash{}
	case "murmur2":
		b = kafka.Murmur2Balancer{Consistent: true}
	default:
		return nil, fmt.Errorf("--partitioner: want fnv1a or murmur2, got %q", name)
	}
	if n == 1 {
		return func([]byte) int { return 0 }, nil
	}
	return func(key []byte) int { return b.Balance(kafka.Message{Key: key}, parts...) }, nil
}

// MustPartitioner is NewPartitioner for a name known to be valid.
func MustPartitioner(name string, n int) func([]byte) int {
	p, err := NewPartitioner(name, n)
	if err != nil {
		panic(err)
	}
	return p
}

// NewEngineFactory builds the engine constructor every replay engine (and
// demo partition) uses: every registered detector with ecfg, over one
// reference snapshot, with the facilities' time zones.
func NewEngineFactory(idx *detectors.ReferenceIndex, zones map[string]string, ecfg detectors.EngineConfig) (func() (*detectors.Engine, error), error) {
	loc, err := detectors.FacilityLocations(zones)
	if err != nil {
		return nil, err
	}
	holder := detectors.NewReferenceHolder(idx)
	return detectors.NewEngineFactory(ecfg, detectors.Env{Reference: holder.Load, Location: loc})
}

// NewPeerStage builds the peer stage that judges the peer detectors of n
// engines against the whole peer group, in the facilities' time zones.
func NewPeerStage(ecfg detectors.EngineConfig, zones map[string]string, n int) (*detectors.PeerStage, error) {
	loc, err := detectors.FacilityLocations(zones)
	if err != nil {
		return nil, err
	}
	return detectors.NewPeerStage(ecfg, detectors.Env{Location: loc}, n)
}
