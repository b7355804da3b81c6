-- Load patients.ndjson (schemas.Patient) into ehrwatch.patients; see users.sql.
-- next_of_kin_user_ids and guarantor_user_id (migration 0017) are read by
-- the family detector as from the files.
INSERT INTO patients (patient_id, first_name, last_name, address_line, city, state, postal_code, date_of_birth, vip, deceased_at, employee_user_id, next_of_kin_user_ids, guarantor_user_id)
SELECT patient_id, first_name, last_name,
       address.line, address.city, address.state, address.postal_code,
       toDateOrNull(date_of_birth), vip, deceased_at, employee_user_id, next_of_kin_user_ids, guarantor_user_id
FROM input('patient_id String, first_name String, last_name String, address Tuple(line String, city String, state String, postal_code String), date_of_birth String, vip Bool, deceased_at Nullable(DateTime64(3, \'UTC\')), employee_user_id String, next_of_kin_user_ids Array(String), guarantor_user_id String')
SETTINGS date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1
FORMAT JSONEachRow
