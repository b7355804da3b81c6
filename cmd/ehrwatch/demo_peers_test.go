package main

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestDemoStageVersionWinsInClickHouse feeds the short demo's hospital
// through the demo's partition processors (three partitions, in the
// stream's order, each event at its partition's next offset, as ingest
// positions what Process returns) and stores every row in ClickHouse. The
// peer stage judges a break-glass finding when the slowest partition
// passes the day, on an event of any partition, whose offset can be lower
// than those at which the finding's own partition stored its earlier
// versions (the test checks the stream has such a finding). In
// ReplacingMergeTree(kafka_offset) the highest offset wins, so the stored
// finding (FINAL) must be the stage's judgement (with the peer
// comparison) for every break-glass finding, and the volume findings must
// be stored once each. Before the fix the demo stored the stage's version
// at the offset of the event that triggered the judgement, and FINAL
// showed the partition's earlier verdict.
func TestDemoStageVersionWinsInClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs ClickHouse")
	}
	conn, _ := testenv.ClickHouse(t)
	ingesttest.Migrate(t, conn)
	ctx := context.Background()

	o := shortDemo()
	cfg, err := demoConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	h, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	part := replay.MustPartitioner("fnv1a", o.partitions)
	stream, err := scanStream(h, part, o.partitions)
	if err != nil {
		t.Fatal(err)
	}
	newEngine, err := benchEngines(h) // every detector over h's reference data
	if err != nil {
		t.Fatal(err)
	}
	hub, err := newDemoPeers(detectors.DefaultEngineConfig(detectors.Registry()), h.TimeZones(), stream.perPart)
	if err != nil {
		t.Fatal(err)
	}
	var rows []store.FindingRow
	triggeredAt := map[string]int64{} // stage finding id → offset of the event that let it be judged
	var current int64
	stage := map[string]schemas.Finding{}
	hub.store = func(_ context.Context, fs []schemas.Finding) error {
		rows = append(rows, peerStageRows(demoTopic+".peers", fs)...)
		for _, f := range fs {
			triggeredAt[f.FindingID] = current
			stage[f.FindingID] = f
		}
		return nil
	}
	procs := make([]*demoProcessor, o.partitions)
	for p := range procs {
		e, err := newEngine()
		if err != nil {
			t.Fatal(err)
		}
		e.DeferPeers()
		defer e.Close()
		procs[p] = &demoProcessor{eng: e, last: stream.lastEvent[p], part: p, peers: hub}
	}
	next := make([]int64, o.partitions)
	if _, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		p := part([]byte(ev.UserID))
		current = next[p]
		next[p]++
		fs, err := procs[p].Process(ctx, ev)
		for i := range fs {
			rows = append(rows, store.FindingRow{Position: store.Position{Topic: demoTopic, Partition: int32(p), Offset: current}, Finding: &fs[i]})
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}

	// The stream must exercise the case: a break-glass finding judged on
	// an event at a lower offset than one of its partition's versions.
	partitionMax := map[string]int64{}
	for _, r := range rows {
		if r.Offset != peerStageOffset {
			partitionMax[r.Finding.FindingID] = max(partitionMax[r.Finding.FindingID], r.Offset)
		}
	}
	earlier := 0
	for id, f := range stage {
		if off, ok := partitionMax[id]; ok && f.Detector == "break_glass" && triggeredAt[id] < off {
			earlier++
		}
	}
	if len(stage) == 0 || earlier == 0 {
		t.Fatalf("the stage judged %d findings, %d of them break-glass findings on an event below their partition's last version: the stream does not exercise the case", len(stage), earlier)
	}
	t.Logf("%d findings judged by the stage, %d break-glass findings judged on an event below their own partition's last version", len(stage), earlier)

	// Stored in batches of the pipeline's size, in the order produced.
	w := store.NewWriter(conn)
	for len(rows) > 0 {
		n := min(len(rows), 500)
		if err := w.Write(ctx, &store.Batch{Findings: rows[:n]}); err != nil {
			t.Fatal(err)
		}
		rows = rows[n:]
	}
	got, err := conn.Query(ctx, `SELECT finding_id, detector, severity, score, explanation, evidence FROM findings FINAL WHERE detector IN ('volume', 'break_glass')`)
	if err != nil {
		t.Fatal(err)
	}
	defer got.Close()
	var seen []string
	for got.Next() {
		var id, det, sev, expl, evidence string
		var score uint8
		if err := got.Scan(&id, &det, &sev, &score, &expl, &evidence); err != nil {
			t.Fatal(err)
		}
		seen = append(seen, id)
		want, ok := stage[id]
		if !ok {
			if det == "volume" {
				t.Errorf("volume finding %s was not judged by the stage", id)
			}
			continue // a break-glass finding whose window never closed
		}
		if sev != string(want.Severity) || score != uint8(want.Score) || expl != want.Explanation ||
			(det == "break_glass" && !strings.Contains(evidence, `"peers":`)) {
			t.Errorf("finding %s (%s): stored %s/%d %q (evidence %.200s), the stage judged %s/%d %q with the peer comparison",
				id, det, sev, score, expl, evidence, want.Severity, want.Score, want.Explanation)
		}
	}
	if err := got.Err(); err != nil {
		t.Fatal(err)
	}
	for id := range stage {
		if !slices.Contains(seen, id) {
			t.Errorf("stage finding %s not stored", id)
		}
	}
}
