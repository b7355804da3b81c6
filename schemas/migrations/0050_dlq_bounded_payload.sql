-- Dead letters of any size, and of rows ClickHouse refused. payload holds
-- the whole message when it fits pipeline.dead_letter_max_payload, else its
-- first bytes (payload_truncated); payload_size and payload_sha256 always
-- describe the whole message. record_id tells apart several dead letters
-- of one Kafka message (empty for the message itself, the finding id for a
-- refused finding) and joins the sorting key, so they do not collapse.
ALTER TABLE dlq
    ADD COLUMN IF NOT EXISTS record_id String,
    ADD COLUMN IF NOT EXISTS payload_size UInt64,
    ADD COLUMN IF NOT EXISTS payload_sha256 String,
    ADD COLUMN IF NOT EXISTS payload_truncated Bool,
    MODIFY ORDER BY (kafka_topic, kafka_partition, kafka_offset, record_id);
