package detectors

import (
	"fmt"
	"testing"
)

// TestCareSpanHashCollision: a patient's spans are searched by a 32-bit
// hash of their key; two keys with one hash must still find their own
// encounters, not each other's, and the key under another kind none.
func TestCareSpanHashCollision(t *testing.T) {
	// Two user ids with one hash (about 80 000 tries).
	seen := map[uint32]string{}
	var a, b string
	for i := 0; a == ""; i++ {
		k := fmt.Sprintf("u%d", i)
		if prev, ok := seen[spanHash(k)]; ok {
			a, b = prev, k
		}
		seen[spanHash(k)] = k
	}
	if spanHash(a) != spanHash(b) || a == b {
		t.Fatalf("no collision found: %q %q", a, b)
	}
	day := int64(86400e9)
	pc, _ := buildCare([]pendingEncounter{
		{ce: careEncounter{start: 0, end: day, id: "e-a", dept: "ward"}, team: []string{a}},
		{ce: careEncounter{start: 10 * day, end: 11 * day, id: "e-b", dept: "ward"}, team: []string{b}},
		{ce: careEncounter{start: 20 * day, end: 21 * day, id: "e-x", dept: "clinic"}, team: []string{"someone"}},
	}, func(s string) string { return s })
	for _, tc := range []struct {
		kind uint8
		key  string
		at   int64
		want string
	}{
		{spanMember, a, day / 2, "e-a"},
		{spanMember, b, 10*day + 1, "e-b"},
		{spanMember, a, 10*day + 1, ""}, // a's encounter ended: b's must not answer for a
		{spanMember, b, day / 2, ""},
		{spanDept, a, day / 2, ""}, // the same key under another kind
		{spanDept, "ward", 10*day + 1, "e-b"},
	} {
		e, ok := pc.find(tc.kind, tc.key, tc.at, 0, 0)
		if got := map[bool]string{true: e.id}[ok]; got != tc.want {
			t.Errorf("find(%d, %q, day %.1f) = %q, want %q", tc.kind, tc.key, float64(tc.at)/float64(day), got, tc.want)
		}
	}
}
