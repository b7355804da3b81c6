package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const genUsage = `usage: ehrwatch gen (--out DIR | --kafka BROKERS --topic T) [flags]

Generates a synthetic hospital (users, patients, encounters) and its EHR
access stream with labelled incidents and benign confounders.

  --out DIR writes DIR/events.ndjson (arrival order), DIR/reference/{users,
  patients,encounters}.ndjson, DIR/facilities.ndjson and DIR/truth.ndjson.
  --kafka produces the events to a topic, keyed by user_id (hash balancer),
  optionally paced with --rate; with --out too, the files are written as well.

flags:
`

// genOptions are the settings of `ehrwatch gen`.
type genOptions struct {
	out        string
	format     string // "canonical" or "fhir"
	brokers    []string
	topic      string
	rate       float64 // events per second, 0 = as fast as possible
	batchSize  int
	partitions int // for a topic gen creates; -1: the broker's default
}

func runGen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	def := synth.DefaultConfig()
	fs := flag.NewFlagSet("gen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, genUsage)
	var o genOptions
	fs.StringVar(&o.out, "out", "", "output directory")
	days := fs.Int("days", def.Days, "days to simulate")
	warmup := fs.Int("warmup-days", -1, "days before baseline-dependent incidents (default: 8, or days/2 when --days < 10)")
	seed := fs.Uint64("seed", def.Seed, "random seed; equal flags give byte-identical output")
	users := fs.Int("users", 0, "total users, spread over the facilities in proportion (default 500)")
	patients := fs.Int("patients", 0, "total patients, spread over the facilities by users (≥ 5 per user; default 24 per user)")
	start := fs.String("start", def.Start.Format(time.DateOnly), "first day (YYYY-MM-DD); the default span includes the 2026-11-01 DST change")
	incidents := fs.Float64("incident-rate", def.IncidentRate, "incidents of each kind per 1000 user-days (0: none)")
	benign := fs.Float64("benign-rate", def.BenignRate, "scripted benign confounders of each kind per 1000 user-days")
	late := fs.Float64("late-rate", def.LateEventRate, "share of events that arrive minutes to hours late")
	fs.StringVar(&o.format, "format", "canonical", "event format: canonical (ehrwatch JSON) or fhir (FHIR R4 AuditEvent)")
	brokers := fs.String("kafka", "", "comma-separated Kafka bootstrap brokers to produce to")
	fs.StringVar(&o.topic, "topic", "ehr-access", "Kafka topic (with --kafka)")
	fs.Float64Var(&o.rate, "rate", 0, "events per second to produce (with --kafka; 0: as fast as possible)")
	fs.IntVar(&o.batchSize, "batch", 1000, "messages per Kafka write (with --kafka)")
	vocabulary := fs.String("vocabulary", "canonical", "how roles and departments are spelled: canonical, or export (as a real EHR export: abbreviations, per-facility names, a float pool; writes reference/vocabulary.ndjson)")
	fs.IntVar(&o.partitions, "partitions", -1, "partitions of the topic if gen has to create it (with --kafka; -1: the broker's default)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("gen: unexpected argument %q", fs.Arg(0))}
	}
	if *brokers != "" {
		for _, b := range strings.Split(*brokers, ",") {
			if b = strings.TrimSpace(b); b != "" {
				o.brokers = append(o.brokers, b)
			}
		}
	}
	if o.out == "" && len(o.brokers) == 0 {
		fs.Usage()
		return usageError{"gen: give --out DIR, --kafka BROKERS, or both"}
	}
	if o.format != "canonical" && o.format != "fhir" {
		return usageError{fmt.Sprintf("gen: --format must be canonical or fhir (got %q)", o.format)}
	}
	if len(o.brokers) > 0 && o.topic == "" {
		return usageError{"gen: --topic must not be empty"}
	}
	if o.rate < 0 || o.batchSize < 1 {
		return usageError{"gen: --rate must be ≥ 0 and --batch ≥ 1"}
	}

	cfg := def
	cfg.Seed, cfg.Days = *seed, *days
	cfg.IncidentRate, cfg.BenignRate, cfg.LateEventRate = *incidents, *benign, *late
	switch {
	case *warmup >= 0:
		cfg.WarmupDays = *warmup
	case *days < 10:
		cfg.WarmupDays = *days / 2
	}
	if *users > 0 {
		cfg = cfg.WithUsers(*users)
	}
	if *patients < 0 {
		return usageError{"gen: --patients must be ≥ 0"}
	}
	if *patients > 0 {
		cfg = withPatients(cfg, *patients)
	}
	st, err := time.Parse(time.DateOnly, *start)
	if err != nil {
		return usageError{fmt.Sprintf("gen: --start: want YYYY-MM-DD (got %q)", *start)}
	}
	cfg.Start = st
	if err := cfg.Validate(); err != nil {
		return err
	}

	if *vocabulary != "canonical" && *vocabulary != "export" {
		return usageError{fmt.Sprintf("gen: --vocabulary must be canonical or export (got %q)", *vocabulary)}
	}

	began := time.Now()
	h, err := synth.New(cfg)
	if err != nil {
		return err
	}
	if *vocabulary == "export" {
		h = h.WithVocabulary(synth.ExportVocabulary())
	}
	stats, err := genWrite(ctx, h, o, stderr)
	if err != nil {
		return err
	}
	printGenSummary(stdout, h, o, stats, time.Since(began))
	return nil
}

// genStats summarises a generated stream.
type genStats struct {
	events int
	late   int // logged more than a minute after the fact
	truth  []synth.Label
}

// genWrite streams the hospital's events to the files and/or Kafka.
func genWrite(ctx context.Context, h *synth.Hospital, o genOptions, stderr io.Writer) (genStats, error) {
	var st genStats
	var sinks []func(ev *schemas.AccessEvent, payload []byte) error
	var closers []func() error
	if o.out != "" {
		if err := h.WriteReference(o.out); err != nil {
			return st, err
		}
		f, err := os.Create(filepath.Join(o.out, synth.EventsFile))
		if err != nil {
			return st, err
		}
		defer f.Close()
		w := bufio.NewWriterSize(f, 1<<20)
		sinks = append(sinks, func(_ *schemas.AccessEvent, payload []byte) error {
			if _, err := w.Write(payload); err != nil {
				return err
			}
			return w.WriteByte('\n')
		})
		closers = append(closers, func() error {
			if err := w.Flush(); err != nil {
				return err
			}
			return f.Close()
		})
	}
	if len(o.brokers) > 0 {
		if err := ensureTopic(ctx, o.brokers, o.topic, o.partitions); err != nil {
			return st, err
		}
		p := newKafkaProducer(o)
		sinks = append(sinks, func(ev *schemas.AccessEvent, payload []byte) error { return p.add(ctx, ev.UserID, payload) })
		closers = append(closers, func() error { return p.close(ctx) })
		fmt.Fprintf(stderr, "producing to %s topic %s (rate %s)\n", strings.Join(o.brokers, ","), o.topic, rateText(o.rate))
	}
	encode := func(ev *schemas.AccessEvent) ([]byte, error) { return json.Marshal(ev) }
	if o.format == "fhir" {
		encode = synth.FHIRAuditEventR4
	}
	truth, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		payload, err := encode(ev)
		if err != nil {
			return err
		}
		for _, sink := range sinks {
			if err := sink(ev, payload); err != nil {
				return err
			}
		}
		st.events++
		if ev.LoggedTime != nil && ev.LoggedTime.Sub(ev.EventTime) > time.Minute {
			st.late++
		}
		return nil
	})
	for _, c := range closers {
		if cerr := c(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return st, err
	}
	st.truth = truth
	if o.out != "" {
		if err := synth.WriteTruth(filepath.Join(o.out, synth.TruthFile), truth); err != nil {
			return st, err
		}
	}
	return st, nil
}

// ensureTopic creates the topic if the brokers do not have it and waits
// until its partitions have leaders, so the first write does not fail with
// UnknownTopicOrPartition while auto-creation catches up.
func ensureTopic(ctx context.Context, brokers []string, topic string, partitions int) error {
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 10 * time.Second}
	ready := func() (bool, error) {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
		if err != nil {
			return false, err
		}
		for _, tp := range md.Topics {
			if tp.Name != topic || tp.Error != nil || len(tp.Partitions) == 0 {
				continue
			}
			for _, p := range tp.Partitions {
				if p.Error != nil || p.Leader.Host == "" {
					return false, nil
				}
			}
			return true, nil
		}
		return false, nil
	}
	ok, err := ready()
	if err != nil {
		return fmt.Errorf("kafka metadata: %w", err)
	}
	if ok {
		return nil
	}
	res, err := c.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{{Topic: topic, NumPartitions: partitions, ReplicationFactor: -1}}})
	if err != nil {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	if err := res.Errors[topic]; err != nil && !errors.Is(err, kafka.TopicAlreadyExists) {
		return fmt.Errorf("create topic %s: %w", topic, err)
	}
	for {
		if ok, err := ready(); err == nil && ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("topic %s: not ready: %w", topic, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func rateText(r float64) string {
	if r <= 0 {
		return "unlimited"
	}
	return fmt.Sprintf("%g events/s", r)
}

// kafkaProducer writes keyed messages in synchronous batches, paced to a
// rate.
type kafkaProducer struct {
	w       *kafka.Writer
	batch   []kafka.Message
	size    int
	rate    float64
	began   time.Time
	written int
}

func newKafkaProducer(o genOptions) *kafkaProducer {
	size := o.batchSize
	if o.rate > 0 {
		// at least ten writes a second, so pacing is smooth
		size = max(1, min(size, int(o.rate/10)))
	}
	return &kafkaProducer{
		w: &kafka.Writer{
			Addr:                   kafka.TCP(o.brokers...),
			Topic:                  o.topic,
			Balancer:               &kafka.Hash{}, // all of a user's events in one partition, in order
			BatchSize:              o.batchSize,
			BatchTimeout:           5 * time.Millisecond, // flush partial per-partition batches promptly
			RequiredAcks:           kafka.RequireAll,
			AllowAutoTopicCreation: true,
		},
		size: size,
		rate: o.rate,
	}
}

func (p *kafkaProducer) add(ctx context.Context, key string, payload []byte) error {
	if p.began.IsZero() {
		p.began = time.Now()
	}
	p.batch = append(p.batch, kafka.Message{Key: []byte(key), Value: slices.Clone(payload)})
	if len(p.batch) < p.size {
		return nil
	}
	return p.flush(ctx)
}

func (p *kafkaProducer) flush(ctx context.Context) error {
	if len(p.batch) == 0 {
		return nil
	}
	if err := p.w.WriteMessages(ctx, p.batch...); err != nil {
		return fmt.Errorf("kafka: %w", err)
	}
	p.written += len(p.batch)
	p.batch = p.batch[:0]
	return pace(ctx, p.began, p.written, p.rate)
}

// pace waits until n messages sent since start keep to rate per second
// (rate <= 0: no limit), or until ctx ends.
func pace(ctx context.Context, start time.Time, n int, rate float64) error {
	if rate <= 0 {
		return nil
	}
	due := start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
		}
	}
	return nil
}

func (p *kafkaProducer) close(ctx context.Context) error {
	err := p.flush(ctx)
	return errors.Join(err, p.w.Close())
}

func printGenSummary(w io.Writer, h *synth.Hospital, o genOptions, st genStats, took time.Duration) {
	active := 0
	for _, u := range h.Users {
		if u.Status == schemas.UserActive {
			active++
		}
	}
	fmt.Fprintf(w, "generated %d days at %d facilities: %d users (%d active), %d patients, %d encounters\n",
		h.Config.Days, len(h.Facilities), len(h.Users), active, len(h.Patients), len(h.Encounters))
	fmt.Fprintf(w, "events: %d (%d arrived more than a minute late) in %s, %.0f events/s\n",
		st.events, st.late, took.Round(time.Millisecond), float64(st.events)/took.Seconds())
	type row struct {
		kind     string
		n, evs   int
		scenario map[string]int
	}
	rows := map[string]*row{}
	for _, l := range st.truth {
		r := rows[l.Kind]
		if r == nil {
			r = &row{kind: l.Kind, scenario: map[string]int{}}
			rows[l.Kind] = r
		}
		r.n++
		r.evs += len(l.EventIDs)
		r.scenario[l.Scenario]++
	}
	kinds := make([]string, 0, len(rows))
	for k := range rows {
		kinds = append(kinds, k)
	}
	slices.Sort(kinds)
	fmt.Fprintf(w, "truth: %d labels\n", len(st.truth))
	for _, k := range kinds {
		r := rows[k]
		var sc []string
		for s, n := range r.scenario {
			sc = append(sc, fmt.Sprintf("%s %d", s, n))
		}
		slices.Sort(sc)
		fmt.Fprintf(w, "  %-22s %4d labels %6d events  (%s)\n", k, r.n, r.evs, strings.Join(sc, ", "))
	}
	if o.out != "" {
		fmt.Fprintf(w, "wrote %s\n", o.out)
	}
	if len(o.brokers) > 0 {
		fmt.Fprintf(w, "produced %d messages to %s\n", st.events, o.topic)
	}
}
