package main

import (
	"bytes"
	"compress/gzip"
	"context"
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestBenchDetectorsAndMemoryCommands(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "detectors", "--users", "120", "--days", "2", "--runs", "1", "--engines", "1,2"},
		{"bench", "memory", "--users", "120", "--days", "2"},
	} {
		var out, errOut bytes.Buffer
		if err := run(context.Background(), args, &out, &errOut); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, errOut.String())
		}
		want := "events/s"
		if args[1] == "memory" {
			want = "bytes per active user"
		}
		if !strings.Contains(out.String(), want) {
			t.Errorf("%v output lacks %q:\n%s", args, want, out.String())
		}
	}
	var out, errOut bytes.Buffer
	if err := run(context.Background(), []string{"bench", "nothing"}, &out, &errOut); exitCode(err) != 2 {
		t.Errorf("bench nothing: %v, want a usage error", err)
	}
	if err := run(context.Background(), []string{"bench", "detectors", "--engines", "0"}, &out, &errOut); exitCode(err) != 2 {
		t.Errorf("--engines 0: %v, want a usage error", err)
	}
}

// BenchmarkDetectors runs every detector over the default synthetic
// hospital (500 users, 14 days, about 250 000 pre-decoded events), one op
// being the whole stream through fresh engines: one engine on one
// goroutine, and two engines on two goroutines over user-partitioned
// halves. Run with
//
//	go test ./cmd/ehrwatch -run '^$' -bench Detectors -benchtime 10x
//
// (-cpu 1,2 sets GOMAXPROCS). `ehrwatch bench detectors` measures the same
// with GOMAXPROCS set per configuration.
func BenchmarkDetectors(b *testing.B) {
	h, err := synth.Generate(synth.DefaultConfig())
	if err != nil {
		b.Fatal(err)
	}
	newEngine, err := benchEngines(h)
	if err != nil {
		b.Fatal(err)
	}
	events := make([]*schemas.AccessEvent, len(h.Events))
	for i := range h.Events {
		events[i] = &h.Events[i]
	}
	for _, n := range []int{1, 2} {
		shares := splitByPartition(events, n)
		b.Run(map[int]string{1: "engines=1", 2: "engines=2"}[n], func(b *testing.B) {
			b.ReportAllocs()
			var mallocs uint64
			for b.Loop() {
				r, err := runDetectorShares(context.Background(), newEngine, shares)
				if err != nil {
					b.Fatal(err)
				}
				mallocs += r.mallocs
			}
			b.ReportMetric(float64(b.N*len(events))/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(mallocs)/float64(b.N*len(events)), "allocs/event")
		})
	}
}

// BenchmarkEngineSnapshot measures what a partition's drain pays to hand
// its detectors over (a snapshot, gzip at BestSpeed, as the pipeline takes
// it) and what the next owner pays to restore it: one engine holding the
// state of a 2 000-user hospital after 14 days (about a million events).
// Run with
//
//	go test ./cmd/ehrwatch -run '^$' -bench EngineSnapshot -benchtime 5x
func BenchmarkEngineSnapshot(b *testing.B) {
	cfg, err := benchHospital(2000, 14, synth.DefaultConfig().Seed)
	if err != nil {
		b.Fatal(err)
	}
	h, err := synth.Generate(cfg)
	if err != nil {
		b.Fatal(err)
	}
	newEngine, err := benchEngines(h)
	if err != nil {
		b.Fatal(err)
	}
	e, err := newEngine()
	if err != nil {
		b.Fatal(err)
	}
	users := map[string]bool{}
	for i := range h.Events {
		users[h.Events[i].UserID] = true
		if _, err := e.Process(context.Background(), &h.Events[i]); err != nil {
			b.Fatal(err)
		}
	}
	var buf bytes.Buffer
	snapshot := func() {
		buf.Reset()
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		if err := e.Snapshot(zw); err != nil {
			b.Fatal(err)
		}
		if err := zw.Close(); err != nil {
			b.Fatal(err)
		}
	}
	b.Run("snapshot", func(b *testing.B) {
		for b.Loop() {
			snapshot()
		}
		b.ReportMetric(float64(buf.Len()), "gzip-bytes")
		b.ReportMetric(float64(buf.Len())/float64(len(users)), "bytes/user")
	})
	snapshot()
	data := bytes.Clone(buf.Bytes())
	b.Run("restore", func(b *testing.B) {
		for b.Loop() {
			fresh, err := newEngine()
			if err != nil {
				b.Fatal(err)
			}
			zr, err := gzip.NewReader(bytes.NewReader(data))
			if err != nil {
				b.Fatal(err)
			}
			if err := fresh.Restore(zr); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Logf("%d events, %d users, snapshot %d bytes gzip", len(h.Events), len(users), len(data))
}
