-- Reference data the detectors join against, loaded by the customer's HR,
-- identity and ADT feeds. The latest updated_at per id wins.
CREATE TABLE IF NOT EXISTS users
(
    user_id       String,
    first_name    String,
    last_name     String,
    role          LowCardinality(String),
    department    LowCardinality(String),
    address_line  String,
    city          String,
    state         LowCardinality(String),
    postal_code   String,
    status        LowCardinality(String),
    terminated_at Nullable(DateTime64(3, 'UTC')),
    patient_id    String,
    updated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY user_id;

CREATE TABLE IF NOT EXISTS patients
(
    patient_id       String,
    first_name       String,
    last_name        String,
    address_line     String,
    city             String,
    state            LowCardinality(String),
    postal_code      String,
    date_of_birth    Nullable(Date),
    vip              Bool,
    deceased_at      Nullable(DateTime64(3, 'UTC')),
    employee_user_id String,
    updated_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY patient_id;

CREATE TABLE IF NOT EXISTS encounters
(
    encounter_id String,
    patient_id   String,
    department   LowCardinality(String),
    start_time   DateTime64(3, 'UTC'),
    end_time     Nullable(DateTime64(3, 'UTC')),
    care_team    Array(String),
    updated_at   DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (patient_id, encounter_id);
