// Command ehrwatch watches who opens which patient record: it consumes EHR
// access events from Kafka, runs stateful detectors on them, and stores
// events, findings and alerts in ClickHouse.
//
// Subcommands:
//
//	ehrwatch run --config F        the production process: Kafka -> detectors -> ClickHouse
//	ehrwatch demo                  the whole pipeline on an in-process broker with a synthetic hospital
//	ehrwatch gen --out DIR         write a synthetic hospital and its labelled access stream (or --kafka)
//	ehrwatch replay --events F --reference DIR  run the detectors over an exported log, without Kafka
//	ehrwatch vocabulary suggest --events F --reference DIR  propose a mapping of unmapped role and department names
//	ehrwatch migrate --config F    create or upgrade the ClickHouse schema
//	ehrwatch check clickhouse --config F  conformance check of your ClickHouse (scratch database)
//	ehrwatch serve --config F      the triage and report HTTP API
//	ehrwatch report patient|user   who opened patient X / what user U opened (--id --from --to --config F)
//	ehrwatch config validate F     check a configuration file and report every bad key
//	ehrwatch config defaults       print the default configuration (YAML)
//	ehrwatch bench pipeline --config F  throughput: raw kafka-go fetch vs ehrwatch without and with ClickHouse
//	ehrwatch bench latency --config F   seconds from access to alert (p50/p95/p99/max)
//	ehrwatch bench detectors|memory     detector throughput and state per user (docs/benchmarks.md)
//	ehrwatch serve hash-token      hash a bearer token for api.tokens
//	ehrwatch completion bash|zsh   shell completion script
//	ehrwatch version, --version    print the version
//
// Every command and subcommand prints its usage and exits 0 with -h or
// --help; a mistake on the command line exits 2, any other failure 1.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ehrwatch:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks a mistake on the command line (exit status 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// exitCode is 0 for a help request (-h, --help: the usage was printed, as
// asked), 2 for a mistake on the command line, 1 for anything else.
func exitCode(err error) int {
	var u usageError
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.As(err, &u):
		return 2
	}
	return 1
}

// isHelp reports whether arg asks for help.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

// commandUsage makes fs print text and then its flags (under "flags:") as
// its usage.
func commandUsage(fs *flag.FlagSet, text string) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), text)
		if !strings.HasSuffix(strings.TrimSpace(text), "flags:") {
			fmt.Fprintln(fs.Output(), "\nflags:")
		}
		fs.PrintDefaults()
	}
}

const usage = `usage: ehrwatch <command> [flags]

commands:
  run                the production process: consume, detect, store (--config FILE)
  demo               run the real pipeline on an in-process Kafka with a synthetic hospital
  gen                write a synthetic hospital and labelled access stream (--out DIR, or --kafka BROKERS)
  replay             run the detectors over an exported access log, without Kafka (--events FILE --reference DIR)
  vocabulary suggest propose categories for unmapped role and department names (--events FILE --reference DIR)
  convert            convert a CSV/TSV or FHIR export to canonical NDJSON (--in FILE --mapping FILE)
  migrate            create or upgrade the ClickHouse schema (--config FILE)
  check clickhouse   conformance check of your ClickHouse in a scratch database (--config FILE [--protocol both])
  serve              serve the triage and report API (--config FILE)
  report patient|user  access report for a patient or a user (--id --from --to --config FILE)
  config validate F  check a configuration file; every bad value is reported with its key
  config defaults    print the whole default configuration as YAML
  serve hash-token   hash a bearer token (read on stdin) for api.tokens[].hash
  bench pipeline     measure throughput: raw kafka-go fetch, ehrwatch without sink, ehrwatch into ClickHouse
  bench latency      measure seconds from access to stored row, stored finding, delivered alert
  bench detectors    detector throughput on one and two cores
  bench memory       detector state per active user
  completion bash|zsh  print a shell completion script
  version            print the version (also --version)

Run ` + "`ehrwatch <command> --help`" + ` (or ` + "`ehrwatch help <command>`" + `) for a command's flags.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	if args[0] == "help" && len(args) > 1 {
		// `ehrwatch help report patient` is `ehrwatch report patient --help`.
		return run(ctx, append(slices.Clone(args[1:]), "--help"), stdout, stderr)
	}
	switch args[0] {
	case "run":
		return runRun(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "gen":
		return runGen(ctx, args[1:], stdout, stderr)
	case "replay":
		return runReplay(ctx, args[1:], stdout, stderr)
	case "vocabulary":
		return runVocabulary(ctx, args[1:], stdout, stderr)
	case "convert":
		return runConvert(ctx, args[1:], stdout, stderr)
	case "check":
		return runCheck(ctx, args[1:], stdout, stderr)
	case "migrate":
		return runMigrate(ctx, args[1:], stdout, stderr)
	case "serve":
		return runServe(ctx, args[1:], os.Stdin, stdout, stderr)
	case "report":
		return runReport(ctx, args[1:], stdout, stderr)
	case "config":
		return runConfig(args[1:], stdout, stderr)
	case "bench":
		return runBench(ctx, args[1:], stdout, stderr)
	case "completion":
		return runCompletion(args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, currentBuild())
		return nil
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	var names []string
	for _, c := range commands {
		names = append(names, c.name)
	}
	if s := closest(args[0], names, 2); s != "" {
		return usageError{fmt.Sprintf("unknown command %q; did you mean %s?", args[0], s)}
	}
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

const configUsage = `usage: ehrwatch config validate [--for run,serve,...] FILE
                                       check FILE as the commands would at start-up; every
                                       bad value is reported with its key
       ehrwatch config defaults        print the whole default configuration as YAML
`

func runConfig(args []string, stdout, stderr io.Writer) error {
	if slices.ContainsFunc(args, isHelp) {
		fmt.Fprint(stdout, configUsage)
		return flag.ErrHelp
	}
	switch {
	case len(args) >= 2 && args[0] == "validate":
		fs := flag.NewFlagSet("config validate", flag.ContinueOnError)
		fs.SetOutput(stderr)
		commandUsage(fs, configUsage)
		forCmds := fs.String("for", "run", "comma-separated commands whose start-up checks to apply: "+strings.Join(configCommands, ", "))
		if err := parseFlags(fs, args[1:], stdout); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return usageError{"config validate: want exactly one FILE"}
		}
		var errs []error
		for _, c := range strings.Split(*forCmds, ",") {
			if c = strings.TrimSpace(c); !slices.Contains(configCommands, c) {
				return usageError{fmt.Sprintf("config validate: --for: unknown command %q (want %s)", c, strings.Join(configCommands, ", "))}
			}
			if _, err := LoadConfigFor(c, fs.Arg(0), os.Environ()); err != nil {
				errs = append(errs, fmt.Errorf("for %s: %w", c, err))
			}
		}
		if err := errors.Join(errs...); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s: ok for %s\n", fs.Arg(0), *forCmds)
		return nil
	case len(args) == 1 && args[0] == "defaults":
		return writeDefaultConfig(stdout)
	}
	fmt.Fprint(stderr, configUsage)
	return usageError{"config: want `config validate FILE` or `config defaults`"}
}

// writeDefaultConfig prints DefaultConfig as YAML, with a header saying
// what is required on top of it.
func writeDefaultConfig(w io.Writer) error {
	out, err := marshalConfig(DefaultConfig())
	if err != nil {
		return fmt.Errorf("config defaults: %w", err)
	}
	if _, err := fmt.Fprint(w, defaultConfigHeader); err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}

// marshalConfig renders cfg as YAML with two-space indentation.
func marshalConfig(cfg Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&cfg); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

const defaultConfigHeader = `# ehrwatch configuration: every key with its default value
# (` + "`ehrwatch config defaults`" + `). Keep only what you change. EHRWATCH_<SECTION>_<KEY>
# environment variables override the file (not for the detection section).
#
# ` + "`ehrwatch run`" + ` also needs reference.hash_key_file: a file holding a secret
# of at least 16 bytes, e.g. ` + "`head -c 32 /dev/urandom | base64 > hash.key`" + `.
# Secrets (passwords, keys) belong in *_file settings, never in this file.
# api.listen empty: ` + "`run`" + ` serves no API; ` + "`serve`" + ` listens on 127.0.0.1:8080.
`
