package schemas

import (
	"errors"
	"strconv"
)

// ErrorClass names the kind of problem a decoder, loader or validator found.
// The set is small and fixed, so a class can be used as a metric label or a
// dead-letter-queue header value as it is.
type ErrorClass string

// The error classes. Every *DecodeError carries one of them.
const (
	// ClassSyntax: the input is not well-formed JSON (truncated, trailing
	// data, bad escape, unescaped control character, malformed number…).
	ClassSyntax ErrorClass = "syntax"
	// ClassInvalidUTF8: a string is not valid UTF-8, or escapes an unpaired
	// UTF-16 surrogate.
	ClassInvalidUTF8 ErrorClass = "invalid_utf8"
	// ClassWrongType: a value has the wrong JSON type (also: the top-level
	// value is not an object).
	ClassWrongType ErrorClass = "wrong_type"
	// ClassMissingField: a required field is absent or null.
	ClassMissingField ErrorClass = "missing_field"
	// ClassInvalidValue: a value has the right type but is not allowed
	// (unknown enum value, empty id, bad IP address, inconsistent fields…).
	ClassInvalidValue ErrorClass = "invalid_value"
	// ClassInvalidTime: a date-time is not RFC 3339 with an explicit offset,
	// or is outside the supported range.
	ClassInvalidTime ErrorClass = "invalid_time"
	// ClassTooLarge: the message, a line, a string or an array exceeds its
	// limit.
	ClassTooLarge ErrorClass = "too_large"
	// ClassTooDeep: JSON nesting exceeds the depth limit.
	ClassTooDeep ErrorClass = "too_deep"
	// ClassUnknownField: an object has a member the schema does not know.
	ClassUnknownField ErrorClass = "unknown_field"
	// ClassDuplicateField: an object has the same member twice.
	ClassDuplicateField ErrorClass = "duplicate_field"
	// ClassDuplicateID: two reference-data records share a key.
	ClassDuplicateID ErrorClass = "duplicate_id"
	// ClassUnsupportedFormat: the message is JSON but not a format ehrwatch
	// reads (a FHIR resource other than AuditEvent, an undecidable FHIR
	// version, a FHIR resource given to the canonical decoder…).
	ClassUnsupportedFormat ErrorClass = "unsupported_format"
	// ClassOther is what ErrorClassOf reports for an error that is not a
	// *DecodeError (an I/O error, say). Decoders never return it.
	ClassOther ErrorClass = "other"
)

// ErrorClasses lists every ErrorClass, for pre-registering metric label
// values.
var ErrorClasses = []ErrorClass{
	ClassSyntax, ClassInvalidUTF8, ClassWrongType, ClassMissingField,
	ClassInvalidValue, ClassInvalidTime, ClassTooLarge, ClassTooDeep,
	ClassUnknownField, ClassDuplicateField, ClassDuplicateID,
	ClassUnsupportedFormat, ClassOther,
}

// String returns the class name.
func (c ErrorClass) String() string { return string(c) }

// DecodeError is the one error type of this package's decoders, loaders and
// Validate methods. Decode errors are permanent: the same input always fails
// the same way, so the pipeline sends the message to the dead-letter queue
// rather than retrying.
//
// A DecodeError never holds data from the input: Field is a name from the
// schema (or a FHIR element path built from fixed names), Detail is a fixed
// sentence from this package, and Line and Offset are positions. The one
// exception is an unknown field's name, which is echoed only when it looks
// like a schema member name: at most 32 bytes of ASCII letters, '_', '-'
// and '.', starting with a lower-case letter or '_' (snake_case or
// camelCase). Anything else — in particular any name with a digit, a space,
// non-ASCII or a capital first letter, as when a producer keys a map by
// patient id or name — becomes "(redacted)".
type DecodeError struct {
	// Field names the offending field: a canonical field name such as
	// "patient_id", a nested name such as "address.city", or a FHIR element
	// path such as "agent.who.identifier.value". It is empty when the
	// problem concerns the whole message (syntax, size, top-level type).
	Field string
	// Class is the kind of problem.
	Class ErrorClass
	// Detail is a short fixed description of the problem; it never contains
	// input data.
	Detail string
	// Line is the 1-based line number in an NDJSON input, or 0.
	Line int
	// Offset is the byte offset in the message (or line) where the problem
	// was found, or -1 when it is not tied to a position.
	Offset int
}

// Error renders "schemas: [line N: ][field F: ]class: detail".
func (e *DecodeError) Error() string {
	b := make([]byte, 0, 96)
	b = append(b, "schemas: "...)
	if e.Line > 0 {
		b = append(b, "line "...)
		b = strconv.AppendInt(b, int64(e.Line), 10)
		b = append(b, ": "...)
	}
	if e.Field != "" {
		b = append(b, "field "...)
		b = append(b, e.Field...)
		b = append(b, ": "...)
	}
	b = append(b, e.Class...)
	if e.Detail != "" {
		b = append(b, ": "...)
		b = append(b, e.Detail...)
	}
	return string(b)
}

// Is reports whether target is a *DecodeError with the same Class and, if
// target.Field is not empty, the same Field. It lets callers write
// errors.Is(err, &schemas.DecodeError{Class: schemas.ClassMissingField}).
func (e *DecodeError) Is(target error) bool {
	t, ok := target.(*DecodeError)
	if !ok || t == nil {
		return false
	}
	return t.Class == e.Class && (t.Field == "" || t.Field == e.Field)
}

// ErrorClassOf returns the class of the first *DecodeError in err's chain,
// ClassOther for any other non-nil error, and "" for nil. The pipeline uses
// it for dead-letter headers and metric labels.
func ErrorClassOf(err error) ErrorClass {
	if err == nil {
		return ""
	}
	var de *DecodeError
	if errors.As(err, &de) && de != nil && de.Class != "" {
		return de.Class
	}
	return ClassOther
}

// reason is a fixed problem description; its text becomes DecodeError.Detail.
// Keeping them in one table means every possible Detail is known, which the
// PHI-leak tests rely on.
type reason uint8

const (
	rNone reason = iota
	rEmptyInput
	rNotObject
	rUnexpectedEOF
	rUnexpectedChar
	rTrailingData
	rBadEscape
	rControlChar
	rBadUTF8
	rLoneSurrogate
	rBadNumber
	rBadLiteral
	rWantString
	rWantBool
	rWantObject
	rWantArray
	rWantStringOrObject
	rRequired
	rEmpty
	rUnknownAction
	rUnknownOutcome
	rBadIP
	rIPZone
	rControlInID
	rTimeFormat
	rTimeNoOffset
	rTimeRange
	rMessageTooLarge
	rValueTooLarge
	rTooManyItems
	rTooDeep
	rTooManyValues
	rUnknownField
	rDuplicateField
	rDuplicateID
	rNotAuditEvent
	rFHIRVersion
	rFHIRInCanonical
	rNotFHIR
	rBadReference
	rContainedReference
	rSeveralPatients
	rActionCode
	rOutcomeCode
	rEndBeforeStart
	rTerminatedAt
	rBadDate
	rBadStatus
	rBadSeverity
	rScoreRange
	rLineTooLong
	rNoAction
	rEmptyItem
	rBadFindingID
	rNotFinite
	rBadVocabularyKind
	rCSVFieldCount
	rCSVQuote
	rUnmappedAction
	rLocalTimeGap
	numReasons
)

var reasonText = [numReasons]string{
	rNone:               "",
	rEmptyInput:         "empty input",
	rNotObject:          "top-level value is not an object",
	rUnexpectedEOF:      "unexpected end of input",
	rUnexpectedChar:     "unexpected character",
	rTrailingData:       "data after the top-level value",
	rBadEscape:          "invalid escape sequence",
	rControlChar:        "unescaped control character in string",
	rBadUTF8:            "string is not valid UTF-8",
	rLoneSurrogate:      "unpaired UTF-16 surrogate escape",
	rBadNumber:          "malformed number",
	rBadLiteral:         "malformed literal",
	rWantString:         "must be a string",
	rWantBool:           "must be a boolean",
	rWantObject:         "must be an object",
	rWantArray:          "must be an array",
	rWantStringOrObject: "must be a string or an object",
	rRequired:           "required field is absent",
	rEmpty:              "required field is empty",
	rUnknownAction:      "not a known action",
	rUnknownOutcome:     "not a known outcome",
	rBadIP:              "not an IP address",
	rIPZone:             "IP address must not carry a zone",
	rControlInID:        "control character in identifier",
	rTimeFormat:         "not an RFC 3339 date-time",
	rTimeNoOffset:       "date-time has no UTC offset",
	rTimeRange:          "date-time outside 1900-01-01..2299-12-31 UTC",
	rMessageTooLarge:    "message exceeds size limit",
	rValueTooLarge:      "value exceeds size limit",
	rTooManyItems:       "array exceeds item limit",
	rTooDeep:            "nesting exceeds depth limit",
	rTooManyValues:      "message has too many JSON values",
	rUnknownField:       "field is not part of the schema",
	rDuplicateField:     "field appears more than once",
	rDuplicateID:        "id already used on an earlier line",
	rNotAuditEvent:      "FHIR resourceType is not AuditEvent",
	rFHIRVersion:        "cannot tell FHIR R4 from R5 (need type or code)",
	rFHIRInCanonical:    "FHIR resource given to the canonical decoder",
	rNotFHIR:            "not a FHIR resource (no resourceType)",
	rBadReference:       "reference has no usable id",
	rContainedReference: "contained references are not supported",
	rSeveralPatients:    "more than one patient in one AuditEvent",
	rActionCode:         "not a FHIR AuditEvent action code",
	rOutcomeCode:        "not a FHIR AuditEvent outcome code",
	rEndBeforeStart:     "end is before start",
	rTerminatedAt:       "required when status is terminated",
	rBadDate:            "not a YYYY-MM-DD calendar date",
	rBadStatus:          "not a known user status",
	rBadSeverity:        "not a known severity",
	rScoreRange:         "score must be 0..100",
	rLineTooLong:        "line exceeds size limit",
	rNoAction:           "no action code and no type code that implies one",
	rEmptyItem:          "array item is empty",
	rBadFindingID:       "not 32 lower-case hex digits",
	rNotFinite:          "number is NaN or infinite",
	rBadVocabularyKind:  "not a known vocabulary kind (role, department)",
	rCSVFieldCount:      "row has a different number of fields than the header",
	rCSVQuote:           "malformed quoting",
	rUnmappedAction:     "value is not in the mapping's action vocabulary",
	rLocalTimeGap:       "local time does not exist in the zone (daylight-saving gap)",
}

// newErr builds a *DecodeError; off < 0 means "no position".
func newErr(field string, class ErrorClass, r reason, off int) *DecodeError {
	return &DecodeError{Field: field, Class: class, Detail: reasonText[r], Offset: off}
}

// maxEchoedName is the longest unknown field name an error repeats.
const maxEchoedName = 32

// redactedName replaces an unknown field name that is not safe to repeat.
const redactedName = "(redacted)"

// echoName returns name if it looks like a schema member name and is
// short, and redactedName otherwise, so that a producer that (wrongly) uses
// data as keys — an MRN, a record number, a person's name with a space —
// does not get that data into an error string. Digits are refused outright
// because identifiers nearly always contain them and member names never
// need them; a capital first letter, because names have one and member
// names do not. A lower-case key made only of letters (a bare surname
// typed in lower case, say) is the residual risk, accepted for the sake of
// naming misspelt members.
func echoName(name []byte) string {
	if len(name) == 0 || len(name) > maxEchoedName {
		return redactedName
	}
	for i, c := range name {
		switch {
		case c >= 'a' && c <= 'z', c == '_':
		case c >= 'A' && c <= 'Z', c == '-', c == '.':
			if i == 0 {
				return redactedName
			}
		default:
			return redactedName
		}
	}
	return string(name)
}
