-- Reads of patient-level data through ehrwatch itself (API and CLI): who
-- looked at which alert, patient or user, when, from where, and how many
-- rows came back. Written before the data is returned; a read whose audit
-- row cannot be written fails. Kept as long as the access events.
CREATE TABLE IF NOT EXISTS api_audit
(
    request_id        String,
    at                DateTime64(3, 'UTC'),
    principal         String,
    auth_method       LowCardinality(String),
    role              LowCardinality(String),
    channel           LowCardinality(String),
    method            LowCardinality(String),
    endpoint          LowCardinality(String),
    alert_id          String,
    patient_id        String,
    user_id           String,
    patients_returned Array(String),
    params            String,
    status            UInt16,
    rows              UInt32,
    remote_addr       String,
    INDEX idx_patient patient_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_patients_returned patients_returned TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = MergeTree
PARTITION BY toYYYYMM(at)
ORDER BY (at, principal, request_id)
TTL toDateTime(at) + INTERVAL {{retention_days}} DAY;
