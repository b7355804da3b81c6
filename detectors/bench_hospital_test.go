package detectors_test

import (
	"context"
	"os"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/detectors/synth"
)

var benchHospital struct {
	once sync.Once
	h    *synth.Hospital
	env  detectors.Env
	err  error
}

// benchHospitalEnv generates the synthetic hospital of `ehrwatch bench
// detectors` once per test binary: EHRWATCH_BENCH_USERS users (default
// 2000, as in docs/benchmarks.md §2), 14 days, the default seed.
func benchHospitalEnv(b *testing.B) (*synth.Hospital, detectors.Env) {
	benchHospital.once.Do(func() {
		users := 2000
		if s := os.Getenv("EHRWATCH_BENCH_USERS"); s != "" {
			if users, benchHospital.err = strconv.Atoi(s); benchHospital.err != nil {
				return
			}
		}
		cfg := synth.DefaultConfig().WithUsers(users)
		if benchHospital.h, benchHospital.err = synth.Generate(cfg); benchHospital.err != nil {
			return
		}
		h := benchHospital.h
		opts := detectors.DefaultReferenceOptions()
		opts.HashKey = caseHashKey
		idx, err := detectors.NewReferenceIndex(h.Users, h.Patients, h.Encounters, opts)
		if err != nil {
			benchHospital.err = err
			return
		}
		loc, err := detectors.FacilityLocations(h.TimeZones())
		if err != nil {
			benchHospital.err = err
			return
		}
		benchHospital.env = detectors.Env{Reference: detectors.NewReferenceHolder(idx).Load, Location: loc}
	})
	if benchHospital.err != nil {
		b.Fatal(benchHospital.err)
	}
	return benchHospital.h, benchHospital.env
}

// BenchmarkEngine_Hospital runs every registered detector through one
// Engine over the synthetic hospital's stream, pre-decoded, in arrival
// order; one op is one event, a fresh Engine starts each pass over the
// stream (built outside the timer). cpu-ns/op is the process's CPU time
// per event (getrusage: GC included), which a loaded machine moves far
// less than wall-clock ns/op. Its -cpuprofile is the detectors' profile
// of docs/benchmarks.md §2.
func BenchmarkEngine_Hospital(b *testing.B) {
	benchEngineHospital(b, detectors.Registry())
}

// BenchmarkEngine_Explainer is BenchmarkEngine_Hospital with no
// detector enabled: what every event costs before any detector runs (the
// Engine's explanation of the access, its learning and its watermark;
// docs/benchmarks.md §2, "The explanation's share").
func BenchmarkEngine_Explainer(b *testing.B) {
	benchEngineHospital(b, nil)
}

func benchEngineHospital(b *testing.B, factories []detectors.Factory) {
	h, env := benchHospitalEnv(b)
	cfg := detectors.DefaultEngineConfig(factories)
	newEngine := func() *detectors.Engine {
		e, err := detectors.NewEngine(cfg, factories, env)
		if err != nil {
			b.Fatal(err)
		}
		return e
	}
	ctx := context.Background()
	var e *detectors.Engine
	findings := 0
	b.ReportAllocs()
	b.ResetTimer()
	var cpu, seg time.Duration // CPU time of the timed stretches
	for i := 0; i < b.N; i++ {
		j := i % len(h.Events)
		if j == 0 {
			b.StopTimer()
			if i > 0 {
				cpu += cpuTime(b) - seg
			}
			if e != nil {
				fs, _ := e.Flush(ctx)
				findings += len(fs)
				_ = e.Close()
			}
			e = newEngine()
			seg = cpuTime(b)
			b.StartTimer()
		}
		fs, err := e.Process(ctx, &h.Events[j])
		if err != nil {
			b.Fatal(err)
		}
		findings += len(fs)
	}
	b.StopTimer()
	if cpu += cpuTime(b) - seg; seg > 0 {
		b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
	}
	b.ReportMetric(float64(findings)/float64(b.N)*1e6, "findings/Mevent")
}
