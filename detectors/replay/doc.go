// Package replay runs the detectors over a stream of decoded access events
// without Kafka or ClickHouse: the runtime of `ehrwatch replay`, also used
// by `ehrwatch demo` and `ehrwatch bench`.
//
// A [Replayer] spreads the events over one detector engine per partition
// exactly as a Kafka topic keyed by user_id would ([NewPartitioner]), runs
// the engines concurrently in chunks of [ChunkSize] events, optionally
// judges the peer detectors (volume, break_glass) across every engine in
// one [detectors.PeerStage], and hands the findings back merged into input
// order, so the output is the same whatever the number of engines or CPUs.
//
// The package imports kafka-go only for its partitioners (kafka.Hash and
// kafka.Murmur2Balancer), so that a replay places each user in the
// partition a producer would; it never talks to a broker.
package replay
