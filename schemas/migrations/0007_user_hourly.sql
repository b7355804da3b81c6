-- Per-user hourly activity for dashboards and peer baselines. Retried
-- batches carry a deduplication token that also deduplicates this view.
CREATE TABLE IF NOT EXISTS user_hourly_activity
(
    hour             DateTime('UTC'),
    facility_id      LowCardinality(String),
    user_id          String,
    user_role        LowCardinality(String),
    user_department  LowCardinality(String),
    accesses         AggregateFunction(count),
    patients         AggregateFunction(uniq, String),
    break_glass      AggregateFunction(countIf, UInt8),
    exports          AggregateFunction(countIf, UInt8)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (facility_id, user_id, hour)
TTL hour + INTERVAL {{retention_days}} DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS user_hourly_activity_mv TO user_hourly_activity AS
SELECT
    toStartOfHour(toDateTime(event_time, 'UTC')) AS hour,
    facility_id,
    user_id,
    user_role,
    user_department,
    countState() AS accesses,
    uniqState(patient_id) AS patients,
    countIfState(toUInt8(break_glass)) AS break_glass,
    countIfState(toUInt8(action IN ('print', 'export'))) AS exports
FROM access_events
GROUP BY hour, facility_id, user_id, user_role, user_department;
