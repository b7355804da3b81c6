// Package testenv is test-only support for integration tests that run against
// real services (Kafka, ClickHouse, Alertmanager) and real tools (a headless
// Chromium and axe-core for the console's browser tests) instead of fakes.
//
// Each helper reads the service address from an environment variable, checks
// that the service answers, and fails the test with instructions for starting
// it when it does not. Helpers never skip silently: the only skip is the
// explicit `go test -short`. Start the services with the scripts under
// deployments/dev (or `make test`, which does it for you), e.g.
//
//	eval "$(deployments/dev/kafka.sh env)"
//	go test ./...
//
// Nothing in this package may be imported by non-test code.
package testenv
