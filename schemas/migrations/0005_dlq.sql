-- Messages that could not be decoded or validated. The payload is kept for
-- reprocessing under a short TTL; error carries the class and field only.
CREATE TABLE IF NOT EXISTS dlq
(
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    kafka_key       String,
    error_class     LowCardinality(String),
    error           String,
    payload         String,
    received_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (kafka_topic, kafka_partition, kafka_offset)
TTL toDateTime(received_at) + INTERVAL {{dlq_retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 1000;
