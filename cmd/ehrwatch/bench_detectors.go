package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"runtime"
	"runtime/debug"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const benchUsage = `usage: ehrwatch bench <what> [flags]

  pipeline   end to end through a real broker: a raw kafka-go fetch loop, ehrwatch with
             the sink disabled, ehrwatch into ClickHouse (--config FILE)
  latency    seconds from access to alert at steady rates with bursts: produce -> event
             stored, -> finding stored, -> alert delivered to a local webhook (--config FILE)
  detectors  the detectors alone over a pre-decoded synthetic stream in memory: events/s
             on one core and on several (one engine per user-partitioned share), allocations
  memory     detector state per active user after a synthetic stream (runtime.MemStats after GC)

Run ` + "`ehrwatch bench <what> -h`" + ` for each one's flags. docs/benchmarks.md has the figures.
`

// benchHospital builds the generator configuration of a benchmark:
// patients > 0 sets the patients of the whole hospital (withPatients), 0
// keeps the default patients per user.
func benchHospital(users, patients, days int, seed uint64) (synth.Config, error) {
	cfg := synth.DefaultConfig()
	cfg.Seed, cfg.Days = seed, days
	cfg.WarmupDays = min(cfg.WarmupDays, days-1)
	if days < 9 {
		cfg.WarmupDays = days / 2
	}
	if users != 500 {
		cfg = cfg.WithUsers(users)
	}
	if patients < 0 {
		return cfg, errors.New("--patients must be ≥ 0")
	}
	if patients > 0 {
		cfg = withPatients(cfg, patients)
	}
	return cfg, cfg.Validate()
}

// withPatients returns a copy of c whose facilities together have n
// patients, spread in proportion to their users (the last facility takes
// the rounding remainder). Each facility needs at least 5 patients per
// user (synth.Config.Validate).
func withPatients(c synth.Config, n int) synth.Config {
	total := 0
	for _, f := range c.Facilities {
		total += f.Users
	}
	out := c
	out.Facilities = slices.Clone(c.Facilities)
	left := n
	for i := range out.Facilities {
		share := left
		if i < len(out.Facilities)-1 && total > 0 {
			share = int(math.Round(float64(n) * float64(out.Facilities[i].Users) / float64(total)))
		}
		out.Facilities[i].Patients = share
		left -= share
	}
	return out
}

// newBenchHospital generates the default-seed hospital of `bench pipeline`
// and `bench latency`; a bad size is a usage error.
func newBenchHospital(users, days int) (*synth.Hospital, error) {
	hcfg, err := benchHospital(users, 0, days, synth.DefaultConfig().Seed)
	if err != nil {
		return nil, usageError{"bench: " + err.Error()}
	}
	return synth.New(hcfg)
}

// benchEngines builds the engine factory over a hospital's reference data.
func benchEngines(h *synth.Hospital) (func() (*detectors.Engine, error), error) {
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = newHashKey()
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		return nil, err
	}
	return replay.NewEngineFactory(idx, h.TimeZones(), detectors.DefaultEngineConfig(detectors.Registry()))
}

// runBenchDetectors is `ehrwatch bench detectors`.
func runBenchDetectors(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench detectors", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, "usage: ehrwatch bench detectors [flags]\n\nThe detectors alone over a pre-decoded synthetic stream in memory: events/s on\none core and on several (one engine per user-partitioned share), allocations.\n")
	users := fs.Int("users", 500, "users of the synthetic hospital")
	patients := fs.Int("patients", 0, "patients of the synthetic hospital, spread over its facilities by users (≥ 5 per user; 0: 24 per user)")
	days := fs.Int("days", 14, "days simulated")
	seed := fs.Uint64("seed", synth.DefaultConfig().Seed, "generator seed")
	runs := fs.Int("runs", 3, "runs of each configuration (the best and the median are reported)")
	engines := fs.String("engines", "1,2", "comma-separated engine counts: N engines on N goroutines with GOMAXPROCS=N, users split by partition hash")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the detector runs (generation excluded) to this file")
	procs := fs.Int("gomaxprocs", 0, "GOMAXPROCS for every engine count (0: as many as engines); e.g. --engines 1,2,4,8,16,32 --gomaxprocs 2 varies the partitions on fixed cores")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	var counts []int
	for _, s := range strings.Split(*engines, ",") {
		var n int
		if _, err := fmt.Sscan(strings.TrimSpace(s), &n); err != nil || n < 1 || n > 256 {
			return usageError{fmt.Sprintf("bench detectors: bad --engines %q", *engines)}
		}
		counts = append(counts, n)
	}
	if *runs < 1 {
		return usageError{"bench detectors: --runs must be ≥ 1"}
	}
	if *procs < 0 || *procs > 256 {
		return usageError{"bench detectors: --gomaxprocs must be 0–256"}
	}
	cfg, err := benchHospital(*users, *patients, *days, *seed)
	if err != nil {
		return usageError{"bench detectors: " + err.Error()}
	}
	began := time.Now()
	h, err := synth.Generate(cfg)
	if err != nil {
		return err
	}
	newEngine, err := benchEngines(h)
	if err != nil {
		return err
	}
	events := make([]*schemas.AccessEvent, len(h.Events))
	for i := range h.Events {
		events[i] = &h.Events[i]
	}
	fmt.Fprintf(stdout, "hospital: %d users, %d patients, %d encounters, %d days, %d events, generated and decoded in memory in %s\n",
		len(h.Users), len(h.Patients), len(h.Encounters), *days, len(events), time.Since(began).Round(time.Millisecond))
	fmt.Fprintf(stdout, "machine: %s/%s, %d CPUs, %s; load average %s\n", runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), loadAverage())
	stopProfile, err := startCPUProfile(*cpuProfile)
	if err != nil {
		return err
	}
	defer stopProfile()
	prev := runtime.GOMAXPROCS(0)
	defer runtime.GOMAXPROCS(prev)
	for _, n := range counts {
		shares := splitByPartition(events, n)
		var rates, cpuRates []float64
		var last detectorRun
		p := n
		if *procs > 0 {
			p = *procs
		}
		for range *runs {
			if err := ctx.Err(); err != nil {
				return err
			}
			runtime.GOMAXPROCS(p)
			r, err := runDetectorShares(ctx, newEngine, shares)
			runtime.GOMAXPROCS(prev)
			if err != nil {
				return err
			}
			rates = append(rates, float64(len(events))/r.took.Seconds())
			if r.cpu > 0 {
				cpuRates = append(cpuRates, float64(len(events))/r.cpu.Seconds())
			}
			last = r
		}
		sort.Float64s(rates)
		sort.Float64s(cpuRates)
		cpuRate := 0.0
		if len(cpuRates) > 0 {
			cpuRate = cpuRates[len(cpuRates)/2]
		}
		fmt.Fprintf(stdout, "%d engine(s), GOMAXPROCS=%d: best %9.0f events/s, median %9.0f events/s, median %9.0f events per CPU-second; %.2f allocs/event, %.0f B/event; %d findings; load average %s\n",
			n, p, rates[len(rates)-1], rates[len(rates)/2], cpuRate, float64(last.mallocs)/float64(len(events)),
			float64(last.bytes)/float64(len(events)), last.findings, loadAverage())
	}
	if rss := peakRSS(); rss > 0 {
		fmt.Fprintf(stdout, "peak RSS %.0f MiB (the hospital, its events in memory, the reference index and the engines)\n", float64(rss)/(1<<20))
	}
	return nil
}

// splitByPartition splits events into n shares by user, as a topic of n
// partitions keyed by user_id would, keeping each share's order.
func splitByPartition(events []*schemas.AccessEvent, n int) [][]*schemas.AccessEvent {
	part := replay.MustPartitioner("fnv1a", n)
	shares := make([][]*schemas.AccessEvent, n)
	for _, ev := range events {
		p := part([]byte(ev.UserID))
		shares[p] = append(shares[p], ev)
	}
	return shares
}

type detectorRun struct {
	took     time.Duration
	cpu      time.Duration // user + system CPU of the process during the run (GC included)
	mallocs  uint64
	bytes    uint64
	findings int
}

// runDetectorShares runs one fresh engine per share, each on its own
// goroutine, to the end of its share (then Flush).
func runDetectorShares(ctx context.Context, newEngine func() (*detectors.Engine, error), shares [][]*schemas.AccessEvent) (detectorRun, error) {
	engines := make([]*detectors.Engine, len(shares))
	for i := range engines {
		e, err := newEngine()
		if err != nil {
			return detectorRun{}, err
		}
		engines[i] = e
	}
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	cpuBefore := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	found := make([]int, len(shares))
	for i := range shares {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := engines[i]
			for _, ev := range shares[i] {
				fs, _ := e.Process(ctx, ev)
				found[i] += len(fs)
			}
			fs, _ := e.Flush(ctx)
			found[i] += len(fs)
		}()
	}
	wg.Wait()
	took := time.Since(start)
	cpu := processCPU() - cpuBefore
	runtime.ReadMemStats(&after)
	r := detectorRun{took: took, cpu: cpu, mallocs: after.Mallocs - before.Mallocs, bytes: after.TotalAlloc - before.TotalAlloc}
	for _, n := range found {
		r.findings += n
	}
	for _, e := range engines {
		_ = e.Close()
	}
	return r, nil
}

// runBenchMemory is `ehrwatch bench memory`.
func runBenchMemory(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench memory", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, "usage: ehrwatch bench memory [flags]\n\nDetector state per active user after a synthetic stream (runtime.MemStats after GC).\n")
	users := fs.Int("users", 100_000, "users of the synthetic hospital")
	patients := fs.Int("patients", 0, "patients of the synthetic hospital, spread over its facilities by users (≥ 5 per user; 0: 24 per user)")
	days := fs.Int("days", 1, "days simulated")
	seed := fs.Uint64("seed", synth.DefaultConfig().Seed, "generator seed")
	perDetector := fs.Bool("per-detector", false, "also measure each detector alone (one more pass over the stream per detector)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	cfg, err := benchHospital(*users, *patients, *days, *seed)
	if err != nil {
		return usageError{"bench memory: " + err.Error()}
	}
	began := time.Now()
	h, err := synth.New(cfg)
	if err != nil {
		return err
	}
	opts := detectors.DefaultReferenceOptions()
	opts.HashKey = newHashKey()
	idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
	if err != nil {
		return err
	}
	loc, err := detectors.FacilityLocations(h.TimeZones())
	if err != nil {
		return err
	}
	holder := detectors.NewReferenceHolder(idx)
	env := detectors.Env{Reference: holder.Load, Location: loc}
	fmt.Fprintf(stdout, "hospital: %d users, %d patients, %d encounters, %d days; planned and indexed in %s\n",
		len(h.Users), len(h.Patients), len(h.Encounters), *days, time.Since(began).Round(time.Millisecond))

	userIndex := make(map[string]int, len(h.Users))
	for i, u := range h.Users {
		userIndex[u.UserID] = i
	}
	measure := func(factories []detectors.Factory) (state uint64, active, events int, took time.Duration, err error) {
		e, err := detectors.NewEngine(detectors.DefaultEngineConfig(detectors.Registry()), factories, env)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		defer e.Close()
		seen := make([]bool, len(h.Users))
		heapAfterGC := func() uint64 {
			runtime.GC()
			debug.FreeOSMemory()
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			return ms.HeapAlloc
		}
		base := heapAfterGC()
		start := time.Now()
		_, err = h.EachEvent(func(ev *schemas.AccessEvent) error {
			if events%65536 == 0 && ctx.Err() != nil {
				return ctx.Err()
			}
			events++
			if i, ok := userIndex[ev.UserID]; ok && !seen[i] {
				seen[i] = true
				active++
			}
			_, err := e.Process(ctx, ev)
			return err
		})
		took = time.Since(start)
		if err != nil {
			return 0, 0, 0, 0, err
		}
		after := heapAfterGC()
		runtime.KeepAlive(e)
		if after > base {
			state = after - base
		}
		return state, active, events, took, nil
	}
	state, active, events, took, err := measure(detectors.Registry())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "all detectors: %d events from %d active users in %s; detector state %.1f MiB = %.0f bytes per active user\n",
		events, active, took.Round(time.Millisecond), float64(state)/(1<<20), float64(state)/float64(max(active, 1)))
	if !*perDetector {
		return nil
	}
	for _, f := range detectors.Registry() {
		state, active, _, _, err := measure([]detectors.Factory{f})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "  %-12s alone: %7.0f bytes per active user\n", f.Name, float64(state)/float64(max(active, 1)))
	}
	return nil
}

// benchCommands lists the bench subcommands.
var benchCommands = []string{"detectors", "latency", "memory", "pipeline"}
