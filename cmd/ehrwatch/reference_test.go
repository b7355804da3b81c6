package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
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

// TestReferenceFromClickHouse: with source clickhouse the wiring reads the
// tables through pipeline/store (schemas rows only) and builds the
// detectors' index here: family tokens, the vocabulary table's mapping,
// employees and care relationships are in use; vocabulary rows naming an
// unknown category are left out and counted with the rows that fail
// validation (ehrwatch_reference_skipped_rows, logged by key, never by
// value); invalid allowlist rows are skipped by entry id.
func TestReferenceFromClickHouse(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		`INSERT INTO users (user_id, first_name, last_name, role, department, address_line, city, state, postal_code, status, terminated_at, patient_id, updated_at) VALUES
 ('u1', 'Ann', 'Lee', 'nurse', 'icu', '1 Oak St', 'Albany', 'NY', '12207', 'active', NULL, 'p9', '2026-01-01 00:00:00'),
 ('u2', 'Bo', 'Ng', 'clerk', 'registration', '', '', '', '', 'terminated', NULL, '', '2026-01-01 00:00:00'),
 ('u3', 'Cy', 'Po', 'physician', 'cardiology', '', '', '', '', 'active', NULL, '', '2026-01-01 00:00:00')`,
		`INSERT INTO patients (patient_id, first_name, last_name, address_line, city, state, postal_code, date_of_birth, vip, deceased_at, employee_user_id, updated_at) VALUES
 ('p1', 'Di', 'Lee', '1 Oak Street', 'Albany', 'NY', '12207-1234', '1980-05-17', true, NULL, '', '2026-01-01 00:00:00'),
 ('p9', 'Ann', 'Lee', '1 Oak St', 'Albany', 'NY', '12207', NULL, false, NULL, 'u1', '2026-01-01 00:00:00')`,
		`INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team, updated_at) VALUES
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', '2026-03-03 08:00:00', ['u1', 'u3'], '2026-01-01 00:00:00')`,
		`INSERT INTO vocabulary (kind, name, categories, note, deleted, updated_at) VALUES
 ('department', 'Pit Crew', ['emergency', 'critical_care'], '', false, '2026-01-01 00:00:00'),
 ('role', 'Wizard', ['magic'], 'SECRET-NOTE', false, '2026-01-01 00:00:00')`,
		`INSERT INTO allowlist (entry_id, user_id, patient_id, department, detector, reason, owner, expires_at, deleted, updated_at) VALUES
 ('a1', 'u3', '', '', 'vip', 'security desk', 'privacy-office', '2027-01-01 00:00:00', false, '2026-01-01 00:00:00'),
 ('a3', '', '', 'billing', 'deceased', 'no expiry', 'privacy-office', NULL, false, '2026-01-01 00:00:00')`,
	} {
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("store-test-hash-key-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := detectors.DefaultReferenceConfig()
	cfg.HashKeyFile = key
	var logs bytes.Buffer
	r, err := newReferenceData(cfg, nil, conn, prometheus.NewRegistry(), zerolog.New(&logs), func(string, string) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	x, ok := r.Reference.Load().(*detectors.ReferenceIndex)
	if !ok {
		t.Fatalf("reference in use is a %T", r.Reference.Load())
	}
	// Family tokens: p9 (the user's own chart, same address spelled the
	// same) and p1 ("Street", ZIP+4) normalise to u1's address.
	ut, _ := x.UserTokens("u1")
	pt, _ := x.PatientTokens("p1")
	if ut.Address.IsZero() || ut.Address != pt.Address || ut.LastName != pt.LastName {
		t.Error("u1 and p1 should share last-name and address tokens")
	}
	if m := x.Vocabulary().Department("PIT-CREW"); !m.Categories.Has(detectors.CategoryCriticalCare) || m.Source != detectors.VocabularyFromHospital {
		t.Errorf("the vocabulary table's mapping is not in use: %+v", m)
	}
	if m := x.Vocabulary().Role("Wizard"); m.Source == detectors.VocabularyFromHospital {
		t.Errorf("the row with an unknown category is in use: %+v", m)
	}
	if id, ok := x.EmployeeOf("p9"); !ok || id != "u1" {
		t.Errorf("EmployeeOf(p9) = %q, %v", id, ok)
	}
	ev := &schemas.AccessEvent{UserID: "u3", UserDepartment: "cardiology", PatientID: "p1", EventTime: time.Date(2026, 3, 2, 0, 0, 0, 0, time.UTC)}
	if c := x.Care(ev); !c.Explained || c.EncounterID != "e1" {
		t.Errorf("care for u3 on p1: %+v", c)
	}
	gauge := func(g *prometheus.GaugeVec, label string) float64 {
		var m dto.Metric
		if err := g.WithLabelValues(label).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetGauge().GetValue()
	}
	// u2 (terminated without terminated_at) and the Wizard row.
	if got := gauge(r.m.skipped, srcReference); got != 2 {
		t.Errorf("skipped reference rows %v, want 2 (%s)", got, logs.String())
	}
	if got := gauge(r.m.records, "users"); got != 2 {
		t.Errorf("users in use %v, want 2", got)
	}
	if got, want := gauge(r.m.skipped, srcAllowlist), 1.0; got != want || gauge(r.m.records, "allowlist") != 1 {
		t.Errorf("allowlist: %v skipped, %v in use; want 1, 1", got, gauge(r.m.records, "allowlist"))
	}
	for _, want := range []string{`"rows":"vocabulary: categories","count":1`, `"rows":"users: missing_field: terminated_at","count":1`, `"entry_id":"a3","field":"expires_at"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s: %s", want, logs.String())
		}
	}
	if strings.Contains(logs.String(), "SECRET") || strings.Contains(logs.String(), "magic") {
		t.Errorf("logs show row content: %s", logs.String())
	}
}

// TestReferenceIncrementalRefresh: with source clickhouse, refreshes
// between whole reads read only the rows written since the previous read
// and apply them to the index in use: changed, new and deleted users,
// patients and encounters (deleted = true) show, the result answers as a
// whole read of the same tables does, and every full_reload_every-th
// refresh reads whole again.
func TestReferenceIncrementalRefresh(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, conn, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	exec := func(q string) {
		t.Helper()
		if err := conn.Exec(ctx, q); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO users (user_id, last_name, role, department, status, patient_id, updated_at) VALUES
 ('u1', 'Lee', 'nurse', 'icu', 'active', '', '2026-01-01 00:00:00'), ('u2', 'Ng', 'clerk', 'billing', 'active', '', '2026-01-01 00:00:00')`)
	exec(`INSERT INTO patients (patient_id, last_name, vip, updated_at) VALUES
 ('p1', 'A', false, '2026-01-01 00:00:00'), ('p2', 'B', true, '2026-01-01 00:00:00'), ('p3', 'C', false, '2026-01-01 00:00:00')`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team, updated_at) VALUES
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', '2026-03-02 08:00:00', ['u1'], '2026-01-01 00:00:00'),
 ('e2', 'p2', 'cardiology', '2026-03-01 08:00:00', NULL, ['u2'], '2026-01-01 00:00:00')`)
	key := filepath.Join(t.TempDir(), "key")
	if err := os.WriteFile(key, []byte("store-test-hash-key-0123\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := detectors.DefaultReferenceConfig()
	cfg.HashKeyFile, cfg.FullReloadEvery = key, 3
	r, err := newReferenceData(cfg, nil, conn, prometheus.NewRegistry(), zerolog.Nop(), func(string, string) {})
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Load(ctx); err != nil {
		t.Fatal(err)
	}
	first := r.Reference.Index()

	time.Sleep(5 * time.Millisecond) // updated_at defaults to now64(3): after the read began
	exec(`INSERT INTO users (user_id, last_name, role, department, status, patient_id) VALUES ('u2', 'Ng', 'supervisor', 'icu', 'active', 'p3')`)
	exec(`INSERT INTO users (user_id, status, deleted) VALUES ('u1', 'active', true)`)
	exec(`INSERT INTO patients (patient_id, vip, deleted) VALUES ('p2', false, true)`)
	exec(`INSERT INTO patients (patient_id, last_name, vip, deceased_at, guarantor_user_id) VALUES ('p4', 'D', false, '2026-02-01 00:00:00', 'u2')`)
	exec(`INSERT INTO patients (patient_id, last_name, vip, next_of_kin_user_ids) VALUES ('p5', 'E', false, ['u9', 'u2'])`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team, deleted) VALUES
 ('e1', 'p1', 'icu', '2026-03-01 08:00:00', '2026-03-02 08:00:00', ['u1'], true)`)
	exec(`INSERT INTO encounters (encounter_id, patient_id, department, start_time, end_time, care_team) VALUES
 ('e3', 'p1', 'oncology', '2026-03-05 08:00:00', NULL, ['u2'])`)

	if err := r.refresh(ctx, srcReference); err != nil {
		t.Fatal(err)
	}
	x := r.Reference.Index()
	if x == first || x.Overlay() == 0 {
		t.Fatal("the refresh did not apply the changes incrementally")
	}
	if got := counter(t, r.m.loads, "changes"); got != 1 {
		t.Errorf("incremental loads %v, want 1", got)
	}
	if _, ok := first.Patient("p2"); !ok {
		t.Error("the index in use before the refresh was changed")
	}
	whole, err := indexClickHouseReference(ctx, conn, r.opts)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := referenceAnswers(x), referenceAnswers(whole.index); got != want {
		t.Errorf("incremental and whole reads differ:\n got %s\nwant %s", got, want)
	}
	for _, want := range []string{"user u1 false", "user u2 true supervisor icu", "patient p2 false", "patient p4 true true u2",
		"care u2 p1 true e3", "chart u2 p3 true", "stats {Users:1 Patients:4 Encounters:2"} {
		if !strings.Contains(referenceAnswers(x), want) {
			t.Errorf("answers lack %q:\n%s", want, referenceAnswers(x))
		}
	}

	// The family detector reads next of kin and guarantor from the
	// tables as from patients.ndjson.
	fam, err := detectors.NewFamily(detectors.DefaultFamilyConfig(), detectors.Env{Reference: r.Reference.Load})
	if err != nil {
		t.Fatal(err)
	}
	for patient, rel := range map[string]string{"p4": "guarantor", "p5": "next_of_kin"} {
		fs, err := fam.Detect(ctx, &schemas.AccessEvent{EventID: "ev-" + patient, EventTime: time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC),
			UserID: "u2", UserRole: "supervisor", UserDepartment: "icu", PatientID: patient, Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess})
		if err != nil {
			t.Fatal(err)
		}
		if len(fs) != 1 || fs[0].Evidence.Facts["relationship"] != rel {
			t.Errorf("u2 opening %s: %d findings (%v), want one with relationship %s", patient, len(fs), fs, rel)
		}
	}

	// The third refresh (full_reload_every: 3) reads whole.
	for i := 0; i < 2; i++ {
		if err := r.refresh(ctx, srcReference); err != nil {
			t.Fatal(err)
		}
	}
	if got, over := counter(t, r.m.loads, "whole"), r.Reference.Index().Overlay(); got != 2 || over != 0 {
		t.Errorf("whole loads %v, overlay %d after three refreshes; want 2, 0", got, over)
	}
	if got, want := referenceAnswers(r.Reference.Index()), referenceAnswers(whole.index); got != want {
		t.Errorf("whole reload differs:\n got %s\nwant %s", got, want)
	}

	// A signal (SIGHUP in Run) reads whole at once, between two
	// incremental refreshes.
	if err := r.refresh(ctx, srcReference); err != nil {
		t.Fatal(err)
	}
	if got := counter(t, r.m.loads, "changes"); got != 3 {
		t.Fatalf("incremental loads %v, want 3", got)
	}
	cfgCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.cfg.RefreshInterval = time.Hour
	sig := make(chan os.Signal, 1)
	done := make(chan struct{})
	go func() { r.run(cfgCtx, sig); close(done) }()
	sig <- syscall.SIGHUP
	deadline := time.Now().Add(30 * time.Second)
	for counter(t, r.m.loads, "whole") != 3 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	<-done
	if got := counter(t, r.m.loads, "whole"); got != 3 {
		t.Errorf("whole loads %v after the signal, want 3", got)
	}
}

func counter(t *testing.T, c *prometheus.CounterVec, label string) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.WithLabelValues(label).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// referenceAnswers renders what the index answers about the test's ids.
func referenceAnswers(x *detectors.ReferenceIndex) string {
	var b strings.Builder
	for _, id := range []string{"u1", "u2"} {
		u, ok := x.User(id)
		if ok {
			fmt.Fprintf(&b, "user %s %v %s %s\n", id, ok, u.Role, u.Department)
		} else {
			fmt.Fprintf(&b, "user %s %v\n", id, ok)
		}
		pid, ok := x.PatientOf(id)
		fmt.Fprintf(&b, "chart %s %s %v\n", id, pid, ok)
		for _, p := range []string{"p1", "p2", "p3", "p4"} {
			c := x.Care(&schemas.AccessEvent{UserID: id, PatientID: p, EventTime: time.Date(2026, 3, 5, 12, 0, 0, 0, time.UTC)})
			fmt.Fprintf(&b, "care %s %s %v %s\n", id, p, c.Explained, c.EncounterID)
		}
	}
	for _, id := range []string{"p1", "p2", "p3", "p4"} {
		p, ok := x.Patient(id)
		if ok {
			fmt.Fprintf(&b, "patient %s %v %v %s\n", id, ok, p.DeceasedAt != nil, p.GuarantorUserID)
		} else {
			fmt.Fprintf(&b, "patient %s %v\n", id, ok)
		}
		tok, _ := x.PatientTokens(id)
		uid, _ := x.EmployeeOf(id)
		fmt.Fprintf(&b, "tokens %s %x employee %s\n", id, tok, uid)
	}
	st := x.Stats()
	fmt.Fprintf(&b, "stats {Users:%d Patients:%d Encounters:%d}\n", st.Users, st.Patients, st.Encounters)
	fmt.Fprintf(&b, "names %v %v\n", x.ReferenceNames(schemas.VocabularyRole), x.ReferenceNames(schemas.VocabularyDepartment))
	return b.String()
}
