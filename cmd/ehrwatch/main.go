// Command ehrwatch watches who opens which patient record: it consumes EHR
// access events from Kafka, runs stateful detectors on them, and stores
// events, findings and alerts in ClickHouse.
//
// Subcommands:
//
//	ehrwatch run --config F        the production process: Kafka -> detectors -> ClickHouse
//	ehrwatch demo                  the whole pipeline on an in-process broker with a synthetic hospital
//	ehrwatch gen --out DIR         write a synthetic hospital and its labelled access stream (or --kafka)
//	ehrwatch migrate --config F    create or upgrade the ClickHouse schema
//	ehrwatch serve --config F      the triage and report HTTP API
//	ehrwatch report patient|user   who opened patient X / what user U opened (--id --from --to --config F)
//	ehrwatch config validate F     check a configuration file and report every bad key
//	ehrwatch bench pipeline --config F  throughput: raw kafka-go fetch vs ehrwatch without and with ClickHouse
//	ehrwatch version               print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
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

func exitCode(err error) int {
	var u usageError
	if errors.As(err, &u) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const usage = `usage: ehrwatch <command> [flags]

commands:
  run                the production process: consume, detect, store (--config FILE)
  demo               run the real pipeline on an in-process Kafka with a synthetic hospital
  gen                write a synthetic hospital and labelled access stream (--out DIR, or --kafka BROKERS)
  migrate            create or upgrade the ClickHouse schema (--config FILE)
  serve              serve the triage and report API (--config FILE)
  report patient|user  access report for a patient or a user (--id --from --to --config FILE)
  config validate F  check a configuration file; every bad value is reported with its key
  bench pipeline     measure throughput: raw kafka-go fetch, ehrwatch without sink, ehrwatch into ClickHouse
  version            print the version
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageError{"no command given"}
	}
	switch args[0] {
	case "run":
		return runRun(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "gen":
		return runGen(ctx, args[1:], stdout, stderr)
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
	case "version":
		fmt.Fprintln(stdout, "ehrwatch", version)
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageError{fmt.Sprintf("unknown command %q", args[0])}
}

func runConfig(args []string, stdout, stderr io.Writer) error {
	if len(args) != 2 || args[0] != "validate" {
		fmt.Fprint(stderr, "usage: ehrwatch config validate FILE\n")
		return usageError{"config: want `config validate FILE`"}
	}
	if _, err := LoadConfig(args[1], os.Environ()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", args[1])
	return nil
}
