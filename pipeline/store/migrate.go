package store

import (
	"context"
	"fmt"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// MigrationResult says what Migrate did.
type MigrationResult struct {
	Applied []int // versions applied by this run
	Skipped []int // versions that were already applied
}

// Migrate applies every embedded migration that the database does not yet
// record in schema_migrations, in version order, and records each one. It is
// idempotent: a second run applies nothing. A recorded migration whose text
// has since changed is an error, never silently skipped. The database itself
// must exist (it is created by the operator or CreateDatabase).
func Migrate(ctx context.Context, conn driver.Conn, p schemas.MigrationParams) (MigrationResult, error) {
	var res MigrationResult
	ms, err := schemas.Migrations()
	if err != nil {
		return res, err
	}
	if len(ms) == 0 || ms[0].Name != "schema_migrations" {
		return res, fmt.Errorf("migrations: the first migration must create schema_migrations")
	}
	first, err := ms[0].Statements(p)
	if err != nil {
		return res, err
	}
	for _, stmt := range first {
		if err := conn.Exec(ctx, stmt); err != nil {
			return res, fmt.Errorf("migration %04d_%s: %w", ms[0].Version, ms[0].Name, err)
		}
	}
	applied, err := appliedMigrations(ctx, conn)
	if err != nil {
		return res, err
	}
	for _, m := range ms {
		if sum, ok := applied[m.Version]; ok {
			if sum != m.Checksum() {
				return res, fmt.Errorf("migration %04d_%s: applied with a different checksum; migrations are immutable, add a new one", m.Version, m.Name)
			}
			res.Skipped = append(res.Skipped, m.Version)
			continue
		}
		stmts, err := m.Statements(p)
		if err != nil {
			return res, err
		}
		for i, stmt := range stmts {
			if err := conn.Exec(ctx, stmt); err != nil {
				return res, fmt.Errorf("migration %04d_%s statement %d: %w", m.Version, m.Name, i+1, err)
			}
		}
		if err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name, checksum) VALUES (?, ?, ?)",
			uint32(m.Version), m.Name, m.Checksum()); err != nil {
			return res, fmt.Errorf("record migration %04d_%s: %w", m.Version, m.Name, err)
		}
		res.Applied = append(res.Applied, m.Version)
	}
	return res, nil
}

func appliedMigrations(ctx context.Context, conn driver.Conn) (map[int]string, error) {
	rows, err := conn.Query(ctx, "SELECT version, argMax(checksum, applied_at) FROM schema_migrations GROUP BY version")
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	out := map[int]string{}
	for rows.Next() {
		var v uint32
		var sum string
		if err := rows.Scan(&v, &sum); err != nil {
			return nil, fmt.Errorf("read schema_migrations: %w", err)
		}
		out[int(v)] = sum
	}
	return out, rows.Err()
}
