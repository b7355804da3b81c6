//go:build race

package synth_test

// raceEnabled lets the slowest exhaustive checks sample under -race.
const raceEnabled = true
