package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// monthsBatch builds n events in n distinct months (from 2014-01) followed
// by m events in March 2026; events whose index is in refused get the
// department the test's constraint refuses.
func monthsBatch(n, m int, refused map[int]bool) *store.Batch {
	b := &store.Batch{}
	old := time.Date(2014, 1, 15, 12, 0, 0, 0, time.UTC)
	now := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	for i := range n + m {
		at := now.Add(time.Duration(i) * time.Second)
		if i < n {
			at = old.AddDate(0, i, 0)
		}
		dept := "cardiology"
		if refused[i] {
			dept = "refused"
		}
		b.Events = append(b.Events, store.EventRow{
			Position: store.Position{Topic: "events", Partition: int32(i % 3), Offset: int64(i)},
			Event: &schemas.AccessEvent{EventID: fmt.Sprintf("m-%04d", i), EventTime: at, FacilityID: "f",
				UserID: fmt.Sprintf("u%d", i%7), UserDepartment: dept, PatientID: "p", Action: schemas.ActionView,
				Outcome: schemas.OutcomeSuccess},
		})
	}
	b.Findings = append(b.Findings, store.FindingRow{
		Position: store.Position{Topic: "events", Partition: 0, Offset: 0},
		Finding: &schemas.Finding{FindingID: "f1", Detector: "d", Severity: schemas.SeverityLow, UserID: "u0",
			WindowStart: now, WindowEnd: now.Add(time.Hour), EventIDs: []string{"m-0000"}},
	})
	return b
}

// longRetention keeps events 20 years, so the old months of monthsBatch are
// not expired by the TTL as they are inserted.
func longRetention() schemas.MigrationParams {
	p := schemas.DefaultMigrationParams()
	p.RetentionDays = 20 * 365
	return p
}

// TestWriterSplitsByPartition: 150 events in 150 distinct months among 250
// recent ones are stored in full: the Writer splits the INSERT so that none
// touches more than MaxPartitionsPerInsert months; the same batch written
// again is deduplicated sub-insert by sub-insert. A Writer allowed more
// months than the server accepts gets code 252 and bisects its way to the
// same result.
func TestWriterSplitsByPartition(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, longRetention()); err != nil {
		t.Fatal(err)
	}
	scan := func(q string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	var sizes []int
	w := store.NewWriter(conn)
	w.OnInsert = func(table string, rows int, _ time.Duration, err error) {
		if err != nil {
			t.Errorf("insert %d rows into %s: %s", rows, table, store.ErrorText(err))
		}
		if table == store.TableEvents {
			sizes = append(sizes, rows)
		}
	}
	if err := w.Write(ctx, monthsBatch(150, 250, nil)); err != nil {
		t.Fatal(err)
	}
	// Months sorted: 2014-01..2022-04 (100 rows), then the 50 months to 2026-06, March 2026 among them (300 rows).
	if len(sizes) != 2 || sizes[0] != 100 || sizes[1] != 300 {
		t.Errorf("sub-inserts of %v rows, want [100 300]", sizes)
	}
	if err := w.Write(ctx, monthsBatch(150, 250, nil)); err != nil { // a retry after a lost ack
		t.Fatal(err)
	}
	if n := scan("SELECT count() FROM access_events"); n != 400 {
		t.Errorf("access_events holds %d rows, want 400 (each sub-insert once)", n)
	}
	if n := scan("SELECT uniqExact(toYYYYMM(event_time)) FROM access_events"); n != 150 {
		t.Errorf("%d months stored, want 150 (2026-03 is one of the old ones too)", n)
	}

	// Too permissive a Writer: the server refuses (252), bisection stores all.
	if err := conn.Exec(ctx, "TRUNCATE TABLE access_events"); err != nil {
		t.Fatal(err)
	}
	wide := store.NewWriter(conn)
	wide.MaxPartitionsPerInsert = 1000
	b := monthsBatch(150, 250, nil)
	if err := wide.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if len(b.Rejected) != 0 {
		t.Errorf("%d rows rejected, want none", len(b.Rejected))
	}
	if n := scan("SELECT count() FROM access_events"); n != 400 {
		t.Errorf("access_events holds %d rows after bisection, want 400", n)
	}
}

// TestWriterBisectsRefusedRows: rows the server refuses (a constraint) are
// isolated by bisection and become rejected_by_storage dead letters in the
// same batch; every other row is stored once, also when the batch is
// written again.
func TestWriterBisectsRefusedRows(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, longRetention()); err != nil {
		t.Fatal(err)
	}
	if err := conn.Exec(ctx, "ALTER TABLE access_events ADD CONSTRAINT refuse_test CHECK user_department != 'refused'"); err != nil {
		t.Fatal(err)
	}
	scan := func(q string) uint64 {
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	refused := map[int]bool{3: true, 160: true, 161: true, 399: true}
	attempts := 0
	w := store.NewWriter(conn)
	w.OnInsert = func(table string, rows int, _ time.Duration, err error) {
		attempts++
		if err != nil && !store.RefusedByData(err) {
			t.Errorf("insert %d rows into %s: %s", rows, table, store.ErrorText(err))
		}
	}
	b := monthsBatch(150, 250, refused)
	if err := w.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if len(b.Rejected) != len(refused) {
		t.Fatalf("%d rows rejected, want %d", len(b.Rejected), len(refused))
	}
	for _, r := range b.Rejected {
		if r.Table != store.TableEvents || !refused[r.Row] || r.DeadLetter < 0 {
			t.Errorf("rejection %+v: want one of the refused events, with a dead letter", r)
			continue
		}
		dl := b.DeadLetters[r.DeadLetter]
		if dl.ErrorClass != store.ClassRejectedByStorage || !strings.Contains(dl.Error, "469") ||
			dl.Offset != int64(r.Row) || !strings.Contains(string(dl.Payload), fmt.Sprintf(`"m-%04d"`, r.Row)) {
			t.Errorf("dead letter %+v", dl)
		}
		if strings.Contains(dl.Error, "refused") {
			t.Errorf("dead letter error quotes row data: %q", dl.Error)
		}
	}
	t.Logf("%d INSERT attempts for 401 rows with 4 refused", attempts)
	if n := scan("SELECT count() FROM access_events"); n != 396 {
		t.Errorf("access_events holds %d rows, want 396", n)
	}
	if n := scan("SELECT count() FROM dlq WHERE error_class = 'rejected_by_storage'"); n != 4 {
		t.Errorf("dlq holds %d rejected rows, want 4", n)
	}
	if n := scan("SELECT count() FROM findings"); n != 1 {
		t.Errorf("findings holds %d rows, want 1", n)
	}
	// The same batch again (a restart before the commit): every sub-insert
	// carries the token it had, and nothing is stored twice.
	again := monthsBatch(150, 250, refused)
	if err := w.Write(ctx, again); err != nil {
		t.Fatal(err)
	}
	if n := scan("SELECT count() FROM access_events"); n != 396 {
		t.Errorf("access_events holds %d rows after the batch was written again, want 396", n)
	}
	if n := scan("SELECT count() FROM dlq"); n != 4 {
		t.Errorf("dlq holds %d rows after the batch was written again, want 4", n)
	}
}
