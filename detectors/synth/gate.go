package synth

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// The detector quality gate, scored at the alert level after warm-up
// against the ground truth. `go test ./detectors` runs it on two seeds and
// two hospital sizes; `ehrwatch demo` prints it for its hospital.
//
//   - recall: every injected incident has a finding of its detector at
//     medium or above, unsuppressed, that is part of an alert;
//   - noise: at most GateMaxNoisePer1000 alerts per 1 000 user-days after
//     warm-up whose findings match no injected incident;
//   - ranking: every injected incident's best finding scores above the
//     median score of its detector's findings after warm-up that match no
//     incident (scores order severities first, see schemas/score.go); a
//     tie counts as above only at the top of the incident's severity band.

// GateMaxNoisePer1000 is the noise budget: alerts per 1 000 user-days
// after warm-up that match no injected incident.
const GateMaxNoisePer1000 = 3.0

// GateAlert is what the gate needs of an alert (the last version of it).
type GateAlert struct {
	AlertID    string
	Rule       string
	Detector   string
	FirstSeen  time.Time
	FindingIDs []string
}

// GateResult is the gate's verdict for one hospital.
type GateResult struct {
	Seed                uint64
	Users, Days, Warmup int
	Incidents, Recalled int
	Missed              []string       // "lbl-0042 (deceased, deceased_no_relationship)"
	UserDays            float64        // after warm-up
	NoiseAlerts         int            // after warm-up, matching no incident
	NoiseByRule         map[string]int // rule/detector → alerts
	NoiseAlertIDs       []string
	NoisePer1000        float64
	Ranking             []GateRanking
	Failures            []string
}

// GateRanking is the ranking check of one detector.
type GateRanking struct {
	Detector       string
	Incidents      int
	Benign         int   // findings matching no incident
	MedianBenign   uint8 // median score of those
	LowestIncident uint8 // lowest of the incidents' best scores
	Below          []string
}

// Pass reports whether every check passed.
func (r GateResult) Pass() bool { return len(r.Failures) == 0 }

// windowedKinds are matched by user and window overlap; the others by
// event ids.
var windowedKinds = map[string]bool{KindVolume: true, KindBulkExport: true, KindOffHours: true}

// Matches reports whether a finding matches a label.
func Matches(f *schemas.Finding, events map[string]bool, l *Label) bool {
	if f.Detector != l.Detector || f.UserID != l.UserID {
		return false
	}
	if windowedKinds[l.Detector] {
		return !f.WindowStart.After(l.End) && !l.Start.After(f.WindowEnd)
	}
	for _, id := range l.EventIDs {
		if events[id] {
			return true
		}
	}
	return false
}

// WarmStart is when warm-up ends: local midnight of day WarmupDays at the
// first facility.
func (h *Hospital) WarmStart() time.Time {
	f := h.Facilities[0]
	return f.Start.In(f.Location).AddDate(0, 0, h.Config.WarmupDays)
}

// EvaluateGate scores findings (every emitted version, in order) and
// alerts (the last version of each) against the ground truth (h.Truth
// after Generate; what EachEvent returned otherwise).
func EvaluateGate(h *Hospital, truth []Label, findings []schemas.Finding, alerts []GateAlert) GateResult {
	res := GateResult{Seed: h.Config.Seed, Users: len(h.Users), Days: h.Config.Days, Warmup: h.Config.WarmupDays, NoiseByRule: map[string]int{}}
	order := MergeVersions(findings)
	// Findings by user, for matching.
	byUser := map[string][]*MergedFinding{}
	for _, g := range order {
		byUser[g.UserID] = append(byUser[g.UserID], g)
	}
	inAlert := map[string]bool{}
	for _, a := range alerts {
		for _, id := range a.FindingIDs {
			inAlert[id] = true
		}
	}
	incidentFinding := map[string]bool{}
	best := map[string]uint8{}               // label id → best score
	bestSev := map[string]schemas.Severity{} // label id → severity of that finding
	for i := range truth {
		l := &truth[i]
		if l.Benign {
			continue
		}
		res.Incidents++
		recalled := false
		for _, g := range byUser[l.UserID] {
			if !Matches(&g.Finding, g.Events, l) {
				continue
			}
			incidentFinding[g.FindingID] = true
			if g.Score > best[l.ID] {
				best[l.ID], bestSev[l.ID] = g.Score, g.Severity
			}
			if !g.Suppressed && g.Severity.Rank() >= schemas.SeverityMedium.Rank() && inAlert[g.FindingID] {
				recalled = true
			}
		}
		if recalled {
			res.Recalled++
		} else {
			res.Missed = append(res.Missed, fmt.Sprintf("%s (%s, %s)", l.ID, l.Kind, l.Scenario))
		}
	}
	if res.Recalled < res.Incidents {
		res.Failures = append(res.Failures, fmt.Sprintf("recall %d/%d: missed %s", res.Recalled, res.Incidents, strings.Join(res.Missed, ", ")))
	}

	warm := h.WarmStart()
	res.UserDays = float64(len(h.Users) * (h.Config.Days - h.Config.WarmupDays))
	for _, a := range alerts {
		if a.FirstSeen.Before(warm) {
			continue
		}
		if !slices.ContainsFunc(a.FindingIDs, func(id string) bool { return incidentFinding[id] }) {
			res.NoiseAlerts++
			res.NoiseByRule[a.Rule+"/"+a.Detector]++
			res.NoiseAlertIDs = append(res.NoiseAlertIDs, a.AlertID)
		}
	}
	if res.UserDays > 0 {
		res.NoisePer1000 = float64(res.NoiseAlerts) / res.UserDays * 1000
	}
	if res.NoisePer1000 > GateMaxNoisePer1000 {
		res.Failures = append(res.Failures, fmt.Sprintf("%.1f alerts per 1 000 user-days match no incident (budget %.0f)", res.NoisePer1000, GateMaxNoisePer1000))
	}

	for _, k := range Kinds {
		rk := GateRanking{Detector: k, LowestIncident: 255}
		var benign []uint8
		for _, g := range order {
			if g.Detector == k && !incidentFinding[g.FindingID] && !g.WindowEnd.Before(warm) {
				benign = append(benign, g.Score)
			}
		}
		slices.Sort(benign)
		rk.Benign = len(benign)
		if len(benign) > 0 {
			rk.MedianBenign = benign[len(benign)/2]
		}
		for i := range truth {
			l := &truth[i]
			if l.Benign || l.Detector != k {
				continue
			}
			rk.Incidents++
			s := best[l.ID]
			rk.LowestIncident = min(rk.LowestIncident, s)
			// Above the median; a tie counts as above only at the top of the
			// incident's severity band, where no finding of that severity
			// can score higher.
			_, top := bestSev[l.ID].ScoreBand()
			if len(benign) > 0 && (s < rk.MedianBenign || (s == rk.MedianBenign && s < top)) {
				rk.Below = append(rk.Below, fmt.Sprintf("%s scored %d", l.ID, s))
			}
		}
		if rk.Incidents == 0 {
			rk.LowestIncident = 0
		}
		if len(rk.Below) > 0 {
			res.Failures = append(res.Failures, fmt.Sprintf("%s: incidents at or below the median benign score %d: %s", k, rk.MedianBenign, strings.Join(rk.Below, ", ")))
		}
		res.Ranking = append(res.Ranking, rk)
	}
	return res
}

// String renders the result as a few lines.
func (r GateResult) String() string {
	var b strings.Builder
	verdict := "PASS"
	if !r.Pass() {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "quality gate (seed %d, %d users, %d days, after a %d-day warm-up): %s\n", r.Seed, r.Users, r.Days, r.Warmup, verdict)
	fmt.Fprintf(&b, "  recall at medium or above, in an alert: %d/%d\n", r.Recalled, r.Incidents)
	var rules []string
	for _, k := range sortedKeys(r.NoiseByRule) {
		rules = append(rules, fmt.Sprintf("%s %d", k, r.NoiseByRule[k]))
	}
	fmt.Fprintf(&b, "  alerts matching no incident: %d over %.0f user-days = %.2f per 1 000 (budget %.0f)", r.NoiseAlerts, r.UserDays, r.NoisePer1000, GateMaxNoisePer1000)
	if len(rules) > 0 {
		fmt.Fprintf(&b, " (%s)", strings.Join(rules, ", "))
	}
	b.WriteString("\n  ranking (lowest incident score > median benign score):")
	for _, rk := range r.Ranking {
		if rk.Benign == 0 {
			fmt.Fprintf(&b, " %s %d>–", rk.Detector, rk.LowestIncident)
			continue
		}
		fmt.Fprintf(&b, " %s %d>%d", rk.Detector, rk.LowestIncident, rk.MedianBenign)
	}
	b.WriteString("\n")
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "  FAIL: %s\n", f)
	}
	return b.String()
}

func sortedKeys(m map[string]int) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
