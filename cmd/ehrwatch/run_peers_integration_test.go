package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestRunPeersGroupMatchesReplay runs two `ehrwatch run` instances with
// peers.mode group on a four-partition topic and checks that the volume
// and break_glass findings they store (the newest version of each) are
// those `ehrwatch replay` writes for the same stream. The stream ends
// with one access per user two days after the hospital's last event, so
// every partition's watermark passes every day and nothing is left to the
// end-of-input flush that only replay has.
func TestRunPeersGroupMatchesReplay(t *testing.T) {
	t.Parallel()
	brokers := testenv.Kafka(t)
	conn, db := testenv.ClickHouse(t)
	ingesttest.Migrate(t, conn)
	dir := genHospital(t, "canonical")

	lines, events := closedStream(t, dir)

	// Replay: the reference.
	out := filepath.Join(t.TempDir(), "findings.ndjson")
	if _, errOut, err := runReplayCmd(t, "--events", events, "--reference", filepath.Join(dir, "reference"),
		"--facilities", filepath.Join(dir, "facilities.ndjson"), "--out", out); err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	want := newestPeerFindings(t, out)
	vol := 0
	for _, f := range want {
		if strings.HasPrefix(f, "volume ") {
			vol++
		}
	}
	if vol < 3 || len(want)-vol < 3 {
		t.Fatalf("replay wrote %d volume and %d break_glass findings: too few to compare", vol, len(want)-vol)
	}

	// Within partitions the same stream gives other findings: the test
	// can fail.
	outPart := filepath.Join(t.TempDir(), "findings-partition.ndjson")
	if _, errOut, err := runReplayCmd(t, "--events", events, "--reference", filepath.Join(dir, "reference"),
		"--facilities", filepath.Join(dir, "facilities.ndjson"), "--partitions", "4", "--peers", "partition", "--out", outPart); err != nil {
		t.Fatalf("replay --peers partition: %v\n%s", err, errOut)
	}
	if slices.Equal(newestPeerFindings(t, outPart), want) {
		t.Fatal("replay --partitions 4 --peers partition gives the findings of --peers group: the stream does not exercise the peer comparison")
	}

	// run: two instances, four partitions.
	topic := testenv.NewTopic(t, brokers, 4)
	dlq := testenv.NewTopic(t, brokers, 1)
	msgs := streamMessages(t, lines)
	ingesttest.Produce(t, brokers, topic, msgs)
	zones := facilityZones(t, filepath.Join(dir, "facilities.ndjson"))
	group := topic + "-group"
	peers := group + ".peers" // created by ehrwatch run (peers.mode group, the default)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs [2]ingesttest.LogBuffer
	var ops [2]string
	done := make(chan error, 2)
	for i := range 2 {
		ops[i] = freeAddr(t)
		config := testRunConfig{
			Brokers: brokers, Group: group, Topic: topic, DLQ: dlq,
			ClickHouse: testenv.ClickHouseAddr(t), Database: db,
			Sections: fmt.Sprintf(`reference:
  source: files
  dir: %q
  hash_key_file: %q
  facilities: {%s}
http:
  listen: %q
`, filepath.Join(dir, "reference"), writeHashKey(t), zones, ops[i]),
		}.write(t)
		go func() { done <- run(ctx, []string{"run", "--config", config}, io.Discard, &logs[i]) }()
	}
	t.Cleanup(func() {
		for i := range logs {
			ingesttest.AssertNoPHI(t, "ehrwatch run logs", logs[i].Bytes())
			if t.Failed() {
				tail := logs[i].Bytes()
				if len(tail) > 4000 {
					tail = tail[len(tail)-4000:]
				}
				t.Logf("instance %d, last logs:\n%s", i, tail)
			}
		}
	})
	ingesttest.WaitFor(t, 2*time.Minute, "lag 0 on the events and on the peers topic", func() bool {
		select {
		case err := <-done:
			t.Fatalf("ehrwatch run returned early: %v", err)
		default:
		}
		return ingesttest.Lag(t, brokers, group, topic, 4) == 0 && ingesttest.Lag(t, brokers, group+"-peers", peers, 1) == 0
	})

	rows, err := conn.Query(context.Background(), `SELECT detector, finding_id, severity, score, explanation, arraySort(event_ids)
 FROM findings FINAL WHERE detector IN ('volume', 'break_glass')`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var det, id, sev, expl string
		var score uint8
		var ids []string
		if err := rows.Scan(&det, &id, &sev, &score, &expl, &ids); err != nil {
			t.Fatal(err)
		}
		got = append(got, peerFindingKey(det, id, sev, int(score), expl, ids))
	}
	rows.Close()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("run stored %d volume/break_glass findings, replay wrote %d; they differ", len(got), len(want))
		for _, g := range got {
			if !slices.Contains(want, g) {
				t.Logf("only in run:    %.250s", g)
			}
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Logf("only in replay: %.250s", w)
			}
		}
	}
	t.Logf("%d volume and %d break_glass findings equal", vol, len(want)-vol)

	// One instance owns the stage; every instance hands over.
	judged, produced := 0.0, 0.0
	for _, a := range ops {
		_, body := httpGet(t, "http://"+a+"/metrics", "")
		if v := metricValue(body, "ehrwatch_peers_findings_total"); v > 0 {
			judged += v
		}
		if v := metricValue(body, `ehrwatch_peers_records_produced_total{result="ok"}`); v > 0 {
			produced += v
		}
	}
	if judged < float64(len(want)) || produced == 0 {
		t.Errorf("ehrwatch_peers_findings_total %v (want at least %d), records produced %v", judged, len(want), produced)
	}
	cancel()
	for range 2 {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("ehrwatch run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("ehrwatch run did not stop within 30s")
		}
	}
}

// closedStream is the hospital's events in dir, then one closing access
// per user two days after the hospital's last event, so that every
// partition's watermark passes every day and nothing is left to the
// end-of-input flush that only replay has. It returns the lines and the
// file they are written to.
func closedStream(t *testing.T, dir string) (lines []string, path string) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(dir, synth.EventsFile))
	if err != nil {
		t.Fatal(err)
	}
	lines = strings.Split(strings.TrimSpace(string(raw)), "\n")
	var last time.Time
	lastOf := map[string]map[string]any{}
	var users []string
	for _, l := range lines {
		var ev map[string]any
		if err := json.Unmarshal([]byte(l), &ev); err != nil {
			t.Fatal(err)
		}
		et, err := time.Parse(time.RFC3339Nano, ev["event_time"].(string))
		if err != nil {
			t.Fatal(err)
		}
		if et.After(last) {
			last = et
		}
		u := ev["user_id"].(string)
		if lastOf[u] == nil {
			users = append(users, u)
		}
		lastOf[u] = ev
	}
	closing := last.Add(48 * time.Hour).UTC().Format(time.RFC3339Nano)
	for i, u := range users {
		ev := lastOf[u]
		ev["event_id"] = fmt.Sprintf("evt-close-%04d", i)
		ev["event_time"], ev["logged_time"] = closing, closing
		ev["break_glass"] = false
		delete(ev, "break_glass_reason")
		b, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, string(b))
	}
	path = filepath.Join(t.TempDir(), "events.ndjson")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return lines, path
}

// streamMessages are the NDJSON event lines as Kafka messages keyed by
// user id, as the producers of the access log key them.
func streamMessages(t *testing.T, lines []string) []ingesttest.Message {
	t.Helper()
	msgs := make([]ingesttest.Message, len(lines))
	for i, l := range lines {
		var k struct {
			UserID  string `json:"user_id"`
			EventID string `json:"event_id"`
		}
		if err := json.Unmarshal([]byte(l), &k); err != nil {
			t.Fatal(err)
		}
		msgs[i] = ingesttest.Message{Message: kafka.Message{Key: []byte(k.UserID), Value: []byte(l)}, EventID: k.EventID}
	}
	return msgs
}

func peerFindingKey(detector, id, severity string, score int, explanation string, eventIDs []string) string {
	slices.Sort(eventIDs)
	return fmt.Sprintf("%s %s %s %d %s %v", detector, id, severity, score, explanation, eventIDs)
}

// newestPeerFindings reads replay's NDJSON and keeps the newest version
// of each volume and break_glass finding.
func newestPeerFindings(t *testing.T, path string) []string {
	t.Helper()
	var out []string
	for _, x := range newestFindings(t, path) {
		if x.Detector == "volume" || x.Detector == "break_glass" {
			out = append(out, peerFindingKey(x.Detector, x.FindingID, string(x.Severity), int(x.Score), x.Explanation, x.EventIDs))
		}
	}
	slices.Sort(out)
	return out
}

// newestFindings reads replay's NDJSON and keeps the newest version of
// each finding (the last written), by finding id.
func newestFindings(t *testing.T, path string) map[string]schemas.Finding {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	byID := map[string]schemas.Finding{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<22)
	for sc.Scan() {
		var x schemas.Finding
		if err := json.Unmarshal(sc.Bytes(), &x); err != nil {
			t.Fatal(err)
		}
		byID[x.FindingID] = x
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return byID
}

// facilityZones renders facilities.ndjson as reference.facilities' YAML
// flow mapping.
func facilityZones(t *testing.T, path string) string {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for _, l := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var f struct {
			ID   string `json:"facility_id"`
			Zone string `json:"time_zone"`
		}
		if err := json.Unmarshal([]byte(l), &f); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, f.ID+": "+f.Zone)
	}
	return strings.Join(parts, ", ")
}
