package triage

import "github.com/ehrwatch/ehrwatch/pipeline/store"

// ErrorText renders err for logs and terminals without ClickHouse server
// messages, which can quote row values; see store.ErrorText.
func ErrorText(err error) string { return store.ErrorText(err) }
