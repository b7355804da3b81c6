package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"

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
	cfg, err := benchHospital(2000, 0, 14, synth.DefaultConfig().Seed)
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

// TestWithPatients checks the growth flags' patient count: the whole
// hospital gets exactly n patients, spread by users, and fewer than five
// per user is refused.
func TestWithPatients(t *testing.T) {
	base := synth.DefaultConfig().WithUsers(2000)
	before := base.Facilities[0].Patients
	for _, n := range []int{10_000, 100_000, 10_000_000} {
		c := withPatients(base, n)
		total := 0
		for i, f := range c.Facilities {
			total += f.Patients
			if f.Users != base.Facilities[i].Users {
				t.Errorf("%d patients: facility %s users %d, want %d", n, f.ID, f.Users, base.Facilities[i].Users)
			}
		}
		if total != n {
			t.Errorf("withPatients(%d): %d patients", n, total)
		}
		if err := c.Validate(); err != nil {
			t.Errorf("withPatients(%d): %v", n, err)
		}
		// Spread by users: nyc has 76 % of the users.
		if got := float64(c.Facilities[0].Patients) / float64(n); got < 0.75 || got > 0.77 {
			t.Errorf("withPatients(%d): first facility has %.3f of the patients", n, got)
		}
	}
	if base.Facilities[0].Patients != before {
		t.Error("withPatients changed its argument")
	}
	if c := withPatients(base, 9_000); c.Validate() == nil {
		t.Error("9 000 patients for 2 000 users validated; want fewer than 5 per user refused")
	}
}

func TestBenchGrowthFlags(t *testing.T) {
	var out, errOut bytes.Buffer
	args := []string{"bench", "detectors", "--users", "120", "--patients", "3000", "--days", "2", "--runs", "1", "--engines", "1,4", "--gomaxprocs", "1"}
	if err := run(context.Background(), args, &out, &errOut); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, errOut.String())
	}
	for _, want := range []string{" 3000 patients,", "1 engine(s), GOMAXPROCS=1:", "4 engine(s), GOMAXPROCS=1:", "allocs/event", "load average", "peak RSS"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	out.Reset()
	if err := run(context.Background(), []string{"bench", "memory", "--users", "120", "--patients", "4000", "--days", "1"}, &out, &errOut); err != nil {
		t.Fatalf("bench memory --patients: %v\n%s", err, errOut.String())
	}
	if !strings.Contains(out.String(), " 4000 patients,") {
		t.Errorf("bench memory --patients 4000:\n%s", out.String())
	}
	for _, bad := range [][]string{
		{"bench", "detectors", "--users", "120", "--patients", "100"}, // fewer than 5 per user
		{"bench", "detectors", "--patients", "-1"},
		{"bench", "detectors", "--gomaxprocs", "-1"},
		{"bench", "memory", "--users", "120", "--patients", "100"},
	} {
		if err := run(context.Background(), bad, &out, &errOut); exitCode(err) != 2 {
			t.Errorf("%v: %v, want a usage error", bad, err)
		}
	}
}
