-- Detector state checkpoints. Each partition's detector engine is
-- snapshotted every pipeline.snapshot_events events or
-- pipeline.snapshot_interval, at an event boundary: a row holds the
-- engine's state after the event at kafka_offset (Engine.Snapshot,
-- gzip-compressed) and is inserted in the same flush as that event, so it
-- is durable before the offset commit that follows. After a restart or a
-- rebalance the new owner restores the newest snapshot of its consumer
-- group, topic and partition whose offset is below the committed offset,
-- and replays from kafka_offset + 1. Only recent rows are ever read.
CREATE TABLE IF NOT EXISTS detector_snapshots
(
    consumer_group  LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    snapshot        String,
    taken_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toDate(taken_at)
ORDER BY (consumer_group, kafka_topic, kafka_partition, kafka_offset)
TTL toDateTime(taken_at) + INTERVAL 3 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
