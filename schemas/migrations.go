package schemas

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// Migration is one numbered ClickHouse schema change. Files are named
// NNNN_name.sql and applied in version order, each exactly once.
type Migration struct {
	Version int
	Name    string
	// SQL is the file's text with its {{placeholders}} still in it; the
	// checksum is taken over it, so changing retention is not an edit.
	SQL string
}

// MigrationParams fill the placeholders of the migrations.
type MigrationParams struct {
	// RetentionDays is the TTL of access events, findings and activity
	// rollups. HIPAA asks for six years of documentation.
	RetentionDays int
	// DLQRetentionDays is the TTL of dead-lettered payloads.
	DLQRetentionDays int
	// Cluster, when set, renders every statement for that ClickHouse
	// cluster (remote_servers): ON CLUSTER, Replicated engines and
	// Distributed tables (see cluster.go). Empty: a single server.
	Cluster string
	// Database is the database the Distributed tables point into
	// (cluster mode only).
	Database string
	// ReplicaPath is the Keeper path of a replicated table's shard
	// (cluster mode only; DefaultReplicaPath when empty).
	ReplicaPath string
}

// DefaultMigrationParams keep six years of events and 30 days of DLQ rows.
func DefaultMigrationParams() MigrationParams {
	return MigrationParams{RetentionDays: 6*365 + 2, DLQRetentionDays: 30}
}

// Migrations returns every embedded migration, ordered by version.
func Migrations() ([]Migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	out := make([]Migration, 0, len(names))
	seen := map[int]string{}
	for _, name := range names {
		base := strings.TrimSuffix(path.Base(name), ".sql")
		num, label, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("migration %s: name must be NNNN_name.sql", name)
		}
		if prev, dup := seen[v]; dup {
			return nil, fmt.Errorf("migrations %s and %s share version %d", prev, name, v)
		}
		seen[v] = name
		body, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", name, err)
		}
		out = append(out, Migration{Version: v, Name: label, SQL: string(body)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, nil
}

// Checksum identifies the migration's text, so an applied migration that
// was edited afterwards is detected instead of silently skipped.
func (m Migration) Checksum() string {
	sum := sha256.Sum256([]byte(m.SQL))
	return hex.EncodeToString(sum[:])
}

// Statements returns the migration's SQL statements with the placeholders
// filled in. Statements end with a semicolon at the end of a line; lines
// starting with "--" are comments.
func (m Migration) Statements(p MigrationParams) ([]string, error) {
	if p.RetentionDays <= 0 {
		return nil, fmt.Errorf("retention_days: must be > 0, got %d", p.RetentionDays)
	}
	if p.DLQRetentionDays <= 0 {
		return nil, fmt.Errorf("dlq_retention_days: must be > 0, got %d", p.DLQRetentionDays)
	}
	text := strings.NewReplacer(
		"{{retention_days}}", strconv.Itoa(p.RetentionDays),
		"{{dlq_retention_days}}", strconv.Itoa(p.DLQRetentionDays),
	).Replace(m.SQL)
	if i := strings.Index(text, "{{"); i >= 0 {
		end := min(i+40, len(text))
		return nil, fmt.Errorf("migration %04d_%s: unknown placeholder near %q", m.Version, m.Name, text[i:end])
	}
	if p.Cluster != "" {
		if p.Database == "" {
			return nil, fmt.Errorf("cluster mode needs the database name")
		}
		if p.ReplicaPath == "" {
			p.ReplicaPath = DefaultReplicaPath
		}
		if err := CheckReplicaPath(p.ReplicaPath); err != nil {
			return nil, err
		}
	}
	var stmts []string
	var cur strings.Builder
	for _, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if trimmed == "" || strings.HasPrefix(trimmed, "--") {
			continue
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
		if strings.HasSuffix(trimmed, ";") {
			stmts = append(stmts, strings.TrimSuffix(strings.TrimSpace(cur.String()), ";"))
			cur.Reset()
		}
	}
	if rest := strings.TrimSpace(cur.String()); rest != "" {
		return nil, fmt.Errorf("migration %04d_%s: last statement lacks a terminating semicolon", m.Version, m.Name)
	}
	if p.Cluster != "" {
		return clusterStatements(m, stmts, p)
	}
	return stmts, nil
}
