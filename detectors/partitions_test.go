package detectors_test

import (
	"encoding/json"
	"hash/fnv"
	"slices"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestFindingsIndependentOfPartitions: a user's events all go to one
// partition, so every detector whose state is per user (relationships with
// continuity of care and chance ranking, self access, deceased,
// terminated, bulk export, off hours) writes the same findings on 1, 4 and
// 12 partitions. volume and break_glass compare peers within a partition
// and are left out until peer statistics come from the whole peer group
// (docs/detectors.md, design note).
func TestFindingsIndependentOfPartitions(t *testing.T) {
	t.Parallel()
	cfg := synth.DefaultConfig().WithUsers(250)
	h, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	newEngine := qualityEngine(t, h)
	peerDependent := map[string]bool{"volume": true, "break_glass": true}
	run := func(n int) []string {
		shares := make([][]schemas.AccessEvent, n)
		for _, ev := range h.Events {
			f := fnv.New32a()
			f.Write([]byte(ev.UserID))
			i := int(f.Sum32() % uint32(n))
			shares[i] = append(shares[i], ev)
		}
		last := map[string]schemas.Finding{}
		for _, share := range shares {
			for _, f := range runEngine(t, newEngine(), share, true) {
				if !peerDependent[f.Detector] {
					last[f.FindingID] = f
				}
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
	one := run(1)
	if len(one) < 50 {
		t.Fatalf("only %d findings on one partition", len(one))
	}
	for _, n := range []int{4, 12} {
		got := run(n)
		if !slices.Equal(got, one) {
			t.Errorf("%d partitions: %d findings differ from one partition's %d", n, len(got), len(one))
		}
	}
}
