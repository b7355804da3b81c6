package detectors_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestQualityGateAlerts is the quality gate at the alert level, after
// warm-up (synth.EvaluateGate): every detector at its defaults and the
// default alerting rules, on two seeds and two hospital sizes, so it cannot
// be met by tuning to one stream. Each hospital takes a few seconds (tens
// under -race).
func TestQualityGateAlerts(t *testing.T) {
	t.Parallel()
	type hospital struct {
		seed        uint64
		users, days int
	}
	// The default fortnight at 500 users, and the shape of the independent
	// hospital of issue 12: 300 users over four weeks.
	base := synth.DefaultConfig()
	hospitals := []hospital{{base.Seed, 500, 14}, {base.Seed + 2, 300, 28}, {base.Seed + 1, 500, 14}, {base.Seed, 300, 28}}
	if raceEnabled {
		hospitals = hospitals[:2] // two seeds, two sizes
	}
	for _, hc := range hospitals {
		t.Run(fmt.Sprintf("seed%d_users%d_days%d", hc.seed, hc.users, hc.days), func(t *testing.T) {
			t.Parallel()
			cfg := base.WithUsers(hc.users)
			cfg.Seed, cfg.Days = hc.seed, hc.days
			h, err := synth.Generate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			res := runGate(t, h)
			t.Logf("\n%s", res)
			for _, f := range res.Failures {
				t.Error(f)
			}
		})
	}
}

// gatePartitions is how many partitions the gate spreads the users over,
// with the peers judged by the whole peer group (a PeerStage), as ehrwatch
// replay does; the findings are those of any other number of partitions
// (TestFindingsIndependentOfPartitions).
const gatePartitions = 4

// runGate runs the engines and alerting over h and evaluates the gate.
func runGate(t testing.TB, h *synth.Hospital) synth.GateResult {
	t.Helper()
	findings, coverage := runPartitioned(t, h, qualityEngine(t, h), gatePartitions, false)
	var cov strings.Builder
	coverage.WriteCoverage(&cov, 0)
	t.Logf("\n%s", cov.String())
	for _, f := range findings {
		if lo, hi := f.Severity.ScoreBand(); f.Score < lo || f.Score > hi {
			t.Errorf("finding %s: %s scored %d, outside %d–%d", f.FindingID, f.Severity, f.Score, lo, hi)
		}
	}
	alerts := gateAlerts(t, h, findings)
	res := synth.EvaluateGate(h, h.Truth, findings, alerts)
	if testing.Verbose() {
		noise := map[string]bool{}
		for _, id := range res.NoiseAlertIDs {
			noise[id] = true
		}
		byID := map[string]schemas.Finding{}
		for _, f := range findings {
			byID[f.FindingID] = f
		}
		for _, a := range alerts {
			if noise[a.AlertID] {
				for _, id := range a.FindingIDs[:min(2, len(a.FindingIDs))] {
					f := byID[id]
					t.Logf("noise %s/%s: %s %d %s", a.Rule, a.Detector, f.Severity, f.Score, f.Explanation)
				}
			}
		}
	}
	return res
}

// gateAlerts runs the default alerting rules over findings, in order, and
// returns the last version of every alert.
func gateAlerts(t testing.TB, h *synth.Hospital, findings []schemas.Finding) []synth.GateAlert {
	t.Helper()
	acfg := alerting.DefaultConfig()
	acfg.Limits.Lateness = time.Duration(h.Config.Days+1) * 24 * time.Hour
	mgr, err := alerting.New(acfg, alerting.Options{Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close(context.Background())
	last := map[string]alerting.Alert{}
	var order []string
	for i := 0; i < len(findings); i += 500 {
		as, err := mgr.Observe(context.Background(), findings[i:min(i+500, len(findings))])
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range as {
			if _, ok := last[a.AlertID]; !ok {
				order = append(order, a.AlertID)
			}
			last[a.AlertID] = a
		}
	}
	out := make([]synth.GateAlert, 0, len(order))
	for _, id := range order {
		a := last[id]
		out = append(out, synth.GateAlert{AlertID: a.AlertID, Rule: a.Rule, Detector: a.Detector, FirstSeen: a.FirstSeen, FindingIDs: a.FindingIDs})
	}
	return out
}
