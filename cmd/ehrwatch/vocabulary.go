package main

import (
	"fmt"
	"io"
	"strings"

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
