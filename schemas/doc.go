// Package schemas is the leaf of ehrwatch: the types every other package
// shares (access events, reference data, findings), the decoders that turn
// raw Kafka payloads into those types (canonical JSON and FHIR AuditEvent,
// with Decoder and FHIRConfig; CSV/TSV exports with CSVMapping), their JSON
// Schema files, and the embedded ClickHouse migrations. A well-formed input
// that is not a chart access (a login, a search without a patient) gives a
// *NotAccessError (errors.Is(err, ErrNotAccess)), not a *DecodeError. The
// mapping rules are in docs/feeds.md.
//
// It imports nothing from the rest of ehrwatch, and the rest of ehrwatch
// agrees on data only through it.
package schemas
