-- Load encounters.ndjson (schemas.Encounter) into ehrwatch.encounters; see
-- users.sql. An encounter without "end" is open (end_time NULL).
INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team)
SELECT encounter_id, patient_id, department, start, `end`, care_team
FROM input('encounter_id String, patient_id String, department String, start DateTime64(3, \'UTC\'), `end` Nullable(DateTime64(3, \'UTC\')), care_team Array(String)')
SETTINGS date_time_input_format = 'best_effort', input_format_skip_unknown_fields = 1
FORMAT JSONEachRow
