package detectors_test

import (
	"bytes"
	"context"
	"fmt"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// The detector quality gate: the whole engine, with every detector at its
// defaults, over the synthetic hospital (detectors/synth), scored against
// the generator's ground truth. It needs no services and is the regression
// guard for detector changes: a change that misses an injected incident,
// or escalates a benign confounder, fails here.

// qualityHospital is the synthetic hospital of the quality tests, generated
// once per test binary: the default two-facility fortnight, about 250 000
// events with 3 incidents of each kind. Generating and running it takes
// under a second (a few under -race), so -short does not shrink it: a
// hospital small enough to matter has one incident per kind and a handful
// of each confounder, too few for the benign budget below to mean
// anything.
var qualityHospital = sync.OnceValues(func() (*synth.Hospital, error) {
	return synth.Generate(synth.DefaultConfig())
})

// qualityEngine returns a factory for engines over h's reference data.
func qualityEngine(t testing.TB, h *synth.Hospital) func() *detectors.Engine {
	t.Helper()
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = []byte("quality-gate-hash-key-0123456789")
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		t.Fatal(err)
	}
	newEngine, err := replay.NewEngineFactory(idx, h.TimeZones(), detectors.DefaultEngineConfig(detectors.Registry()))
	if err != nil {
		t.Fatal(err)
	}
	return func() *detectors.Engine {
		e, err := newEngine()
		if err != nil {
			t.Fatal(err)
		}
		return e
	}
}

// runEngine feeds events to e and returns every finding it emits, in
// order; with flush, also those Flush emits at the end.
func runEngine(t testing.TB, e *detectors.Engine, events []schemas.AccessEvent, flush bool) []schemas.Finding {
	t.Helper()
	var out []schemas.Finding
	for i := range events {
		fs, err := e.Process(context.Background(), &events[i])
		if err != nil {
			t.Fatalf("event %s: %v", events[i].EventID, err)
		}
		out = append(out, fs...)
	}
	if flush {
		fs, err := e.Flush(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fs...)
	}
	return out
}

func TestDetectorQualityGate(t *testing.T) {
	t.Parallel()
	h, err := qualityHospital()
	if err != nil {
		t.Fatal(err)
	}
	newEngine := qualityEngine(t, h)
	start := time.Now()
	emitted := runEngine(t, newEngine(), h.Events, true)
	t.Logf("%d events, %d labels, %d findings emitted in %s", len(h.Events), len(h.Truth), len(emitted), time.Since(start))

	findings := synth.MergeVersions(emitted)

	baseSeverity := map[string]schemas.Severity{}
	for name, c := range detectors.DefaultEngineConfig(detectors.Registry()).Detectors {
		baseSeverity[name] = severityOf(t, c)
	}

	// Recall: every injected incident is found, per detector.
	incidents, found := map[string]int{}, map[string]int{}
	explainedByIncident := map[string]bool{} // finding ids that match an incident
	for i := range h.Truth {
		l := &h.Truth[i]
		if l.Benign {
			continue
		}
		incidents[l.Detector]++
		hit := false
		for _, f := range findings {
			if synth.Matches(&f.Finding, f.Events, l) {
				hit = true
				explainedByIncident[f.FindingID] = true
			}
		}
		if hit {
			found[l.Detector]++
		} else {
			t.Errorf("missed incident %s (%s, %s): %s", l.ID, l.Kind, l.Scenario, l.Note)
		}
	}
	for _, k := range synth.Kinds {
		if incidents[k] == 0 {
			t.Errorf("the hospital has no %s incident; the gate cannot check that detector", k)
		}
	}

	// Benign confounders after warm-up: no finding attributable to one (and
	// not also to an incident) may rank above its detector's configured
	// severity; and
	// at most 5% of a confounder kind's labels may raise an unsuppressed
	// finding at or above medium, the default alerting threshold. Break
	// glass is the exception: every break-the-glass access is reported, at
	// low when the reason is good, by design.
	// Both checks apply from the end of warm-up: before it, users' breadth
	// of access (chance ranking) and baselines are still being learned.
	benign, benignHit, benignAlerting := map[string]int{}, map[string]int{}, map[string]int{}
	warm := h.WarmStart()
	for i := range h.Truth {
		l := &h.Truth[i]
		if !l.Benign || l.Start.Before(warm) {
			continue
		}
		key := l.Kind + "/" + l.Scenario
		benign[key]++
		var worst *synth.MergedFinding
		for _, f := range findings {
			if explainedByIncident[f.FindingID] || !synth.Matches(&f.Finding, f.Events, l) {
				continue
			}
			if f.Severity.Rank() > baseSeverity[f.Detector].Rank() {
				t.Errorf("benign %s (%s) raised a %s finding above %s's configured severity %s: %s",
					l.ID, key, f.Severity, f.Detector, baseSeverity[f.Detector], f.Explanation)
			}
			if l.Detector == "break_glass" && f.Severity.Rank() > schemas.SeverityLow.Rank() {
				t.Errorf("benign break-glass %s (%s) raised a %s finding, want at most low: %s", l.ID, key, f.Severity, f.Explanation)
			}
			if worst == nil || f.Severity.Rank() > worst.Severity.Rank() {
				worst = f
			}
		}
		if worst == nil {
			continue
		}
		benignHit[key]++
		if !worst.Suppressed && worst.Severity.Rank() >= schemas.SeverityMedium.Rank() && l.Detector != "break_glass" {
			benignAlerting[key]++
			t.Logf("benign %s (%s) raised a %s %s finding: %s", l.ID, key, worst.Severity, worst.Detector, worst.Explanation)
		}
	}
	var keys []string
	for k := range benign {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var report strings.Builder
	for _, k := range synth.Kinds {
		fmt.Fprintf(&report, "\n  incident %-12s %d/%d found", k, found[k], incidents[k])
	}
	for _, k := range keys {
		fmt.Fprintf(&report, "\n  benign %-40s %3d labels, %3d with a finding, %d at >= medium", k, benign[k], benignHit[k], benignAlerting[k])
		if float64(benignAlerting[k]) > 0.05*float64(benign[k]) {
			t.Errorf("benign %s: %d of %d labels raised a finding at medium or above (budget 5%%)", k, benignAlerting[k], benign[k])
		}
	}
	t.Logf("quality:%s", report.String())
}

// severityOf reads the Severity of a detector configuration that embeds
// detectors.BaseConfig.
func severityOf(t testing.TB, c detectors.Config) schemas.Severity {
	v := reflect.ValueOf(c)
	for v.Kind() == reflect.Pointer {
		v = v.Elem()
	}
	f := v.FieldByName("Severity")
	if !f.IsValid() {
		t.Fatalf("configuration %T has no Severity", c)
	}
	return f.Interface().(schemas.Severity)
}

// TestEngineRestoreMatchesUninterruptedRun is the engine half of "detector
// state survives restarts": stopping anywhere, snapshotting, and going on
// with a fresh engine restored from the snapshot yields exactly the
// findings, in order, of a run that never stopped. The stops include the
// last event before a facility-local midnight and the event whose time
// moves the watermark past it (the restored engine closes the day's
// windows), and the event before an incident.
func TestEngineRestoreMatchesUninterruptedRun(t *testing.T) {
	t.Parallel()
	h, err := qualityHospital()
	if err != nil {
		t.Fatal(err)
	}
	newEngine := qualityEngine(t, h)
	events := h.Events

	loc := h.Facilities[0].Location
	midnight := h.Facilities[0].Start.In(loc).AddDate(0, 0, h.Config.WarmupDays+1)
	lateness := detectors.DefaultEngineConfig(detectors.Registry()).AllowedLateness
	firstAt := func(at time.Time) int {
		return slices.IndexFunc(events, func(ev schemas.AccessEvent) bool { return !ev.EventTime.Before(at) })
	}
	incident := -1
	for _, l := range h.Truth {
		if !l.Benign && l.Detector == "volume" {
			incident = slices.IndexFunc(events, func(ev schemas.AccessEvent) bool { return ev.EventID == l.EventIDs[0] })
			break
		}
	}
	splits := []struct {
		name string
		at   int // the first event the restored engine sees
	}{
		{"just before a local midnight", firstAt(midnight)},
		{"as the watermark passes midnight", firstAt(midnight.Add(lateness))},
		{"just before a volume incident", incident},
	}

	// The uninterrupted run, snapshotting (which changes nothing) where the
	// interrupted runs stop.
	type stop struct {
		snapshot []byte
		emitted  int // findings emitted before the stop
	}
	stops := map[int]stop{}
	for _, sp := range splits {
		if sp.at <= 0 || sp.at >= len(events) {
			t.Fatalf("%s: split %d outside the stream", sp.name, sp.at)
		}
		stops[sp.at] = stop{}
	}
	a := newEngine()
	var want []schemas.Finding
	for i := range events {
		if _, ok := stops[i]; ok {
			var snap bytes.Buffer
			if err := a.Snapshot(&snap); err != nil {
				t.Fatal(err)
			}
			stops[i] = stop{snapshot: snap.Bytes(), emitted: len(want)}
		}
		want = append(want, runEngine(t, a, events[i:i+1], false)...)
	}
	fs, err := a.Flush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want = append(want, fs...)
	if len(want) == 0 {
		t.Fatal("no findings at all")
	}

	for _, sp := range splits {
		t.Run(sp.name, func(t *testing.T) {
			t.Parallel()
			st := stops[sp.at]
			b := newEngine()
			if err := b.Restore(bytes.NewReader(st.snapshot)); err != nil {
				t.Fatal(err)
			}
			var again bytes.Buffer
			if err := b.Snapshot(&again); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(st.snapshot, again.Bytes()) {
				t.Errorf("a restored engine snapshots differently (%d vs %d bytes)", len(st.snapshot), again.Len())
			}
			got := append(slices.Clone(want[:st.emitted]), runEngine(t, b, events[sp.at:], true)...)
			if len(got) != len(want) {
				t.Fatalf("stopped at event %d (%s): %d findings, uninterrupted %d", sp.at, events[sp.at].EventTime, len(got), len(want))
			}
			for i := range want {
				if !reflect.DeepEqual(got[i], want[i]) {
					t.Fatalf("stopped at event %d: finding %d differs:\n got %+v\nwant %+v", sp.at, i, got[i], want[i])
				}
			}
		})
	}
}
