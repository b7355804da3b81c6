package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"github.com/ehrwatch/ehrwatch/schemas"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/api"
	webconsole "github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// openTriageStore connects to ClickHouse and checks the schema.
func openTriageStore(ctx context.Context, cfg Config) (*triage.Store, func(), error) {
	conn, err := store.Open(cfg.ClickHouse)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to clickhouse: %w", err)
	}
	s := triage.NewStore(conn, triageOptions(cfg))
	if err := s.CheckSchema(ctx); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return s, func() { _ = conn.Close() }, nil
}

const serveUsage = `usage: ehrwatch serve --config FILE [--listen HOST:PORT]
       ehrwatch serve hash-token < token-file

Serves the triage and report API and the web console (api and console
sections of the config) until interrupted. hash-token reads a bearer token on stdin and prints the
sha256:<hex> form for api.tokens[].hash.
`

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "hash-token" {
		return runHashToken(args[1:], stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, serveUsage)
	configPath := fs.String("config", "", "configuration file (YAML)")
	listen := fs.String("listen", "", "override api.listen")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{"serve: unexpected arguments"}
	}
	cfg, err := LoadConfigFor("serve", *configPath, os.Environ())
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.API.Listen = *listen
	}
	if cfg.API.Listen == "" {
		cfg.API.Listen = apiDefaultListen
	}
	if err := schemas.UnderKey("api", cfg.API.Validate()); err != nil {
		if *listen != "" {
			return fmt.Errorf("--listen: %w", err)
		}
		return err
	}
	log := newLogger(cfg.Log, stderr).With().Str("component", "api").Logger()
	st, closeStore, err := openTriageStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	srv, err := newAPIWithConsole(cfg, st, log)
	if err != nil {
		return err
	}
	return srv.ListenAndServe(ctx)
}

// newAPIWithConsole builds the API server with the web console mounted on
// its listener (every path outside /api/ and /healthz).
func newAPIWithConsole(cfg Config, st consoleStore, log zerolog.Logger) (*api.Server, error) {
	return newAPIAndConsole(cfg.API, cfg.Console, st, false, log)
}

// consoleStore is what the API and the console read and write:
// *triage.Store, or the demo's in-memory store.
type consoleStore interface {
	api.Store
	webconsole.Store
}

// newAPIAndConsole is newAPIWithConsole from the two sections; demo labels
// every page as showing the demo's in-memory store.
func newAPIAndConsole(apiCfg api.Config, conCfg webconsole.Config, st consoleStore, demo bool, log zerolog.Logger) (*api.Server, error) {
	var con *webconsole.Console
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { con.Handler().ServeHTTP(w, r) })
	srv, err := api.New(apiCfg, api.Deps{Store: st, Log: log, UI: ui})
	if err != nil {
		return nil, err
	}
	con, err = webconsole.New(conCfg, webconsole.Deps{Store: st, Auth: srv, QueryTimeout: apiCfg.QueryTimeout, DemoStore: demo,
		Log: log.With().Str("component", "console").Logger()})
	if err != nil {
		return nil, err
	}
	return srv, nil
}

func runHashToken(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) == 1 && isHelp(args[0]) {
		fmt.Fprint(stdout, serveUsage)
		return flag.ErrHelp
	}
	if len(args) != 0 {
		fmt.Fprint(stderr, serveUsage)
		return usageError{"serve hash-token: takes no arguments (the token comes on stdin)"}
	}
	line, err := bufio.NewReader(io.LimitReader(stdin, 16<<10)).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("read token: %w", err)
	}
	tok := strings.TrimRight(line, "\r\n")
	if len(tok) < 16 {
		return usageError{"serve hash-token: want a token of at least 16 characters on stdin"}
	}
	fmt.Fprintln(stdout, api.HashToken(tok))
	return nil
}

// triageOptions are the API's triage options plus the detector names an
// allowlist entry may name.
func triageOptions(cfg Config) triage.Options {
	opts := cfg.API.TriageOptions()
	for _, f := range detectors.Registry() {
		opts.Detectors = append(opts.Detectors, f.Name)
	}
	return opts
}
