package store_test

import (
	"context"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestFindingsNewestVersionWins: a finding's rows collapse to the version
// of its latest event (kafka_offset), whatever order they were inserted in
// (migration 0070), and the rebuild keeps the rows that were there, even
// when it is run again after an interruption.
func TestFindingsNewestVersionWins(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	insert := func(offset uint64, events string) {
		t.Helper()
		q := `INSERT INTO findings (finding_id, detector, severity, score, user_id, patient_id, window_start, window_end, event_ids, kafka_offset)
			VALUES ('f1', 'vip', 'high', 70, 'u1', 'p1', '2026-10-29 00:00:00', '2026-10-30 00:00:00', ` + events + `, ?)`
		if err := conn.Exec(ctx, q, offset); err != nil {
			t.Fatal(err)
		}
	}
	read := func() []string {
		t.Helper()
		var ids []string
		if err := conn.QueryRow(ctx, `SELECT event_ids FROM findings FINAL WHERE finding_id = 'f1'`).Scan(&ids); err != nil {
			t.Fatal(err)
		}
		return ids
	}
	// The newer version first, the older one after (a replay's order).
	insert(11, `['e1','e2']`)
	insert(10, `['e1']`)
	if got := read(); len(got) != 2 {
		t.Fatalf("after an older version was inserted last: event_ids %v, want the newest [e1 e2]", got)
	}
	// Run the rebuild again, as after an interruption: the rows survive
	// and the newest version still wins.
	applyMigration(t, ctx, conn, 70)
	insert(9, `['e0']`)
	if got := read(); len(got) != 2 {
		t.Fatalf("after re-running 0070: event_ids %v, want [e1 e2]", got)
	}
}
