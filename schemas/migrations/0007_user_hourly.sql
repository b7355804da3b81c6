-- Per-user hourly activity for dashboards and peer baselines. A retried
-- batch carries the same deduplication token, which deduplicates this view
-- too; events re-stored after a crash in a differently cut batch are
-- collapsed in access_events but counted again here, so treat these
-- counts as approximate and query access_events for exact answers.
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
ORDER BY (facility_id, user_id, hour, user_role, user_department)
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
