CREATE TABLE IF NOT EXISTS user_hourly_activity_local ON CLUSTER `ehrwatch`
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
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(hour)
ORDER BY (facility_id, user_id, hour, user_role, user_department)
TTL hour + INTERVAL 2192 DAY;

CREATE TABLE IF NOT EXISTS user_hourly_activity ON CLUSTER `ehrwatch`
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
ENGINE = Distributed('ehrwatch', 'ehrwatch', 'user_hourly_activity_local', cityHash64(user_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS user_hourly_activity_mv ON CLUSTER `ehrwatch` TO user_hourly_activity_local AS
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
FROM access_events_local
GROUP BY hour, facility_id, user_id, user_role, user_department;
