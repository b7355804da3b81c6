// Package backoff is the one exponential backoff with jitter of ehrwatch:
// the pipeline's retries (ingest.RetryConfig) and the alert deliveries
// (alerting.DeliveryConfig) both pause with it. It imports nothing of
// ehrwatch.
package backoff

import (
	"math"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff with jitter: the n-th pause (n from 0)
// is Initial·Multiplier^n, capped at Max, then randomised uniformly within
// ±Jitter (0..1) of its length.
type Policy struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64
	Jitter     float64
}

// Delay returns the n-th pause (n = 0 is the pause after the first
// failure).
func (p Policy) Delay(n int) time.Duration {
	d := float64(p.Initial) * math.Pow(p.Multiplier, float64(n))
	if d > float64(p.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		d = float64(p.Max)
	}
	if p.Jitter > 0 {
		d *= 1 + p.Jitter*(2*rand.Float64()-1)
	}
	return time.Duration(d)
}

// Backoff counts the attempts of one retry loop and yields their pauses.
type Backoff struct {
	Policy
	attempt int
}

// New returns a Backoff at its first attempt.
func New(p Policy) *Backoff { return &Backoff{Policy: p} }

// Next returns the pause before the next attempt and counts the attempt.
func (b *Backoff) Next() time.Duration {
	d := b.Delay(b.attempt)
	b.attempt++
	return d
}

// Attempt is the number of pauses Next has returned since the last Reset.
func (b *Backoff) Attempt() int { return b.attempt }

// Reset starts over at the first pause, after a success.
func (b *Backoff) Reset() { b.attempt = 0 }
