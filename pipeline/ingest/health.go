package ingest

import (
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Health is the process's readiness: the conditions that make it not
// ready, each with a key (the component: kafka, clickhouse, reference…) and
// a reason; it is ready when there are none. The process creates it before
// anything that reports to it (so /readyz can say what start-up waits for)
// and hands it to the pipeline in Deps.Health. The ehrwatch_ready gauge
// follows it.
type Health struct {
	mu      sync.Mutex
	reasons map[string]string
	details map[string]func() string
	ready   prometheus.Gauge
}

// NewHealth returns a Health with no conditions whose ehrwatch_ready gauge
// is registered with reg (nil: not registered).
func NewHealth(reg prometheus.Registerer) *Health {
	h := &Health{reasons: map[string]string{}, details: map[string]func() string{},
		ready: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ehrwatch_ready", Help: "1 when /readyz reports ready."})}
	h.ready.Set(1)
	if reg != nil {
		reg.MustRegister(h.ready)
	}
	return h
}

func (h *Health) onChange(ready bool) {
	if ready {
		h.ready.Set(1)
	} else {
		h.ready.Set(0)
	}
}

// SetCondition reports a condition of component on /readyz: a non-empty
// reason makes the process not ready, with component and reason in the
// answer; an empty reason clears it. Reasons must not carry patient data.
func (h *Health) SetCondition(component, reason string) {
	if reason == "" {
		h.clear(component)
		return
	}
	h.set(component, reason)
}

// SetDetail registers fn as a readiness detail of component: /readyz
// writes "component: " + fn() on a line after its status whenever fn
// returns something, without changing the status (a 200 stays a 200).
// fn runs on every /readyz request and must be quick and free of patient
// data. A nil fn removes the detail.
func (h *Health) SetDetail(component string, fn func() string) { h.setDetail(component, fn) }

// Ready reports whether there are no conditions; when there are, reason
// lists them.
func (h *Health) Ready() (ready bool, reason string) { return h.status() }

// setDetail registers (fn non-nil) or removes a detail: information that
// /readyz shows without affecting readiness.
func (h *Health) setDetail(key string, fn func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fn == nil {
		delete(h.details, key)
		return
	}
	h.details[key] = fn
}

// detailLines evaluates the details, sorted by key; empty ones are left out.
func (h *Health) detailLines() []string {
	h.mu.Lock()
	keys := make([]string, 0, len(h.details))
	fns := make(map[string]func() string, len(h.details))
	for k, fn := range h.details {
		keys = append(keys, k)
		fns[k] = fn
	}
	h.mu.Unlock()
	slices.Sort(keys)
	var out []string
	for _, k := range keys {
		if d := fns[k](); d != "" {
			out = append(out, k+": "+d)
		}
	}
	return out
}

func (h *Health) set(key, reason string) {
	h.mu.Lock()
	h.reasons[key] = reason
	h.mu.Unlock()
	h.onChange(false)
}

func (h *Health) clear(key string) {
	h.mu.Lock()
	delete(h.reasons, key)
	ready := len(h.reasons) == 0
	h.mu.Unlock()
	h.onChange(ready)
}

// status reports readiness and, when not ready, every reason, sorted.
func (h *Health) status() (bool, string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.reasons) == 0 {
		return true, ""
	}
	keys := make([]string, 0, len(h.reasons))
	for k := range h.reasons {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + ": " + h.reasons[k]
	}
	return false, strings.Join(parts, "; ")
}

// Handler serves the pipeline's operational endpoints (OpsHandler with
// its Health and registry).
func (p *Pipeline) Handler() http.Handler { return OpsHandler(p.health, p.metrics.reg) }

// OpsHandler serves a process's operational endpoints:
//
//	/metrics  Prometheus metrics gathered from g
//	/healthz  200 while the process runs
//	/readyz   200 "ready", or 503 with the reasons it is not; then one
//	          line per detail (SetDetail), which never affects the status
func OpsHandler(h *Health, g prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(g, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ready, reason := h.Ready()
		details := h.detailLines()
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + reason + "\n"))
		} else {
			_, _ = w.Write([]byte("ready\n"))
		}
		for _, d := range details {
			_, _ = w.Write([]byte(d + "\n"))
		}
	})
	return mux
}
