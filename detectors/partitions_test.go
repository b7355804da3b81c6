package detectors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"hash/fnv"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestFindingsIndependentOfPartitions: a user's events all go to one
// partition, so every detector whose state is per user (relationships with
// continuity of care and chance ranking, self access, deceased,
// terminated, bulk export, off hours) writes the same findings on 1, 4 and
// 12 partitions; volume and break_glass too when their peers are judged by
// a PeerStage fed by every partition, whatever the order in which the
// partitions progress (in input order, or one partition after the other).
// With one partition the stage gives exactly the volume findings of the
// engine judging its own peers (the quality gate's setting); break_glass
// compares with whole days of the peers there, not with the accesses so
// far, so its peer facts differ from one engine's.
func TestFindingsIndependentOfPartitions(t *testing.T) {
	t.Parallel()
	cfg := synth.DefaultConfig().WithUsers(250)
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	newEngine := qualityEngine(t, h)
	canonical := func(fs []schemas.Finding, skip string) []string {
		last := map[string]schemas.Finding{}
		for _, f := range fs {
			if f.Detector != skip {
				last[f.FindingID] = f
			}
		}
		var out []string
		for _, f := range last {
			b, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		slices.Sort(out)
		return out
	}
	run := func(n int, sequential bool, skip string) []string {
		fs, _ := runPartitioned(t, h, newEngine, n, sequential)
		return canonical(fs, skip)
	}

	alone := canonical(runEngine(t, newEngine(), h.Events, true), "break_glass")
	volume := 0
	for _, f := range alone {
		var x schemas.Finding
		if err := json.Unmarshal([]byte(f), &x); err != nil {
			t.Fatal(err)
		}
		if x.Detector == "volume" {
			volume++
		}
	}
	if len(alone) < 50 || volume < 3 {
		t.Fatalf("only %d findings (%d volume) on one engine", len(alone), volume)
	}
	if got := run(1, false, "break_glass"); !slices.Equal(got, alone) {
		t.Errorf("one partition with a PeerStage: %d findings differ from one engine's %d", len(got), len(alone))
	}
	one := run(1, false, "")
	bg := 0
	for _, f := range one {
		if strings.Contains(f, `"detector":"break_glass"`) && strings.Contains(f, `"peer_mean"`) {
			bg++
		}
	}
	if bg < 3 {
		t.Fatalf("only %d break_glass findings with a peer comparison", bg)
	}
	for _, n := range []int{4, 12} {
		for _, sequential := range []bool{false, true} {
			if got := run(n, sequential, ""); !slices.Equal(got, one) {
				t.Errorf("%d partitions (one after the other: %v): %d findings differ from one partition's %d", n, sequential, len(got), len(one))
				for _, d := range diff(got, one) {
					t.Log(d)
				}
			}
		}
	}
	// Every batch handed over twice: the stage ignores the repeats, and
	// emits no finding twice.
	fs, _ := runPartitionedWith(t, h, newEngine, partitionRun{n: 4, redeliver: true})
	if got := canonical(fs, ""); !slices.Equal(got, one) {
		t.Errorf("4 partitions, every batch delivered twice: %d findings differ from one partition's %d", len(got), len(one))
		for _, d := range diff(got, one) {
			t.Log(d)
		}
	}
	// Every engine restored from its snapshot half-way: the same findings.
	fs2, _ := runPartitionedWith(t, h, newEngine, partitionRun{n: 4, restartAt: len(h.Events) / 2})
	if got := canonical(fs2, ""); !slices.Equal(got, one) {
		t.Errorf("4 partitions restored from snapshots half-way: %d findings differ from one partition's %d", len(got), len(one))
		for _, d := range diff(got, one) {
			t.Log(d)
		}
	}
	versions := map[string]int{}
	for _, f := range fs {
		if f.Detector == "volume" {
			versions[f.FindingID]++
		}
	}
	for id, v := range versions {
		if v > 1 {
			t.Errorf("volume finding %s emitted %d times with every batch delivered twice", id, v)
		}
	}
}

// diff lists up to 5 lines in only one of two sorted slices.
func diff(got, want []string) []string {
	var out []string
	for _, g := range got {
		if _, ok := slices.BinarySearch(want, g); !ok && len(out) < 5 {
			out = append(out, "only got:  "+g)
		}
	}
	for _, w := range want {
		if _, ok := slices.BinarySearch(got, w); !ok && len(out) < 10 {
			out = append(out, "only want: "+w)
		}
	}
	return out
}

// runPartitioned feeds h's events to n engines (users spread by FNV-1a of
// user_id, as Kafka's partitioner does) sharing one PeerStage, as ehrwatch
// replay does, and returns every finding emitted, in order, and the
// engines' explanation coverage. With sequential, each partition's whole
// share goes before the next one's (the most uneven progress there is);
// otherwise in input order, the stage collecting every 500 events.
func runPartitioned(t testing.TB, h *synth.Hospital, newEngine func() *detectors.Engine, n int, sequential bool) ([]schemas.Finding, detectors.Coverage) {
	return runPartitionedWith(t, h, newEngine, partitionRun{n: n, sequential: sequential})
}

// partitionRun says how runPartitionedWith feeds the engines.
type partitionRun struct {
	n          int
	sequential bool
	// redeliver hands every batch an engine hands over to the stage again
	// later (once at the next collection from any partition, and all of
	// them once more at the end), as a transport that delivers at least
	// once would after a crash.
	redeliver bool
	// restartAt, when > 0, replaces every engine at that event by a new
	// one restored from its snapshot (input order only).
	restartAt int
}

func runPartitionedWith(t testing.TB, h *synth.Hospital, newEngine func() *detectors.Engine, o partitionRun) ([]schemas.Finding, detectors.Coverage) {
	n, sequential, redeliver := o.n, o.sequential, o.redeliver
	t.Helper()
	ctx := context.Background()
	loc, err := detectors.FacilityLocations(h.TimeZones())
	if err != nil {
		t.Fatal(err)
	}
	partitionOf := func(user string) int {
		f := fnv.New32a()
		f.Write([]byte(user))
		return int(f.Sum32() % uint32(n))
	}
	stage, err := detectors.NewPeerStage(detectors.DefaultEngineConfig(detectors.Registry()), detectors.Env{Location: loc}, n)
	if err != nil {
		t.Fatal(err)
	}
	engines := make([]*detectors.Engine, n)
	for i := range engines {
		engines[i] = newEngine()
		engines[i].DeferPeers()
	}
	var out []schemas.Finding
	type sent struct {
		source int
		batch  detectors.PeerBatch
		wm     time.Time
	}
	var history []sent
	collect := func(i int) {
		b, wm := engines[i].TakePeers(), engines[i].Watermark()
		stage.Add(i, b, wm)
		if redeliver {
			if len(history) > 0 {
				old := history[len(history)-1]
				stage.Add(old.source, old.batch, old.wm)
			}
			history = append(history, sent{i, b, wm})
		}
		out = append(out, engines[0].AdmitPeerFindings(stage.Ready())...)
	}
	process := func(ev *schemas.AccessEvent) int {
		i := partitionOf(ev.UserID)
		fs, err := engines[i].Process(ctx, ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fs...)
		return i
	}
	if sequential {
		for p := range n {
			for k := range h.Events {
				if partitionOf(h.Events[k].UserID) == p {
					process(&h.Events[k])
				}
			}
			collect(p)
		}
	} else {
		for k := range h.Events {
			if k == o.restartAt && k > 0 {
				for i, e := range engines {
					collect(i)
					var snap bytes.Buffer
					if err := e.Snapshot(&snap); err != nil {
						t.Fatal(err)
					}
					engines[i] = newEngine()
					engines[i].DeferPeers()
					if err := engines[i].Restore(&snap); err != nil {
						t.Fatal(err)
					}
				}
			}
			if i := process(&h.Events[k]); k%500 == 0 {
				collect(i)
			}
		}
	}
	var cov detectors.Coverage
	for i, e := range engines {
		fs, err := e.Flush(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fs...)
		b := e.TakePeers()
		stage.Add(i, b, detectors.EndOfTime)
		history = append(history, sent{i, b, detectors.EndOfTime})
		cov.Add(e.Coverage())
	}
	if redeliver {
		out = append(out, engines[0].AdmitPeerFindings(stage.Ready())...)
		for _, old := range history {
			stage.Add(old.source, old.batch, old.wm)
		}
	}
	out = append(out, engines[0].AdmitPeerFindings(stage.Flush())...)
	if stage.Pending() != 0 {
		t.Errorf("%d partitions: %d facility-days or findings left unjudged", n, stage.Pending())
	}
	return out, cov
}
