-- Alerts group findings. An alert row is rewritten as findings join it;
-- the highest version wins.
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id      String,
    rule          LowCardinality(String),
    detector      LowCardinality(String),
    severity      LowCardinality(String),
    score         UInt8,
    facility_id   LowCardinality(String),
    user_id       String,
    patient_id    String,
    first_seen    DateTime64(3, 'UTC'),
    last_seen     DateTime64(3, 'UTC'),
    finding_count UInt32,
    finding_ids   Array(String),
    explanation   String,
    version       UInt64,
    created_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(first_seen)
ORDER BY alert_id;

-- Every triage change (status, assignee, disposition, note), append-only:
-- who changed what, when.
CREATE TABLE IF NOT EXISTS alert_state_history
(
    alert_id    String,
    version     UInt64,
    status      LowCardinality(String),
    assignee    String,
    disposition LowCardinality(String),
    note        String,
    changed_by  String,
    changed_at  DateTime64(3, 'UTC')
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(changed_at)
ORDER BY (alert_id, version);

-- Current triage state: the latest history row per alert.
CREATE TABLE IF NOT EXISTS alert_state
(
    alert_id    String,
    version     UInt64,
    status      LowCardinality(String),
    assignee    String,
    disposition LowCardinality(String),
    note        String,
    changed_by  String,
    changed_at  DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY alert_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS alert_state_mv TO alert_state AS
SELECT alert_id, version, status, assignee, disposition, note, changed_by, changed_at
FROM alert_state_history;
