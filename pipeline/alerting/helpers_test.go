package alerting_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// day0 is the test day; findings are placed at day0 + hh:mm.
var day0 = time.Date(2026, 3, 5, 0, 0, 0, 0, time.UTC)

func at(hhmm string) time.Time {
	var h, m int
	if _, err := fmt.Sscanf(hhmm, "%d:%d", &h, &m); err != nil {
		panic(err)
	}
	return day0.Add(time.Duration(h)*time.Hour + time.Duration(m)*time.Minute)
}

// patientID makes a distinctive synthetic patient id, so tests can grep
// any output for it.
func patientID(n int) string { return fmt.Sprintf("PAT-SECRET-%04d", n) }

// finding builds a per-access finding the way the detectors do: a
// day-long window, the access time as the event_time fact, and an
// explanation naming the patient by id.
func finding(det string, sev schemas.Severity, user string, patient int, t time.Time) schemas.Finding {
	start := t.Truncate(24 * time.Hour)
	end := start.Add(24 * time.Hour)
	pid := ""
	if patient > 0 {
		pid = patientID(patient)
	}
	return schemas.Finding{
		FindingID:   schemas.FindingID(det, []string{user, pid, t.Format(time.RFC3339Nano)}, start, end),
		Detector:    det,
		Severity:    sev,
		Score:       sevScore(sev),
		FacilityID:  "F1",
		UserID:      user,
		PatientID:   pid,
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    []string{"e-" + user + "-" + t.Format("150405")},
		Explanation: fmt.Sprintf("User %s (nurse, cardiology) viewed the record of patient %s at %s; no care relationship explains it.", user, pid, t.Format("2006-01-02 15:04 MST")),
		Evidence: schemas.Evidence{Facts: map[string]string{
			"event_time": t.UTC().Format(time.RFC3339Nano),
			"care":       "unexplained",
		}},
	}
}

func sevScore(s schemas.Severity) uint8 { return s.DefaultScore() }

func explained(f schemas.Finding) schemas.Finding {
	f.Evidence.Facts["care"] = "explained"
	f.Explanation = strings.Replace(f.Explanation, "no care relationship explains it", "explained by encounter E1 in cardiology", 1)
	return f
}

// rulesOnly is a config with only the default grouping rule.
func rulesOnly() alerting.Config {
	c := alerting.DefaultConfig()
	c.UserRisk.Enabled = false
	c.PatientSurge.Enabled = false
	return c
}

// fakeStore records what the manager writes; failAlerts makes writes fail.
type fakeStore struct {
	mu         sync.Mutex
	alerts     []alerting.Alert
	failures   []alerting.DeliveryFailure
	failAlerts error
}

func (s *fakeStore) WriteAlerts(_ context.Context, a []alerting.Alert) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failAlerts != nil {
		return s.failAlerts
	}
	s.alerts = append(s.alerts, a...)
	return nil
}

func (s *fakeStore) WriteDeliveryFailures(_ context.Context, f []alerting.DeliveryFailure) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.failures = append(s.failures, f...)
	return nil
}

func (s *fakeStore) deadLetters() []alerting.DeliveryFailure {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]alerting.DeliveryFailure(nil), s.failures...)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	mgr   *alerting.Manager
	store *fakeStore
	reg   *prometheus.Registry
	logs  *syncBuffer
}

// newEnv builds a manager with a fake store, a private registry and a
// captured debug-level log; it is closed when the test ends.
func newEnv(t testing.TB, cfg alerting.Config) *env {
	t.Helper()
	e := &env{store: &fakeStore{}, reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	mgr, err := alerting.New(cfg, alerting.Options{
		Store:      e.store,
		Logger:     zerolog.New(e.logs).Level(zerolog.DebugLevel),
		Registerer: e.reg,
		Version:    "1.2.3",
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.mgr = mgr
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = mgr.Close(ctx)
	})
	return e
}

func (e *env) observe(t testing.TB, fs ...schemas.Finding) []alerting.Alert {
	t.Helper()
	alerts, err := e.mgr.Observe(context.Background(), fs)
	if err != nil {
		t.Fatalf("Observe: %v", err)
	}
	return alerts
}

// metric returns the value of the series name{labels}, 0 when absent.
func metric(t testing.TB, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue next
				}
			}
			switch {
			case m.Counter != nil:
				return m.GetCounter().GetValue()
			case m.Gauge != nil:
				return m.GetGauge().GetValue()
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return 0
}

// allLabelValues returns every label value of every series.
func allLabelValues(t testing.TB, reg *prometheus.Registry) []string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				out = append(out, lp.GetValue())
			}
		}
	}
	return out
}

// waitFor polls cond until it holds or the test's patience runs out. It
// is for asynchronous delivery, not a timing assertion.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func byRule(alerts []alerting.Alert, rule string) []alerting.Alert {
	var out []alerting.Alert
	for _, a := range alerts {
		if a.Rule == rule {
			out = append(out, a)
		}
	}
	return out
}

// fastDelivery is a delivery policy for tests: tiny backoffs.
func fastDelivery(attempts int) alerting.DeliveryConfig {
	d := alerting.DefaultDeliveryConfig()
	d.MaxAttempts = attempts
	d.InitialBackoff = time.Millisecond
	d.MaxBackoff = 5 * time.Millisecond
	d.Timeout = 5 * time.Second
	return d
}
