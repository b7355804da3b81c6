package ingest

import (
	"fmt"
	"sort"
	"sync"
)

// offsetTracker knows, for one partition in one generation, which fetched
// offsets are durably handled (stored in ClickHouse, or dead-lettered) and
// which offset may therefore be committed: one past the highest offset
// below which every fetched offset is handled.
//
// Offsets are registered with Begin in fetch order, which is increasing
// but not necessarily contiguous (compacted topics and transaction markers
// leave gaps); an offset that was never fetched does not exist for the
// tracker, so gaps never hold a commit back. Acks may arrive in any order.
//
// Memory is proportional to the offsets fetched but not yet committable,
// which the pipeline's bounded queues bound.
type offsetTracker struct {
	mu      sync.Mutex
	pending []trackedOffset // fetched offsets from head on, increasing
	head    int             // pending[:head] are handled and forgotten
	next    int64           // commit position: every fetched offset < next is handled; -1 before any
	last    int64           // last offset passed to Begin; -1 before any
}

type trackedOffset struct {
	offset  int64
	handled bool
}

// newOffsetTracker starts a tracker at start, the offset the partition was
// assigned at (its committed offset), or -1 when that is not an absolute
// offset (first/last for a new group).
func newOffsetTracker(start int64) *offsetTracker {
	if start < 0 {
		start = -1
	}
	return &offsetTracker{next: start, last: -1}
}

// Begin registers a fetched offset. Offsets must increase.
func (t *offsetTracker) Begin(offset int64) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if offset <= t.last {
		return fmt.Errorf("offset %d registered after %d", offset, t.last)
	}
	t.last = offset
	t.pending = append(t.pending, trackedOffset{offset: offset})
	return nil
}

// Cancel unregisters offset, which must be the last one registered and not
// handled: the message was fetched but never handed on.
func (t *offsetTracker) Cancel(offset int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.pending)
	if n > t.head && t.pending[n-1].offset == offset && !t.pending[n-1].handled {
		t.pending = t.pending[:n-1]
		t.last = offset - 1 // every earlier registration is below offset
		t.advance()
	}
}

// Ack marks offset handled. Offsets never registered, or already handled,
// are ignored.
func (t *offsetTracker) Ack(offset int64) { t.AckRange(offset, offset) }

// AckRange marks every registered offset in [first, last] handled.
func (t *offsetTracker) AckRange(first, last int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	live := t.pending[t.head:]
	i := sort.Search(len(live), func(i int) bool { return live[i].offset >= first })
	for ; i < len(live) && live[i].offset <= last; i++ {
		live[i].handled = true
	}
	t.advance()
}

// advance moves head past the handled prefix; t.mu must be held.
func (t *offsetTracker) advance() {
	for t.head < len(t.pending) && t.pending[t.head].handled {
		t.next = t.pending[t.head].offset + 1
		t.head++
	}
	if t.head == len(t.pending) {
		t.pending, t.head = t.pending[:0], 0
	} else if t.head > 1024 && t.head > len(t.pending)/2 {
		n := copy(t.pending, t.pending[t.head:])
		t.pending, t.head = t.pending[:n], 0
	}
}

// Committable returns the offset to commit (the next offset to consume)
// and whether there is one.
func (t *offsetTracker) Committable() (int64, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next, t.next >= 0
}

// Pending is the number of registered offsets not yet committable.
func (t *offsetTracker) Pending() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.pending) - t.head
}
