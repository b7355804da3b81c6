package store

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"slices"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// The tables a Batch writes, in the order Writer inserts them.
const (
	TableEvents    = "access_events"
	TableFindings  = "findings"
	TableDLQ       = "dlq"
	TableSnapshots = "detector_snapshots"
)

// Tables lists the tables a Batch writes, in insert order. Snapshots come
// last: a snapshot reflects events of the same batch, and is only useful
// once they are stored.
var Tables = []string{TableEvents, TableFindings, TableDLQ, TableSnapshots}

// Position is where a row came from in Kafka.
type Position struct {
	Topic     string
	Partition int32
	Offset    int64
}

// EventRow is one access_events row: the event and the Kafka position of
// the message it was decoded from.
type EventRow struct {
	Position
	Event *schemas.AccessEvent
}

// FindingRow is one findings row: the finding and the position of the event
// that completed it.
type FindingRow struct {
	Position
	Finding *schemas.Finding
}

// DLQRow is one dlq row: a message that could not be decoded or stored, or
// a finding the server refused. Error holds the error class and field (or
// the server's error code and name) only, never input data; Payload is the
// raw message (for a refused row: the row as canonical JSON), kept under the
// table's short TTL for reprocessing. A payload larger than the pipeline's
// bound is kept in a bounded form: its first bytes, with PayloadTruncated
// set; PayloadSize and PayloadSHA256 always describe the whole payload.
type DLQRow struct {
	Position
	// RecordID tells apart several dead letters of one message: empty for
	// the message itself, the finding id for a refused finding.
	RecordID         string
	Key              []byte
	Payload          []byte
	PayloadSize      int64
	PayloadSHA256    string
	PayloadTruncated bool
	ErrorClass       string
	Error            string
	ReceivedAt       time.Time
}

// SnapshotRow is one detector_snapshots row: the state of one partition's
// detectors after the event at Position.Offset (compressed by the caller),
// for the consumer group Group.
type SnapshotRow struct {
	Position
	Group   string
	Data    []byte
	TakenAt time.Time
}

// Batch is one flush: the rows of every table, from any number of
// partitions. Rows of one partition are appended in offset order.
//
// A Batch remembers which tables Writer.Write has already inserted, so
// retrying Write after a partial failure inserts only the rest, and every
// retried INSERT carries the same deduplication token as the first attempt
// (see Token).
type Batch struct {
	Events      []EventRow
	Findings    []FindingRow
	DeadLetters []DLQRow
	Snapshots   []SnapshotRow

	// Rejected lists the rows the server refused for a reason retrying
	// cannot cure, each isolated by bisection (see Writer), in the order
	// they were isolated.
	Rejected []Rejection

	inserted map[string]bool
	// pieces remembers the sub-inserts (by token) that are stored, and
	// those the server refused (with the error), so a retried Write skips
	// the first and bisects the second straight away.
	stored  map[string]bool
	refused map[string]error
}

// Rejection is one row the server refused.
type Rejection struct {
	Table string
	// Row indexes the table's rows (Events, Findings, DeadLetters or
	// Snapshots).
	Row int
	// DeadLetter indexes the DeadLetters row the Writer added for it (an
	// event or a finding), or is -1 (a refused dead letter stays on the DLQ
	// topic only; a refused snapshot is dropped: the previous one stays in
	// use).
	DeadLetter int
	// Err is the server's error. It may quote row values: log it through
	// ErrorText only.
	Err error
}

// Len is the total number of rows over all tables.
func (b *Batch) Len() int {
	return len(b.Events) + len(b.Findings) + len(b.DeadLetters) + len(b.Snapshots)
}

// Rows is the number of rows for table.
func (b *Batch) Rows(table string) int {
	switch table {
	case TableEvents:
		return len(b.Events)
	case TableFindings:
		return len(b.Findings)
	case TableDLQ:
		return len(b.DeadLetters)
	case TableSnapshots:
		return len(b.Snapshots)
	}
	return 0
}

// Inserted reports whether Writer.Write has stored table's rows.
func (b *Batch) Inserted(table string) bool { return b.inserted[table] }

func (b *Batch) markInserted(table string) {
	if b.inserted == nil {
		b.inserted = make(map[string]bool, len(Tables))
	}
	b.inserted[table] = true
}

// Reset empties the batch for reuse, keeping its capacity.
func (b *Batch) Reset() {
	clear(b.Events)
	clear(b.Findings)
	clear(b.DeadLetters)
	clear(b.Snapshots)
	b.Events, b.Findings, b.DeadLetters = b.Events[:0], b.Findings[:0], b.DeadLetters[:0]
	b.Snapshots = b.Snapshots[:0]
	b.Rejected = b.Rejected[:0]
	clear(b.inserted)
	clear(b.stored)
	clear(b.refused)
}

// Range is the span of offsets one table's rows cover in one partition.
type Range struct {
	Topic       string
	Partition   int32
	First, Last int64
	Rows        int
}

// Ranges returns, sorted by topic and partition, the offset ranges that
// table's rows cover.
func (b *Batch) Ranges(table string) []Range { return b.ranges(table, nil) }

// ranges is Ranges over the rows listed in rows (nil: all of them).
func (b *Batch) ranges(table string, rows []int) []Range {
	var out []Range
	add := func(p Position) {
		for i := range out {
			r := &out[i]
			if r.Topic == p.Topic && r.Partition == p.Partition {
				r.First, r.Last, r.Rows = min(r.First, p.Offset), max(r.Last, p.Offset), r.Rows+1
				return
			}
		}
		out = append(out, Range{Topic: p.Topic, Partition: p.Partition, First: p.Offset, Last: p.Offset, Rows: 1})
	}
	eachRow(b.Rows(table), rows, func(i int) { add(b.position(table, i)) })
	slices.SortFunc(out, func(x, y Range) int {
		return cmp.Or(cmp.Compare(x.Topic, y.Topic), cmp.Compare(x.Partition, y.Partition))
	})
	return out
}

// Token is the insert_deduplication_token for table's rows: a hash of the
// table name, the (topic, partition, first offset, last offset, row count)
// ranges the rows cover, and the rows' identities (event ids; finding ids
// with their version-defining fields; dead-lettered offsets; snapshots'
// group, offset and content hash).
//
// The same Kafka messages always decode to the same events, so the ranges
// alone would identify an access_events block. Findings are different: a
// restarted detector may complete other findings over the same offsets, and
// a token reused for different rows would make ClickHouse drop them as
// duplicates. Hashing the identities rules that out for every table at the
// cost of one pass over the ids.
func (b *Batch) Token(table string) string { return b.token(table, nil) }

// token is Token over the rows listed in rows (nil: all of them): the token
// of one sub-insert.
func (b *Batch) token(table string, rows []int) string {
	h := sha256.New()
	var buf [8]byte
	putStr := func(s string) {
		binary.LittleEndian.PutUint64(buf[:], uint64(len(s)))
		h.Write(buf[:])
		h.Write([]byte(s))
	}
	putInt := func(n int64) {
		binary.LittleEndian.PutUint64(buf[:], uint64(n))
		h.Write(buf[:])
	}
	putStr(table)
	for _, r := range b.ranges(table, rows) {
		putStr(r.Topic)
		putInt(int64(r.Partition))
		putInt(r.First)
		putInt(r.Last)
		putInt(int64(r.Rows))
	}
	b.writeIdentities(table, rows, putStr, putInt)
	return table + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (b *Batch) writeIdentities(table string, rows []int, putStr func(string), putInt func(int64)) {
	switch table {
	case TableEvents:
		eachRow(len(b.Events), rows, func(i int) { putStr(b.Events[i].Event.EventID) })
	case TableFindings:
		eachRow(len(b.Findings), rows, func(i int) {
			f := b.Findings[i].Finding
			putInt(b.Findings[i].Offset)
			putStr(f.FindingID)
			putStr(string(f.Severity))
			putInt(int64(f.Score))
			putInt(int64(len(f.EventIDs)))
			if f.Suppressed {
				putInt(1)
			} else {
				putInt(0)
			}
		})
	case TableDLQ:
		eachRow(len(b.DeadLetters), rows, func(i int) {
			putInt(b.DeadLetters[i].Offset)
			putStr(b.DeadLetters[i].RecordID)
		})
	case TableSnapshots:
		eachRow(len(b.Snapshots), rows, func(i int) {
			s := &b.Snapshots[i]
			putStr(s.Group)
			putInt(s.Offset)
			sum := sha256.Sum256(s.Data)
			putStr(string(sum[:]))
		})
	}
}

// eachRow calls fn for every index in rows, or for 0..n-1 when rows is nil.
func eachRow(n int, rows []int, fn func(int)) {
	if rows == nil {
		for i := range n {
			fn(i)
		}
		return
	}
	for _, i := range rows {
		fn(i)
	}
}

// position is the Kafka position of table's row i.
func (b *Batch) position(table string, i int) Position {
	switch table {
	case TableEvents:
		return b.Events[i].Position
	case TableFindings:
		return b.Findings[i].Position
	case TableDLQ:
		return b.DeadLetters[i].Position
	case TableSnapshots:
		return b.Snapshots[i].Position
	}
	return Position{}
}

func (b *Batch) markStored(token string) {
	if b.stored == nil {
		b.stored = map[string]bool{}
	}
	b.stored[token] = true
}

// reject records table's row i as refused by the server with err and, for
// an event or a finding, adds its dead letter (class
// ClassRejectedByStorage, the row as canonical JSON) to b.DeadLetters.
func (b *Batch) reject(table string, i int, err error) {
	rej := Rejection{Table: table, Row: i, DeadLetter: -1, Err: err}
	var payload []byte
	var jerr error
	row := DLQRow{Position: b.position(table, i), ErrorClass: ClassRejectedByStorage,
		Error: ClassRejectedByStorage + ": " + RefusalText(err), ReceivedAt: time.Now().UTC()}
	switch table {
	case TableEvents:
		ev := b.Events[i].Event
		payload, jerr = json.Marshal(ev)
		row.Key = []byte(ev.UserID)
	case TableFindings:
		f := b.Findings[i].Finding
		payload, jerr = json.Marshal(f)
		row.Key = []byte(f.UserID)
		row.RecordID = f.FindingID
	}
	if payload != nil && jerr == nil {
		sum := sha256.Sum256(payload)
		row.Payload, row.PayloadSize, row.PayloadSHA256 = payload, int64(len(payload)), hex.EncodeToString(sum[:])
		b.DeadLetters = append(b.DeadLetters, row)
		rej.DeadLetter = len(b.DeadLetters) - 1
	}
	b.Rejected = append(b.Rejected, rej)
}

// RefusalText names a refusal (see RefusedByData) without row data: the
// ClickHouse error code and name, or that the client could not convert a
// value.
func RefusalText(err error) string {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return exceptionText(ex)
	}
	return "value not convertible to its column"
}
