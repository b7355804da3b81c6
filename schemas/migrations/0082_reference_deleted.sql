-- Incremental refresh of reference data (issue #13): ehrwatch reads only
-- the rows whose updated_at (the ReplacingMergeTree version, DEFAULT
-- now64(3) at insert) is newer than its last read, so a row cannot simply
-- disappear: a user, patient or encounter is removed by inserting its row
-- again with deleted = true (and a newer updated_at). Every read leaves
-- deleted rows out; a full reload does too.
ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted Bool DEFAULT false AFTER patient_id;

ALTER TABLE patients ADD COLUMN IF NOT EXISTS deleted Bool DEFAULT false AFTER guarantor_user_id;

ALTER TABLE encounters ADD COLUMN IF NOT EXISTS deleted Bool DEFAULT false AFTER care_team;

-- The change queries select ids by updated_at: a minmax skip index lets
-- them skip the granules not written since the last read.
ALTER TABLE users ADD INDEX IF NOT EXISTS updated_at_minmax updated_at TYPE minmax GRANULARITY 1;

ALTER TABLE patients ADD INDEX IF NOT EXISTS updated_at_minmax updated_at TYPE minmax GRANULARITY 1;

ALTER TABLE encounters ADD INDEX IF NOT EXISTS updated_at_minmax updated_at TYPE minmax GRANULARITY 1;
