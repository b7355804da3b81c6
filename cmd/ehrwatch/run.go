package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	oklogrun "github.com/oklog/run"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/pipeline"
)

// runRun is `ehrwatch run`: the production process. It consumes until
// SIGTERM or SIGINT (ctx), then shuts down in order within
// pipeline.shutdown_timeout: stop fetching, flush, commit, leave the
// group, close; the HTTP endpoint stays up until the pipeline has stopped.
func runRun(ctx context.Context, args []string, _, stderr io.Writer) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); EHRWATCH_* variables override it")
	listen := fs.String("listen", "", "serve /metrics, /healthz and /readyz on this address (overrides http.listen)")
	logLevel := fs.String("log-level", "", "debug, info, warn or error (overrides log.level)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" || fs.NArg() > 0 {
		fs.Usage()
		return usageError{"run: want `run --config FILE`"}
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.HTTP.Listen = *listen
	}
	if *logLevel != "" {
		cfg.Log.Level = *logLevel
	}
	if err := errors.Join(cfg.HTTP.Validate("--listen"), cfg.Log.Validate("--log")); err != nil {
		return usageError{err.Error()}
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

	p, err := pipeline.New(cfg.Pipeline, cfg.Kafka, pipeline.Deps{
		Logger:     log,
		ClickHouse: conn,
		// TODO(detectors): NewProcessor: one detectors.Engine per partition.
	})
	if err != nil {
		return err
	}

	ln, err := net.Listen("tcp", cfg.HTTP.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	log.Info().Str("listen", ln.Addr().String()).Str("version", version).Msg("ehrwatch starting")
	srv := &http.Server{Handler: p.Handler(), ReadHeaderTimeout: 10 * time.Second}

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
				return fmt.Errorf("pipeline: %s", pipeline.Redact(err))
			}
			return nil
		}, func(error) { cancel() })
	}
	// HTTP: kept up while the pipeline drains, so /readyz says
	// "shutting down" and /metrics shows the last flushes.
	{
		g.Add(func() error {
			if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
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
	err = g.Run()
	if err != nil {
		log.Error().Str("error", err.Error()).Msg("ehrwatch stopped with an error")
		return err
	}
	log.Info().Msg("ehrwatch stopped")
	return nil
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
