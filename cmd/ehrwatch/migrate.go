package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
)

const migrateUsage = `usage: ehrwatch migrate --config FILE [--create-database]

Creates or upgrades the ClickHouse schema from the numbered migrations built
into the binary (schemas/migrations), each applied once and recorded with its
checksum. Safe to run again. The first time, --create-database creates the
configured database (the ClickHouse user needs the right to).
`

// unknownDatabase reports whether err is ClickHouse's UNKNOWN_DATABASE (81).
func unknownDatabase(err error) bool {
	var ex *clickhouse.Exception
	if errors.As(err, &ex) {
		return ex.Code == 81
	}
	return strings.Contains(err.Error(), "UNKNOWN_DATABASE")
}

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, migrateUsage)
	configPath := fs.String("config", "", "configuration file (YAML)")
	createDB := fs.Bool("create-database", false, "CREATE DATABASE IF NOT EXISTS first (needs the right to)")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	if *createDB {
		if err := store.CreateDatabase(ctx, cfg.ClickHouse); err != nil {
			return err
		}
	}
	conn, err := store.Open(cfg.ClickHouse)
	if err != nil {
		return fmt.Errorf("connect to clickhouse: %w", err)
	}
	defer conn.Close()
	res, err := store.Migrate(ctx, conn, cfg.ClickHouse.MigrationParams())
	if err != nil {
		if !*createDB && unknownDatabase(err) {
			return fmt.Errorf("%w\nhint: database %q does not exist; run `ehrwatch migrate --create-database --config FILE` once (the ClickHouse user needs the right to create it), or create it yourself", err, cfg.ClickHouse.Database)
		}
		return err
	}
	fmt.Fprintf(stdout, "migrations: %d applied %v, %d already applied\n", len(res.Applied), res.Applied, len(res.Skipped))
	return nil
}
