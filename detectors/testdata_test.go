package detectors_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	_ "time/tzdata" // cases must not depend on the host's zoneinfo

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// The directory-driven detector tests. Each case is a directory
//
//	testdata/<detector>/<case>/
//	  config.yaml         optional; see caseConfig
//	  events.jsonl        canonical access events, one per line, in arrival order
//	  reference/          optional users.ndjson, patients.ndjson, encounters.ndjson,
//	                      vocabulary.ndjson
//	  expected.jsonl      the findings, one canonical JSON object per line
//
// The harness builds an Engine with only <detector> enabled (config.yaml may
// name another with "detector:"), feeds the events, Flushes at the end and
// compares the findings, sorted by (window_start, user_id, patient_id,
// detector, finding_id) and otherwise in emission order, with
// expected.jsonl. `go test ./detectors -run TestDetectorCases -update`
// rewrites expected.jsonl; review the diff before committing it.

var update = flag.Bool("update", false, "rewrite detectors/testdata/*/*/expected.jsonl from the current output")

// caseHashKey is the HMAC key every case's reference index uses.
var caseHashKey = []byte("ehrwatch-test-hash-key-0123456789")

// caseConfig is the shape of a case's config.yaml.
type caseConfig struct {
	// Detector to run; defaults to the case's parent directory name.
	Detector string `yaml:"detector"`
	// Facilities maps facility ids to IANA time zones.
	Facilities map[string]string `yaml:"facilities"`
	// Reference overrides the reference index options (care slack).
	Reference detectors.ReferenceOptions `yaml:"reference"`
	// Engine is the detection section, parsed by detectors.ParseEngineConfig.
	Engine yaml.Node `yaml:"engine"`
	// Partitions spreads the users over this many engines by FNV-1a of
	// user_id, fed in the file's order, with one PeerStage judging every
	// partition's volume days against the whole peer group (as ehrwatch
	// replay does); 0 or 1 is one engine.
	Partitions int `yaml:"partitions"`
	// Peers "partition" keeps each engine's own peer comparison instead of
	// the PeerStage (what ehrwatch run does today), to show the difference.
	Peers string `yaml:"peers"`
}

// caseDirs lists every case directory, sorted.
func caseDirs(t testing.TB) []string {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join("testdata", "*", "*", "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, m := range matches {
		if filepath.Base(filepath.Dir(filepath.Dir(m))) == "vocabulary" {
			continue // vocabulary report cases (TestVocabularyCases)
		}
		dirs = append(dirs, filepath.Dir(m))
	}
	slices.Sort(dirs)
	if len(dirs) == 0 {
		t.Fatal("no test cases under testdata/")
	}
	return dirs
}

func TestDetectorCases(t *testing.T) {
	for _, dir := range caseDirs(t) {
		name := filepath.ToSlash(strings.TrimPrefix(dir, "testdata"+string(filepath.Separator)))
		t.Run(name, func(t *testing.T) {
			got := runCase(t, dir)
			path := filepath.Join(dir, "expected.jsonl")
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("findings differ from %s (run with -update to accept)\n--- got\n%s\n--- want\n%s", path, got, want)
			}
		})
	}
}

// TestDetectorCasesDeterministic runs every case twice and requires
// byte-identical output (map iteration order differs between runs).
func TestDetectorCasesDeterministic(t *testing.T) {
	for _, dir := range caseDirs(t) {
		a, b := runCase(t, dir), runCase(t, dir)
		if !bytes.Equal(a, b) {
			t.Errorf("%s: two runs differ:\n%s\n---\n%s", dir, a, b)
		}
	}
}

// TestFindingsHoldNoDemographics checks that no name, address, break-glass
// reason or client IP from a case's fixtures appears in its findings.
func TestFindingsHoldNoDemographics(t *testing.T) {
	checked := 0
	for _, dir := range caseDirs(t) {
		out := strings.ToLower(string(runCase(t, dir)))
		users, patients, _ := loadReference(t, filepath.Join(dir, "reference"))
		var secrets []string
		for _, u := range users {
			secrets = append(secrets, u.FirstName, u.LastName, u.Address.Line, u.Address.City)
		}
		for _, p := range patients {
			secrets = append(secrets, p.FirstName, p.LastName, p.Address.Line, p.Address.City, p.DateOfBirth)
		}
		for _, ev := range loadEvents(t, dir) {
			secrets = append(secrets, ev.BreakGlassReason, ev.ClientIP)
		}
		for _, s := range secrets {
			s = strings.ToLower(strings.TrimSpace(s))
			if len(s) < 4 {
				continue // too short to tell from ordinary words
			}
			checked++
			if strings.Contains(out, s) {
				t.Errorf("%s: findings contain fixture text %q", dir, s)
			}
		}
	}
	if checked == 0 {
		t.Fatal("no fixture names, addresses or reasons were checked")
	}
}

// runCase runs one case directory and returns its findings as sorted
// canonical JSON lines.
func runCase(t testing.TB, dir string) []byte {
	t.Helper()
	cc := caseConfig{Reference: detectors.DefaultReferenceOptions()}
	if data, err := os.ReadFile(filepath.Join(dir, "config.yaml")); err == nil {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&cc); err != nil {
			t.Fatalf("%s/config.yaml: %v", dir, err)
		}
	} else if !os.IsNotExist(err) {
		t.Fatal(err)
	}
	if cc.Detector == "" {
		cc.Detector = filepath.Base(filepath.Dir(dir))
	}
	var factories []detectors.Factory
	for _, f := range detectors.Registry() {
		if f.Name == cc.Detector {
			factories = append(factories, f)
		}
	}
	if len(factories) != 1 {
		t.Fatalf("%s: no detector named %q in the registry", dir, cc.Detector)
	}
	ecfg, err := detectors.ParseEngineConfig(&cc.Engine, detectors.Registry())
	if err != nil {
		t.Fatalf("%s/config.yaml engine: %v", dir, err)
	}
	locs, err := detectors.FacilityLocations(cc.Facilities)
	if err != nil {
		t.Fatalf("%s/config.yaml: %v", dir, err)
	}
	users, patients, encounters := loadReference(t, filepath.Join(dir, "reference"))
	opts := cc.Reference
	opts.HashKey = caseHashKey
	vocab, err := schemas.LoadVocabularyDir(filepath.Join(dir, "reference"))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := detectors.NewReferenceIndexWithVocabulary(users, patients, encounters, vocab, opts)
	if err != nil {
		t.Fatal(err)
	}
	holder := detectors.NewReferenceHolder(idx)
	env := detectors.Env{Reference: holder.Load, Location: locs}
	n := max(cc.Partitions, 1)
	if cc.Peers != "" && cc.Peers != "partition" {
		t.Fatalf("%s/config.yaml: peers must be \"partition\" or absent (got %q)", dir, cc.Peers)
	}
	engines := make([]*detectors.Engine, n)
	for i := range engines {
		if engines[i], err = detectors.NewEngine(ecfg, factories, env); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
	}
	var stage *detectors.PeerStage
	if n > 1 && cc.Peers == "" {
		if stage, err = detectors.NewPeerStage(ecfg, env, n); err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, e := range engines {
			e.DeferPeers()
		}
	}
	ctx := context.Background()
	var all []schemas.Finding
	for _, ev := range loadEvents(t, dir) {
		h := fnv.New32a()
		h.Write([]byte(ev.UserID))
		i := int(h.Sum32() % uint32(n))
		fs, err := engines[i].Process(ctx, ev)
		if err != nil {
			t.Fatalf("%s: event %s: %v", dir, ev.EventID, err)
		}
		all = append(all, fs...)
		if stage != nil {
			stage.Add(i, engines[i].TakePeers(), engines[i].Watermark())
			all = append(all, engines[0].AdmitPeerFindings(stage.Ready())...)
		}
	}
	for i, e := range engines {
		fs, err := e.Flush(ctx)
		if err != nil {
			t.Fatalf("%s: flush: %v", dir, err)
		}
		all = append(all, fs...)
		if stage != nil {
			stage.Add(i, e.TakePeers(), detectors.EndOfTime)
		}
	}
	if stage != nil {
		all = append(all, engines[0].AdmitPeerFindings(stage.Flush())...)
	}
	return canonicalFindings(t, all)
}

// canonicalFindings sorts findings stably and renders one JSON object per
// line.
func canonicalFindings(t testing.TB, fs []schemas.Finding) []byte {
	t.Helper()
	slices.SortStableFunc(fs, func(a, b schemas.Finding) int {
		if c := a.WindowStart.Compare(b.WindowStart); c != 0 {
			return c
		}
		for _, p := range [][2]string{{a.UserID, b.UserID}, {a.PatientID, b.PatientID}, {a.Detector, b.Detector}, {a.FindingID, b.FindingID}} {
			if c := strings.Compare(p[0], p[1]); c != 0 {
				return c
			}
		}
		return 0
	})
	var buf bytes.Buffer
	for _, f := range fs {
		line, err := json.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(line)
		buf.WriteByte('\n')
	}
	return buf.Bytes()
}

// loadEvents decodes a case's events.jsonl with the production decoder.
func loadEvents(t testing.TB, dir string) []*schemas.AccessEvent {
	t.Helper()
	var out []*schemas.AccessEvent
	eachLine(t, filepath.Join(dir, "events.jsonl"), false, func(line []byte, n int) {
		ev, err := schemas.DecodeEvent(line)
		if err != nil {
			t.Fatalf("%s/events.jsonl:%d: %v", dir, n, err)
		}
		out = append(out, ev)
	})
	return out
}

// loadReference reads users.ndjson, patients.ndjson and encounters.ndjson
// from dir with the production loaders (strict decoding and validation);
// missing files are empty.
func loadReference(t testing.TB, dir string) ([]schemas.User, []schemas.Patient, []schemas.Encounter) {
	t.Helper()
	users := loadRefFile(t, dir, schemas.UsersFile, schemas.LoadUsers)
	patients := loadRefFile(t, dir, schemas.PatientsFile, schemas.LoadPatients)
	encounters := loadRefFile(t, dir, schemas.EncountersFile, schemas.LoadEncounters)
	return users, patients, encounters
}

func loadRefFile[T any](t testing.TB, dir, name string, load func(io.Reader) ([]T, error)) []T {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, name))
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out, err := load(f)
	if err != nil {
		t.Fatalf("%s/%s: %v", dir, name, err)
	}
	return out
}

// eachLine calls fn for every non-blank line that does not start with "//".
func eachLine(t testing.TB, path string, optional bool, fn func(line []byte, n int)) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		if optional && os.IsNotExist(err) {
			return
		}
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64*1024), 4<<20)
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 || bytes.HasPrefix(line, []byte("//")) {
			continue
		}
		fn(slices.Clone(line), n)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(fmt.Errorf("%s: %w", path, err))
	}
}

// mustTime parses an RFC 3339 time for tests.
func mustTime(t testing.TB, s string) time.Time {
	t.Helper()
	v, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
