package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// alertingSeverity is the lowest severity the demo scores: the default
// alerting rule's min_severity. Lower findings (a break-glass with a good
// reason, say) are stored for audit but raise no alert.
const alertingSeverity = schemas.SeverityMedium

// windowed are the detectors whose findings cover a window of a user's
// activity; they are matched to labels by user and overlap, not event ids.
var windowed = map[string]bool{"volume": true, "bulk_export": true, "off_hours": true}

// scorer matches findings against the generator's ground truth (see the
// synth package documentation): per-event findings by event id, windowed
// ones by user and overlap of the finding's window with the label's span.
type scorer struct {
	labels  []synth.Label
	byEvent map[string][]int // event id → labels listing it
	byUser  map[string][]int // user id → activity labels (no patient)
	warm    map[string]time.Time
	warmDay int
	// warmAll is the earliest warm-up end, for unknown facilities.
	warmAll time.Time
}

func newScorer(h *synth.Hospital, truth []synth.Label) *scorer {
	s := &scorer{labels: truth, byEvent: map[string][]int{}, byUser: map[string][]int{}, warm: map[string]time.Time{},
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

// scored is one finding id: its versions merged.
type scored struct {
	f        schemas.Finding // the latest version
	severity schemas.Severity
	alerting bool // some version was unsuppressed and at least alertingSeverity
	events   map[string]bool
}

// merge folds every version of each finding id into one.
func merge(versions []schemas.Finding) []*scored {
	byID := map[string]*scored{}
	var order []string
	for _, f := range versions {
		s := byID[f.FindingID]
		if s == nil {
			s = &scored{events: map[string]bool{}}
			byID[f.FindingID] = s
			order = append(order, f.FindingID)
		}
		s.f = f
		if f.Severity.Rank() > s.severity.Rank() {
			s.severity = f.Severity
		}
		if !f.Suppressed && f.Severity.Rank() >= alertingSeverity.Rank() {
			s.alerting = true
		}
		for _, id := range f.EventIDs {
			s.events[id] = true
		}
	}
	out := make([]*scored, 0, len(order))
	for _, id := range order {
		out = append(out, byID[id])
	}
	return out
}

// matches returns the labels a finding matches.
func (s *scorer) matches(f *scored) []int {
	var out []int
	for id := range f.events {
		for _, i := range s.byEvent[id] {
			if !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
	}
	if windowed[f.f.Detector] {
		for _, i := range s.byUser[f.f.UserID] {
			l := &s.labels[i]
			if !f.f.WindowEnd.Before(l.Start) && !f.f.WindowStart.After(l.End) && !slices.Contains(out, i) {
				out = append(out, i)
			}
		}
	}
	slices.Sort(out)
	return out
}

// warmedUp reports whether a finding counts towards precision: its window
// ends after the warm-up days, when baselines are learned.
func (s *scorer) warmedUp(f *schemas.Finding) bool {
	w, ok := s.warm[f.FacilityID]
	if !ok {
		w = s.warmAll
	}
	return f.WindowEnd.After(w)
}

// detectorScore is one row of the table.
type detectorScore struct {
	detector          string
	injected          int
	detected          int
	findings          int // alerting findings after the warm-up
	truePos           int // … that match an incident
	benign            int // … that match only a benign confounder
	below             int // findings below alertingSeverity (or suppressed), any time
	missed            []string
	earlyFindings     int // alerting findings during the warm-up
	earlyFindingsTrue int
}

// benignScore counts one kind of benign confounder.
type benignScore struct {
	kind, scenario   string
	labelled, raised int
}

type scoreReport struct {
	rows   []detectorScore
	total  detectorScore
	benign []benignScore
}

// score compares every finding version the pipeline stored with the truth.
func (s *scorer) score(versions []schemas.Finding) scoreReport {
	found := merge(versions)
	rows := map[string]*detectorScore{}
	var names []string
	for _, f := range detectors.Registry() {
		rows[f.Name] = &detectorScore{detector: f.Name}
		names = append(names, f.Name)
	}
	row := func(d string) *detectorScore {
		if rows[d] == nil {
			rows[d] = &detectorScore{detector: d}
			names = append(names, d)
		}
		return rows[d]
	}
	detected := make([]bool, len(s.labels))
	for _, f := range found {
		r := row(f.f.Detector)
		if !f.alerting {
			r.below++
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
			if l.Detector == f.f.Detector {
				detected[i] = true
			}
		}
		if !s.warmedUp(&f.f) {
			r.earlyFindings++
			if incident {
				r.earlyFindingsTrue++
			}
			continue
		}
		r.findings++
		if incident {
			r.truePos++
		} else if benign {
			r.benign++
		}
	}
	bKey := map[string]*benignScore{}
	var bOrder []string
	for i, l := range s.labels {
		if l.Benign {
			k := l.Kind + "/" + l.Scenario
			b := bKey[k]
			if b == nil {
				b = &benignScore{kind: l.Kind, scenario: l.Scenario}
				bKey[k] = b
				bOrder = append(bOrder, k)
			}
			b.labelled++
			if detected[i] {
				b.raised++
			}
			continue
		}
		r := row(l.Detector)
		r.injected++
		if detected[i] {
			r.detected++
		} else {
			r.missed = append(r.missed, l.ID)
		}
	}
	var rep scoreReport
	for _, n := range names {
		r := *rows[n]
		rep.rows = append(rep.rows, r)
		rep.total.injected += r.injected
		rep.total.detected += r.detected
		rep.total.findings += r.findings
		rep.total.truePos += r.truePos
		rep.total.benign += r.benign
		rep.total.below += r.below
		rep.total.earlyFindings += r.earlyFindings
		rep.total.earlyFindingsTrue += r.earlyFindingsTrue
	}
	slices.Sort(bOrder)
	for _, k := range bOrder {
		rep.benign = append(rep.benign, *bKey[k])
	}
	return rep
}

// tag says what an alert's findings are, by the ground truth.
func (s *scorer) tag(fs []schemas.Finding) (text string, incident bool) {
	var inc, ben []string
	for _, f := range merge(fs) {
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

// Printing.

func pct(n, d int) string {
	if d == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f%%", 100*float64(n)/float64(d))
}

// dstChanges lists the local days of the simulated period that are not 24
// hours long in any facility.
func dstChanges(h *synth.Hospital) []string {
	var out []string
	for _, f := range h.Facilities {
		local := f.Start.In(f.Location)
		for d := 0; d < h.Config.Days; d++ {
			a := time.Date(local.Year(), local.Month(), local.Day()+d, 0, 0, 0, 0, f.Location)
			b := time.Date(local.Year(), local.Month(), local.Day()+d+1, 0, 0, 0, 0, f.Location)
			if hours := b.Sub(a).Hours(); hours != 24 {
				s := fmt.Sprintf("%s (%s, a %g-hour day)", a.Format("Mon 2006-01-02"), f.ID, hours)
				out = append(out, s)
			}
		}
	}
	return out
}

func printDemoHeader(con *console, h *synth.Hospital, st demoStream, sc *scorer, o demoOptions) {
	var facs []string
	users := map[string]int{}
	for _, u := range h.Users {
		for _, f := range h.Facilities {
			if strings.HasPrefix(u.UserID, "usr-"+f.ID+"-") {
				users[f.ID]++
			}
		}
	}
	for _, f := range h.Facilities {
		facs = append(facs, fmt.Sprintf("%s (%s, %d users)", f.ID, f.TimeZone, users[f.ID]))
	}
	incidents, benign := 0, 0
	for _, l := range st.truth {
		if l.Benign {
			benign++
		} else {
			incidents++
		}
	}
	first := h.Facilities[0].Start.In(h.Facilities[0].Location)
	con.printf("%s\n\n", con.paint(ansiBold, "ehrwatch demo: the real pipeline on a synthetic hospital, no external services"))
	con.printf("  hospital  %d facilities: %s; %s patients, %s encounters\n", len(h.Facilities), strings.Join(facs, ", "),
		groupDigits(int64(len(h.Patients))), groupDigits(int64(len(h.Encounters))))
	period := fmt.Sprintf("%d days from %s", h.Config.Days, first.Format("Mon 2006-01-02"))
	if d := dstChanges(h); len(d) > 0 {
		period += "; clocks change on " + strings.Join(d, ", ")
	}
	con.printf("  period    %s\n", period)
	con.printf("  stream    %s access events (%s arrive minutes to hours late), %d injected incidents from day 0 (volume and off-hours from day %d), %d labelled benign confounders; seed %d\n",
		groupDigits(int64(st.events)), groupDigits(int64(st.late)), incidents, h.Config.WarmupDays, benign, h.Config.Seed)
	con.printf("  kafka     in-process broker (kfake), topic %s, %d partitions, keyed by user_id\n", demoTopic, o.partitions)
	storeText := "findings in memory"
	if o.clickhouse != "" {
		storeText = "ClickHouse " + o.clickhouse + " database " + o.chDatabase
	}
	con.printf("  pipeline  kafka-go consumer group → decode → %d detectors per partition → %s → alerting\n\n",
		len(detectors.Registry()), storeText)
	if !o.quiet {
		con.printf("%s\n", con.paint(ansiBold, "Alerts as they fire (local time, facility, severity, detector, user, explanation, and what the ground truth says):"))
	}
}

var severityStyle = map[schemas.Severity]string{
	schemas.SeverityCritical: ansiBold + ansiRed,
	schemas.SeverityHigh:     ansiRed,
	schemas.SeverityMedium:   ansiYellow,
	schemas.SeverityLow:      ansiCyan,
	schemas.SeverityInfo:     ansiDim,
}

// alertLine renders one alert: ids and the explanation only, never names
// or addresses (explanations carry ids).
func (s *demoSink) alertLine(a alerting.Alert) string {
	loc := s.h.Location(a.FacilityID)
	when := a.FirstSeen.In(loc).Format("Mon 01-02 15:04 MST")
	what := a.Detector
	if a.Rule != "" && a.Rule != "user_detector" {
		what = a.Rule
	}
	s.mu.Lock()
	var fs []schemas.Finding
	for _, id := range a.FindingIDs {
		if i, ok := s.byID[id]; ok {
			fs = append(fs, s.findings[i])
		}
	}
	s.mu.Unlock()
	tag, incident := s.sc.tag(fs)
	// One finding: its own explanation says it all; the alert's repeats
	// it after a summary.
	explanation := a.Explanation
	if a.FindingCount == 1 && len(fs) == 1 && a.Rule == "user_detector" {
		explanation = fs[0].Explanation
	}
	tagStyle := ansiDim
	if incident {
		tagStyle = ansiGreen
	}
	change := ""
	if a.Change == alerting.ChangeEscalated {
		change = " (escalated)"
	}
	c := s.con
	return fmt.Sprintf("%s %-3s %s %-13s %-13s %s%s %s",
		c.paint(ansiDim, when), a.FacilityID,
		c.paint(severityStyle[a.Severity], fmt.Sprintf("%-8s", strings.ToUpper(string(a.Severity)))),
		what, a.UserID, explanation, change, c.paint(tagStyle, tag))
}

// demoResult is how the run went.
type demoResult struct {
	took        time.Duration
	consumeTook time.Duration
	stats       pipeline.Stats
	total       int
	late        uint64
	interrupted bool
	coverage    detectors.Coverage
}

func printDemoSummary(con *console, h *synth.Hospital, sc *scorer, sink *demoSink, res demoResult, o demoOptions) scoreReport {
	rep := sc.score(sink.allFindings())
	alerts := sink.allAlerts()
	st := res.stats
	con.printf("\n")
	rate := 0.0
	if res.consumeTook > 0 {
		rate = float64(st.Consumed) / res.consumeTook.Seconds()
	}
	con.printf("%s %s of %s events through the pipeline in %s (%s events/s once consuming; %s in all); %d dead-lettered; %s behind the watermark\n",
		con.paint(ansiBold, "Consumed"), groupDigits(st.Stored), groupDigits(int64(res.total)), res.consumeTook.Round(10*time.Millisecond),
		groupDigits(int64(rate)), res.took.Round(10*time.Millisecond), st.DeadLettered, groupDigits(int64(res.late)))
	nFind := len(merge(sink.allFindings()))
	con.printf("%d findings (%d at %s or above), %d alerts\n\n", nFind, nFind-rep.total.below, alertingSeverity, len(alerts))

	con.printf("%s\n", con.paint(ansiBold, fmt.Sprintf("Detection against the ground truth (findings at %s or above; precision from day %d, after the baselines warm up)", alertingSeverity, sc.warmDay)))
	header := fmt.Sprintf("  %-13s %8s %8s %7s %9s %6s %9s %7s", "detector", "injected", "detected", "recall", "findings", "true", "precision", "benign")
	con.printf("%s\n", con.paint(ansiBold, header))
	line := func(r detectorScore, name string) string {
		rec := pct(r.detected, r.injected)
		recStyle := ""
		if r.injected > 0 && r.detected < r.injected {
			recStyle = ansiRed
		}
		return fmt.Sprintf("  %-13s %8d %8d %s %9d %6d %9s %7d", name, r.injected, r.detected,
			con.paint(recStyle, fmt.Sprintf("%7s", rec)), r.findings, r.truePos, pct(r.truePos, r.findings), r.benign)
	}
	for _, r := range rep.rows {
		con.printf("%s\n", line(r, r.detector))
	}
	con.printf("%s\n", line(rep.total, "all"))
	con.printf("  (findings: distinct findings at %s or above from day %d; true: they match an injected incident; benign: they match a labelled benign confounder)\n",
		alertingSeverity, sc.warmDay)
	if rep.total.earlyFindings > 0 {
		con.printf("  During the %d warm-up days: %d more findings at %s or above, %d of them injected incidents.\n",
			sc.warmDay, rep.total.earlyFindings, alertingSeverity, rep.total.earlyFindingsTrue)
	}
	if rep.total.below > 0 {
		con.printf("  Below %s (stored, not alerted): %d findings, e.g. break-glass with a documented reason.\n", alertingSeverity, rep.total.below)
	}
	for _, r := range rep.rows {
		if len(r.missed) > 0 {
			con.printf("  %s missed %s: %s\n", con.paint(ansiRed, "MISSED"), r.detector, strings.Join(r.missed, ", "))
		}
	}

	labelled, raised := 0, 0
	var fired []string
	for _, b := range rep.benign {
		labelled += b.labelled
		raised += b.raised
		if b.raised > 0 {
			fired = append(fired, fmt.Sprintf("%s (%s) %d of %d", strings.TrimPrefix(b.kind, "benign:"), b.scenario, b.raised, b.labelled))
		}
	}
	con.printf("\nBenign confounders: %d labelled, %d raised a finding at %s or above", labelled, raised, alertingSeverity)
	if len(fired) > 0 {
		con.printf(": %s", strings.Join(fired, "; "))
	}
	con.printf(".\n")

	userDays := float64(len(h.Users) * h.Config.Days)
	rules := map[string]int{}
	for _, a := range alerts {
		rules[a.Rule]++
	}
	var byRule []string
	for _, r := range sortedStrings(rules) {
		byRule = append(byRule, fmt.Sprintf("%s %d", r, rules[r]))
	}
	per := 0.0
	if userDays > 0 {
		per = float64(len(alerts)) / userDays * 1000
	}
	con.printf("Alerts: %d over %s user-days = %s per 1 000 user-days", len(alerts), groupDigits(int64(userDays)),
		con.paint(ansiBold, fmt.Sprintf("%.1f", per)))
	if len(byRule) > 0 {
		con.printf(" (%s)", strings.Join(byRule, ", "))
	}
	con.printf(".\n\n")

	// The quality gate of `go test ./detectors` (synth.EvaluateGate), on
	// this run's findings and alerts.
	last := map[string]alerting.Alert{}
	var ids []string
	for _, a := range alerts {
		if _, ok := last[a.AlertID]; !ok {
			ids = append(ids, a.AlertID)
		}
		last[a.AlertID] = a
	}
	var gateAlerts []synth.GateAlert
	for _, id := range ids {
		a := last[id]
		gateAlerts = append(gateAlerts, synth.GateAlert{AlertID: a.AlertID, Rule: a.Rule, Detector: a.Detector, FirstSeen: a.FirstSeen, FindingIDs: a.FindingIDs})
	}
	gate := synth.EvaluateGate(h, sc.labels, sink.allFindings(), gateAlerts)
	style := ansiBold
	if !gate.Pass() {
		style = ansiBold + ansiRed
	}
	con.printf("%s", con.paint(style, gate.String()))
	var cov strings.Builder
	res.coverage.WriteCoverage(&cov, 8)
	con.printf("\n%s", cov.String())
	if o.out != "" {
		con.printf("Wrote %s/findings.ndjson, alerts.ndjson and truth.ndjson.\n", o.out)
	}
	if o.clickhouse != "" {
		con.printf("Stored in ClickHouse %s, database %s, with the reference tables (%d users, %d patients, %d encounters).\n",
			o.clickhouse, o.chDatabase, len(h.Users), len(h.Patients), len(h.Encounters))
	}
	switch {
	case res.interrupted:
		con.printf("%s\n", con.paint(ansiYellow, "Interrupted before the end of the stream: the numbers above are partial."))
	case st.Stored+st.DeadLettered < int64(res.total):
		con.printf("%s\n", con.paint(ansiBold+ansiRed, fmt.Sprintf("The pipeline did not finish: %d of %d events stored; the numbers above are partial.", st.Stored, res.total)))
	}
	return rep
}
