package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors"
)

// TestReferenceRefreshKeepsLastGoodData: a failed refresh keeps the data
// in use, is counted and logged by error class (never by content), and
// makes the process not ready only after reference.degraded_after
// consecutive failures; the next good load swaps the new data in and
// clears the condition.
func TestReferenceRefreshKeepsLastGoodData(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("users.ndjson", `{"user_id":"u1","first_name":"A","last_name":"Lee","role":"nurse","department":"icu","address":{},"status":"active"}`+"\n")
	write("patients.ndjson", `{"patient_id":"p1","first_name":"B","last_name":"Lee","address":{},"vip":true}`+"\n")
	write("encounters.ndjson", "")
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("0123456789abcdef0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := detectors.DefaultReferenceConfig()
	cfg.Source, cfg.Dir, cfg.HashKeyFile, cfg.DegradedAfter = detectors.ReferenceFromFiles, dir, key, 3

	var mu sync.Mutex
	conditions := map[string]string{}
	setCondition := func(c, reason string) {
		mu.Lock()
		defer mu.Unlock()
		if reason == "" {
			delete(conditions, c)
		} else {
			conditions[c] = reason
		}
	}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	static := []detectors.AllowlistEntry{{UserID: "u1", Detector: "vip", Reason: "desk", Owner: "po", ExpiresAt: time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)}}
	r, err := newReferenceData(cfg, static, nil, reg, zerolog.New(&logs), setCondition)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Reference.Load().Patient("p1"); !ok || r.Allowlist.Load().Len() != 1 {
		t.Fatal("first load: p1 or the allowlist entry missing")
	}

	// A patient file the loader rejects (a line with a secret in it).
	write("patients.ndjson", `{"patient_id":"p2","first_name":"SECRET-NAME","vip":"yes"}`+"\n")
	for i := 1; i <= 3; i++ {
		if err := r.refresh(ctx, srcReference); err == nil {
			t.Fatalf("refresh %d accepted a bad file", i)
		}
		mu.Lock()
		_, degraded := conditions[srcReference]
		mu.Unlock()
		if degraded != (i >= 3) {
			t.Errorf("after %d failures: degraded=%v, want %v", i, degraded, i >= 3)
		}
		if _, ok := r.Reference.Load().Patient("p1"); !ok {
			t.Fatalf("refresh %d dropped the last good data", i)
		}
	}
	var m dto.Metric
	if err := r.m.refreshes.WithLabelValues(srcReference, "error").Write(&m); err != nil || m.GetCounter().GetValue() != 3 {
		got := m.GetCounter().GetValue()
		t.Errorf("error count %v, want 3", got)
	}
	if !strings.Contains(logs.String(), `"error_class":"invalid_data_wrong_type"`) || strings.Contains(logs.String(), "SECRET") {
		t.Errorf("logs: %s", logs.String())
	}

	write("patients.ndjson", `{"patient_id":"p2","first_name":"C","last_name":"Fox","address":{},"vip":false}`+"\n")
	if err := r.refresh(ctx, srcReference); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.Reference.Load().Patient("p2"); !ok {
		t.Error("the good load was not swapped in")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(conditions) != 0 {
		t.Errorf("conditions after recovery: %v", conditions)
	}
}
