package testenv_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// TestChromiumFailsWithInstructions: an unset variable, a missing binary
// or a program that is not a browser fail the test with the how-to.
func TestChromiumFailsWithInstructions(t *testing.T) {
	if testing.Short() {
		t.Skip("testenv.Chromium skips under -short before looking at the browser")
	}
	dir := t.TempDir()
	notBrowser := filepath.Join(dir, "not-a-browser")
	if err := os.WriteFile(notBrowser, []byte("#!/bin/sh\necho hello\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, env, want string }{
		{"unset", "", "EHRDEV_CHROMIUM is not set"},
		{"missing", filepath.Join(dir, "nope"), "does not run"},
		{"not a browser", notBrowser, "not a Chromium version"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testenv.ChromiumEnv, tc.env)
			ft := &fakeT{TB: t}
			ft.run(func() { testenv.Chromium(ft) })
			if ft.skipped || !ft.failed {
				t.Fatalf("testenv.Chromium skipped=%v failed=%v; it must fail", ft.skipped, ft.failed)
			}
			for _, want := range []string{tc.want, `eval "$(deployments/dev/chromium.sh env)"`, "make test"} {
				if !strings.Contains(ft.msg, want) {
					t.Errorf("failure message lacks %q:\n%s", want, ft.msg)
				}
			}
		})
	}
}

// TestAxeFailsWithInstructions: an unset variable, a missing file or a
// file that is not axe-core fail the test with the how-to.
func TestAxeFailsWithInstructions(t *testing.T) {
	if testing.Short() {
		t.Skip("testenv.Axe skips under -short before looking at axe-core")
	}
	dir := t.TempDir()
	other := filepath.Join(dir, "other.js")
	if err := os.WriteFile(other, []byte("console.log('hello')"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, env, want string }{
		{"unset", "", "EHRDEV_AXE is not set"},
		{"missing", filepath.Join(dir, "axe.min.js"), "cannot read"},
		{"not axe", other, "is not axe-core's axe.min.js"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(testenv.AxeEnv, tc.env)
			ft := &fakeT{TB: t}
			ft.run(func() { testenv.Axe(ft) })
			if ft.skipped || !ft.failed {
				t.Fatalf("testenv.Axe skipped=%v failed=%v; it must fail", ft.skipped, ft.failed)
			}
			for _, want := range []string{tc.want, `eval "$(deployments/dev/axe.sh env)"`, "make test"} {
				if !strings.Contains(ft.msg, want) {
					t.Errorf("failure message lacks %q:\n%s", want, ft.msg)
				}
			}
		})
	}
}
