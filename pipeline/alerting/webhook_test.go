package alerting_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// swReceiver is a Standard Webhooks consumer written from the
// specification (https://www.standardwebhooks.com, "Verifying
// signatures"), independent of the sender's code: it recomputes
// HMAC-SHA256 over "{webhook-id}.{webhook-timestamp}.{body}" with the
// base64-decoded whsec_ secret, compares in constant time against every
// "v1," signature in the header, rejects timestamps more than five minutes
// off, and rejects a webhook-id it has already processed.
type swReceiver struct {
	key       []byte
	tolerance time.Duration
	now       func() time.Time

	mu       sync.Mutex
	seen     map[string]bool
	accepted []received
	rejected map[string]int
	// failFirst answers this many requests with 503 before verifying.
	failFirst int
	requests  int
}

type received struct {
	header http.Header
	body   []byte
}

var (
	errMissingHeader = errors.New("missing webhook header")
	errBadTimestamp  = errors.New("bad timestamp")
	errStale         = errors.New("timestamp outside tolerance")
	errSignature     = errors.New("no valid signature")
	errReplay        = errors.New("webhook-id already processed")
)

func newSWReceiver(t testing.TB, secret string) *swReceiver {
	t.Helper()
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		t.Fatal(err)
	}
	return &swReceiver{key: key, tolerance: 5 * time.Minute, now: time.Now, seen: map[string]bool{}, rejected: map[string]int{}}
}

func (r *swReceiver) verify(h http.Header, body []byte) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errMissingHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return errBadTimestamp
	}
	if d := r.now().Sub(time.Unix(sec, 0)); d > r.tolerance || d < -r.tolerance {
		return errStale
	}
	mac := hmac.New(sha256.New, r.key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	ok := false
	for _, s := range strings.Fields(sigs) {
		version, b64, found := strings.Cut(s, ",")
		if !found || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err == nil && hmac.Equal(got, want) {
			ok = true
		}
	}
	if !ok {
		return errSignature
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.seen[id] {
		return errReplay
	}
	r.seen[id] = true
	return nil
}

func (r *swReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 1<<20))
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	r.requests++
	fail := r.requests <= r.failFirst
	r.mu.Unlock()
	if fail {
		w.Header().Set("Retry-After", "0")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	if err := r.verify(req.Header, body); err != nil {
		r.mu.Lock()
		r.rejected[err.Error()]++
		r.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	r.mu.Lock()
	r.accepted = append(r.accepted, received{req.Header.Clone(), body})
	r.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (r *swReceiver) acceptedCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.accepted)
}

const testSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func TestSignWebhookMatchesStandardWebhooksVector(t *testing.T) {
	// The test vector of the reference implementation
	// (standard-webhooks/libraries/go/webhook_test.go, TestWebhookSign).
	key, _ := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	got := alerting.SignWebhook([][]byte{key}, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("signature %s, want %s", got, want)
	}
	// With two keys (rotation) both signatures are sent.
	other := bytes.Repeat([]byte{7}, 32)
	two := alerting.SignWebhook([][]byte{key, other}, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, []byte(`{"test": 2432232314}`))
	if !strings.HasPrefix(two, got+" v1,") {
		t.Fatalf("two keys: %s", two)
	}
}

func webhookConfig(url string) alerting.Config {
	cfg := rulesOnly()
	cfg.APIBaseURL = "https://ehrwatch.example.org/"
	w := &cfg.Outputs.Webhook
	w.Enabled, w.URL, w.Secret, w.Delivery = true, url, testSecret, fastDelivery(3)
	return cfg
}

func TestWebhookDeliversSignedAlerts(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))

	alerts := e.observe(t, finding("vip", "high", "U123", 1, at("09:10")))
	waitFor(t, "the webhook", func() bool { return recv.acceptedCount() == 1 })
	a := alerts[0]
	got := recv.accepted[0]
	if id := got.header.Get("webhook-id"); id != alerting.WebhookID(a.AlertID, a.Version) || strings.Contains(id, ".") {
		t.Errorf("webhook-id %q", id)
	}
	var p alerting.WebhookPayload
	if err := json.Unmarshal(got.body, &p); err != nil {
		t.Fatal(err)
	}
	if p.Type != alerting.WebhookAlertCreated || p.Data.AlertID != a.AlertID || p.Data.Version != a.Version ||
		p.Data.UserID != "U123" || p.Data.Severity != "high" || p.Data.FindingCount != 1 ||
		p.Data.URL != "https://ehrwatch.example.org/api/v1/alerts/"+a.AlertID || !p.Timestamp.Equal(a.LastSeen) {
		t.Errorf("payload: %+v", p)
	}
	if bytes.Contains(got.body, []byte("PAT-")) || p.Data.PatientID != "" || p.Data.Explanation != a.Summary {
		t.Errorf("payload carries patient data without include_patient_id: %s", got.body)
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("content type %q", ct)
	}

	// An update within the repeat interval is stored, not sent; an
	// escalation is sent as alert.updated with a new webhook-id.
	e.observe(t, finding("vip", "high", "U123", 2, at("09:20")))
	e.observe(t, finding("vip", "critical", "U123", 3, at("09:30")))
	waitFor(t, "the escalation", func() bool { return recv.acceptedCount() == 2 })
	var p2 alerting.WebhookPayload
	_ = json.Unmarshal(recv.accepted[1].body, &p2)
	if p2.Type != alerting.WebhookAlertUpdated || p2.Data.Change != alerting.ChangeEscalated || p2.Data.FindingCount != 3 ||
		recv.accepted[1].header.Get("webhook-id") == got.header.Get("webhook-id") {
		t.Errorf("escalation: %+v", p2)
	}
	// The receiver answers before the sender counts the success.
	waitFor(t, "sent = 2", func() bool {
		return metric(t, e.reg, "ehrwatch_alerting_notifications_sent_total", map[string]string{"output": "webhook"}) == 2
	})
	if n := metric(t, e.reg, "ehrwatch_alerting_notification_latency_seconds", map[string]string{"output": "webhook"}); n != 2 {
		t.Errorf("latency samples = %v", n)
	}
}

func TestWebhookIncludePatientID(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	cfg := webhookConfig(srv.URL)
	cfg.Outputs.Webhook.IncludePatientID = true
	cfg.Rules = append(cfg.Rules, alerting.RuleConfig{Name: "same_patient", GroupBy: []string{"patient"}, MinSeverity: "high", Window: 24 * time.Hour})
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U1", 5, at("09:10")))
	waitFor(t, "two webhooks", func() bool { return recv.acceptedCount() == 2 })
	var withPatient int
	for _, r := range recv.accepted {
		var p alerting.WebhookPayload
		_ = json.Unmarshal(r.body, &p)
		if !strings.Contains(p.Data.Explanation, patientID(5)) {
			t.Errorf("full explanation expected: %q", p.Data.Explanation)
		}
		if p.Data.PatientID == patientID(5) {
			withPatient++
		}
	}
	if withPatient != 1 {
		t.Errorf("patient_id set on %d payloads, want 1 (the patient-keyed alert)", withPatient)
	}
}

// TestStandardWebhooksReceiverRejects replays a real delivery against the
// receiver with one thing wrong at a time.
func TestStandardWebhooksReceiverRejects(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))
	e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the webhook", func() bool { return recv.acceptedCount() == 1 })
	orig := recv.accepted[0]
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(testSecret, "whsec_"))

	post := func(h http.Header, body []byte) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, srv.URL, bytes.NewReader(body))
		req.Header = h.Clone()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	resign := func(id string, ts int64, body []byte) http.Header {
		h := orig.header.Clone()
		h.Set("webhook-id", id)
		h.Set("webhook-timestamp", strconv.FormatInt(ts, 10))
		h.Set("webhook-signature", alerting.SignWebhook([][]byte{key}, id, ts, body))
		return h
	}
	cases := []struct {
		name   string
		header http.Header
		body   []byte
		want   error
	}{
		{"tampered body", orig.header, bytes.Replace(orig.body, []byte(`"severity":"high"`), []byte(`"severity":"info"`), 1), errSignature},
		{"tampered id", func() http.Header { h := orig.header.Clone(); h.Set("webhook-id", "other_v1"); return h }(), orig.body, errSignature},
		{"stale timestamp", resign("stale_v1", time.Now().Add(-6*time.Minute).Unix(), orig.body), orig.body, errStale},
		{"future timestamp", resign("future_v1", time.Now().Add(6*time.Minute).Unix(), orig.body), orig.body, errStale},
		{"replayed webhook-id", orig.header, orig.body, errReplay},
		{"missing signature", func() http.Header { h := orig.header.Clone(); h.Del("webhook-signature"); return h }(), orig.body, errMissingHeader},
		{"wrong version tag", func() http.Header {
			h := orig.header.Clone()
			h.Set("webhook-signature", strings.Replace(h.Get("webhook-signature"), "v1,", "v1a,", 1))
			return h
		}(), orig.body, errSignature},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := recv.verify(tc.header, tc.body); !errors.Is(err, tc.want) {
				t.Fatalf("verify: %v, want %v", err, tc.want)
			}
			recv.mu.Lock()
			before := recv.rejected[tc.want.Error()]
			recv.mu.Unlock()
			if code := post(tc.header, tc.body); code != http.StatusUnauthorized {
				t.Fatalf("HTTP %d, want 401", code)
			}
			recv.mu.Lock()
			after := recv.rejected[tc.want.Error()]
			recv.mu.Unlock()
			if after != before+1 {
				t.Fatalf("rejection %q not recorded", tc.want)
			}
		})
	}
	// A correctly re-signed message with a fresh id is accepted.
	if code := post(resign("fresh_v1", time.Now().Unix(), orig.body), orig.body); code != http.StatusNoContent {
		t.Fatalf("fresh message: HTTP %d", code)
	}
}

func TestWebhookRetriesWithSameIDAndFreshTimestamp(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	recv.failFirst = 2
	var mu sync.Mutex
	var seen []http.Header
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
		recv.ServeHTTP(w, r)
	}))
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))
	e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "delivery after two 503s", func() bool { return recv.acceptedCount() == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 {
		t.Fatalf("%d attempts, want 3", len(seen))
	}
	for _, h := range seen[1:] {
		if h.Get("webhook-id") != seen[0].Get("webhook-id") {
			t.Errorf("retry changed the idempotency key: %s vs %s", h.Get("webhook-id"), seen[0].Get("webhook-id"))
		}
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_notification_attempt_errors_total", map[string]string{"output": "webhook", "class": "http_5xx"}); n != 2 {
		t.Errorf("attempt errors = %v, want 2", n)
	}
}

func TestWebhookRejectedSignatureIsDeadLetteredWithoutRetry(t *testing.T) {
	recv := newSWReceiver(t, "whsec_"+base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))) // another secret
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))
	alerts := e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the dead letter", func() bool { return len(e.store.deadLetters()) == 1 })
	dl := e.store.deadLetters()[0]
	if dl.Output != "webhook" || dl.AlertID != alerts[0].AlertID || dl.Version != alerts[0].Version ||
		dl.Attempts != 1 || dl.ErrorClass != alerting.ClassHTTP4xx || dl.HTTPStatus != 401 || dl.FirstAttemptAt.IsZero() {
		t.Fatalf("dead letter: %+v", dl)
	}
	if recv.rejected[errSignature.Error()] != 1 {
		t.Errorf("receiver rejections: %v", recv.rejected)
	}
}

func TestWebhookSecretFromFileWithRotation(t *testing.T) {
	newKey := "whsec_" + base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{9}, 32))
	recv := newSWReceiver(t, testSecret) // the consumer still has the old key
	srv := httptest.NewServer(recv)
	defer srv.Close()
	cfg := webhookConfig(srv.URL)
	cfg.Outputs.Webhook.Secret = ""
	cfg.Outputs.Webhook.SecretFile = writeFile(t, "secret", newKey+"\n"+testSecret+"\n")
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the webhook", func() bool { return recv.acceptedCount() == 1 })
	if sig := recv.accepted[0].header.Get("webhook-signature"); strings.Count(sig, "v1,") != 2 {
		t.Errorf("want two signatures, got %q", sig)
	}
}

func writeFile(t testing.TB, name, content string) string {
	t.Helper()
	p := t.TempDir() + "/" + name
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestWebhookOverHTTPS(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewUnstartedServer(recv)
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted handshake below is expected
	srv.StartTLS()
	defer srv.Close()
	caFile := writeFile(t, "ca.pem", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})))

	cfg := webhookConfig(srv.URL)
	cfg.Outputs.Webhook.TLS = credentials.TLS{Enabled: true, CAFile: caFile}
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the webhook over https", func() bool { return recv.acceptedCount() == 1 })

	// Without the CA the certificate is not trusted: a tls dead letter.
	cfg = webhookConfig(srv.URL)
	cfg.Outputs.Webhook.Delivery = fastDelivery(2)
	e2 := newEnv(t, cfg)
	e2.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the tls dead letter", func() bool { return len(e2.store.deadLetters()) == 1 })
	if dl := e2.store.deadLetters()[0]; dl.ErrorClass != alerting.ClassTLS || dl.Attempts != 2 {
		t.Errorf("dead letter %+v", dl)
	}
}

// The age of the notified event is recorded per delivered notification,
// from the finding's ReceivedAt (the Kafka timestamp of its event), by
// output and detector; findings without one (read back from storage)
// record nothing.
func TestEventToAlertSeconds(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	e := newEnv(t, webhookConfig(srv.URL))

	f := finding("vip", "high", "U123", 1, at("09:10"))
	f.ReceivedAt = time.Now().Add(-90 * time.Second)
	e.observe(t, f)
	e.observe(t, finding("terminated", "critical", "U456", 2, at("09:10"))) // no ReceivedAt
	waitFor(t, "two deliveries", func() bool {
		return metric(t, e.reg, "ehrwatch_alerting_notifications_sent_total", map[string]string{"output": "webhook"}) == 2
	})
	name := "ehrwatch_event_to_alert_seconds"
	if n := metric(t, e.reg, name, map[string]string{"output": "webhook", "detector": "vip"}); n != 1 {
		t.Fatalf("%s{detector=vip} samples = %v, want 1", name, n)
	}
	if n := metric(t, e.reg, name, map[string]string{"output": "webhook", "detector": "terminated"}); n != 0 {
		t.Errorf("%s{detector=terminated} samples = %v, want 0 (no Kafka timestamp)", name, n)
	}
	mfs, _ := e.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == name {
			if s := mf.GetMetric()[0].GetHistogram().GetSampleSum(); s < 90 || s > 600 {
				t.Errorf("%s sum = %v, want the event's age (≥ 90 s)", name, s)
			}
		}
	}
}
