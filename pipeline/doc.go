// Package pipeline is ehrwatch's streaming core: it consumes access events
// from Kafka in a consumer group, decodes them, runs the detectors in
// partition order, stores events and findings in ClickHouse in idempotent
// batches, dead-letters what it cannot decode, and commits each partition's
// highest contiguous durably-handled offset.
package pipeline
