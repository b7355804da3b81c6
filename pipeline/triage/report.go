package triage

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ReportKind names a report.
type ReportKind string

// The reports.
const (
	// PatientAccess: everyone who accessed one patient's record.
	PatientAccess ReportKind = "patient_access"
	// UserActivity: every record one user accessed.
	UserActivity ReportKind = "user_activity"
)

// ReportQuery asks for one page of a report.
type ReportQuery struct {
	Kind ReportKind
	// SubjectID is the patient id (PatientAccess) or user id (UserActivity).
	SubjectID string
	// From and To bound the access time: [From, To).
	From, To time.Time
	Limit    int
	Cursor   string
}

// AccessRow is one access in a report.
type AccessRow struct {
	EventID string    `json:"event_id"`
	Time    time.Time `json:"time"`
	// LocalTime is Time in the facility's time zone (RFC 3339 with offset)
	// when the zone is known.
	LocalTime        string       `json:"local_time,omitempty"`
	TimeZone         string       `json:"time_zone,omitempty"`
	FacilityID       string       `json:"facility_id"`
	UserID           string       `json:"user_id"`
	UserName         string       `json:"user_name"`
	UserRole         string       `json:"user_role"`
	UserDepartment   string       `json:"user_department"`
	PatientID        string       `json:"patient_id"`
	Action           string       `json:"action"`
	Resource         string       `json:"resource,omitempty"`
	Outcome          string       `json:"outcome"`
	BreakGlass       bool         `json:"break_glass"`
	BreakGlassReason string       `json:"break_glass_reason,omitempty"`
	EncounterID      string       `json:"encounter_id,omitempty"`
	Care             Care         `json:"care"`
	Findings         []FindingRef `json:"findings,omitempty"`
}

// FindingRef names a finding that flagged an access.
type FindingRef struct {
	FindingID  string `json:"finding_id"`
	Detector   string `json:"detector"`
	Severity   string `json:"severity"`
	Suppressed bool   `json:"suppressed,omitempty"`
}

// FindingSummary is a finding listed in a user activity report.
type FindingSummary struct {
	FindingID   string    `json:"finding_id"`
	Detector    string    `json:"detector"`
	Severity    string    `json:"severity"`
	PatientID   string    `json:"patient_id,omitempty"`
	WindowStart time.Time `json:"window_start"`
	WindowEnd   time.Time `json:"window_end"`
	Explanation string    `json:"explanation"`
	Suppressed  bool      `json:"suppressed,omitempty"`
	EventCount  int       `json:"event_count"`
}

// Report is one page of a report.
type Report struct {
	Kind        ReportKind  `json:"kind"`
	SubjectID   string      `json:"subject_id"`
	From        time.Time   `json:"from"`
	To          time.Time   `json:"to"`
	GeneratedAt time.Time   `json:"generated_at"`
	Rows        []AccessRow `json:"rows"`
	NextCursor  string      `json:"next_cursor,omitempty"`
	// Findings (user activity, first page only) are the user's findings in
	// the range, suppressed ones included.
	Findings          []FindingSummary `json:"findings,omitempty"`
	FindingsTruncated bool             `json:"findings_truncated,omitempty"`
	// Warnings say, in plain sentences that never name a patient or a
	// user, what makes the report less than it seems (empty reference
	// tables: no access can be explained, names are blank). Show them with
	// the report.
	Warnings []string `json:"warnings,omitempty"`
}

// referenceWarnings returns a warning when a reference table the reports
// join (users, encounters) holds no row: without encounters no access is
// explained by a care relationship, without users names are blank. (The
// API's ClickHouse user cannot read the patients table, so it is not
// counted.)
func (s *Store) referenceWarnings(ctx context.Context) ([]string, error) {
	c, err := s.ReferenceCounts(ctx)
	if err != nil {
		return nil, err
	}
	return ReferenceWarnings(c), nil
}

// ReferenceWarnings returns the report warnings for reference tables
// holding this many rows (none when every table has rows): the one
// producer of them for the API, `ehrwatch report`, the console and the
// demo's in-memory store.
func ReferenceWarnings(c ReferenceCounts) []string {
	var empty []string
	for _, t := range []struct {
		name string
		n    uint64
	}{{"users", c.Users}, {"encounters", c.Encounters}} {
		if t.n == 0 {
			empty = append(empty, t.name)
		}
	}
	if len(empty) == 0 {
		return nil
	}
	msg := "The reference tables " + strings.Join(empty, ", ") + " are empty"
	if len(empty) == 1 {
		msg = "The reference table " + empty[0] + " is empty"
	}
	msg += ": load the users, patients and encounters (HR and ADT feeds) into ClickHouse."
	if slices.Contains(empty, "encounters") {
		msg += " Without encounters no access can be explained by a care relationship, so every access shows as not explained."
	}
	if slices.Contains(empty, "users") {
		msg += " Without users, names are blank and roles and departments come from the events alone."
	}
	return []string{msg}
}

// CheckRange validates a report's time range: both ends given, from before
// to, and at most maxRange long (0: unbounded).
func CheckRange(from, to time.Time, maxRange time.Duration) error {
	if from.IsZero() {
		return invalid("from", "required")
	}
	if to.IsZero() {
		return invalid("to", "required")
	}
	if !from.Before(to) {
		return invalid("from", "must be before to")
	}
	if maxRange > 0 && to.Sub(from) > maxRange {
		return invalid("to", "range too long: at most %s", FormatRange(maxRange))
	}
	return nil
}

// FormatRange renders a maximum range in days when it is whole days.
func FormatRange(d time.Duration) string {
	if d%(24*time.Hour) == 0 {
		return fmt.Sprintf("%d days", d/(24*time.Hour))
	}
	return d.String()
}

// Report runs one page of a report.
func (s *Store) Report(ctx context.Context, q ReportQuery) (Report, error) {
	var subjectField, subjectCol string
	switch q.Kind {
	case PatientAccess:
		subjectField, subjectCol = "patient_id", "patient_id"
	case UserActivity:
		subjectField, subjectCol = "user_id", "user_id"
	default:
		return Report{}, invalid("kind", "unknown report")
	}
	if err := CheckID(subjectField, q.SubjectID); err != nil {
		return Report{}, err
	}
	if err := CheckRange(q.From, q.To, 0); err != nil {
		return Report{}, err
	}
	if q.Limit <= 0 {
		return Report{}, invalid("limit", "must be > 0")
	}
	cur, err := decodeCursor(q.Cursor)
	if err != nil {
		return Report{}, err
	}
	rep := Report{Kind: q.Kind, SubjectID: q.SubjectID, From: q.From.UTC(), To: q.To.UTC(),
		GeneratedAt: s.opts.Now().UTC().Truncate(time.Millisecond), Rows: []AccessRow{}}

	p := params{}
	p.str("subject", q.SubjectID)
	p.time("from", q.From)
	p.time("to", q.To)
	where := subjectCol + " = {subject:String} AND event_time >= {from:DateTime64(3, 'UTC')} AND event_time < {to:DateTime64(3, 'UTC')}"
	if cur != nil {
		p.time("cur_t", cur.t)
		p.str("cur_id", cur.id)
		where += " AND (event_time, event_id) > ({cur_t:DateTime64(3, 'UTC')}, {cur_id:String})"
	}
	evs, err := s.queryEvents(ctx, p, where, "event_time, event_id", q.Limit+1)
	if err != nil {
		return Report{}, err
	}
	if len(evs) > q.Limit {
		evs = evs[:q.Limit]
		last := evs[len(evs)-1]
		rep.NextCursor = encodeCursor(last.EventTime, last.EventID)
	}
	// The care relationships (users, encounters) and the findings are
	// independent reads: one round trip instead of two.
	var ex []explained
	var flagged map[string][]FindingRef
	var exErr, flErr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		flagged, flErr = s.findingsForEvents(ctx, evs)
	}()
	ex, exErr = s.explainEvents(ctx, evs)
	wg.Wait()
	if exErr != nil {
		return Report{}, exErr
	}
	if flErr != nil {
		return Report{}, flErr
	}
	for i := range evs {
		e := &evs[i]
		u := ex[i].user
		rec := UserRecord{FirstName: u.firstName, LastName: u.lastName, Role: u.role, Department: u.department}
		rep.Rows = append(rep.Rows, NewAccessRow(e, rec, ex[i].care, flagged[e.EventID], s.location(e.FacilityID)))
	}
	if q.Kind == UserActivity && cur == nil {
		rep.Findings, rep.FindingsTruncated, err = s.userFindings(ctx, q)
		if err != nil {
			return Report{}, err
		}
	}
	if rep.Warnings, err = s.referenceWarnings(ctx); err != nil {
		return Report{}, err
	}
	return rep, nil
}

// findingsForEvents maps event ids to the findings that cite them.
func (s *Store) findingsForEvents(ctx context.Context, evs []schemas.AccessEvent) (map[string][]FindingRef, error) {
	out := map[string][]FindingRef{}
	if len(evs) == 0 {
		return out, nil
	}
	// The events' ids are matched here, not sent with the query: a page
	// of thousands of ids would make the request URL too long.
	var users []string
	ids := make(map[string]bool, len(evs))
	minT, maxT := evs[0].EventTime, evs[0].EventTime
	for _, e := range evs {
		users = append(users, e.UserID)
		ids[e.EventID] = true
		minT = minTime(minT, e.EventTime)
		maxT = maxTime(maxT, e.EventTime)
	}
	slices.Sort(users)
	users = slices.Compact(users)
	p := params{}
	p.strs("users", users)
	p.time("min_t", minT)
	p.time("max_t", maxT)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT finding_id, detector, severity, suppressed, event_ids
FROM findings FINAL
WHERE has({users:Array(String)}, user_id)
  AND window_start <= {max_t:DateTime64(3, 'UTC')} AND window_end >= {min_t:DateTime64(3, 'UTC')}
ORDER BY detector, finding_id`)
	if err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var f FindingRef
		var eventIDs []string
		if err := rows.Scan(&f.FindingID, &f.Detector, &f.Severity, &f.Suppressed, &eventIDs); err != nil {
			return nil, fmt.Errorf("read findings: %w", err)
		}
		for _, id := range eventIDs {
			if ids[id] {
				out[id] = append(out[id], f)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	return out, nil
}

func (s *Store) userFindings(ctx context.Context, q ReportQuery) ([]FindingSummary, bool, error) {
	p := params{}
	p.str("subject", q.SubjectID)
	p.time("from", q.From)
	p.time("to", q.To)
	p.uint("limit", uint64(s.opts.MaxReportFindings)+1)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT finding_id, detector, severity, patient_id, window_start, window_end,
       explanation, suppressed, length(event_ids)
FROM findings FINAL
WHERE user_id = {subject:String} AND window_start < {to:DateTime64(3, 'UTC')} AND window_end >= {from:DateTime64(3, 'UTC')}
ORDER BY window_start, finding_id
LIMIT {limit:UInt32}`)
	if err != nil {
		return nil, false, fmt.Errorf("read findings: %w", err)
	}
	defer rows.Close()
	out := []FindingSummary{}
	for rows.Next() {
		var f FindingSummary
		var n uint64
		if err := rows.Scan(&f.FindingID, &f.Detector, &f.Severity, &f.PatientID, &f.WindowStart, &f.WindowEnd,
			&f.Explanation, &f.Suppressed, &n); err != nil {
			return nil, false, fmt.Errorf("read findings: %w", err)
		}
		f.WindowStart, f.WindowEnd, f.EventCount = f.WindowStart.UTC(), f.WindowEnd.UTC(), int(n)
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, false, fmt.Errorf("read findings: %w", err)
	}
	truncated := len(out) > s.opts.MaxReportFindings
	if truncated {
		out = out[:s.opts.MaxReportFindings]
	}
	return out, truncated, nil
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Patients returns the distinct patient ids in the report's rows.
func (r *Report) Patients() []string {
	var ids []string
	for _, row := range r.Rows {
		ids = append(ids, row.PatientID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// Title is a one-line heading for the report (it names the subject; show it
// to the reader, never log it).
func (r *Report) Title() string {
	what := "Patient access report for patient " + r.SubjectID
	if r.Kind == UserActivity {
		what = "User activity report for user " + r.SubjectID
	}
	return fmt.Sprintf("%s, %s to %s (UTC, end exclusive)", what,
		r.From.Format(time.RFC3339), r.To.Format(time.RFC3339))
}

// findingNames joins the detectors that flagged a row.
func findingNames(fs []FindingRef) string {
	var names []string
	for _, f := range fs {
		n := f.Detector
		if f.Suppressed {
			n += " (suppressed)"
		}
		names = append(names, n)
	}
	return strings.Join(names, "; ")
}

// reportChunk bounds one pass of ReportAll (the rows of a pass are held in
// memory with their care relationships and findings).
const reportChunk = 10000

// ReportAll runs q in passes of at most 10 000 rows until q.Limit rows (or
// the end of the range) and returns them as one report; NextCursor is set
// when rows remain. Its Warnings are those of the first pass.
func (s *Store) ReportAll(ctx context.Context, q ReportQuery) (Report, error) {
	return ReportInPasses(ctx, q, s.Report)
}

// ReportInPasses is ReportAll over any store's one-page report function.
func ReportInPasses(ctx context.Context, q ReportQuery, report func(context.Context, ReportQuery) (Report, error)) (Report, error) {
	var out Report
	remaining := q.Limit
	first := true
	for {
		cq := q
		cq.Limit = min(remaining, reportChunk)
		rep, err := report(ctx, cq)
		if err != nil {
			return Report{}, err
		}
		if first {
			out = rep
			first = false
		} else {
			out.Rows = append(out.Rows, rep.Rows...)
			out.NextCursor = rep.NextCursor
		}
		remaining -= len(rep.Rows)
		if rep.NextCursor == "" || remaining <= 0 {
			return out, nil
		}
		q.Cursor = rep.NextCursor
	}
}
