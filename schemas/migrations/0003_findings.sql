-- Detector findings. finding_id is deterministic (detector + key + window),
-- so reprocessing writes the same ids and ReplacingMergeTree collapses them.
CREATE TABLE IF NOT EXISTS findings
(
    finding_id         String,
    detector           LowCardinality(String),
    severity           LowCardinality(String),
    score              UInt8,
    facility_id        LowCardinality(String),
    user_id            String,
    patient_id         String,
    window_start       DateTime64(3, 'UTC'),
    window_end         DateTime64(3, 'UTC'),
    event_ids          Array(String),
    explanation        String,
    evidence           String, -- JSON of schemas.Evidence
    suppressed         Bool,
    suppression_reason String,
    kafka_partition    UInt32,
    kafka_offset       UInt64,
    detected_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_patient patient_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_finding finding_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (user_id, window_start, detector, finding_id)
TTL toDateTime(window_start) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 1000;
