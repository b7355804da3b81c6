package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Snapshot is a stored detector snapshot: the state of one partition's
// detectors after the event at Offset.
type Snapshot struct {
	Offset  int64
	Data    []byte
	TakenAt time.Time
}

// SnapshotReader reads detector snapshots from the detector_snapshots
// table (migration 0040).
type SnapshotReader struct {
	conn driver.Conn
}

// NewSnapshotReader returns a reader on conn.
func NewSnapshotReader(conn driver.Conn) *SnapshotReader { return &SnapshotReader{conn: conn} }

// Latest returns the newest snapshot of (group, topic, partition) whose
// offset is below before, the partition's committed offset: a snapshot at
// or past it reflects events whose storage was never committed, and is
// never used. ok is false when there is none.
func (r *SnapshotReader) Latest(ctx context.Context, group, topic string, partition int32, before int64) (s Snapshot, ok bool, err error) {
	if before <= 0 {
		return Snapshot{}, false, nil
	}
	rows, err := r.conn.Query(ctx, `SELECT kafka_offset, snapshot, taken_at FROM detector_snapshots
WHERE consumer_group = ? AND kafka_topic = ? AND kafka_partition = ? AND kafka_offset < ?
ORDER BY kafka_offset DESC LIMIT 1`, group, topic, uint32(partition), uint64(before))
	if err != nil {
		return Snapshot{}, false, fmt.Errorf("read detector snapshot: %w", err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return Snapshot{}, false, fmt.Errorf("read detector snapshot: %w", err)
		}
		return Snapshot{}, false, nil
	}
	var off uint64
	var data string
	if err := rows.Scan(&off, &data, &s.TakenAt); err != nil {
		return Snapshot{}, false, fmt.Errorf("read detector snapshot: %w", err)
	}
	if off >= uint64(before) {
		return Snapshot{}, false, errors.New("read detector snapshot: the server returned a snapshot at or past the committed offset")
	}
	s.Offset, s.Data = int64(off), []byte(data)
	return s, true, rows.Err()
}
