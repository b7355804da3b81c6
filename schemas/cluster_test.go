package schemas

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func clusterParams() MigrationParams {
	p := DefaultMigrationParams()
	p.Cluster, p.Database = "ehrwatch", "ehrwatch"
	return p
}

// TestClusterGolden compares the cluster form of a few migrations with
// testdata/cluster/<migration>/expected.sql (go test -run TestClusterGolden
// -update rewrites them; review the diff).
func TestClusterGolden(t *testing.T) {
	dirs, err := filepath.Glob("testdata/cluster/*")
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden cases under testdata/cluster: %v", err)
	}
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	byName := map[string]Migration{}
	for _, m := range ms {
		byName[migrationFileName(m)] = m
	}
	for _, dir := range dirs {
		name := filepath.Base(dir)
		t.Run(name, func(t *testing.T) {
			m, ok := byName[name]
			if !ok {
				t.Fatalf("no migration %s.sql", name)
			}
			stmts, err := m.Statements(clusterParams())
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(stmts, ";\n\n") + ";\n"
			path := filepath.Join(dir, "expected.sql")
			if *update {
				if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("cluster form of %s differs from %s:\n%s", name, path, got)
			}
		})
	}
}

func migrationFileName(m Migration) string {
	return fmt.Sprintf("%04d_%s", m.Version, m.Name)
}

// TestClusterEveryMigration renders every migration in cluster mode and
// checks the properties the cluster relies on.
func TestClusterEveryMigration(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	single := DefaultMigrationParams()
	for _, m := range ms {
		one, err := m.Statements(single)
		if err != nil {
			t.Fatal(err)
		}
		many, err := m.Statements(clusterParams())
		if err != nil {
			t.Fatalf("%04d_%s: %v", m.Version, m.Name, err)
		}
		if len(many) < len(one) {
			t.Errorf("%04d_%s: %d cluster statements for %d single-node ones", m.Version, m.Name, len(many), len(one))
		}
		for _, s := range many {
			up := strings.ToUpper(s)
			if strings.Contains(s, "non_replicated_deduplication_window") {
				t.Errorf("%04d_%s: non_replicated setting left in %q", m.Version, m.Name, firstLine(s))
			}
			if strings.HasPrefix(up, "CREATE TABLE") {
				if !strings.Contains(s, " ON CLUSTER `ehrwatch`") {
					t.Errorf("%04d_%s: CREATE without ON CLUSTER: %q", m.Version, m.Name, firstLine(s))
				}
				if !strings.Contains(s, "ENGINE = Replicated") && !strings.Contains(s, "ENGINE = Distributed(") {
					t.Errorf("%04d_%s: neither Replicated nor Distributed: %q", m.Version, m.Name, firstLine(s))
				}
				if strings.Contains(s, "ENGINE = Distributed(") && strings.Contains(up, "INDEX ") {
					t.Errorf("%04d_%s: Distributed table with a skipping index", m.Version, m.Name)
				}
			}
			if strings.Contains(s, "ENGINE = Replicated") && strings.Contains(s, "'{replica}'") && !strings.Contains(s, "{shard}'") {
				t.Errorf("%04d_%s: sharded table without {shard} in its path", m.Version, m.Name)
			}
		}
	}
	// The checksum is the file's: switching modes is not an edit.
	if ms[1].Checksum() != (Migration{Version: ms[1].Version, Name: ms[1].Name, SQL: ms[1].SQL}).Checksum() {
		t.Fatal("checksum depends on more than the text")
	}
}

// TestClusterShardingKeyIsInSortingKey: dedup (FINAL, ReplacingMergeTree
// merges) works within a shard only, so every sharded table's sharding
// key must read only columns of its sorting key.
func TestClusterShardingKeyIsInSortingKey(t *testing.T) {
	ms, err := Migrations()
	if err != nil {
		t.Fatal(err)
	}
	orderBy := map[string]string{}
	for _, m := range ms {
		stmts, _ := m.Statements(DefaultMigrationParams())
		for _, s := range stmts {
			if r := reRename.FindStringSubmatch(s); r != nil {
				moved := map[string]string{}
				for _, item := range strings.Split(r[1], ",") {
					if pair := reRenamePair.FindStringSubmatch(item); pair != nil {
						moved[pair[2]] = orderBy[pair[1]]
					}
				}
				for to, key := range moved {
					orderBy[to] = key
				}
				continue
			}
			g := reCreateTable.FindStringSubmatch(s)
			if g == nil {
				continue
			}
			if i := strings.Index(s, "\nORDER BY "); i >= 0 {
				orderBy[g[2]] = firstLine(s[i+len("\nORDER BY "):])
			}
			if i := strings.Index(s, "MODIFY ORDER BY "); i >= 0 {
				orderBy[g[2]] = firstLine(s[i+len("MODIFY ORDER BY "):])
			}
		}
	}
	for table, p := range clusterPlacements {
		if !p.Sharded() {
			continue
		}
		key, ok := orderBy[table]
		if !ok {
			t.Errorf("%s: sharded but no migration creates it", table)
			continue
		}
		args := strings.TrimSuffix(strings.TrimPrefix(p.ShardingKey, "cityHash64("), ")")
		for _, col := range strings.Split(args, ",") {
			col = strings.TrimSpace(col)
			if !strings.Contains(" "+strings.NewReplacer("(", " ", ")", " ", ",", " ").Replace(key)+" ", " "+col+" ") {
				t.Errorf("%s: sharding column %s is not in ORDER BY %s", table, col, key)
			}
		}
	}
}

func TestClusterRefusesWhatItCannotPlace(t *testing.T) {
	cases := map[string]string{
		"unknown table":     "CREATE TABLE IF NOT EXISTS mystery (a String) ENGINE = MergeTree ORDER BY a;",
		"mixed alter":       "ALTER TABLE alerts ADD COLUMN x String, MODIFY SETTING index_granularity = 8192;",
		"no cluster form":   "OPTIMIZE TABLE alerts FINAL;",
		"cross-placement":   "INSERT INTO alerts SELECT * FROM findings;",
		"engine not a tree": "CREATE TABLE IF NOT EXISTS alerts (a String) ENGINE = Memory;",
		"alter after rename": "RENAME TABLE findings TO findings_old;\n" +
			"ALTER TABLE findings_old ADD COLUMN x String;",
	}
	for name, sql := range cases {
		m := Migration{Version: 99, Name: "x", SQL: sql}
		if _, err := m.Statements(DefaultMigrationParams()); err != nil {
			t.Errorf("%s: single-node rendering failed: %v", name, err)
		}
		if _, err := m.Statements(clusterParams()); err == nil {
			t.Errorf("%s: cluster mode rendered it", name)
		}
	}
}

func TestClusterReplicaPath(t *testing.T) {
	for _, bad := range []string{"", "clickhouse/{uuid}/{shard}", "/clickhouse/tables/{shard}", "/clickhouse/{uuid}", "/c/{uuid}/{shard}'"} {
		if CheckReplicaPath(bad) == nil {
			t.Errorf("replica path %q accepted", bad)
		}
	}
	if err := CheckReplicaPath(DefaultReplicaPath); err != nil {
		t.Fatal(err)
	}
	p := clusterParams()
	p.ReplicaPath = "/ehr/{uuid}/{shard}"
	m := Migration{Version: 2, Name: "t", SQL: "CREATE TABLE IF NOT EXISTS alerts (a String, version UInt64) ENGINE = ReplacingMergeTree(version) ORDER BY a;"}
	got, err := m.Statements(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || !strings.Contains(got[0], "ReplicatedReplacingMergeTree('/ehr/{uuid}/all', '{shard}-{replica}', version)") {
		t.Fatalf("got %q", got)
	}
	p.Database = ""
	if _, err := m.Statements(p); err == nil {
		t.Fatal("cluster mode without a database accepted")
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
