package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const replayUsage = `usage: ehrwatch replay --events FILE --reference DIR [flags]

Runs the detectors over an exported access log, without Kafka or
ClickHouse, and writes their findings as NDJSON (the Finding fields).

  --events FILE      access events, one JSON object per line, in arrival order:
                     canonical ehrwatch events or FHIR R4/R5 AuditEvents
                     (mixed is fine; --config's fhir section maps FHIR);
                     with --csv-mapping, a CSV/TSV export; "-" reads
                     standard input
  --reference DIR    users.ndjson, patients.ndjson and encounters.ndjson, and
                     optionally vocabulary.ndjson (the hospital's mapping of
                     role and department names to categories)
  --out FILE         findings, one per line (default: standard output)

Events are handed to the detectors in the file's order, with the same
Engine, watermark and allowed lateness as ehrwatch run. With --partitions N
the events are spread over N engines by user_id exactly as a Kafka topic
of N partitions would spread them (--partitioner); the default, one
engine, is one partition. The volume and break_glass detectors compare a
user with peers: by default (--peers group) with the whole peer group,
judged once every engine's watermark has passed the day, so the findings
are the same for any --partitions; --peers partition compares with the
users of the same engine only, which reproduces what ehrwatch run finds
on a topic of N partitions with its default peers.mode partition
(docs/detectors.md). Lines that are not chart accesses (logins, searches without a
patient) are counted by reason and skipped. Lines that cannot be decoded
are reported by line number and error class (never their content) and
skipped; --strict makes them an error. The summary lists the role and
department names, seen in the events or the reference data, that no
vocabulary category covers (docs/detectors.md, "Vocabulary"); ehrwatch
vocabulary suggest proposes a mapping for them.

flags:
`

// replayOptions are the settings of `ehrwatch replay`.
type replayOptions struct {
	events      string
	reference   string
	out         string
	config      string
	facilities  string
	tz          tzFlags
	partitions  int
	partitioner string
	peers       string
	strict      bool
	maxErrors   int
	cpuProfile  string
	csvMapping  string
}

// tzFlags collects repeated --tz FACILITY=ZONE flags.
type tzFlags map[string]string

func (t tzFlags) String() string {
	var parts []string
	for _, k := range sortedStrings(t) {
		parts = append(parts, k+"="+t[k])
	}
	return strings.Join(parts, ",")
}

func (t tzFlags) Set(v string) error {
	id, zone, ok := strings.Cut(v, "=")
	if !ok || strings.TrimSpace(id) == "" || strings.TrimSpace(zone) == "" {
		return errors.New("want FACILITY=ZONE, e.g. nyc=America/New_York")
	}
	t[strings.TrimSpace(id)] = strings.TrimSpace(zone)
	return nil
}

func sortedStrings[K ~string, V any](m map[K]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, string(k))
	}
	slices.Sort(out)
	return out
}

func runReplay(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	o := replayOptions{tz: tzFlags{}}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, replayUsage)
	fs.StringVar(&o.events, "events", "", "events file (NDJSON, canonical or FHIR AuditEvent); - for standard input")
	fs.StringVar(&o.reference, "reference", "", "directory with users.ndjson, patients.ndjson, encounters.ndjson")
	fs.StringVar(&o.out, "out", "", "findings file (NDJSON); default standard output")
	fs.StringVar(&o.config, "config", "", "ehrwatch configuration file: its detection section (detector settings, allowed lateness, allowlist) and reference.facilities/care slack are used")
	fs.StringVar(&o.facilities, "facilities", "", "`FILE` of facility_id and time_zone lines (the facilities.ndjson ehrwatch gen writes); default: facilities.ndjson next to --events if present")
	fs.Var(o.tz, "tz", "facility time zone, `FACILITY=ZONE` (repeatable; overrides --facilities and the config)")
	fs.IntVar(&o.partitions, "partitions", 1, "spread users over this many engines, as a topic with this many partitions would")
	fs.StringVar(&o.peers, "peers", "group", "volume peers: group (the whole peer group, whatever --partitions; docs/detectors.md) or partition (the users of the same partition only, as ehrwatch run compares them with peers.mode partition)")
	fs.StringVar(&o.partitioner, "partitioner", "fnv1a", "how user_id keys map to partitions: fnv1a (kafka-go Hash, sarama) or murmur2 (Java clients, librdkafka consistent_random)")
	fs.StringVar(&o.csvMapping, "csv-mapping", "", "read --events as a CSV/TSV export with this mapping `FILE` (YAML; see docs/feeds.md and deployments/csv/)")
	fs.BoolVar(&o.strict, "strict", false, "exit non-zero when any line cannot be decoded")
	fs.IntVar(&o.maxErrors, "max-errors", 20, "bad lines reported one by one before only counting")
	fs.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of the replay (after loading) to this file")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("replay: unexpected argument %q", fs.Arg(0))}
	}
	if o.events == "" || o.reference == "" {
		fs.Usage()
		return usageError{"replay: --events FILE and --reference DIR are required"}
	}
	if o.partitions < 1 || o.partitions > 10000 {
		return usageError{"replay: --partitions must be in 1..10000"}
	}
	if o.peers != "group" && o.peers != "partition" {
		return usageError{fmt.Sprintf("replay: --peers must be group or partition (got %q)", o.peers)}
	}
	if _, err := replay.NewPartitioner(o.partitioner, o.partitions); err != nil {
		return usageError{"replay: " + err.Error()}
	}
	return replayFile(ctx, o, stdout, stderr)
}

// replayStats summarises one replay: what the replayer counted, and the
// command's own timings and vocabulary report.
type replayStats struct {
	replay.Stats
	Took     time.Duration            // reading, decoding and detecting
	Setup    time.Duration            // loading configuration and reference data
	Mallocs  uint64                   // heap objects allocated while replaying (runtime.MemStats)
	Bytes    uint64                   // heap bytes allocated while replaying
	Unmapped []detectors.UnmappedName // role and department names no vocabulary category covers
}

func replayFile(ctx context.Context, o replayOptions, stdout, stderr io.Writer) error {
	began := time.Now()
	stderr = &lockedWriter{w: stderr} // the reader and the writer both report
	ecfg, refCfg, fhirCfg, err := loadDetectionConfig(o.config)
	if err != nil {
		return err
	}
	zones := map[string]string{}
	for k, v := range refCfg.Facilities {
		zones[k] = v
	}
	facFile := o.facilities
	if facFile == "" && o.events != "-" {
		if p := filepath.Join(filepath.Dir(o.events), "facilities.ndjson"); fileExists(p) {
			facFile = p
			fmt.Fprintf(stderr, "replay: facility time zones from %s\n", p)
		}
	}
	if facFile != "" {
		fz, err := loadFacilityZones(facFile)
		if err != nil {
			return err
		}
		for k, v := range fz {
			zones[k] = v
		}
	}
	for k, v := range o.tz {
		zones[k] = v
	}
	refOpts := detectors.ReferenceOptions{CareSlackBefore: refCfg.CareSlackBefore, CareSlackAfter: refCfg.CareSlackAfter,
		Vocabulary: refCfg.Vocabulary}
	idx, err := loadReferenceIndex(o.reference, refOpts)
	if err != nil {
		return err
	}
	newEngine, err := replay.NewEngineFactory(idx, zones, ecfg)
	if err != nil {
		return err
	}
	var peers *detectors.PeerStage
	if o.peers == "group" {
		if peers, err = replay.NewPeerStage(ecfg, zones, o.partitions); err != nil {
			return err
		}
	}

	var in io.Reader = os.Stdin
	if o.events != "-" {
		f, err := os.Open(o.events)
		if err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer f.Close()
		in = f
	}
	var out io.Writer = stdout
	summary := stderr
	var outFile *os.File
	if o.out != "" {
		if outFile, err = os.Create(o.out); err != nil {
			return fmt.Errorf("replay: %w", err)
		}
		defer outFile.Close()
		out, summary = outFile, stdout
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	enc := replay.NewFindingEncoder(bw)

	monitor := detectors.NewVocabularyMonitor(func() detectors.Reference { return idx })
	r := &replay.Replayer{
		Observe:   monitor.Observe,
		NewEngine: newEngine,
		Peers:     peers,
		Partition: replay.MustPartitioner(o.partitioner, o.partitions),
		N:         o.partitions,
		Zones:     zones,
		Emit:      enc.Encode,
		OnBad: func(line int, err error) {
			if o.maxErrors > 0 {
				fmt.Fprintf(stderr, "replay: %s\n", badLineText(o.events, line, err))
			}
		},
		MaxBad: o.maxErrors,
		OnDetectorError: func(n int, err error) {
			if n <= 5 {
				// Detector errors name detectors and event ids only.
				fmt.Fprintf(stderr, "replay: detector error: %v\n", err)
			}
		},
	}
	setup := time.Since(began)
	stopProfile, err := startCPUProfile(o.cpuProfile)
	if err != nil {
		return fmt.Errorf("replay: --cpuprofile: %w", err)
	}
	defer stopProfile()
	src, err := openSource(in, o.csvMapping, fhirCfg)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	var msBefore, msAfter runtime.MemStats
	runtime.ReadMemStats(&msBefore)
	rst, err := r.Run(ctx, src)
	runtime.ReadMemStats(&msAfter)
	st := replayStats{Stats: rst, Mallocs: msAfter.Mallocs - msBefore.Mallocs, Bytes: msAfter.TotalAlloc - msBefore.TotalAlloc}
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	if outFile != nil {
		if cerr := outFile.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return err
	}
	st.Took = time.Since(began) - setup
	st.Setup = setup
	st.Unmapped = monitor.Unmapped()
	printReplaySummary(summary, st, o)
	if o.strict && st.BadLines > 0 {
		return fmt.Errorf("replay: %d line(s) could not be decoded (--strict)", st.BadLines)
	}
	return nil
}

// lockedWriter serialises writes from several goroutines.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// badLineText names a bad line by number and error class (and schema
// field), never by content.
func badLineText(file string, line int, err error) string {
	class := schemas.ErrorClassOf(err)
	field := ""
	var de *schemas.DecodeError
	if errors.As(err, &de) {
		field = de.Field
	}
	s := fmt.Sprintf("%s:%d: %s", filepath.Base(file), line, class)
	if field != "" {
		s += " (field " + field + ")"
	}
	return s + "; line skipped"
}

func printReplaySummary(w io.Writer, st replayStats, o replayOptions) {
	rate := float64(st.Events) / st.Took.Seconds()
	fmt.Fprintf(w, "replayed %d events in %s (%.0f events/s) on %d engine(s), after %s loading reference data",
		st.Events, st.Took.Round(time.Millisecond), rate, o.partitions, st.Setup.Round(time.Millisecond))
	if rss := peakRSS(); rss > 0 {
		fmt.Fprintf(w, ", peak RSS %d MiB", rss>>20)
	}
	if st.Events > 0 && st.Mallocs > 0 {
		fmt.Fprintf(w, "; %.2f allocs/event, %.0f B/event", float64(st.Mallocs)/float64(st.Events), float64(st.Bytes)/float64(st.Events))
	}
	fmt.Fprintln(w)
	printTally(w, st.LineTally)
	if st.Late > 0 {
		fmt.Fprintf(w, "late events: %d arrived behind their engine's watermark (still processed)\n", st.Late)
	}
	if st.DetErrors > 0 {
		fmt.Fprintf(w, "detector errors: %d\n", st.DetErrors)
	}
	for _, f := range st.NoZone {
		fmt.Fprintf(w, "warning: facility %s has no time zone (give --facilities or --tz %s=Area/City); its local days and hours were taken as UTC\n", f, f)
	}
	printUnmapped(w, st.Unmapped, 10)
	fmt.Fprintf(w, "findings: %d", st.TotalFindings())
	if n := st.TotalFindings(); n > 0 {
		var parts []string
		for _, d := range sortedStrings(st.Findings) {
			parts = append(parts, fmt.Sprintf("%s %d", d, st.Findings[d]))
		}
		fmt.Fprintf(w, " (%s)", strings.Join(parts, ", "))
	}
	fmt.Fprintln(w)
	st.Coverage.WriteCoverage(w, 15)
	if o.out != "" {
		fmt.Fprintf(w, "wrote %s\n", o.out)
	}
}

func isBlankLine(b []byte) bool { return len(bytes.TrimSpace(b)) == 0 }

// lineReader reads newline-terminated lines of any length, returning those
// longer than max as tooLong (without their content) so one bad line does
// not end the replay.
type lineReader struct {
	r    *bufio.Reader
	max  int
	line int
	buf  []byte
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{r: bufio.NewReaderSize(r, 1<<20), max: max}
}

// next returns the next line without its terminator, its 1-based number
// and whether it was too long; io.EOF after the last line.
func (l *lineReader) next() (line []byte, n int, tooLong bool, err error) {
	l.buf = l.buf[:0]
	for {
		chunk, err := l.r.ReadSlice('\n')
		if !tooLong {
			if len(l.buf)+len(chunk) > l.max+2 { // +2: "\r\n"
				tooLong = true
				l.buf = l.buf[:0]
			} else {
				l.buf = append(l.buf, chunk...)
			}
		}
		switch {
		case err == nil:
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err == io.EOF:
			if len(l.buf) == 0 && !tooLong {
				return nil, 0, false, io.EOF
			}
		default:
			return nil, 0, false, err
		}
		l.line++
		return bytes.TrimRight(l.buf, "\r\n"), l.line, tooLong, nil
	}
}

// newHashKey returns a fresh random key for the demographic tokens: they
// are compared within one process only, so a throwaway key is enough.
func newHashKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// loadReferenceIndex loads dir's reference files into an index keyed with
// a throwaway hash key.
func loadReferenceIndex(dir string, opts detectors.ReferenceOptions) (*detectors.ReferenceIndex, error) {
	opts.HashKey = newHashKey()
	idx, err := detectors.LoadReferenceFiles(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("replay: reference data in %s: %w", dir, err)
	}
	return idx, nil
}

// loadFacilityZones reads facility_id → time_zone from an NDJSON file
// (other members are ignored).
func loadFacilityZones(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("replay: --facilities: %w", err)
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	n := 0
	for sc.Scan() {
		n++
		if isBlankLine(sc.Bytes()) {
			continue
		}
		var fac struct {
			ID       string `json:"facility_id"`
			TimeZone string `json:"time_zone"`
		}
		if err := json.Unmarshal(sc.Bytes(), &fac); err != nil || fac.ID == "" || fac.TimeZone == "" {
			return nil, fmt.Errorf("replay: %s:%d: want {\"facility_id\": …, \"time_zone\": …}", filepath.Base(path), n)
		}
		out[fac.ID] = fac.TimeZone
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("replay: --facilities: %w", err)
	}
	return out, nil
}

// loadDetectionConfig reads the detection section and the reference
// section's facilities and care slack from an ehrwatch configuration file
// (the one `ehrwatch run` reads; the other sections are checked but not
// used). An empty path means defaults.
func loadDetectionConfig(path string) (detectors.EngineConfig, detectors.ReferenceConfig, schemas.FHIRConfig, error) {
	if path == "" {
		return detectors.DefaultEngineConfig(detectors.Registry()), detectors.DefaultReferenceConfig(), schemas.DefaultFHIRConfig(), nil
	}
	cfg, err := LoadConfig(path, os.Environ())
	if err != nil {
		return detectors.EngineConfig{}, detectors.ReferenceConfig{}, schemas.FHIRConfig{}, fmt.Errorf("replay: %w", err)
	}
	return cfg.Detection.EngineConfig, cfg.Reference, cfg.FHIR, nil
}
