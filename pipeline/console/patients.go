package console

import (
	"bytes"
	"fmt"
	"html"
	"html/template"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// Bounds of the privacy office's pages.
const (
	// maxPageRange is the longest period a patient or user page covers.
	maxPageRange = 366 * 24 * time.Hour
	// maxPageRows bounds the accesses one page, export or print shows.
	maxPageRows = 20000
	// defaultPageDays is the period shown when none is given.
	defaultPageDays = 30
)

// periodForm is a subject and a period, as submitted or defaulted.
type periodForm struct {
	PatientID string
	// From and To are what the form shows (dates, [From, To)).
	From, To string
	Error    string
}

func (c *Console) defaultPeriod() (string, string) {
	today := c.now().UTC().Truncate(24 * time.Hour)
	return today.AddDate(0, 0, -defaultPageDays+1).Format(time.DateOnly), today.AddDate(0, 0, 1).Format(time.DateOnly)
}

// parsePeriod validates from and to (dates or RFC 3339 times).
func parsePeriod(fromS, toS string) (time.Time, time.Time, error) {
	from, err := triage.ParseTime("from", fromS)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	to, err := triage.ParseTime("to", toS)
	if err != nil {
		return time.Time{}, time.Time{}, err
	}
	if err := triage.CheckRange(from, to, maxPageRange); err != nil {
		return time.Time{}, time.Time{}, err
	}
	return from, to, nil
}

// careWarning returns the reports' warning about empty reference tables
// (triage.ReferenceWarnings), or "".
func careWarning(r *http.Request, inv InvestigationStore) (string, error) {
	refs, err := inv.ReferenceCounts(r.Context())
	if err != nil {
		return "", err
	}
	if w := triage.ReferenceWarnings(refs); len(w) > 0 {
		return w[0], nil
	}
	return "", nil
}

type lookupView struct {
	Form    periodForm
	Warning string
}

func (c *Console) handlePatientLookup(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	v := lookupView{}
	v.Form.From, v.Form.To = c.defaultPeriod()
	var err error
	if v.Warning, err = careWarning(r, c.invs); err != nil {
		return err
	}
	c.render(w, r, rc, http.StatusOK, "patients", "Patients", "patients", v)
	return nil
}

// patientForm reads the patient id and period of a POST; a bad form is
// re-offered with the reason.
func (c *Console) patientForm(w http.ResponseWriter, r *http.Request, rc *reqCtx) (periodForm, time.Time, time.Time, bool, error) {
	if err := c.parseForm(w, r); err != nil {
		return periodForm{}, time.Time{}, time.Time{}, false, err
	}
	f := periodForm{PatientID: r.PostForm.Get("patient_id"), From: r.PostForm.Get("from"), To: r.PostForm.Get("to")}
	if f.From == "" && f.To == "" {
		f.From, f.To = c.defaultPeriod()
	}
	err := triage.CheckID("patient_id", f.PatientID)
	var from, to time.Time
	if err == nil {
		from, to, err = parsePeriod(f.From, f.To)
	}
	if err != nil {
		f.Error = err.Error()
		c.render(w, r, rc, http.StatusBadRequest, "patients", "Patients", "patients", lookupView{Form: f})
		return f, from, to, false, nil
	}
	return f, from, to, true, nil
}

// accessRowView is one access on the patient page, its cells formatted
// here (a page can list thousands; the template only places them).
type accessRowView struct {
	Local, Who, Role, Dept, Action, BreakGlassReason, Explanation, Flags string
	BreakGlass, Explained                                                bool
}

// accessRowsHTML writes the accesses table's rows without html/template,
// whose reflective escaping costs tens of µs a row (a chart can have
// thousands of accesses; BenchmarkPatientPage). Every value is text,
// escaped with html.EscapeString; no attribute takes a value.
func accessRowsHTML(rows []accessRowView) template.HTML {
	var b strings.Builder
	b.Grow(len(rows) * 300)
	e := html.EscapeString
	for i := range rows {
		r := &rows[i]
		if r.BreakGlass {
			b.WriteString(`<tr class="row-bg"><td>`)
		} else {
			b.WriteString(`<tr><td>`)
		}
		for j, v := range []string{r.Local, r.Who, r.Role, r.Dept, r.Action} {
			if j > 0 {
				b.WriteString(`</td><td>`)
			}
			b.WriteString(e(v))
		}
		b.WriteString(`</td><td>`)
		if r.BreakGlass {
			b.WriteString(`<strong class="bad">yes</strong>`)
			if r.BreakGlassReason != "" {
				b.WriteString(": ")
				b.WriteString(e(r.BreakGlassReason))
			}
		} else {
			b.WriteString("no")
		}
		b.WriteString(`</td><td>`)
		if r.Explained {
			b.WriteString("yes — ")
			b.WriteString(e(r.Explanation))
		} else {
			b.WriteString(`<strong class="bad">no</strong>`)
		}
		b.WriteString(`</td><td>`)
		b.WriteString(e(r.Flags))
		b.WriteString("</td></tr>\n")
	}
	return template.HTML(b.String()) //nolint:gosec // every value above is escaped
}

func (c *Console) accessRow(row triage.AccessRow) accessRowView {
	v := accessRowView{Local: c.localTime(row), Who: row.UserName, Role: row.UserRole, Dept: row.UserDepartment,
		Action: row.Action, BreakGlass: row.BreakGlass, BreakGlassReason: row.BreakGlassReason, Explained: row.Care.Explained}
	if v.Who == "" {
		v.Who = row.UserID
	}
	if v.Explained {
		v.Explanation = row.Care.Explanation()
	}
	for i, f := range row.Findings {
		if i > 0 {
			v.Flags += ", "
		}
		v.Flags += labelOf(f.Detector)
		if f.Suppressed {
			v.Flags += " (suppressed)"
		}
	}
	return v
}

// cell is one square of a timeline or heat map: its class (colour) and its
// text (for screen readers and the title).
type cell struct {
	Class, Label, Text string
}

type userTimeline struct {
	triage.UserAccessSummary
	UserLink string
	Cells    []cell
	ByText   string
}

// patientView is the patient page.
type patientView struct {
	Form    periodForm
	Summary triage.AccessSummary
	Users   []userTimeline
	Rows    []accessRowView
	// RowsHTML is Rows as table rows (accessRowsHTML).
	RowsHTML   template.HTML
	Truncated  bool
	Warning    string
	DayLabels  []string
	FirstDay   string
	LastDay    string
	TotalUsers int
}

func (c *Console) handlePatient(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f, from, to, ok, err := c.patientForm(w, r, rc)
	if err != nil || !ok {
		return err
	}
	return c.showPatient(w, r, rc, f, from, to)
}

func (c *Console) handlePatientHandle(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ok := c.handles.resolve(r.PathValue("handle"), rc.principal.Name, c.now())
	if !ok {
		return &pageError{Status: http.StatusNotFound, Title: "Link expired",
			Msg: "This patient link has expired or was made for someone else. Look the patient up again on the Patients page."}
	}
	f := periodForm{PatientID: id, From: r.URL.Query().Get("from"), To: r.URL.Query().Get("to")}
	if f.From == "" && f.To == "" {
		f.From, f.To = c.defaultPeriod()
	}
	from, to, err := parsePeriod(f.From, f.To)
	if err != nil {
		return err
	}
	return c.showPatient(w, r, rc, f, from, to)
}

// patientReport runs the report behind the patient page, its export and
// its print view, and audits it as view ("page", "csv", "print"): no
// report is returned unaudited.
func (c *Console) patientReport(r *http.Request, rc *reqCtx, patientID string, from, to time.Time, view string) (triage.Report, error) {
	rep, err := c.invs.ReportAll(r.Context(), triage.ReportQuery{Kind: triage.PatientAccess, SubjectID: patientID, From: from, To: to, Limit: maxPageRows})
	if err != nil {
		return triage.Report{}, err
	}
	if err := c.auditReport(r, rc, &rep, view); err != nil {
		return triage.Report{}, err
	}
	return rep, nil
}

func (c *Console) auditReport(r *http.Request, rc *reqCtx, rep *triage.Report, view string) error {
	ev := api.AuditEvent{Rows: len(rep.Rows), Patients: rep.Patients(),
		Params: map[string]string{"from": rep.From.Format(time.RFC3339), "to": rep.To.Format(time.RFC3339), "view": view}}
	if rep.Kind == triage.PatientAccess {
		ev.PatientID = rep.SubjectID
		if len(ev.Patients) == 0 {
			ev.Patients = []string{rep.SubjectID}
		}
	} else {
		ev.UserID = rep.SubjectID
	}
	return c.audit(r, rc, ev)
}

func (c *Console) showPatient(w http.ResponseWriter, r *http.Request, rc *reqCtx, f periodForm, from, to time.Time) error {
	rep, err := c.patientReport(r, rc, f.PatientID, from, to, "page")
	if err != nil {
		return err
	}
	v := patientView{Form: f, Summary: rep.Summarize(), Truncated: rep.NextCursor != ""}
	if len(rep.Warnings) > 0 {
		v.Warning = rep.Warnings[0]
	}
	v.TotalUsers = len(v.Summary.Users)
	v.FirstDay = v.Summary.DayStart.Format(time.DateOnly)
	v.LastDay = v.Summary.DayStart.AddDate(0, 0, v.Summary.NumDays-1).Format(time.DateOnly)
	q := url.Values{"from": {f.From}, "to": {f.To}}.Encode()
	for _, u := range v.Summary.Users {
		t := userTimeline{UserAccessSummary: u, UserLink: "/users/" + pathEscape(u.UserID) + "?" + q}
		t.ByText = byText(u.By)
		for i, d := range u.Days {
			day := v.Summary.DayStart.AddDate(0, 0, i).Format(time.DateOnly)
			cl := cell{Class: "tl-none", Text: day + ": no access"}
			switch {
			case d.Unexplained > 0:
				cl.Class = "tl-unexplained"
				cl.Text = fmt.Sprintf("%s: %d unexplained, %d explained", day, d.Unexplained, d.Explained)
			case d.Explained > 0:
				cl.Class = "tl-explained"
				cl.Text = fmt.Sprintf("%s: %d explained", day, d.Explained)
			}
			if d.BreakGlass {
				cl.Class += " tl-bg"
				cl.Text += ", break-glass"
				cl.Label = "!"
			}
			t.Cells = append(t.Cells, cl)
		}
		v.Users = append(v.Users, t)
	}
	v.Rows = make([]accessRowView, 0, len(rep.Rows))
	for _, row := range rep.Rows {
		v.Rows = append(v.Rows, c.accessRow(row))
	}
	v.RowsHTML = accessRowsHTML(v.Rows)
	c.render(w, r, rc, http.StatusOK, "patient", "Patient access", "patients", v)
	return nil
}

// localTime is the access time in the facility's zone (UTC when unknown),
// with the zone's abbreviation.
func (c *Console) localTime(row triage.AccessRow) string {
	return row.Time.In(c.deps.Store.Location(row.FacilityID)).Format("2006-01-02 15:04 MST")
}

func byText(by map[string]int) string {
	var b bytes.Buffer
	for _, k := range []string{"care_team", "department", "unexplained"} {
		if n := by[k]; n > 0 {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(strconv.Itoa(n) + " " + labelOf(k))
		}
	}
	return b.String()
}

func (c *Console) handlePatientCSV(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f, from, to, ok, err := c.patientForm(w, r, rc)
	if err != nil || !ok {
		return err
	}
	rep, err := c.patientReport(r, rc, f.PatientID, from, to, "csv")
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	if err := triage.WriteCSV(&buf, rep.Rows); err != nil {
		return err
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, triage.ReportFilename(triage.PatientAccess, from, to, "csv")))
	w.WriteHeader(http.StatusOK)
	_, _ = buf.WriteTo(w)
	return nil
}

// disclosuresView is the printable accounting of disclosures.
type disclosuresView struct {
	Form        periodForm
	Rows        []disclosureRow
	GeneratedAt time.Time
	GeneratedBy string
	Truncated   bool
	Warning     string
}

type disclosureRow struct {
	triage.Disclosure
	Local string
}

func (c *Console) handlePatientPrint(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f, from, to, ok, err := c.patientForm(w, r, rc)
	if err != nil || !ok {
		return err
	}
	rep, err := c.patientReport(r, rc, f.PatientID, from, to, "print")
	if err != nil {
		return err
	}
	v := disclosuresView{Form: f, GeneratedAt: rep.GeneratedAt, GeneratedBy: rc.principal.Name, Truncated: rep.NextCursor != ""}
	if len(rep.Warnings) > 0 {
		v.Warning = rep.Warnings[0]
	}
	for i, d := range rep.Disclosures() {
		v.Rows = append(v.Rows, disclosureRow{Disclosure: d, Local: c.localTime(rep.Rows[i])})
	}
	c.render(w, r, rc, http.StatusOK, "disclosures", "Accounting of disclosures", "patients", v)
	return nil
}
