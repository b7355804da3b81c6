package triage

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// TestErrorText: ClickHouse server messages (which quote rejected rows) are
// reduced to code and name; the store's context and other errors are kept.
func TestErrorText(t *testing.T) {
	const row = "Column values: patients_returned = ['MRN-QX7731']"
	ex := &clickhouse.Exception{Code: 469, Name: "DB::Exception", Message: "Constraint is violated at row 1. " + row}
	exHTTP := &clickhouse.Exception{Code: 469, CodeName: "VIOLATED_CONSTRAINT", Message: row}
	for _, c := range []struct {
		err  error
		want string
	}{
		{fmt.Errorf("write audit: %w", ex), "write audit: clickhouse exception 469 (DB::Exception)"},
		{fmt.Errorf("write audit: batch: %w", &clickhouse.HTTPError{StatusCode: 500, Err: exHTTP}),
			"write audit: batch: clickhouse exception 469 (VIOLATED_CONSTRAINT), clickhouse HTTP status 500"},
		{fmt.Errorf("read findings: %w", &clickhouse.HTTPError{StatusCode: 502, Err: errors.New(`response body: "` + row + `"`)}),
			"read findings: clickhouse HTTP status 502"},
		{fmt.Errorf("write audit: ClickHouse exception: %s", row), "clickhouse exception (message withheld)"},
		{fmt.Errorf("list alerts: %w", errors.New("dial tcp 10.0.0.1:9000: connection refused")),
			"list alerts: dial tcp 10.0.0.1:9000: connection refused"},
		{nil, ""},
	} {
		got := ErrorText(c.err)
		if got != c.want {
			t.Errorf("ErrorText(%v) = %q, want %q", c.err, got, c.want)
		}
		if strings.Contains(got, "MRN-") {
			t.Errorf("ErrorText leaks the row: %q", got)
		}
	}
}
