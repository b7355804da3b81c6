package backoff

import (
	"testing"
	"time"
)

func TestBackoffGrowsAndIsBounded(t *testing.T) {
	b := New(Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second, Multiplier: 2, Jitter: 0.25})
	want := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000, 2000}
	for i, w := range want {
		w *= time.Millisecond
		got := b.Next()
		lo, hi := time.Duration(float64(w)*0.75), time.Duration(float64(w)*1.25)
		if got < lo || got > hi {
			t.Errorf("pause %d = %s, want %s ±25%%", i, got, w)
		}
	}
	if b.Attempt() != len(want) {
		t.Errorf("Attempt() = %d, want %d", b.Attempt(), len(want))
	}
	b.Reset()
	if got := b.Next(); got > 125*time.Millisecond {
		t.Errorf("after reset: %s, want about 100ms", got)
	}
	huge := &Backoff{Policy: b.Policy, attempt: 10_000}
	if got := huge.Next(); got > 2500*time.Millisecond || got <= 0 {
		t.Errorf("after many attempts: %s, want about the 2s cap", got)
	}
}

// The alert deliveries' policy: initial·2^(attempt-1) capped at max,
// jittered within ±50%.
func TestDelayDoublesWithHalfJitter(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second, Multiplier: 2, Jitter: 0.5}
	for n, base := range []time.Duration{100, 200, 400, 800, 1000, 1000} {
		base *= time.Millisecond
		for range 50 {
			d := p.Delay(n)
			if d < base/2 || d > base+base/2 {
				t.Fatalf("Delay(%d) = %v, want within ±50%% of %v", n, d, base)
			}
		}
	}
}

func TestDelayWithoutJitterIsExact(t *testing.T) {
	p := Policy{Initial: time.Second, Max: time.Minute, Multiplier: 1.5}
	for n, want := range []time.Duration{1000, 1500, 2250, 3375} {
		if got := p.Delay(n); got != want*time.Millisecond {
			t.Errorf("Delay(%d) = %v, want %v", n, got, want*time.Millisecond)
		}
	}
}
