-- Findings: the newest version of a finding wins, whatever order its rows
-- were inserted in. A finding is re-emitted each time a later event joins
-- it (same finding_id, one more event id); the row carries the offset of
-- the event that produced it (kafka_offset). 0003 created a plain
-- ReplacingMergeTree, where the last *inserted* row wins: a replay after a
-- crash that re-inserted an older version after the newer one (its block
-- deduplicated by token, say) could leave the older one standing. With
-- ReplacingMergeTree(kafka_offset) the row of the latest event wins.
--
-- ClickHouse cannot change a table's engine in place, so the table is
-- rebuilt: copied into findings_next, swapped in by one RENAME, and the old
-- one dropped. Each step can be re-run after a failure (the first two
-- statements clear what an interrupted run left). Stop `ehrwatch run`
-- while it runs: findings inserted during the copy would be lost (they are
-- written again when the pipeline reprocesses, but only for uncommitted
-- offsets).
DROP TABLE IF EXISTS findings_old;
DROP TABLE IF EXISTS findings_next;
CREATE TABLE findings_next
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
ENGINE = ReplacingMergeTree(kafka_offset)
PARTITION BY toYYYYMM(window_start)
ORDER BY (user_id, window_start, detector, finding_id)
TTL toDateTime(window_start) + INTERVAL {{retention_days}} DAY
SETTINGS non_replicated_deduplication_window = 1000;
INSERT INTO findings_next SELECT * FROM findings;
RENAME TABLE findings TO findings_old, findings_next TO findings;
DROP TABLE findings_old;
