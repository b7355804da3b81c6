package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/prometheus/client_golang/prometheus"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	oklogrun "github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// runRun is `ehrwatch run`: the production process. It loads the
// reference data (failing fast when it cannot), builds one detector engine
// per assigned partition, and consumes until SIGTERM or SIGINT (ctx). Then
// it shuts down in order within pipeline.shutdown_timeout: stop fetching,
// flush (each stored batch's findings go to alerting before its offsets are
// acknowledged), commit, leave the group; then alerting drains its outputs
// and the ClickHouse connection closes. The operational endpoint stays up
// until the pipeline has stopped; the API (when api.listen is set) stops
// accepting requests at once and finishes those in flight.
const runUsage = `usage: ehrwatch run --config FILE [--listen HOST:PORT] [--log-level LEVEL]

The production process: consumes access events from Kafka in a consumer
group, runs the detectors, stores events and findings in ClickHouse, raises
alerts and commits. Serves /metrics, /healthz and /readyz on http.listen and,
when api.listen is set, the triage and report API. SIGTERM or SIGINT stops it
cleanly. Check the file first with ` + "`ehrwatch config validate FILE`" + `.
`

func runRun(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, runUsage)
	configPath := fs.String("config", "", "configuration file (YAML); EHRWATCH_* variables override it")
	listen := fs.String("listen", "", "serve /metrics, /healthz and /readyz on this address (overrides http.listen)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if *configPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return usageError{"run: want `run --config FILE`"}
	}
	// Flags first: a bad flag is a usage error whatever the file says.
	var flagErrs []error
	if *listen != "" {
		flagErrs = append(flagErrs, flagValueError("--listen", HTTPConfig{Listen: *listen}.Validate()))
	}
	if *logLevel != "" {
		flagErrs = append(flagErrs, flagValueError("--log-level", LogConfig{Level: *logLevel, Format: "json"}.Validate()))
	}
	if err := errors.Join(flagErrs...); err != nil {
		return usageError{err.Error()}
	}
	cfg, err := LoadRunConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.HTTP.Listen = *listen
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	log := newLogger(cfg.Log, stderr)

	opts, err := cfg.ClickHouse.Options()
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return fmt.Errorf("clickhouse: %w", err)
	}
	defer conn.Close()

	// The process owns its metrics registry and its readiness; reference
	// data, the detectors, alerting and the pipeline register with them as
	// they are built, each fully built before the next needs it.
	reg := prometheus.NewRegistry()
	reg.MustRegister(buildInfoCollector())
	health := ingest.NewHealth(reg)
	health.SetCondition("kafka", "not started")

	// The operational endpoint comes up first, so /readyz can say what
	// start-up is waiting for.
	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	srv := &http.Server{Handler: ingest.OpsHandler(health, reg), ReadHeaderTimeout: 10 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()
	serving := true
	defer func() {
		if serving { // returned before the run group took the server over
			_ = srv.Close()
		}
	}()
	log.Info().Str("listen", ln.Addr().String()).Msg("operational endpoint listening")
	if err := waitForClickHouse(ctx, conn, cfg, health, log); err != nil {
		if ctx.Err() != nil {
			log.Info().Msg("signal received while waiting for ClickHouse; stopping")
			return nil
		}
		return err
	}

	ref, err := newReferenceData(cfg.Reference, cfg.Detection.Allowlist, conn, reg, log, health.SetCondition)
	if err != nil {
		return err
	}
	lctx, cancelLoad := context.WithTimeout(ctx, cfg.ClickHouse.QueryTimeout)
	err = ref.Load(lctx)
	cancelLoad()
	if err != nil {
		return fmt.Errorf("reference data: %w", err)
	}
	st := ref.Reference.Index().Stats()
	log.Info().Str("source", cfg.Reference.Source).Int("users", st.Users).Int("patients", st.Patients).
		Int("encounters", st.Encounters).Int("allowlist", ref.Allowlist.Load().Len()).
		Dur("refresh_interval", cfg.Reference.RefreshInterval).Msg("reference data loaded")
	locations, err := cfg.Reference.Locations()
	if err != nil {
		return err
	}
	ecfg := cfg.Detection.EngineConfig
	ecfg.AllowlistSource = ref.Allowlist.Load
	newEngine, err := detectors.NewEngineFactory(ecfg, detectors.Env{Reference: ref.Reference.Load, Location: locations})
	if err != nil {
		return fmt.Errorf("detection: %w", err)
	}
	engines := newEngineSet(newEngine)
	if err := reg.Register(engines); err != nil {
		return fmt.Errorf("detector metrics: %w", err)
	}
	engines.monitor = detectors.NewVocabularyMonitor(ref.Reference.Load)
	if err := reg.Register(vocabularyCollector{engines.monitor}); err != nil {
		return fmt.Errorf("vocabulary metrics: %w", err)
	}
	health.SetDetail("vocabulary", func() string { return unmappedDetail(engines.monitor) })
	mgr, err := alerting.New(cfg.Alerting, alerting.Options{
		Store:      alerting.NewClickHouseStore(conn),
		Logger:     log,
		Registerer: reg,
		Version:    version,
	})
	if err != nil {
		return err
	}
	// Alerting closes after the pipeline's last Observe and before the
	// connection (deferred above, so it runs after this).
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), cfg.Pipeline.ShutdownTimeout)
		defer cancel()
		if err := mgr.Close(cctx); err != nil {
			log.Warn().Str("error", err.Error()).Msg("closing alerting")
		}
	}()

	dec, err := schemas.NewDecoder(cfg.FHIR)
	if err != nil {
		return err
	}
	observe := func(ctx context.Context, findings []schemas.Finding) error {
		_, err := mgr.Observe(ctx, findings)
		return err
	}
	newProcessor := engines.NewProcessor
	var judge *peerJudge
	if cfg.Peers.Mode == "group" {
		// volume and break_glass compare with the whole peer group: each
		// partition hands its closed days over through the peers topic,
		// and one instance's peer stage judges them (docs/detectors.md).
		cfg.Peers.Topic = cfg.Peers.topicName(cfg.Kafka.GroupID)
		cctx, cancel := context.WithTimeout(ctx, 6*cfg.Kafka.RequestTimeout)
		err := ensurePeersTopic(cctx, cfg.Kafka, cfg.Peers, log.With().Str("component", "peers").Logger())
		cancel()
		if err != nil {
			return err
		}
		pm, err := newPeerMetrics(reg)
		if err != nil {
			return err
		}
		sender, err := newPeerSender(cfg.Kafka, cfg.Peers.Topic, pm)
		if err != nil {
			return err
		}
		defer sender.Close()
		newProcessor = func(topic string, partition int) (ingest.Processor, error) {
			p, err := engines.NewProcessor(topic, partition)
			if err != nil {
				return nil, err
			}
			pe := p.(*partitionEngine)
			pe.DeferPeers()
			return &peerSource{partitionEngine: pe, topic: topic, partition: partition, send: sender,
				log: log.With().Str("component", "peers").Str("topic", topic).Int("partition", partition).Logger()}, nil
		}
		judge = &peerJudge{cfg: cfg.Peers, kc: cfg.Kafka, ecfg: ecfg, env: detectors.Env{Location: locations},
			newEngine: newEngine, writer: store.NewWriter(conn), observe: observe, send: sender, health: health, metrics: pm,
			log: log.With().Str("component", "peer_stage").Logger()}
	}
	p, err := ingest.New(cfg.Pipeline, cfg.Kafka, ingest.Deps{
		Logger:       log,
		ClickHouse:   conn,
		Decode:       dec.DecodeOwned,
		Metrics:      reg,
		Health:       health,
		NewProcessor: newProcessor,
		AfterStore:   observe,
	})
	if err != nil {
		return err
	}

	var apiSrv *http.Server
	var apiLn net.Listener
	if cfg.API.Listen != "" {
		if apiSrv, apiLn, err = newRunAPI(ctx, cfg, conn, log); err != nil {
			return err
		}
	}

	log.Info().Str("listen", ln.Addr().String()).Str("version", version).Strs("detectors", mustDetectors(newEngine)).
		Msg("ehrwatch starting")

	var g oklogrun.Group
	// Signals: main's ctx ends on SIGTERM or SIGINT.
	{
		stop := make(chan struct{})
		g.Add(func() error {
			select {
			case <-ctx.Done():
				log.Info().Msg("signal received; shutting down")
			case <-stop:
			}
			return nil
		}, func(error) { close(stop) })
	}
	// The pipeline: interrupting it starts its ordered shutdown; Run
	// returns when that is done.
	pipelineDone := make(chan struct{})
	{
		pctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			defer close(pipelineDone)
			if err := p.Run(pctx); err != nil {
				return fmt.Errorf("pipeline: %s", ingest.Redact(err))
			}
			return nil
		}, func(error) { cancel() })
	}
	// The peer stage (peers.mode group), until the pipeline has stopped:
	// it stores and alerts through the same connection and alerting.
	if judge != nil {
		jctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			return judge.run(jctx)
		}, func(error) {
			go func() {
				<-pipelineDone
				cancel()
			}()
		})
	}
	// Reference data and allowlist refresh.
	{
		rctx, cancel := context.WithCancel(context.Background())
		g.Add(func() error {
			ref.Run(rctx)
			return nil
		}, func(error) { cancel() })
	}
	// HTTP: kept up while the pipeline drains, so /readyz says
	// "shutting down" and /metrics shows the last flushes.
	serving = false
	{
		g.Add(func() error {
			if err := <-serveErr; !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("http: %w", err)
			}
			return nil
		}, func(error) {
			go func() {
				<-pipelineDone
				sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				_ = srv.Shutdown(sctx)
			}()
		})
	}
	// The API, on its own listener with its own TLS settings.
	if apiSrv != nil {
		g.Add(func() error {
			var err error
			if apiSrv.TLSConfig != nil {
				err = apiSrv.ServeTLS(apiLn, "", "")
			} else {
				err = apiSrv.Serve(apiLn)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("api: %w", err)
			}
			return nil
		}, func(error) {
			sctx, cancel := context.WithTimeout(context.Background(), cfg.API.ShutdownTimeout)
			defer cancel()
			_ = apiSrv.Shutdown(sctx)
		})
	}
	err = g.Run()
	if err != nil {
		log.Error().Str("error", err.Error()).Msg("ehrwatch stopped with an error")
		return err
	}
	log.Info().Msg("ehrwatch stopped")
	return nil
}

// waitForClickHouse pings ClickHouse until it answers, pausing between
// attempts with the pipeline's retry backoff (pipeline.retry), and says so
// on /readyz (condition "clickhouse") and in the log meanwhile. An error
// that waiting cannot cure (authentication, unknown database) is returned
// at once, as is ctx's error when the process is signalled.
func waitForClickHouse(ctx context.Context, conn driver.Conn, cfg Config, health *ingest.Health, log zerolog.Logger) error {
	r := cfg.Pipeline.Retry
	pause := r.InitialInterval
	start := time.Now()
	for attempt := 1; ; attempt++ {
		pctx, cancel := context.WithTimeout(ctx, cfg.ClickHouse.QueryTimeout)
		err := conn.Ping(pctx)
		cancel()
		if err == nil {
			health.SetCondition("clickhouse", "")
			if attempt > 1 {
				log.Info().Int("attempts", attempt).Dur("waited", time.Since(start)).Msg("ClickHouse reachable")
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		reason := ingest.Redact(err)
		if !ingest.Retryable(err) {
			return fmt.Errorf("clickhouse: %s", reason)
		}
		health.SetCondition("clickhouse", "waiting for ClickHouse: "+reason)
		log.Warn().Str("error", reason).Int("attempt", attempt).Dur("pause", pause).
			Msg("ClickHouse unreachable at start-up; waiting")
		t := time.NewTimer(pause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
		pause = min(time.Duration(float64(pause)*r.Multiplier), r.MaxInterval)
	}
}

// newRunAPI builds the triage and report API for `run` and opens its
// listener. It never shares the operational listener: the API has its
// own address, TLS, timeouts and authentication.
func newRunAPI(ctx context.Context, cfg Config, conn driver.Conn, log zerolog.Logger) (*http.Server, net.Listener, error) {
	st := triage.NewStore(conn, triageOptions(cfg))
	if err := st.CheckSchema(ctx); err != nil {
		return nil, nil, err
	}
	s, err := newAPIWithConsole(cfg, st, log.With().Str("component", "api").Logger())
	if err != nil {
		return nil, nil, err
	}
	hs, err := s.HTTPServer()
	if err != nil {
		return nil, nil, err
	}
	ln, err := net.Listen("tcp", cfg.API.Listen)
	if err != nil {
		return nil, nil, fmt.Errorf("api.listen: %w", err)
	}
	scheme := "http"
	if hs.TLSConfig != nil {
		scheme = "https"
	}
	log.Info().Str("component", "api").Str("addr", ln.Addr().String()).Str("scheme", scheme).Msg("api listening")
	return hs, ln, nil
}

// mustDetectors lists the detectors an engine runs, for the start-up log.
func mustDetectors(newEngine func() (*detectors.Engine, error)) []string {
	e, err := newEngine()
	if err != nil {
		return nil
	}
	defer e.Close()
	return e.Detectors()
}

// newLogger is the process logger: JSON (or console) on stderr, with
// timestamps, at the configured level.
func newLogger(c LogConfig, w io.Writer) zerolog.Logger {
	if c.Format == "console" {
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339}
	}
	level, err := zerolog.ParseLevel(c.Level)
	if err != nil {
		level = zerolog.InfoLevel
	}
	return zerolog.New(w).Level(level).With().Timestamp().Logger()
}
