// Package schemas is the leaf of ehrwatch: the types every other package
// shares (access events, reference data, findings), the decoders that turn
// raw Kafka payloads into those types (canonical JSON and FHIR AuditEvent),
// their JSON Schema files, and the embedded ClickHouse migrations.
//
// It imports nothing from the rest of ehrwatch, and the rest of ehrwatch
// agrees on data only through it.
package schemas
