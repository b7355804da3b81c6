CREATE TABLE IF NOT EXISTS access_events_local ON CLUSTER `ehrwatch`
(
    event_id           String,
    event_time         DateTime64(3, 'UTC'),
    logged_time        Nullable(DateTime64(3, 'UTC')),
    source             LowCardinality(String),
    facility_id        LowCardinality(String),
    user_id            String,
    user_role          LowCardinality(String),
    user_department    LowCardinality(String),
    workstation_id     String,
    client_ip          Nullable(String),
    patient_id         String,
    encounter_id       Nullable(String),
    action             LowCardinality(String),
    resource           LowCardinality(String),
    break_glass        Bool,
    break_glass_reason String,
    outcome            LowCardinality(String),
    kafka_topic        LowCardinality(String),
    kafka_partition    UInt32,
    kafka_offset       UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3),
    INDEX idx_patient patient_id TYPE bloom_filter(0.01) GRANULARITY 4,
    INDEX idx_event event_id TYPE bloom_filter(0.01) GRANULARITY 4
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{uuid}/{shard}', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (facility_id, user_id, event_time, event_id)
TTL toDateTime(event_time) + INTERVAL 2192 DAY
SETTINGS replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS access_events ON CLUSTER `ehrwatch`
(
    event_id           String,
    event_time         DateTime64(3, 'UTC'),
    logged_time        Nullable(DateTime64(3, 'UTC')),
    source             LowCardinality(String),
    facility_id        LowCardinality(String),
    user_id            String,
    user_role          LowCardinality(String),
    user_department    LowCardinality(String),
    workstation_id     String,
    client_ip          Nullable(String),
    patient_id         String,
    encounter_id       Nullable(String),
    action             LowCardinality(String),
    resource           LowCardinality(String),
    break_glass        Bool,
    break_glass_reason String,
    outcome            LowCardinality(String),
    kafka_topic        LowCardinality(String),
    kafka_partition    UInt32,
    kafka_offset       UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = Distributed('ehrwatch', 'ehrwatch', 'access_events_local', cityHash64(user_id));
