package replay

import (
	"strings"
	"testing"
)

func TestPartitionerMatchesKafkaGo(t *testing.T) {
	// The demo's producer uses kafka.Hash; replay --partitions must put
	// every user where it does.
	p := MustPartitioner("fnv1a", 4)
	seen := map[int]bool{}
	for i := range 200 {
		seen[p([]byte("usr-nyc-"+strings.Repeat("0", i%3)+string(rune('a'+i%26))))] = true
	}
	if len(seen) != 4 {
		t.Errorf("users spread over %d of 4 partitions", len(seen))
	}
	if got := MustPartitioner("murmur2", 1)([]byte("anything")); got != 0 {
		t.Errorf("one partition: got %d", got)
	}
}
