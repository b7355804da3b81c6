package store_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestSnapshotsNewestOfEachHour: detector_snapshots keeps the newest
// snapshot written in each hour of each partition (migration 0090), so
// its size does not grow with the snapshot cadence, and a restart still
// finds the newest below its committed offset. The upgrade from 0040's
// table keeps the newest of each hour of it, and can be run again after
// an interruption.
func TestSnapshotsNewestOfEachHour(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	hour := time.Now().UTC().Truncate(time.Hour).Add(-3 * time.Hour) // within the TTL
	insert := func(partition uint32, offset uint64, at time.Duration) {
		t.Helper()
		// One INSERT per snapshot, as the sink writes them: a part each.
		if err := conn.Exec(ctx, `INSERT INTO detector_snapshots (consumer_group, kafka_topic, kafka_partition, kafka_offset, snapshot, taken_at)
			VALUES ('g', 't', ?, ?, ?, ?)`, partition, offset, fmt.Sprintf("state after %d", offset), hour.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	kept := func() string {
		t.Helper()
		r, err := conn.Query(ctx, `SELECT kafka_partition, kafka_offset FROM detector_snapshots
			WHERE consumer_group = 'g' ORDER BY kafka_partition, kafka_offset`)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		out := map[uint32][]uint64{}
		for r.Next() {
			var p uint32
			var off uint64
			if err := r.Scan(&p, &off); err != nil {
				t.Fatal(err)
			}
			out[p] = append(out[p], off)
		}
		if err := r.Err(); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint(out)
	}

	// Before the upgrade: 0040's table, which keeps every snapshot.
	if err := conn.Exec(ctx, "DROP TABLE detector_snapshots SYNC"); err != nil {
		t.Fatal(err)
	}
	applyMigration(t, ctx, conn, 40)
	// Partition 0: every 20 minutes over two hours; partition 1: one
	// hour, the newest written first.
	for i, off := range []uint64{100, 200, 300, 400, 500, 600} {
		insert(0, off, time.Duration(i)*20*time.Minute)
	}
	insert(1, 70, 50*time.Minute)
	insert(1, 50, 10*time.Minute)
	if got, want := kept(), "map[0:[100 200 300 400 500 600] 1:[50 70]]"; got != want {
		t.Fatalf("0040's table keeps %s, want %s", got, want)
	}

	// The upgrade copies the snapshots into the new table, which keeps
	// the newest of each hour. The engine merges in the background, at
	// times at once; OPTIMIZE finishes it.
	optimize := func() {
		t.Helper()
		if err := conn.Exec(ctx, "OPTIMIZE TABLE detector_snapshots FINAL"); err != nil {
			t.Fatal(err)
		}
	}
	applyMigration(t, ctx, conn, 90)
	optimize()
	want := "map[0:[300 600] 1:[70]]"
	if got := kept(); got != want {
		t.Fatalf("after 0090 the table keeps %s, want the newest of each hour, %s", got, want)
	}

	// New snapshots collapse into their hour.
	insert(0, 700, 140*time.Minute) // a third hour
	insert(0, 800, 160*time.Minute)
	insert(1, 60, 30*time.Minute) // written last, taken before 70
	optimize()
	want = "map[0:[300 600 800] 1:[70]]"
	if got := kept(); got != want {
		t.Fatalf("after the merge the table keeps %s, want the latest taken of each hour, %s", got, want)
	}

	// A restart restores the newest below its committed offset. Committed
	// at 750, the newest of the third hour is past it (the commit after
	// its flush was lost): the newest of the second hour serves instead.
	reader := store.NewSnapshotReader(conn)
	for _, c := range []struct {
		partition    int32
		before, want int64
	}{{0, 801, 800}, {0, 750, 600}, {0, 450, 300}, {0, 300, -1}, {1, 100, 70}, {1, 70, -1}} {
		s, ok, err := reader.Latest(ctx, "g", "t", c.partition, c.before)
		if err != nil {
			t.Fatal(err)
		}
		got := int64(-1)
		if ok {
			got = s.Offset
			if string(s.Data) != fmt.Sprintf("state after %d", s.Offset) {
				t.Fatalf("the snapshot at %d holds %q", s.Offset, s.Data)
			}
		}
		if got != c.want {
			t.Errorf("partition %d, committed offset %d: restored %d, want %d", c.partition, c.before, got, c.want)
		}
	}

	// Re-run the upgrade, as after an interruption: it keeps what is kept.
	applyMigration(t, ctx, conn, 90)
	optimize()
	if got := kept(); got != want {
		t.Fatalf("after re-running 0090 the table keeps %s, want %s", got, want)
	}
}
