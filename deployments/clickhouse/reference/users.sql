-- Load users.ndjson (schemas.User, one JSON object a line; the format of
-- `ehrwatch gen --out DIR`'s DIR/reference/users.ndjson and of the HR feed)
-- into ehrwatch.users. Run by load-reference.sh with the file on stdin:
--   clickhouse-client --database ehrwatch --query "$(cat users.sql)" < users.ndjson
-- The latest updated_at per user_id wins (ReplacingMergeTree), so reloading
-- a newer export replaces the old rows.
INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state, postal_code, status, terminated_at, patient_id)
SELECT user_id, first_name, last_name, role, department,
       address.line, address.city, address.state, address.postal_code,
       status, terminated_at, patient_id
FROM input('user_id String, first_name String, last_name String, role String, department String, address Tuple(line String, city String, state String, postal_code String), status String, terminated_at Nullable(DateTime64(3, \'UTC\')), patient_id String')
SETTINGS date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1
FORMAT JSONEachRow
