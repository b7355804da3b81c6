package pipeline

import (
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// health collects the conditions that make the pipeline not ready. Each
// condition has a key (the component) and a reason; the pipeline is ready
// when there are none.
type health struct {
	mu       sync.Mutex
	reasons  map[string]string
	details  map[string]func() string
	onChange func(ready bool)
}

func newHealth(onChange func(bool)) *health {
	return &health{reasons: map[string]string{}, details: map[string]func() string{}, onChange: onChange}
}

// setDetail registers (fn non-nil) or removes a detail: information that
// /readyz shows without affecting readiness.
func (h *health) setDetail(key string, fn func() string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if fn == nil {
		delete(h.details, key)
		return
	}
	h.details[key] = fn
}

// detailLines evaluates the details, sorted by key; empty ones are left out.
func (h *health) detailLines() []string {
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

func (h *health) set(key, reason string) {
	h.mu.Lock()
	h.reasons[key] = reason
	h.mu.Unlock()
	h.onChange(false)
}

func (h *health) clear(key string) {
	h.mu.Lock()
	delete(h.reasons, key)
	ready := len(h.reasons) == 0
	h.mu.Unlock()
	h.onChange(ready)
}

// status reports readiness and, when not ready, every reason, sorted.
func (h *health) status() (bool, string) {
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

// Handler serves the pipeline's operational endpoints:
//
//	/metrics  Prometheus metrics (the pipeline's own registry)
//	/healthz  200 while the process runs
//	/readyz   200 "ready", or 503 with the reasons it is not; then one
//	          line per detail (SetDetail), which never affects the status
func (p *Pipeline) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(p.metrics.reg, promhttp.HandlerOpts{Registry: p.metrics.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		ready, reason := p.Ready()
		details := p.health.detailLines()
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
