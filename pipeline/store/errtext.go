package store

import (
	"errors"
	"fmt"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// ErrorText renders err for logs and terminals without ClickHouse server
// messages, which can quote row values (a violated constraint lists the
// rejected row's columns, patient ids included): an exception becomes its
// code and name, an HTTP error its status. The context the store added
// ("write audit: …") is kept. Request values the text may still carry
// (query parameters) are for Redact.
func ErrorText(err error) string {
	if err == nil {
		return ""
	}
	msg := err.Error()
	var ex *clickhouse.Exception
	var he *clickhouse.HTTPError
	var server error
	var safe string
	switch {
	case errors.As(err, &he):
		server, safe = he, fmt.Sprintf("clickhouse HTTP status %d", he.StatusCode)
		if errors.As(he.Err, &ex) {
			safe = exceptionText(ex) + ", " + safe
		}
	case errors.As(err, &ex):
		server, safe = ex, exceptionText(ex)
	case strings.Contains(msg, "ClickHouse exception") || strings.Contains(msg, "DB::Exception"):
		// An exception the driver could not parse into *Exception.
		return "clickhouse exception (message withheld)"
	default:
		return msg
	}
	if i := strings.Index(msg, server.Error()); i >= 0 {
		return msg[:i] + safe
	}
	return safe
}

func exceptionText(ex *clickhouse.Exception) string {
	name := ex.CodeName
	if name == "" {
		name = ex.Name
	}
	return fmt.Sprintf("clickhouse exception %d (%s)", ex.Code, name)
}
