package alerting_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// A patient name no component may ever repeat (the detectors never put
// names in findings; this one is planted to prove the point).
const plantedName = "Jane Q. Roe"

func TestPersistFailureKeepsAlertsForTheNextCall(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))
	e.store.failAlerts = errors.New("clickhouse unavailable")

	_, err := e.mgr.Observe(context.Background(), []schemas.Finding{finding("vip", "high", "U1", 1, at("09:00"))})
	if err == nil {
		t.Fatal("Observe hid the write error")
	}
	// Retrying the same batch (as the pipeline does when it has not
	// committed) while the store is still down keeps failing.
	if _, err := e.mgr.Observe(context.Background(), []schemas.Finding{finding("vip", "high", "U1", 1, at("09:00"))}); err == nil {
		t.Fatal("second Observe hid the write error")
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_persist_pending", nil); n != 1 {
		t.Errorf("pending = %v", n)
	}
	e.store.mu.Lock()
	e.store.failAlerts = nil
	e.store.mu.Unlock()
	got := e.observe(t, finding("vip", "high", "U1", 1, at("09:00")))
	if len(got) != 1 || got[0].Change != alerting.ChangeNew || !got[0].Notify || got[0].FindingCount != 1 {
		t.Fatalf("after recovery: %+v", got)
	}
	waitFor(t, "the notification", func() bool { return recv.acceptedCount() == 1 })
	// Close drains every output queue: a notification queued by one of the
	// failed calls (before its alert was stored) would be delivered by now.
	if err := e.mgr.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := recv.acceptedCount(); n != 1 {
		t.Fatalf("%d notifications delivered, want exactly 1: an alert was notified before it was stored", n)
	}
	if len(e.store.alerts) != 1 {
		t.Errorf("%d rows written, want 1", len(e.store.alerts))
	}
}

// TestNoPatientDataInLogsMetricsOrErrors drives every path that logs or
// counts (delivery failures of each kind, drops, persist errors,
// shutdown) with findings naming patients, and greps the captured debug
// log, every metric label value and every returned error.
func TestNoPatientDataInLogsMetricsOrErrors(t *testing.T) {
	down, _ := net.Listen("tcp", "127.0.0.1:0")
	downAddr := down.Addr().String()
	down.Close()
	reject := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		// A hostile receiver echoing data back; bodies are never read out.
		http.Error(w, "bad alert for patient "+patientID(1)+" "+plantedName, http.StatusBadRequest)
	}))
	defer reject.Close()
	hang := newHangingServer(t)

	cfg := alerting.DefaultConfig()
	cfg.PatientSurge.MinUsers = 2
	cfg.Rules = append(cfg.Rules, alerting.RuleConfig{Name: "same_patient", GroupBy: []string{"patient"}, MinSeverity: "low", Window: time.Hour})
	o := &cfg.Outputs
	o.Webhook.Enabled, o.Webhook.URL, o.Webhook.Secret, o.Webhook.Delivery = true, reject.URL, testSecret, fastDelivery(2)
	o.Alertmanager.Enabled, o.Alertmanager.URL, o.Alertmanager.Delivery = true, hang.srv.URL, fastDelivery(2)
	o.Alertmanager.Delivery.QueueSize = 1
	o.Syslog.Enabled, o.Syslog.Address, o.Syslog.Delivery = true, downAddr, fastDelivery(2)
	e := newEnv(t, cfg)

	var fs []schemas.Finding
	for i, u := range []string{"U1", "U2", "U3", "U4"} {
		f := finding([]string{"vip", "family"}[i%2], "critical", u, 1+i%2, at("09:00").Add(time.Duration(i)*time.Minute))
		f.Explanation += " Patient name: " + plantedName + "."
		f.Evidence.Facts["patient_name"] = plantedName
		fs = append(fs, f)
	}
	var errs []error
	alerts, err := e.mgr.Observe(context.Background(), fs)
	errs = append(errs, err)
	if len(alerts) == 0 {
		t.Fatal("no alerts")
	}
	e.store.mu.Lock()
	e.store.failAlerts = errors.New("write failed")
	e.store.mu.Unlock()
	_, err = e.mgr.Observe(context.Background(), []schemas.Finding{finding("vip", "critical", "U9", 1, at("10:00"))})
	errs = append(errs, err)
	e.store.mu.Lock()
	e.store.failAlerts = nil
	e.store.mu.Unlock()
	_, err = e.mgr.Observe(context.Background(), nil)
	errs = append(errs, err)

	waitFor(t, "webhook and syslog dead letters", func() bool {
		n := 0
		for _, dl := range e.store.deadLetters() {
			if dl.Output != "alertmanager" {
				n++
			}
		}
		return n >= 2*len(alerts)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	errs = append(errs, e.mgr.Close(ctx))

	logs := e.logs.String()
	if !strings.Contains(logs, "dead-lettered") {
		t.Fatalf("the scenario logged no delivery failure; log:\n%s", logs)
	}
	forbidden := []string{"PAT-SECRET", plantedName, "Roe"}
	check := func(where, s string) {
		for _, bad := range forbidden {
			if strings.Contains(s, bad) {
				t.Errorf("%s contains %q:\n%s", where, bad, s)
			}
		}
	}
	check("log", logs)
	for _, v := range allLabelValues(t, e.reg) {
		check("metric label", v)
	}
	for _, err := range errs {
		if err != nil {
			check("error", err.Error())
		}
	}
	for _, dl := range e.store.deadLetters() {
		check("dead letter", dl.ErrorClass+dl.Output+dl.AlertID)
	}
}
