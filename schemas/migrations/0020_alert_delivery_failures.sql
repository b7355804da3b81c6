-- Alert notifications that could not be delivered: the dead letters of
-- pipeline/alerting. One row per (output, alert version) that exhausted
-- its retries, failed permanently, was dropped from a full queue, or was
-- still queued at shutdown. It holds ids and an error class, never the
-- payload or response bodies (those can carry patient data); the alert
-- itself is in the alerts table, so a failure can be re-sent from there.
CREATE TABLE IF NOT EXISTS alert_delivery_failures
(
    output           LowCardinality(String),
    alert_id         String,
    version          UInt64,
    attempts         UInt32,
    error_class      LowCardinality(String),
    http_status      UInt16,
    first_attempt_at Nullable(DateTime64(3, 'UTC')),
    failed_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(failed_at)
PARTITION BY toYYYYMM(failed_at)
ORDER BY (output, alert_id, version)
TTL toDateTime(failed_at) + INTERVAL {{retention_days}} DAY;
