package console_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/console/memstore"
)

// queueOnly is a store with the alert queue but no cases, reports or
// allowlist: neither an api.CaseStore nor a console.InvestigationStore.
type queueOnly interface {
	api.Store
	console.Store
}

// Over a store without investigations, the API's case and allowlist
// routes answer 501 before they look at the query, and the console's
// privacy office pages answer the 501 page after sign-in and the
// permission check, while the queue still works.
func TestStoreWithoutInvestigations(t *testing.T) {
	cfg := api.DefaultConfig()
	cfg.Tokens = []api.TokenConfig{
		{Name: "privacy-desk", Role: api.RolePrivacyOfficer, Hash: api.HashToken(tokPO)},
		{Name: "soc-analyst", Role: api.RoleAnalyst, Hash: api.HashToken(tokAnalyst)},
	}
	st := struct{ queueOnly }{memstore.New(memstore.Data{}, cfg.TriageOptions())}
	if _, ok := any(st).(api.CaseStore); ok {
		t.Fatal("the test store must not be an api.CaseStore")
	}
	var con *console.Console
	srv, err := api.New(cfg, api.Deps{Store: st, Log: zerolog.Nop(),
		UI: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.Handler().ServeHTTP(w, r) })})
	if err != nil {
		t.Fatal(err)
	}
	if con, err = console.New(console.DefaultConfig(), console.Deps{Store: st, Auth: srv, Log: zerolog.Nop()}); err != nil {
		t.Fatal(err)
	}
	hs, err := srv.HTTPServer()
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(hs.Handler)
	t.Cleanup(ts.Close)
	get := func(path, token string) (int, string) {
		t.Helper()
		req, err := http.NewRequest("GET", ts.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+token)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		b, _ := io.ReadAll(res.Body)
		return res.StatusCode, string(b)
	}
	for _, c := range []struct {
		path, token string
		status      int
		body        string
	}{
		{"/api/v1/cases", tokPO, 501, "this store keeps no cases or allowlist"},
		{"/api/v1/cases?no_such_param=1", tokPO, 501, "this store keeps no cases or allowlist"},
		{"/api/v1/allowlist/history", tokPO, 501, "this store keeps no cases or allowlist"},
		{"/api/v1/cases", tokAnalyst, 403, "needs permission cases"},
		{"/api/v1/alerts?no_such_param=1", tokPO, 400, "unknown query parameter"},
		{"/api/v1/alerts", tokPO, 200, `"alerts"`},
		{"/cases", tokPO, 501, "This store keeps no cases, reports or allowlist"},
		{"/patients", tokPO, 501, "This store keeps no cases, reports or allowlist"},
		{"/cases", tokAnalyst, 403, "This page needs the permission cases"},
		{"/queue", tokPO, 200, "<table"},
	} {
		status, body := get(c.path, c.token)
		if status != c.status || !strings.Contains(body, c.body) {
			t.Errorf("GET %s: status %d, want %d with %q; body:\n%.400s", c.path, status, c.status, c.body, body)
		}
	}
}
