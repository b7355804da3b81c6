CREATE TABLE IF NOT EXISTS alerts ON CLUSTER `ehrwatch`
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/all', '{shard}-{replica}', version)
PARTITION BY toYYYYMM(first_seen)
ORDER BY alert_id;

CREATE TABLE IF NOT EXISTS alert_state_history ON CLUSTER `ehrwatch`
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
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{uuid}/all', '{shard}-{replica}')
PARTITION BY toYYYYMM(changed_at)
ORDER BY (alert_id, version);

CREATE TABLE IF NOT EXISTS alert_state ON CLUSTER `ehrwatch`
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/all', '{shard}-{replica}', version)
ORDER BY alert_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS alert_state_mv ON CLUSTER `ehrwatch` TO alert_state AS
SELECT alert_id, version, status, assignee, disposition, note, changed_by, changed_at
FROM alert_state_history;
