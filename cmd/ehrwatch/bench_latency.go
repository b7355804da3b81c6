package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const benchLatencyUsage = `usage: ehrwatch bench latency --config FILE [flags]

Seconds from access to alert. For each rate, a producer writes a synthetic
hospital's stream at that rate (with bursts) to a fresh topic on the real
broker, with an injected incident (a terminated user's access) at a steady
interval; the whole pipeline with the real detectors stores into a fresh
ClickHouse database (dropped after) and alerts into a webhook receiver on
127.0.0.1. It reports p50/p95/p99/max of
  (a) produce -> event stored       ehrwatch_event_to_stored_seconds{table="access_events"}
  (b) produce -> finding stored     ehrwatch_event_to_stored_seconds{table="findings"}
  (c) produce -> alert delivered    ehrwatch_event_to_alert_seconds{output="webhook"}, per detector
read from the pipeline's own histograms (25% buckets), the settings that
bound each, and the INSERTs that carried the events (rows per insert and
inserts per second, by table; docs/benchmarks.md, "Latency").
`

// runBenchLatency is `ehrwatch bench latency`.
func runBenchLatency(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("bench latency", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, benchLatencyUsage)
	configPath := fs.String("config", "", "configuration file (Kafka brokers, ClickHouse, pipeline and alerting settings); the topic, database and webhook are created by the benchmark")
	ratesFlag := fs.String("rates", "1000,5000,20000", "comma-separated steady rates in events/s, one run each")
	duration := fs.Duration("duration", 60*time.Second, "how long each run produces")
	burstFlag := fs.String("burst", "3x2s/15s", "bursts: FACTORxLENGTH/EVERY produces at FACTOR times the rate for LENGTH every EVERY (\"none\": no bursts)")
	incidentEvery := fs.Duration("incidents-every", time.Second, "inject an incident (a terminated user's access) this often")
	users := fs.Int("users", 500, "users of the synthetic hospital")
	days := fs.Int("days", 14, "days of the synthetic hospital (its stream is produced once, in order; a run stops early when it is used up)")
	partitions := fs.Int("partitions", 4, "partitions of each run's topic")
	replication := fs.Int("replication", 1, "replication factor of each run's topic")
	keep := fs.Bool("keep", false, "keep the topics and databases")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	rates, err := parseRates(*ratesFlag)
	if err != nil {
		return usageError{"bench latency: --rates: " + err.Error()}
	}
	burst, err := parseBurst(*burstFlag)
	if err != nil {
		return usageError{"bench latency: --burst: " + err.Error()}
	}
	if *duration <= 0 || *incidentEvery <= 0 || *partitions < 1 || fs.NArg() > 0 {
		return usageError{"bench latency: --duration and --incidents-every must be > 0, --partitions >= 1"}
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	h, err := newBenchHospital(*users, *days)
	if err != nil {
		return err
	}
	var terminated []string
	for _, u := range h.Users {
		if u.Status == schemas.UserTerminated && u.TerminatedAt != nil {
			terminated = append(terminated, u.UserID)
		}
	}
	if len(terminated) == 0 {
		return errors.New("bench latency: the synthetic hospital has no terminated user to inject incidents with; try more --users")
	}
	newEngine, err := benchEngines(h)
	if err != nil {
		return err
	}
	recv, err := newBenchReceiver()
	if err != nil {
		return err
	}
	defer recv.close()
	acfg, err := benchAlerting(cfg.Alerting, recv.url)
	if err != nil {
		return err
	}

	p, k := cfg.Pipeline, cfg.Kafka
	fetch := fmt.Sprintf("kafka.max_wait %s does not add (kafka.min_bytes 1: a fetch returns as soon as data exists)", k.MaxWait)
	if k.MinBytes > 1 {
		fetch = fmt.Sprintf("+ up to kafka.max_wait %s per fetch (kafka.min_bytes %d)", k.MaxWait, k.MinBytes)
	}
	fmt.Fprintf(stdout, "bounds: (a) pipeline.handoff_linger %s + pipeline.batch_max_wait %s (less once batch_max_rows %d fill first) + the INSERT (+ the previous batch's, at most one in flight); %s\n",
		p.HandoffLinger, p.BatchMaxWait, p.BatchMaxRows, fetch)
	fmt.Fprintf(stdout, "        (b) as (a), for the event that completes the finding (windowed detectors emit when their window closes, in event time)\n")
	fmt.Fprintf(stdout, "        (c) (b) + alert state write + webhook send; alerting has no group wait: a rule notifies as soon as a group reaches min_count (%s)\n",
		ruleCounts(acfg))
	fmt.Fprintf(stdout, "hospital: %d users, %d days, seed %d; topics of %d partitions; incidents every %s; bursts %s; load average %s\n",
		len(h.Users), *days, synth.DefaultConfig().Seed, *partitions, *incidentEvery, burst, loadAverage())

	for _, rate := range rates {
		var rnd [4]byte
		_, _ = rand.Read(rnd[:])
		id := hex.EncodeToString(rnd[:])
		b := &bench{cfg: cfg, topic: "ehrwatch-latency-" + id, partitions: *partitions, out: stdout,
			log: newLogger(LogConfig{Level: "warn", Format: "console"}, stderr), hospital: h}
		lr := &latencyRun{bench: b, id: id, rate: rate, duration: *duration, burst: burst,
			incidentEvery: *incidentEvery, terminated: terminated, alerting: acfg, keep: *keep,
			newProcessor: func(string, int) (ingest.Processor, error) { return newEngine() }}
		if err := lr.run(ctx, *replication); err != nil {
			return fmt.Errorf("rate %d/s: %w", rate, err)
		}
	}
	return nil
}

// benchAlerting is the configuration's alerting with one output, a webhook
// to the benchmark's receiver, and no lifecycle loop.
func benchAlerting(c alerting.Config, url string) (alerting.Config, error) {
	var key [32]byte
	_, _ = rand.Read(key[:])
	c.Enabled = true
	c.Lifecycle.Enabled = false
	d := alerting.DefaultConfig().Outputs.Webhook.Delivery
	c.Outputs = alerting.OutputsConfig{Webhook: alerting.WebhookConfig{
		Enabled: true, URL: url, AllowHTTP: true, Delivery: d,
		Secret: "whsec_" + base64.StdEncoding.EncodeToString(key[:]),
	}}
	return c, schemas.UnderKey("alerting", c.Validate())
}

func ruleCounts(c alerting.Config) string {
	var s []string
	for _, r := range c.Rules {
		s = append(s, fmt.Sprintf("%s: %d", r.Name, max(r.MinCount, 1)))
	}
	return strings.Join(s, ", ")
}

// benchReceiver accepts every POST on 127.0.0.1 and counts them.
type benchReceiver struct {
	url      string
	srv      *http.Server
	received atomic.Int64
}

func newBenchReceiver() (*benchReceiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &benchReceiver{url: "http://" + ln.Addr().String() + "/alerts"}
	r.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		_, _ = io.Copy(io.Discard, req.Body)
		r.received.Add(1)
		w.WriteHeader(http.StatusNoContent)
	})}
	go func() { _ = r.srv.Serve(ln) }()
	return r, nil
}

func (r *benchReceiver) close() { _ = r.srv.Close() }

// burstSpec is FACTORxLENGTH/EVERY.
type burstSpec struct {
	factor        float64
	length, every time.Duration
}

func (b burstSpec) String() string {
	if b.factor == 0 {
		return "none"
	}
	return fmt.Sprintf("%gx%s/%s", b.factor, b.length, b.every)
}

func parseBurst(s string) (burstSpec, error) {
	if s == "none" || s == "" {
		return burstSpec{}, nil
	}
	f, rest, ok1 := strings.Cut(s, "x")
	l, e, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 {
		return burstSpec{}, fmt.Errorf("want FACTORxLENGTH/EVERY (e.g. 3x2s/15s) or none, got %q", s)
	}
	var b burstSpec
	var err1, err2, err3 error
	b.factor, err1 = strconv.ParseFloat(f, 64)
	b.length, err2 = time.ParseDuration(l)
	b.every, err3 = time.ParseDuration(e)
	if err := errors.Join(err1, err2, err3); err != nil {
		return burstSpec{}, err
	}
	if b.factor < 1 || b.length <= 0 || b.every <= b.length {
		return burstSpec{}, fmt.Errorf("want FACTOR >= 1 and 0 < LENGTH < EVERY, got %q", s)
	}
	return b, nil
}

// rate is the production rate at elapsed time t: a burst starts every
// b.every, the first one b.every after the start.
func (b burstSpec) rate(base float64, t time.Duration) float64 {
	if b.factor == 0 || t < b.every || t%b.every >= b.length {
		return base
	}
	return base * b.factor
}

func parseRates(s string) ([]int, error) {
	var rates []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("want positive integers, got %q", f)
		}
		rates = append(rates, n)
	}
	return rates, nil
}

// loadAverage is /proc/loadavg's first three fields, or "unknown".
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if f := strings.Fields(string(b)); err == nil && len(f) >= 3 {
		return strings.Join(f[:3], " ")
	}
	return "unknown"
}

type latencyRun struct {
	*bench
	id            string
	rate          int
	duration      time.Duration
	burst         burstSpec
	incidentEvery time.Duration
	terminated    []string
	alerting      alerting.Config
	keep          bool
	newProcessor  ingest.ProcessorFactory
}

func (r *latencyRun) run(ctx context.Context, replication int) error {
	tr, err := r.createTopic(ctx, replication)
	if err != nil {
		return err
	}
	if !r.keep {
		defer r.deleteTopic()
	}
	chCfg := r.cfg.ClickHouse
	chCfg.Database = r.cfg.ClickHouse.Database + "_latency_" + r.id
	conn, err := r.database(ctx, chCfg, r.keep)
	if err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	defer conn.Close()

	k := r.cfg.Kafka
	k.GroupID = r.topic + "-latency"
	k.Topics = []string{r.topic}
	k.StartOffset = "first"
	var mgr *alerting.Manager
	p, err := ingest.New(r.cfg.Pipeline, k, ingest.Deps{
		Logger: r.log, ClickHouse: conn, DeadLetters: discardDLQ{}, NewProcessor: r.newProcessor,
		AfterStore: func(ctx context.Context, findings []schemas.Finding) error {
			_, err := mgr.Observe(ctx, findings)
			return err
		},
	})
	if err != nil {
		return err
	}
	mgr, err = alerting.New(r.alerting, alerting.Options{
		Store: alerting.NewClickHouseStore(conn), Logger: r.log, Registerer: p.Registry(), Version: version,
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = mgr.Close(cctx)
	}()
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- p.Run(rctx) }()
	defer func() {
		cancel()
		<-done
	}()

	// Produce once every partition is assigned, so the group join is not
	// counted as latency.
	if err := r.waitFor(ctx, done, time.Minute, "partitions assigned", func() bool {
		return promSum(p.Registry(), "ehrwatch_assigned_partitions") >= float64(r.partitions)
	}); err != nil {
		return err
	}
	began := time.Now()
	produced, incidents, err := r.produce(ctx, tr, done)
	if err != nil {
		return err
	}
	// Wait for every event to be stored, then for alerting to go quiet.
	if err := r.waitFor(ctx, done, 2*time.Minute+r.duration, "every event stored", func() bool {
		return p.Stats().Stored >= int64(produced)
	}); err != nil {
		return err
	}
	stored := time.Since(began)
	var last float64
	var quietSince time.Time
	if err := r.waitFor(ctx, done, 30*time.Second, "alerting quiet", func() bool {
		sent := promSum(p.Registry(), "ehrwatch_alerting_notifications_sent_total")
		queued := promSum(p.Registry(), "ehrwatch_alerting_notifications_queued")
		if sent != last || queued > 0 || quietSince.IsZero() {
			last, quietSince = sent, time.Now()
			return false
		}
		return time.Since(quietSince) >= time.Second
	}); err != nil {
		return err
	}

	fmt.Fprintf(r.out, "\nrate %d events/s for %s (bursts %s): %d events produced (%d injected incidents), load average %s\n",
		r.rate, r.duration, r.burst, produced, incidents, loadAverage())
	fmt.Fprintf(r.out, "  %-34s %8s %8s %8s %8s %9s\n", "", "count", "p50", "p95", "p99", "max")
	reg := p.Registry()
	r.line("(a) produce -> event stored", latencyHist(reg, "ehrwatch_event_to_stored_seconds", "table", "access_events"))
	r.line("(b) produce -> finding stored", latencyHist(reg, "ehrwatch_event_to_stored_seconds", "table", "findings"))
	r.line("(c) produce -> alert delivered", latencyHist(reg, "ehrwatch_event_to_alert_seconds", "output", "webhook"))
	for _, det := range labelValues(reg, "ehrwatch_event_to_alert_seconds", "detector") {
		r.line("(c)   "+det, latencyHist(reg, "ehrwatch_event_to_alert_seconds", "detector", det))
	}
	r.batching(reg, stored)
	return nil
}

// batching prints what the sink's INSERTs were like over the run
// (ehrwatch_batch_rows), from the first event produced to the last
// stored: the latency must not be bought with small, frequent inserts,
// which ClickHouse's MergeTree tables cannot take for long.
func (r *latencyRun) batching(reg *prometheus.Registry, over time.Duration) {
	fmt.Fprintf(r.out, "  INSERTs over %s, from the first event produced to the last stored (ehrwatch_batch_rows):\n", over.Round(100*time.Millisecond))
	tables := labelValues(reg, "ehrwatch_batch_rows", "table")
	// The "≥ 1 000 rows per insert", at the histogram's first
	// bucket bound from 1 000 (1 024).
	var bound float64
	if len(tables) > 0 {
		for _, b := range latencyHist(reg, "ehrwatch_batch_rows", "table", tables[0]).bounds {
			if b >= 1000 {
				bound = b
				break
			}
		}
	}
	fmt.Fprintf(r.out, "  %-34s %8s %9s %12s %10s %18s\n", "", "inserts", "rows", "rows/insert", "inserts/s",
		fmt.Sprintf("above %.0f rows", bound))
	for _, table := range tables {
		h := latencyHist(reg, "ehrwatch_batch_rows", "table", table)
		above := uint64(0)
		for i, b := range h.bounds {
			if b == bound {
				above = h.count - h.cum[i]
			}
		}
		fmt.Fprintf(r.out, "  %-34s %8d %9.0f %12.0f %10.2f %18d\n", table, h.count, h.sum,
			h.sum/float64(h.count), float64(h.count)/over.Seconds(), above)
	}
}

// produce writes the hospital's stream at the run's rate (bursts
// included) for its duration, one injected incident every incidentEvery.
// Each message's Kafka timestamp is the time it was handed to the writer.
func (r *latencyRun) produce(ctx context.Context, tr *kafka.Transport, done chan error) (produced, incidents int, err error) {
	var failed atomic.Int64
	var firstErr atomic.Value
	w := &kafka.Writer{
		Addr: kafka.TCP(r.cfg.Kafka.Brokers...), Topic: r.topic, Balancer: &kafka.Hash{},
		RequiredAcks: kafka.RequireAll, Async: true, BatchSize: 1000, BatchBytes: 1000 << 10,
		BatchTimeout: 2 * time.Millisecond, Compression: kafka.Lz4, Transport: tr,
		Completion: func(msgs []kafka.Message, err error) {
			if err != nil {
				failed.Add(int64(len(msgs)))
				firstErr.CompareAndSwap(nil, err)
			}
		},
	}
	defer func() {
		if cerr := w.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("produce: %w", cerr)
		}
		if n := failed.Load(); n > 0 && err == nil {
			err = fmt.Errorf("produce: %d messages failed: %w", n, summarizeWriteError(firstErr.Load().(error)))
		}
	}()

	// The stream, in order, from its own goroutine.
	events := make(chan *schemas.AccessEvent, 4096)
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		defer close(events)
		_, _ = r.hospital.EachEvent(func(ev *schemas.AccessEvent) error {
			c := *ev
			select {
			case events <- &c:
				return nil
			case <-sctx.Done():
				return sctx.Err()
			}
		})
	}()

	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	last, due := start, 0.0
	nextIncident := start.Add(r.incidentEvery / 2)
	msgs := make([]kafka.Message, 0, 1024)
	for now := start; now.Sub(start) < r.duration; {
		select {
		case <-ctx.Done():
			return produced, incidents, ctx.Err()
		case err := <-done:
			done <- err
			return produced, incidents, fmt.Errorf("pipeline stopped: %v", err)
		case now = <-tick.C:
		}
		due += r.burst.rate(float64(r.rate), now.Sub(start)) * now.Sub(last).Seconds()
		last = now
		msgs = msgs[:0]
		for ; due >= 1; due-- {
			ev, ok := <-events
			if !ok {
				fmt.Fprintf(r.out, "(the synthetic stream ended after %d events, %s into the run: use more --days or --users)\n", produced, now.Sub(start).Round(time.Millisecond))
				return produced, incidents, w.WriteMessages(ctx, msgs...)
			}
			if !now.Before(nextIncident) {
				nextIncident = nextIncident.Add(r.incidentEvery)
				ev.UserID = r.terminated[incidents%len(r.terminated)]
				ev.EventID = fmt.Sprintf("latency-%s-%d", r.id, incidents)
				incidents++
			}
			v, err := json.Marshal(ev)
			if err != nil {
				return produced, incidents, err
			}
			msgs = append(msgs, kafka.Message{Key: []byte(ev.UserID), Value: v, Time: time.Now()})
			produced++
		}
		if err := w.WriteMessages(ctx, msgs...); err != nil {
			return produced, incidents, fmt.Errorf("produce: %w", summarizeWriteError(err))
		}
	}
	return produced, incidents, nil
}

// waitFor polls cond every 10 ms until it holds, the pipeline stops, or
// limit passes.
func (r *latencyRun) waitFor(ctx context.Context, done chan error, limit time.Duration, what string, cond func() bool) error {
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("gave up waiting for %s after %s", what, limit)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err := <-done:
			done <- err
			return fmt.Errorf("pipeline stopped while waiting for %s: %v", what, err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	return nil
}

func (r *latencyRun) line(name string, h hist) {
	if h.count == 0 {
		fmt.Fprintf(r.out, "  %-34s %8d %8s %8s %8s %9s\n", name, 0, "-", "-", "-", "-")
		return
	}
	fmt.Fprintf(r.out, "  %-34s %8d %8s %8s %8s %9s\n", name, h.count,
		secs(h.quantile(0.50)), secs(h.quantile(0.95)), secs(h.quantile(0.99)), "<="+secs(h.maxBound()))
}

func secs(s float64) string {
	if math.IsInf(s, 1) {
		return "inf"
	}
	return strconv.FormatFloat(s, 'f', 3, 64) + "s"
}

// hist is a cumulative histogram merged over series.
type hist struct {
	count  uint64
	sum    float64
	bounds []float64 // upper bounds, ascending
	cum    []uint64  // cumulative counts per bound
}

// latencyHist merges the series of the histogram name whose label has
// value val.
func latencyHist(reg *prometheus.Registry, name, label, val string) hist {
	var h hist
	for _, m := range series(reg, name) {
		if !hasLabel(m, label, val) {
			continue
		}
		hh := m.GetHistogram()
		if h.bounds == nil {
			for _, b := range hh.GetBucket() {
				h.bounds = append(h.bounds, b.GetUpperBound())
			}
			h.cum = make([]uint64, len(h.bounds))
		}
		for i, b := range hh.GetBucket() {
			h.cum[i] += b.GetCumulativeCount()
		}
		h.count += hh.GetSampleCount()
		h.sum += hh.GetSampleSum()
	}
	return h
}

// quantile interpolates linearly within the bucket holding the q-th
// sample, as PromQL's histogram_quantile does.
func (h hist) quantile(q float64) float64 {
	rank := q * float64(h.count)
	lower, below := 0.0, uint64(0)
	for i, b := range h.bounds {
		if float64(h.cum[i]) >= rank {
			in := h.cum[i] - below
			if in == 0 {
				return b
			}
			return lower + (b-lower)*(rank-float64(below))/float64(in)
		}
		lower, below = b, h.cum[i]
	}
	return math.Inf(1)
}

// maxBound is the upper bound of the highest non-empty bucket.
func (h hist) maxBound() float64 {
	for i, b := range h.bounds {
		if h.cum[i] == h.count {
			return b
		}
	}
	return math.Inf(1)
}

func series(reg *prometheus.Registry, name string) []*dto.Metric {
	mfs, err := reg.Gather()
	if err != nil {
		return nil
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

func hasLabel(m *dto.Metric, label, val string) bool {
	for _, lp := range m.GetLabel() {
		if lp.GetName() == label && lp.GetValue() == val {
			return true
		}
	}
	return false
}

// labelValues lists the values of label among name's series that have
// samples, sorted.
func labelValues(reg *prometheus.Registry, name, label string) []string {
	seen := map[string]bool{}
	for _, m := range series(reg, name) {
		if m.GetHistogram().GetSampleCount() == 0 {
			continue
		}
		for _, lp := range m.GetLabel() {
			if lp.GetName() == label {
				seen[lp.GetValue()] = true
			}
		}
	}
	var out []string
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

// promSum is the sum of a counter's or gauge's series.
func promSum(reg *prometheus.Registry, name string) float64 {
	var s float64
	for _, m := range series(reg, name) {
		s += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return s
}
