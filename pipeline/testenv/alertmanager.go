package testenv

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

// AlertmanagerEnv names the environment variable holding the base URL
// (http://127.0.0.1:PORT) of the Prometheus Alertmanager used by
// integration tests.
const AlertmanagerEnv = "EHRDEV_ALERTMANAGER"

// Alertmanager returns the base URL of the test Alertmanager from
// EHRDEV_ALERTMANAGER. It skips the test under -short and fails
// it, with instructions for starting one, when the variable is unset or
// Alertmanager's readiness endpoint does not answer 200.
func Alertmanager(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: skipping Alertmanager integration test in -short mode")
	}
	url := strings.TrimRight(strings.TrimSpace(os.Getenv(AlertmanagerEnv)), "/")
	if url == "" {
		t.Fatal(alertmanagerHowTo(AlertmanagerEnv + " is not set"))
	}
	if err := pingAlertmanager(url); err != nil {
		t.Fatal(alertmanagerHowTo(fmt.Sprintf("Alertmanager at %s=%s is not ready: %v", AlertmanagerEnv, url, err)))
	}
	return url
}

func alertmanagerHowTo(problem string) string {
	return "testenv: " + problem + "\n" +
		"This is an integration test and needs a real Prometheus Alertmanager. From the repository root, run\n" +
		"\teval \"$(deployments/dev/alertmanager.sh env)\"\n" +
		"to build (once, a few minutes), start one and export " + AlertmanagerEnv + ", or run `make test`, which does both.\n" +
		"(`go test -short` skips integration tests.)"
}

func pingAlertmanager(url string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/-/ready", nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /-/ready: HTTP %d", resp.StatusCode)
	}
	return nil
}
