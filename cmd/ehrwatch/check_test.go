package main

import (
	"bytes"
	"context"
	"testing"
)

// TestCheckUsageErrors: a wrong subcommand or protocol is a usage error
// (exit status 2), found before anything connects.
func TestCheckUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"check"},
		{"check", "kafka"},
		{"check", "clickhouse", "--protocol", "grpc"},
		{"check", "clickhouse", "extra"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		if exitCode(err) != 2 {
			t.Errorf("%q: exit status %d (%v), want 2", args, exitCode(err), err)
		}
		if stdout.Len() != 0 {
			t.Errorf("%q: printed check lines %q before failing", args, stdout.String())
		}
	}
}
