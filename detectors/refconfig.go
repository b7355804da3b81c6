package detectors

import (
	"errors"
	"os"
	"strings"
	"time"
	_ "time/tzdata" // facility time zones must resolve on hosts without zoneinfo

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Reference-data sources.
const (
	// ReferenceFromFiles reads users.ndjson, patients.ndjson and
	// encounters.ndjson from a directory (see schemas.LoadReferenceDir).
	ReferenceFromFiles = "files"
	// ReferenceFromClickHouse reads the users, patients and encounters
	// tables (migration 0006) and the allowlist table (0008).
	ReferenceFromClickHouse = "clickhouse"
)

// ReferenceConfig is the "reference" section: where the reference data the
// detectors join against (users, patients, encounters) comes from, how
// often it is reloaded, the secret key for demographic tokens, the
// facilities' time zones and the care-relationship slack.
//
//	reference:
//	  source: clickhouse            # or files, with dir
//	  refresh_interval: 5m
//	  hash_key_file: /run/secrets/ehrwatch-hash-key
//	  facilities: {nyc: America/New_York}
//	  care_slack_before: 24h
//	  care_slack_after: 24h
type ReferenceConfig struct {
	// Source is "clickhouse" (the users, patients and encounters tables,
	// and the allowlist table) or "files" (Dir).
	Source string `yaml:"source"`
	// Dir holds users.ndjson, patients.ndjson and encounters.ndjson when
	// Source is "files".
	Dir string `yaml:"dir"`
	// RefreshInterval is how often the reference data (and the allowlist
	// table) is reloaded and swapped in without a restart. Default 5m.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// DegradedAfter is how many consecutive failed refreshes make the
	// process report not ready (/readyz 503). Until then, and afterwards
	// too, the detectors keep using the last good data. Default 3.
	DegradedAfter int `yaml:"degraded_after"`
	// FullReloadEvery: with source clickhouse, a refresh reads only the
	// rows written since the previous read (an incremental refresh,
	// applied copy-on-write) except every FullReloadEvery-th, which reads
	// the tables whole; 1 reads them whole every time. Files are always
	// read whole. Default 12 (hourly at the default refresh_interval).
	FullReloadEvery int `yaml:"full_reload_every"`
	// ChangeMargin widens every incremental read backwards: it reads the
	// rows written since the previous read began less this margin, so a
	// row whose insert was in flight then is not missed. Rows written with
	// an updated_at older than that (a loader setting its own) arrive with
	// the next whole read. Default 1m.
	ChangeMargin time.Duration `yaml:"change_margin"`
	// HashKeyFile holds the secret HMAC key (at least 16 bytes; a trailing
	// newline is ignored) for the keyed hashes of normalised last names and
	// addresses the family detector compares. Required by `ehrwatch run`.
	// Changing it changes every token, which is harmless: tokens are
	// recomputed on every load and never stored.
	HashKeyFile string `yaml:"hash_key_file"`
	// Facilities maps facility ids to IANA time zones ("America/New_York");
	// detectors reason in facility-local time (days, hours). Unknown
	// facilities are treated as UTC.
	Facilities map[string]string `yaml:"facilities"`
	// CareSlackBefore and CareSlackAfter widen every encounter (see
	// ReferenceOptions). Default 24h each.
	CareSlackBefore time.Duration `yaml:"care_slack_before"`
	CareSlackAfter  time.Duration `yaml:"care_slack_after"`
	// Vocabulary maps the hospital's role and department names to the
	// categories the detectors reason with, name by name, over the
	// hospital's vocabulary (vocabulary.ndjson with source files, the
	// vocabulary table with source clickhouse) and the built-in defaults.
	Vocabulary VocabularyConfig `yaml:"vocabulary"`
}

// DefaultReferenceConfig reads ClickHouse every 5 minutes with 24h of care
// slack; it has no hash key (ValidateRequired reports that).
func DefaultReferenceConfig() ReferenceConfig {
	o := DefaultReferenceOptions()
	return ReferenceConfig{
		Source:          ReferenceFromClickHouse,
		RefreshInterval: 5 * time.Minute,
		DegradedAfter:   3,
		FullReloadEvery: 12,
		ChangeMargin:    time.Minute,
		CareSlackBefore: o.CareSlackBefore,
		CareSlackAfter:  o.CareSlackAfter,
	}
}

// Validate reports every bad value, each naming its key relative to the
// reference section. It does not require a hash key or a directory: see
// ValidateRequired.
func (c ReferenceConfig) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	switch c.Source {
	case ReferenceFromFiles, ReferenceFromClickHouse:
	default:
		bad("source", "want files or clickhouse, got %q", c.Source)
	}
	if c.Dir != "" && c.Source != ReferenceFromFiles {
		bad("dir", "only used with source: files")
	}
	if c.Source == ReferenceFromFiles && c.Dir != "" {
		if st, err := os.Stat(c.Dir); err != nil {
			bad("dir", "%v", err)
		} else if !st.IsDir() {
			bad("dir", "%s is not a directory", c.Dir)
		}
	}
	if c.RefreshInterval < time.Second {
		bad("refresh_interval", "must be >= 1s (got %s)", c.RefreshInterval)
	}
	if c.DegradedAfter < 1 {
		bad("degraded_after", "must be >= 1 (got %d)", c.DegradedAfter)
	}
	if c.FullReloadEvery < 1 {
		bad("full_reload_every", "must be >= 1 (got %d)", c.FullReloadEvery)
	}
	if c.ChangeMargin < 0 {
		bad("change_margin", "must be >= 0 (got %s)", c.ChangeMargin)
	}
	if c.CareSlackBefore < 0 {
		bad("care_slack_before", "must be >= 0 (got %s)", c.CareSlackBefore)
	}
	if c.CareSlackAfter < 0 {
		bad("care_slack_after", "must be >= 0 (got %s)", c.CareSlackAfter)
	}
	errs = append(errs, schemas.UnderKey("vocabulary", c.Vocabulary.Validate()))
	if c.HashKeyFile != "" {
		if _, err := c.hashKey(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range sortedKeys(c.Facilities) {
		if strings.TrimSpace(id) == "" {
			bad("facilities", "empty facility id")
			continue
		}
		if _, err := time.LoadLocation(c.Facilities[id]); err != nil || c.Facilities[id] == "" {
			bad("facilities."+id, "unknown time zone %q (want an IANA name such as America/New_York)", c.Facilities[id])
		}
	}
	return errors.Join(errs...)
}

// ValidateRequired reports what running the detectors needs beyond valid
// values: the hash key file, and the directory when Source is "files".
func (c ReferenceConfig) ValidateRequired() error {
	var errs []error
	if c.HashKeyFile == "" {
		errs = append(errs, schemas.FieldErrorf("hash_key_file", "required: a file holding the secret key (at least %d bytes) for the keyed hashes of names and addresses; generate one with `head -c 32 /dev/urandom | base64 > FILE`",
			MinHashKeyLen))
	}
	if c.Source == ReferenceFromFiles && c.Dir == "" {
		errs = append(errs, schemas.FieldErrorf("dir", "required with source: files"))
	}
	return errors.Join(errs...)
}

// hashKey reads the key file; errors name the key, never the content.
func (c ReferenceConfig) hashKey() ([]byte, error) {
	raw, err := os.ReadFile(c.HashKeyFile)
	if err != nil {
		return nil, schemas.FieldErrorf("hash_key_file", "%v", err)
	}
	key := []byte(strings.TrimRight(string(raw), "\r\n"))
	if len(key) < MinHashKeyLen {
		return nil, schemas.FieldErrorf("hash_key_file", "the key must be at least %d bytes (the file holds %d)", MinHashKeyLen, len(key))
	}
	return key, nil
}

// Options reads the hash key file and returns the ReferenceOptions for
// NewReferenceIndex. Errors name keys under "reference".
func (c ReferenceConfig) Options() (ReferenceOptions, error) {
	if err := c.ValidateRequired(); err != nil {
		return ReferenceOptions{}, schemas.UnderKey("reference", err)
	}
	key, err := c.hashKey()
	if err != nil {
		return ReferenceOptions{}, schemas.UnderKey("reference", err)
	}
	return ReferenceOptions{CareSlackBefore: c.CareSlackBefore, CareSlackAfter: c.CareSlackAfter, HashKey: key, Vocabulary: c.Vocabulary}, nil
}

// Locations returns the facilities' time-zone lookup for Env.Location.
func (c ReferenceConfig) Locations() (func(facilityID string) *time.Location, error) {
	loc, err := FacilityLocations(c.Facilities)
	if err != nil {
		return nil, prefixErrors("reference", err)
	}
	return loc, nil
}

// LoadReferenceFiles builds a ReferenceIndex from dir's users.ndjson,
// patients.ndjson, encounters.ndjson and, when present, vocabulary.ndjson.
// The files are streamed line by line into a ReferenceBuilder, never held
// whole. A user, patient, or (for the same patient) encounter id seen
// before is a duplicate_id error. Errors name the file and line, never the
// data.
func LoadReferenceFiles(dir string, opts ReferenceOptions) (*ReferenceIndex, error) {
	vocab, err := schemas.LoadVocabularyDir(dir)
	if err != nil {
		return nil, err
	}
	b, err := NewReferenceBuilder(vocab, opts)
	if err != nil {
		return nil, err
	}
	err = schemas.StreamReferenceDir(dir, schemas.ReferenceVisitor{
		User: func(u *schemas.User) error {
			if b.HasUser(u.UserID) {
				return schemas.DuplicateIDError("user_id")
			}
			b.AddUser(u)
			return nil
		},
		Patient: func(p *schemas.Patient) error {
			if b.HasPatient(p.PatientID) {
				return schemas.DuplicateIDError("patient_id")
			}
			b.AddPatient(p)
			return nil
		},
		Encounter: func(e *schemas.Encounter) error {
			if b.HasEncounter(e.PatientID, e.EncounterID) {
				return schemas.DuplicateIDError("encounter_id")
			}
			b.AddEncounter(e)
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	return b.Build(), nil
}

// flatErrors lists the leaves of an errors.Join tree.
func flatErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatErrors(e)...)
		}
		return out
	}
	return []error{err}
}
