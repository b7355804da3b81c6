package store

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Writer inserts Batches into ClickHouse: one INSERT per table per batch,
// each carrying an insert_deduplication_token (Batch.Token), so a retried
// INSERT whose first attempt did land is dropped by the server instead of
// stored twice. The tables are ReplacingMergeTrees keyed on each row's
// identity, which also collapses duplicates that a crash between insert and
// offset commit lets through (query with FINAL for exact counts).
//
// A Writer is safe for concurrent use if its connection is.
type Writer struct {
	conn driver.Conn
	// OnInsert, when set, is called after every INSERT attempt with the
	// table, the row count, how long it took and its error.
	OnInsert func(table string, rows int, took time.Duration, err error)
}

// NewWriter returns a Writer on conn.
func NewWriter(conn driver.Conn) *Writer { return &Writer{conn: conn} }

// InsertError is an INSERT that failed. Err may carry server text that
// quotes row values: log it through a redacting helper, never verbatim.
type InsertError struct {
	Table string
	Rows  int
	Err   error
}

func (e *InsertError) Error() string {
	return fmt.Sprintf("insert %d rows into %s: %v", e.Rows, e.Table, e.Err)
}

func (e *InsertError) Unwrap() error { return e.Err }

// Write inserts every table of b that is not yet inserted, in Tables
// order, and marks each as inserted when its INSERT succeeds. It stops at
// the first failure and returns an *InsertError; calling Write again with
// the same batch retries from there, with the same tokens.
func (w *Writer) Write(ctx context.Context, b *Batch) error {
	for _, table := range Tables {
		n := b.Rows(table)
		if n == 0 || b.Inserted(table) {
			continue
		}
		start := time.Now()
		err := w.insert(ctx, b, table)
		if w.OnInsert != nil {
			w.OnInsert(table, n, time.Since(start), err)
		}
		if err != nil {
			return &InsertError{Table: table, Rows: n, Err: err}
		}
		b.markInserted(table)
	}
	return nil
}

const (
	insertEvents = `INSERT INTO access_events (event_id, event_time, logged_time, source, facility_id,
	user_id, user_role, user_department, workstation_id, client_ip, patient_id, encounter_id,
	action, resource, break_glass, break_glass_reason, outcome, kafka_topic, kafka_partition, kafka_offset)`
	insertFindings = `INSERT INTO findings (finding_id, detector, severity, score, facility_id, user_id,
	patient_id, window_start, window_end, event_ids, explanation, evidence, suppressed,
	suppression_reason, kafka_partition, kafka_offset)`
	insertDLQ = `INSERT INTO dlq (kafka_topic, kafka_partition, kafka_offset, kafka_key, error_class,
	error, payload, received_at)`
	insertSnapshots = `INSERT INTO detector_snapshots (consumer_group, kafka_topic, kafka_partition, kafka_offset,
	snapshot, taken_at)`
)

func (w *Writer) insert(ctx context.Context, b *Batch, table string) (err error) {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"insert_deduplication_token": b.Token(table),
	}))
	var query string
	switch table {
	case TableEvents:
		query = insertEvents
	case TableFindings:
		query = insertFindings
	case TableDLQ:
		query = insertDLQ
	case TableSnapshots:
		query = insertSnapshots
	default:
		return fmt.Errorf("unknown table %q", table)
	}
	batch, err := w.conn.PrepareBatch(ctx, query)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil && !batch.IsSent() {
			_ = batch.Abort()
		}
	}()
	switch table {
	case TableEvents:
		err = appendEvents(batch, b.Events)
	case TableFindings:
		err = appendFindings(batch, b.Findings)
	case TableDLQ:
		err = appendDLQ(batch, b.DeadLetters)
	case TableSnapshots:
		err = appendSnapshots(batch, b.Snapshots)
	}
	if err != nil {
		return err
	}
	return batch.Send()
}

func appendEvents(batch driver.Batch, rows []EventRow) error {
	for i := range rows {
		r := &rows[i]
		ev := r.Event
		if err := batch.Append(
			ev.EventID, ev.EventTime, ev.LoggedTime, ev.Source, ev.FacilityID,
			ev.UserID, ev.UserRole, ev.UserDepartment, ev.WorkstationID, nullable(ev.ClientIP), ev.PatientID, nullable(ev.EncounterID),
			string(ev.Action), ev.Resource, ev.BreakGlass, ev.BreakGlassReason, string(ev.Outcome),
			r.Topic, uint32(r.Partition), uint64(r.Offset),
		); err != nil {
			return fmt.Errorf("row at offset %d: %w", r.Offset, err)
		}
	}
	return nil
}

func appendFindings(batch driver.Batch, rows []FindingRow) error {
	for i := range rows {
		r := &rows[i]
		f := r.Finding
		evidence, err := json.Marshal(f.Evidence)
		if err != nil {
			return fmt.Errorf("finding at offset %d: evidence: %w", r.Offset, err)
		}
		ids := f.EventIDs
		if ids == nil {
			ids = []string{}
		}
		if err := batch.Append(
			f.FindingID, f.Detector, string(f.Severity), f.Score, f.FacilityID, f.UserID,
			f.PatientID, f.WindowStart, f.WindowEnd, ids, f.Explanation, string(evidence), f.Suppressed,
			f.SuppressionReason, uint32(r.Partition), uint64(r.Offset),
		); err != nil {
			return fmt.Errorf("finding at offset %d: %w", r.Offset, err)
		}
	}
	return nil
}

func appendDLQ(batch driver.Batch, rows []DLQRow) error {
	for i := range rows {
		r := &rows[i]
		if err := batch.Append(
			r.Topic, uint32(r.Partition), uint64(r.Offset), string(r.Key), r.ErrorClass,
			r.Error, string(r.Payload), r.ReceivedAt,
		); err != nil {
			return fmt.Errorf("dead letter at offset %d: %w", r.Offset, err)
		}
	}
	return nil
}

func appendSnapshots(batch driver.Batch, rows []SnapshotRow) error {
	for i := range rows {
		r := &rows[i]
		if err := batch.Append(r.Group, r.Topic, uint32(r.Partition), uint64(r.Offset), string(r.Data), r.TakenAt.UTC()); err != nil {
			return fmt.Errorf("snapshot at offset %d: %w", r.Offset, err)
		}
	}
	return nil
}

// nullable maps "" to NULL for Nullable(String) columns.
func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}
