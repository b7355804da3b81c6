-- Alerting state that must survive restarts, rebalances and backlogs
-- (pipeline/alerting, "Persisted state").
--
-- alert_engine_state: the grouping, risk and surge state of the alerting
-- engine, one row per group (kind 'group', key = alert id), per user
-- (kind 'risk') and per patient (kind 'surge'); data is the engine's JSON.
-- Alerting loads the rows a batch of findings touches, applies the
-- findings and writes the changed rows back with version + 1, before the
-- batch's offsets are committed. Rows not updated for 90 days expire.
CREATE TABLE IF NOT EXISTS alert_engine_state
(
    kind       LowCardinality(String),
    key        String,
    version    UInt64,
    data       String,
    updated_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (kind, key)
TTL toDateTime(updated_at) + INTERVAL 90 DAY;

-- Which findings each alert counts (every one, unlike alerts.finding_ids,
-- which keeps the earliest 100): the invariant check "findings at or above
-- the alerting threshold without an alert" joins findings against it.
CREATE TABLE IF NOT EXISTS alert_findings
(
    finding_id String,
    alert_id   String,
    rule       LowCardinality(String),
    added_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree
ORDER BY (finding_id, alert_id);

-- The version an alert was last notified at (0: never): the lifecycle
-- loop keeps alerts with notified_version > 0 firing until triage closes
-- them.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS notified_version UInt64 DEFAULT 0;

-- Lifecycle deliveries per output: kind 'resolved' records that an alert
-- closed in triage (at triage state version state_version) was resolved
-- at that output, so it is sent once per closing.
CREATE TABLE IF NOT EXISTS alert_lifecycle
(
    output        LowCardinality(String),
    alert_id      String,
    kind          LowCardinality(String),
    state_version UInt64,
    delivered_at  DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(state_version)
ORDER BY (output, alert_id, kind);

-- The patient-free summary of an alert, which the outputs send unless
-- include_patient_id is set; the lifecycle loop re-sends alerts from here.
ALTER TABLE alerts ADD COLUMN IF NOT EXISTS summary String DEFAULT '';
