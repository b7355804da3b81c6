package browser_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/chromedp/chromedp"

	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/console/memstore"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

// TestDemoStoreIsLabelled: the console over the demo's in-memory store
// (`ehrwatch demo --serve` without --clickhouse) says on its pages that
// it shows a demo store, passes the same accessibility and CSP checks,
// triages in memory, and serves the privacy office's pages from memory
// as well.
func TestDemoStoreIsLabelled(t *testing.T) {
	f := fixture()
	var alerts []triage.Alert
	for _, a := range tt.Alerts() {
		alerts = append(alerts, triage.Alert{AlertID: a.ID, Rule: "default", Detector: a.Detector, Severity: a.Severity, Score: 50,
			FacilityID: "fac-nyc", UserID: a.User, PatientID: a.Patient, FirstSeen: a.First, LastSeen: a.Last,
			FindingCount: uint32(len(a.FindingIDs)), FindingIDs: a.FindingIDs, Explanation: "alert " + a.ID, Revision: a.Version})
	}
	st := memstore.New(memstore.Data{Users: f.Users, Patients: f.Patients, Encounters: f.Encounters,
		Events: f.Events, Findings: f.Findings, Alerts: alerts}, triageOptions())
	e := serve(t, st, func(_ *console.Config, d *console.Deps) { d.DemoStore = true })
	s := e.signInWithToken(tokPO)

	if got := s.open("/queue"); got != http.StatusOK {
		t.Fatalf("GET /queue: status %d", got)
	}
	if badge := s.text("header .demo-badge"); !strings.Contains(strings.ToLower(badge), "demo store") {
		t.Errorf("demo badge %q", badge)
	}
	if got := s.count("table.queue tbody tr"); got != 4 {
		t.Errorf("queue shows %d rows, want 4", got)
	}
	s.checkPage("demo queue")

	if got := s.submit("assign al-1 to me", chromedp.Click(chromedp.CSS(`button[form="assign-al-1"]`), chromedp.NodeVisible)); got != http.StatusOK {
		t.Fatalf("assign to me: status %d", got)
	}
	s.waitText("tr:has(#sel-al-1)", namePO)
	s.open("/alerts/al-1")
	if badge := s.text("header .demo-badge"); !strings.Contains(strings.ToLower(badge), "demo store") {
		t.Errorf("alert page's demo badge %q", badge)
	}
	s.waitText("ol.history", namePO)
	s.checkPage("demo alert")

	// The privacy office's pages work on the demo store too, labelled.
	if got := s.open("/cases"); got != http.StatusOK {
		t.Errorf("GET /cases on the demo store: status %d, want 200", got)
	}
	s.waitText("#main", "No cases.")
	if badge := s.text("header .demo-badge"); !strings.Contains(strings.ToLower(badge), "demo store") {
		t.Errorf("cases page's demo badge %q", badge)
	}
	s.checkPage("demo cases")
	if got := s.open("/allowlist"); got != http.StatusOK {
		t.Errorf("GET /allowlist on the demo store: status %d, want 200", got)
	}
	s.checkPage("demo allowlist")
}
