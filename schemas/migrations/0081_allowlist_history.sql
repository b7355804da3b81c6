-- Changes to the allowlist (0008) made through ehrwatch (the console's
-- allowlist editor and the API): who added, expired or removed which
-- entry, when and why, with the entry as it was after the change. The
-- allowlist table keeps only the newest row per entry (ReplacingMergeTree
-- by updated_at); this is the trail a privacy office shows an auditor.
-- Append-only; kept as long as the access events.
CREATE TABLE IF NOT EXISTS allowlist_history
(
    entry_id   String,
    change     LowCardinality(String),
    user_id    String,
    patient_id String,
    department LowCardinality(String),
    detector   LowCardinality(String),
    reason     String,
    owner      String,
    expires_at Nullable(DateTime64(3, 'UTC')),
    deleted    Bool,
    note       String,
    changed_by String,
    changed_at DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(changed_at)
ORDER BY (entry_id, changed_at)
TTL toDateTime(changed_at) + INTERVAL {{retention_days}} DAY;
