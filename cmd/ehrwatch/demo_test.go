package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// shortDemo is the smallest hospital the generator staffs (two facilities
// of 60 accounts) over nine days, so volume and off-hours incidents land on
// day 8, after the detectors' baselines are warm.
func shortDemo() demoOptions {
	return demoOptions{
		days: 9, warmup: 8, users: 120, seed: 20261026, partitions: 3,
		color: "never", timeout: 2 * time.Minute, logLevel: "warn",
	}
}

func TestDemoEndToEnd(t *testing.T) {
	o := shortDemo()
	o.out = t.TempDir()
	var stdout, stderr bytes.Buffer
	res, err := demo(context.Background(), o, &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\nstdout:\n%s\nstderr:\n%s", err, stdout.String(), stderr.String())
	}
	total := int64(res.stream.events)
	if total < 10000 {
		t.Fatalf("only %d events: the short hospital is not what this test expects", total)
	}
	if res.stats.Consumed < total || res.stats.Stored != total || res.stats.DeadLettered != 0 {
		t.Errorf("stats %+v, want every one of %d events consumed and stored", res.stats, total)
	}
	kinds := 0
	for _, r := range res.score.Rows {
		if r.Injected == 0 {
			continue
		}
		kinds++
		if r.Detected != r.Injected {
			t.Errorf("%s: detected %d of %d injected incidents (missed %v)", r.Detector, r.Detected, r.Injected, r.Missed)
		}
	}
	if kinds != 10 {
		t.Errorf("incidents of %d detector kinds injected, want all 10", kinds)
	}
	if res.alerts == 0 {
		t.Error("no alerts raised")
	}
	out := stdout.String()
	for _, want := range []string{"Detection against the ground truth", "precision", "recall", "per 1 000 user-days", "[injected "} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q", want)
		}
	}
	if strings.Contains(out, "\x1b[") || strings.Contains(stderr.String(), "\x1b[") {
		t.Errorf("ANSI escapes written with --color never:\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "consumed: ") {
		t.Errorf("stderr lacks the final progress line:\n%s", stderr.String())
	}
	for _, name := range []string{"findings.ndjson", "alerts.ndjson", "truth.ndjson"} {
		if st, err := os.Stat(filepath.Join(o.out, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", name, err)
		}
	}
	assertNoPatientData(t, res, stdout.String()+stderr.String())
}

// assertNoPatientData fails when a name or street address from the
// synthetic reference data shows up in the demo's output.
func assertNoPatientData(t *testing.T, res *demoOutcome, output string) {
	t.Helper()
	names := map[string]bool{}
	var lines []string
	h := res.hospital
	for _, u := range h.Users {
		names[u.FirstName], names[u.LastName] = true, true
		lines = append(lines, u.Address.Line)
	}
	for _, p := range h.Patients {
		names[p.FirstName], names[p.LastName] = true, true
		lines = append(lines, p.Address.Line)
	}
	for _, w := range regexp.MustCompile(`\b[A-Z][a-z]+\b`).FindAllString(output, -1) {
		if names[w] {
			t.Errorf("demo output contains the name %q", w)
		}
	}
	for _, l := range lines {
		if l != "" && strings.Contains(output, l) {
			t.Errorf("demo output contains the address %q", l)
		}
	}
}

// failingSink fails every write permanently, as ClickHouse does when a
// table is missing.
type failingSink struct{}

func (failingSink) Write(context.Context, *store.Batch) error {
	return ingest.Permanent(errors.New("injected storage failure"))
}

func TestDemoFailsWhenThePipelineFails(t *testing.T) {
	o := shortDemo()
	o.days, o.warmup = 2, 1
	o.wrapSink = func(ingest.Sink) ingest.Sink { return failingSink{} }
	var stdout, stderr bytes.Buffer
	res, err := demo(context.Background(), o, &stdout, &stderr)
	if err == nil {
		t.Fatalf("demo succeeded with a failing sink\n%s", stdout.String())
	}
	if exitCode(err) == 0 || !strings.Contains(err.Error(), "pipeline failed") {
		t.Errorf("error %q (exit %d), want a pipeline failure and a non-zero exit", err, exitCode(err))
	}
	if res == nil || res.stats.Stored != 0 {
		t.Errorf("outcome %+v, want nothing stored", res)
	}
	if !strings.Contains(stdout.String(), "did not finish") {
		t.Errorf("summary does not say the run is partial:\n%s", stdout.String())
	}
}

func TestDemoFlags(t *testing.T) {
	for _, args := range [][]string{
		{"demo", "--days", "0"},
		{"demo", "--partitions", "0"},
		{"demo", "--color", "sometimes"},
		{"demo", "--rate", "-1"},
		{"demo", "extra"},
		{"demo", "--serve", "8080"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if exitCode(err) != 2 {
			t.Errorf("%v: err %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
}

func TestProgressText(t *testing.T) {
	var out, errOut bytes.Buffer
	con := newConsole(&out, &errOut, "never")
	p := newProgress(con, 1000)
	p.every = 0
	p.update(0, 0, 0)
	p.update(500, 3, 1)
	p.done(1000, 5, 2)
	got := errOut.String()
	for _, want := range []string{"waiting for the consumer group", "progress: 500/1000 events (50%)", "consumed: 1000/1000 events (100%)", "5 findings, 2 alerts"} {
		if !strings.Contains(got, want) {
			t.Errorf("progress output lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(got, "\r") {
		t.Error("carriage returns in non-terminal progress output")
	}
}

func TestConsoleColour(t *testing.T) {
	var out bytes.Buffer
	c := newConsole(&out, &out, "always")
	if got := c.paint(ansiRed, "x"); got != ansiRed+"x"+ansiReset {
		t.Errorf("always: %q", got)
	}
	t.Setenv("NO_COLOR", "1")
	if c := newConsole(os.Stdout, os.Stderr, "auto"); c.color {
		t.Error("auto colours despite NO_COLOR")
	}
	if c := newConsole(&out, &out, "auto"); c.color {
		t.Error("auto colours a non-terminal")
	}
}

func TestDemoIntoClickHouse(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: needs ClickHouse")
	}
	addr := testenv.ClickHouseAddr(t)
	conn, db := testenv.ClickHouse(t)
	o := shortDemo()
	o.days, o.warmup = 3, 1
	o.clickhouse, o.chDatabase = "http://"+addr, db
	// --serve on ClickHouse: the console reads the stored alerts.
	o.serve = "127.0.0.1:0"
	sctx, stopServing := context.WithCancel(context.Background())
	defer stopServing()
	var served demoServed
	var queueCode int
	var queue string
	o.onServe = func(s demoServed) {
		go func() {
			defer stopServing()
			served = s
			req, err := http.NewRequest("GET", s.URL+"/queue", nil)
			if err != nil {
				return
			}
			req.Header.Set("Authorization", "Bearer "+s.Token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			queueCode, queue = resp.StatusCode, string(b)
		}()
	}
	var stdout, stderr bytes.Buffer
	res, err := demo(sctx, o, &stdout, &stderr)
	if err != nil {
		t.Fatalf("demo: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	if !strings.HasPrefix(served.Store, "ClickHouse ") || queueCode != 200 || strings.Contains(queue, "Demo store") ||
		strings.Count(queue, `<tr><td><input type="checkbox"`) != res.alerts {
		t.Errorf("--serve on ClickHouse (%q): /queue %d, %d rows, want the %d alerts without the demo-store label",
			served.Store, queueCode, strings.Count(queue, `<tr><td><input type="checkbox"`), res.alerts)
	}
	ctx := context.Background()
	count := func(q string) uint64 {
		t.Helper()
		var n uint64
		if err := conn.QueryRow(ctx, q).Scan(&n); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		return n
	}
	if got := count("SELECT uniqExact(event_id) FROM access_events"); got != uint64(res.stream.events) {
		t.Errorf("access_events holds %d events, want %d", got, res.stream.events)
	}
	if got, want := count("SELECT uniqExact(finding_id) FROM findings"), uint64(len(synth.MergeVersions(res.findings))); got != want || want == 0 {
		t.Errorf("findings holds %d findings, want %d", got, want)
	}
	if got := count("SELECT uniqExact(alert_id) FROM alerts"); got != uint64(res.alerts) || got == 0 {
		t.Errorf("alerts holds %d alerts, want %d", got, res.alerts)
	}
	if !strings.Contains(stdout.String(), "Stored in ClickHouse") || !strings.Contains(stdout.String(), "with the reference tables") {
		t.Errorf("summary does not say where the data went:\n%s", stdout.String())
	}

	// The reference tables hold the hospital, so a patient access report
	// explains accesses exactly as the detectors did.
	h := res.hospital
	for table, want := range map[string]int{"users": len(h.Users), "patients": len(h.Patients), "encounters": len(h.Encounters)} {
		if got := count("SELECT count() FROM " + table + " FINAL"); got != uint64(want) || want == 0 {
			t.Errorf("%s holds %d rows, want the hospital's %d", table, got, want)
		}
	}
	var patient string
	if err := conn.QueryRow(ctx, `SELECT patient_id FROM access_events GROUP BY patient_id ORDER BY uniqExact(event_id) DESC, patient_id LIMIT 1`).Scan(&patient); err != nil {
		t.Fatal(err)
	}
	rep, err := triage.NewStore(conn, triage.Options{}).ReportAll(ctx, triage.ReportQuery{Kind: triage.PatientAccess, SubjectID: patient,
		From: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), To: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC), Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = newHashKey()
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	care := map[string]bool{}
	for ev := range h.All() {
		if ev.PatientID == patient {
			care[ev.EventID] = idx.Care(ev).Explained
		}
	}
	explained := 0
	for _, r := range rep.Rows {
		if r.Care.Explained {
			explained++
		}
		if want, ok := care[r.EventID]; !ok || r.Care.Explained != want {
			t.Errorf("report row %s: explained %v, the detectors say %v (known event: %v)", r.EventID, r.Care.Explained, want, ok)
		}
	}
	if len(rep.Rows) != len(care) || explained == 0 {
		t.Errorf("report for the most accessed patient: %d rows (%d explained), want %d rows, some explained", len(rep.Rows), explained, len(care))
	}
	if len(rep.Warnings) != 0 {
		t.Errorf("report warns with the reference tables loaded: %+v", rep.Warnings)
	}
	t.Logf("most accessed patient: %d accesses, %d explained by a care relationship", len(rep.Rows), explained)
}

// TestDemoServe runs the demo with --serve on a random port and no
// services: the API answers on the in-memory store with the demo's own
// alerts (every one of them, paged), a browser signs in to the console
// with the printed token on /signin and its queue lists the same alerts
// under the demo-store label, both refuse a caller without the token, the
// API takes a triage change with its version, serves a patient report
// explained by the hospital's reference data, and shuts down cleanly when
// the context ends.
func TestDemoServe(t *testing.T) {
	o := shortDemo()
	o.days, o.warmup = 3, 1
	o.serve = "127.0.0.1:0"
	served := make(chan demoServed, 1)
	o.onServe = func(s demoServed) { served <- s }
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		res *demoOutcome
		err error
	}
	done := make(chan result, 1)
	var stdout, stderr bytes.Buffer
	go func() {
		res, err := demo(ctx, o, &stdout, &stderr)
		done <- result{res, err}
	}()
	var s demoServed
	select {
	case s = <-served:
	case r := <-done:
		t.Fatalf("demo ended before serving: %v\n%s\n%s", r.err, stdout.String(), stderr.String())
	case <-time.After(3 * time.Minute):
		t.Fatal("demo did not start serving")
	}
	if s.Store != "demo store (in memory)" || !strings.HasPrefix(s.Token, "demo-") || len(s.Token) < 40 {
		t.Errorf("served %+v: want the in-memory store and a long random token", s)
	}
	do := func(req *http.Request) (int, []byte) {
		t.Helper()
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, b
	}
	call := func(method, path, token, body string) (int, []byte) {
		t.Helper()
		var rd io.Reader
		if body != "" {
			rd = strings.NewReader(body)
		}
		req, err := http.NewRequest(method, s.URL+path, rd)
		if err != nil {
			t.Fatal(err)
		}
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		return do(req)
	}
	if code, _ := call("GET", "/api/v1/alerts", "", ""); code != http.StatusUnauthorized {
		t.Errorf("no token: %d, want 401", code)
	}
	if code, _ := call("GET", "/api/v1/alerts", "demo-wrong-token-0000000000000000000000", ""); code != http.StatusUnauthorized {
		t.Errorf("wrong token: %d, want 401", code)
	}
	var alerts []triage.Alert
	cursor := ""
	for range 100 {
		code, b := call("GET", "/api/v1/alerts?limit=50"+cursor, s.Token, "")
		var page triage.AlertPage
		if err := json.Unmarshal(b, &page); code != 200 || err != nil {
			t.Fatalf("alerts: %d %v %s", code, err, b)
		}
		alerts = append(alerts, page.Alerts...)
		if page.NextCursor == "" {
			break
		}
		cursor = "&cursor=" + url.QueryEscape(page.NextCursor)
	}
	if len(alerts) == 0 {
		t.Fatal("the served store holds no alerts")
	}

	// Sign in to the console as a browser does, with the printed token in
	// the static-token form of /signin: a session cookie.
	signIn := func(token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", s.URL+"/signin", strings.NewReader(url.Values{"token": {token}, "next": {"/queue"}}.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == "__Host-ehrwatch_session" && c.HttpOnly && c.Secure {
				return resp.StatusCode, c.Name + "=" + c.Value
			}
		}
		return resp.StatusCode, ""
	}
	if code, cookie := signIn("demo-wrong-token-0000000000000000000000"); code != http.StatusUnauthorized || cookie != "" {
		t.Errorf("sign-in with a wrong token: %d, cookie %q", code, cookie)
	}
	code, cookie := signIn(s.Token)
	if code != http.StatusSeeOther || cookie == "" {
		t.Fatalf("sign-in with the printed token: %d, no HttpOnly Secure session cookie", code)
	}
	req, err := http.NewRequest("GET", s.URL+"/queue", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Cookie", cookie)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	page, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	code = resp.StatusCode

	// The console's queue shows every one of them (all open), labelled
	// as the demo store; without signing in it does not.
	html := string(page)
	if code != 200 || !strings.Contains(html, "Demo store") {
		t.Fatalf("GET /queue: %d, demo store label missing:\n%.2000s", code, html)
	}
	if n := strings.Count(html, `<tr><td><input type="checkbox"`); n != len(alerts) {
		t.Errorf("the queue lists %d alerts, the API %d", n, len(alerts))
	}
	for _, a := range alerts {
		if !strings.Contains(html, `href="/alerts/`+a.AlertID+`"`) {
			t.Errorf("the queue does not link alert %s", a.AlertID)
		}
	}
	if code, page := call("GET", "/queue", "", ""); code != http.StatusUnauthorized || strings.Contains(string(page), alerts[0].AlertID) {
		t.Errorf("GET /queue without signing in: %d", code)
	}
	if code, page := call("GET", "/alerts/"+alerts[0].AlertID, s.Token, ""); code != 200 || !strings.Contains(string(page), "Demo store") {
		t.Errorf("GET /alerts/%s: %d\n%.1000s", alerts[0].AlertID, code, page)
	}

	// A triage change, then a stale one.
	a := alerts[0]
	code, b := call("PATCH", "/api/v1/alerts/"+a.AlertID, s.Token, `{"expected_version":0,"status":"triaged","assignee":"demo"}`)
	if code != 200 || !strings.Contains(string(b), `"version":1`) {
		t.Errorf("triage change: %d %s", code, b)
	}
	if code, b := call("PATCH", "/api/v1/alerts/"+a.AlertID, s.Token, `{"expected_version":0,"note":"stale"}`); code != http.StatusConflict {
		t.Errorf("stale change: %d %s, want 409", code, b)
	}
	code, b = call("GET", "/api/v1/alerts/"+a.AlertID, s.Token, "")
	var d triage.AlertDetail
	if err := json.Unmarshal(b, &d); code != 200 || err != nil || d.Triage.Version != 1 || d.Triage.Assignee != "demo" || len(d.Findings) == 0 || len(d.Events) == 0 {
		t.Errorf("alert detail after the change: %d %v %+v", code, err, d.Alert)
	}

	// A patient report, explained by the demo's reference data.
	var patient string
	for _, ev := range d.Events {
		patient = ev.PatientID
		break
	}
	code, b = call("GET", "/api/v1/reports/patient-access?patient_id="+url.QueryEscape(patient)+"&from=2026-01-01&to=2027-01-01", s.Token, "")
	var rep triage.Report
	if err := json.Unmarshal(b, &rep); code != 200 || err != nil || len(rep.Rows) == 0 || len(rep.Warnings) != 0 {
		t.Errorf("patient report: %d %v rows %d warnings %+v", code, err, len(rep.Rows), rep.Warnings)
	}

	// The investigation pages work on the demo store too: a case opened
	// through the API is on /cases, the patient page (a POST form, the id
	// never in the URL) lists the patient's accesses, and /allowlist says
	// that its edits reach no detector.
	code, b = call("POST", "/api/v1/cases", s.Token, `{"title":"demo case","alert_ids":["`+a.AlertID+`"]}`)
	var c triage.Case
	if err := json.Unmarshal(b, &c); code != http.StatusCreated && code != 200 || err != nil || c.CaseID == "" {
		t.Errorf("create case: %d %v %s", code, err, b)
	}
	form := func(path string, v url.Values) (int, string) {
		t.Helper()
		req, err := http.NewRequest("POST", s.URL+path, strings.NewReader(v.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Cookie", cookie)
		code, b := do(req)
		return code, string(b)
	}
	if code, page := call("GET", "/cases", s.Token, ""); code != 200 || !strings.Contains(string(page), c.CaseID) || !strings.Contains(string(page), "Demo store") {
		t.Errorf("GET /cases: %d, case %s missing\n%.1000s", code, c.CaseID, page)
	}
	day := d.Events[0].EventTime.UTC()
	if code, page := form("/patients", url.Values{"patient_id": {patient}, "from": {day.AddDate(0, 0, -7).Format(time.DateOnly)},
		"to": {day.AddDate(0, 0, 7).Format(time.DateOnly)}}); code != 200 || !strings.Contains(page, "Demo store") ||
		!strings.Contains(page, `<span class="muted">`+d.Events[0].UserID+`</span>`) {
		t.Errorf("POST /patients: %d\n%.1000s", code, page)
	}
	if code, page := call("GET", "/users/"+url.PathEscape(d.Events[0].UserID), s.Token, ""); code != 200 || !strings.Contains(string(page), "Demo store") {
		t.Errorf("GET /users/%s: %d\n%.1000s", d.Events[0].UserID, code, page)
	}
	if code, page := call("GET", "/allowlist", s.Token, ""); code != 200 || !strings.Contains(string(page), "reach no detector") {
		t.Errorf("GET /allowlist: %d\n%.1000s", code, page)
	}

	cancel()
	var r result
	select {
	case r = <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("demo did not stop serving when its context ended")
	}
	if r.err != nil {
		t.Fatalf("demo --serve: %v\n%s", r.err, stderr.String())
	}
	if len(alerts) != r.res.alerts {
		t.Errorf("served %d alerts, the demo raised %d", len(alerts), r.res.alerts)
	}
	out := stdout.String()
	if !strings.Contains(out, "Serving the console on the results (demo store (in memory)) at "+s.URL+"/") || !strings.Contains(out, s.Token) {
		t.Errorf("stdout does not print the URL and the token:\n%s", out)
	}
	if _, err := http.Get(s.URL + "/healthz"); err == nil {
		t.Error("still serving after the demo returned")
	}
}

// TestDemoPeersIndependentOfPartitions runs the short demo on one and on
// three partitions: the volume and break_glass findings (every stored
// version) must be the same, as the peer stage compares users with the
// whole peer group whatever the partitioning. Within a partition they
// differ (docs/detectors.md, "Results independent of partitioning").
func TestDemoPeersIndependentOfPartitions(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the demo twice")
	}
	peerFindings := func(partitions int) []string {
		o := shortDemo()
		o.partitions = partitions
		o.quiet = true
		var stdout, stderr bytes.Buffer
		res, err := demo(context.Background(), o, &stdout, &stderr)
		if err != nil {
			t.Fatalf("demo on %d partitions: %v\nstderr:\n%s", partitions, err, stderr.String())
		}
		var out []string
		for _, f := range res.findings {
			if f.Detector != "volume" && f.Detector != "break_glass" {
				continue
			}
			b, err := json.Marshal(f)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, string(b))
		}
		slices.Sort(out)
		return out
	}
	one, three := peerFindings(1), peerFindings(3)
	vol := 0
	for _, s := range one {
		if strings.Contains(s, `"detector":"volume"`) {
			vol++
		}
	}
	if vol == 0 {
		t.Fatal("no volume findings on one partition: the short hospital is not what this test expects")
	}
	if !slices.Equal(one, three) {
		t.Errorf("volume/break_glass findings differ: %d on one partition, %d on three", len(one), len(three))
		for _, s := range three {
			if !slices.Contains(one, s) {
				t.Logf("only on three partitions: %.300s", s)
			}
		}
		for _, s := range one {
			if !slices.Contains(three, s) {
				t.Logf("only on one partition: %.300s", s)
			}
		}
	}
}
