package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestRunPeersStageOwnerKilled: three `ehrwatch run` processes with the
// default configuration (peers.mode group, the peers topic created by
// run) on a six-partition topic. Once the instance owning the peers
// topic's partition (the peer stage) has stored judgements, the rest of
// the stream is produced and that instance is SIGKILLed: no drain, no
// commit, its uncommitted judgements and hand-overs in flight. A survivor
// takes the stage over, rebuilds it from the peers topic's first offset
// and judges from the committed offset on. After every event and every
// hand-over is consumed, the stored findings (newest version of each id,
// every detector, volume and break_glass included, with their evidence:
// peer counts, means, baselines) are those `ehrwatch replay --partitions
// 6` writes for the same stream.
func TestRunPeersStageOwnerKilled(t *testing.T) {
	t.Parallel() // mostly waiting on child processes
	const partitions = 6
	brokers := testenv.Kafka(t)
	dir := genHospital(t, "canonical")
	lines, events := closedStream(t, dir)
	msgs := streamMessages(t, lines)

	out := filepath.Join(t.TempDir(), "findings.ndjson")
	if _, errOut, err := runReplayCmd(t, "--events", events, "--reference", filepath.Join(dir, "reference"),
		"--facilities", filepath.Join(dir, "facilities.ndjson"), "--partitions", fmt.Sprint(partitions), "--out", out); err != nil {
		t.Fatalf("replay: %v\n%s", err, errOut)
	}
	var want []string
	dets := map[string]int{}
	for _, f := range newestFindings(t, out) {
		want = append(want, killFindingKey(t, f))
		dets[f.Detector]++
	}
	slices.Sort(want)
	if dets["volume"] < 3 || dets["break_glass"] < 3 {
		t.Fatalf("replay wrote too few peer findings to compare: %v", dets)
	}

	zones := facilityZones(t, filepath.Join(dir, "facilities.ndjson"))
	e := newRunEnvWith(t, partitions, 500, runOptions{brokers: brokers, sections: func(hashKey string) string {
		return fmt.Sprintf("reference:\n  source: files\n  dir: %q\n  hash_key_file: %q\n  facilities: {%s}\n",
			filepath.Join(dir, "reference"), hashKey, zones)
	}})
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := e.conn.QueryRow(context.Background(), q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}

	// The first half, three instances; find the stage owner once it has
	// stored judgements.
	half := len(msgs) / 2
	ingesttest.Produce(t, brokers, e.topic, msgs[:half])
	cs := []*child{e.start(), e.start(), e.start()}
	for _, c := range cs {
		if !c.waitUntil(60*time.Second, "partition assignment", func() bool { return len(c.members) > 0 }) {
			t.Fatal("an instance got no partition assignment within 60s")
		}
	}
	// The instance that owns the stage now (it may move while the
	// instances join).
	var owner *child
	stageOwner := func() bool {
		owner = nil
		for _, c := range cs {
			c.mu.Lock()
			if c.stages > 0 {
				owner = c
			}
			c.mu.Unlock()
		}
		return owner != nil
	}
	ingesttest.WaitFor(t, 2*time.Minute, "a peer stage owner with stored volume findings", func() bool {
		return stageOwner() && count("SELECT uniqExact(finding_id) FROM findings WHERE detector = 'volume'") > 0
	})
	before := count("SELECT uniqExact(finding_id) FROM findings WHERE detector IN ('volume', 'break_glass') AND kafka_offset = 9223372036854775807")

	// The second half, and the owner SIGKILLed while it is consumed.
	ingesttest.Produce(t, brokers, e.topic, msgs[half:])
	ingesttest.WaitFor(t, time.Minute, "a peer stage owner", stageOwner)
	_ = owner.signal(syscall.SIGKILL, 10*time.Second)
	e.expireMember(owner.member())
	var survivors []*child
	for _, c := range cs {
		if c != owner {
			survivors = append(survivors, c)
		}
	}
	ingesttest.WaitFor(t, 2*time.Minute, "a survivor taking the peer stage over", func() bool {
		for _, c := range survivors {
			c.mu.Lock()
			n := c.stages
			c.mu.Unlock()
			if n > 0 {
				return true
			}
		}
		return false
	})
	ingesttest.WaitFor(t, 3*time.Minute, "lag 0 on the events and on the peers topic", func() bool {
		return e.lag() == 0 && ingesttest.Lag(t, brokers, e.group+"-peers", e.group+".peers", 1) == 0
	})
	t.Logf("stage judgements stored before the kill: %d of replay's %d volume and %d break_glass findings",
		before, dets["volume"], dets["break_glass"])

	rows, err := e.conn.Query(context.Background(), `SELECT finding_id, detector, severity, score, user_id, patient_id,
 window_start, window_end, suppressed, explanation, event_ids, evidence FROM findings FINAL`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var f schemas.Finding
		var sev, evidence string
		if err := rows.Scan(&f.FindingID, &f.Detector, &sev, &f.Score, &f.UserID, &f.PatientID,
			&f.WindowStart, &f.WindowEnd, &f.Suppressed, &f.Explanation, &f.EventIDs, &evidence); err != nil {
			t.Fatal(err)
		}
		f.Severity = schemas.Severity(sev)
		if err := json.Unmarshal([]byte(evidence), &f.Evidence); err != nil {
			t.Fatal(err)
		}
		got = append(got, killFindingKey(t, f))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	rows.Close()
	slices.Sort(got)
	if diffLines(t, "finding", want, got) {
		t.Log(`above, "the uninterrupted run" is replay --partitions 6 and "after the trouble" the instances after the stage owner's SIGKILL`)
	}
	t.Logf("replay --partitions %d: %d findings %v; run stored %d", partitions, len(want), dets, len(got))
	for _, c := range survivors {
		if err := c.signal(syscall.SIGTERM, 30*time.Second); err != nil {
			t.Errorf("ehrwatch exited with %v after SIGTERM", err)
		}
	}
}

// killFindingKey is instancesFindingKey and the evidence: the peer
// figures (peers, peer_mean, the volume baseline and threshold) are what
// a stage rebuilt without the records before the committed offset would
// get wrong without changing severity or explanation.
func killFindingKey(t *testing.T, f schemas.Finding) string {
	t.Helper()
	ev, err := json.Marshal(f.Evidence)
	if err != nil {
		t.Fatal(err)
	}
	return instancesFindingKey(f) + "|" + string(ev)
}
