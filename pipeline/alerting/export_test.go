package alerting

import "time"

func init() {
	// Tests wait for dead letters; write them promptly.
	deadLetterPeriod = 10 * time.Millisecond
}
