package ingest

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/backoff"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// newBackoff is the pipeline's retry pause sequence for cfg.
func newBackoff(cfg RetryConfig) *backoff.Backoff {
	return backoff.New(backoff.Policy{Initial: cfg.InitialInterval, Max: cfg.MaxInterval, Multiplier: cfg.Multiplier, Jitter: cfg.Jitter})
}

// retry runs op until it succeeds, returns a permanent error, or ctx ends
// (then it returns the last error joined with ctx's). onRetry, if set, sees
// every retryable failure and the pause that follows it.
func retry(ctx context.Context, cfg RetryConfig, op func(context.Context) error, onRetry func(err error, attempt int, pause time.Duration)) error {
	b := newBackoff(cfg)
	for {
		err := op(ctx)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return errors.Join(err, ctx.Err())
		}
		if !Retryable(err) {
			return err
		}
		pause := b.Next()
		if onRetry != nil {
			onRetry(err, b.Attempt(), pause)
		}
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return errors.Join(err, ctx.Err())
		case <-t.C:
		}
	}
}

// permanentError marks an error that retrying cannot fix.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// permanentClickHouseCodes are server errors that the same INSERT will hit
// again: schema mismatches, bad data, missing objects, missing rights.
//
// The Writer bisects INSERTs refused for their rows (store.RefusedByData),
// so of these only the schema, object and access errors reach the
// pipeline.
var permanentClickHouseCodes = map[int32]bool{
	6:   true, // CANNOT_PARSE_TEXT
	16:  true, // NO_SUCH_COLUMN_IN_TABLE
	27:  true, // CANNOT_PARSE_INPUT_ASSERTION_FAILED
	36:  true, // BAD_ARGUMENTS
	38:  true, // CANNOT_PARSE_DATE
	41:  true, // CANNOT_PARSE_DATETIME
	44:  true, // ILLEGAL_COLUMN
	47:  true, // UNKNOWN_IDENTIFIER
	53:  true, // TYPE_MISMATCH
	60:  true, // UNKNOWN_TABLE
	62:  true, // SYNTAX_ERROR
	69:  true, // ARGUMENT_OUT_OF_BOUND
	70:  true, // CANNOT_CONVERT_TYPE
	72:  true, // CANNOT_PARSE_NUMBER
	81:  true, // UNKNOWN_DATABASE
	115: true, // UNKNOWN_SETTING
	117: true, // INCORRECT_DATA
	131: true, // TOO_LARGE_STRING_SIZE
	164: true, // READONLY
	192: true, // UNKNOWN_USER
	193: true, // WRONG_PASSWORD
	194: true, // REQUIRED_PASSWORD
	291: true, // DATABASE_ACCESS_DENIED
	321: true, // VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
	469: true, // VIOLATED_CONSTRAINT
	497: true, // ACCESS_DENIED
	516: true, // AUTHENTICATION_FAILED
	691: true, // UNKNOWN_ELEMENT_OF_ENUM
}

// Retryable is the one place that decides whether a failed write is worth
// retrying. Permanent: errors marked with Permanent, decode errors,
// ClickHouse server errors that the same INSERT hits again, and Kafka
// errors the protocol marks non-retriable. Everything else (network
// errors, timeouts, a server that is restarting, overloaded or refusing
// connections) is retryable, because every write the pipeline retries is
// idempotent.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	var perm *permanentError
	if errors.As(err, &perm) {
		return false
	}
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		return false
	}
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return !permanentClickHouseCodes[ex.Code]
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if e != nil && !Retryable(e) {
				return false
			}
		}
		return true
	}
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	return true
}

// Redact renders err without row data, for logs and exit messages: see
// safeError.
func Redact(err error) string { return safeError(err) }

// safeError renders err for logs, readiness reasons and exit messages without
// data from the rows: ClickHouse echoes values it could not parse into its
// exception text, so server exceptions are reduced to their code and name,
// and non-exception HTTP error bodies to the status. Everything else
// (network, timeout, Kafka protocol errors, the decoder's *DecodeError) is
// known not to carry row data and is shown as is.
func safeError(err error) string {
	if err == nil {
		return ""
	}
	prefix := ""
	var ie *store.InsertError
	if errors.As(err, &ie) {
		prefix = fmt.Sprintf("insert %d rows into %s: ", ie.Rows, ie.Table)
		err = ie.Err
	}
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		return prefix + decodeErrorText(de)
	}
	// ClickHouse exceptions become their code and name, HTTP errors their
	// status, and exception text the driver could not parse is withheld.
	// Network, timeout and Kafka protocol errors, and client-side INSERT
	// failures (a column conversion, a closed pool), name addresses, types
	// and offsets, not values, and are shown as they are.
	return prefix + store.ErrorText(err)
}

// decodeErrorText is what the pipeline says about an undecodable message:
// the error class and field, nothing from the input.
func decodeErrorText(de *schemas.DecodeError) string {
	if de.Field == "" {
		return string(de.Class)
	}
	return string(de.Class) + ": " + de.Field
}
