-- Cases: a privacy officer groups alerts into one investigation with its
-- own status, assignee, outcome and notes (pipeline/triage, "Cases").
--
-- case_history is append-only, one row per change, like
-- alert_state_history (0004, 0031): version = previous + 1, inserted with
-- the deduplication token "<case_id>/v<version>" so that of two writers
-- racing for one version ClickHouse keeps the first row; each writer reads
-- change_id back to learn whether it won. Every row carries the whole
-- state (title, status, assignee, outcome, the member alerts), plus what
-- this change did (action, the alerts it added or removed, its note).
CREATE TABLE IF NOT EXISTS case_history
(
    case_id    String,
    version    UInt64,
    title      String,
    status     LowCardinality(String),
    assignee   String,
    outcome    LowCardinality(String),
    alert_ids  Array(String),
    action     LowCardinality(String),
    added      Array(String),
    removed    Array(String),
    note       String,
    created_by String,
    created_at DateTime64(3, 'UTC'),
    changed_by String,
    changed_at DateTime64(3, 'UTC'),
    change_id  String
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(changed_at)
ORDER BY (case_id, version)
SETTINGS non_replicated_deduplication_window = 10000;

-- Current case state: the latest history row per case.
CREATE TABLE IF NOT EXISTS cases
(
    case_id    String,
    version    UInt64,
    title      String,
    status     LowCardinality(String),
    assignee   String,
    outcome    LowCardinality(String),
    alert_ids  Array(String),
    created_by String,
    created_at DateTime64(3, 'UTC'),
    changed_by String,
    changed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY case_id
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS cases_mv TO cases AS
SELECT case_id, version, title, status, assignee, outcome, alert_ids, created_by, created_at, changed_by, changed_at
FROM case_history;

-- Case ↔ alert membership, by alert: one row per (alert, case), the
-- newest version wins; member = false once the alert was removed. Written
-- by the view from every history row (its members and what it removed),
-- so "which cases hold this alert" reads one key range.
CREATE TABLE IF NOT EXISTS case_alerts
(
    alert_id   String,
    case_id    String,
    version    UInt64,
    member     Bool,
    changed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (alert_id, case_id)
SETTINGS non_replicated_deduplication_window = 10000;

CREATE MATERIALIZED VIEW IF NOT EXISTS case_alerts_mv TO case_alerts AS
SELECT a AS alert_id, case_id, version, has(alert_ids, a) AS member, changed_at
FROM case_history
ARRAY JOIN arrayDistinct(arrayConcat(alert_ids, removed)) AS a;
