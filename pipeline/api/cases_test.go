package api

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// TestCasesAndAllowlistAPI: the investigation and allowlist endpoints are
// privacy officer and admin only (an analyst gets 403), work end to end on
// the real engine, conflicts show the missed change, and the reads and
// allowlist changes that show patient data are in api_audit.
func TestCasesAndAllowlistAPI(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()

	// Roles: every endpoint refuses an analyst and a caller without a role.
	probes := []struct{ method, path, body string }{
		{"GET", "/api/v1/cases", ""},
		{"POST", "/api/v1/cases", `{"title":"x","alert_ids":["al-1"]}`},
		{"GET", "/api/v1/cases/case-x", ""},
		{"PATCH", "/api/v1/cases/case-x", `{"expected_version":1,"note":"n"}`},
		{"POST", "/api/v1/cases/case-x/alerts", `{"expected_version":1,"alert_ids":["al-2"]}`},
		{"DELETE", "/api/v1/cases/case-x/alerts/al-1?expected_version=1", ""},
		{"GET", "/api/v1/cases/case-x/history", ""},
		{"GET", "/api/v1/allowlist", ""},
		{"POST", "/api/v1/allowlist", `{"user_id":"u-bob","detector":"*","reason":"r","owner":"o","expires_at":"2099-01-01"}`},
		{"POST", "/api/v1/allowlist/allow-x/expire", `{"expected_updated_at":"2026-01-01T00:00:00Z"}`},
		{"POST", "/api/v1/allowlist/allow-x/remove", `{"expected_updated_at":"2026-01-01T00:00:00Z"}`},
		{"GET", "/api/v1/allowlist/history", ""},
	}
	for _, p := range probes {
		for name, tok := range map[string]string{"analyst": tokAnalyst, "noRole": e.tokNoRole} {
			if r := e.do(p.method, p.path, tok, p.body); r.status != 403 {
				t.Errorf("%s %s as %s: %d, want 403 (%s)", p.method, p.path, name, r.status, r.body)
			}
		}
		if r := e.do(p.method, p.path, "", p.body); r.status != 401 {
			t.Errorf("%s %s anonymous: %d, want 401", p.method, p.path, r.status)
		}
	}

	// A case: create, add, conflict, close.
	r := e.do("POST", "/api/v1/cases", tokPO, `{"title":"Bob, oncology, March","alert_ids":["al-1","al-3"]}`)
	if r.status != 201 {
		t.Fatalf("create: %d %s", r.status, r.body)
	}
	c := r.json(t)
	id := c["case_id"].(string)
	if r.header.Get("Location") != "/api/v1/cases/"+id || c["version"].(float64) != 1 || c["status"] != "open" {
		t.Fatalf("created: %v %v", r.header, c)
	}
	if r := e.do("POST", "/api/v1/cases/"+id+"/alerts", tokAdmin, `{"expected_version":1,"alert_ids":["al-4"],"note":"note-secret-8841"}`); r.status != 200 {
		t.Fatalf("add: %d %s", r.status, r.body)
	}
	r = e.do("PATCH", "/api/v1/cases/"+id, e.tokPOJWT, `{"expected_version":1,"status":"investigating"}`)
	if r.status != 409 {
		t.Fatalf("stale patch: %d %s", r.status, r.body)
	}
	var conflict struct {
		Error          string `json:"error"`
		CurrentVersion int    `json:"current_version"`
		Changes        []struct {
			Action    string   `json:"action"`
			ChangedBy string   `json:"changed_by"`
			Added     []string `json:"added"`
		} `json:"changes"`
	}
	if err := json.Unmarshal(r.body, &conflict); err != nil || conflict.CurrentVersion != 2 || len(conflict.Changes) != 1 ||
		conflict.Changes[0].ChangedBy != "ops-admin" || conflict.Changes[0].Action != "alerts_added" || conflict.Changes[0].Added[0] != "al-4" {
		t.Fatalf("conflict body: %s (%v)", r.body, err)
	}
	if r := e.do("PATCH", "/api/v1/cases/"+id, tokPO, `{"expected_version":2,"status":"closed"}`); r.status != 400 || r.json(t)["field"] != "outcome" {
		t.Fatalf("close without outcome: %d %s", r.status, r.body)
	}
	if r := e.do("DELETE", "/api/v1/cases/"+id+"/alerts/al-3?expected_version=2", tokPO, ""); r.status != 200 {
		t.Fatalf("remove: %d %s", r.status, r.body)
	}
	if r := e.do("PATCH", "/api/v1/cases/"+id, tokPO, `{"expected_version":3,"status":"closed","outcome":"user_educated"}`); r.status != 200 {
		t.Fatalf("close: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/api/v1/cases/case-nope", tokPO, ""); r.status != 404 || !strings.Contains(string(r.body), "case not found") {
		t.Fatalf("unknown case: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/api/v1/cases/"+id, tokPO, "", "X-Request-Id", "rid-case-detail-1")
	var detail CaseDetail
	if err := json.Unmarshal(r.body, &detail); err != nil || r.status != 200 || len(detail.Alerts) != 2 || detail.Outcome != "user_educated" {
		t.Fatalf("detail: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/api/v1/cases/"+id+"/history", tokPO, "")
	if r.status != 200 || strings.Count(string(r.body), `"version"`) != 4 {
		t.Fatalf("history: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/api/v1/cases?alert_id=al-4&status=closed", tokAdmin, "")
	if r.status != 200 || !strings.Contains(string(r.body), id) {
		t.Fatalf("list by alert: %d %s", r.status, r.body)
	}
	if r := e.do("GET", "/api/v1/cases?alert_id=al-3", tokAdmin, ""); strings.Contains(string(r.body), id) {
		t.Fatalf("removed alert still lists the case: %s", r.body)
	}

	// The allowlist.
	exp := time.Now().Add(72 * time.Hour).UTC().Format(time.RFC3339)
	r = e.do("POST", "/api/v1/allowlist", tokPO, fmt.Sprintf(`{"user_id":"u-bob","patient_id":%q,"detector":"break_glass",
		"reason":"covering oncology nights","owner":"privacy office","expires_at":%q}`, tt.PatientMain, exp), "X-Request-Id", "rid-allow-add-01")
	if r.status != 201 {
		t.Fatalf("add entry: %d %s", r.status, r.body)
	}
	entry := r.json(t)
	eid, upd := entry["entry_id"].(string), entry["updated_at"].(string)
	if r := e.do("POST", "/api/v1/allowlist", tokPO, `{"user_id":"u-bob","detector":"*","reason":"r","owner":"o","expires_at":"2020-01-01"}`); r.status != 400 ||
		r.json(t)["field"] != "expires_at" {
		t.Fatalf("past expiry: %d %s", r.status, r.body)
	}
	if r := e.do("POST", "/api/v1/allowlist/"+eid+"/expire", tokAdmin, fmt.Sprintf(`{"expected_updated_at":%q,"note":"rota ended"}`, upd),
		"X-Request-Id", "rid-allow-exp-01"); r.status != 200 || r.json(t)["state"] != "expired" {
		t.Fatalf("expire: %d %s", r.status, r.body)
	}
	r = e.do("POST", "/api/v1/allowlist/"+eid+"/remove", tokPO, fmt.Sprintf(`{"expected_updated_at":%q}`, upd))
	if r.status != 409 || !strings.Contains(string(r.body), `"change":"expired"`) || !strings.Contains(string(r.body), "ops-admin") {
		t.Fatalf("stale remove: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/api/v1/allowlist", tokPO, "", "X-Request-Id", "rid-allow-list-1")
	if r.status != 200 || !strings.Contains(string(r.body), eid) {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	r = e.do("GET", "/api/v1/allowlist/history?entry_id="+eid, tokPO, "")
	if r.status != 200 || strings.Count(string(r.body), `"change"`) != 2 {
		t.Fatalf("allowlist history: %d %s", r.status, r.body)
	}

	// The audit rows.
	rows := readAudit(t, e.conn)
	byRID := map[string]auditRow{}
	for _, a := range rows {
		byRID[a.ClientRequestID] = a
	}
	if a := byRID["rid-case-detail-1"]; a.Endpoint != "GET /api/v1/cases/{id}" || a.Rows != 2 || len(a.Patients) != 1 || a.Patients[0] != tt.PatientMain || !strings.Contains(a.Params, id) {
		t.Errorf("case detail audit: %+v", a)
	}
	if a := byRID["rid-allow-add-01"]; a.Status != 200 || a.PatientID != tt.PatientMain || a.UserID != "u-bob" || a.Principal != "privacy-desk" {
		t.Errorf("allowlist add audit: %+v", a)
	}
	if a := byRID["rid-allow-exp-01"]; a.Role != "admin" || a.PatientID != tt.PatientMain || !strings.Contains(a.Params, eid) {
		t.Errorf("allowlist expire audit: %+v", a)
	}
	if a := byRID["rid-allow-list-1"]; a.Rows != 1 || len(a.Patients) != 1 {
		t.Errorf("allowlist list audit: %+v", a)
	}
	var denied uint64
	if err := e.conn.QueryRow(ctx, `SELECT count() FROM api_audit WHERE status = 403 AND role = 'analyst' AND endpoint LIKE '%allowlist%'`).Scan(&denied); err != nil || denied < 5 {
		t.Errorf("refused allowlist calls audited: %d %v", denied, err)
	}
	e.assertNoPHIInLogs()
}
