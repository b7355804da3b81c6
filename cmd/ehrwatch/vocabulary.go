package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// printUnmapped writes the unmapped-names report: a count line and the
// most frequent names (at most limit), each with its event and reference
// counts.
func printUnmapped(w io.Writer, names []detectors.UnmappedName, limit int) {
	if len(names) == 0 {
		fmt.Fprintln(w, "vocabulary: every role and department name seen maps to a category")
		return
	}
	roles, depts := 0, 0
	for _, n := range names {
		if n.Kind == "role" {
			roles++
		} else {
			depts++
		}
	}
	fmt.Fprintf(w, "vocabulary: %d role and %d department name(s) map to no category, so no detector sees an emergency, disclosure or after-death role in them (map them in vocabulary.ndjson or reference.vocabulary; `ehrwatch vocabulary suggest` proposes a mapping):\n", roles, depts)
	for i, n := range names {
		if i == limit {
			fmt.Fprintf(w, "  … and %d more\n", len(names)-limit)
			break
		}
		fmt.Fprintf(w, "  %-10s %-40q %9d events %6d reference records\n", n.Kind, n.Name, n.Events, n.ReferenceRecords)
	}
}

// maxUnmappedSeries bounds the name label of
// ehrwatch_vocabulary_unmapped_name_events: the most frequent names get a
// series each, the rest are summed under name="(other)".
const maxUnmappedSeries = 25

var (
	vocabUnmappedNamesDesc = prometheus.NewDesc("ehrwatch_vocabulary_unmapped_names",
		"Role and department names seen in events or reference data that no vocabulary category covers, by kind.", []string{"kind"}, nil)
	vocabUnmappedEventsDesc = prometheus.NewDesc("ehrwatch_vocabulary_unmapped_name_events",
		"Events since start carrying an unmapped role or department name, for the 25 most frequent names (the rest under name=\"(other)\"). Names are the hospital's role and department names, never patient data.",
		[]string{"kind", "name"}, nil)
	vocabOverflowDesc = prometheus.NewDesc("ehrwatch_vocabulary_monitor_overflow_total",
		"Role or department names not counted because the monitor already tracks its maximum of distinct names.", nil, nil)
)

// vocabularyCollector exports a VocabularyMonitor's report.
type vocabularyCollector struct{ m *detectors.VocabularyMonitor }

// Describe implements prometheus.Collector.
func (c vocabularyCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- vocabUnmappedNamesDesc
	ch <- vocabUnmappedEventsDesc
	ch <- vocabOverflowDesc
}

// Collect implements prometheus.Collector.
func (c vocabularyCollector) Collect(ch chan<- prometheus.Metric) {
	names := c.m.Unmapped()
	count := map[schemas.VocabularyKind]int{}
	other := map[schemas.VocabularyKind]int64{}
	for i, n := range names {
		count[n.Kind]++
		if i < maxUnmappedSeries {
			ch <- prometheus.MustNewConstMetric(vocabUnmappedEventsDesc, prometheus.GaugeValue, float64(n.Events), string(n.Kind), n.Name)
		} else {
			other[n.Kind] += n.Events
		}
	}
	for _, k := range []schemas.VocabularyKind{schemas.VocabularyRole, schemas.VocabularyDepartment} {
		ch <- prometheus.MustNewConstMetric(vocabUnmappedNamesDesc, prometheus.GaugeValue, float64(count[k]), string(k))
		if v, ok := other[k]; ok {
			ch <- prometheus.MustNewConstMetric(vocabUnmappedEventsDesc, prometheus.GaugeValue, float64(v), string(k), "(other)")
		}
	}
	ch <- prometheus.MustNewConstMetric(vocabOverflowDesc, prometheus.CounterValue, float64(c.m.Overflow()))
}

// unmappedDetail is the /readyz detail line: how many names are
// unmapped and the most frequent few, or "" when all are mapped.
func unmappedDetail(m *detectors.VocabularyMonitor) string {
	names := m.Unmapped()
	if len(names) == 0 {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%d role/department name(s) map to no category (see ehrwatch_vocabulary_unmapped_name_events):", len(names))
	for i, n := range names {
		if i == 5 {
			b.WriteString(" …")
			break
		}
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, " %s %q (%d events)", n.Kind, n.Name, n.Events)
	}
	return b.String()
}

const vocabularyUsage = `usage: ehrwatch vocabulary suggest --events FILE --reference DIR [flags]

Proposes a mapping, for a person to confirm, of the role and department
names seen in an exported access log and its reference data that no
vocabulary rule covers (built-in defaults, the reference directory's
vocabulary.ndjson, reference.vocabulary in --config). Each proposal is a
line in vocabulary.ndjson's format, with a note saying why: the most
similar built-in name, and behaviour (a department where break-glass is
common and encounters are short is probably an emergency department; one
whose encounters last days, an inpatient ward; a role that mostly prints
or exports, release of information). Review the lines, fix or delete
them, and append them to vocabulary.ndjson (or the vocabulary table).

flags:
`

func runVocabulary(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand("vocabulary", args, vocabularyUsage, stdout, stderr, "suggest"); err != nil {
		return err
	}
	var events, reference, config string
	var all bool
	fs := flag.NewFlagSet("vocabulary suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, vocabularyUsage)
	fs.StringVar(&events, "events", "", "events file (NDJSON, canonical or FHIR AuditEvent); - for standard input")
	fs.StringVar(&reference, "reference", "", "directory with users.ndjson, patients.ndjson, encounters.ndjson and optionally vocabulary.ndjson")
	fs.StringVar(&config, "config", "", "ehrwatch configuration file (its reference.vocabulary is applied)")
	fs.BoolVar(&all, "all", false, "propose for every name seen, mapped ones too (their current mapping in the note)")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if events == "" || reference == "" || fs.NArg() > 0 {
		fs.Usage()
		return usageError{"vocabulary suggest: --events FILE and --reference DIR are required"}
	}
	_, refCfg, _, err := loadDetectionConfig(config)
	if err != nil {
		return err
	}
	set, err := schemas.LoadReferenceDir(reference)
	if err != nil {
		return fmt.Errorf("vocabulary suggest: reference data in %s: %w", reference, err)
	}
	entries, err := schemas.LoadVocabularyDir(reference)
	if err != nil {
		return fmt.Errorf("vocabulary suggest: %w", err)
	}
	vocab, err := detectors.NewVocabulary(entries, refCfg.Vocabulary)
	if err != nil {
		return fmt.Errorf("vocabulary suggest: %w", err)
	}

	type key struct {
		kind schemas.VocabularyKind
		name string
	}
	beh := map[key]*detectors.NameBehaviour{}
	get := func(kind schemas.VocabularyKind, name string) *detectors.NameBehaviour {
		k := key{kind, name}
		b := beh[k]
		if b == nil {
			b = &detectors.NameBehaviour{}
			beh[k] = b
		}
		return b
	}
	users := map[string]*schemas.User{}
	for i := range set.Users {
		u := &set.Users[i]
		users[u.UserID] = u
		if u.Role != "" {
			get(schemas.VocabularyRole, u.Role)
		}
		if u.Department != "" {
			get(schemas.VocabularyDepartment, u.Department)
		}
	}
	stays := map[string][]time.Duration{}
	for _, e := range set.Encounters {
		if e.Department == "" {
			continue
		}
		get(schemas.VocabularyDepartment, e.Department)
		if e.End != nil {
			stays[e.Department] = append(stays[e.Department], e.End.Sub(e.Start))
		}
	}
	for dept, ds := range stays {
		slices.Sort(ds)
		b := get(schemas.VocabularyDepartment, dept)
		b.Encounters, b.MedianEncounter = len(ds), ds[len(ds)/2]
	}

	var in io.Reader = os.Stdin
	if events != "-" {
		f, err := os.Open(events)
		if err != nil {
			return fmt.Errorf("vocabulary suggest: %w", err)
		}
		defer f.Close()
		in = f
	}
	lr := newLineReader(in, schemas.MaxFHIRMessageSize)
	bad, ignored := 0, 0
	for {
		line, _, tooLong, err := lr.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("vocabulary suggest: reading events: %w", err)
		}
		if tooLong || isBlankLine(line) {
			bad += boolInt(tooLong)
			continue
		}
		ev, err := schemas.DecodeEvent(line)
		if errors.Is(err, schemas.ErrNotAccess) {
			ignored++ // a login, a search without a patient: not an error
			continue
		}
		if err != nil {
			bad++
			continue
		}
		role, dept := ev.UserRole, ev.UserDepartment
		if u := users[ev.UserID]; u != nil {
			role, dept = cmp.Or(role, u.Role), cmp.Or(dept, u.Department)
		}
		disclosure := ev.Action == schemas.ActionPrint || ev.Action == schemas.ActionExport
		for _, kn := range []key{{schemas.VocabularyRole, role}, {schemas.VocabularyDepartment, dept}} {
			if kn.name == "" {
				continue
			}
			b := get(kn.kind, kn.name)
			b.Events++
			if ev.BreakGlass {
				b.BreakGlass++
			}
			if disclosure {
				b.Disclosures++
			}
		}
	}

	keys := make([]key, 0, len(beh))
	for k := range beh {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b key) int {
		if c := cmp.Compare(beh[b].Events, beh[a].Events); c != 0 {
			return c
		}
		return cmp.Or(cmp.Compare(a.kind, b.kind), cmp.Compare(a.name, b.name))
	})
	bw := bufio.NewWriter(stdout)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	proposed, mapped := 0, 0
	for _, k := range keys {
		m := vocab.Lookup(k.kind, k.name)
		if m.Mapped() {
			mapped++
			if !all {
				continue
			}
		}
		e := detectors.SuggestVocabulary(k.kind, k.name, *beh[k])
		if m.Mapped() {
			e.Note = fmt.Sprintf("currently %s (%s); %s", m.Categories, m.Source, e.Note)
		}
		if err := enc.Encode(e); err != nil {
			return err
		}
		proposed++
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "vocabulary suggest: %d names seen, %d mapped, %d proposal(s) written", len(keys), mapped, proposed)
	if ignored > 0 {
		fmt.Fprintf(stderr, "; %d event line(s) were not chart accesses and were skipped", ignored)
	}
	if bad > 0 {
		fmt.Fprintf(stderr, "; %d event line(s) could not be decoded and were skipped", bad)
	}
	fmt.Fprintln(stderr)
	return nil
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
