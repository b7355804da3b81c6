// Package store owns ehrwatch's ClickHouse side: connection settings, the
// schema migrations (`ehrwatch migrate`), and the idempotent batch writers
// for events, findings and dead-lettered messages.
package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// Config is how ehrwatch reaches ClickHouse.
type Config struct {
	// Addrs are host:port pairs of the servers (or of a load balancer in
	// front of a cluster). Port 9000 (9440 with TLS) for native, 8123 for HTTP.
	Addrs []string `yaml:"addrs"`
	// Protocol is "native" (production default) or "http".
	Protocol     string          `yaml:"protocol"`
	Database     string          `yaml:"database"`
	Username     string          `yaml:"username"`
	Password     string          `yaml:"password"`
	PasswordFile string          `yaml:"password_file"`
	TLS          credentials.TLS `yaml:"tls"`
	DialTimeout  time.Duration   `yaml:"dial_timeout"`
	// QueryTimeout bounds one INSERT or query.
	QueryTimeout time.Duration `yaml:"query_timeout"`
	MaxOpenConns int           `yaml:"max_open_conns"`
	// RetentionDays is the TTL of events, findings and rollups, applied
	// when the tables are created by `ehrwatch migrate`.
	RetentionDays int `yaml:"retention_days"`
	// DLQRetentionDays is the TTL of dead-lettered payloads.
	DLQRetentionDays int `yaml:"dlq_retention_days"`
	// Cluster is the ClickHouse cluster (remote_servers) to create the
	// tables on: ON CLUSTER, Replicated engines, Distributed tables
	// (docs/architecture.md, "Cluster mode"). Empty: a single server.
	Cluster string `yaml:"cluster"`
	// ReplicaPath is the Keeper path of each replicated table's shard, with
	// {uuid} and the servers' {shard} macro (cluster mode only).
	ReplicaPath string `yaml:"replica_path"`
}

// ClusterSettings are the session settings of every connection in cluster
// mode: an INSERT into a Distributed table returns only once every shard's
// replica has stored its rows (synchronously, so the batch's
// insert_deduplication_token reaches the Replicated tables and a failed
// INSERT is retried by the pipeline, never queued on a server's disk), and
// Distributed queries and inserts use each shard's replicas in the order
// of remote_servers, so what was written is read back from the same
// replica while it is up.
var ClusterSettings = clickhouse.Settings{
	"insert_distributed_sync": 1,
	"load_balancing":          "in_order",
}

// DefaultConfig targets a local server over the native protocol.
func DefaultConfig() Config {
	p := schemas.DefaultMigrationParams()
	return Config{
		Addrs:            []string{"127.0.0.1:9000"},
		Protocol:         "native",
		Database:         "ehrwatch",
		Username:         "default",
		DialTimeout:      5 * time.Second,
		QueryTimeout:     60 * time.Second,
		MaxOpenConns:     8,
		RetentionDays:    p.RetentionDays,
		DLQRetentionDays: p.DLQRetentionDays,
		ReplicaPath:      schemas.DefaultReplicaPath,
	}
}

// Validate reports every bad setting, each naming its key relative to the
// clickhouse section.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, schemas.FieldErrorf(key, format, args...))
	}
	if len(c.Addrs) == 0 {
		bad("addrs", "at least one host:port is required")
	}
	for i, a := range c.Addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			bad(fmt.Sprintf("addrs[%d]", i), "want host:port, got %q", a)
			continue
		}
		if n, err := strconv.Atoi(port); err != nil || n <= 0 || n > 65535 {
			bad(fmt.Sprintf("addrs[%d]", i), "bad port %q", port)
		}
	}
	if c.Protocol != "native" && c.Protocol != "http" {
		bad("protocol", "want native or http, got %q", c.Protocol)
	}
	if c.Database == "" {
		bad("database", "required")
	}
	if c.Password != "" && c.PasswordFile != "" {
		errs = append(errs, schemas.FieldErrorf("password, password_file", "set one, not both"))
	}
	if c.DialTimeout <= 0 {
		bad("dial_timeout", "must be > 0")
	}
	if c.QueryTimeout <= 0 {
		bad("query_timeout", "must be > 0")
	}
	if c.MaxOpenConns <= 0 {
		bad("max_open_conns", "must be > 0")
	}
	if c.RetentionDays <= 0 {
		bad("retention_days", "must be > 0")
	}
	if c.DLQRetentionDays <= 0 {
		bad("dlq_retention_days", "must be > 0")
	}
	if c.Cluster != "" && !clusterName.MatchString(c.Cluster) {
		bad("cluster", "want a remote_servers cluster name (letters, digits, _ . -), got %q", c.Cluster)
	}
	if c.Cluster != "" || c.ReplicaPath != "" {
		if err := schemas.CheckReplicaPath(c.ReplicaPath); err != nil {
			bad("replica_path", "%s", strings.TrimPrefix(err.Error(), "replica_path: "))
		}
	}
	if err := schemas.UnderKey("tls", c.TLS.Validate()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Options turns the config into clickhouse-go options (reading secret files).
func (c Config) Options() (*clickhouse.Options, error) {
	password, err := credentials.Secret("clickhouse.password", c.Password, c.PasswordFile)
	if err != nil {
		return nil, err
	}
	tlsCfg, err := c.TLS.Config()
	if err != nil {
		return nil, fmt.Errorf("clickhouse.tls: %w", err)
	}
	opts := &clickhouse.Options{
		Addr:         c.Addrs,
		Protocol:     clickhouse.Native,
		Auth:         clickhouse.Auth{Database: c.Database, Username: c.Username, Password: password},
		TLS:          tlsCfg,
		DialTimeout:  c.DialTimeout,
		ReadTimeout:  c.QueryTimeout,
		MaxOpenConns: c.MaxOpenConns,
		MaxIdleConns: c.MaxOpenConns,
	}
	if c.Cluster != "" {
		opts.Settings = clickhouse.Settings{}
		for k, v := range ClusterSettings {
			opts.Settings[k] = v
		}
	}
	if c.Protocol == "http" {
		opts.Protocol = clickhouse.HTTP
	} else {
		opts.Compression = &clickhouse.Compression{Method: clickhouse.CompressionLZ4}
	}
	return opts, nil
}

// MigrationParams are the placeholders the migrations need.
func (c Config) MigrationParams() schemas.MigrationParams {
	return schemas.MigrationParams{
		RetentionDays: c.RetentionDays, DLQRetentionDays: c.DLQRetentionDays,
		Cluster: c.Cluster, Database: c.Database, ReplicaPath: c.ReplicaPath,
	}
}

// Open opens a connection pool to c with c.Options (clickhouse-go dials
// lazily: Ping or the first query connects).
func Open(c Config) (driver.Conn, error) {
	opts, err := c.Options()
	if err != nil {
		return nil, err
	}
	return clickhouse.Open(opts)
}

// CreateDatabase runs CREATE DATABASE IF NOT EXISTS for c.Database (ON
// CLUSTER in cluster mode), connecting to the server's default database to do it.
func CreateDatabase(ctx context.Context, c Config) error {
	admin := c
	admin.Database = "default"
	conn, err := Open(admin)
	if err != nil {
		return fmt.Errorf("connect to clickhouse: %w", err)
	}
	defer conn.Close()
	stmt := "CREATE DATABASE IF NOT EXISTS " + quoteIdent(c.Database)
	if c.Cluster != "" {
		stmt += " ON CLUSTER " + quoteIdent(c.Cluster)
	}
	if err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return nil
}

var clusterName = regexp.MustCompile(`^[A-Za-z0-9_.-]+$`)

// quoteIdent quotes a ClickHouse identifier with backquotes.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}
