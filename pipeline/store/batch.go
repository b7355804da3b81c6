package store

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"slices"
	"time"

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

// DLQRow is one dlq row: a message that could not be decoded. Error holds
// the error class and field only, never input data; Payload is the raw
// message, kept under the table's short TTL for reprocessing.
type DLQRow struct {
	Position
	Key        []byte
	Payload    []byte
	ErrorClass string
	Error      string
	ReceivedAt time.Time
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

	inserted map[string]bool
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
	clear(b.inserted)
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
func (b *Batch) Ranges(table string) []Range {
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
	switch table {
	case TableEvents:
		for i := range b.Events {
			add(b.Events[i].Position)
		}
	case TableFindings:
		for i := range b.Findings {
			add(b.Findings[i].Position)
		}
	case TableDLQ:
		for i := range b.DeadLetters {
			add(b.DeadLetters[i].Position)
		}
	case TableSnapshots:
		for i := range b.Snapshots {
			add(b.Snapshots[i].Position)
		}
	}
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
func (b *Batch) Token(table string) string {
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
	for _, r := range b.Ranges(table) {
		putStr(r.Topic)
		putInt(int64(r.Partition))
		putInt(r.First)
		putInt(r.Last)
		putInt(int64(r.Rows))
	}
	b.writeIdentities(table, putStr, putInt)
	return table + "-" + hex.EncodeToString(h.Sum(nil)[:16])
}

func (b *Batch) writeIdentities(table string, putStr func(string), putInt func(int64)) {
	switch table {
	case TableEvents:
		for i := range b.Events {
			putStr(b.Events[i].Event.EventID)
		}
	case TableFindings:
		for i := range b.Findings {
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
		}
	case TableDLQ:
		for i := range b.DeadLetters {
			putInt(b.DeadLetters[i].Offset)
		}
	case TableSnapshots:
		for i := range b.Snapshots {
			s := &b.Snapshots[i]
			putStr(s.Group)
			putInt(s.Offset)
			sum := sha256.Sum256(s.Data)
			putStr(string(sum[:]))
		}
	}
}
