//go:build !unix

package main

import "time"

// processCPU and peakRSS are 0 where getrusage is not available: the
// benchmarks and replay then report no CPU or memory figures.
func processCPU() time.Duration { return 0 }

func peakRSS() int64 { return 0 }
