package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

const reportUsage = `usage: ehrwatch report patient --id MRN  --from DATE --to DATE [flags] --config FILE
       ehrwatch report user    --id USER --from DATE --to DATE [flags] --config FILE

Who accessed a patient's record (patient), or what one user accessed
(user), in [from, to): user, name, role, department, action, UTC and
facility-local time, break-glass and reason, whether a care relationship
explains the access, and the findings that flagged it. DATE is 2026-01-31
(midnight UTC) or an RFC 3339 time. Every run is recorded in api_audit
under your OS user name (or --as).

flags:
`

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if err := subcommand("report", args, reportUsage, stdout, stderr, "patient", "user"); err != nil {
		return err
	}
	kind, subjectField := triage.PatientAccess, "--id (patient)"
	if args[0] == "user" {
		kind, subjectField = triage.UserActivity, "--id (user)"
	}
	fs := flag.NewFlagSet("report "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, reportUsage)
	configPath := fs.String("config", "", "configuration file (YAML)")
	id := fs.String("id", "", "patient id (MRN) or user id")
	fromS := fs.String("from", "", "start, inclusive (2026-01-01 or RFC 3339)")
	toS := fs.String("to", "", "end, exclusive (2026-02-01 or RFC 3339)")
	format := fs.String("format", "table", "table, csv or json")
	limit := fs.Int("limit", 0, "at most this many rows (default and maximum: api.max_export_rows)")
	cursor := fs.String("cursor", "", "continue after a previous run that printed a cursor")
	as := fs.String("as", "", "name to record in the audit trail instead of the OS user")
	output := fs.String("output", "", "write the report to this file (created 0600) instead of stdout")
	if err := parseFlags(fs, args[1:], stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		fs.Usage()
		return usageError{"report: unexpected arguments"}
	}
	if err := reportFlagError(subjectField, triage.CheckID("id", *id)); err != nil {
		return err
	}
	from, err := triage.ParseTime("from", *fromS)
	if err != nil {
		return reportFlagError("--from", err)
	}
	to, err := triage.ParseTime("to", *toS)
	if err != nil {
		return reportFlagError("--to", err)
	}
	switch *format {
	case "table", "csv", "json":
	default:
		return usageError{"report: --format: want table, csv or json"}
	}
	if *as != "" {
		if err := triage.CheckID("as", *as); err != nil {
			return reportFlagError("--as", err)
		}
	}
	cfg, err := LoadConfig(*configPath, os.Environ())
	if err != nil {
		return err
	}
	if err := triage.CheckRange(from, to, cfg.API.MaxReportRange); err != nil {
		return reportFlagError("--from/--to", err)
	}
	maxRows := cfg.API.MaxExportRows
	if *limit < 0 || *limit > maxRows {
		return usageError{fmt.Sprintf("report: --limit: must be between 1 and %d (api.max_export_rows)", maxRows)}
	}
	if *limit == 0 {
		*limit = maxRows
	}

	osUser := currentOSUser()
	who := *as
	if who == "" {
		who = osUser
	}
	st, closeStore, err := openTriageStore(ctx, cfg)
	if err != nil {
		return redactErr(err, *id)
	}
	defer closeStore()
	rep, err := st.ReportAll(ctx, triage.ReportQuery{Kind: kind, SubjectID: *id, From: from, To: to, Limit: *limit, Cursor: *cursor})
	if err != nil {
		return redactErr(err, *id)
	}

	// The audit row goes in before anything is printed.
	host, _ := os.Hostname()
	rec := triage.AuditRecord{
		RequestID: newCLIRequestID(), Principal: who, AuthMethod: "cli", Role: "cli", Channel: "cli",
		Method: "CLI", Endpoint: "report " + args[0], Status: 0, Rows: len(rep.Rows), RemoteAddr: host,
		PatientsReturned: rep.Patients(),
		Params: map[string]string{"from": *fromS, "to": *toS, "format": *format, "limit": strconv.Itoa(*limit),
			"os_user": osUser},
	}
	if *cursor != "" {
		rec.Params["cursor"] = *cursor
	}
	if kind == triage.PatientAccess {
		rec.PatientID = *id
	} else {
		rec.UserID = *id
	}
	if err := st.WriteAudit(ctx, rec); err != nil {
		return fmt.Errorf("report: could not record the audit trail, so no report is shown: %w", redactErr(err, *id))
	}

	out := stdout
	if *output != "" {
		f, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			return fmt.Errorf("report: --output: %w", err)
		}
		defer f.Close()
		out = f
	}
	switch *format {
	case "json":
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		err = enc.Encode(rep)
	case "csv":
		err = triage.WriteCSV(out, rep.Rows)
	default:
		err = writeReportTable(out, &rep)
	}
	if err != nil {
		return fmt.Errorf("report: write: %w", err)
	}
	// Warnings go to stderr in every format (JSON also carries them), so
	// a CSV or JSON file stays clean and the reader still sees them.
	for _, w := range rep.Warnings {
		fmt.Fprintf(stderr, "report: warning: %s\n", w)
	}
	if rep.NextCursor != "" {
		fmt.Fprintf(stderr, "report: %d rows shown; more remain: rerun with --cursor %s\n", len(rep.Rows), rep.NextCursor)
	}
	return nil
}

func writeReportTable(w io.Writer, rep *triage.Report) error {
	if _, err := fmt.Fprintln(w, triage.SanitizeTerminal(rep.Title())); err != nil {
		return err
	}
	if _, err := fmt.Fprintln(w); err != nil {
		return err
	}
	if err := triage.WriteTable(w, rep.Rows); err != nil {
		return err
	}
	unexplained := 0
	for _, r := range rep.Rows {
		if !r.Care.Explained {
			unexplained++
		}
	}
	_, err := fmt.Fprintf(w, "\n%d accesses, %d not explained by a care relationship\n", len(rep.Rows), unexplained)
	if err != nil {
		return err
	}
	for _, warning := range rep.Warnings {
		if _, err := fmt.Fprintf(w, "WARNING: %s\n", warning); err != nil {
			return err
		}
	}
	if rep.Kind == triage.UserActivity && len(rep.Findings) > 0 {
		fmt.Fprintf(w, "\nFindings for this user in the range:\n")
		for _, f := range rep.Findings {
			sup := ""
			if f.Suppressed {
				sup = " (suppressed)"
			}
			fmt.Fprintf(w, "  %s  %-8s %s%s: %s\n", f.WindowStart.Format("2006-01-02 15:04"), f.Severity,
				triage.SanitizeTerminal(f.Detector), sup, triage.SanitizeTerminal(f.Explanation))
		}
	}
	return nil
}

// reportFlagError turns a validation error into a usage error naming the flag.
func reportFlagError(flagName string, err error) error {
	if err == nil {
		return nil
	}
	var ve *triage.ValidationError
	if errors.As(err, &ve) {
		return usageError{fmt.Sprintf("report: %s: %s", flagName, ve.Msg)}
	}
	return err
}

// redactErr keeps the subject id, and ClickHouse server messages (which can
// quote the rejected row: the audit row lists the patients returned), out
// of error text (stderr is often logged).
func redactErr(err error, id string) error {
	if err == nil {
		return nil
	}
	if msg := triage.Redact(triage.ErrorText(err), id); msg != err.Error() {
		return errors.New(msg)
	}
	return err
}

func currentOSUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return "unknown"
}

func newCLIRequestID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return "cli-" + hex.EncodeToString(b[:])
}
