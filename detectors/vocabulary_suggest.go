package detectors

import (
	"fmt"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// NameBehaviour is what the access log and the reference data say about
// one role or department name, for SuggestVocabulary.
type NameBehaviour struct {
	Events      int64 // access events carrying the name
	BreakGlass  int64 // … of which break-the-glass
	Disclosures int64 // … of which print or export
	// Encounters and MedianEncounter describe the department's encounters
	// (departments only; closed encounters).
	Encounters      int
	MedianEncounter time.Duration
}

// Thresholds of the behaviour rules of SuggestVocabulary.
const (
	suggestMinEvents        = 50   // fewer events say nothing about behaviour
	suggestBreakGlassShare  = 0.01 // break-glass on at least 1 % of events …
	suggestShortEncounter   = 12 * time.Hour
	suggestInpatientStay    = 24 * time.Hour
	suggestDisclosureShare  = 0.3 // print/export on at least 30 % of events
	suggestMinSimilarity    = 0.5 // trigram similarity to a built-in name
	suggestMinEncountersFor = 5
)

// SuggestVocabulary proposes categories for a name no rule covers, for a
// person to confirm: the categories of the most similar built-in name
// (character-trigram similarity of the normalised names, at least 0.5),
// plus what the name's behaviour suggests: a department where break-glass
// is common (≥ 1 % of at least 50 events) and encounters are short
// (median < 12h) is probably an emergency department; one whose
// encounters last a day or more, an inpatient ward; a role or department
// that prints or exports on ≥ 30 % of its events, release of
// information. The entry's note says why, in words; an entry with no
// categories means "no suggestion: decide".
func SuggestVocabulary(kind schemas.VocabularyKind, name string, b NameBehaviour) schemas.VocabularyEntry {
	var cats CategorySet
	var why []string
	if best, score, c := similarBuiltin(kind, name); score >= suggestMinSimilarity {
		cats |= c
		if score == wordMatch {
			why = append(why, fmt.Sprintf("contains the built-in name %q (%s)", best, c))
		} else {
			why = append(why, fmt.Sprintf("spelled like the built-in %q (similarity %.2f: %s)", best, score, c))
		}
	}
	if b.Events >= suggestMinEvents {
		bg := float64(b.BreakGlass) / float64(b.Events)
		disc := float64(b.Disclosures) / float64(b.Events)
		if kind == schemas.VocabularyDepartment && bg >= suggestBreakGlassShare && b.Encounters >= suggestMinEncountersFor && b.MedianEncounter < suggestShortEncounter {
			cats |= mustCategories(CategoryEmergency)
			why = append(why, fmt.Sprintf("break-glass on %.1f%% of %d events and encounters of median %s: an emergency department", 100*bg, b.Events, humanDuration(b.MedianEncounter)))
		}
		if disc >= suggestDisclosureShare {
			cats |= mustCategories(CategoryReleaseOfInformation)
			why = append(why, fmt.Sprintf("prints or exports on %.0f%% of %d events: disclosure work", 100*disc, b.Events))
		}
	}
	if kind == schemas.VocabularyDepartment && b.Encounters >= suggestMinEncountersFor && b.MedianEncounter >= suggestInpatientStay &&
		!cats.Intersects(mustCategories(CategoryCriticalCare, CategoryInpatientWard)) {
		cats |= mustCategories(CategoryInpatientWard)
		why = append(why, fmt.Sprintf("%d encounters of median %s: inpatient stays", b.Encounters, humanDuration(b.MedianEncounter)))
	}
	e := schemas.VocabularyEntry{Kind: kind, Name: name, Categories: []string{}}
	for _, c := range cats.List() {
		e.Categories = append(e.Categories, string(c))
	}
	if len(why) == 0 {
		e.Note = fmt.Sprintf("suggested: no suggestion (%d events); choose categories, or leave [] for none", b.Events)
	} else {
		e.Note = "suggested: " + strings.Join(why, "; ") + "; confirm"
	}
	return e
}

// genericWords say little about what a role or department does; they are
// left out when names are compared for similarity.
var genericWords = map[string]bool{
	"services": true, "department": true, "technician": true, "specialist": true, "center": true,
	"representative": true, "rep": true, "coordinator": true, "assistant": true, "staff": true, "office": true,
	"team": true, "general": true, "administration": true, "management": true, "unit": true, "division": true,
	"senior": true, "sr": true, "jr": true, "lead": true, "ii": true, "iii": true, "i": true, "medical": true,
}

// wordMatch is similarBuiltin's score for a built-in name found word for
// word in the name.
const wordMatch = 0.9

// distinctive returns the normalised name without generic words.
func distinctive(name string) []string {
	var out []string
	for _, w := range strings.Fields(NormalizeVocabularyName(name)) {
		if !genericWords[w] {
			out = append(out, w)
		}
	}
	return out
}

// similarBuiltin returns the built-in name most like name, its
// similarity and its categories: a distinctive word of the name that is a
// built-in name of the same kind (then of the other kind) scores 0.9
// ("PFS Representative" has "pfs"); otherwise the character-trigram
// similarity of the distinctive words to built-in names of three letters
// or more.
func similarBuiltin(kind schemas.VocabularyKind, name string) (string, float64, CategorySet) {
	words := distinctive(name)
	if len(words) == 0 {
		return "", 0, 0
	}
	k := kindIndex(kind)
	for _, kk := range []int{k, 1 - k} {
		for _, d := range builtinExact[kk] {
			for _, n := range d.names {
				key := strings.Join(distinctive(n), " ")
				if key != "" && containsWords(words, strings.Fields(key)) {
					return n, wordMatch, d.cats
				}
			}
		}
	}
	key := strings.Join(words, " ")
	var best string
	var bestScore float64
	var bestCats CategorySet
	for _, list := range [][]vocabDefault{builtinExact[k], builtinPhrases[k]} {
		for _, d := range list {
			for _, n := range d.names {
				if len(n) < 3 {
					continue // two-letter abbreviations match too much by chance
				}
				if s := trigramSimilarity(key, strings.Join(distinctive(n), " ")); s > bestScore {
					best, bestScore, bestCats = n, s, d.cats
				}
			}
		}
	}
	return best, bestScore, bestCats
}

// trigramSimilarity is the Dice coefficient of the two strings' character
// trigrams (with word boundaries padded), between 0 and 1.
func trigramSimilarity(a, b string) float64 {
	ta, tb := trigrams(a), trigrams(b)
	if len(ta) == 0 || len(tb) == 0 {
		return 0
	}
	common := 0
	for g, n := range ta {
		common += min(n, tb[g])
	}
	total := 0
	for _, n := range ta {
		total += n
	}
	for _, n := range tb {
		total += n
	}
	return 2 * float64(common) / float64(total)
}

func trigrams(s string) map[string]int {
	out := map[string]int{}
	for _, w := range strings.Fields(s) {
		w = "  " + w + " "
		for i := 0; i+3 <= len(w); i++ {
			out[w[i:i+3]]++
		}
	}
	return out
}
