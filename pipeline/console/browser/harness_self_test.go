package browser_test

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

// The console's policy (docs/console-contract: CSP).
const testCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// TestHarnessCatchesWhatItClaims: the checks every console page goes
// through do fail on a page that breaks them. axe-core, injected under the
// console's CSP, reports an image without a text alternative and an unnamed
// button (critical); an inline script is reported as a CSP violation and a
// script that throws as a script error; a 403
// page's status reaches the test; a clean page passes.
func TestHarnessCatchesWhatItClaims(t *testing.T) {
	mux := http.NewServeMux()
	page := func(body string) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Security-Policy", testCSP)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			if r.URL.Path == "/forbidden" {
				w.WriteHeader(http.StatusForbidden)
			}
			_, _ = w.Write([]byte(`<!doctype html><html lang="en"><head><title>t</title></head><body><main><h1>Test</h1>` + body + `</main></body></html>`))
		}
	}
	mux.HandleFunc("/clean", page(`<p id="msg">All good</p><button type="button">Assign to me</button>`))
	mux.HandleFunc("/broken", page(`<img src="data:image/gif;base64,R0lGODlhAQABAAAAACw="><button type="button"></button><script>document.title = 'inline'</script><script src="/boom.js"></script>`))
	mux.HandleFunc("/boom.js", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/javascript")
		_, _ = w.Write([]byte("undefinedFunction();\n"))
	})
	mux.HandleFunc("/forbidden", page(`<p>Forbidden</p>`))
	mux.HandleFunc("/whoami", func(w http.ResponseWriter, r *http.Request) {
		who := "anonymous"
		if r.Header.Get("Authorization") == "Bearer tok-analyst" {
			who = "analyst"
		}
		page(`<p id="who">`+who+`</p>`)(w, r)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	s := newSession(t, srv.URL)

	if got := s.open("/clean"); got != http.StatusOK {
		t.Fatalf("GET /clean: status %d", got)
	}
	if got := s.text("#msg"); got != "All good" {
		t.Errorf("text of #msg = %q", got)
	}
	if v := s.violations(); len(v) != 0 {
		t.Errorf("clean page: axe reports %v", v)
	}
	if v := s.cspViolations(); len(v) != 0 {
		t.Errorf("clean page: CSP violations %v", v)
	}
	if v := s.jsErrors(); len(v) != 0 {
		t.Errorf("clean page: script errors %v", v)
	}

	if got := s.open("/broken"); got != http.StatusOK {
		t.Fatalf("GET /broken: status %d", got)
	}
	var ids []string
	for _, v := range s.violations() {
		ids = append(ids, v.ID)
		if len(v.Nodes) == 0 {
			t.Errorf("violation %s names no node", v.ID)
		}
	}
	for _, want := range []string{"image-alt", "button-name"} {
		if !slices.Contains(ids, want) {
			t.Errorf("broken page: axe reports %v, want %s among them", ids, want)
		}
	}
	csp := s.cspViolations()
	if len(csp) == 0 || !strings.Contains(strings.Join(csp, "\n"), "script-src") {
		t.Errorf("broken page: CSP violations %v, want the inline script refused", csp)
	}
	if errs := s.jsErrors(); len(errs) != 1 || !strings.Contains(errs[0], "undefinedFunction") || !strings.Contains(errs[0], "/boom.js") {
		t.Errorf("broken page: script errors %v, want the one /boom.js threw", errs)
	}

	if got := s.open("/forbidden"); got != http.StatusForbidden {
		t.Errorf("GET /forbidden: status %d, want 403", got)
	}

	// A bearer token reaches the server on this session only.
	other := newSession(t, srv.URL)
	s.useBearer("tok-analyst")
	s.open("/whoami")
	other.open("/whoami")
	if got := s.text("#who"); got != "analyst" {
		t.Errorf("with a bearer token the server saw %q", got)
	}
	if got := other.text("#who"); got != "anonymous" {
		t.Errorf("the other session's server saw %q, want anonymous", got)
	}
}
