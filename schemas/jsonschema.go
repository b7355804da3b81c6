package schemas

import (
	"embed"
	"io/fs"
	"sort"
	"strings"
)

//go:embed jsonschema/*.schema.json
var jsonSchemaFS embed.FS

// JSON Schema names, for JSONSchema.
const (
	SchemaAccessEvent = "access_event"
	SchemaUser        = "user"
	SchemaPatient     = "patient"
	SchemaEncounter   = "encounter"
	SchemaFinding     = "finding"
	// SchemaVocabularyEntry is one line of vocabulary.ndjson.
	SchemaVocabularyEntry = "vocabulary_entry"
)

// JSONSchema returns a copy of the JSON Schema (draft 2020-12) named name
// ("access_event", "user", "patient", "encounter", "finding",
// "vocabulary_entry"; see
// JSONSchemaNames), or nil if there is none. The schemas document the wire
// formats for producers and consumers; the Go decoders are stricter in ways
// JSON Schema cannot say (duplicate keys, byte-length limits, offsets that
// RFC 3339 requires, cross-field rules), and a test keeps the two in step.
func JSONSchema(name string) []byte {
	if strings.ContainsAny(name, "/\\.") {
		return nil
	}
	b, err := jsonSchemaFS.ReadFile("jsonschema/" + name + ".schema.json")
	if err != nil {
		return nil
	}
	return b
}

// JSONSchemaNames lists the names JSONSchema accepts, sorted.
func JSONSchemaNames() []string {
	entries, err := fs.Glob(jsonSchemaFS, "jsonschema/*.schema.json")
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(e, "jsonschema/"), ".schema.json"))
	}
	sort.Strings(names)
	return names
}
