package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	chdeploy "github.com/ehrwatch/ehrwatch/deployments/clickhouse" // package clickhouse
	"github.com/ehrwatch/ehrwatch/pipeline/store"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const checkUsage = `usage: ehrwatch check clickhouse --config FILE [--protocol native|http|both] [--other-addr HOST:PORT] [--keep]

Conformance check of your ClickHouse server, with the configured address,
credentials and TLS. In a scratch database it creates (<database>_check_<random>)
it runs the migrations, inserts a synthetic batch through ehrwatch's writer
with deduplication tokens, retries the identical batch and checks it
collapsed (raw count and FINAL), inserts an older version of a finding after
a newer one and checks the newest wins, runs the report queries of the API
and ` + "`ehrwatch report`" + `, parses the grants of deployments/clickhouse/access.sql
on the server and, where it allows access management, applies them to
scratch roles and drops those; then it drops the scratch database (unless
--keep). One line per check: ok, FAIL or skipped with the reason; exit
status 1 if any check FAILs. No patient data is involved, and server
messages are not printed (they can quote row values): only error codes.

The configured addresses (clickhouse.addrs) speak clickhouse.protocol. The
other protocol (--protocol both, or the one not configured) needs its
address in --other-addr; without it, its checks are reported as skipped.

flags:
`

// checkMutateRetry, when set (tests), changes the batch the retry check
// sends, to show that the check FAILs when a retry does not collapse.
var checkMutateRetry func(*store.Batch)

// runCheck is `ehrwatch check clickhouse`.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand("check", args, checkUsage, stdout, stderr, "clickhouse"); err != nil {
		return err
	}
	fs := flag.NewFlagSet("check clickhouse", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, checkUsage)
	configPath := fs.String("config", "", "configuration file (YAML)")
	protocol := fs.String("protocol", "", "native, http or both (default: clickhouse.protocol)")
	otherAddr := fs.String("other-addr", "", "host:port of the protocol that clickhouse.protocol does not name")
	keep := fs.Bool("keep", false, "keep the scratch database (its name is printed)")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{"check clickhouse: unexpected arguments"}
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	ch := cfg.ClickHouse
	var protos []string
	switch *protocol {
	case "":
		protos = []string{ch.Protocol}
	case "native", "http":
		protos = []string{*protocol}
	case "both":
		protos = []string{ch.Protocol, otherProtocol(ch.Protocol)}
	default:
		return usageError{"check clickhouse: --protocol: want native, http or both"}
	}
	c := &checker{out: stdout}
	for _, p := range protos {
		pc := ch
		pc.Protocol = p
		if p != ch.Protocol {
			if *otherAddr == "" {
				c.line(p, "all", "skipped", fmt.Sprintf("no address for %s (the config names %s addresses only; give --other-addr HOST:PORT)", p, ch.Protocol))
				continue
			}
			pc.Addrs = []string{*otherAddr}
		}
		c.run(ctx, pc, *keep)
	}
	if c.failed {
		return errors.New("check clickhouse: some checks failed")
	}
	return nil
}

func otherProtocol(p string) string {
	if p == "http" {
		return "native"
	}
	return "http"
}

type checker struct {
	out    io.Writer
	failed bool
}

func (c *checker) line(proto, name, status, detail string) {
	if status == "FAIL" {
		c.failed = true
	}
	fmt.Fprintf(c.out, "%-6s %-22s %-7s %s\n", proto, name, status, detail)
}

// step runs fn as the check name unless an earlier check it depends on
// failed (blocked non-empty). It returns whether the check passed.
func (c *checker) step(proto, name, blocked string, fn func() (string, error)) bool {
	if blocked != "" {
		c.line(proto, name, "skipped", blocked+" failed")
		return false
	}
	detail, err := fn()
	if err != nil {
		c.line(proto, name, "FAIL", store.ErrorText(err))
		return false
	}
	c.line(proto, name, "ok", detail)
	return true
}

// The synthetic data of the check: no patient data, ids that say what
// they are.
const (
	checkEvents  = 24
	checkUser    = "ehrwatch-check-user"
	checkPatient = "ehrwatch-check-patient-0"
	checkTopic   = "ehrwatch-check"
)

func checkBatch(base time.Time) *store.Batch {
	b := &store.Batch{}
	for i := range checkEvents {
		b.Events = append(b.Events, store.EventRow{
			Position: store.Position{Topic: checkTopic, Partition: 0, Offset: int64(i)},
			Event: &schemas.AccessEvent{
				EventID: fmt.Sprintf("ehrwatch-check-event-%02d", i), EventTime: base.Add(time.Duration(i) * time.Second),
				Source: "ehrwatch-check", FacilityID: "check-facility", UserID: checkUser, UserRole: "check",
				UserDepartment: "check", WorkstationID: "check-ws", PatientID: fmt.Sprintf("ehrwatch-check-patient-%d", i%3),
				Action: schemas.ActionView, Outcome: schemas.OutcomeSuccess,
			},
		})
	}
	b.Findings = append(b.Findings, checkFinding("ehrwatch-check-finding-1", base, 2, b.Events[0].Event.EventID, b.Events[3].Event.EventID))
	return b
}

func checkFinding(id string, base time.Time, offset int64, eventIDs ...string) store.FindingRow {
	return store.FindingRow{
		Position: store.Position{Topic: checkTopic, Partition: 0, Offset: offset},
		Finding: &schemas.Finding{
			FindingID: id, Detector: "check", Severity: schemas.SeverityLow, Score: 10,
			FacilityID: "check-facility", UserID: checkUser, PatientID: checkPatient,
			WindowStart: base, WindowEnd: base.Add(time.Hour), EventIDs: eventIDs,
			Explanation: "synthetic finding of ehrwatch check clickhouse",
		},
	}
}

// run runs every check over one protocol.
func (c *checker) run(ctx context.Context, cfg store.Config, keep bool) {
	p := cfg.Protocol
	var suffix [4]byte
	_, _ = rand.Read(suffix[:])
	scratch := cfg.Database + "_check_" + hex.EncodeToString(suffix[:])
	admin := cfg
	admin.Database = "default"

	var adminConn, conn driver.Conn
	defer func() {
		if conn != nil {
			conn.Close()
		}
		if adminConn != nil {
			adminConn.Close()
		}
	}()
	open := func(sc store.Config) (driver.Conn, error) {
		cn, err := store.Open(sc)
		if err != nil {
			return nil, err
		}
		if err := cn.Ping(ctx); err != nil {
			cn.Close()
			return nil, err
		}
		return cn, nil
	}
	blocked := ""
	fail := func(name string, ok bool) {
		if !ok && blocked == "" {
			blocked = name
		}
	}
	fail("connect", c.step(p, "connect", blocked, func() (string, error) {
		var err error
		if adminConn, err = open(admin); err != nil {
			return "", err
		}
		v, err := adminConn.ServerVersion()
		if err != nil {
			return "", err
		}
		tls := "without TLS"
		if cfg.TLS.Enabled {
			tls = "with TLS"
		}
		return fmt.Sprintf("%s %s, server %s", strings.Join(cfg.Addrs, ","), tls, v.Version), nil
	}))
	created := false
	fail("create database", c.step(p, "create database", blocked, func() (string, error) {
		sc := cfg
		sc.Database = scratch
		if err := store.CreateDatabase(ctx, sc); err != nil {
			return "", err
		}
		created = true
		var err error
		if conn, err = open(sc); err != nil {
			return "", err
		}
		return scratch, nil
	}))
	fail("migrate", c.step(p, "migrate", blocked, func() (string, error) {
		sc := cfg
		sc.Database = scratch // cluster mode: the Distributed tables point into it
		res, err := store.Migrate(ctx, conn, sc.MigrationParams())
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("%d migrations applied", len(res.Applied)), nil
	}))
	base := time.Now().UTC().Truncate(time.Hour).Add(-2 * time.Hour)
	w := (*store.Writer)(nil)
	if conn != nil {
		w = store.NewWriter(conn)
	}
	fail("insert batch", c.step(p, "insert batch", blocked, func() (string, error) {
		b := checkBatch(base)
		if err := w.Write(ctx, b); err != nil {
			return "", err
		}
		return fmt.Sprintf("%d events, %d finding with token %s…", len(b.Events), len(b.Findings), b.Token(store.TableEvents)[:24]), nil
	}))
	c.step(p, "retry collapses", blocked, func() (string, error) {
		b := checkBatch(base)
		if checkMutateRetry != nil {
			checkMutateRetry(b)
		}
		if err := w.Write(ctx, b); err != nil {
			return "", err
		}
		raw, err := countRows(ctx, conn, "access_events", "")
		if err != nil {
			return "", err
		}
		final, err := countRows(ctx, conn, "access_events", "FINAL")
		if err != nil {
			return "", err
		}
		if raw != checkEvents || final != checkEvents {
			return "", fmt.Errorf("access_events after the retried batch: %d rows raw, %d with FINAL, want %d and %d (the server did not drop the retry by its insert_deduplication_token)", raw, final, checkEvents, checkEvents)
		}
		return fmt.Sprintf("%d rows raw and with FINAL after the identical batch was sent twice", raw), nil
	})
	c.step(p, "newest finding wins", blocked, func() (string, error) {
		const id = "ehrwatch-check-finding-2"
		newer := &store.Batch{Findings: []store.FindingRow{checkFinding(id, base, 30, "ehrwatch-check-event-03", "ehrwatch-check-event-04")}}
		older := &store.Batch{Findings: []store.FindingRow{checkFinding(id, base, 29, "ehrwatch-check-event-03")}}
		for _, b := range []*store.Batch{newer, older} {
			if err := w.Write(ctx, b); err != nil {
				return "", err
			}
		}
		var ids []string
		if err := conn.QueryRow(ctx, "SELECT event_ids FROM findings FINAL WHERE finding_id = ?", id).Scan(&ids); err != nil {
			return "", err
		}
		if len(ids) != 2 {
			return "", fmt.Errorf("findings FINAL kept the version with %d event ids, want the newest (offset 30, 2 event ids)", len(ids))
		}
		return "older version inserted last, newest (by kafka_offset) kept", nil
	})
	c.step(p, "report queries", blocked, func() (string, error) {
		ts := triage.NewStore(conn, triage.Options{})
		if err := ts.CheckSchema(ctx); err != nil {
			return "", err
		}
		q := triage.ReportQuery{Kind: triage.PatientAccess, SubjectID: checkPatient,
			From: base.Add(-time.Hour), To: base.Add(time.Hour), Limit: 5}
		var pr triage.Report
		for pages := 0; ; pages++ {
			page, err := ts.Report(ctx, q)
			if err != nil {
				return "", err
			}
			pr.Rows = append(pr.Rows, page.Rows...)
			if page.NextCursor == "" || pages > checkEvents {
				break
			}
			q.Cursor = page.NextCursor
		}
		if want := (checkEvents + 2) / 3; len(pr.Rows) != want {
			return "", fmt.Errorf("patient report: %d rows, want %d", len(pr.Rows), want)
		}
		if len(pr.Rows[0].Findings) != 1 || len(pr.Rows[1].Findings) != 2 {
			return "", fmt.Errorf("patient report: the first two accesses carry %d and %d findings, want 1 and 2", len(pr.Rows[0].Findings), len(pr.Rows[1].Findings))
		}
		ur, err := ts.Report(ctx, triage.ReportQuery{Kind: triage.UserActivity, SubjectID: checkUser,
			From: q.From, To: q.To, Limit: 100})
		if err != nil {
			return "", err
		}
		if len(ur.Rows) != checkEvents || len(ur.Findings) != 2 {
			return "", fmt.Errorf("user report: %d rows and %d findings, want %d and 2", len(ur.Rows), len(ur.Findings), checkEvents)
		}
		return fmt.Sprintf("patient report %d rows (paged by 5), user report %d rows and %d findings", len(pr.Rows), len(ur.Rows), len(ur.Findings)), nil
	})
	c.checkGrants(ctx, p, blocked, conn, scratch)
	switch {
	case !created:
	case keep:
		c.line(p, "drop database", "skipped", "--keep: "+scratch+" kept")
	default:
		c.step(p, "drop database", "", func() (string, error) {
			stmt := "DROP DATABASE IF EXISTS " + quoteIdent(scratch)
			if cfg.Cluster != "" {
				stmt += " ON CLUSTER " + quoteIdent(cfg.Cluster)
			}
			if err := adminConn.Exec(ctx, stmt+" SYNC"); err != nil {
				return "", err
			}
			return scratch + " dropped", nil
		})
	}
}

// quoteIdent quotes a ClickHouse identifier with backquotes.
func quoteIdent(s string) string {
	return "`" + strings.ReplaceAll(strings.ReplaceAll(s, `\`, `\\`), "`", "\\`") + "`"
}

func countRows(ctx context.Context, conn driver.Conn, table, final string) (uint64, error) {
	var n uint64
	err := conn.QueryRow(ctx, "SELECT count() FROM "+table+" "+final).Scan(&n)
	return n, err
}

var (
	accessPlaceholderRe = regexp.MustCompile(`\{\{[A-Z_]+_PASSWORD_SHA256\}\}`)
	accessRoleRe        = regexp.MustCompile(`\behrwatch_(\w+)_role\b`)
	accessGrantToRoleRe = regexp.MustCompile("^GRANT .+ ON .+ TO \\S+_role`$")
)

// paramEscaper escapes a query parameter's value as the server reads it
// (escaped text: a raw newline would end it).
var paramEscaper = strings.NewReplacer(`\`, `\\`, "\n", `\n`, "\t", `\t`)

// accessManagementRefused are the codes of a server that does not let
// this user manage access: ACCESS_DENIED, ACCESS_STORAGE_READONLY,
// NOT_IMPLEMENTED.
var accessManagementRefused = []int32{497, 495, 48}

// checkGrants parses every statement of access.sql on the server
// (formatQuery), with the database renamed to the scratch one and the
// roles prefixed with its name; then creates the roles, applies the
// grants to them and drops them, where the server allows it.
func (c *checker) checkGrants(ctx context.Context, p, blocked string, conn driver.Conn, scratch string) {
	hash := sha256.Sum256([]byte(scratch))
	sql := accessPlaceholderRe.ReplaceAllString(chdeploy.AccessSQL, hex.EncodeToString(hash[:]))
	sql = strings.ReplaceAll(sql, " ehrwatch.", " "+quoteIdent(scratch)+".")
	sql = accessRoleRe.ReplaceAllString(sql, "`"+scratch+"_${1}_role`")
	var stmts []string
	parsed := c.step(p, "grants parse", blocked, func() (string, error) {
		var err error
		if stmts, err = chdeploy.Statements(sql); err != nil {
			return "", err
		}
		for i, s := range stmts {
			var out string
			qctx := clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters{"q": paramEscaper.Replace(s)}))
			if err := conn.QueryRow(qctx, "SELECT formatQuery({q:String})").Scan(&out); err != nil {
				return "", fmt.Errorf("access.sql statement %d: %w", i+1, err)
			}
		}
		return fmt.Sprintf("%d statements of access.sql parsed by the server", len(stmts)), nil
	})
	if !parsed {
		if blocked == "" {
			blocked = "grants parse"
		}
		c.line(p, "grants apply", "skipped", blocked+" failed")
		return
	}
	var roles, grants []string
	for _, s := range stmts {
		s = strings.Join(strings.Fields(s), " ")
		switch {
		case strings.HasPrefix(s, "CREATE ROLE IF NOT EXISTS "):
			roles = append(roles, strings.TrimPrefix(s, "CREATE ROLE IF NOT EXISTS "))
		case accessGrantToRoleRe.MatchString(s):
			grants = append(grants, s)
		}
	}
	var created []string
	defer func() {
		for _, r := range created {
			if err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+r); err != nil {
				c.line(p, "grants drop roles", "FAIL", store.ErrorText(err))
				return
			}
		}
	}()
	for _, r := range roles {
		err := conn.Exec(ctx, "CREATE ROLE IF NOT EXISTS "+r)
		var ex *clickhouse.Exception
		if err != nil && len(created) == 0 && errors.As(err, &ex) && slices.Contains(accessManagementRefused, ex.Code) {
			c.line(p, "grants apply", "skipped", fmt.Sprintf("server refuses access management (code %d)", ex.Code))
			return
		}
		if err != nil {
			c.line(p, "grants apply", "FAIL", "create role: "+store.ErrorText(err))
			return
		}
		created = append(created, r)
	}
	for i, g := range grants {
		if err := conn.Exec(ctx, g); err != nil {
			c.line(p, "grants apply", "FAIL", fmt.Sprintf("grant %d of %d: %s", i+1, len(grants), store.ErrorText(err)))
			return
		}
	}
	c.line(p, "grants apply", "ok", fmt.Sprintf("%d roles created, %d grants applied, roles dropped", len(created), len(grants)))
}
