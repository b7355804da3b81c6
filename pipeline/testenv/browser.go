package testenv

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// ChromiumEnv names the environment variable holding the path of the
// Chromium (or Chrome) binary the console's browser tests drive headless.
const ChromiumEnv = "EHRDEV_CHROMIUM"

// AxeEnv names the environment variable holding the path of axe-core's
// axe.min.js, which the browser tests inject into every console page.
const AxeEnv = "EHRDEV_AXE"

var (
	chromiumOK sync.Map // path -> version line
	axeOK      sync.Map // path -> script
)

// Chromium returns the path of the test browser from EHRDEV_CHROMIUM. It
// skips the test under -short and fails it, with instructions for
// installing one, when the variable is unset or the binary does not answer
// --version.
func Chromium(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: skipping browser test in -short mode")
	}
	path := strings.TrimSpace(os.Getenv(ChromiumEnv))
	if path == "" {
		t.Fatal(chromiumHowTo(ChromiumEnv + " is not set"))
	}
	if _, ok := chromiumOK.Load(path); !ok {
		version, err := chromiumVersion(path)
		if err != nil {
			t.Fatal(chromiumHowTo(fmt.Sprintf("the browser at %s=%s does not run: %v", ChromiumEnv, path, err)))
		}
		chromiumOK.Store(path, version)
	}
	return path
}

func chromiumVersion(path string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, path, "--version").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s --version: %v: %s", path, err, strings.TrimSpace(string(out)))
	}
	v := strings.TrimSpace(string(out))
	if !strings.Contains(strings.ToLower(v), "chrom") {
		return "", fmt.Errorf("%s --version printed %q, not a Chromium version", path, v)
	}
	return v, nil
}

func chromiumHowTo(problem string) string {
	return "testenv: " + problem + "\n" +
		"This is a browser test and needs a headless Chromium. From the repository root, run\n" +
		"\teval \"$(deployments/dev/chromium.sh env)\"\n" +
		"to install Debian's chromium (once) and export " + ChromiumEnv + ", or run `make test`, which does both.\n" +
		"(`go test -short` skips integration tests.)"
}

// Axe returns the source of axe-core's axe.min.js from the file named by
// EHRDEV_AXE. It skips the test under -short and fails it, with
// instructions for fetching axe-core, when the variable is unset or the
// file is missing or is not axe-core.
func Axe(t testing.TB) string {
	t.Helper()
	if testing.Short() {
		t.Skip("testenv: skipping accessibility test in -short mode")
	}
	path := strings.TrimSpace(os.Getenv(AxeEnv))
	if path == "" {
		t.Fatal(axeHowTo(AxeEnv + " is not set"))
	}
	if src, ok := axeOK.Load(path); ok {
		return src.(string)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(axeHowTo(fmt.Sprintf("cannot read %s=%s: %v", AxeEnv, path, err)))
	}
	src := string(b)
	if !strings.Contains(src, "axe-core") || !strings.Contains(src, "axe.run") {
		t.Fatal(axeHowTo(fmt.Sprintf("%s=%s is not axe-core's axe.min.js", AxeEnv, path)))
	}
	axeOK.Store(path, src)
	return src
}

func axeHowTo(problem string) string {
	return "testenv: " + problem + "\n" +
		"The browser tests inject axe-core into every console page. From the repository root, run\n" +
		"\teval \"$(deployments/dev/axe.sh env)\"\n" +
		"to download it (npm pack, once) and export " + AxeEnv + ", or run `make test`, which does both.\n" +
		"(`go test -short` skips integration tests.)"
}
