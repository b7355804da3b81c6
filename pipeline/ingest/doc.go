// Package ingest is ehrwatch's streaming core: it consumes access events
// from Kafka in a consumer group, decodes them, runs the detectors in
// partition order, stores events and findings in ClickHouse in idempotent
// batches, dead-letters what it cannot decode, and commits each partition's
// highest contiguous durably-handled offset.
//
// Build one with New, run it with Run; Handler serves /metrics, /healthz and
// /readyz.
//
// # Architecture
//
// kafka-go's explicit consumer-group API (kafka.NewConsumerGroup) hands out
// one Generation at a time. For each generation the pipeline starts, bound
// to the generation with Generation.Start:
//
//   - one consumer goroutine per assigned partition, with a Processor (the
//     partition's detectors) and an offset tracker, and beside it the
//     partition's fetcher (fetch.go): a goroutine that keeps a connection
//     to the partition's leader, positioned at the generation's assigned
//     offset, sends one fetch request at a time (kafka-go's
//     Conn.ReadBatchWith) and hands the consumer the fetched messages in
//     slices of up to 256. Nothing is committed by fetching. The consumer
//     decodes, runs the detectors and submits the results to the sink in chunks, in offset
//     order: a chunk goes when it holds 256 records or when no message
//     arrived within pipeline.handoff_linger of its first record, and
//     always before the consumer waits for anything else (a snapshot, a
//     fetch retry, the drain);
//   - one committer goroutine, which commits every partition's committable
//     offset with Generation.CommitOffsets every commit_interval and after
//     every stored batch;
//   - one lag probe, which reads the partitions' high watermarks every
//     lag_interval.
//
// The sink is shared by all partitions: a batcher goroutine fills a batch
// (events, findings and dead letters from any partition) until it holds
// batch_max_rows rows or is batch_max_wait old, and hands it to a flusher
// goroutine, which inserts it (one INSERT per table, split and bisected as
// described under Dead letters), then produces the batch's dead letters to
// the DLQ topic, retrying until both succeed, hands the batch's findings to
// the after-store hook (Deps.AfterStore: alerting), retrying the hook alone
// until it succeeds, and finally acks its offsets in the partitions'
// trackers. The batcher fills the next batch while the
// flusher writes the previous one. So for every batch: stored, then seen by
// alerting, then committable; a hook that keeps failing holds the commits
// back and /readyz names it ("after_store").
//
// # Delivery guarantees
//
// At least once into ClickHouse, effectively once after deduplication:
//
//   - An offset is committed only when it and every offset fetched before it
//     on its partition is durably handled: stored in ClickHouse, or, for a
//     dead letter (see Dead letters), produced to the DLQ topic
//     (acknowledged by all in-sync replicas) and stored in the dlq table.
//     Offsets that do not exist (compaction, transaction markers) never
//     hold a commit back, nor do well-formed messages that are not chart
//     accesses (a login, a search without a patient: schemas.ErrNotAccess),
//     which are counted by reason in ehrwatch_events_ignored_total and
//     committed with the batch they fall in, neither stored nor
//     dead-lettered.
//   - Commits go through the generation that assigned the partition: once
//     this member has lost a partition (evicted, or the group moved on), its
//     commit is refused by the coordinator instead of overwriting the new
//     owner's progress.
//   - A crash (or an eviction) after an INSERT and before its commit makes
//     the next owner consume those messages again. Every INSERT carries an
//     insert_deduplication_token derived from the batch's offset ranges and
//     row ids, so a retried identical batch is dropped by the server, and the
//     tables are ReplacingMergeTrees keyed on each row's identity, so a
//     re-read that lands in a differently composed batch collapses on merge:
//     count with FINAL, or uniqExact(event_id), for exact numbers. Finding ids
//     are deterministic, so re-detected findings collapse the same way. The
//     DLQ topic is at least once too; its consumers can deduplicate on the
//     source topic/partition/offset headers.
//   - On a ClickHouse cluster (clickhouse.cluster) the same holds per
//     shard: the writes go to Distributed tables synchronously
//     (insert_distributed_sync), so the token reaches the shard's
//     Replicated table, whose deduplication spans its replicas, and every
//     sharding key is a function of the row's identity, so the copies a
//     re-read writes land on the shard holding the first
//     (docs/architecture.md, "Cluster mode").
//   - A graceful stop (SIGTERM, or a rebalance) stores and commits everything
//     it processed, so it causes no re-reads at all.
//   - Alerts follow the findings exactly: the after-store hook
//     (pipeline/alerting with ClickHouse) keeps its grouping and
//     notification state in alert_engine_state, keyed by alert id, user
//     and patient, and writes it before the batch is acknowledged, so a
//     replayed batch changes nothing and no late finding is dropped.
//
// # Detector state
//
// A Processor that is a StatefulProcessor (*detectors.Engine) is
// checkpointed into detector_snapshots (gzip-compressed), always behind
// the event it follows (offset X), so it is stored in the same batch as
// that event or a later one, before the commit that covers X:
//
//   - when its partition is revoked or the pipeline stops (the drain of a
//     generation: rebalance, SIGTERM), after the last processed event,
//     if the detectors processed anything since the last snapshot;
//   - every pipeline.snapshot_events events or pipeline.snapshot_interval
//     (checked at each event), so a process that is killed loses at most
//     that much detector progress; while a warm-up re-reads (below), only
//     every snapshot_interval (and at its first new event, when it re-read
//     snapshot_events or more).
//
// When a partition is assigned with a committed offset C, the new owner
// loads the newest snapshot of its consumer group, topic and partition
// whose offset X is below C (a snapshot at or past C reflects events whose
// storage was never committed, and is never used), restores it into a
// fresh Processor and starts reading at X+1. After a graceful stop or a
// rebalance X is C-1: the new owner continues at C at once. Without a
// usable snapshot (never taken, the process was killed before its first
// one, snapshots off, unreadable, or its next event no longer retained by
// Kafka) the detectors start fresh and re-read the partition from the
// warm-up start: its oldest retained offset (pipeline.warmup_horizon 0,
// the default), or the first message Kafka timestamped within the horizon
// before now.
//
// Offsets below C are only fed to the detectors: their findings are
// dropped, their events and dead letters are not stored or produced
// again, and alerting does not see them; the previous owner stored all of
// it before it committed C. From C on the restored or rebuilt detectors
// are in the state an uninterrupted run's were in at C (the same events
// in the same order from the same start; detectors.Engine snapshots hold
// its watermark, open windows and remembered findings), so the findings
// after a restart, kill or rebalance are those of an uninterrupted run, as
// long as Kafka still holds what the rebuild needs: the events after the
// newest snapshot, or, without one, every event the group consumed. A
// warm-up horizon shorter than that trades exactness for time: the
// volume detector's personal baselines need the last
// detection.detectors.volume.history_days (14) local days, and the
// off-hours histograms decay with a 28-day half-life from each user's
// first event, so they come back short and findings near the restart can
// differ in score or be missed. Re-reading costs what detection costs
// without storage (figures in README.md and docs/benchmarks.md).
// Reference data and the allowlist are those loaded now, not those of
// the time the events were first seen. Snapshots live three days, and of
// each partition's snapshots of one hour only the latest taken is kept
// (migrations 0040, 0090): after a lost commit (the newest snapshot of
// its hour past C) the newest of an earlier hour serves, and about an
// hour more is re-read.
//
// # Ordering
//
// Producers key access events by user_id, so Kafka puts all of a user's
// events on one partition, in the order they were produced. ehrwatch relies
// on exactly that and nothing more: each partition is consumed by one
// goroutine that passes its events, in offset order, one at a time, to that
// partition's own detectors. A user's events are therefore seen in the
// order the producer wrote them; there is no ordering between partitions
// (and hence between users), and none by event time: detectors reason on
// event time with watermarks and tolerate late events. When a partition moves
// to another instance (rebalance, restart, kill), the new owner restores the
// detectors' state from the newest snapshot below the last committed offset,
// or rebuilds it from the warm-up start, and feeds its detectors every event
// from there in offset order (see Detector state), so each detector sees
// one unbroken offset-ordered stream across the move, with the default
// configuration; events below the committed offset only rebuild state.
//
// # Backpressure
//
// Every queue is bounded: each partition's fetcher prefetches about
// kafka.queue_capacity messages (in slices of up to 256) besides the fetch
// response it is reading, each consumer's chunk at most 256 records,
// the queue between the consumers and the batcher holds
// pipeline.queue_size records, and at most two batches (one being
// written, one filling) of pipeline.batch_max_rows rows exist. When
// ClickHouse (or the DLQ topic) is unreachable, the flusher retries with
// exponential backoff and jitter (pipeline.retry; the pauses come from
// package pipeline/internal/backoff, which the alert deliveries use too), the
// batcher fills up and stops reading, the consumers block and stop
// fetching, and /readyz answers 503 with the reason. Nothing is dropped
// and nothing unstored is committed: Kafka is the buffer, as long as the
// topic's retention keeps the events (offsets it deletes before they are
// fetched are skipped, logged and counted in
// ehrwatch_fetch_skipped_offsets_total). Data never stops the pipeline: a message it cannot
// decode, an implausible event time and a row the server refuses each
// become a dead letter and the partition moves on (see Dead letters). Only
// errors about the deployment that retrying cannot fix (unknown table or
// database, access denied) stop it: Run returns the error and the process
// exits non-zero without committing what failed.
//
// # Dead letters
//
// Every message that cannot become a stored event ends in the DLQ topic
// and the dlq table, with its class (header ehrwatch-error-class, column
// error_class), whatever its size; docs/dead-letters.md lists the classes:
//
//   - the decoder's classes (schemas.ErrorClass: syntax, too_large, …);
//   - implausible_event_time: the event time lies outside
//     pipeline.event_time (30 days back, 1 day ahead by default) around
//     its logged_time, else its Kafka timestamp, or outside 1970..2105,
//     which the tables' TTL cannot hold. Decided from the message alone,
//     before the detectors see the event, and again when a partition is
//     re-read to rebuild detector state, so they never see it;
//   - rejected_by_storage: ClickHouse refused the row for a reason that
//     retrying cannot cure (store.RefusedByData: a violated constraint, a
//     value it cannot parse, too many partitions in one block). The
//     refused INSERT is bisected until the refused rows are isolated; the
//     rest of the batch is stored, every sub-insert with the
//     deduplication token of its own rows, so a retried batch deduplicates
//     sub-insert by sub-insert. The payload is the row as canonical JSON.
//     The findings the detectors drew from a refused event are stored and
//     alerted as usual (the access happened and was seen); a refused
//     finding is dead-lettered too (record_id = its id); a refused
//     snapshot is dropped (the previous one stays in use); a refused dead
//     letter stays on the DLQ topic only. Transient errors (network,
//     overload, a server restarting) are retried with backoff, never
//     bisected.
//
// Sizes: the DLQ producer reads the DLQ topic's max.message.bytes
// (DescribeConfigs; Kafka's default 1048588 when it cannot) and sizes its
// writer from it (kafka-go's own default would refuse messages over 1 MiB);
// a dead letter that does not fit keeps its first bytes, flagged
// ehrwatch-payload-truncated, with ehrwatch-payload-size and
// ehrwatch-payload-sha256 describing the whole. If the brokers still refuse
// a message as too large (the topic's limit was lowered), the producer
// reads the limit again, or halves its own, and retries. The dlq table
// keeps at most pipeline.dead_letter_max_payload bytes (1 MiB) the same
// way (payload_truncated, payload_size, payload_sha256). Partition fetchers
// fetch messages larger than kafka.max_bytes: the brokers return an
// oversized first record batch whole (KIP-74) and kafka-go reads it, so a
// message as large as the source topic accepts is consumed (the poison
// suite dead-letters a 50 MB one with the 8 MiB default).
//
// Storage layout: access_events and findings are partitioned by month and
// ClickHouse refuses an INSERT block spanning more than
// max_partitions_per_insert_block months (100 by default). The writer
// groups a batch's rows by month, in month order, at most
// pipeline.max_partitions_per_insert months per INSERT, so a backfill of
// years of events (with a widened pipeline.event_time.max_past, within the
// tables' retention) is stored like any other batch.
//
// # Readiness
//
// /readyz answers 503 with every reason: a consumer group that cannot be
// joined, a partition fetcher whose fetches fail (three errors in a row,
// about 0.3s after a broker is lost), an offset commit that fails (the
// committer commits every commit_interval, the unchanged offsets too, so
// this shows within commit_interval on an idle pipeline), a write or the
// after-store hook being retried, and what the process reports through
// SetCondition (reference data, and, in ehrwatch run, ClickHouse
// unreachable at start-up, which run waits for with backoff).
//
// # Shutdown and rebalances
//
// When Run's context ends (SIGTERM), the pipeline closes the consumer group,
// which ends the current generation: each partition consumer stops
// fetching, hands on the chunk it was filling, waits until what it
// submitted is stored and has passed the
// after-store hook (at most pipeline.drain_timeout), the committer commits
// while the generation is still valid, the partition's detectors and
// tracker are dropped, and only then does the member leave the group. Then
// the sink and the DLQ producer stop. All of it is bounded by pipeline.shutdown_timeout; whatever was not
// committed by then is consumed again after the restart. A rebalance runs
// the same drain for the generation that ends, then joins the next one; the
// drain must finish within the Kafka session and rebalance timeouts, which
// the configuration enforces.
//
// # Latency
//
// Two histograms say how old an access is when ehrwatch is done with it,
// counted from the message's Kafka timestamp (the producer's clock with
// the topic's default CreateTime, so skew between the producer and
// ehrwatch shows in them; negative ages count as 0):
//
//   - ehrwatch_event_to_stored_seconds{table}: when the INSERT holding the
//     row succeeded, for access_events and for findings (a finding carries
//     the Kafka timestamp of the event that completed it in
//     schemas.Finding.ReceivedAt, which is neither stored nor serialized);
//   - ehrwatch_event_to_alert_seconds{output,detector} (pipeline/alerting):
//     when an output delivered a notification, from the Kafka timestamp of
//     the newest finding of the batch that the alert lists (a finding read
//     back from storage has none and records nothing).
//
// What bounds them: a record waits for its consumer's chunk (at most
// pipeline.handoff_linger without a new message), then for its batch
// (pipeline.batch_max_wait, or less when batch_max_rows fill first),
// then for the previous batch's write (one batch in flight) and its own
// INSERT; an alert then waits for the after-store hook's state write and
// the send. kafka.max_wait adds only when kafka.min_bytes is above 1.
// Windowed detectors emit a finding when its window closes in event time,
// so (b) and (c) start at the event that completes the finding, not at
// the first one. `ehrwatch bench latency` measures all three
// (docs/benchmarks.md, "Latency"); the buckets (LatencyBuckets) are 25%
// wide.
//
// # Logs and patient data
//
// Logs carry topics, partitions, offsets, event ids, error classes and
// fields, counts and durations. They never carry payloads or patient data
// (patient ids, names, addresses, client addresses, break-glass reasons):
// undecodable messages are logged by error class and field, ClickHouse
// server errors (which may quote row values) by code and name only
// (Redact), and detector errors are logged as returned, so detectors must
// keep patient data out of them.
package ingest
