package console_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// memStore is an in-memory console.Store for the render benchmark only:
// it measures the console's own work (filter parsing, view building,
// templates), not ClickHouse. Its alerts are already in the queue's order.
type memStore struct {
	alerts []triage.Alert
}

func (m *memStore) ListAlerts(_ context.Context, f triage.AlertFilter) (triage.AlertPage, error) {
	n := min(f.Limit, len(m.alerts))
	return triage.AlertPage{Alerts: m.alerts[:n]}, nil
}

func (m *memStore) CountAlerts(context.Context, triage.AlertFilter) (triage.AlertCounts, error) {
	return triage.AlertCounts{New: len(m.alerts)}, nil
}

func (m *memStore) AlertDetail(context.Context, string) (triage.AlertDetail, error) {
	return triage.AlertDetail{}, triage.ErrNotFound
}

func (m *memStore) History(context.Context, string) ([]triage.State, error) { return nil, nil }

func (m *memStore) Update(context.Context, string, triage.Change, triage.Actor) (triage.State, error) {
	return triage.State{}, triage.ErrNotFound
}

func (m *memStore) Location(string) *time.Location { return time.UTC }

// benchAuth accepts every request as one analyst and audits nothing.
type benchAuth struct{}

func (benchAuth) Authenticate(*http.Request) (*api.Principal, error) {
	return &api.Principal{Name: "bench-analyst", Method: "token", Roles: []api.Role{api.RoleAnalyst}}, nil
}

func (benchAuth) Audit(context.Context, *http.Request, *api.Principal, api.AuditEvent) error {
	return nil
}

// BenchmarkQueueRender renders the queue with 10 000 open alerts
// server-side: all 10 000 rows (queue_limit 10000) and the default 500.
//
//	go test -run '^$' -bench QueueRender -benchmem ./pipeline/console/
func BenchmarkQueueRender(b *testing.B) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	sevs := []string{"critical", "high", "medium", "low"}
	st := &memStore{}
	for i := range 10000 {
		a := triage.Alert{AlertID: fmt.Sprintf("a%016x", i*7919), Rule: "default", Detector: "no_care_relationship",
			Severity: sevs[i*4/10000], Score: uint8(99 - i%100), FacilityID: "fac-nyc", UserID: fmt.Sprintf("u-%05d", i%900),
			PatientID: fmt.Sprintf("MRN-%07d", i), FirstSeen: now.Add(-time.Duration(i) * time.Minute), LastSeen: now,
			FindingCount: 2, Explanation: fmt.Sprintf("u-%05d opened a chart with no care relationship in 24 h", i%900)}
		a.Triage = triage.State{AlertID: a.AlertID, Status: triage.StatusNew}
		if i%3 == 0 {
			a.Triage.Status, a.Triage.Version, a.Triage.Assignee = triage.StatusTriaged, 1, "bench-analyst"
		}
		st.alerts = append(st.alerts, a)
	}
	for _, limit := range []int{10000, 500} {
		b.Run(fmt.Sprintf("rows=%d", limit), func(b *testing.B) {
			cfg := console.DefaultConfig()
			cfg.QueueLimit = limit
			con, err := console.New(cfg, console.Deps{Store: st, Auth: benchAuth{}, Log: zerolog.Nop(), Now: func() time.Time { return now }})
			if err != nil {
				b.Fatal(err)
			}
			h := con.Handler()
			var size int
			for b.Loop() {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest("GET", "/queue", nil))
				if rec.Code != http.StatusOK {
					b.Fatalf("status %d", rec.Code)
				}
				body, _ := io.ReadAll(rec.Body)
				size = len(body)
			}
			b.ReportMetric(float64(size)/1e6, "MB/page")
		})
	}
}

// TestQueueRowsEscapeHostileValues: the queue's hand-written rows escape
// every value (ids, explanations, assignees come from the EHR feed and
// from analysts).
func TestQueueRowsEscapeHostileValues(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	hostile := `"><script>alert(1)</script><a href='javascript:x' style="x" onclick="y`
	a := triage.Alert{AlertID: `id"><b onmouseover=1>`, Severity: `high"><i style="`, Detector: hostile, UserID: hostile,
		FacilityID: hostile, Explanation: hostile, FirstSeen: now.Add(-time.Hour)}
	a.Triage = triage.State{Status: triage.StatusTriaged, Assignee: hostile, Version: 3}
	con, err := console.New(console.DefaultConfig(), console.Deps{Store: &memStore{alerts: []triage.Alert{a}}, Auth: benchAuth{},
		Log: zerolog.Nop(), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	con.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/queue?detector="+url.QueryEscape(`x"><script>`), nil))
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("status %d", rec.Code)
	}
	if bad := inlineViolations(body); len(bad) > 0 {
		t.Errorf("hostile values broke out of their context: %v", bad)
	}
	for _, want := range []string{"&#34;&gt;&lt;script&gt;alert(1)&lt;/script&gt;", `href="/alerts/id%22%3E%3Cb%20onmouseover=1%3E"`,
		`action="/alerts/id%22%3E%3Cb%20onmouseover=1%3E/assign-to-me"`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "<script>alert") || strings.Contains(body, "<b onmouseover") {
		t.Errorf("unescaped markup in the page")
	}
}
