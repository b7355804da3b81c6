package alerting_test

import (
	"context"
	"maps"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// hospitalFindings is a deterministic spread of findings: 40 users on 4
// "partitions" (user % 4) over 6 days, mixed severities, some users
// sharing patients (surges), some findings suppressed. Each user's
// findings are in time order, as a partition delivers them.
func hospitalFindings() []schemas.Finding {
	r := rand.New(rand.NewPCG(7, 11))
	sevs := []schemas.Severity{"info", "low", "medium", "medium", "high", "critical"}
	dets := []string{"vip", "family", "off_hours", "coworker", "break_glass"}
	var out []schemas.Finding
	for u := 0; u < 40; u++ {
		t := day0
		for i := 0; i < 12; i++ {
			t = t.Add(time.Duration(1+r.IntN(11)) * time.Hour)
			patient := 1 + r.IntN(300)
			if u%5 == 0 && i == 3 {
				patient = 7 // several users on one patient within hours: a surge
				t = day0.Add(30*time.Hour + time.Duration(u)*time.Minute)
			}
			f := finding(dets[r.IntN(len(dets))], sevs[r.IntN(len(sevs))], "U"+strconv.Itoa(u), patient, t)
			f.Suppressed = r.IntN(10) == 0
			out = append(out, f)
		}
	}
	return out
}

type alertKey struct {
	sev   schemas.Severity
	count uint32
}

// finalAlerts is the alert set as the store holds it: per id the latest
// version's severity and finding count.
func finalAlerts(s *alerting.MemoryStateStore) map[string]alertKey {
	out := map[string]alertKey{}
	for id, a := range s.Alerts {
		out[id] = alertKey{a.Severity, a.FindingCount}
	}
	return out
}

func newStateManager(t *testing.T, st alerting.StateStore) *alerting.Manager {
	t.Helper()
	mgr, err := alerting.New(alerting.DefaultConfig(), alerting.Options{State: st, Logger: zerolog.Nop(), Registerer: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mgr.Close(context.Background()) })
	return mgr
}

// TestPersistentStateIndependentOfOrderAndRestarts is issue 10's backlog
// case in miniature: the same findings, delivered paced (in time order,
// one at a time) and as a skewed backlog (one partition's whole history
// after another, in batches, with restarts between partitions and a batch
// replayed), give the same alerts, and each alert id is notified as new
// exactly once. Without a StateStore the skewed order loses alerts as too
// late, which is what this design removes.
func TestPersistentStateIndependentOfOrderAndRestarts(t *testing.T) {
	ctx := context.Background()
	all := hospitalFindings()

	// Paced: global time order, one finding per call.
	paced := append([]schemas.Finding(nil), all...)
	sort.SliceStable(paced, func(i, j int) bool {
		return paced[i].Evidence.Facts["event_time"] < paced[j].Evidence.Facts["event_time"]
	})
	pacedStore := alerting.NewMemoryStateStore()
	mgr := newStateManager(t, pacedStore)
	for i := range paced {
		if _, err := mgr.Observe(ctx, paced[i:i+1]); err != nil {
			t.Fatal(err)
		}
	}
	want := finalAlerts(pacedStore)
	if len(want) < 20 {
		t.Fatalf("only %d alerts in the paced run; the fixture is too thin", len(want))
	}

	// Backlog: partition by partition, batches of 7, a restart (a new
	// Manager on the same store) before each partition, every third batch
	// delivered twice (a retry or a re-read after a crash).
	backlog := alerting.NewMemoryStateStore()
	newCount := map[string]int{}
	for p := 3; p >= 0; p-- {
		mgr := newStateManager(t, backlog)
		var part []schemas.Finding
		for _, f := range all {
			if n, _ := strconv.Atoi(f.UserID[1:]); n%4 == p {
				part = append(part, f)
			}
		}
		for i, b := 0, 0; i < len(part); i, b = i+7, b+1 {
			batch := part[i:min(i+7, len(part))]
			for rep := 0; rep < 1+btoi(b%3 == 0); rep++ {
				alerts, err := mgr.Observe(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				for _, a := range alerts {
					if a.Notify && a.Change == alerting.ChangeNew {
						newCount[a.AlertID]++
					}
				}
			}
		}
	}
	got := finalAlerts(backlog)
	for id, w := range want {
		if g, ok := got[id]; !ok {
			t.Errorf("alert %s (%v) missing after the backlog", id, w)
		} else if g != w {
			t.Errorf("alert %s: backlog %v, paced %v", id, g, w)
		}
	}
	for id := range got {
		if _, ok := want[id]; !ok {
			t.Errorf("alert %s only in the backlog run", id)
		}
	}
	for id := range got {
		if newCount[id] != 1 {
			t.Errorf("alert %s notified as new %d times, want 1", id, newCount[id])
		}
	}

	// The same skewed order without a StateStore drops findings as too
	// late: the failure mode this design removes.
	reg := prometheus.NewRegistry()
	mem, err := alerting.New(alerting.DefaultConfig(), alerting.Options{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close(ctx)
	for p := 3; p >= 0; p-- {
		for _, f := range all {
			if n, _ := strconv.Atoi(f.UserID[1:]); n%4 == p {
				if _, err := mem.Observe(ctx, []schemas.Finding{f}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if n := metric(t, reg, "ehrwatch_alerting_findings_total", map[string]string{"result": "too_late"}); n == 0 {
		t.Error("memory mode dropped nothing: the fixture no longer exercises partition skew")
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// TestPersistentStateWriteFailureRetries: a failed write leaves nothing
// behind; the retry produces the alert and its one notification.
func TestPersistentStateWriteFailureRetries(t *testing.T) {
	ctx := context.Background()
	st := alerting.NewMemoryStateStore()
	mgr := newStateManager(t, st)
	f := finding("vip", "high", "U1", 1, at("10:00"))
	st.Fail = context.DeadlineExceeded
	if _, err := mgr.Observe(ctx, []schemas.Finding{f}); err == nil {
		t.Fatal("Observe succeeded with a failing store")
	}
	st.Fail = nil
	alerts, err := mgr.Observe(ctx, []schemas.Finding{f})
	if err != nil {
		t.Fatal(err)
	}
	if r := byRule(alerts, "user_detector"); len(r) != 1 || !r[0].Notify || r[0].Change != alerting.ChangeNew || r[0].NotifiedVersion != r[0].Version {
		t.Fatalf("after retry: %+v", alerts)
	}
	again, err := mgr.Observe(ctx, []schemas.Finding{f})
	if err != nil || len(again) != 0 {
		t.Fatalf("a replayed finding changed something: %+v %v", again, err)
	}
}

// BenchmarkObserveClickHouse is Observe with the state in ClickHouse (the
// dev engine): batches of 100 findings from 20 users, each batch a new
// minute of finding time, default rules, risk and surge. It reports the
// cost per batch, which is what the pipeline's after-store hook adds to a
// flush: one or two state lookups and one write of the touched rows.
func BenchmarkObserveClickHouse(b *testing.B) {
	conn, _ := testenv.ClickHouse(b)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		b.Fatal(err)
	}
	mgr, err := alerting.New(alerting.DefaultConfig(), alerting.Options{Store: alerting.NewClickHouseStore(conn), Logger: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	defer mgr.Close(ctx)
	const batch = 100
	sevs := []schemas.Severity{"low", "medium", "high"}
	dets := []string{"vip", "family", "off_hours", "coworker", "volume"}
	b.ResetTimer()
	for n := 0; n < b.N; n++ {
		fs := make([]schemas.Finding, batch)
		for i := range fs {
			k := n*batch + i
			fs[i] = finding(dets[k%5], sevs[k%3], "U"+strconv.Itoa(k%20), 1+k%500, day0.Add(time.Duration(n)*time.Minute+time.Duration(i)*time.Second))
		}
		if _, err := mgr.Observe(ctx, fs); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/batch")
}

// TestUserRiskIndependentOfArrivalOrder: the peer stage's findings
// (volume, break_glass) reach alerting after later findings of the same
// user, by however far the slowest partition lags. The user_risk alerts
// must not depend on that: the same findings, in time order and with a
// next-day finding first, in batches or one at a time, with and without a
// StateStore, give the same risk alerts. (Before, the risk was evaluated
// only at the user's newest finding and entries a window behind it were
// dropped, so the next-day finding first lost the day's alert:
// TestRunBacklogAlertsEqualPacedRun's difference.)
func TestUserRiskIndependentOfArrivalOrder(t *testing.T) {
	ctx := context.Background()
	day := []schemas.Finding{
		finding("coworker", "high", "U1", 1, at("09:00")),
		finding("deceased", "high", "U1", 2, at("10:00")),
		finding("vip", "medium", "U1", 3, at("11:00")),
	}
	late := finding("volume", "high", "U1", 0, at("36:00")) // the next day, judged by the stage
	orders := map[string][][]schemas.Finding{
		"in time order, one at a time":  {day[:1], day[1:2], day[2:], {late}},
		"in time order, one batch":      {append(slices.Clone(day), late)},
		"next day first, one at a time": {{late}, day[2:], day[1:2], day[:1]},
		"next day first, then a batch":  {{late}, day},
	}
	risk := func(m map[string]alertKey, st *alerting.MemoryStateStore) map[string]alertKey {
		out := map[string]alertKey{}
		for id, a := range st.Alerts {
			if a.Rule == alerting.RuleUserRisk {
				out[id] = m[id]
			}
		}
		return out
	}
	var want map[string]alertKey
	for _, name := range slices.Sorted(maps.Keys(orders)) {
		st := alerting.NewMemoryStateStore()
		mgr := newStateManager(t, st)
		mem := newEnv(t, riskOnly())
		var memAlerts []alerting.Alert
		for _, b := range orders[name] {
			if _, err := mgr.Observe(ctx, b); err != nil {
				t.Fatal(err)
			}
			memAlerts = append(memAlerts, mem.observe(t, b...)...)
		}
		got := risk(finalAlerts(st), st)
		if want == nil {
			want = got
			if len(want) != 1 {
				t.Fatalf("%s: %d risk alerts, want 1 (75+75+50 within three hours)", name, len(want))
			}
		}
		if !maps.Equal(got, want) {
			t.Errorf("%s: risk alerts %v, want %v", name, got, want)
		}
		memGot := map[string]alertKey{}
		for id, a := range finalState(memAlerts) {
			memGot[id] = alertKey{a.Severity, a.FindingCount}
		}
		if !maps.Equal(memGot, want) {
			t.Errorf("%s, without a StateStore: risk alerts %v, want %v", name, memGot, want)
		}
	}
}
