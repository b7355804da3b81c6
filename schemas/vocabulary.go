package schemas

import (
	"io"
	"os"
	"path/filepath"
)

// VocabularyKind says whether a vocabulary entry names a role or a
// department.
type VocabularyKind string

// The vocabulary kinds.
const (
	VocabularyRole       VocabularyKind = "role"
	VocabularyDepartment VocabularyKind = "department"
)

// Valid reports whether k is a known kind.
func (k VocabularyKind) Valid() bool { return k == VocabularyRole || k == VocabularyDepartment }

// vocabularyRequired are the required members of a vocabulary entry;
// jsonschema/vocabulary_entry.schema.json must agree (a test checks).
var vocabularyRequired = []string{"kind", "name"}

// VocabularyEntry maps one of the hospital's role or department names to
// the categories the detectors reason with ("emergency",
// "release_of_information", …; see detectors.Categories). Names are
// compared case- and punctuation-insensitively. An entry with no
// categories says "this name is known and belongs to none", so it is not
// reported as unmapped.
type VocabularyEntry struct {
	Kind       VocabularyKind `json:"kind"`
	Name       string         `json:"name"`
	Categories []string       `json:"categories"`
	// Note is free text for people (why the mapping was chosen, who
	// confirmed it); ehrwatch ignores it.
	Note string `json:"note,omitempty"`
}

// Validate checks an entry: kind role or department; name required, at
// most MaxIDLen bytes without control characters; categories non-empty
// identifiers (whether they are known categories is checked by the
// detectors package, which owns them). The error is a *DecodeError naming
// the field.
func (e *VocabularyEntry) Validate() error {
	if de := e.validate(); de != nil {
		return de
	}
	return nil
}

func (e *VocabularyEntry) validate() *DecodeError {
	switch {
	case e.Kind == "":
		return newErr("kind", ClassMissingField, rEmpty, -1)
	case !e.Kind.Valid():
		return newErr("kind", ClassInvalidValue, rBadVocabularyKind, -1)
	}
	if de := checkStrings(
		stringField{"name", e.Name, MaxIDLen, true, true},
		stringField{"note", e.Note, MaxReferenceStringLen, false, false},
	); de != nil {
		return de
	}
	return checkIDList("categories", e.Categories, MaxNextOfKin)
}

// VocabularyFile is the optional vocabulary file inside a reference
// directory.
const VocabularyFile = "vocabulary.ndjson"

// LoadVocabulary reads vocabulary.ndjson (see ReadNDJSON); the same kind
// and name (exactly as written) on two lines is a duplicate_id error.
func LoadVocabulary(r io.Reader) ([]VocabularyEntry, error) {
	var out []VocabularyEntry
	seen := make(map[[2]string]struct{})
	err := ReadNDJSON(r, func(line int, e *VocabularyEntry) error {
		k := [2]string{string(e.Kind), e.Name}
		if _, dup := seen[k]; dup {
			return newErr("name", ClassDuplicateID, rDuplicateID, -1)
		}
		seen[k] = struct{}{}
		out = append(out, *e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// LoadVocabularyDir reads dir/vocabulary.ndjson; a missing file is an
// empty vocabulary (the built-in defaults apply alone).
func LoadVocabularyDir(dir string) ([]VocabularyEntry, error) {
	if _, err := os.Stat(filepath.Join(dir, VocabularyFile)); os.IsNotExist(err) {
		return nil, nil
	}
	return loadFile(dir, VocabularyFile, LoadVocabulary)
}
