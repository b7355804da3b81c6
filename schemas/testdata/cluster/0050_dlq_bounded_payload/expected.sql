ALTER TABLE dlq_local ON CLUSTER `ehrwatch`
    ADD COLUMN IF NOT EXISTS record_id String,
    ADD COLUMN IF NOT EXISTS payload_size UInt64,
    ADD COLUMN IF NOT EXISTS payload_sha256 String,
    ADD COLUMN IF NOT EXISTS payload_truncated Bool,
    MODIFY ORDER BY (kafka_topic, kafka_partition, kafka_offset, record_id);

ALTER TABLE dlq ON CLUSTER `ehrwatch`
    ADD COLUMN IF NOT EXISTS record_id String,
    ADD COLUMN IF NOT EXISTS payload_size UInt64,
    ADD COLUMN IF NOT EXISTS payload_sha256 String,
    ADD COLUMN IF NOT EXISTS payload_truncated Bool;
