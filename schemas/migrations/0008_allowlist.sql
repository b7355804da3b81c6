-- Allowlist entries maintained by privacy officers: a finding that matches
-- an unexpired entry is stored as suppressed, never dropped.
CREATE TABLE IF NOT EXISTS allowlist
(
    entry_id   String,
    user_id    String,
    patient_id String,
    department LowCardinality(String),
    detector   LowCardinality(String),
    reason     String,
    owner      String,
    expires_at Nullable(DateTime64(3, 'UTC')),
    deleted    Bool DEFAULT false,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY entry_id;
