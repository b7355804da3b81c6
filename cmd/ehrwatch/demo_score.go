package main

import (
	"fmt"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

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

func printDemoHeader(con *console, h *synth.Hospital, st demoStream, sc *synth.Scorer, o demoOptions) {
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
	tag, incident := s.sc.Tag(fs)
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
	stats       ingest.Stats
	total       int
	late        uint64
	interrupted bool
	coverage    detectors.Coverage
}

func printDemoSummary(con *console, h *synth.Hospital, sc *synth.Scorer, sink *demoSink, res demoResult, o demoOptions) synth.ScoreReport {
	var names []string
	for _, f := range detectors.Registry() {
		names = append(names, f.Name)
	}
	rep := sc.Score(sink.allFindings(), names)
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
	nFind := len(synth.MergeVersions(sink.allFindings()))
	con.printf("%d findings (%d at %s or above), %d alerts\n\n", nFind, nFind-rep.Total.Below, synth.AlertingSeverity, len(alerts))

	con.printf("%s\n", con.paint(ansiBold, fmt.Sprintf("Detection against the ground truth (findings at %s or above; precision from day %d, after the baselines warm up)", synth.AlertingSeverity, sc.WarmupDays())))
	header := fmt.Sprintf("  %-13s %8s %8s %7s %9s %6s %9s %7s", "detector", "injected", "detected", "recall", "findings", "true", "precision", "benign")
	con.printf("%s\n", con.paint(ansiBold, header))
	line := func(r synth.DetectorScore, name string) string {
		rec := pct(r.Detected, r.Injected)
		recStyle := ""
		if r.Injected > 0 && r.Detected < r.Injected {
			recStyle = ansiRed
		}
		return fmt.Sprintf("  %-13s %8d %8d %s %9d %6d %9s %7d", name, r.Injected, r.Detected,
			con.paint(recStyle, fmt.Sprintf("%7s", rec)), r.Findings, r.TruePos, pct(r.TruePos, r.Findings), r.Benign)
	}
	for _, r := range rep.Rows {
		con.printf("%s\n", line(r, r.Detector))
	}
	con.printf("%s\n", line(rep.Total, "all"))
	con.printf("  (findings: distinct findings at %s or above from day %d; true: they match an injected incident; benign: they match a labelled benign confounder)\n",
		synth.AlertingSeverity, sc.WarmupDays())
	if rep.Total.EarlyFindings > 0 {
		con.printf("  During the %d warm-up days: %d more findings at %s or above, %d of them injected incidents.\n",
			sc.WarmupDays(), rep.Total.EarlyFindings, synth.AlertingSeverity, rep.Total.EarlyFindingsTrue)
	}
	if rep.Total.Below > 0 {
		con.printf("  Below %s (stored, not alerted): %d findings, e.g. break-glass with a documented reason.\n", synth.AlertingSeverity, rep.Total.Below)
	}
	for _, r := range rep.Rows {
		if len(r.Missed) > 0 {
			con.printf("  %s missed %s: %s\n", con.paint(ansiRed, "MISSED"), r.Detector, strings.Join(r.Missed, ", "))
		}
	}

	labelled, raised := 0, 0
	var fired []string
	for _, b := range rep.Benign {
		labelled += b.Labelled
		raised += b.Raised
		if b.Raised > 0 {
			fired = append(fired, fmt.Sprintf("%s (%s) %d of %d", strings.TrimPrefix(b.Kind, "benign:"), b.Scenario, b.Raised, b.Labelled))
		}
	}
	con.printf("\nBenign confounders: %d labelled, %d raised a finding at %s or above", labelled, raised, synth.AlertingSeverity)
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
	gate := synth.EvaluateGate(h, sc.Labels(), sink.allFindings(), gateAlerts)
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
