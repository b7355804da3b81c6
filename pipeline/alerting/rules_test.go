package alerting_test

import (
	"context"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestGroupsUserAndDetectorIntoOneAlert(t *testing.T) {
	e := newEnv(t, rulesOnly())
	first := e.observe(t, finding("vip", "high", "U123", 1, at("09:10")))
	if len(first) != 1 || first[0].Change != alerting.ChangeNew || !first[0].Notify {
		t.Fatalf("first finding: got %+v, want one new notified alert", first)
	}
	rest := e.observe(t,
		finding("vip", "high", "U123", 2, at("10:05")),
		finding("vip", "medium", "U123", 1, at("11:40")),
		finding("vip", "high", "U123", 3, at("10:30")),
	)
	if len(rest) != 1 {
		t.Fatalf("got %d alerts, want 1 (the same group updated)", len(rest))
	}
	a := rest[0]
	if a.AlertID != first[0].AlertID {
		t.Errorf("alert id changed: %s → %s", first[0].AlertID, a.AlertID)
	}
	if a.Change != alerting.ChangeUpdated || a.Notify {
		t.Errorf("update within the repeat interval: change=%s notify=%v, want updated/false", a.Change, a.Notify)
	}
	if a.FindingCount != 4 || len(a.FindingIDs) != 4 {
		t.Errorf("count=%d ids=%d, want 4/4", a.FindingCount, len(a.FindingIDs))
	}
	if a.Version <= first[0].Version {
		t.Errorf("version did not increase: %d → %d", first[0].Version, a.Version)
	}
	if a.Rule != "user_detector" || a.Detector != "vip" || a.UserID != "U123" || a.PatientID != "" || a.FacilityID != "F1" {
		t.Errorf("fields: %+v", a)
	}
	if a.Severity != schemas.SeverityHigh || a.Score != 75 {
		t.Errorf("severity=%s score=%d, want high/75", a.Severity, a.Score)
	}
	if !a.FirstSeen.Equal(at("09:10")) || !a.LastSeen.Equal(at("11:40")) {
		t.Errorf("first/last seen = %s/%s", a.FirstSeen, a.LastSeen)
	}
	want := "User U123 triggered 4 vip findings on 3 patients between 2026-03-05 09:10 and 11:40 UTC; first: User U123 (nurse, cardiology) viewed the record of patient " + patientID(1)
	if !strings.HasPrefix(a.Explanation, want) {
		t.Errorf("explanation:\n got %q\nwant prefix %q", a.Explanation, want)
	}
	if strings.Count(a.Explanation, "\n") != 0 || !strings.HasSuffix(a.Explanation, ".") {
		t.Errorf("explanation is not one line ending in a full stop: %q", a.Explanation)
	}
	if a.Summary != "User U123 triggered 4 vip findings on 3 patients between 2026-03-05 09:10 and 11:40 UTC." {
		t.Errorf("summary: %q", a.Summary)
	}
	// Finding ids are the earliest, in time order.
	if a.FindingIDs[0] != first[0].FindingIDs[0] {
		t.Errorf("finding ids not in time order: %v", a.FindingIDs)
	}
}

func TestDifferentUsersDetectorsAndDaysAreDifferentAlerts(t *testing.T) {
	e := newEnv(t, rulesOnly())
	alerts := e.observe(t,
		finding("vip", "high", "U1", 1, at("09:00")),
		finding("vip", "high", "U2", 1, at("09:00")),
		finding("family", "high", "U1", 1, at("09:00")),
		finding("vip", "high", "U1", 1, at("23:50")),
		finding("vip", "high", "U1", 1, at("24:10")), // next UTC day
	)
	ids := map[string]uint32{}
	for _, a := range alerts {
		ids[a.AlertID] = a.FindingCount
	}
	if len(ids) != 4 {
		t.Fatalf("got %d distinct alerts, want 4: %+v", len(ids), alerts)
	}
}

func TestMinSeverity(t *testing.T) {
	e := newEnv(t, rulesOnly()) // user_detector: min medium
	if got := e.observe(t, finding("off_hours", "low", "U1", 1, at("02:00")), finding("off_hours", "info", "U1", 2, at("02:05"))); len(got) != 0 {
		t.Fatalf("findings below min_severity raised %d alerts", len(got))
	}
	got := e.observe(t, finding("off_hours", "medium", "U1", 3, at("02:10")))
	if len(got) != 1 || got[0].FindingCount != 1 {
		t.Fatalf("a medium finding: got %+v, want one alert counting only it", got)
	}
}

func TestSuppressedFindingsNeverRaise(t *testing.T) {
	cfg := alerting.DefaultConfig()
	cfg.PatientSurge.MinUsers = 2
	e := newEnv(t, cfg)
	var fs []schemas.Finding
	for i, u := range []string{"U1", "U2", "U3", "U4"} {
		for _, det := range []string{"vip", "family", "coworker"} {
			f := finding(det, "critical", u, 7, at("10:00").Add(time.Duration(i)*time.Minute))
			f.Suppressed, f.SuppressionReason = true, "allowlist entry A1"
			fs = append(fs, f)
		}
	}
	if got := e.observe(t, fs...); len(got) != 0 {
		t.Fatalf("suppressed findings raised %d alerts: %+v", len(got), got)
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_findings_total", map[string]string{"result": "suppressed"}); n != float64(len(fs)) {
		t.Errorf("suppressed counter = %v, want %d", n, len(fs))
	}
}

func TestRepeatSuppressionAndEscalation(t *testing.T) {
	cfg := rulesOnly()
	cfg.Rules[0].RepeatInterval = 6 * time.Hour
	e := newEnv(t, cfg)
	step := func(f schemas.Finding, change alerting.Change, notify bool) {
		t.Helper()
		got := e.observe(t, f)
		if len(got) != 1 || got[0].Change != change || got[0].Notify != notify {
			t.Fatalf("at %s: got %+v, want change=%s notify=%v", f.Evidence.Facts["event_time"], got, change, notify)
		}
	}
	step(finding("vip", "medium", "U1", 1, at("01:00")), alerting.ChangeNew, true)
	step(finding("vip", "medium", "U1", 2, at("02:00")), alerting.ChangeUpdated, false)
	step(finding("vip", "medium", "U1", 3, at("06:59")), alerting.ChangeUpdated, false)
	step(finding("vip", "medium", "U1", 4, at("07:00")), alerting.ChangeRepeated, true) // 6h after 01:00
	step(finding("vip", "medium", "U1", 5, at("08:00")), alerting.ChangeUpdated, false)
	step(finding("vip", "high", "U1", 6, at("08:30")), alerting.ChangeEscalated, true) // severity rose
	step(finding("vip", "high", "U1", 7, at("09:00")), alerting.ChangeUpdated, false)
	step(finding("vip", "medium", "U1", 8, at("13:00")), alerting.ChangeUpdated, false) // 4.5h after 08:30
	step(finding("vip", "medium", "U1", 9, at("14:30")), alerting.ChangeRepeated, true)
}

func TestRepeatIntervalZeroNotifiesOnlyOnEscalation(t *testing.T) {
	cfg := rulesOnly()
	cfg.Rules[0].RepeatInterval = 0
	e := newEnv(t, cfg)
	notified := 0
	for i, sev := range []schemas.Severity{"medium", "medium", "medium", "high", "medium", "critical"} {
		for _, a := range e.observe(t, finding("vip", sev, "U1", i+1, at("00:00").Add(time.Duration(i)*3*time.Hour))) {
			if a.Notify {
				notified++
			}
		}
	}
	if notified != 3 { // new, escalated to high, escalated to critical
		t.Fatalf("notified %d times, want 3", notified)
	}
}

func TestMinCountAndDetectorFilter(t *testing.T) {
	cfg := rulesOnly()
	cfg.Rules = []alerting.RuleConfig{{
		Name: "repeat_snooping", GroupBy: []string{"user"}, Detectors: []string{"family", "coworker"},
		MinSeverity: "low", MinCount: 3, Window: 24 * time.Hour,
	}}
	e := newEnv(t, cfg)
	if got := e.observe(t, finding("family", "low", "U1", 1, at("08:00")), finding("vip", "high", "U1", 2, at("08:01")), finding("coworker", "low", "U1", 3, at("08:02"))); len(got) != 0 {
		t.Fatalf("below min_count: %d alerts", len(got))
	}
	got := e.observe(t, finding("family", "low", "U1", 4, at("08:30")))
	if len(got) != 1 || got[0].FindingCount != 3 || got[0].Change != alerting.ChangeNew {
		t.Fatalf("third matching finding: %+v", got)
	}
	if got[0].Detector != "repeat_snooping" {
		t.Errorf("a rule not grouping by detector reports its name as detector, got %q", got[0].Detector)
	}
	if !strings.Contains(got[0].Explanation, "3 findings from 2 detectors (coworker, family)") {
		t.Errorf("explanation: %q", got[0].Explanation)
	}
}

func TestPatientGroupingRuleKeepsPatientOutOfSummary(t *testing.T) {
	cfg := rulesOnly()
	cfg.Rules = append(cfg.Rules, alerting.RuleConfig{Name: "same_patient", GroupBy: []string{"patient"}, MinSeverity: "medium", Window: 24 * time.Hour})
	e := newEnv(t, cfg)
	alerts := byRule(e.observe(t,
		finding("vip", "high", "U1", 9, at("10:00")),
		finding("family", "medium", "U2", 9, at("10:20")),
	), "same_patient")
	if len(alerts) != 1 {
		t.Fatalf("got %d same_patient alerts", len(alerts))
	}
	a := alerts[0]
	if a.PatientID != patientID(9) || a.UserID != "" {
		t.Errorf("patient=%q user=%q", a.PatientID, a.UserID)
	}
	if !strings.HasPrefix(a.Explanation, "The record of patient "+patientID(9)+" drew 2 findings from 2 detectors (family, vip) from 2 users between") {
		t.Errorf("explanation: %q", a.Explanation)
	}
	if strings.Contains(a.Summary, "PAT-") || !strings.HasPrefix(a.Summary, "One patient's record drew") {
		t.Errorf("summary names the patient: %q", a.Summary)
	}
}

func TestInvalidFindingsAreCountedNotFatal(t *testing.T) {
	e := newEnv(t, rulesOnly())
	bad := []schemas.Finding{
		{},
		{FindingID: "x", Severity: "urgent", UserID: "U1", WindowEnd: at("10:00")},
		{FindingID: "y", Severity: "high", WindowEnd: at("10:00")},
	}
	if got := e.observe(t, bad...); len(got) != 0 {
		t.Fatalf("invalid findings raised alerts: %+v", got)
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_findings_total", map[string]string{"result": "invalid"}); n != 3 {
		t.Errorf("invalid counter = %v", n)
	}
}

func TestFindingTimeFallsBackToWindowEnd(t *testing.T) {
	e := newEnv(t, rulesOnly())
	f := finding("volume", "high", "U1", 0, at("10:00"))
	delete(f.Evidence.Facts, "event_time")
	got := e.observe(t, f)
	if len(got) != 1 || !got[0].LastSeen.Equal(f.WindowEnd) {
		t.Fatalf("got %+v, want last_seen = window_end %s", got, f.WindowEnd)
	}
}

// --- deterministic ids -------------------------------------------------------

func dayOfFindings() []schemas.Finding {
	var fs []schemas.Finding
	users := []string{"U1", "U2", "U3"}
	for i := 0; i < 60; i++ {
		u := users[i%3]
		det := []string{"vip", "family", "off_hours", "coworker"}[i%4]
		sev := []schemas.Severity{"medium", "high", "critical"}[i%3]
		fs = append(fs, finding(det, sev, u, 1+i%7, at("06:00").Add(time.Duration(i)*7*time.Minute)))
	}
	// A surge on patient 42.
	for i := 0; i < 6; i++ {
		fs = append(fs, finding("vip", "high", "S"+string(rune('A'+i)), 42, at("12:00").Add(time.Duration(i)*5*time.Minute)))
	}
	return fs
}

func finalState(alerts []alerting.Alert) map[string]alerting.Alert {
	out := map[string]alerting.Alert{}
	for _, a := range alerts {
		if old, ok := out[a.AlertID]; !ok || a.Version > old.Version {
			out[a.AlertID] = a
		}
	}
	return out
}

func TestDeterministicIDsAcrossBatchingAndOrder(t *testing.T) {
	fs := dayOfFindings()
	cfg := alerting.DefaultConfig()

	// One batch, in order.
	ref := finalState(newEnv(t, cfg).observe(t, fs...))
	if len(ref) < 5 {
		t.Fatalf("too few alerts to compare: %d", len(ref))
	}
	// The same findings shuffled, in one batch.
	shuffled := slices.Clone(fs)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	got := finalState(newEnv(t, cfg).observe(t, shuffled...))
	compareFinal(t, "shuffled batch", ref, got)

	// One finding per call, in order (how a streaming pipeline delivers).
	e := newEnv(t, cfg)
	var all []alerting.Alert
	for _, f := range fs {
		all = append(all, e.observe(t, f)...)
	}
	compareFinal(t, "one per call", ref, finalState(all))

	// Re-observing everything changes nothing.
	if again := e.observe(t, fs...); len(again) != 0 {
		t.Errorf("re-observing the same findings emitted %d alerts", len(again))
	}
}

func compareFinal(t *testing.T, name string, want, got map[string]alerting.Alert) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d alerts, want %d", name, len(got), len(want))
	}
	for id, w := range want {
		g, ok := got[id]
		if !ok {
			t.Fatalf("%s: alert %s (%s) missing", name, id, w.Rule)
		}
		if g.FindingCount != w.FindingCount || g.Version != w.Version || g.Severity != w.Severity ||
			g.Explanation != w.Explanation || !slices.Equal(g.FindingIDs, w.FindingIDs) {
			t.Errorf("%s: alert %s differs:\n got %+v\nwant %+v", name, id, g, w)
		}
	}
}

func TestAlertIDIsStable(t *testing.T) {
	// A golden value: changing the id derivation breaks reprocessing
	// (new ids for old alerts), so it must be a deliberate change.
	id := alerting.AlertID("user_detector", []string{"user=U1", "detector=vip"}, day0)
	if id != alerting.AlertID("user_detector", []string{"user=U1", "detector=vip"}, day0.In(time.FixedZone("x", 3600))) {
		t.Fatal("alert id depends on the time zone of the window start")
	}
	if len(id) != 32 || id == alerting.AlertID("user_detector", []string{"user=U1", "detector=vip"}, day0.Add(24*time.Hour)) {
		t.Fatalf("id %q", id)
	}
	const golden = "9001fbf0cc26b18fcee3856f7a5ecebf"
	if id != golden {
		t.Fatalf("alert id = %s, want %s (change the derivation only with a migration plan)", id, golden)
	}
}

// --- user risk ---------------------------------------------------------------

func riskOnly() alerting.Config {
	c := alerting.DefaultConfig()
	c.Rules = nil
	c.PatientSurge.Enabled = false
	return c
}

func TestUserRiskAccumulatesAcrossDetectors(t *testing.T) {
	e := newEnv(t, riskOnly()) // threshold 150, per detector cap 100, half-life 12h
	if got := e.observe(t, finding("vip", "high", "U1", 1, at("09:00"))); len(got) != 0 {
		t.Fatalf("one high finding (75) raised risk: %+v", got)
	}
	got := e.observe(t, finding("family", "high", "U1", 2, at("09:00")))
	if len(got) != 1 || got[0].Rule != alerting.RuleUserRisk {
		t.Fatalf("75+75 at the same time: got %+v, want a user_risk alert", got)
	}
	a := got[0]
	if a.UserID != "U1" || a.Severity != schemas.SeverityHigh || a.FindingCount != 2 || a.Detector != "user_risk" || a.Score != 60 { // at the threshold: the bottom of the high band
		t.Errorf("risk alert: %+v", a)
	}
	if !strings.HasPrefix(a.Explanation, "User U1's accumulated risk reached 150 (threshold 150) in the 24h to 2026-03-05 09:00 UTC from 2 findings by 2 detectors (family 75, vip 75)") {
		t.Errorf("explanation: %q", a.Explanation)
	}
	// Two more detectors push it over the critical threshold (300).
	got = e.observe(t, finding("coworker", "critical", "U1", 3, at("09:00")), finding("off_hours", "critical", "U1", 4, at("09:00")))
	if len(got) != 1 || got[0].Severity != schemas.SeverityCritical || got[0].Change != alerting.ChangeEscalated {
		t.Fatalf("over critical threshold: %+v", got)
	}
}

func TestUserRiskPerDetectorCap(t *testing.T) {
	e := newEnv(t, riskOnly())
	var fs []schemas.Finding
	for i := 0; i < 20; i++ {
		fs = append(fs, finding("volume", "critical", "U1", i+1, at("09:00").Add(time.Duration(i)*time.Minute)))
	}
	if got := e.observe(t, fs...); len(got) != 0 {
		t.Fatalf("one detector alone (capped at 100) raised risk: %+v", got)
	}
}

func TestUserRiskDecays(t *testing.T) {
	e := newEnv(t, riskOnly())
	// 75 twelve hours ago counts 37.5: 37.5 + 75 < 150.
	got := e.observe(t, finding("vip", "high", "U1", 1, at("00:00")), finding("family", "high", "U1", 2, at("12:00")))
	if len(got) != 0 {
		t.Fatalf("decayed risk raised an alert: %+v", got)
	}
	// Without decay the same findings cross the threshold.
	cfg := riskOnly()
	cfg.UserRisk.HalfLife = 0
	got = newEnv(t, cfg).observe(t, finding("vip", "high", "U1", 1, at("00:00")), finding("family", "high", "U1", 2, at("12:00")))
	if len(byRule(got, alerting.RuleUserRisk)) != 1 {
		t.Fatalf("undecayed risk: %+v", got)
	}
	// Findings more than the window apart never add up.
	got = newEnv(t, cfg).observe(t, finding("vip", "high", "U1", 1, at("00:00")), finding("family", "high", "U1", 2, at("24:01")))
	if len(got) != 0 {
		t.Fatalf("findings 24h apart added up: %+v", got)
	}
}

func TestUserRiskIgnoresLowFindings(t *testing.T) {
	cfg := riskOnly()
	cfg.UserRisk.PerDetectorCap = 0
	cfg.UserRisk.MinFindingSeverity = "medium"
	var fs []schemas.Finding
	for i := 0; i < 50; i++ {
		fs = append(fs, finding("off_hours", "low", "U1", i+1, at("09:00")))
	}
	if got := newEnv(t, cfg).observe(t, fs...); len(got) != 0 {
		t.Fatalf("low findings contributed: %+v", got)
	}
}

// --- patient surge -----------------------------------------------------------

func surgeOnly() alerting.Config {
	c := alerting.DefaultConfig()
	c.Rules = nil
	c.UserRisk.Enabled = false
	return c // window 1h, min_users 5
}

func TestPatientSurgeRaisesDynamicVIP(t *testing.T) {
	e := newEnv(t, surgeOnly())
	var got []alerting.Alert
	for i, u := range []string{"U1", "U2", "U3", "U4"} {
		got = append(got, e.observe(t, finding("off_hours", "low", u, 77, at("10:02").Add(time.Duration(i)*10*time.Minute)))...)
	}
	if len(got) != 0 {
		t.Fatalf("four users raised a surge: %+v", got)
	}
	got = e.observe(t, finding("vip", "medium", "U5", 77, at("10:55")))
	if len(got) != 1 {
		t.Fatalf("fifth user: got %+v, want one surge alert", got)
	}
	a := got[0]
	if a.Rule != alerting.RulePatientSurge || a.PatientID != patientID(77) || a.UserID != "" || a.Severity != schemas.SeverityHigh || a.FindingCount != 5 {
		t.Errorf("surge alert: %+v", a)
	}
	want := "The record of patient " + patientID(77) + " was opened by 5 unrelated users (U1, U2, U3, U4, U5) within 1h between 2026-03-05 10:02 and 10:55 UTC"
	if !strings.HasPrefix(a.Explanation, want) {
		t.Errorf("explanation:\n got %q\nwant %q…", a.Explanation, want)
	}
	if strings.Contains(a.Summary, "PAT-") {
		t.Errorf("summary names the patient: %q", a.Summary)
	}
	// A sixth user updates the same alert.
	got = e.observe(t, finding("vip", "medium", "U6", 77, at("11:00")))
	if len(got) != 1 || got[0].AlertID != a.AlertID || got[0].FindingCount != 6 {
		t.Fatalf("sixth user: %+v", got)
	}
}

func TestPatientSurgeConfounderCareRelationships(t *testing.T) {
	e := newEnv(t, surgeOnly())
	// A code blue: twelve clinicians open the record within minutes, all
	// with an encounter that explains it.
	var fs []schemas.Finding
	for i := 0; i < 12; i++ {
		fs = append(fs, explained(finding("off_hours", "low", "C"+string(rune('A'+i)), 5, at("03:00").Add(time.Duration(i)*time.Minute))))
	}
	if got := e.observe(t, fs...); len(got) != 0 {
		t.Fatalf("explained accesses raised a surge: %+v", got)
	}
	// Four unexplained users among them are still not five.
	var mixed []schemas.Finding
	for i := 0; i < 4; i++ {
		mixed = append(mixed, finding("off_hours", "low", "X"+string(rune('A'+i)), 5, at("03:20").Add(time.Duration(i)*time.Minute)))
	}
	if got := e.observe(t, mixed...); len(got) != 0 {
		t.Fatalf("4 unexplained + 12 explained users raised a surge: %+v", got)
	}
	// One user with many findings is one user.
	var one []schemas.Finding
	for i := 0; i < 10; i++ {
		one = append(one, finding("vip", "high", "XA", 6, at("04:00").Add(time.Duration(i)*time.Minute)))
	}
	if got := e.observe(t, one...); len(got) != 0 {
		t.Fatalf("one user raised a surge: %+v", got)
	}
}

func TestPatientSurgeNeedsUsersWithinTheWindow(t *testing.T) {
	e := newEnv(t, surgeOnly())
	var fs []schemas.Finding
	for i := 0; i < 8; i++ { // one new user every 70 minutes
		fs = append(fs, finding("vip", "high", "U"+string(rune('A'+i)), 8, at("00:00").Add(time.Duration(i)*70*time.Minute)))
	}
	if got := e.observe(t, fs...); len(got) != 0 {
		t.Fatalf("users spread over 8h raised a surge: %+v", got)
	}
}

func TestPatientSurgeOutOfOrder(t *testing.T) {
	e := newEnv(t, surgeOnly())
	// The latest access arrives first; the window starting at an earlier
	// finding still sees all five.
	var got []alerting.Alert
	for _, hhmm := range []string{"10:50", "10:00", "10:10", "10:20", "10:30"} {
		got = append(got, e.observe(t, finding("vip", "high", "U"+hhmm, 9, at(hhmm)))...)
	}
	if len(got) != 1 || got[0].FindingCount != 5 {
		t.Fatalf("got %+v, want one surge with 5 findings", got)
	}
}

// --- bounded state -------------------------------------------------------------

func TestStateIsBoundedByCap(t *testing.T) {
	cfg := alerting.DefaultConfig()
	cfg.Limits.MaxGroups = 20
	cfg.Limits.MaxRiskUsers = 30
	cfg.Limits.MaxSurgePatients = 25
	cfg.Limits.MaxFindingIDs = 3
	cfg.Limits.MaxTrackedFindings = 5
	cfg.Limits.MaxTrackedEntities = 4
	e := newEnv(t, cfg)
	for i := 0; i < 500; i++ {
		e.observe(t, finding("vip", "high", "U"+strconv.Itoa(i), i+1, at("10:00").Add(time.Duration(i)*time.Second)))
	}
	if g := metric(t, e.reg, "ehrwatch_alerting_state_entries", map[string]string{"kind": "groups"}); g > 20 || g == 0 {
		t.Errorf("groups = %v, want 1..20", g)
	}
	if g := metric(t, e.reg, "ehrwatch_alerting_state_entries", map[string]string{"kind": "risk_users"}); g > 30 {
		t.Errorf("risk users = %v, want ≤ 30", g)
	}
	if g := metric(t, e.reg, "ehrwatch_alerting_state_entries", map[string]string{"kind": "surge_patients"}); g > 25 {
		t.Errorf("surge patients = %v, want ≤ 25", g)
	}
	if ev := metric(t, e.reg, "ehrwatch_alerting_state_evictions_total", map[string]string{"kind": "group"}); ev == 0 {
		t.Error("no group evictions counted")
	}
	// One user, many findings: the per-alert sets stay capped and the
	// count says "at least".
	var fs []schemas.Finding
	for i := 0; i < 50; i++ {
		fs = append(fs, finding("family", "high", "BIG", i+1, at("12:00").Add(time.Duration(i)*time.Second)))
	}
	alerts := byRule(e.observe(t, fs...), "user_detector")
	if len(alerts) != 1 {
		t.Fatalf("got %d alerts", len(alerts))
	}
	a := alerts[0]
	if a.FindingCount != 50 || len(a.FindingIDs) != 3 {
		t.Errorf("count=%d ids=%d, want 50 and 3", a.FindingCount, len(a.FindingIDs))
	}
	if !strings.Contains(a.Explanation, "on at least 4 patients") {
		t.Errorf("explanation: %q", a.Explanation)
	}
}

func TestStateExpiresByFindingTime(t *testing.T) {
	cfg := alerting.DefaultConfig() // windows 24h, lateness 24h
	e := newEnv(t, cfg)
	for i := 0; i < 10; i++ {
		e.observe(t, finding("vip", "high", "U"+strconv.Itoa(i), i+1, at("10:00")))
	}
	if g := metric(t, e.reg, "ehrwatch_alerting_state_entries", map[string]string{"kind": "groups"}); g < 10 {
		t.Fatalf("groups = %v before expiry", g)
	}
	// Three days later (finding time): everything from day 0 is gone.
	e.observe(t, finding("vip", "high", "LATER", 1, at("10:00").Add(72*time.Hour)))
	for _, kind := range []string{"groups", "risk_users", "surge_patients"} {
		if g := metric(t, e.reg, "ehrwatch_alerting_state_entries", map[string]string{"kind": kind}); g != 1 {
			t.Errorf("%s = %v after expiry, want 1 (only the new user's)", kind, g)
		}
	}
	// A finding for an expired group is too late: counted, not re-raised.
	got := e.observe(t, finding("vip", "high", "U1", 99, at("11:00")))
	if len(byRule(got, "user_detector")) != 0 {
		t.Errorf("a too-late finding re-raised its alert: %+v", got)
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_findings_total", map[string]string{"result": "too_late"}); n != 1 {
		t.Errorf("too_late = %v, want 1", n)
	}
}

// BenchmarkObserve feeds batches of 1000 findings from 500 users on 5000
// patients, one per second of finding time, through the default rules,
// risk and surge (no store, no outputs): the per-finding cost of alerting
// on the pipeline's path.
func BenchmarkObserve(b *testing.B) {
	mgr, err := alerting.New(alerting.DefaultConfig(), alerting.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer mgr.Close(context.Background())
	const batch = 1000
	fs := make([]schemas.Finding, 0, b.N*batch)
	for i := 0; i < b.N*batch; i++ {
		sev := []schemas.Severity{"low", "medium", "high"}[i%3]
		det := []string{"vip", "family", "off_hours", "coworker", "volume"}[i%5]
		fs = append(fs, finding(det, sev, "U"+strconv.Itoa(i%500), 1+i%5000, day0.Add(time.Duration(i)*time.Second)))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		if _, err := mgr.Observe(context.Background(), fs[n*batch:(n+1)*batch]); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*batch), "ns/finding")
}
