package schemas

import (
	"errors"
	"fmt"
	"strings"
)

// FieldError is a validation error tied to one key, such as
// "kafka.brokers[0]: missing port". Its Key is a dotted path.
//
// The convention for every configuration section and every validated value
// in ehrwatch: `Validate() error` reports every bad key (errors.Join of
// FieldErrors) with keys relative to the value itself, and the caller that
// nests the value under a key puts that key in front with UnderKey. So a
// section never needs to know where it sits in the file, and the file's
// top-level Validate names each bad key by its whole path.
type FieldError struct {
	// Key is the dotted path of the offending key.
	Key string
	// Msg says what is wrong with it.
	Msg string
}

// Error returns "key: message".
func (e *FieldError) Error() string { return e.Key + ": " + e.Msg }

// FieldErrorf returns a *FieldError for key.
func FieldErrorf(key, format string, args ...any) error {
	return &FieldError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

// UnderKey puts prefix in front of every FieldError's key in err (which
// may be an errors.Join tree) and turns any other error into a FieldError
// keyed prefix, returning a flat errors.Join of the results (nil for nil).
// A key that names several keys ("password, password_file") gets the
// prefix on each; an index ("[2].owner") attaches without a dot.
func UnderKey(prefix string, err error) error {
	if err == nil {
		return nil
	}
	var out []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, sub := range j.Unwrap() {
				walk(sub)
			}
			return
		}
		var fe *FieldError
		if errors.As(e, &fe) {
			out = append(out, &FieldError{Key: joinKeys(prefix, fe.Key), Msg: fe.Msg})
			return
		}
		out = append(out, &FieldError{Key: prefix, Msg: e.Error()})
	}
	walk(err)
	return errors.Join(out...)
}

func joinKeys(prefix, keys string) string {
	if prefix == "" {
		return keys
	}
	parts := strings.Split(keys, ", ")
	for i, k := range parts {
		switch {
		case k == "":
			parts[i] = prefix
		case strings.HasPrefix(k, "["):
			parts[i] = prefix + k
		default:
			parts[i] = prefix + "." + k
		}
	}
	return strings.Join(parts, ", ")
}
