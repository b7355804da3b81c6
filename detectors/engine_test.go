package detectors_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// fakeConfig configures fakeDetector.
type fakeConfig struct {
	detectors.BaseConfig `yaml:",inline"`
}

// fakeDetector emits what emit returns, fails when fail is set, and
// records every watermark it is flushed to.
type fakeDetector struct {
	name    string
	detects int
	wms     []time.Time
	fail    error
	emit    func(ev *schemas.AccessEvent) []schemas.Finding
	flushed func(wm time.Time) []schemas.Finding
}

func (d *fakeDetector) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	d.detects++
	var fs []schemas.Finding
	if d.emit != nil {
		fs = d.emit(ev)
	}
	return fs, d.fail
}

func (d *fakeDetector) FlushUntil(_ context.Context, wm time.Time) ([]schemas.Finding, error) {
	d.wms = append(d.wms, wm)
	if d.flushed != nil {
		return d.flushed(wm), nil
	}
	return nil, nil
}

// fakeFactory returns a factory building d.
func fakeFactory(d *fakeDetector) detectors.Factory {
	return detectors.NewFactory(d.name, "test detector",
		func() *fakeConfig {
			return &fakeConfig{BaseConfig: detectors.BaseConfig{Enabled: true, Severity: schemas.SeverityLow}}
		},
		func(*fakeConfig, detectors.Env) (*fakeDetector, error) { return d, nil })
}

// dayFinding is what a per-event detector emits: one id per user, patient
// and UTC day; severity high for exports.
func dayFinding(detector string) func(ev *schemas.AccessEvent) []schemas.Finding {
	return func(ev *schemas.AccessEvent) []schemas.Finding {
		start, end := detectors.LocalDay(ev.EventTime, time.UTC)
		sev := schemas.SeverityLow
		if ev.Action == schemas.ActionExport {
			sev = schemas.SeverityHigh
		}
		return []schemas.Finding{{
			FindingID: schemas.FindingID(detector, []string{ev.UserID, ev.PatientID}, start, end),
			Severity:  sev, UserID: ev.UserID, PatientID: ev.PatientID, WindowStart: start, WindowEnd: end,
			EventIDs: []string{ev.EventID}, Evidence: schemas.Evidence{Facts: map[string]string{"k": "v"}},
		}}
	}
}

func newTestEngine(t testing.TB, cfg detectors.EngineConfig, fs ...detectors.Factory) *detectors.Engine {
	t.Helper()
	e, err := detectors.NewEngine(cfg, fs, detectors.Env{})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func process(t testing.TB, e *detectors.Engine, evs ...*schemas.AccessEvent) []schemas.Finding {
	t.Helper()
	var out []schemas.Finding
	for _, ev := range evs {
		fs, err := e.Process(context.Background(), ev)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, fs...)
	}
	return out
}

func TestEngineWatermarkAndLateEvents(t *testing.T) {
	d := &fakeDetector{name: "fake"}
	e := newTestEngine(t, detectors.EngineConfig{AllowedLateness: 10 * time.Minute}, fakeFactory(d))
	at := func(hm string) *schemas.AccessEvent {
		return access(hm, "2026-03-10T"+hm+":00Z", "u1", "nurse", "icu", "p1")
	}
	process(t, e, at("12:00"), at("12:30"), at("12:25"), at("12:10"), at("12:40"))
	if got := e.LateEvents(); got != 1 {
		t.Errorf("LateEvents = %d, want 1 (only 12:10 is behind the 12:20 watermark)", got)
	}
	if d.detects != 5 {
		t.Errorf("Detect called %d times, want 5 (late events are still detected)", d.detects)
	}
	var wms []string
	for _, wm := range d.wms {
		wms = append(wms, wm.Format("15:04"))
	}
	if got := strings.Join(wms, ","); got != "11:50,12:20,12:30" {
		t.Errorf("FlushUntil watermarks %s, want 11:50,12:20,12:30", got)
	}
	if !e.Watermark().Equal(mustTime(t, "2026-03-10T12:30:00Z")) || !e.MaxEventTime().Equal(mustTime(t, "2026-03-10T12:40:00Z")) {
		t.Errorf("watermark %v, max %v", e.Watermark(), e.MaxEventTime())
	}
	if _, err := e.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if last := d.wms[len(d.wms)-1]; !last.Equal(detectors.EndOfTime) {
		t.Errorf("Flush flushed until %v, want EndOfTime", last)
	}
	if s := e.Stats(); s.Events != 5 || s.LateEvents != 1 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestEngineRejectsEventsWithoutTime(t *testing.T) {
	e := newTestEngine(t, detectors.EngineConfig{}, fakeFactory(&fakeDetector{name: "fake"}))
	if _, err := e.Process(context.Background(), &schemas.AccessEvent{EventID: "x"}); err == nil {
		t.Error("event without event_time accepted")
	}
	if _, err := e.Process(context.Background(), nil); err == nil {
		t.Error("nil event accepted")
	}
}

func TestEngineDetectorErrorDoesNotStopOthers(t *testing.T) {
	bad := &fakeDetector{name: "bad", fail: errors.New("boom")}
	good := &fakeDetector{name: "good", emit: dayFinding("good")}
	e := newTestEngine(t, detectors.EngineConfig{MaxOpenFindings: 10}, fakeFactory(bad), fakeFactory(good))
	fs, err := e.Process(context.Background(), access("ev-1", "2026-03-10T12:00:00Z", "u1", "nurse", "icu", "p1"))
	if err == nil || !strings.Contains(err.Error(), "detector bad: event ev-1: boom") {
		t.Errorf("err = %v", err)
	}
	if len(fs) != 1 || fs[0].Detector != "good" {
		t.Errorf("findings = %+v", fs)
	}
	s := e.Stats()
	if s.DetectorErrors["bad"] != 1 || s.Findings["good"] != 1 || s.Findings["bad"] != 0 {
		t.Errorf("Stats = %+v", s)
	}
}

func TestEngineCollapsesRepeats(t *testing.T) {
	d := &fakeDetector{name: "fake", emit: dayFinding("fake")}
	e := newTestEngine(t, detectors.EngineConfig{AllowedLateness: time.Minute, MaxOpenFindings: 100}, fakeFactory(d))
	ev := func(id, at string, a schemas.Action) *schemas.AccessEvent {
		return with(access(id, at, "u1", "nurse", "icu", "p1"), func(e *schemas.AccessEvent) { e.Action = a })
	}
	var got []string
	record := func(fs []schemas.Finding) {
		for _, f := range fs {
			got = append(got, fmt.Sprintf("%s %v %s", f.Severity, f.EventIDs, f.Evidence.Facts["accesses"]))
		}
	}
	record(process(t, e,
		ev("a", "2026-03-10T08:00:00Z", schemas.ActionView),
		ev("b", "2026-03-10T09:00:00Z", schemas.ActionView),
		ev("b", "2026-03-10T09:00:00Z", schemas.ActionView), // redelivered: id not repeated
		ev("c", "2026-03-10T10:00:00Z", schemas.ActionExport),
		ev("d", "2026-03-10T11:00:00Z", schemas.ActionView),
	))
	want := []string{"low [a] ", "high [a b c] 4"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("before the window closes: %q, want %q", got, want)
	}
	// An event on the next day moves the watermark past the first day's
	// end: the final version of the first finding comes out.
	record(process(t, e, access("e", "2026-03-11T00:02:00Z", "u2", "nurse", "icu", "p2")))
	want = append(want, "low [e] ", "high [a b c d] 5")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("after the window closes: %q, want %q", got, want)
	}
	if s := e.Stats(); s.Collapsed != 3 || s.Findings["fake"] != 4 {
		t.Errorf("Stats = %+v", s)
	}
	// A late event for the closed day is emitted on its own.
	record(process(t, e, ev("f", "2026-03-10T23:00:00Z", schemas.ActionView)))
	// Flush emits nothing more for u2: no repeats were folded in.
	fs, err := e.Flush(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	record(fs)
	want = append(want, "low [f] ")
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("late event and flush: %q, want %q", got, want)
	}
}

func TestEngineMaxOpenFindings(t *testing.T) {
	for _, tc := range []struct {
		max                      int
		wantFindings, wantOverfl uint64
	}{
		{max: 0, wantFindings: 4, wantOverfl: 0}, // collapsing off
		{max: 1, wantFindings: 3, wantOverfl: 2}, // p1 collapsed; p2 overflows twice
		{max: 2, wantFindings: 2, wantOverfl: 0},
	} {
		d := &fakeDetector{name: "fake", emit: dayFinding("fake")}
		e := newTestEngine(t, detectors.EngineConfig{MaxOpenFindings: tc.max}, fakeFactory(d))
		process(t, e,
			access("1", "2026-03-10T08:00:00Z", "u1", "", "", "p1"),
			access("2", "2026-03-10T08:01:00Z", "u1", "", "", "p1"),
			access("3", "2026-03-10T08:02:00Z", "u1", "", "", "p2"),
			access("4", "2026-03-10T08:03:00Z", "u1", "", "", "p2"),
		)
		if s := e.Stats(); s.Findings["fake"] != tc.wantFindings || s.Overflow != tc.wantOverfl {
			t.Errorf("max %d: findings %d overflow %d, want %d %d", tc.max, s.Findings["fake"], s.Overflow, tc.wantFindings, tc.wantOverfl)
		}
	}
}

func TestEngineDisabledDetectorIsNotBuilt(t *testing.T) {
	cfg := detectors.DefaultEngineConfig(detectors.Registry())
	cfg.Detectors["vip"].(*detectors.VIPConfig).Enabled = false
	e, err := detectors.NewEngine(cfg, detectors.Registry(), refFixture{}.env(t))
	if err != nil {
		t.Fatal(err)
	}
	names := strings.Join(e.Detectors(), ",")
	if strings.Contains(names, "vip") || !strings.HasPrefix(names, "break_glass,self_access,family,coworker,deceased,terminated") {
		t.Errorf("running %s", names)
	}
}

func TestEngineRejectsInvalidConfig(t *testing.T) {
	cfg := detectors.DefaultEngineConfig(detectors.Registry())
	cfg.AllowedLateness = -time.Second
	cfg.Detectors["deceased"].(*detectors.DeceasedConfig).GracePeriod = -time.Hour
	_, err := detectors.NewEngine(cfg, detectors.Registry(), refFixture{}.env(t))
	if err == nil || !strings.Contains(err.Error(), "allowed_lateness") || !strings.Contains(err.Error(), "detectors.deceased.grace_period") {
		t.Errorf("err = %v", err)
	}
}

func TestEngineAllowlist(t *testing.T) {
	d := &fakeDetector{name: "fake", emit: dayFinding("fake")}
	var holder detectors.AllowlistHolder
	e := newTestEngine(t, detectors.EngineConfig{AllowlistSource: holder.Load}, fakeFactory(d))
	ev := access("1", "2026-03-10T08:00:00Z", "u1", "nurse", "Chaplaincy", "p1")
	if fs := process(t, e, ev); fs[0].Suppressed {
		t.Error("suppressed without an allowlist")
	}
	a, err := detectors.NewAllowlist([]detectors.AllowlistEntry{{Department: "chaplaincy", Detector: "fake", Reason: "chaplains", Owner: "privacy", ExpiresAt: mustTime(t, "2027-01-01T00:00:00Z")}})
	if err != nil {
		t.Fatal(err)
	}
	holder.Store(a)
	fs := process(t, e, with(ev, func(e *schemas.AccessEvent) { e.PatientID = "p2" }))
	if len(fs) != 1 || !fs[0].Suppressed || fs[0].SuppressionReason != "allowlist: privacy: chaplains" {
		t.Errorf("findings %+v", fs)
	}
	if s := e.Stats(); s.Suppressed != 1 {
		t.Errorf("Suppressed = %d", s.Suppressed)
	}
}

// allEventsScenario mixes every per-event detector's triggers with plain
// accesses over several days.
func allEventsScenario(t testing.TB) (refFixture, []*schemas.AccessEvent) {
	fx := benchFixture(1000, 5000)
	var evs []*schemas.AccessEvent
	evs = append(evs, peerScenario(t)...)
	base := mustTime(t, "2026-04-01T00:00:00Z")
	for i := 0; i < 400; i++ {
		evs = append(evs, benchEvent(i, base.Add(time.Duration(i)*17*time.Minute)))
	}
	return fx, evs
}

// TestEngineSnapshotRestore: snapshotting after any event and restoring
// into a fresh engine gives the same findings as an uninterrupted run, and
// equal states give equal snapshot bytes.
func TestEngineSnapshotRestore(t *testing.T) {
	fx, evs := allEventsScenario(t)
	env := fx.env(t)
	cfg := detectors.DefaultEngineConfig(detectors.Registry())
	all := detectors.Registry() // per-event and windowed detectors
	run := func(split int) (string, []byte) {
		e, err := detectors.NewEngine(cfg, all, env)
		if err != nil {
			t.Fatal(err)
		}
		var out []schemas.Finding
		var snap []byte
		for i, ev := range evs {
			if i == split {
				var buf bytes.Buffer
				if err := e.Snapshot(&buf); err != nil {
					t.Fatal(err)
				}
				snap = buf.Bytes()
				e, _ = detectors.NewEngine(cfg, all, env)
				if err := e.Restore(bytes.NewReader(snap)); err != nil {
					t.Fatal(err)
				}
			}
			out = append(out, process(t, e, ev)...)
		}
		fs, err := e.Flush(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		js, _ := json.Marshal(append(out, fs...))
		return string(js), snap
	}
	want, _ := run(-1)
	if !strings.Contains(want, `"detector":"terminated"`) || !strings.Contains(want, `"peer_outlier":"true"`) {
		t.Fatalf("scenario does not exercise the detectors: %.300s", want)
	}
	for _, split := range []int{1, 7, 10, 100, 250, len(evs) - 1} {
		got, snap := run(split)
		if got != want {
			t.Errorf("split at %d: findings differ", split)
		}
		_, again := run(split)
		if !bytes.Equal(snap, again) {
			t.Errorf("split at %d: snapshots of equal states differ", split)
		}
	}
}

func TestEngineRestoreRejectsBadSnapshots(t *testing.T) {
	e := newTestEngine(t, detectors.EngineConfig{}, fakeFactory(&fakeDetector{name: "fake"}))
	for _, in := range []string{`{"version":3}`, `{"version":0}`, `not json`} {
		if err := e.Restore(strings.NewReader(in)); err == nil {
			t.Errorf("Restore(%s) accepted", in)
		}
	}
	// A user recorded as null in the explainer's state is dropped, not
	// kept to crash the next prune.
	if err := e.Restore(strings.NewReader(`{"version":2,"explanation":{"users":{"u1":null}}}`)); err != nil {
		t.Errorf("null user: %v", err)
	}
	process(t, e, access("n1", "2026-03-02T10:00:00Z", "u1", "nurse", "Surgery", "p1"))
	process(t, e, access("n2", "2026-03-04T10:00:00Z", "u1", "nurse", "Surgery", "p1")) // a new day: prune
	// The state of a detector that is not running is ignored.
	if err := e.Restore(strings.NewReader(`{"version":1,"detectors":[{"name":"break_glass","state":"AA=="}]}`)); err != nil {
		t.Errorf("state of an absent detector: %v", err)
	}
	bg, _ := detectors.NewEngine(detectors.EngineConfig{}, detectors.Registry()[:1], detectors.Env{})
	if err := bg.Restore(strings.NewReader(`{"version":1,"detectors":[{"name":"break_glass","state":"AA=="}]}`)); err == nil {
		t.Error("corrupt break_glass state accepted")
	}
}
