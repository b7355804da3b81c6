package testenv_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// TestAlertmanagerFailsWithInstructions: an unset variable, a closed port
// or an endpoint that is not ready fail the test with the how-to.
func TestAlertmanagerFailsWithInstructions(t *testing.T) {
	if testing.Short() {
		t.Skip("testenv.Alertmanager skips under -short before looking at Alertmanager")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + ln.Addr().String()
	ln.Close()
	notReady := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer notReady.Close()

	for _, tc := range []struct{ name, env, want string }{
		{"unset", "", "EHRDEV_ALERTMANAGER is not set"},
		{"closed port", closed, "Alertmanager at EHRDEV_ALERTMANAGER=" + closed + " is not ready"},
		{"not ready", notReady.URL, "HTTP 503"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testenv.AlertmanagerEnv, tc.env)
			ft := &fakeT{TB: t}
			ft.run(func() { testenv.Alertmanager(ft) })
			if ft.skipped || !ft.failed {
				t.Fatalf("testenv.Alertmanager skipped=%v failed=%v; it must fail", ft.skipped, ft.failed)
			}
			for _, want := range []string{tc.want, `eval "$(deployments/dev/alertmanager.sh env)"`, "make test"} {
				if !strings.Contains(ft.msg, want) {
					t.Errorf("failure message lacks %q:\n%s", want, ft.msg)
				}
			}
		})
	}
}
