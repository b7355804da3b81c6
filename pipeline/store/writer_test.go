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

// tokenBatch builds a batch of n events over two partitions, one finding
// and one dead letter.
func tokenBatch(n int, severity schemas.Severity) *store.Batch {
	b := &store.Batch{}
	at := time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)
	for i := range n {
		pos := store.Position{Topic: "events", Partition: int32(i % 2), Offset: int64(100 + i/2)}
		b.Events = append(b.Events, store.EventRow{Position: pos, Event: &schemas.AccessEvent{
			EventID: fmt.Sprintf("tok-%d", i), EventTime: at.Add(time.Duration(i) * time.Second), FacilityID: "f",
			UserID: "u", PatientID: "p", Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess,
		}})
	}
	b.Findings = append(b.Findings, store.FindingRow{
		Position: store.Position{Topic: "events", Partition: 0, Offset: 100},
		Finding: &schemas.Finding{FindingID: "f1", Detector: "d", Severity: severity, UserID: "u",
			WindowStart: at, WindowEnd: at.Add(time.Hour), EventIDs: []string{"tok-0"}},
	})
	b.DeadLetters = append(b.DeadLetters, store.DLQRow{
		Position: store.Position{Topic: "events", Partition: 1, Offset: 7}, ErrorClass: "syntax", Error: "syntax",
		Payload: []byte("{"), ReceivedAt: time.Now().UTC().Truncate(time.Millisecond),
	})
	return b
}

func TestBatchRangesAndTokens(t *testing.T) {
	b := tokenBatch(10, schemas.SeverityLow)
	r := b.Ranges(store.TableEvents)
	if len(r) != 2 || r[0].Partition != 0 || r[0].First != 100 || r[0].Last != 104 || r[0].Rows != 5 || r[1].Partition != 1 {
		t.Fatalf("ranges %+v", r)
	}
	seen := map[string]string{}
	for _, table := range store.Tables {
		tok := b.Token(table)
		if tok != tokenBatch(10, schemas.SeverityLow).Token(table) {
			t.Errorf("%s: identical batches get different tokens", table)
		}
		if other, dup := seen[tok]; dup {
			t.Errorf("tables %s and %s share token %s", table, other, tok)
		}
		seen[tok] = table
	}
	if b.Token(store.TableEvents) == tokenBatch(9, schemas.SeverityLow).Token(store.TableEvents) {
		t.Error("different event ranges share a token")
	}
	if b.Token(store.TableFindings) == tokenBatch(10, schemas.SeverityHigh).Token(store.TableFindings) {
		t.Error("a finding whose severity changed over the same offsets keeps its token; the new version would be dropped as a duplicate")
	}
}

// TestWriterDeduplicatesRetriedBatches: an INSERT retried after an
// unknown outcome (here: simply sent twice) carries the same token, and the
// server keeps one copy of every row, before any merge.
func TestWriterDeduplicatesRetriedBatches(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	w := store.NewWriter(conn)
	var inserts []string
	w.OnInsert = func(table string, rows int, _ time.Duration, err error) {
		if err != nil {
			t.Errorf("insert %s: %v", table, err)
		}
		inserts = append(inserts, fmt.Sprintf("%s:%d", table, rows))
	}
	b := tokenBatch(1000, schemas.SeverityLow)
	if err := w.Write(ctx, b); err != nil {
		t.Fatal(err)
	}
	if err := w.Write(ctx, b); err != nil { // every table already inserted: a no-op
		t.Fatal(err)
	}
	if len(inserts) != 3 {
		t.Fatalf("inserts %v, want one per table", inserts)
	}
	if err := w.Write(ctx, tokenBatch(1000, schemas.SeverityLow)); err != nil { // the retry of a lost ack
		t.Fatal(err)
	}
	for table, want := range map[string]uint64{"access_events": 1000, "findings": 1, "dlq": 1} {
		var n uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM "+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != want {
			t.Errorf("%s: %d rows after a retried insert, want %d", table, n, want)
		}
	}
}
