//go:build !unix

package main

import "time"

// processCPU is 0 where getrusage is not available: the benchmarks then
// report no CPU figures.
func processCPU() time.Duration { return 0 }
