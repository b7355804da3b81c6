// Package pipeline holds no code. Its subpackages are ehrwatch's services,
// listed here in the order an access event meets them on its way from a
// Kafka message to an analyst's screen:
//
//   - ingest: the streaming core. A Kafka consumer group, one reader per
//     assigned partition, decoding (schemas), the partition's detectors
//     (through the one-method Processor), the batching sink into
//     ClickHouse, the dead-letter queue, offset commits, detector
//     snapshots and the process's readiness. Its doc.go states the
//     delivery guarantees.
//   - store: everything ClickHouse: connection options, migrations, the
//     batch writer, reference and snapshot tables.
//   - alerting: the after-store hook. Findings become alerts, alert state
//     is kept in ClickHouse, notifications go to Alertmanager, Standard
//     Webhooks receivers, Slack and syslog.
//   - triage: the alert queue, alert and case lifecycle, patient and user
//     access reports, read from ClickHouse.
//   - api: the authenticated, role-checked, audited HTTP API over triage,
//     with OpenID Connect sign-in.
//   - console: the web console served on the API listener.
//
// Shared internals live in internal/ (backoff, credentials); testenv starts
// nothing itself but finds the real services the integration tests need
// and fails with how to start them. docs/architecture.md draws the whole
// way and states the import rules, which a test checks.
package pipeline
