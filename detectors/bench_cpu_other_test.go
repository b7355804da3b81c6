//go:build !unix

package detectors_test

import (
	"testing"
	"time"
)

// cpuTime is 0 where getrusage is not available: no cpu-ns/op metric.
func cpuTime(*testing.B) time.Duration { return 0 }
