package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"reflect"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/rs/zerolog"
	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// apiFileConfig is what `serve` and `report` read from the configuration
// file: the clickhouse and api sections (other sections are left to the
// commands that own them, but unknown keys inside these two are errors),
// then EHRWATCH_CLICKHOUSE_* and EHRWATCH_API_* environment overrides.
type apiFileConfig struct {
	ClickHouse store.Config `yaml:"clickhouse"`
	API        api.Config   `yaml:"api"`
}

func loadAPIFileConfig(path string, environ []string) (apiFileConfig, error) {
	cfg := apiFileConfig{ClickHouse: store.DefaultConfig(), API: api.DefaultConfig()}
	if path != "" {
		raw, err := os.ReadFile(path)
		if err != nil {
			return cfg, fmt.Errorf("read config: %w", err)
		}
		var root map[string]yaml.Node
		if err := yaml.Unmarshal(raw, &root); err != nil {
			return cfg, fmt.Errorf("config %s: %w", path, err)
		}
		for name, target := range map[string]any{"clickhouse": &cfg.ClickHouse, "api": &cfg.API} {
			node, ok := root[name]
			if !ok {
				continue
			}
			section, err := yaml.Marshal(&node)
			if err != nil {
				return cfg, fmt.Errorf("config %s: %s: %w", path, name, err)
			}
			dec := yaml.NewDecoder(bytes.NewReader(section))
			dec.KnownFields(true)
			if err := dec.Decode(target); err != nil && !errors.Is(err, io.EOF) {
				return cfg, fmt.Errorf("config %s: %s: %w", path, name, err)
			}
		}
	}
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && (strings.HasPrefix(k, "EHRWATCH_CLICKHOUSE_") || strings.HasPrefix(k, "EHRWATCH_API_")) {
			env[k] = v
		}
	}
	if len(env) > 0 {
		if err := walkEnv(reflect.ValueOf(&cfg).Elem(), "EHRWATCH", "", env); err != nil {
			return cfg, err
		}
	}
	if err := cfg.ClickHouse.Validate("clickhouse"); err != nil {
		return cfg, fmt.Errorf("invalid config: %w", err)
	}
	if err := cfg.API.Validate("api"); err != nil {
		return cfg, fmt.Errorf("invalid config: %w", err)
	}
	return cfg, nil
}

// openTriageStore connects to ClickHouse and checks the schema.
func openTriageStore(ctx context.Context, cfg apiFileConfig) (*triage.Store, func(), error) {
	opts, err := cfg.ClickHouse.Options()
	if err != nil {
		return nil, nil, err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("connect to clickhouse: %w", err)
	}
	s := triage.NewStore(conn, cfg.API.TriageOptions())
	if err := s.CheckSchema(ctx); err != nil {
		_ = conn.Close()
		return nil, nil, err
	}
	return s, func() { _ = conn.Close() }, nil
}

const serveUsage = `usage: ehrwatch serve --config FILE [--listen HOST:PORT]
       ehrwatch serve hash-token < token-file

Serves the triage and report API (api section of the config) until
interrupted. hash-token reads a bearer token on stdin and prints the
sha256:<hex> form for api.tokens[].hash.
`

func runServe(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "hash-token" {
		return runHashToken(args[1:], stdin, stdout, stderr)
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, serveUsage); fs.PrintDefaults() }
	configPath := fs.String("config", "", "configuration file (YAML)")
	listen := fs.String("listen", "", "override api.listen")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{"serve: unexpected arguments"}
	}
	cfg, err := loadAPIFileConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.API.Listen = *listen
		if err := cfg.API.Validate("api"); err != nil {
			return fmt.Errorf("--listen: %w", err)
		}
	}
	log := zerolog.New(stderr).With().Timestamp().Str("component", "api").Logger()
	st, closeStore, err := openTriageStore(ctx, cfg)
	if err != nil {
		return err
	}
	defer closeStore()
	srv, err := api.New(cfg.API, api.Deps{Store: st, Log: log})
	if err != nil {
		return err
	}
	return srv.ListenAndServe(ctx)
}

func runHashToken(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
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
