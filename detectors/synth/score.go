package synth

import (
	"slices"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// The demo's scorer: every finding version against the ground truth, per
// detector (recall, precision after warm-up, benign confounders raised),
// and a tag for each alert. The quality gate (gate.go) and the detectors'
// quality tests use the same matching (Matches) and merging
// (MergeVersions).

// AlertingSeverity is the lowest severity the scorer counts: the default
// alerting rule's min_severity. Lower findings (a break-glass with a good
// reason, say) are stored for audit but raise no alert.
const AlertingSeverity = schemas.SeverityMedium

// Scorer matches findings against the generator's ground truth (see the
// synth package documentation): per-event findings by event id, windowed
// ones by user and overlap of the finding's window with the label's span.
type Scorer struct {
	labels  []Label
	byEvent map[string][]int // event id → labels listing it
	byUser  map[string][]int // user id → activity labels (no patient)
	warm    map[string]time.Time
	warmDay int
	// warmAll is the earliest warm-up end, for unknown facilities.
	warmAll time.Time
}

// NewScorer indexes truth (the labels of h).
func NewScorer(h *Hospital, truth []Label) *Scorer {
	s := &Scorer{labels: truth, byEvent: map[string][]int{}, byUser: map[string][]int{}, warm: map[string]time.Time{},
		warmDay: h.Config.WarmupDays}
	for i, l := range truth {
		for _, id := range l.EventIDs {
			s.byEvent[id] = append(s.byEvent[id], i)
		}
		if l.PatientID == "" {
			s.byUser[l.UserID] = append(s.byUser[l.UserID], i)
		}
	}
	for _, f := range h.Facilities {
		local := f.Start.In(f.Location)
		w := time.Date(local.Year(), local.Month(), local.Day()+h.Config.WarmupDays, 0, 0, 0, 0, f.Location).UTC()
		s.warm[f.ID] = w
		if s.warmAll.IsZero() || w.Before(s.warmAll) {
			s.warmAll = w
		}
	}
	return s
}

// matches returns the labels a finding matches.
func (s *Scorer) matches(f *MergedFinding) []int {
	var out []int
	for id := range f.Events {
		for _, i := range s.byEvent[id] {
			if !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
	}
	if windowedKinds[f.Detector] {
		for _, i := range s.byUser[f.UserID] {
			l := &s.labels[i]
			if !f.WindowEnd.Before(l.Start) && !f.WindowStart.After(l.End) && !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
	}
	slices.Sort(out)
	return out
}

// warmedUp reports whether a finding counts towards precision: its window
// ends after the warm-up days, when baselines are learned.
func (s *Scorer) warmedUp(f *schemas.Finding) bool {
	w, ok := s.warm[f.FacilityID]
	if !ok {
		w = s.warmAll
	}
	return f.WindowEnd.After(w)
}

// DetectorScore is one detector's row of a ScoreReport.
type DetectorScore struct {
	Detector          string
	Injected          int
	Detected          int
	Findings          int // alerting findings after the warm-up
	TruePos           int // … that match an incident
	Benign            int // … that match only a benign confounder
	Below             int // findings below AlertingSeverity (or suppressed), any time
	Missed            []string
	EarlyFindings     int // alerting findings during the warm-up
	EarlyFindingsTrue int
}

// BenignScore counts one kind of benign confounder.
type BenignScore struct {
	Kind, Scenario   string
	Labelled, Raised int
}

// ScoreReport is the scorer's verdict: a row per detector, their total
// and a row per benign confounder kind.
type ScoreReport struct {
	Rows   []DetectorScore
	Total  DetectorScore
	Benign []BenignScore
}

// Score compares every finding version the pipeline stored with the
// truth; detectors names the rows to list first, in order (the registry's
// detectors), even those with nothing to count.
func (s *Scorer) Score(versions []schemas.Finding, detectors []string) ScoreReport {
	found := MergeVersions(versions)
	rows := map[string]*DetectorScore{}
	var names []string
	for _, d := range detectors {
		rows[d] = &DetectorScore{Detector: d}
		names = append(names, d)
	}
	row := func(d string) *DetectorScore {
		if rows[d] == nil {
			rows[d] = &DetectorScore{Detector: d}
			names = append(names, d)
		}
		return rows[d]
	}
	detected := make([]bool, len(s.labels))
	for _, f := range found {
		r := row(f.Detector)
		if !f.Alerting {
			r.Below++
			continue
		}
		ms := s.matches(f)
		incident, benign := false, false
		for _, i := range ms {
			l := &s.labels[i]
			if l.Benign {
				benign = true
			} else {
				incident = true
			}
			if l.Detector == f.Detector {
				detected[i] = true
			}
		}
		if !s.warmedUp(&f.Finding) {
			r.EarlyFindings++
			if incident {
				r.EarlyFindingsTrue++
			}
			continue
		}
		r.Findings++
		if incident {
			r.TruePos++
		} else if benign {
			r.Benign++
		}
	}
	bKey := map[string]*BenignScore{}
	var bOrder []string
	for i, l := range s.labels {
		if l.Benign {
			k := l.Kind + "/" + l.Scenario
			b := bKey[k]
			if b == nil {
				b = &BenignScore{Kind: l.Kind, Scenario: l.Scenario}
				bKey[k] = b
				bOrder = append(bOrder, k)
			}
			b.Labelled++
			if detected[i] {
				b.Raised++
			}
			continue
		}
		r := row(l.Detector)
		r.Injected++
		if detected[i] {
			r.Detected++
		} else {
			r.Missed = append(r.Missed, l.ID)
		}
	}
	var rep ScoreReport
	for _, n := range names {
		r := *rows[n]
		rep.Rows = append(rep.Rows, r)
		rep.Total.Injected += r.Injected
		rep.Total.Detected += r.Detected
		rep.Total.Findings += r.Findings
		rep.Total.TruePos += r.TruePos
		rep.Total.Benign += r.Benign
		rep.Total.Below += r.Below
		rep.Total.EarlyFindings += r.EarlyFindings
		rep.Total.EarlyFindingsTrue += r.EarlyFindingsTrue
	}
	slices.Sort(bOrder)
	for _, k := range bOrder {
		rep.Benign = append(rep.Benign, *bKey[k])
	}
	return rep
}

// Tag says what an alert's findings are, by the ground truth.
func (s *Scorer) Tag(fs []schemas.Finding) (text string, incident bool) {
	var inc, ben []string
	for _, f := range MergeVersions(fs) {
		for _, i := range s.matches(f) {
			l := &s.labels[i]
			if l.Benign {
				if !slices.Contains(ben, l.Scenario) {
					ben = append(ben, l.Scenario)
				}
			} else if !slices.Contains(inc, l.Kind) {
				inc = append(inc, l.Kind)
			}
		}
	}
	switch {
	case len(inc) > 0:
		return "[injected " + strings.Join(inc, ", ") + "]", true
	case len(ben) > 0:
		return "[benign: " + strings.Join(ben, ", ") + "]", false
	}
	return "[no incident]", false
}

// MergedFinding is one finding id with its versions merged.
type MergedFinding struct {
	schemas.Finding // the latest version
	// Alerting: some version was unsuppressed and at least AlertingSeverity.
	Alerting bool
	Events   map[string]bool // every version's event ids
}

// MergeVersions folds every version of each finding id into one, in the
// order the ids first appear.
func MergeVersions(versions []schemas.Finding) []*MergedFinding {
	byID := map[string]*MergedFinding{}
	var order []*MergedFinding
	for _, f := range versions {
		m := byID[f.FindingID]
		if m == nil {
			m = &MergedFinding{Events: map[string]bool{}}
			byID[f.FindingID] = m
			order = append(order, m)
		}
		m.Finding = f
		if !f.Suppressed && f.Severity.Rank() >= AlertingSeverity.Rank() {
			m.Alerting = true
		}
		for _, id := range f.EventIDs {
			m.Events[id] = true
		}
	}
	return order
}

// WarmupDays is the number of warm-up days the scorer leaves out of
// precision.
func (s *Scorer) WarmupDays() int { return s.warmDay }

// Labels is the ground truth the scorer matches against.
func (s *Scorer) Labels() []Label { return s.labels }
