package ingest_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// snapshotHospital is a small synthetic hospital: 60 users over 10 days at
// one facility, with incidents after a 6-day warm-up, so the volume and
// off-hours baselines hold real state when the pipeline is stopped.
func snapshotHospital(t *testing.T) *synth.Hospital { return smallHospital(t, "snap", 10, 6, 1500) }

// smallHospital is a synthetic hospital of 60 users at one facility (id, in
// New York's time zone) with incidents and benign look-alikes after the
// warm-up days.
func smallHospital(t *testing.T, id string, days, warmupDays, patients int) *synth.Hospital {
	t.Helper()
	cfg := synth.DefaultConfig()
	cfg.Days, cfg.WarmupDays = days, warmupDays
	cfg.Facilities = []synth.FacilityConfig{{ID: id, TimeZone: "America/New_York", Source: "epic", Users: 60, Patients: patients}}
	cfg.IncidentRate, cfg.BenignRate = 5, 5
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// engineFactory is the production processor: a detectors.Engine with every
// detector, over the hospital's reference data.
func engineFactory(t *testing.T, h *synth.Hospital) ingest.ProcessorFactory {
	t.Helper()
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("snapshot-test-hash-key-0123456789")
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	loc, err := detectors.FacilityLocations(h.TimeZones())
	if err != nil {
		t.Fatal(err)
	}
	holder := detectors.NewReferenceHolder(idx)
	newEngine, err := detectors.NewEngineFactory(detectors.DefaultEngineConfig(detectors.Registry()),
		detectors.Env{Reference: holder.Load, Location: loc})
	if err != nil {
		t.Fatal(err)
	}
	return func(string, int) (ingest.Processor, error) { return newEngine() }
}

func hospitalMessages(t *testing.T, h *synth.Hospital) []kafka.Message {
	t.Helper()
	out := make([]kafka.Message, len(h.Events))
	for i := range h.Events {
		b, err := json.Marshal(&h.Events[i])
		if err != nil {
			t.Fatal(err)
		}
		out[i] = kafka.Message{Key: []byte(h.Events[i].UserID), Value: b}
	}
	return out
}

func produceRaw(t *testing.T, brokers, topic string, msgs []kafka.Message) {
	t.Helper()
	wrapped := make([]ingesttest.Message, len(msgs))
	for i, m := range msgs {
		wrapped[i] = ingesttest.Message{Message: m}
	}
	ingesttest.Produce(t, brokers, topic, wrapped)
}

// findingRows reads every finding's latest version (FINAL), all stored
// columns but detected_at, sorted by id.
func findingRows(t *testing.T, conn clickhouse.Conn) []string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rows, err := conn.Query(ctx, `SELECT finding_id, detector, severity, score, facility_id, user_id, patient_id,
 window_start, window_end, event_ids, explanation, evidence, suppressed, suppression_reason, kafka_partition, kafka_offset
 FROM findings FINAL ORDER BY finding_id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var (
			id, det, sev, fac, user, pat, expl, evidence, supReason string
			score                                                   uint8
			ws, we                                                  time.Time
			ids                                                     []string
			sup                                                     bool
			part                                                    uint32
			off                                                     uint64
		)
		if err := rows.Scan(&id, &det, &sev, &score, &fac, &user, &pat, &ws, &we, &ids, &expl, &evidence, &sup, &supReason, &part, &off); err != nil {
			t.Fatal(err)
		}
		out = append(out, fmt.Sprintf("%s|%s|%s|%d|%s|%s|%s|%s|%s|%v|%s|%s|%v|%s|%d@%d",
			id, det, sev, score, fac, user, pat, ws.UTC().Format(time.RFC3339Nano), we.UTC().Format(time.RFC3339Nano),
			ids, expl, evidence, sup, supReason, part, off))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDetectorStateSurvivesRestarts runs the pipeline with every detector
// over a synthetic hospital twice, with the default snapshot settings
// (which take no periodic snapshot in a run this short): once without
// interruption, and once stopped (as on SIGTERM) and restarted at several
// points, among them just after the first event of a new local day and the
// event whose time moves the watermark past midnight (the restored
// detectors close the day's windows). A graceful stop snapshots every
// partition's detectors at its last offset, and the next run restores that
// snapshot and continues at the committed offset without replaying
// anything. Before one restart every snapshot is deleted (as when the
// process was killed before its first snapshot) and snapshots at and past
// the committed offset are planted (they must never be used); before
// another the newest snapshot is replaced by an unreadable one: both times
// the detectors are rebuilt by re-reading the partition from its start,
// without storing anything again. The findings stored by the two runs
// (every id, with every column, read with FINAL) must be identical, and
// no event or finding row is stored twice.
func TestDetectorStateSurvivesRestarts(t *testing.T) {
	t.Parallel() // mostly waiting on group joins
	h := newHarness(t, 2)
	hosp := snapshotHospital(t)
	msgs := hospitalMessages(t, hosp)
	factory := engineFactory(t, hosp)
	cfg, k := h.configs()
	cfg.BatchMaxRows = 2000

	// The uninterrupted run: its own topic (same keys, same order, so the
	// same partitions and offsets), group and database.
	refTopic := testenv.NewTopic(t, h.brokers, h.partitions)
	refConn, _ := testenv.ClickHouse(t)
	ingesttest.Migrate(t, refConn)
	produceRaw(t, h.brokers, refTopic, msgs)
	refK := k
	refK.Topics, refK.GroupID = []string{refTopic}, refTopic+"-group"
	ref := h.start(cfg, refK, ingest.Deps{ClickHouse: refConn, NewProcessor: factory})

	// Where the interrupted run stops: after the message at each index.
	loc := hosp.Facilities[0].Location
	day := hosp.Facilities[0].Start.In(loc)
	firstAt := func(at time.Time) int {
		return slices.IndexFunc(hosp.Events, func(ev schemas.AccessEvent) bool { return !ev.EventTime.Before(at) })
	}
	lateness := detectors.DefaultEngineConfig(detectors.Registry()).AllowedLateness
	stops := []struct {
		name string
		last int
	}{
		{"a fifth in", len(msgs) / 5},
		{"just after the first event of day 7", firstAt(day.AddDate(0, 0, 7))},
		{"as the watermark passes the midnight of day 8", firstAt(day.AddDate(0, 0, 8).Add(lateness))},
		{"a little later", firstAt(day.AddDate(0, 0, 8).Add(lateness)) + 37},
	}
	for i := 1; i < len(stops); i++ {
		if stops[i].last <= stops[i-1].last || stops[i].last >= len(msgs)-1 {
			t.Fatalf("stop %q at %d does not follow %q at %d", stops[i].name, stops[i].last, stops[i-1].name, stops[i-1].last)
		}
	}

	produced := 0
	var restored, replayed float64
	var stored int64
	for i, stop := range stops {
		produceRaw(t, h.brokers, h.topic, msgs[produced:stop.last+1])
		produced = stop.last + 1
		switch i {
		case 2:
			h.deleteSnapshots(t)
			h.plantFutureSnapshots(t)
		case 3:
			h.deleteSnapshots(t)
			h.plantSnapshots(t, -1, "unreadable")
		}
		r := h.start(cfg, k, ingest.Deps{NewProcessor: factory})
		h.waitDrained(2 * time.Minute)
		r.stop()
		r.wait(t)
		stored += r.p.Stats().Stored
		if i > 0 {
			restored += r.metric(t, `ehrwatch_detector_restores_total{result="restored"}`)
			rebuilt := r.metric(t, "ehrwatch_replayed_messages_total")
			replayed += rebuilt
			if n := r.p.Stats().Replayed; float64(n) != rebuilt {
				t.Errorf("restart %d: Stats().Replayed %d, metric %v", i, n, rebuilt)
			}
			failed := r.metric(t, `ehrwatch_detector_restores_total{result="failed"}`)
			none := r.metric(t, `ehrwatch_detector_restores_total{result="none"}`)
			wantFailed, wantNone := 0.0, 0.0
			switch i {
			case 2:
				wantNone = float64(h.partitions)
			case 3:
				wantFailed = float64(h.partitions)
			default:
				if rebuilt != 0 {
					t.Errorf("restart %d (%s): %v messages replayed after a graceful stop, want 0", i, stops[i-1].name, rebuilt)
				}
			}
			if failed != wantFailed || none != wantNone {
				t.Errorf("restart %d (%s): restores failed %v, none %v; want %v, %v", i, stops[i-1].name, failed, none, wantFailed, wantNone)
			}
			if wantFailed+wantNone > 0 && rebuilt < float64(stops[i-1].last+1) {
				t.Errorf("restart %d (%s): %v messages re-read to rebuild the detectors, want all %d committed", i, stops[i-1].name, rebuilt, stops[i-1].last+1)
			}
		}
		t.Logf("stopped %s (after message %d of %d)", stop.name, stop.last, len(msgs))
	}
	produceRaw(t, h.brokers, h.topic, msgs[produced:])
	final := h.start(cfg, k, ingest.Deps{NewProcessor: factory})
	h.waitDrained(2 * time.Minute)
	restored += final.metric(t, `ehrwatch_detector_restores_total{result="restored"}`)
	replayed += final.metric(t, "ehrwatch_replayed_messages_total")
	final.stop()
	final.wait(t)
	stored += final.p.Stats().Stored
	if want := float64((len(stops) - 2) * h.partitions); restored != want {
		t.Errorf("%v partition restores from a snapshot over %d restarts, want %v", restored, len(stops), want)
	}
	if replayed == 0 {
		t.Error("no message was re-read to rebuild the detectors; the test does not exercise the warm-up")
	}

	ingesttest.WaitFor(t, 2*time.Minute, "the uninterrupted run to drain", func() bool {
		return ingesttest.Lag(t, h.brokers, refK.GroupID, refTopic, h.partitions) == 0
	})
	ref.stop()
	ref.wait(t)

	// Nothing below a committed offset was stored again: the runs inserted
	// every event exactly once between them.
	if stored != int64(len(msgs)) {
		t.Errorf("the runs stored %d events between them, want exactly %d (none twice)", stored, len(msgs))
	}
	if c := ingesttest.TableCounts(t, h.conn, "access_events"); c.Unique != uint64(len(msgs)) {
		t.Errorf("access_events %+v after the restarts, want %d events", c, len(msgs))
	}
	want, got := findingRows(t, refConn), findingRows(t, h.conn)
	t.Logf("%d messages, %d findings; %v partition restores, %v messages replayed", len(msgs), len(want), restored, replayed)
	if len(want) < 10 {
		t.Fatalf("only %d findings in the uninterrupted run; the hospital is too quiet to test anything", len(want))
	}
	detectorsSeen := map[string]bool{}
	for _, w := range want {
		detectorsSeen[strings.Split(w, "|")[1]] = true
	}
	for _, d := range []string{"volume", "off_hours"} {
		if !detectorsSeen[d] {
			t.Errorf("no %s finding in the uninterrupted run: baselines are not exercised", d)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		gotSet := map[string]bool{}
		for _, g := range got {
			gotSet[g] = true
		}
		wantSet := map[string]bool{}
		for _, w := range want {
			wantSet[w] = true
			if !gotSet[w] {
				t.Errorf("only in the uninterrupted run: %s", w)
			}
		}
		for _, g := range got {
			if !wantSet[g] {
				t.Errorf("only in the restarted run: %s", g)
			}
		}
	}
}

// deleteSnapshots deletes every detector snapshot, as if the process had
// been killed before it took one.
func (h *harness) deleteSnapshots(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := h.conn.Exec(ctx, "TRUNCATE TABLE detector_snapshots"); err != nil {
		t.Fatal(err)
	}
}

// plantSnapshots stores data as a snapshot at each partition's committed
// offset plus delta.
func (h *harness) plantSnapshots(t *testing.T, delta int64, data string) {
	t.Helper()
	_, committed := ingesttest.Offsets(t, h.brokers, h.group, h.topic, h.partitions)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p, c := range committed {
		if c < 0 {
			t.Fatalf("partition %d has no committed offset", p)
		}
		if err := h.conn.Exec(ctx, `INSERT INTO detector_snapshots (consumer_group, kafka_topic, kafka_partition, kafka_offset, snapshot, taken_at)
VALUES (?, ?, ?, ?, ?, now64(3))`, h.group, h.topic, uint32(p), uint64(c+delta), data); err != nil {
			t.Fatal(err)
		}
	}
}

// plantFutureSnapshots stores garbage snapshots at and just past each
// partition's committed offset: the next owner must ignore them (and so
// not fail to restore).
func (h *harness) plantFutureSnapshots(t *testing.T) {
	t.Helper()
	_, committed := ingesttest.Offsets(t, h.brokers, h.group, h.topic, h.partitions)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for p, c := range committed {
		if c < 0 {
			t.Fatalf("partition %d has no committed offset", p)
		}
		for _, off := range []int64{c, c + 5} {
			if err := h.conn.Exec(ctx, `INSERT INTO detector_snapshots (consumer_group, kafka_topic, kafka_partition, kafka_offset, snapshot, taken_at)
VALUES (?, ?, ?, ?, 'not a snapshot', now64(3))`, h.group, h.topic, uint32(p), uint64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// countingDetector is a StatefulProcessor whose state is the number of
// events it has seen: every event yields a finding saying so, which shows
// from where a rebuilt detector was fed.
type countingDetector struct{ seen int }

func (d *countingDetector) Process(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	d.seen++
	start := ev.EventTime.Truncate(time.Hour)
	return []schemas.Finding{{
		FindingID: schemas.FindingID("counting", []string{ev.EventID}, start, start.Add(time.Hour)),
		Detector:  "counting", Severity: schemas.SeverityInfo, FacilityID: ev.FacilityID, UserID: ev.UserID,
		PatientID: ev.PatientID, WindowStart: start, WindowEnd: start.Add(time.Hour), EventIDs: []string{ev.EventID},
		Explanation: fmt.Sprintf("seen %d", d.seen),
	}}, nil
}

func (d *countingDetector) Snapshot(w io.Writer) error { _, err := fmt.Fprint(w, d.seen); return err }

func (d *countingDetector) Restore(r io.Reader) error { _, err := fmt.Fscan(r, &d.seen); return err }

// noSnapshots never has a snapshot: every assignment rebuilds.
type noSnapshots struct{}

func (noSnapshots) Latest(context.Context, string, string, int32, int64) (store.Snapshot, bool, error) {
	return store.Snapshot{}, false, nil
}

// TestWarmupHorizon: without a snapshot, a partition's detectors are
// rebuilt from the oldest retained offset (warmup_horizon 0), or from the
// first message Kafka timestamped within the horizon; either way only the
// events from the committed offset on are stored again.
func TestWarmupHorizon(t *testing.T) {
	t.Parallel()
	h := newHarness(t, 1)
	msgs := ingesttest.Fixture{N: 310, Users: 3, Prefix: "warm"}.Messages()
	now := time.Now()
	for i := range msgs {
		msgs[i].Time = now
		if i < 100 {
			msgs[i].Time = now.Add(-3 * time.Hour)
		}
	}
	cfg, k := h.configs()
	deps := ingest.Deps{Snapshots: noSnapshots{}, NewProcessor: func(string, int) (ingest.Processor, error) {
		return &countingDetector{}, nil
	}}
	seenAt := func(offset int) string {
		t.Helper()
		var s string
		if err := h.conn.QueryRow(context.Background(),
			"SELECT explanation FROM findings FINAL WHERE kafka_offset = ?", uint64(offset)).Scan(&s); err != nil {
			t.Fatalf("finding at offset %d: %v", offset, err)
		}
		return s
	}
	var stored int64
	runTo := func(horizon time.Duration) float64 {
		t.Helper()
		cfg.WarmupHorizon = horizon
		r := h.start(cfg, k, deps)
		h.waitDrained(time.Minute)
		r.stop()
		r.wait(t)
		stored += r.p.Stats().Stored
		return r.metric(t, "ehrwatch_replayed_messages_total")
	}

	ingesttest.Produce(t, h.brokers, h.topic, msgs[:250])
	if n := runTo(0); n != 0 {
		t.Errorf("a new group re-read %v messages", n)
	}
	// Committed 250; the messages at 100.. are within an hour of now.
	ingesttest.Produce(t, h.brokers, h.topic, msgs[250:300])
	if n := runTo(time.Hour); n != 150 {
		t.Errorf("warmup_horizon 1h re-read %v messages, want the 150 of the last hour below the committed offset", n)
	}
	if got := seenAt(250); got != "seen 151" {
		t.Errorf("with warmup_horizon 1h the detector at offset 250 had %q, want seen 151", got)
	}
	ingesttest.Produce(t, h.brokers, h.topic, msgs[300:])
	if n := runTo(0); n != 300 {
		t.Errorf("warmup_horizon 0 re-read %v messages, want all 300 below the committed offset", n)
	}
	if got := seenAt(300); got != "seen 301" {
		t.Errorf("with warmup_horizon 0 the detector at offset 300 had %q, want seen 301", got)
	}
	if stored != int64(len(msgs)) {
		t.Errorf("the runs stored %d events between them, want exactly %d", stored, len(msgs))
	}
}
