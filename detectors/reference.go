package detectors

import (
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ReferenceOptions configures how a ReferenceIndex is built.
type ReferenceOptions struct {
	// CareSlackBefore widens every encounter backwards: an access up to this
	// long before the encounter starts is explained by it (pre-admission
	// work-up, scheduling). Default 24h.
	CareSlackBefore time.Duration `yaml:"care_slack_before"`
	// CareSlackAfter widens every encounter forwards: an access up to this
	// long after it ends is explained (discharge summaries, results, coding).
	// Open encounters never end. Default 24h.
	CareSlackAfter time.Duration `yaml:"care_slack_after"`
	// HashKey is the secret HMAC-SHA256 key for last-name and address
	// tokens; at least 16 bytes. It comes from a secret store, never from
	// the configuration file.
	HashKey []byte `yaml:"-"`
	// Vocabulary overrides the mapping of role and department names to
	// categories (see Vocabulary).
	Vocabulary VocabularyConfig `yaml:"vocabulary"`
}

// DefaultReferenceOptions returns 24h of slack on both sides and no key.
func DefaultReferenceOptions() ReferenceOptions {
	return ReferenceOptions{CareSlackBefore: 24 * time.Hour, CareSlackAfter: 24 * time.Hour}
}

// MinHashKeyLen is the shortest HMAC key a ReferenceIndex accepts.
const MinHashKeyLen = 16

// Validate checks the options; keys are relative to the "reference" section.
func (o ReferenceOptions) Validate() error {
	var errs []error
	errs = append(errs, nonNegative("care_slack_before", o.CareSlackBefore), nonNegative("care_slack_after", o.CareSlackAfter))
	if len(o.HashKey) < MinHashKeyLen {
		errs = append(errs, fieldErrorf("hash_key", "must be at least %d bytes (got %d)", MinHashKeyLen, len(o.HashKey)))
	}
	if err := o.Vocabulary.Validate(); err != nil {
		errs = append(errs, prefixErrors("vocabulary", err))
	}
	return errors.Join(errs...)
}

// Token is a keyed hash (the first 16 bytes of HMAC-SHA256) of a normalised
// demographic value. Equal tokens mean equal normalised values under the
// same key; the zero Token means "value unknown" and never matches.
type Token [16]byte

// IsZero reports whether the token is absent.
func (t Token) IsZero() bool { return t == Token{} }

// DemographicTokens are the keyed hashes the family detector compares.
type DemographicTokens struct {
	LastName Token // of NormalizeLastName(last name)
	Address  Token // of NormalizeAddress(address)
}

// DemographicHasher is implemented by Reference implementations that hold
// demographic tokens (ReferenceIndex does). The family detector uses it
// when present; it never needs raw names or addresses.
type DemographicHasher interface {
	UserTokens(userID string) (DemographicTokens, bool)
	PatientTokens(patientID string) (DemographicTokens, bool)
}

// ReferenceHolder holds the current ReferenceIndex and swaps it atomically,
// so reference data can be refreshed without a restart. Load is safe from
// any goroutine; pass holder.Load as Env.Reference.
type ReferenceHolder struct {
	p atomic.Pointer[ReferenceIndex]
}

// NewReferenceHolder returns a holder holding x (which may be nil).
func NewReferenceHolder(x *ReferenceIndex) *ReferenceHolder {
	h := &ReferenceHolder{}
	h.Store(x)
	return h
}

// Load returns the current reference data; before the first Store it is an
// empty index that knows no users, patients or encounters.
func (h *ReferenceHolder) Load() Reference {
	if x := h.p.Load(); x != nil {
		return x
	}
	return emptyReferenceIndex
}

// Index returns the current index, or nil before the first Store.
func (h *ReferenceHolder) Index() *ReferenceIndex { return h.p.Load() }

// Store replaces the reference data; nil resets it to empty.
func (h *ReferenceHolder) Store(x *ReferenceIndex) { h.p.Store(x) }

// NormalizeLastName prepares a last name for comparison: lower-cased,
// generational suffixes (jr, sr, ii, iii, iv) dropped, and everything but
// letters and digits removed, so "O'Brien-Smith Jr." becomes "obriensmith".
// It returns "" when nothing is left.
func NormalizeLastName(s string) string {
	words := normalizedWords(s)
	for len(words) > 1 {
		switch words[len(words)-1] {
		case "jr", "sr", "ii", "iii", "iv":
			words = words[:len(words)-1]
			continue
		}
		break
	}
	return strings.Join(words, "")
}

// addressWords maps common spellings to one form (USPS-style abbreviations;
// unit designators all become "apt").
var addressWords = map[string]string{
	"street": "st", "str": "st", "avenue": "ave", "av": "ave", "road": "rd", "drive": "dr",
	"boulevard": "blvd", "lane": "ln", "court": "ct", "place": "pl", "terrace": "ter",
	"highway": "hwy", "parkway": "pkwy", "circle": "cir", "square": "sq", "plaza": "plz",
	"apartment": "apt", "unit": "apt", "suite": "apt", "ste": "apt",
	"north": "n", "south": "s", "east": "e", "west": "w",
	"northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}

// NormalizeAddress prepares an address for comparison: the street line,
// city, state and postal code, lower-cased, punctuation removed, whitespace
// collapsed, common words abbreviated ("Street" → "st", "Avenue" → "ave",
// "Apartment"/"Unit"/"Suite"/"#" → "apt") and US ZIP+4 cut to five digits,
// so "12 Oak Street, Apt. 4" and "12 oak st #4" agree. It returns "" when
// the street line is empty: a city alone identifies no household.
func NormalizeAddress(a schemas.Address) string {
	line := strings.ReplaceAll(a.Line, "#", " apt ")
	words := normalizedWords(line)
	if len(words) == 0 {
		return ""
	}
	for i, w := range words {
		if r, ok := addressWords[w]; ok {
			words[i] = r
		}
	}
	// "apt apt 4" (from "Apt #4") collapses to "apt 4".
	words = slices.Compact(words)
	postal := strings.Join(normalizedWords(a.PostalCode), "")
	if len(postal) == 9 && isDigits(postal) {
		postal = postal[:5]
	}
	parts := []string{strings.Join(words, " "), strings.Join(normalizedWords(a.City), " "), strings.Join(normalizedWords(a.State), " "), postal}
	return strings.Join(parts, "|")
}

// normalizedWords lower-cases s, turns every run of characters other than
// letters and digits into a word break, and returns the words. Apostrophes
// and periods join rather than split ("O'Brien" → "obrien", "St." → "st").
func normalizedWords(s string) []string {
	var words []string
	var b strings.Builder
	flush := func() {
		if b.Len() > 0 {
			words = append(words, b.String())
			b.Reset()
		}
	}
	for _, r := range s {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r):
			b.WriteRune(unicode.ToLower(r))
		case r == '\'' || r == '’' || r == '.':
			// joins
		default:
			flush()
		}
	}
	flush()
	return words
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
