package console_test

import (
	"context"
	"fmt"
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
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// BenchmarkPatientPage renders the patient page (POST /patients) for a
// patient with 5 000 accesses by 60 users over 30 days, 40 encounters,
// on the dev ClickHouse engine: the report query (events, care
// relationships, findings, the reference check), the api_audit insert and
// the template, server-side, as a browser would request it.
// report_query_ms/op is the report query's share (ClickHouse round trips
// included).
//
//	go test -run '^$' -bench PatientPage -benchtime 20x ./pipeline/console/
func BenchmarkPatientPage(b *testing.B) {
	const accesses, users, days = 5000, 60, 30
	start := tt.TS("2026-03-01T00:00:00Z")
	f := tt.Fixture{}
	for u := range users {
		f.Users = append(f.Users, schemas.User{UserID: fmt.Sprintf("u-%02d", u), FirstName: "Bench", LastName: fmt.Sprintf("User%02d", u),
			Role: "nurse", Department: []string{"Cardiology", "Oncology", "Radiology"}[u%3], Status: schemas.UserActive})
	}
	f.Patients = []schemas.Patient{{PatientID: tt.PatientMain, FirstName: "Oriana", LastName: "Vexley"}}
	for i := range 40 {
		end := start.Add(time.Duration(i)*18*time.Hour + 12*time.Hour)
		f.Encounters = append(f.Encounters, schemas.Encounter{EncounterID: fmt.Sprintf("enc-%02d", i), PatientID: tt.PatientMain,
			Department: []string{"Cardiology", "Oncology"}[i%2], Start: start.Add(time.Duration(i) * 18 * time.Hour), End: &end,
			CareTeam: []string{fmt.Sprintf("u-%02d", i%users)}})
	}
	step := time.Duration(days) * 24 * time.Hour / accesses
	for i := range accesses {
		e := schemas.AccessEvent{EventID: fmt.Sprintf("ev-%05d", i), EventTime: start.Add(time.Duration(i) * step), Source: "epic",
			FacilityID: "fac-nyc", UserID: fmt.Sprintf("u-%02d", i%users), UserRole: "nurse",
			UserDepartment: []string{"Cardiology", "Oncology", "Radiology"}[(i%users)%3], WorkstationID: "ws-1",
			PatientID: tt.PatientMain, Action: schemas.ActionView, Resource: "chart", Outcome: schemas.OutcomeSuccess}
		if i%97 == 0 {
			e.BreakGlass, e.BreakGlassReason = true, "emergency"
		}
		f.Events = append(f.Events, e)
	}
	conn := tt.NewDB(b, f)
	cfg := api.DefaultConfig()
	cfg.Tokens = []api.TokenConfig{{Name: "privacy-desk", Role: api.RolePrivacyOfficer, Hash: api.HashToken(tokPO)}}
	cfg.FacilityTimeZones = map[string]string{"fac-nyc": "America/New_York"}
	st := &timedStore{Store: triage.NewStore(conn, cfg.TriageOptions())}
	srv, err := api.New(cfg, api.Deps{Store: st.Store, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	con, err := console.New(console.DefaultConfig(), console.Deps{Store: st, Auth: srv, Log: zerolog.Nop()})
	if err != nil {
		b.Fatal(err)
	}
	h := con.Handler()
	form := url.Values{"patient_id": {tt.PatientMain}, "from": {"2026-03-01"}, "to": {"2026-03-31"}}.Encode()
	run := func() *httptest.ResponseRecorder {
		req := httptest.NewRequest("POST", "/patients", strings.NewReader(form))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Authorization", "Bearer "+tokPO)
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec
	}
	if rec := run(); rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), fmt.Sprintf(`<strong id="access-count">%d</strong>`, accesses)) {
		b.Fatalf("patient page: %d %.400s", rec.Code, rec.Body.String())
	}
	b.ResetTimer()
	st.spent = 0
	var bytes int
	for b.Loop() {
		rec := run()
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		bytes = rec.Body.Len()
	}
	b.ReportMetric(float64(bytes), "page_bytes")
	b.ReportMetric(float64(st.spent.Milliseconds())/float64(b.N), "report_query_ms/op")
}

// timedStore measures the report query (ClickHouse round trips included)
// apart from the rest of the page.
type timedStore struct {
	*triage.Store
	spent time.Duration
}

func (s *timedStore) ReportAll(ctx context.Context, q triage.ReportQuery) (triage.Report, error) {
	start := time.Now()
	defer func() { s.spent += time.Since(start) }()
	return s.Store.ReportAll(ctx, q)
}
