package schemas

import "math"

// Scores. A finding's (and an alert's) Score is its rank on one 0–100 scale
// on which every severity owns a fixed band, so a score is never at odds
// with its severity: a medium finding scores 40–59 and is never above a
// high one, whatever detector raised it.
//
//	severity   band     typical (DefaultScore)
//	info        0–19    10
//	low        20–39    30
//	medium     40–59    50
//	high       60–79    75
//	critical   80–100   95
//
// Within its band a detector places a finding by how strong its evidence
// is (ScoreWithin): how far above the baseline, how improbable by chance.
// This file is the only home of the mapping; detectors, alerting and the
// triage API all use it.

var scoreBands = map[Severity][2]uint8{
	SeverityInfo:     {0, 19},
	SeverityLow:      {20, 39},
	SeverityMedium:   {40, 59},
	SeverityHigh:     {60, 79},
	SeverityCritical: {80, 100},
}

// ScoreBand returns the lowest and highest score of the severity's band;
// (0, 0) for an unknown severity.
func (s Severity) ScoreBand() (lo, hi uint8) {
	b := scoreBands[s]
	return b[0], b[1]
}

// DefaultScore is the score of a finding of severity s that carries no
// ranking of its own: info 10, low 30, medium 50, high 75, critical 95.
func (s Severity) DefaultScore() uint8 {
	switch s {
	case SeverityInfo:
		return 10
	case SeverityLow:
		return 30
	case SeverityMedium:
		return 50
	case SeverityHigh:
		return 75
	case SeverityCritical:
		return 95
	}
	return 0
}

// ScoreWithin places a finding in its severity's band: q = 0 is the band's
// bottom, q = 1 its top. q outside [0, 1] (or NaN) is clamped.
func ScoreWithin(s Severity, q float64) uint8 {
	lo, hi := s.ScoreBand()
	if math.IsNaN(q) || q < 0 {
		q = 0
	}
	if q > 1 {
		q = 1
	}
	return lo + uint8(math.Round(q*float64(hi-lo)))
}

// ClampScore returns score moved into the band of s: 0 (no score) becomes
// the severity's DefaultScore, anything outside the band its nearest edge.
func ClampScore(s Severity, score uint8) uint8 {
	if score == 0 {
		return s.DefaultScore()
	}
	lo, hi := s.ScoreBand()
	return min(max(score, lo), hi)
}
