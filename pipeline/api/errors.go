package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// apiError is an error with its HTTP status. Msg and Field go to the
// client; they never contain request values (patient ids in particular).
type apiError struct {
	Status int
	Field  string
	Msg    string
	// Extra fields for the JSON body (e.g. current_version on 409).
	Extra map[string]any
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Field, e.Msg) }

func badRequest(field, format string, args ...any) error {
	return &apiError{Status: http.StatusBadRequest, Field: field, Msg: fmt.Sprintf(format, args...)}
}

// errorBody is every error response.
type errorBody struct {
	Error     string `json:"error"`
	Field     string `json:"field,omitempty"`
	RequestID string `json:"request_id,omitempty"`
}

// classify maps an error to its status and client message. internal is
// true for errors the client cannot fix (they are logged, redacted).
func classify(err error) (ae *apiError, internal bool) {
	var a *apiError
	var ve *triage.ValidationError
	var ce *triage.ConflictError
	var cce *triage.CaseConflictError
	var ace *triage.AllowlistConflictError
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &a):
		return a, false
	case errors.As(err, &ve):
		return &apiError{Status: http.StatusBadRequest, Field: ve.Field, Msg: ve.Msg}, false
	case errors.As(err, &ce):
		return &apiError{Status: http.StatusConflict, Field: "expected_version", Msg: ce.Error(),
			Extra: map[string]any{"current_version": ce.Current}}, false
	case errors.As(err, &cce):
		return &apiError{Status: http.StatusConflict, Field: "expected_version", Msg: cce.Error(),
			Extra: map[string]any{"current_version": cce.Current, "changes": cce.Changes}}, false
	case errors.As(err, &ace):
		extra := map[string]any{"current_updated_at": ace.Current}
		if ace.Last != nil {
			extra["last_change"] = ace.Last
		}
		return &apiError{Status: http.StatusConflict, Field: "expected_updated_at", Msg: ace.Error(), Extra: extra}, false
	case errors.Is(err, triage.ErrCaseNotFound):
		return &apiError{Status: http.StatusNotFound, Msg: "case not found"}, false
	case errors.Is(err, triage.ErrAllowlistEntryNotFound):
		return &apiError{Status: http.StatusNotFound, Msg: "allowlist entry not found"}, false
	case errors.Is(err, triage.ErrNotFound):
		return &apiError{Status: http.StatusNotFound, Msg: "alert not found"}, false
	case errors.Is(err, triage.ErrForbidden):
		return &apiError{Status: http.StatusForbidden, Msg: triage.ForbiddenReason(err)}, false
	case errors.As(err, &mbe):
		return &apiError{Status: http.StatusRequestEntityTooLarge, Msg: fmt.Sprintf("request body too large (at most %d bytes)", mbe.Limit)}, false
	case errors.Is(err, context.DeadlineExceeded):
		return &apiError{Status: http.StatusGatewayTimeout, Msg: "the query took too long; narrow the time range or filters"}, true
	case errors.Is(err, context.Canceled):
		return &apiError{Status: 499, Msg: "request canceled"}, false
	}
	return &apiError{Status: http.StatusInternalServerError, Msg: "internal error"}, true
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, ae *apiError, requestID string) {
	body := map[string]any{"error": ae.Msg}
	if ae.Field != "" {
		body["field"] = ae.Field
	}
	if requestID != "" {
		body["request_id"] = requestID
	}
	for k, v := range ae.Extra {
		body[k] = v
	}
	if ae.Status == 499 { // client went away; nobody reads this
		return
	}
	writeJSON(w, ae.Status, body)
}

// redact replaces the request's values in a message meant for the log.
func redact(msg string, values []string) string { return triage.Redact(msg, values...) }
