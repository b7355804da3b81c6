-- The hospital's vocabulary: its role and department names mapped to the
-- categories the detectors reason with (detectors.Categories). Maintained
-- by the privacy team (or loaded from vocabulary.ndjson); the latest
-- updated_at per (kind, name) wins, and deleted rows fall back to the
-- built-in defaults.
CREATE TABLE IF NOT EXISTS vocabulary
(
    kind       LowCardinality(String),
    name       String,
    categories Array(LowCardinality(String)),
    note       String DEFAULT '',
    deleted    Bool DEFAULT false,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (kind, name);

-- Next of kin and guarantor, so the family detector reads them from
-- ClickHouse as it does from patients.ndjson.
ALTER TABLE patients ADD COLUMN IF NOT EXISTS next_of_kin_user_ids Array(String) AFTER employee_user_id;

ALTER TABLE patients ADD COLUMN IF NOT EXISTS guarantor_user_id String DEFAULT '' AFTER next_of_kin_user_ids;
