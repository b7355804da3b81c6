package ingest

import (
	"math/rand/v2"
	"testing"
)

func committable(t *testing.T, tr *offsetTracker) int64 {
	t.Helper()
	off, ok := tr.Committable()
	if !ok {
		return -1
	}
	return off
}

func TestOffsetTracker(t *testing.T) {
	type step struct {
		op     string // begin, ack, range, cancel
		a, b   int64
		want   int64 // committable after the step (-1: none)
		wantPn int   // pending after the step
	}
	tests := []struct {
		name  string
		start int64
		steps []step
	}{
		{"nothing fetched keeps the assigned offset", 42, []step{
			{"ack", 41, 0, 42, 0},
		}},
		{"unknown start has nothing to commit", -2, []step{
			{"begin", 0, 0, -1, 1},
			{"ack", 0, 0, 1, 0},
		}},
		{"in order", 10, []step{
			{"begin", 10, 0, 10, 1},
			{"begin", 11, 0, 10, 2},
			{"ack", 10, 0, 11, 1},
			{"ack", 11, 0, 12, 0},
		}},
		{"out of order acks wait for the gap to close", 0, []step{
			{"begin", 0, 0, 0, 1},
			{"begin", 1, 0, 0, 2},
			{"begin", 2, 0, 0, 3},
			{"begin", 3, 0, 0, 4},
			{"ack", 2, 0, 0, 4},
			{"ack", 3, 0, 0, 4},
			{"ack", 1, 0, 0, 4},
			{"ack", 0, 0, 4, 0},
		}},
		{"compacted offsets are skipped", 100, []step{
			{"begin", 105, 0, 100, 1},
			{"begin", 109, 0, 100, 2},
			{"begin", 200, 0, 100, 3},
			{"ack", 105, 0, 106, 2},
			{"ack", 200, 0, 106, 2},
			{"ack", 109, 0, 201, 0},
		}},
		{"range ack covers only registered offsets", 0, []step{
			{"begin", 0, 0, 0, 1},
			{"begin", 5, 0, 0, 2},
			{"begin", 9, 0, 0, 3},
			{"range", 0, 5, 6, 1},
			{"range", 6, 100, 10, 0},
		}},
		{"duplicate and unknown acks are ignored", 0, []step{
			{"begin", 0, 0, 0, 1},
			{"begin", 1, 0, 0, 2},
			{"ack", 0, 0, 1, 1},
			{"ack", 0, 0, 1, 1},
			{"ack", 7, 0, 1, 1},
			{"ack", 1, 0, 2, 0},
		}},
		{"cancel forgets the last unsubmitted offset", 0, []step{
			{"begin", 0, 0, 0, 1},
			{"begin", 1, 0, 0, 2},
			{"cancel", 1, 0, 0, 1},
			{"ack", 0, 0, 1, 0},
			{"begin", 1, 0, 1, 1},
		}},
		{"cancel of anything but the last offset is ignored", 0, []step{
			{"begin", 0, 0, 0, 1},
			{"begin", 1, 0, 0, 2},
			{"cancel", 0, 0, 0, 2},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := newOffsetTracker(tc.start)
			for i, s := range tc.steps {
				switch s.op {
				case "begin":
					if err := tr.Begin(s.a); err != nil {
						t.Fatalf("step %d: Begin(%d): %v", i, s.a, err)
					}
				case "ack":
					tr.Ack(s.a)
				case "range":
					tr.AckRange(s.a, s.b)
				case "cancel":
					tr.Cancel(s.a)
				}
				if got := committable(t, tr); got != s.want {
					t.Fatalf("step %d (%s %d): committable %d, want %d", i, s.op, s.a, got, s.want)
				}
				if got := tr.Pending(); got != s.wantPn {
					t.Fatalf("step %d (%s %d): pending %d, want %d", i, s.op, s.a, got, s.wantPn)
				}
			}
		})
	}
}

func TestOffsetTrackerRejectsNonIncreasingOffsets(t *testing.T) {
	tr := newOffsetTracker(0)
	if err := tr.Begin(5); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{5, 4} {
		if err := tr.Begin(off); err == nil {
			t.Errorf("Begin(%d) after 5: no error", off)
		}
	}
}

// TestOffsetTrackerRandomAcks acks a gapped offset sequence in random
// order and checks after every ack that the commit position is exactly one
// past the longest fully acked prefix.
func TestOffsetTrackerRandomAcks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for round := range 50 {
		tr := newOffsetTracker(0)
		var offs []int64
		next := int64(0)
		for range 3000 {
			next += 1 + int64(r.IntN(3)) // gaps of up to 2
			offs = append(offs, next)
			if err := tr.Begin(next); err != nil {
				t.Fatal(err)
			}
		}
		acked := make([]bool, len(offs))
		order := r.Perm(len(offs))
		prefix := 0
		for _, i := range order {
			tr.Ack(offs[i])
			acked[i] = true
			for prefix < len(offs) && acked[prefix] {
				prefix++
			}
			want := int64(0)
			if prefix > 0 {
				want = offs[prefix-1] + 1
			}
			if got := committable(t, tr); got != want {
				t.Fatalf("round %d: committable %d, want %d (prefix %d)", round, got, want, prefix)
			}
			if got := tr.Pending(); got != len(offs)-prefix {
				t.Fatalf("round %d: pending %d, want %d", round, got, len(offs)-prefix)
			}
		}
	}
}
