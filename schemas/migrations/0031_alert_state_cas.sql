-- Optimistic concurrency for triage updates. Each history row gets a
-- random change_id, and a new version is inserted with the deduplication
-- token "<alert_id>/v<version>": of two writers racing for the same version
-- ClickHouse keeps the first row and drops the second, and each writer
-- reads back change_id to learn whether it won. alert_state deduplicates
-- the view's blocks too, so the dropped row never becomes the current state.
ALTER TABLE alert_state_history ADD COLUMN IF NOT EXISTS change_id String;
ALTER TABLE alert_state_history MODIFY SETTING non_replicated_deduplication_window = 10000;
ALTER TABLE alert_state MODIFY SETTING non_replicated_deduplication_window = 10000;
