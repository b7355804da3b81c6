package ingest

import (
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestReadyzDetails: details are listed under the status and never change
// it.
func TestReadyzDetails(t *testing.T) {
	p := &Pipeline{health: NewHealth(nil), metrics: newMetrics(prometheus.NewRegistry())}
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		p.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
		body, _ := io.ReadAll(rec.Body)
		return rec.Code, string(body)
	}
	if code, body := get(); code != 200 || body != "ready\n" {
		t.Fatalf("%d %q", code, body)
	}
	detail := "2 names unmapped"
	p.SetDetail("vocabulary", func() string { return detail })
	if code, body := get(); code != 200 || body != "ready\nvocabulary: 2 names unmapped\n" {
		t.Errorf("with a detail: %d %q", code, body)
	}
	p.SetCondition("clickhouse", "unreachable")
	if code, body := get(); code != 503 || body != "not ready: clickhouse: unreachable\nvocabulary: 2 names unmapped\n" {
		t.Errorf("not ready with a detail: %d %q", code, body)
	}
	p.SetCondition("clickhouse", "")
	detail = ""
	if code, body := get(); code != 200 || body != "ready\n" {
		t.Errorf("empty detail: %d %q", code, body)
	}
}
