package store_test

import (
	"context"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestClusterDDLParsesOnTheEngine hands every statement of every
// migration, rendered for a cluster, to the real engine's parser
// (formatQuery parses without executing: the dev engine has no cluster and
// no Keeper to run ON CLUSTER or Replicated DDL), and checks that every
// engine and table setting the cluster form names exists in this
// ClickHouse version.
func TestClusterDDLParsesOnTheEngine(t *testing.T) {
	conn, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	cfg := store.DefaultConfig()
	cfg.Cluster = "ehrwatch_cluster"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}

	// The parser must be able to say no, or this test proves nothing.
	var out string
	if err := conn.QueryRow(ctx, "SELECT formatQuery(?)", "CREATE TABLE t ON CLUSTER c (a String) ENGINE = ReplicatedMergeTree('/p', 'r') ORDER BY a SETTINGS").Scan(&out); err == nil {
		t.Fatalf("formatQuery accepted a broken statement: %q", out)
	}

	engines := map[string]bool{}
	settings := map[string]bool{}
	reEngine := regexp.MustCompile(`ENGINE = (\w+)`)
	reAlter := regexp.MustCompile(`^ALTER TABLE (\w+)`)
	reSetting := regexp.MustCompile(`(?:SETTINGS|MODIFY SETTING)\s+(.+)$`)
	n := 0
	for _, m := range ms {
		stmts, err := m.Statements(cfg.MigrationParams())
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range stmts {
			var formatted string
			if err := conn.QueryRow(ctx, "SELECT formatQuery(?)", s).Scan(&formatted); err != nil {
				t.Errorf("%04d_%s statement %d does not parse: %v\n%s", m.Version, m.Name, i+1, err, s)
				continue
			}
			n++
			// Every DDL runs ON CLUSTER, except a replicated ALTER of a table
			// replicated to every node (Keeper carries it to all replicas)
			// and INSERT … SELECT (through the Distributed tables).
			want := !strings.HasPrefix(s, "INSERT")
			if g := reAlter.FindStringSubmatch(s); g != nil {
				p, ok := schemas.ClusterPlacement(g[1])
				if ok && !p.Sharded() && !strings.Contains(s, "MODIFY SETTING") {
					want = false
				}
			}
			if got := strings.Contains(formatted, "ON CLUSTER ehrwatch_cluster"); got != want {
				t.Errorf("%04d_%s statement %d: ON CLUSTER %v, want %v:\n%s", m.Version, m.Name, i+1, got, want, formatted)
			}
			for _, g := range reEngine.FindAllStringSubmatch(s, -1) {
				engines[g[1]] = true
			}
			for _, line := range strings.Split(s, "\n") {
				if g := reSetting.FindStringSubmatch(line); g != nil {
					for _, kv := range strings.Split(g[1], ",") {
						name, _, _ := strings.Cut(kv, "=")
						settings[strings.TrimSpace(name)] = true
					}
				}
			}
		}
	}
	t.Logf("%d cluster statements parsed; engines %v; settings %v", n, keys(engines), keys(settings))
	for e := range engines {
		var c uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.table_engines WHERE name = ?", e).Scan(&c); err != nil || c != 1 {
			t.Errorf("engine %s is not known to the server (%v)", e, err)
		}
	}
	for s := range settings {
		var c uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.merge_tree_settings WHERE name = ?", s).Scan(&c); err != nil || c != 1 {
			t.Errorf("table setting %s is not known to the server (%v)", s, err)
		}
	}
	for name := range store.ClusterSettings {
		var c uint64
		if err := conn.QueryRow(ctx, "SELECT count() FROM system.settings WHERE name = ?", name).Scan(&c); err != nil || c != 1 {
			t.Errorf("session setting %s is not known to the server (%v)", name, err)
		}
	}
	if !engines["Distributed"] || !engines["ReplicatedReplacingMergeTree"] {
		t.Errorf("engines %v lack Distributed or ReplicatedReplacingMergeTree", keys(engines))
	}
}

func TestClusterConfig(t *testing.T) {
	cfg := store.DefaultConfig()
	if p := cfg.MigrationParams(); p.Cluster != "" {
		t.Fatalf("default is cluster mode: %+v", p)
	}
	opts, err := cfg.Options()
	if err != nil {
		t.Fatal(err)
	}
	if len(opts.Settings) != 0 {
		t.Errorf("single-node connections carry settings %v", opts.Settings)
	}
	cfg.Cluster = "main"
	opts, err = cfg.Options()
	if err != nil {
		t.Fatal(err)
	}
	if opts.Settings["insert_distributed_sync"] != 1 {
		t.Errorf("cluster connections lack synchronous distributed inserts: %v", opts.Settings)
	}
	if p := cfg.MigrationParams(); p.Cluster != "main" || p.Database != "ehrwatch" || p.ReplicaPath != schemas.DefaultReplicaPath {
		t.Errorf("migration params %+v", p)
	}
	cfg.Cluster = "main cluster"
	cfg.ReplicaPath = "/clickhouse/tables/{shard}"
	err = cfg.Validate()
	for _, key := range []string{"cluster", "replica_path"} {
		if err == nil || !strings.Contains(err.Error(), key+":") {
			t.Errorf("%s not reported: %v", key, err)
		}
	}
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestClusterSchemaMatchesSingleNode runs the cluster form of every
// migration on the real engine with only what the engine cannot run taken
// out: ON CLUSTER is dropped, Replicated<X>(path, replica, args) becomes
// <X>(args), and the Distributed tables become Null tables with the same
// columns. What remains (the order of CREATE, ALTER, RENAME, DROP and
// INSERT … SELECT, the materialized views on the local tables, the columns
// given to each Distributed table) is executed, and the result must equal
// the single-node schema: every table's columns, engine family, sorting,
// partition and TTL keys, with each sharded table's local table and its
// Distributed table holding the same columns.
func TestClusterSchemaMatchesSingleNode(t *testing.T) {
	single, _ := testenv.ClickHouse(t)
	cluster, _ := testenv.ClickHouse(t)
	ctx := context.Background()
	if _, err := store.Migrate(ctx, single, schemas.DefaultMigrationParams()); err != nil {
		t.Fatal(err)
	}
	p := schemas.DefaultMigrationParams()
	p.Cluster, p.Database = "c1", "ehrwatch"
	ms, err := schemas.Migrations()
	if err != nil {
		t.Fatal(err)
	}
	onCluster := regexp.MustCompile(" ON CLUSTER `c1`")
	replicated := regexp.MustCompile(`ENGINE = Replicated(\w+)\('[^']*', '[^']*'(?:, )?`)
	distributed := regexp.MustCompile(`(?s)ENGINE = Distributed\(.*\)$`)
	for _, m := range ms {
		stmts, err := m.Statements(p)
		if err != nil {
			t.Fatal(err)
		}
		for i, s := range stmts {
			s = onCluster.ReplaceAllString(s, "")
			s = replicated.ReplaceAllString(s, "ENGINE = $1(")
			s = distributed.ReplaceAllString(s, "ENGINE = Null")
			if err := cluster.Exec(ctx, s); err != nil {
				t.Fatalf("%04d_%s statement %d: %v\n%s", m.Version, m.Name, i+1, err, s)
			}
		}
	}

	type table struct {
		engine, sorting, partition, ttl string
		columns                         []string
	}
	read := func(conn driver.Conn) map[string]table {
		out := map[string]table{}
		rows, err := conn.Query(ctx, `SELECT name, engine, sorting_key, partition_key,
    extract(engine_full, 'TTL (.*?)(?: SETTINGS |$)') FROM system.tables WHERE database = currentDatabase()`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name string
			var tb table
			if err := rows.Scan(&name, &tb.engine, &tb.sorting, &tb.partition, &tb.ttl); err != nil {
				t.Fatal(err)
			}
			out[name] = tb
		}
		rows.Close()
		rows, err = conn.Query(ctx, `SELECT table, name || ' ' || type || ' ' || default_kind || ' ' || default_expression
FROM system.columns WHERE database = currentDatabase() ORDER BY table, position`)
		if err != nil {
			t.Fatal(err)
		}
		for rows.Next() {
			var name, col string
			if err := rows.Scan(&name, &col); err != nil {
				t.Fatal(err)
			}
			tb := out[name]
			tb.columns = append(tb.columns, col)
			out[name] = tb
		}
		rows.Close()
		return out
	}
	one, many := read(single), read(cluster)
	if len(one) < 15 {
		t.Fatalf("single-node schema has only %d tables", len(one))
	}
	for name, want := range one {
		pl, ok := schemas.ClusterPlacement(name)
		if !ok {
			if want.engine != "MaterializedView" {
				t.Errorf("%s: no cluster placement", name)
			}
			if _, ok := many[name]; !ok {
				t.Errorf("%s: missing in cluster mode", name)
			}
			continue
		}
		local := name
		if pl.Sharded() {
			local = name + schemas.LocalSuffix
			dist, ok := many[name]
			if !ok {
				t.Errorf("%s: no Distributed table", name)
			} else if !slices.Equal(dist.columns, want.columns) {
				t.Errorf("%s: Distributed columns\n%v\nwant\n%v", name, dist.columns, want.columns)
			}
		}
		got, ok := many[local]
		if !ok {
			t.Errorf("%s: missing in cluster mode", local)
			continue
		}
		got.columns = slices.Clone(got.columns)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: cluster form\n%+v\nsingle node\n%+v", local, got, want)
		}
	}
	for name := range many {
		base := strings.TrimSuffix(name, schemas.LocalSuffix)
		if _, ok := one[base]; !ok {
			t.Errorf("cluster mode left table %s behind", name)
		}
	}
}
