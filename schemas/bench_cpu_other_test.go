//go:build !unix

package schemas

import (
	"testing"
	"time"
)

// cpuTime is 0 where getrusage is not available: no cpu-ns/op metric.
func cpuTime(*testing.B) time.Duration { return 0 }
