package main

import (
	"context"
	"fmt"
	"io"
)

// runDemo will run the real pipeline against an in-process Kafka broker
// fed by a synthetic hospital. Until that lands it says what it will do and
// exits non-zero, so nobody mistakes it for a working demo.
func runDemo(_ context.Context, _ []string, stdout, _ io.Writer) error {
	fmt.Fprint(stdout, `ehrwatch demo is not built yet. When it is, it will:
  - start an in-process Kafka broker (no external services),
  - generate a synthetic hospital (users, patients, encounters, shifts) and its access stream,
  - run the real pipeline (kafka-go consumer group, decoding, detectors, alerting) on it,
  - print alerts as they fire and a precision/recall table per detector.
`)
	return fmt.Errorf("demo: not implemented yet")
}
