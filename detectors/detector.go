// Package detectors holds ehrwatch's stateful detectors and the small
// framework that runs them: the Detector interface and its optional extras,
// the explicit registry of detector factories, event-time watermarks,
// reference-data lookups (users, patients, care relationships) and
// allowlists.
//
// Detectors see events one at a time, in partition order, and reason on the
// event's own time, never the wall clock. One Engine runs the enabled
// detectors for one Kafka partition (events are keyed by user, so all of a
// user's events and all of that user's state live in one Engine).
package detectors

import (
	"context"
	"io"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Detector is the hot-path interface every detector implements: look at one
// event, update state, and return any findings it completes.
type Detector interface {
	Detect(ctx context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error)
}

// WatermarkFlusher is implemented by detectors that keep windows open: when
// the partition's watermark (max event time minus allowed lateness) passes,
// they close every window that ends at or before it and return its findings.
type WatermarkFlusher interface {
	FlushUntil(ctx context.Context, watermark time.Time) ([]schemas.Finding, error)
}

// Snapshotter is implemented by detectors whose state must survive a
// restart. Snapshot writes the whole state; Restore replaces it. The Engine
// stores snapshots together with the Kafka offsets they reflect.
type Snapshotter interface {
	Snapshot(w io.Writer) error
	Restore(r io.Reader) error
}

// Closer is implemented by detectors holding resources beyond memory.
type Closer interface {
	Close() error
}

// Config is what every detector's configuration implements.
type Config interface {
	Validate() error
}
