-- Detector snapshots: the newest of each hour stays, the rest are merged
-- away. 0040 kept every snapshot for three days although a restart reads
-- one, the newest below the committed offset: a snapshot every 5 minutes
-- (pipeline.snapshot_interval), or every 80 s at 2 500 events/s on four
-- partitions (snapshot_events), kept 864 to 3 240 copies of each
-- partition's state.
-- Now the sorting key holds the hour the snapshot was taken in, and
-- ReplacingMergeTree(taken_at) keeps the latest taken in each hour:
-- at most 72 per partition over the three days, plus those of parts not
-- merged yet. Reads are unchanged (newest below the committed offset,
-- without FINAL, so rows not merged yet still serve). When the newest of
-- an hour is past the committed offset (a commit lost after its flush),
-- the newest of an earlier hour is restored and about an hour more is
-- replayed.
--
-- ClickHouse cannot change a sorting key in place, so the table is
-- rebuilt as 0070 rebuilt findings: copied into detector_snapshots_next,
-- swapped in by one RENAME, and the old table dropped. The copy streams
-- (no sort: sorting the snapshots of three days would hold them all in
-- memory); the new table collapses each inserted block and its merges do
-- the rest. Each step can be re-run after a failure. Stop `ehrwatch run`
-- while it runs: a snapshot written during the copy is lost, and its
-- partition restores an older one and replays further.
DROP TABLE IF EXISTS detector_snapshots_old;
DROP TABLE IF EXISTS detector_snapshots_next;
CREATE TABLE detector_snapshots_next
(
    consumer_group  LowCardinality(String),
    kafka_topic     LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset    UInt64,
    snapshot        String,
    taken_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(taken_at)
PARTITION BY toDate(taken_at)
ORDER BY (consumer_group, kafka_topic, kafka_partition, toStartOfHour(taken_at))
TTL toDateTime(taken_at) + INTERVAL 3 DAY
SETTINGS non_replicated_deduplication_window = 1000, ttl_only_drop_parts = 1;
INSERT INTO detector_snapshots_next SELECT * FROM detector_snapshots;
RENAME TABLE detector_snapshots TO detector_snapshots_old, detector_snapshots_next TO detector_snapshots;
DROP TABLE detector_snapshots_old;
