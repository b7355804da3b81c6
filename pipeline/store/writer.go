package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
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
// Two things split a table's INSERT into sub-inserts, each with the token
// of its own rows:
//
//   - Partitions: access_events and findings are partitioned by month, and
//     ClickHouse refuses an INSERT block that touches more than
//     max_partitions_per_insert_block partitions (100 by default). Rows are
//     grouped by month, in month order, MaxPartitionsPerInsert months per
//     sub-insert, so a backfill of years of events stores.
//   - Refusals: an INSERT the server refuses because of the rows
//     themselves (see RefusedByData: a violated constraint, a value it
//     cannot parse or convert, too many partitions) is bisected, half by
//     half, until the refused rows are isolated; the rest is stored. A
//     refused event or finding becomes a dead letter of class
//     ClassRejectedByStorage in the same batch (Batch.Rejected lists them).
//
// The split is a function of the batch's rows only, so a Write retried
// after a transient error sends the same sub-inserts with the same tokens,
// and skips those already stored.
//
// A Writer is safe for concurrent use if its connection is.
type Writer struct {
	conn driver.Conn
	// MaxPartitionsPerInsert bounds the months one INSERT into
	// access_events or findings touches (DefaultMaxPartitionsPerInsert
	// when 0). Keep it at or below the server's
	// max_partitions_per_insert_block.
	MaxPartitionsPerInsert int
	// OnInsert, when set, is called after every INSERT attempt with the
	// table, the row count, how long it took and its error.
	OnInsert func(table string, rows int, took time.Duration, err error)
}

// DefaultMaxPartitionsPerInsert is ClickHouse's default
// max_partitions_per_insert_block.
const DefaultMaxPartitionsPerInsert = 100

// ClassRejectedByStorage is the dead-letter class of a row ClickHouse
// refused.
const ClassRejectedByStorage = "rejected_by_storage"

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

// rowError is a row the client could not convert for its column: the rows
// are at fault, not the server.
type rowError struct{ err error }

func (e *rowError) Error() string { return e.err.Error() }
func (e *rowError) Unwrap() error { return e.err }

// dataRefusalCodes are ClickHouse errors caused by the rows of an INSERT:
// the same rows are refused again, other rows are not.
var dataRefusalCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	53:  true, // TYPE_MISMATCH
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
	469: true, // VIOLATED_CONSTRAINT
	691: true, // UNKNOWN_ELEMENT_OF_ENUM
}

// RefusedByData reports whether err is an INSERT refusal caused by the
// rows themselves, which retrying cannot cure and a smaller INSERT without
// the offending rows avoids: the codes above, code 252 TOO_MANY_PARTS when
// it is about the partitions of one INSERT block (not about merges falling
// behind, which is overload and transient), and rows the client could not
// convert. Schema, access and network errors are not.
func RefusedByData(err error) bool {
	if err == nil {
		return false
	}
	var re *rowError
	if errors.As(err, &re) {
		return true
	}
	var ex *clickhouse.Exception
	if !errors.As(err, &ex) {
		return false
	}
	if ex.Code == 252 {
		return strings.Contains(ex.Message, "partitions for single INSERT block")
	}
	return dataRefusalCodes[ex.Code]
}

// Write inserts every table of b that is not yet inserted, in Tables
// order, and marks each as inserted when all its sub-inserts succeeded or
// were refused row by row. It stops at the first error that is not a
// refusal by data and returns an *InsertError; calling Write again with the
// same batch retries from there, with the same tokens.
func (w *Writer) Write(ctx context.Context, b *Batch) error {
	for _, table := range Tables {
		n := b.Rows(table)
		if n == 0 || b.Inserted(table) {
			continue
		}
		for _, rows := range w.pieces(b, table) {
			if err := w.insertPiece(ctx, b, table, rows); err != nil {
				return err
			}
		}
		b.markInserted(table)
	}
	return nil
}

// pieces splits table's rows into sub-inserts of at most
// MaxPartitionsPerInsert months each (nil: one INSERT of every row).
func (w *Writer) pieces(b *Batch, table string) [][]int {
	var month func(i int) int
	switch table {
	case TableEvents:
		month = func(i int) int { return yyyymm(b.Events[i].Event.EventTime) }
	case TableFindings:
		month = func(i int) int { return yyyymm(b.Findings[i].Finding.WindowStart) }
	default:
		return [][]int{nil}
	}
	limit := w.MaxPartitionsPerInsert
	if limit <= 0 {
		limit = DefaultMaxPartitionsPerInsert
	}
	n := b.Rows(table)
	months := map[int]int{} // month -> group
	for i := range n {
		months[month(i)] = 0
	}
	if len(months) <= limit {
		return [][]int{nil}
	}
	sorted := slices.Sorted(maps.Keys(months))
	for k, m := range sorted {
		months[m] = k / limit
	}
	out := make([][]int, (len(sorted)+limit-1)/limit)
	for i := range n {
		g := months[month(i)]
		out[g] = append(out[g], i)
	}
	return out
}

func yyyymm(t time.Time) int {
	t = t.UTC()
	return t.Year()*100 + int(t.Month())
}

// insertPiece inserts table's rows listed in rows (nil: all), bisecting it
// when the server refuses it because of its rows.
func (w *Writer) insertPiece(ctx context.Context, b *Batch, table string, rows []int) error {
	tok := b.token(table, rows)
	if b.stored[tok] {
		return nil
	}
	n := len(rows)
	if rows == nil {
		n = b.Rows(table)
	}
	err, refused := b.refused[tok]
	if !refused {
		start := time.Now()
		err = w.insert(ctx, b, table, rows, tok)
		if w.OnInsert != nil {
			w.OnInsert(table, n, time.Since(start), err)
		}
		if err == nil {
			b.markStored(tok)
			return nil
		}
		if !RefusedByData(err) {
			return &InsertError{Table: table, Rows: n, Err: err}
		}
		if b.refused == nil {
			b.refused = map[string]error{}
		}
		b.refused[tok] = err
	}
	if n == 1 {
		i := 0
		if rows != nil {
			i = rows[0]
		}
		b.reject(table, i, err)
		b.markStored(tok)
		return nil
	}
	if rows == nil {
		rows = make([]int, n)
		for i := range rows {
			rows[i] = i
		}
	}
	mid := n / 2
	if err := w.insertPiece(ctx, b, table, rows[:mid:mid]); err != nil {
		return err
	}
	return w.insertPiece(ctx, b, table, rows[mid:])
}

const (
	insertEvents = `INSERT INTO access_events (event_id, event_time, logged_time, source, facility_id,
	user_id, user_role, user_department, workstation_id, client_ip, patient_id, encounter_id,
	action, resource, break_glass, break_glass_reason, outcome, kafka_topic, kafka_partition, kafka_offset)`
	insertFindings = `INSERT INTO findings (finding_id, detector, severity, score, facility_id, user_id,
	patient_id, window_start, window_end, event_ids, explanation, evidence, suppressed,
	suppression_reason, kafka_partition, kafka_offset)`
	insertDLQ = `INSERT INTO dlq (kafka_topic, kafka_partition, kafka_offset, kafka_key, error_class,
	error, payload, received_at, record_id, payload_size, payload_sha256, payload_truncated)`
	insertSnapshots = `INSERT INTO detector_snapshots (consumer_group, kafka_topic, kafka_partition, kafka_offset,
	snapshot, taken_at)`
)

func (w *Writer) insert(ctx context.Context, b *Batch, table string, rows []int, token string) (err error) {
	ctx = clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"insert_deduplication_token": token,
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
	eachRow(b.Rows(table), rows, func(i int) {
		if err != nil {
			return
		}
		switch table {
		case TableEvents:
			err = appendEvent(batch, &b.Events[i])
		case TableFindings:
			err = appendFinding(batch, &b.Findings[i])
		case TableDLQ:
			err = appendDLQ(batch, &b.DeadLetters[i])
		case TableSnapshots:
			err = appendSnapshot(batch, &b.Snapshots[i])
		}
	})
	if err != nil {
		return &rowError{err: err}
	}
	return batch.Send()
}

func appendEvent(batch driver.Batch, r *EventRow) error {
	ev := r.Event
	if err := batch.Append(
		ev.EventID, ev.EventTime, ev.LoggedTime, ev.Source, ev.FacilityID,
		ev.UserID, ev.UserRole, ev.UserDepartment, ev.WorkstationID, nullable(ev.ClientIP), ev.PatientID, nullable(ev.EncounterID),
		string(ev.Action), ev.Resource, ev.BreakGlass, ev.BreakGlassReason, string(ev.Outcome),
		r.Topic, uint32(r.Partition), uint64(r.Offset),
	); err != nil {
		return fmt.Errorf("row at offset %d: %w", r.Offset, err)
	}
	return nil
}

func appendFinding(batch driver.Batch, r *FindingRow) error {
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
	return nil
}

func appendDLQ(batch driver.Batch, r *DLQRow) error {
	size := r.PayloadSize
	if size == 0 {
		size = int64(len(r.Payload))
	}
	if err := batch.Append(
		r.Topic, uint32(r.Partition), uint64(r.Offset), string(r.Key), r.ErrorClass,
		r.Error, string(r.Payload), r.ReceivedAt, r.RecordID, uint64(size), r.PayloadSHA256, r.PayloadTruncated,
	); err != nil {
		return fmt.Errorf("dead letter at offset %d: %w", r.Offset, err)
	}
	return nil
}

func appendSnapshot(batch driver.Batch, r *SnapshotRow) error {
	if err := batch.Append(r.Group, r.Topic, uint32(r.Partition), uint64(r.Offset), string(r.Data), r.TakenAt.UTC()); err != nil {
		return fmt.Errorf("snapshot at offset %d: %w", r.Offset, err)
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
