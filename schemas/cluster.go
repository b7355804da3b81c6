package schemas

import (
	"fmt"
	"regexp"
	"strings"
)

// Cluster mode: the same migrations, rendered for a ClickHouse cluster.
//
// The migration files are written for one server. With
// MigrationParams.Cluster set, Statements rewrites each statement into
// its cluster form (ON CLUSTER, Replicated engines, Distributed tables),
// so there is one source of DDL and the checksums stay those of the
// files. Every table has a placement (clusterPlacements):
//
//   - sharded: the rows live in <name>_local, a Replicated*MergeTree on
//     every shard (replication path ReplicaPath, which holds {shard}), and
//     <name> is a Distributed table over it with the table's sharding key.
//     The code reads and writes <name>, so nothing else changes. The
//     sharding key is a function of the columns that identify a row (the
//     ReplacingMergeTree's sorting key), so every version of a row lands
//     on the same shard and FINAL collapses it there; FINAL and
//     deduplication never work across shards.
//   - everywhere: one replication group spanning every node of the
//     cluster ({shard} in ReplicaPath becomes "all", the replica name is
//     "{shard}-{replica}"), under the table's own name. Small tables that
//     queries join or filter with IN (SELECT …) against the sharded ones
//     (alerts, triage state, reference data, the allowlist, …): a
//     Distributed query's shards find them locally, so no query needs
//     GLOBAL IN/JOIN (distributed_product_mode stays 'deny').
//
// A table missing from clusterPlacements cannot be rendered: a new
// migration must choose a placement for its table.

// Placement says where a table's rows live in cluster mode.
type Placement struct {
	// ShardingKey is the Distributed table's sharding expression; empty
	// means the table is replicated to every node and not sharded.
	ShardingKey string
}

// Sharded reports whether the table is split over shards.
func (p Placement) Sharded() bool { return p.ShardingKey != "" }

// LocalSuffix is appended to a sharded table's name for its per-shard table.
const LocalSuffix = "_local"

// DefaultReplicaPath is the Keeper path of a replicated table's shard.
// {uuid} (the table's UUID, the same on every replica of an ON CLUSTER
// CREATE, and kept by RENAME) makes every table's path unique; {shard} is
// the server's macro.
const DefaultReplicaPath = "/clickhouse/tables/{uuid}/{shard}"

var (
	byUser             = Placement{ShardingKey: "cityHash64(user_id)"}
	snapshotsPlacement = Placement{ShardingKey: "cityHash64(consumer_group, kafka_topic, kafka_partition)"}
	everywhere         = Placement{}
)

// clusterPlacements is the placement of every table the migrations create.
var clusterPlacements = map[string]Placement{
	// Large, append-mostly, keyed by user: a user's history stays on one
	// shard, so per-user queries (and the user_hourly_activity view, fed
	// from access_events_local) touch one shard's rows, and every version
	// of an event or finding (their sorting keys start with or contain
	// user_id) is on the same shard.
	"access_events":        byUser,
	"findings":             byUser,
	"findings_next":        byUser, // migration 0070's rebuild
	"findings_old":         byUser,
	"user_hourly_activity": byUser,
	// Dead letters and snapshots are keyed by where they came from; their
	// payloads can be large, so they are sharded, not copied to every node.
	"dlq":                     {ShardingKey: "cityHash64(kafka_topic, kafka_partition)"},
	"detector_snapshots":      snapshotsPlacement,
	"detector_snapshots_next": snapshotsPlacement, // migration 0090's rebuild
	"detector_snapshots_old":  snapshotsPlacement,

	"schema_migrations":       everywhere,
	"alerts":                  everywhere,
	"alert_state_history":     everywhere,
	"alert_state":             everywhere,
	"users":                   everywhere,
	"patients":                everywhere,
	"encounters":              everywhere,
	"allowlist":               everywhere,
	"vocabulary":              everywhere,
	"alert_delivery_failures": everywhere,
	"api_audit":               everywhere,
	"alert_engine_state":      everywhere,
	"alert_findings":          everywhere,
	"alert_lifecycle":         everywhere,
	// Cases and the allowlist editor's history (0080, 0081): small,
	// written by the API, read with the alerts; the deduplication token of
	// a case change needs one replication group for every writer.
	"case_history":      everywhere,
	"cases":             everywhere,
	"case_alerts":       everywhere,
	"allowlist_history": everywhere,
}

// ClusterPlacement returns the placement of table in cluster mode.
func ClusterPlacement(table string) (Placement, bool) {
	p, ok := clusterPlacements[table]
	return p, ok
}

// clusterRenderer rewrites one migration's statements.
type clusterRenderer struct {
	name     string // the cluster's name
	cluster  string // its name as a quoted identifier
	database string // the database as a string literal
	path     string // replication path of a shard
	// localOnly are names a RENAME in this migration gave to a local
	// table without a Distributed table; only a DROP may follow.
	localOnly map[string]bool
}

var (
	reCreateTable = regexp.MustCompile(`(?is)^CREATE TABLE (IF NOT EXISTS )?(\w+)\s*\(`)
	reEngine      = regexp.MustCompile(`(?is)^\s*ENGINE\s*=\s*(\w+)(?:\s*\(([^()]*)\))?`)
	reCreateMV    = regexp.MustCompile(`(?is)^CREATE MATERIALIZED VIEW (IF NOT EXISTS )?(\w+) TO (\w+) AS\s+(.*)$`)
	reAlter       = regexp.MustCompile(`(?is)^ALTER TABLE (\w+)\s+(.*)$`)
	reDrop        = regexp.MustCompile(`(?is)^DROP TABLE (IF EXISTS )?(\w+)$`)
	reRename      = regexp.MustCompile(`(?is)^RENAME TABLE (.*)$`)
	reRenamePair  = regexp.MustCompile(`(?is)^\s*(\w+)\s+TO\s+(\w+)\s*$`)
	reInsert      = regexp.MustCompile(`(?is)^INSERT INTO (\w+) SELECT \* FROM (\w+)$`)
	reColumnCmd   = regexp.MustCompile(`(?is)^(ADD|DROP|MODIFY|RENAME|COMMENT) COLUMN\b`)
	reSettingCmd  = regexp.MustCompile(`(?is)^MODIFY SETTING\b`)
	reNonRepl     = regexp.MustCompile(`\bnon_replicated_deduplication_window\b`)
)

// clusterStatements renders single-node statements for the cluster.
func clusterStatements(m Migration, stmts []string, p MigrationParams) ([]string, error) {
	r := clusterRenderer{
		name:      p.Cluster,
		cluster:   quoteIdent(p.Cluster),
		database:  quoteString(p.Database),
		path:      p.ReplicaPath,
		localOnly: map[string]bool{},
	}
	var out []string
	for i, s := range stmts {
		got, err := r.statement(s)
		if err != nil {
			return nil, fmt.Errorf("migration %04d_%s statement %d: cluster mode: %w", m.Version, m.Name, i+1, err)
		}
		out = append(out, got...)
	}
	return out, nil
}

// samePlacement returns the placement of tables a and b, or an error when
// they differ; statement ("RENAME %s TO %s") names the two in it.
func (r *clusterRenderer) samePlacement(a, b, statement string) (Placement, error) {
	pa, err := r.placement(a)
	if err != nil {
		return Placement{}, err
	}
	pb, err := r.placement(b)
	if err != nil {
		return Placement{}, err
	}
	if pa != pb {
		return Placement{}, fmt.Errorf(statement+": different placements", a, b)
	}
	return pa, nil
}

func (r *clusterRenderer) placement(table string) (Placement, error) {
	p, ok := clusterPlacements[table]
	if !ok {
		return p, fmt.Errorf("table %s has no cluster placement (add it to schemas.clusterPlacements)", table)
	}
	return p, nil
}

func (r *clusterRenderer) onCluster() string { return " ON CLUSTER " + r.cluster }

func (r *clusterRenderer) statement(s string) ([]string, error) {
	s = strings.TrimSpace(s)
	switch {
	case reCreateTable.MatchString(s):
		return r.createTable(s)
	case reCreateMV.MatchString(s):
		return r.createView(s)
	case reAlter.MatchString(s):
		return r.alter(s)
	case reDrop.MatchString(s):
		return r.drop(s)
	case reRename.MatchString(s):
		return r.rename(s)
	case reInsert.MatchString(s):
		// INSERT … SELECT between two tables of the same placement: through
		// the Distributed tables it reads every shard and writes each row
		// to its shard again.
		g := reInsert.FindStringSubmatch(s)
		if _, err := r.samePlacement(g[1], g[2], "INSERT INTO %s SELECT FROM %s"); err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
	head := s
	if i := strings.IndexByte(head, '\n'); i >= 0 {
		head = head[:i]
	}
	return nil, fmt.Errorf("no cluster form for statement %q", head)
}

// createTable renders CREATE TABLE name (columns) ENGINE = X(args) rest.
func (r *clusterRenderer) createTable(s string) ([]string, error) {
	g := reCreateTable.FindStringSubmatchIndex(s)
	ifNotExists := "" // or "IF NOT EXISTS "
	if g[2] >= 0 {
		ifNotExists = s[g[2]:g[3]]
	}
	name := s[g[4]:g[5]]
	open := g[1] - 1
	closeAt, err := matchParen(s, open)
	if err != nil {
		return nil, fmt.Errorf("CREATE TABLE %s: %w", name, err)
	}
	columns := s[open : closeAt+1]
	tail := s[closeAt+1:]
	e := reEngine.FindStringSubmatchIndex(tail)
	if e == nil {
		return nil, fmt.Errorf("CREATE TABLE %s: no ENGINE = clause after the columns", name)
	}
	engine := tail[e[2]:e[3]]
	var args string
	if e[4] >= 0 {
		args = strings.TrimSpace(tail[e[4]:e[5]])
	}
	rest := reNonRepl.ReplaceAllString(tail[e[1]:], "replicated_deduplication_window")
	if !strings.HasSuffix(engine, "MergeTree") || strings.HasPrefix(engine, "Replicated") {
		return nil, fmt.Errorf("CREATE TABLE %s: engine %s has no replicated form", name, engine)
	}
	pl, err := r.placement(name)
	if err != nil {
		return nil, err
	}
	path, replica := r.path, "{replica}"
	local := name
	if pl.Sharded() {
		local = name + LocalSuffix
	} else {
		path, replica = strings.ReplaceAll(r.path, "{shard}", "all"), "{shard}-{replica}"
	}
	engineArgs := quoteString(path) + ", " + quoteString(replica)
	if args != "" {
		engineArgs += ", " + args
	}
	create := "CREATE TABLE " + ifNotExists + local + r.onCluster() + "\n" + columns +
		"\nENGINE = Replicated" + engine + "(" + engineArgs + ")" + rest
	if !pl.Sharded() {
		return []string{create}, nil
	}
	dist := "CREATE TABLE " + ifNotExists + name + r.onCluster() + "\n" + distributedColumns(columns) +
		"\nENGINE = Distributed(" + quoteString(r.name) + ", " + r.database + ", " + quoteString(local) + ", " + pl.ShardingKey + ")"
	return []string{create, dist}, nil
}

// distributedColumns keeps the column definitions of a CREATE TABLE's
// column list and drops what a Distributed table cannot have (skipping
// indexes, projections, constraints).
func distributedColumns(columns string) string {
	inner := strings.TrimSuffix(strings.TrimPrefix(columns, "("), ")")
	var keep []string
	for _, item := range splitTopLevel(inner) {
		word := strings.ToUpper(firstWord(stripComments(item)))
		if word == "INDEX" || word == "PROJECTION" || word == "CONSTRAINT" {
			continue
		}
		keep = append(keep, strings.TrimRight(item, " \t\n"))
	}
	return "(" + strings.Join(keep, ",") + "\n)"
}

// createView renders CREATE MATERIALIZED VIEW name TO target AS SELECT … FROM source.
func (r *clusterRenderer) createView(s string) ([]string, error) {
	g := reCreateMV.FindStringSubmatch(s)
	ifNotExists, name, target, query := g[1], g[2], g[3], g[4]
	src := regexp.MustCompile(`(?i)\bFROM\s+(\w+)\b`).FindAllStringSubmatch(query, -1)
	if len(src) != 1 {
		return nil, fmt.Errorf("materialized view %s: want exactly one FROM table, got %d", name, len(src))
	}
	source := src[0][1]
	pt, err := r.placement(target)
	if err != nil {
		return nil, err
	}
	ps, err := r.placement(source)
	if err != nil {
		return nil, err
	}
	if pt.Sharded() != ps.Sharded() {
		return nil, fmt.Errorf("materialized view %s: %s and %s must both be sharded or both everywhere", name, source, target)
	}
	if pt.Sharded() {
		// A view fires on the inserts into the table it reads, and the
		// Distributed table's rows arrive in the shards' local tables.
		target += LocalSuffix
		query = regexp.MustCompile(`(?i)\bFROM\s+`+regexp.QuoteMeta(source)+`\b`).ReplaceAllString(query, "FROM "+source+LocalSuffix)
	}
	return []string{"CREATE MATERIALIZED VIEW " + ifNotExists + name + r.onCluster() + " TO " + target + " AS\n" + query}, nil
}

// alter renders ALTER TABLE name commands.
func (r *clusterRenderer) alter(s string) ([]string, error) {
	g := reAlter.FindStringSubmatch(s)
	name, body := g[1], reNonRepl.ReplaceAllString(g[2], "replicated_deduplication_window")
	if r.localOnly[name] {
		return nil, fmt.Errorf("ALTER TABLE %s after a RENAME to it: not supported in cluster mode", name)
	}
	pl, err := r.placement(name)
	if err != nil {
		return nil, err
	}
	cmds := splitTopLevel(body)
	var columnCmds []string
	settings := 0
	for _, c := range cmds {
		c = strings.TrimSpace(stripComments(c))
		if reColumnCmd.MatchString(c) {
			columnCmds = append(columnCmds, c)
		}
		if reSettingCmd.MatchString(c) {
			settings++
		}
	}
	if pl.Sharded() {
		// Every shard's replicas run it (one replica per shard applies a
		// replicated ALTER, the others follow through Keeper); the
		// Distributed table learns the new columns too.
		out := []string{"ALTER TABLE " + name + LocalSuffix + r.onCluster() + "\n    " + strings.TrimSpace(body)}
		if len(columnCmds) > 0 {
			out = append(out, "ALTER TABLE "+name+r.onCluster()+"\n    "+strings.Join(columnCmds, ",\n    "))
		}
		return out, nil
	}
	switch settings {
	case 0:
		// One replication group spans the cluster: ALTERs of columns,
		// sorting key or TTL are replicated through Keeper to every node,
		// so they run on one node (ON CLUSTER would run them once per shard
		// against the same group).
		return []string{"ALTER TABLE " + name + " " + strings.TrimSpace(body)}, nil
	case len(cmds):
		// Settings are each replica's own: every node must run it.
		return []string{"ALTER TABLE " + name + r.onCluster() + " " + strings.TrimSpace(body)}, nil
	}
	return nil, fmt.Errorf("ALTER TABLE %s mixes MODIFY SETTING with replicated changes; split it", name)
}

// drop renders DROP TABLE [IF EXISTS] name.
func (r *clusterRenderer) drop(s string) ([]string, error) {
	g := reDrop.FindStringSubmatch(s)
	ifExists, name := g[1], g[2]
	pl, err := r.placement(name)
	if err != nil {
		return nil, err
	}
	if !pl.Sharded() {
		return []string{"DROP TABLE " + ifExists + name + r.onCluster() + " SYNC"}, nil
	}
	delete(r.localOnly, name)
	// SYNC: the replicas leave Keeper before the statement returns.
	return []string{
		"DROP TABLE IF EXISTS " + name + r.onCluster() + " SYNC",
		"DROP TABLE " + ifExists + name + LocalSuffix + r.onCluster() + " SYNC",
	}, nil
}

// rename renders RENAME TABLE a TO b[, c TO d]. Sharded tables rename
// their local tables; the Distributed tables name their local table, so
// a Distributed table whose name is a rename target keeps serving it
// (findings in 0070), a source that is no target loses its Distributed
// table, and a target that was no source gets none: only DROP may follow.
func (r *clusterRenderer) rename(s string) ([]string, error) {
	g := reRename.FindStringSubmatch(s)
	type pair struct{ from, to string }
	var pairs []pair
	sharded := -1
	for _, item := range strings.Split(g[1], ",") {
		m := reRenamePair.FindStringSubmatch(item)
		if m == nil {
			return nil, fmt.Errorf("RENAME: cannot read %q", strings.TrimSpace(item))
		}
		pf, err := r.samePlacement(m[1], m[2], "RENAME %s TO %s")
		if err != nil {
			return nil, err
		}
		s := 0
		if pf.Sharded() {
			s = 1
		}
		if sharded >= 0 && s != sharded {
			return nil, fmt.Errorf("RENAME mixes sharded and everywhere tables; split it")
		}
		sharded = s
		pairs = append(pairs, pair{m[1], m[2]})
	}
	var parts []string
	for _, p := range pairs {
		if sharded == 1 {
			parts = append(parts, p.from+LocalSuffix+" TO "+p.to+LocalSuffix)
		} else {
			parts = append(parts, p.from+" TO "+p.to)
		}
	}
	out := []string{"RENAME TABLE " + strings.Join(parts, ", ") + r.onCluster()}
	if sharded == 0 {
		return out, nil
	}
	targets, sources := map[string]bool{}, map[string]bool{}
	for _, p := range pairs {
		targets[p.to], sources[p.from] = true, true
	}
	for _, p := range pairs {
		if !targets[p.from] {
			out = append(out, "DROP TABLE IF EXISTS "+p.from+r.onCluster()+" SYNC")
		}
		if !sources[p.to] {
			r.localOnly[p.to] = true
		}
	}
	return out, nil
}

// matchParen returns the index of the parenthesis closing the one at
// open, skipping string literals, quoted identifiers and -- comments.
func matchParen(s string, open int) (int, error) {
	depth := 0
	for i := open; i < len(s); i++ {
		switch c := s[i]; c {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return i, nil
			}
		case '\'', '`', '"':
			j := skipQuoted(s, i)
			if j < 0 {
				return -1, fmt.Errorf("unterminated %c", c)
			}
			i = j
		case '-':
			i = skipLineComment(s, i)
		}
	}
	return -1, fmt.Errorf("unbalanced parentheses")
}

// skipQuoted returns the index of the quote closing the one at i.
func skipQuoted(s string, i int) int {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case q:
			return j
		}
	}
	return -1
}

// splitTopLevel splits s at the commas outside parentheses, quotes and
// comments.
func splitTopLevel(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '(':
			depth++
		case ')':
			depth--
		case '\'', '`', '"':
			if j := skipQuoted(s, i); j >= 0 {
				i = j
			}
		case '-':
			i = skipLineComment(s, i)
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func stripComments(s string) string {
	var b strings.Builder
	for _, line := range strings.Split(s, "\n") {
		if i := strings.Index(line, "--"); i >= 0 {
			line = line[:i]
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	return strings.TrimSpace(b.String())
}

func firstWord(s string) string {
	if f := strings.Fields(s); len(f) > 0 {
		return f[0]
	}
	return ""
}

func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}

func quoteString(s string) string {
	return "'" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "'", `\'`) + "'"
}

// CheckReplicaPath reports what is wrong with a replication path template:
// it must be absolute, hold {shard} (shards must not share a path) and
// {uuid} (tables must not share one, even across RENAME), and no quotes.
func CheckReplicaPath(path string) error {
	switch {
	case !strings.HasPrefix(path, "/"):
		return fmt.Errorf("replica_path: must start with /, got %q", path)
	case !strings.Contains(path, "{shard}"):
		return fmt.Errorf("replica_path: must contain the {shard} macro, got %q", path)
	case !strings.Contains(path, "{uuid}"):
		return fmt.Errorf("replica_path: must contain {uuid}, got %q", path)
	case strings.ContainsAny(path, "'\\`\"\n"):
		return fmt.Errorf("replica_path: must not contain quotes, backslashes or newlines")
	}
	return nil
}

// skipLineComment returns, when a "--" comment starts at s[i], the index
// of the newline that ends it (len(s) at the end of s), else i.
func skipLineComment(s string, i int) int {
	if i+1 >= len(s) || s[i+1] != '-' {
		return i
	}
	if j := strings.IndexByte(s[i:], '\n'); j >= 0 {
		return i + j
	}
	return len(s)
}
