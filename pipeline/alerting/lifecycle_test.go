package alerting_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// gettableAlert is the part of Alertmanager's v2 gettableAlert the test
// reads.
type gettableAlert struct {
	Labels   map[string]string `json:"labels"`
	StartsAt time.Time         `json:"startsAt"`
	EndsAt   time.Time         `json:"endsAt"`
	Status   struct {
		State string `json:"state"`
	} `json:"status"`
}

// amAlerts lists the alerts Alertmanager holds with label run=<run>.
// Alertmanager leaves resolved alerts (endsAt in the past) out.
func amAlerts(t *testing.T, base, run string) []gettableAlert {
	t.Helper()
	q := url.Values{"filter": {`run="` + run + `"`}}
	resp, err := http.Get(base + "/api/v2/alerts?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /api/v2/alerts: HTTP %d", resp.StatusCode)
	}
	var out []gettableAlert
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestAlertLifecycleFollowsTriageInRealAlertmanager: an alert notified to
// a real Alertmanager stays active past its first endsAt (and past the dev
// Alertmanager's 5s resolve_timeout) while it is open in triage, because
// the lifecycle loop refreshes it; closing it in triage resolves it there
// and sends the webhook a signed alert.resolved with a stable id. A
// restarted manager (new Manager on the same database) does not resolve
// it again.
func TestAlertLifecycleFollowsTriageInRealAlertmanager(t *testing.T) {
	amURL := testenv.Alertmanager(t)
	conn := migrated(t)
	ctx := context.Background()
	run := strings.ReplaceAll(t.Name()+time.Now().Format("150405.000"), ".", "")

	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()

	cfg := rulesOnly()
	cfg.Lifecycle.Interval = 2 * time.Second
	cfg.Lifecycle.InvariantGrace = 0
	am := &cfg.Outputs.Alertmanager
	am.Enabled, am.URL, am.Delivery, am.Labels = true, amURL, fastDelivery(3), map[string]string{"run": run}
	wh := &cfg.Outputs.Webhook
	wh.Enabled, wh.URL, wh.Secret, wh.Delivery = true, srv.URL, testSecret, fastDelivery(3)

	newMgr := func() (*alerting.Manager, *prometheus.Registry) {
		reg := prometheus.NewRegistry()
		mgr, err := alerting.New(cfg, alerting.Options{Store: alerting.NewClickHouseStore(conn), Logger: zerolog.New(zerolog.NewTestWriter(t)), Registerer: reg})
		if err != nil {
			t.Fatal(err)
		}
		return mgr, reg
	}
	mgr, reg := newMgr()
	defer func() { _ = mgr.Close(ctx) }()

	f := finding("break_glass", schemas.SeverityCritical, "U-LIFE", 1, at("03:00"))
	storeFindings(t, conn, f)
	alerts, err := mgr.Observe(ctx, []schemas.Finding{f})
	if err != nil {
		t.Fatal(err)
	}
	if len(alerts) != 1 || !alerts[0].Notify {
		t.Fatalf("alerts = %+v", alerts)
	}
	id := alerts[0].AlertID

	var first gettableAlert
	waitFor(t, "the alert in Alertmanager", func() bool {
		got := amAlerts(t, amURL, run)
		if len(got) == 1 {
			first = got[0]
		}
		return len(got) == 1
	})
	if first.Labels["alert_id"] != id || first.Status.State != "active" {
		t.Fatalf("Alertmanager holds %+v", first)
	}
	// endsAt is set (3 × interval ahead), so Alertmanager's resolve_timeout
	// never applies; the alert stays active only if it is refreshed.
	if first.EndsAt.IsZero() || first.EndsAt.After(time.Now().Add(3*cfg.Lifecycle.Interval+time.Second)) {
		t.Fatalf("endsAt %v, want within 3 × lifecycle.interval", first.EndsAt)
	}
	deadline := first.EndsAt.Add(6 * time.Second) // past the first endsAt and the dev Alertmanager's 5s resolve_timeout
	for time.Now().Before(deadline) {
		time.Sleep(500 * time.Millisecond)
	}
	got := amAlerts(t, amURL, run)
	if len(got) != 1 || got[0].Status.State != "active" || !got[0].EndsAt.After(first.EndsAt) {
		t.Fatalf("open alert no longer firing after its first endsAt: %+v", got)
	}
	if n := metric(t, reg, "ehrwatch_alerting_firing_alerts", nil); n != 1 {
		t.Errorf("firing_alerts = %v", n)
	}
	if n := metric(t, reg, "ehrwatch_alerting_findings_without_alert", nil); n != 0 {
		t.Errorf("findings_without_alert = %v", n)
	}

	// Close it in triage.
	ts := triage.NewStore(conn, triage.DefaultOptions())
	closed, disp := triage.StatusClosed, triage.DispositionFalsePositive
	if _, err := ts.Update(ctx, id, triage.Change{Status: &closed, Disposition: &disp}, triage.Actor{Name: "analyst"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the closed alert to resolve in Alertmanager", func() bool { return len(amAlerts(t, amURL, run)) == 0 })
	var resolved received
	waitFor(t, "alert.resolved at the webhook", func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		for _, r := range recv.accepted {
			if strings.Contains(string(r.body), `"alert.resolved"`) {
				resolved = r
				return true
			}
		}
		return false
	})
	if got := resolved.header.Get("webhook-id"); got != alerting.WebhookResolvedID(id, 0) {
		t.Errorf("resolved webhook-id %q", got)
	}

	// A restart does not resolve the same closing again.
	_ = mgr.Close(ctx)
	mgr2, _ := newMgr()
	defer func() { _ = mgr2.Close(ctx) }()
	time.Sleep(5 * time.Second) // the restarted loop ticks at once, then every 2s
	recv.mu.Lock()
	n := 0
	for _, r := range recv.accepted {
		if strings.Contains(string(r.body), `"alert.resolved"`) {
			n++
		}
	}
	recv.mu.Unlock()
	// A resend after a crash would carry the same webhook-id, which the
	// receiver rejects as a replay: one accepted closing either way.
	if n != 1 {
		t.Errorf("alert.resolved accepted %d times, want 1", n)
	}
	if len(amAlerts(t, amURL, run)) != 0 {
		t.Error("the closed alert fires again after a restart")
	}
}

// storeFindings inserts findings as the pipeline does, so the invariant
// query sees them.
func storeFindings(t *testing.T, conn interface {
	Exec(context.Context, string, ...any) error
}, fs ...schemas.Finding) {
	t.Helper()
	for _, f := range fs {
		if err := conn.Exec(context.Background(), `INSERT INTO findings (finding_id, detector, severity, score, facility_id, user_id,
 patient_id, window_start, window_end, event_ids, explanation, evidence, suppressed, suppression_reason, kafka_partition, kafka_offset)
 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, '{}', ?, '', 0, 0)`,
			f.FindingID, f.Detector, string(f.Severity), f.Score, f.FacilityID, f.UserID, f.PatientID,
			f.WindowStart, f.WindowEnd, f.EventIDs, f.Explanation, f.Suppressed); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFindingsWithoutAlertInvariant: the invariant counts a stored finding
// at or above the threshold that alerting never saw, and drops to 0 once
// alerting has counted it; a finding below every threshold or suppressed
// never counts.
func TestFindingsWithoutAlertInvariant(t *testing.T) {
	conn := migrated(t)
	ctx := context.Background()
	cfg := rulesOnly()
	cfg.Lifecycle.Interval = 200 * time.Millisecond
	cfg.Lifecycle.InvariantGrace = 0
	reg := prometheus.NewRegistry()
	mgr, err := alerting.New(cfg, alerting.Options{Store: alerting.NewClickHouseStore(conn), Logger: zerolog.Nop(), Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr.Close(ctx)
	high := finding("vip", schemas.SeverityHigh, "U-INV", 1, at("10:00"))
	low := finding("vip", schemas.SeverityLow, "U-INV", 2, at("10:05"))
	sup := finding("vip", schemas.SeverityHigh, "U-INV", 3, at("10:10"))
	sup.Suppressed = true
	storeFindings(t, conn, high, low, sup)
	waitFor(t, "the invariant to see the unalerted finding", func() bool {
		return metric(t, reg, "ehrwatch_alerting_findings_without_alert", nil) == 1
	})
	if _, err := mgr.Observe(ctx, []schemas.Finding{high, low, sup}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the invariant to return to 0", func() bool {
		return metric(t, reg, "ehrwatch_alerting_findings_without_alert", nil) == 0
	})
}

// TestLostNotificationIsResentWithItsKey: a notification that never left
// (the webhook hung and the process shut down) is sent by the next
// process's lifecycle loop, once, with the webhook-id of the original.
func TestLostNotificationIsResentWithItsKey(t *testing.T) {
	conn := migrated(t)
	ctx := context.Background()
	stop := make(chan struct{})
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer hang.Close()
	defer close(stop)
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()

	cfgFor := func(url string) alerting.Config {
		cfg := webhookConfig(url)
		cfg.Lifecycle.Interval = 100 * time.Millisecond
		return cfg
	}
	mgr1, err := alerting.New(cfgFor(hang.URL), alerting.Options{Store: alerting.NewClickHouseStore(conn), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	alerts, err := mgr1.Observe(ctx, []schemas.Finding{finding("vip", schemas.SeverityHigh, "U-LOST", 1, at("09:00"))})
	if err != nil || len(alerts) != 1 || !alerts[0].Notify {
		t.Fatalf("alerts %+v, %v", alerts, err)
	}
	a := alerts[0]
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	_ = mgr1.Close(short) // the hung delivery is cut off: dead-lettered as shutdown
	cancel()

	mgr2, err := alerting.New(cfgFor(srv.URL), alerting.Options{Store: alerting.NewClickHouseStore(conn), Logger: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer mgr2.Close(ctx)
	waitFor(t, "the lost notification", func() bool { return recv.acceptedCount() == 1 })
	recv.mu.Lock()
	got := recv.accepted[0]
	recv.mu.Unlock()
	if id := got.header.Get("webhook-id"); id != alerting.WebhookID(a.AlertID, a.Version) {
		t.Errorf("resent with webhook-id %q, want the original %q", id, alerting.WebhookID(a.AlertID, a.Version))
	}
	if !strings.Contains(string(got.body), `"alert.created"`) {
		t.Errorf("resent as %s, want alert.created", got.body)
	}
	time.Sleep(time.Second) // ten more ticks: the delivery is recorded, nothing is sent again
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.accepted) != 1 || len(recv.rejected) != 0 {
		t.Errorf("after the resend: %d accepted, rejected %v", len(recv.accepted), recv.rejected)
	}
}
