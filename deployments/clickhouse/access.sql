-- ClickHouse access control for ehrwatch: one role per job, one user per
-- process, passwords as SHA-256 hashes, settings profiles that bound what
-- each may do. Run it once as an administrator with access management
-- (the server's default user with access_management=1, or an admin of your
-- own), after rendering the password hashes:
--
--   deployments/clickhouse/render-access.sh SECRETS_DIR | clickhouse-client --multiquery
--
-- render-access.sh replaces each {{<NAME>_PASSWORD_SHA256}} with the SHA-256
-- (hex) of SECRETS_DIR/NAME-password (e.g. SECRETS_DIR/ehrwatch_writer-password).
-- The statements are idempotent (IF NOT EXISTS, GRANT): re-running adds
-- what is missing; to change a password use ALTER USER … IDENTIFIED WITH
-- sha256_hash BY '…'.
--
-- Who is who:
--   ehrwatch_admin             `ehrwatch migrate`: DDL and data on the ehrwatch database only.
--   ehrwatch_writer            `ehrwatch run`: INSERT into the tables the pipeline writes, SELECT on
--                              what it reads (reference data, allowlist, detector snapshots,
--                              schema_migrations); no DDL, no ALTER, no DELETE.
--   ehrwatch_api               `ehrwatch serve`: reads alerts, findings, events and reference data;
--                              writes only triage history (alert_state_history, case_history), the
--                              allowlist and its history (the editor), and its own audit trail
--                              (api_audit).
--   ehrwatch_reader            Grafana: read-only (readonly=2), never the patients table nor the
--                              dead-lettered payloads or employees' addresses.
--   ehrwatch_reference_loader  the HR/ADT feed (or load-reference.sh): INSERT into users, patients,
--                              encounters.
--
-- Materialized views (alert_state_mv, user_hourly_activity_mv) are created
-- by ehrwatch_admin through `ehrwatch migrate`; ClickHouse (24.4+) runs
-- them with SQL SECURITY DEFINER as their creator, so the writer and the
-- API need no grant on the views' target tables. Keep ehrwatch_admin (do
-- not drop it) or the views stop.
--
-- Change `ehrwatch` below if your database has another name
-- (clickhouse.database).

-- Settings profiles ---------------------------------------------------------

-- Grafana: read-only. readonly = 2 still lets the data source plugin set
-- per-query settings, within these bounds; CONST stops it from lifting
-- readonly itself.
CREATE SETTINGS PROFILE IF NOT EXISTS ehrwatch_grafana SETTINGS
    readonly = 2 CONST,
    max_execution_time = 60 MAX 300,
    max_memory_usage = 4000000000 MAX 8000000000,
    max_result_rows = 1000000,
    result_overflow_mode = 'throw',
    max_concurrent_queries_for_user = 20;

-- The API: short queries, bounded memory; it must insert, so not readonly.
CREATE SETTINGS PROFILE IF NOT EXISTS ehrwatch_api SETTINGS
    max_execution_time = 120 MAX 600,
    max_memory_usage = 4000000000 MAX 8000000000,
    max_concurrent_queries_for_user = 50;

-- The pipeline: inserts are synchronous (the writer's deduplication
-- tokens and commit-after-insert rely on it), reads are reference loads.
CREATE SETTINGS PROFILE IF NOT EXISTS ehrwatch_writer SETTINGS
    async_insert = 0,
    max_execution_time = 600,
    max_memory_usage = 8000000000;

-- Roles ----------------------------------------------------------------------

CREATE ROLE IF NOT EXISTS ehrwatch_admin_role;
CREATE ROLE IF NOT EXISTS ehrwatch_writer_role;
CREATE ROLE IF NOT EXISTS ehrwatch_api_role;
CREATE ROLE IF NOT EXISTS ehrwatch_reader_role;
CREATE ROLE IF NOT EXISTS ehrwatch_reference_loader_role;

-- Migrations: everything on the ehrwatch database (CREATE/ALTER/DROP
-- TABLE and VIEW, INSERT into schema_migrations, SELECT), nothing beyond
-- it. CREATE DATABASE is needed only for `ehrwatch migrate --create-database`.
GRANT ALL ON ehrwatch.* TO ehrwatch_admin_role;

-- The pipeline (`ehrwatch run`).
GRANT INSERT ON ehrwatch.access_events TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.findings TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.dlq TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.alerts TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.alert_delivery_failures TO ehrwatch_writer_role;
GRANT INSERT, SELECT ON ehrwatch.detector_snapshots TO ehrwatch_writer_role;
-- Alerting's persisted state and lifecycle (pipeline/alerting): it reads
-- its own state, the alerts, triage's history and the findings (for the
-- findings_without_alert invariant).
GRANT INSERT, SELECT ON ehrwatch.alert_engine_state TO ehrwatch_writer_role;
GRANT INSERT, SELECT ON ehrwatch.alert_findings TO ehrwatch_writer_role;
GRANT INSERT, SELECT ON ehrwatch.alert_lifecycle TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.alerts TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.findings TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.alert_state_history TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.users TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.patients TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.encounters TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.allowlist TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.schema_migrations TO ehrwatch_writer_role;

-- The API (`ehrwatch serve`): reads, plus the INSERTs of triage, cases,
-- the allowlist editor and the audit trail.
GRANT SELECT ON ehrwatch.access_events TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.findings TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.alerts TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.alert_state TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.alert_state_history TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.users TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.encounters TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.api_audit TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.schema_migrations TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.case_history TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.cases TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.case_alerts TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.allowlist TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.allowlist_history TO ehrwatch_api_role;
GRANT INSERT ON ehrwatch.alert_state_history TO ehrwatch_api_role;
GRANT INSERT ON ehrwatch.case_history TO ehrwatch_api_role;
GRANT INSERT ON ehrwatch.allowlist TO ehrwatch_api_role;
GRANT INSERT ON ehrwatch.allowlist_history TO ehrwatch_api_role;
GRANT INSERT ON ehrwatch.api_audit TO ehrwatch_api_role;

-- Grafana: what the dashboards read. users without addresses or the
-- employee's own patient id; dlq without the payload (raw messages carry
-- patient data); no patients table at all.
GRANT SELECT ON ehrwatch.access_events TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.findings TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.alert_findings TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.alerts TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.alert_state TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.encounters TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.alert_delivery_failures TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.user_hourly_activity TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.schema_migrations TO ehrwatch_reader_role;
GRANT SELECT(user_id, first_name, last_name, role, department, status, terminated_at, updated_at) ON ehrwatch.users TO ehrwatch_reader_role;
GRANT SELECT(kafka_topic, kafka_partition, kafka_offset, kafka_key, error_class, error, received_at) ON ehrwatch.dlq TO ehrwatch_reader_role;

-- The reference feed.
GRANT INSERT ON ehrwatch.users TO ehrwatch_reference_loader_role;
GRANT INSERT ON ehrwatch.patients TO ehrwatch_reference_loader_role;
GRANT INSERT ON ehrwatch.encounters TO ehrwatch_reference_loader_role;

-- Cluster mode (clickhouse.cluster): the sharded tables are Distributed
-- tables over <name>_local tables on each shard, and a Distributed query or
-- INSERT runs there as the user who sent it (remote_servers <secret>), so
-- each grant on a sharded table is repeated on its local table. On a single
-- server these name tables that do not exist, which GRANT allows.
-- Run this file on one server when access entities are stored in Keeper
-- (<user_directories><replicated>, as in compose/cluster/cluster.xml); else
-- on every server.
GRANT INSERT ON ehrwatch.access_events_local TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.findings_local TO ehrwatch_writer_role;
GRANT INSERT ON ehrwatch.dlq_local TO ehrwatch_writer_role;
GRANT INSERT, SELECT ON ehrwatch.detector_snapshots_local TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.findings_local TO ehrwatch_writer_role;
GRANT SELECT ON ehrwatch.access_events_local TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.findings_local TO ehrwatch_api_role;
GRANT SELECT ON ehrwatch.access_events_local TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.findings_local TO ehrwatch_reader_role;
GRANT SELECT ON ehrwatch.user_hourly_activity_local TO ehrwatch_reader_role;
GRANT SELECT(kafka_topic, kafka_partition, kafka_offset, kafka_key, error_class, error, received_at) ON ehrwatch.dlq_local TO ehrwatch_reader_role;

-- Users ----------------------------------------------------------------------
-- HOST ANY: restrict to your network in production, e.g.
--   ALTER USER ehrwatch_writer HOST IP '10.20.0.0/16';

CREATE USER IF NOT EXISTS ehrwatch_admin
    IDENTIFIED WITH sha256_hash BY '{{EHRWATCH_ADMIN_PASSWORD_SHA256}}'
    HOST ANY
    DEFAULT ROLE ehrwatch_admin_role
    DEFAULT DATABASE ehrwatch;

CREATE USER IF NOT EXISTS ehrwatch_writer
    IDENTIFIED WITH sha256_hash BY '{{EHRWATCH_WRITER_PASSWORD_SHA256}}'
    HOST ANY
    DEFAULT ROLE ehrwatch_writer_role
    DEFAULT DATABASE ehrwatch
    SETTINGS PROFILE 'ehrwatch_writer';

CREATE USER IF NOT EXISTS ehrwatch_api
    IDENTIFIED WITH sha256_hash BY '{{EHRWATCH_API_PASSWORD_SHA256}}'
    HOST ANY
    DEFAULT ROLE ehrwatch_api_role
    DEFAULT DATABASE ehrwatch
    SETTINGS PROFILE 'ehrwatch_api';

CREATE USER IF NOT EXISTS ehrwatch_reader
    IDENTIFIED WITH sha256_hash BY '{{EHRWATCH_READER_PASSWORD_SHA256}}'
    HOST ANY
    DEFAULT ROLE ehrwatch_reader_role
    DEFAULT DATABASE ehrwatch
    SETTINGS PROFILE 'ehrwatch_grafana';

CREATE USER IF NOT EXISTS ehrwatch_reference_loader
    IDENTIFIED WITH sha256_hash BY '{{EHRWATCH_REFERENCE_LOADER_PASSWORD_SHA256}}'
    HOST ANY
    DEFAULT ROLE ehrwatch_reference_loader_role
    DEFAULT DATABASE ehrwatch
    SETTINGS PROFILE 'ehrwatch_writer';

GRANT ehrwatch_admin_role TO ehrwatch_admin;
GRANT ehrwatch_writer_role TO ehrwatch_writer;
GRANT ehrwatch_api_role TO ehrwatch_api;
GRANT ehrwatch_reader_role TO ehrwatch_reader;
GRANT ehrwatch_reference_loader_role TO ehrwatch_reference_loader;
