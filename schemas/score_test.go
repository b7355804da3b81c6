package schemas

import "testing"

func TestScoreBandsOrderSeverities(t *testing.T) {
	sevs := []Severity{SeverityInfo, SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}
	for i, s := range sevs {
		lo, hi := s.ScoreBand()
		if d := s.DefaultScore(); d < lo || d > hi {
			t.Errorf("%s: default score %d outside its band %d–%d", s, d, lo, hi)
		}
		if ScoreWithin(s, 0) != lo || ScoreWithin(s, 1) != hi || ScoreWithin(s, 7) != hi || ScoreWithin(s, -1) != lo {
			t.Errorf("%s: ScoreWithin does not span and clamp to %d–%d", s, lo, hi)
		}
		if i > 0 {
			_, prevHi := sevs[i-1].ScoreBand()
			if lo != prevHi+1 {
				t.Errorf("%s starts at %d, want %d (right after %s)", s, lo, prevHi+1, sevs[i-1])
			}
		}
	}
	if lo, hi := SeverityCritical.ScoreBand(); lo != 80 || hi != 100 {
		t.Errorf("critical band %d–%d", lo, hi)
	}
	if got := ClampScore(SeverityMedium, 100); got != 59 {
		t.Errorf("a medium finding scored 100 clamps to %d, want 59", got)
	}
	if got := ClampScore(SeverityHigh, 0); got != 75 {
		t.Errorf("unscored high = %d, want 75", got)
	}
	if got := ClampScore(SeverityLow, 5); got != 20 {
		t.Errorf("low scored 5 clamps to %d, want 20", got)
	}
}
