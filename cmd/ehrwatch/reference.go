package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// referenceData loads the detectors' reference data and allowlist, at
// startup and then every reference.refresh_interval, into holders the
// engines read on every event; a refresh swaps them atomically.
//
// A failed refresh keeps the previous data, logs the error class and
// counts it (ehrwatch_reference_refreshes_total{result="error"}); after
// reference.degraded_after consecutive failures of one source /readyz
// answers 503 ("reference: …" or "allowlist: …"), until that source loads
// again. Not ready means "detecting on stale data", not "stopped":
// consumption goes on.
type referenceData struct {
	cfg    detectors.ReferenceConfig
	opts   detectors.ReferenceOptions
	static []detectors.AllowlistEntry // detection.allowlist
	conn   driver.Conn
	log    zerolog.Logger
	// setCondition reports readiness (ingest.SetCondition).
	setCondition func(component, reason string)

	Reference *detectors.ReferenceHolder
	Allowlist *detectors.AllowlistHolder

	m        referenceMetrics
	failures map[string]int // consecutive failures by source

	// through is when the last ClickHouse read began (zero before the
	// first); incremental counts the incremental refreshes since the last
	// whole read, and skippedWhole the rows that read left out.
	through      time.Time
	incremental  int
	skippedWhole int
	wholeNext    bool // the next reference load reads whole (SIGHUP)
}

type referenceMetrics struct {
	refreshes   *prometheus.CounterVec // source, result
	lastSuccess *prometheus.GaugeVec   // source
	failing     *prometheus.GaugeVec   // source
	records     *prometheus.GaugeVec   // kind
	skipped     *prometheus.GaugeVec   // source
	loads       *prometheus.CounterVec // read: whole, changes
}

// Reference sources for metrics and readiness.
const (
	srcReference = "reference"
	srcAllowlist = "allowlist"
)

func newReferenceData(cfg detectors.ReferenceConfig, static []detectors.AllowlistEntry, conn driver.Conn,
	reg prometheus.Registerer, log zerolog.Logger, setCondition func(string, string)) (*referenceData, error) {
	opts, err := cfg.Options()
	if err != nil {
		return nil, err
	}
	r := &referenceData{
		cfg: cfg, opts: opts, static: static, conn: conn, setCondition: setCondition,
		log:       log.With().Str("component", "reference").Logger(),
		Reference: detectors.NewReferenceHolder(nil),
		Allowlist: &detectors.AllowlistHolder{},
		failures:  map[string]int{},
	}
	r.m.refreshes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_reference_refreshes_total", Help: "Loads of reference data and of the allowlist, by source and result (ok, error).",
	}, []string{"source", "result"})
	r.m.lastSuccess = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_reference_last_success_timestamp_seconds", Help: "Unix time of the last successful load, by source.",
	}, []string{"source"})
	r.m.failing = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_reference_consecutive_failures", Help: "Failed loads since the last successful one, by source.",
	}, []string{"source"})
	r.m.records = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_reference_records", Help: "Records in the reference data in use, by kind (users, patients, encounters, allowlist).",
	}, []string{"kind"})
	r.m.skipped = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ehrwatch_reference_skipped_rows", Help: "Rows left out of the last load for failing validation, by source.",
	}, []string{"source"})
	r.m.loads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ehrwatch_reference_loads_total", Help: "Successful loads of reference data, by read: whole (files, or the tables whole) or changes (rows written since the previous read, applied incrementally).",
	}, []string{"read"})
	for _, c := range []prometheus.Collector{r.m.refreshes, r.m.lastSuccess, r.m.failing, r.m.records, r.m.skipped, r.m.loads} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("reference metrics: %w", err)
		}
	}
	r.m.loads.WithLabelValues("whole")
	r.m.loads.WithLabelValues("changes")
	for _, src := range []string{srcReference, srcAllowlist} {
		r.m.refreshes.WithLabelValues(src, "ok")
		r.m.refreshes.WithLabelValues(src, "error")
	}
	return r, nil
}

// Load loads both sources once; an error is fatal at startup.
func (r *referenceData) Load(ctx context.Context) error {
	return errors.Join(r.refresh(ctx, srcReference), r.refresh(ctx, srcAllowlist))
}

// Run refreshes both sources every refresh_interval until ctx ends. A
// SIGHUP refreshes them at once, reading the reference tables whole (after
// a bulk load whose rows carry an old updated_at, say).
func (r *referenceData) Run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	r.run(ctx, hup)
}

func (r *referenceData) run(ctx context.Context, whole <-chan os.Signal) {
	t := time.NewTicker(r.cfg.RefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-whole:
			r.wholeNext = true
			r.log.Info().Msg("reference data: whole reload requested")
		}
		_ = r.refresh(ctx, srcReference)
		_ = r.refresh(ctx, srcAllowlist)
	}
}

// refresh loads one source and swaps it in, or keeps the previous data.
func (r *referenceData) refresh(ctx context.Context, src string) error {
	start := time.Now()
	var err error
	switch src {
	case srcReference:
		err = r.loadReference(ctx)
	case srcAllowlist:
		err = r.loadAllowlist(ctx)
	}
	if err != nil {
		if ctx.Err() != nil {
			return err
		}
		r.failures[src]++
		n := r.failures[src]
		r.m.refreshes.WithLabelValues(src, "error").Inc()
		r.m.failing.WithLabelValues(src).Set(float64(n))
		class, text := referenceErrorClass(err)
		r.log.Error().Str("source", src).Str("error_class", class).Str("error", text).Int("consecutive_failures", n).
			Msg("loading reference data failed; the previous data stays in use")
		if n >= r.cfg.DegradedAfter {
			r.setCondition(src, fmt.Sprintf("%d consecutive loads failed (%s); detecting on data from the last good load", n, class))
		}
		return fmt.Errorf("%s: %s", src, text)
	}
	r.failures[src] = 0
	r.m.refreshes.WithLabelValues(src, "ok").Inc()
	r.m.failing.WithLabelValues(src).Set(0)
	r.m.lastSuccess.WithLabelValues(src).SetToCurrentTime()
	r.setCondition(src, "")
	r.log.Debug().Str("source", src).Dur("took", time.Since(start)).Msg("reference data loaded")
	return nil
}

func (r *referenceData) loadReference(ctx context.Context) error {
	var x *detectors.ReferenceIndex
	skipped := 0
	kind := "whole"
	switch r.cfg.Source {
	case detectors.ReferenceFromFiles:
		var err error
		if x, err = detectors.LoadReferenceFiles(r.cfg.Dir, r.opts); err != nil {
			return err
		}
	default:
		var ld *clickHouseLoad
		var err error
		prev := r.Reference.Index()
		if prev != nil && !r.through.IsZero() && r.incremental+1 < r.cfg.FullReloadEvery && !r.wholeNext {
			kind = "changes"
			ld, err = updateClickHouseReference(ctx, r.conn, prev, r.through.Add(-r.cfg.ChangeMargin))
		} else {
			ld, err = indexClickHouseReference(ctx, r.conn, r.opts)
		}
		if err != nil {
			return err
		}
		x = ld.index
		r.through = ld.through
		if kind == "whole" {
			r.incremental, r.skippedWhole, r.wholeNext = 0, 0, false
		} else {
			r.incremental++
		}
		for key, n := range ld.skipped {
			r.skippedWhole += n
			r.log.Warn().Str("rows", key).Int("count", n).Msg("reference rows skipped: they fail validation")
		}
		skipped = r.skippedWhole
		r.log.Debug().Str("read", kind).Int("changes", ld.changes).Msg("reference tables read")
	}
	r.Reference.Store(x)
	st := x.Stats()
	r.m.records.WithLabelValues("users").Set(float64(st.Users))
	r.m.records.WithLabelValues("patients").Set(float64(st.Patients))
	r.m.records.WithLabelValues("encounters").Set(float64(st.Encounters))
	r.m.skipped.WithLabelValues(srcReference).Set(float64(skipped + st.InvalidEncounters))
	r.m.loads.WithLabelValues(kind).Inc()
	return nil
}

// clickHouseLoad is one read of the reference tables, indexed.
type clickHouseLoad struct {
	index   *detectors.ReferenceIndex
	skipped map[string]int // rows left out, by "table: error class: field"
	through time.Time      // when the read began (store.ReferenceRead.Through)
	changes int            // records changed (incremental reads)
}

// readVocabulary reads the vocabulary table; rows naming an unknown
// category are left out and counted with the rows that fail validation,
// by "table: error class: field" ("vocabulary: categories").
func readVocabulary(ctx context.Context, conn driver.Conn) ([]schemas.VocabularyEntry, map[string]int, error) {
	rows, skipped, err := store.ReadVocabulary(ctx, conn)
	if err != nil {
		return nil, nil, err
	}
	vocab, unknown := detectors.KnownVocabulary(rows)
	if unknown > 0 {
		skipped["vocabulary: categories"] += unknown
	}
	return vocab, skipped, nil
}

// indexClickHouseReference reads the reference tables whole, streaming
// their rows (store.StreamReference, schemas rows only) into a
// detectors.ReferenceBuilder: the tables are never held in memory.
func indexClickHouseReference(ctx context.Context, conn driver.Conn, opts detectors.ReferenceOptions) (*clickHouseLoad, error) {
	vocab, skipped, err := readVocabulary(ctx, conn)
	if err != nil {
		return nil, err
	}
	b, err := detectors.NewReferenceBuilder(vocab, opts)
	if err != nil {
		return nil, err
	}
	rd, err := store.StreamReference(ctx, conn, store.ReferenceVisitor{
		User:      func(u *schemas.User) error { b.AddUser(u); return nil },
		Patient:   func(p *schemas.Patient) error { b.AddPatient(p); return nil },
		Encounter: func(e *schemas.Encounter) error { b.AddEncounter(e); return nil },
	})
	if err != nil {
		return nil, err
	}
	for k, n := range rd.Skipped {
		skipped[k] += n
	}
	return &clickHouseLoad{index: b.Build(), skipped: skipped, through: rd.Through}, nil
}

// updateClickHouseReference reads the rows written since a time
// (store.StreamReferenceChanges) and applies them to prev copy-on-write
// (detectors.ReferenceUpdate); prev stays in use until the result is
// swapped in.
func updateClickHouseReference(ctx context.Context, conn driver.Conn, prev *detectors.ReferenceIndex, since time.Time) (*clickHouseLoad, error) {
	vocab, skipped, err := readVocabulary(ctx, conn)
	if err != nil {
		return nil, err
	}
	u, err := prev.Update(vocab)
	if err != nil {
		return nil, err
	}
	rd, err := store.StreamReferenceChanges(ctx, conn, since, store.ReferenceVisitor{
		User:              func(v *schemas.User) error { u.SetUser(v); return nil },
		DeletedUser:       func(id string) error { u.DeleteUser(id); return nil },
		Patient:           func(p *schemas.Patient) error { u.SetPatient(p); return nil },
		DeletedPatient:    func(id string) error { u.DeletePatient(id); return nil },
		EncountersChanged: func(id string) error { u.ReplaceEncounters(id); return nil },
		Encounter:         func(e *schemas.Encounter) error { u.AddEncounter(e); return nil },
	})
	if err != nil {
		return nil, err
	}
	for k, n := range rd.Skipped {
		skipped[k] += n
	}
	changes := u.Changes()
	return &clickHouseLoad{index: u.Apply(), skipped: skipped, through: rd.Through, changes: changes}, nil
}

// loadAllowlist merges detection.allowlist (first, so it wins ties) with
// the live entries of the allowlist table (without a connection: the
// configured entries alone).
func (r *referenceData) loadAllowlist(ctx context.Context) error {
	ld := &store.AllowlistLoad{}
	if r.conn != nil {
		var err error
		if ld, err = store.ReadAllowlist(ctx, r.conn); err != nil {
			return err
		}
	}
	for _, id := range ld.SkippedKeys() {
		r.log.Warn().Str("entry_id", id).Str("field", ld.Skipped[id]).Msg("allowlist entry skipped: it fails validation")
	}
	entries := append(append([]detectors.AllowlistEntry(nil), r.static...), ld.Entries...)
	a, err := detectors.NewAllowlist(entries)
	if err != nil {
		return err
	}
	r.Allowlist.Store(a)
	r.m.records.WithLabelValues("allowlist").Set(float64(a.Len()))
	r.m.skipped.WithLabelValues(srcAllowlist).Set(float64(len(ld.Skipped)))
	return nil
}

// referenceErrorClass names an error for logs and /readyz without data:
// ClickHouse errors by exception code, decode errors by class, field and
// line, file errors by path.
func referenceErrorClass(err error) (class, text string) {
	var ex *clickhouse.Exception
	var de *schemas.DecodeError
	var pe *fs.PathError
	var re *store.ReferenceError
	switch {
	case errors.As(err, &ex):
		class = "clickhouse_exception_" + strconv.Itoa(int(ex.Code))
	case errors.As(err, &de):
		class = "invalid_data_" + string(de.Class)
	case errors.As(err, &pe):
		class = "file"
	case errors.Is(err, context.DeadlineExceeded):
		class = "timeout"
	default:
		class = "unavailable"
	}
	if errors.As(err, &re) {
		return class, re.Error()
	}
	return class, ingest.Redact(err)
}
