package triage

import (
	"encoding/csv"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"
)

// CSVHeader is the header row of both reports' CSV export.
var CSVHeader = []string{
	"time_utc", "local_time", "time_zone", "facility_id", "user_id", "user_name", "user_role", "user_department",
	"patient_id", "action", "resource", "outcome", "break_glass", "break_glass_reason", "encounter_id",
	"explained", "explanation", "findings", "event_id",
}

func csvRecord(r AccessRow) []string {
	return []string{
		r.Time.UTC().Format("2006-01-02T15:04:05.000Z"), r.LocalTime, r.TimeZone, r.FacilityID, r.UserID, r.UserName,
		r.UserRole, r.UserDepartment, r.PatientID, r.Action, r.Resource, r.Outcome, strconv.FormatBool(r.BreakGlass),
		r.BreakGlassReason, r.EncounterID, strconv.FormatBool(r.Care.Explained), r.Care.Explanation(),
		findingNames(r.Findings), r.EventID,
	}
}

// CSVWriter writes report rows as RFC 4180 CSV (CRLF line ends, quoted as
// needed), with every cell defused against spreadsheet formula injection.
type CSVWriter struct {
	w    *csv.Writer
	rows int
}

// NewCSVWriter writes the header row to w.
func NewCSVWriter(w io.Writer) (*CSVWriter, error) {
	cw := csv.NewWriter(w)
	cw.UseCRLF = true
	if err := cw.Write(CSVHeader); err != nil {
		return nil, err
	}
	return &CSVWriter{w: cw}, nil
}

// Write writes rows.
func (c *CSVWriter) Write(rows []AccessRow) error {
	for _, r := range rows {
		rec := csvRecord(r)
		for i := range rec {
			rec[i] = DefuseCSV(rec[i])
		}
		if err := c.w.Write(rec); err != nil {
			return err
		}
		c.rows++
	}
	return nil
}

// Flush flushes buffered output and reports any write error.
func (c *CSVWriter) Flush() error {
	c.w.Flush()
	return c.w.Error()
}

// WriteCSV writes a whole report as CSV.
func WriteCSV(w io.Writer, rows []AccessRow) error {
	cw, err := NewCSVWriter(w)
	if err != nil {
		return err
	}
	if err := cw.Write(rows); err != nil {
		return err
	}
	return cw.Flush()
}

// DefuseCSV prefixes a cell that a spreadsheet would run as a formula
// (starting with =, +, -, @, tab or carriage return) with a single quote,
// as OWASP recommends. Quoting itself is the CSV writer's job.
func DefuseCSV(s string) string {
	if s == "" {
		return s
	}
	switch s[0] {
	case '=', '+', '-', '@', '\t', '\r':
		return "'" + s
	}
	return s
}

// TableHeader is the header of the aligned-text rendering.
var TableHeader = []string{
	"TIME (UTC)", "LOCAL TIME", "USER", "NAME", "ROLE", "DEPARTMENT", "PATIENT", "ACTION", "OUTCOME",
	"BREAK-GLASS", "EXPLAINED", "FINDINGS",
}

// WriteTable renders rows as aligned text columns for a terminal. Control
// characters (terminal escape sequences included) in any cell are shown
// escaped, so a crafted break-glass reason cannot drive the terminal.
func WriteTable(w io.Writer, rows []AccessRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(cells []string) {
		for i, c := range cells {
			if i > 0 {
				fmt.Fprint(tw, "\t")
			}
			fmt.Fprint(tw, SanitizeTerminal(c))
		}
		fmt.Fprint(tw, "\n")
	}
	line(TableHeader)
	for _, r := range rows {
		btg := "no"
		if r.BreakGlass {
			btg = "yes"
			if r.BreakGlassReason != "" {
				btg += ": " + r.BreakGlassReason
			}
		}
		explainedText := "NO"
		if r.Care.Explained {
			explainedText = "yes (" + r.Care.Explanation() + ")"
		}
		local := r.LocalTime
		if local == "" {
			local = "-"
		}
		findings := findingNames(r.Findings)
		if findings == "" {
			findings = "-"
		}
		line([]string{
			r.Time.UTC().Format("2006-01-02 15:04:05"), local, r.UserID, orDash(r.UserName), orDash(r.UserRole),
			orDash(r.UserDepartment), r.PatientID, r.Action, r.Outcome, btg, explainedText, findings,
		})
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// SanitizeTerminal replaces control characters (and the tab the table uses
// as separator) with visible escapes.
func SanitizeTerminal(s string) string {
	if !strings.ContainsFunc(s, needsEscape) {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if needsEscape(r) {
			fmt.Fprintf(&b, "\\x%02x", r)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}

func needsEscape(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029' || r == '\u202e' || r == '\u202d'
}

// ReportFilename is a download name for a report; it carries the kind and
// dates, never the subject id.
func ReportFilename(kind ReportKind, from, to time.Time, ext string) string {
	return fmt.Sprintf("ehrwatch-%s-%s-%s.%s", strings.ReplaceAll(string(kind), "_", "-"),
		from.UTC().Format("20060102T150405Z"), to.UTC().Format("20060102T150405Z"), ext)
}
