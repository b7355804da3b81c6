package testenv

import (
	"fmt"
	"os"
	"testing"
)

// SkipLogEnv names the file that Skip appends its reasons to. The test
// command (deployments/dev/test.sh) sets it and prints the file at the end,
// so every skip, with its reason, shows in the CI log even without -v.
const SkipLogEnv = "EHRDEV_SKIP_LOG"

// Skip skips t for reason and records the skip where the test command
// reports it. Use it, never a bare return, when a test cannot check all it
// means to (a tool is missing, the dev engine refuses a statement): a skip
// must be visible.
func Skip(t testing.TB, reason string) {
	t.Helper()
	if path := os.Getenv(SkipLogEnv); path != "" {
		if f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644); err == nil {
			fmt.Fprintf(f, "%s: %s\n", t.Name(), reason)
			f.Close()
		}
	}
	t.Skip(reason)
}
