package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ClickHouse/clickhouse-go/v2"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
)

func runMigrate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML)")
	createDB := fs.Bool("create-database", false, "CREATE DATABASE IF NOT EXISTS first (needs the right to)")
	if err := fs.Parse(args); err != nil {
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
	opts, err := cfg.ClickHouse.Options()
	if err != nil {
		return err
	}
	conn, err := clickhouse.Open(opts)
	if err != nil {
		return fmt.Errorf("connect to clickhouse: %w", err)
	}
	defer conn.Close()
	res, err := store.Migrate(ctx, conn, cfg.ClickHouse.MigrationParams())
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "migrations: %d applied %v, %d already applied\n", len(res.Applied), res.Applied, len(res.Skipped))
	return nil
}
