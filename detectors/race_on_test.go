//go:build race

package detectors_test

// raceEnabled lets the quality gate run two of its four hospitals under
// -race (still two seeds and two sizes): the race detector slows the
// engine several times and the gate exercises no concurrency.
const raceEnabled = true
