package alerting_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
)

// hangingServer accepts requests and holds them until release is closed.
type hangingServer struct {
	srv     *httptest.Server
	started chan struct{} // one value per request that reached the handler
	release chan struct{}
}

func newHangingServer(t testing.TB) *hangingServer {
	h := &hangingServer{started: make(chan struct{}, 100), release: make(chan struct{})}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		h.started <- struct{}{}
		select {
		case <-h.release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(func() {
		select {
		case <-h.release:
		default:
			close(h.release)
		}
		h.srv.Close()
	})
	return h
}

// TestObserveNeverWaitsForAHangingReceiver shows by structure that
// delivery cannot block ingestion: while the only worker is stuck in a
// request the receiver never answers, Observe keeps returning, the bounded
// queue drops its oldest alerts, and every dropped alert is dead-lettered.
func TestObserveNeverWaitsForAHangingReceiver(t *testing.T) {
	hang := newHangingServer(t)
	cfg := webhookConfig(hang.srv.URL)
	cfg.Outputs.Webhook.Delivery.QueueSize = 3
	cfg.Outputs.Webhook.Delivery.Timeout = time.Hour // the receiver hangs, not times out
	e := newEnv(t, cfg)

	e.observe(t, finding("vip", "high", "U0", 1, at("09:00")))
	<-hang.started // the worker is now inside a request that never ends

	const more = 20
	var ids []string
	for i := 1; i <= more; i++ {
		a := e.observe(t, finding("vip", "high", "U"+strconv.Itoa(i), 1, at("09:00")))
		ids = append(ids, a[0].AlertID)
	}
	// Every Observe above returned with the worker stuck; the queue kept
	// the newest 3 and dropped the 17 before them.
	if n := metric(t, e.reg, "ehrwatch_alerting_notifications_queued", map[string]string{"output": "webhook"}); n != 3 {
		t.Errorf("queued = %v, want 3", n)
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_notifications_dropped_total", map[string]string{"output": "webhook", "reason": "queue_full"}); n != more-3 {
		t.Errorf("dropped = %v, want %d", n, more-3)
	}
	waitFor(t, "the dropped alerts' dead letters", func() bool { return len(e.store.deadLetters()) == more-3 })
	for i, dl := range e.store.deadLetters() {
		if dl.AlertID != ids[i] || dl.ErrorClass != alerting.ClassQueueFull || dl.Attempts != 0 || !dl.FirstAttemptAt.IsZero() {
			t.Errorf("dead letter %d: %+v (want alert %s dropped oldest-first)", i, dl, ids[i])
		}
	}

	// Shutdown with a deadline: the in-flight request is abandoned and the
	// three queued alerts are dead-lettered as shutdown.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.mgr.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	dls := e.store.deadLetters()
	if len(dls) != more+1 {
		t.Fatalf("%d dead letters after Close, want %d (every alert)", len(dls), more+1)
	}
	shutdown := 0
	for _, dl := range dls[more-3:] {
		if dl.ErrorClass == alerting.ClassShutdown {
			shutdown++
		}
	}
	if shutdown != 4 {
		t.Errorf("%d shutdown dead letters, want 4 (1 in flight + 3 queued): %+v", shutdown, dls[more-3:])
	}
	if _, err := e.mgr.Observe(context.Background(), nil); err != alerting.ErrClosed {
		t.Errorf("Observe after Close: %v", err)
	}
	if err := e.mgr.Close(context.Background()); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestDropNewestKeepsTheQueuedAlerts(t *testing.T) {
	hang := newHangingServer(t)
	cfg := webhookConfig(hang.srv.URL)
	cfg.Outputs.Webhook.Delivery.QueueSize = 2
	cfg.Outputs.Webhook.Delivery.WhenFull = alerting.DropNewest
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U0", 1, at("09:00")))
	<-hang.started
	var ids []string
	for i := 1; i <= 5; i++ {
		ids = append(ids, e.observe(t, finding("vip", "high", "U"+strconv.Itoa(i), 1, at("09:00")))[0].AlertID)
	}
	waitFor(t, "dead letters", func() bool { return len(e.store.deadLetters()) == 3 })
	for i, dl := range e.store.deadLetters() {
		if dl.AlertID != ids[2+i] {
			t.Errorf("dead letter %d is %s, want the newest ones (%v)", i, dl.AlertID, ids[2:])
		}
	}
}

func TestQueuedAlertIsReplacedByItsNewerVersion(t *testing.T) {
	hang := newHangingServer(t)
	var mu sync.Mutex
	var bodies []string
	hang.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		mu.Unlock()
		hang.started <- struct{}{}
		<-hang.release
	})
	cfg := webhookConfig(hang.srv.URL)
	cfg.Rules[0].RepeatInterval = time.Minute
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "BLOCKER", 1, at("09:00")))
	<-hang.started
	// U1's alert is raised, then re-notified twice while it waits.
	e.observe(t, finding("vip", "high", "U1", 1, at("09:00")))
	e.observe(t, finding("vip", "high", "U1", 2, at("09:05")))
	last := e.observe(t, finding("vip", "high", "U1", 3, at("09:10")))
	if n := metric(t, e.reg, "ehrwatch_alerting_notifications_queued", map[string]string{"output": "webhook"}); n != 1 {
		t.Fatalf("queued = %v, want 1 (one slot per alert)", n)
	}
	close(hang.release)
	waitFor(t, "two deliveries", func() bool { mu.Lock(); defer mu.Unlock(); return len(bodies) == 2 })
	var p alerting.WebhookPayload
	mu.Lock()
	_ = json.Unmarshal([]byte(bodies[1]), &p)
	mu.Unlock()
	if p.Data.Version != last[0].Version || p.Data.FindingCount != 3 || p.Type != alerting.WebhookAlertCreated {
		t.Errorf("delivered %+v, want the latest version, still typed alert.created", p)
	}
}

func TestDownReceiverEndsInDeadLetters(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens here now

	cfg := rulesOnly()
	cfg.Outputs.Webhook.Enabled, cfg.Outputs.Webhook.URL, cfg.Outputs.Webhook.Secret = true, "http://"+addr+"/hook", testSecret
	cfg.Outputs.Webhook.Delivery = fastDelivery(3)
	cfg.Outputs.Syslog.Enabled, cfg.Outputs.Syslog.Address = true, addr
	cfg.Outputs.Syslog.Delivery = fastDelivery(2)
	e := newEnv(t, cfg)
	alerts := e.observe(t, finding("vip", "high", "U1", 1, at("09:00")), finding("family", "high", "U1", 1, at("09:00")))
	waitFor(t, "dead letters", func() bool { return len(e.store.deadLetters()) == 4 })
	got := map[string][]alerting.DeliveryFailure{}
	for _, dl := range e.store.deadLetters() {
		got[dl.Output] = append(got[dl.Output], dl)
	}
	for out, attempts := range map[string]uint32{"webhook": 3, "syslog": 2} {
		if len(got[out]) != 2 {
			t.Fatalf("%s: %d dead letters", out, len(got[out]))
		}
		for _, dl := range got[out] {
			if dl.ErrorClass != alerting.ClassRefused || dl.Attempts != attempts || dl.HTTPStatus != 0 || dl.FirstAttemptAt.IsZero() || dl.FailedAt.Before(dl.FirstAttemptAt) {
				t.Errorf("%s dead letter: %+v", out, dl)
			}
		}
	}
	ids := []string{got["webhook"][0].AlertID, got["webhook"][1].AlertID}
	sort.Strings(ids)
	want := []string{alerts[0].AlertID, alerts[1].AlertID}
	sort.Strings(want)
	if ids[0] != want[0] || ids[1] != want[1] {
		t.Errorf("dead-lettered %v, want %v", ids, want)
	}
}

func TestRetryAfterAndPermanentStatuses(t *testing.T) {
	for _, tc := range []struct {
		status   int
		class    string
		attempts uint32
	}{
		{http.StatusGone, alerting.ClassHTTP410, 1},
		{http.StatusMovedPermanently, alerting.ClassHTTP3xx, 1},
		{http.StatusBadRequest, alerting.ClassHTTP4xx, 1},
		{http.StatusTooManyRequests, alerting.ClassHTTP429, 3},
		{http.StatusRequestTimeout, alerting.ClassHTTP408, 3},
		{http.StatusBadGateway, alerting.ClassHTTP5xx, 3},
	} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Location", "https://elsewhere.example.org/")
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(tc.status)
			}))
			defer srv.Close()
			e := newEnv(t, webhookConfig(srv.URL))
			e.observe(t, finding("vip", "high", "U1", 1, at("09:00")))
			waitFor(t, "the dead letter", func() bool { return len(e.store.deadLetters()) == 1 })
			dl := e.store.deadLetters()[0]
			if dl.ErrorClass != tc.class || dl.Attempts != tc.attempts || int(dl.HTTPStatus) != tc.status {
				t.Errorf("dead letter %+v, want class %s after %d attempts", dl, tc.class, tc.attempts)
			}
		})
	}
}

func TestOutputMinSeverity(t *testing.T) {
	recv := newSWReceiver(t, testSecret)
	srv := httptest.NewServer(recv)
	defer srv.Close()
	cfg := webhookConfig(srv.URL)
	cfg.Rules[0].MinSeverity = "low"
	cfg.Outputs.Webhook.MinSeverity = "high"
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "medium", "U1", 1, at("09:00")), finding("vip", "critical", "U2", 1, at("09:00")))
	waitFor(t, "one webhook", func() bool { return recv.acceptedCount() == 1 })
	_ = e.mgr.Close(context.Background())
	if recv.acceptedCount() != 1 || !strings.Contains(string(recv.accepted[0].body), `"user_id":"U2"`) {
		t.Errorf("sent %d, want only the critical one", recv.acceptedCount())
	}
}

func TestSlackMessage(t *testing.T) {
	var mu sync.Mutex
	var msgs []map[string]any
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m map[string]any
		_ = json.NewDecoder(r.Body).Decode(&m)
		mu.Lock()
		msgs = append(msgs, m)
		mu.Unlock()
		_, _ = w.Write([]byte("ok"))
	}))
	defer srv.Close()
	cfg := rulesOnly()
	cfg.APIBaseURL = "https://ehrwatch.example.org"
	s := &cfg.Outputs.Slack
	s.Enabled, s.URLFile, s.Blocks, s.Delivery = true, writeFile(t, "slack_url", srv.URL+"/services/T000/B000/XXXX\n"), true, fastDelivery(2)
	e := newEnv(t, cfg)
	f := finding("vip", "critical", "U<1>&", 4, at("09:00"))
	a := e.observe(t, f)[0]
	waitFor(t, "the slack post", func() bool { mu.Lock(); defer mu.Unlock(); return len(msgs) == 1 })
	mu.Lock()
	defer mu.Unlock()
	text, _ := msgs[0]["text"].(string)
	if !strings.HasPrefix(text, "ehrwatch CRITICAL vip (user_detector) alert: user U&lt;1&gt;&amp;, 1 finding\n") {
		t.Errorf("text %q", text)
	}
	if !strings.Contains(text, "<https://ehrwatch.example.org/api/v1/alerts/"+a.AlertID+"|") {
		t.Errorf("no link in %q", text)
	}
	for _, r := range text {
		if r > unicode.MaxLatin1 && r != '…' || r == ':' && strings.Contains(text, ":rotating_light:") {
			t.Errorf("non-plain character %q in %q", r, text)
		}
	}
	if strings.Contains(text, "PAT-") {
		t.Errorf("patient id in slack text: %q", text)
	}
	blocks, _ := msgs[0]["blocks"].([]any)
	if len(blocks) != 3 {
		t.Errorf("blocks: %v", msgs[0]["blocks"])
	}
}
