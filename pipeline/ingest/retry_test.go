package ingest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestRetryable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"connection refused", &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}, true},
		{"timeout", fmt.Errorf("insert: %w", context.DeadlineExceeded), true},
		{"plain error", errors.New("boom"), true},
		{"too many parts", &clickhouse.Exception{Code: 252, Name: "TOO_MANY_PARTS"}, true},
		{"unknown table", fmt.Errorf("insert: %w", &clickhouse.Exception{Code: 60}), false},
		{"access denied in insert error", &store.InsertError{Table: "dlq", Err: &clickhouse.Exception{Code: 497}}, false},
		{"marked permanent", Permanent(errors.New("bad config")), false},
		{"decode error", &schemas.DecodeError{Class: schemas.ClassSyntax}, false},
		{"kafka leader moved", kafka.NotLeaderForPartition, true},
		{"kafka topic auth", kafka.TopicAuthorizationFailed, false},
		{"kafka write errors, one permanent", kafka.WriteErrors{nil, kafka.MessageSizeTooLarge}, false},
		{"kafka write errors, retryable", kafka.WriteErrors{kafka.RequestTimedOut, nil}, true},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Retryable(tc.err); got != tc.want {
				t.Errorf("Retryable(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRetryStopsOnSuccessPermanentErrorAndContext(t *testing.T) {
	cfg := RetryConfig{InitialInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond, Multiplier: 2}
	calls, retries := 0, 0
	err := retry(context.Background(), cfg, func(context.Context) error {
		calls++
		if calls < 4 {
			return errors.New("transient")
		}
		return nil
	}, func(error, int, time.Duration) { retries++ })
	if err != nil || calls != 4 || retries != 3 {
		t.Fatalf("got err=%v calls=%d retries=%d, want nil 4 3", err, calls, retries)
	}

	calls = 0
	perm := Permanent(errors.New("no such table"))
	err = retry(context.Background(), cfg, func(context.Context) error { calls++; return perm }, nil)
	if !errors.Is(err, perm) || calls != 1 {
		t.Fatalf("permanent: got err=%v calls=%d, want the error after 1 call", err, calls)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
	defer cancel()
	err = retry(ctx, cfg, func(context.Context) error { return errors.New("down") }, nil)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("context: got %v, want DeadlineExceeded", err)
	}
}

func TestSafeErrorDropsServerText(t *testing.T) {
	const secret = "MRN-PHI-0000042"
	ex := &clickhouse.Exception{Code: 27, CodeName: "CANNOT_PARSE_INPUT_ASSERTION_FAILED",
		Message: "Cannot parse input: expected '\\t' before: '" + secret + "'"}
	for _, err := range []error{
		ex,
		&store.InsertError{Table: "access_events", Rows: 3, Err: ex},
		fmt.Errorf("flush: %w", &store.InsertError{Table: "access_events", Rows: 3, Err: &clickhouse.HTTPError{StatusCode: 500, Err: errors.New("response body: " + secret)}}),
		&schemas.DecodeError{Class: schemas.ClassInvalidValue, Field: "patient_id", Detail: "x"},
	} {
		got := safeError(err)
		if strings.Contains(got, secret) {
			t.Errorf("safeError leaks %q: %s", secret, got)
		}
		if got == "" {
			t.Errorf("safeError(%T) is empty", err)
		}
	}
	if got := safeError(&store.InsertError{Table: "findings", Rows: 2, Err: ex}); got != "insert 2 rows into findings: clickhouse exception 27 (CANNOT_PARSE_INPUT_ASSERTION_FAILED)" {
		t.Errorf("unexpected rendering: %s", got)
	}
}
