package console

import (
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// queueFilter is the queue's query string: status, severity, detector,
// facility, department, assignee, age. No patient identifier is ever one
// of them.
type queueFilter struct {
	Status     string // open (default), new, triaged, closed, all
	Severity   string // minimum severity
	Detector   string
	Facility   string
	Department string
	Assignee   string // "" anyone, "me", "none", or a name
	Age        string // minimum age: "", 1h, 4h, 24h, 168h
}

var (
	statusChoices = []string{"open", "new", "triaged", "closed", "all"}
	ageChoices    = []struct{ Value, Label string }{{"", "any age"}, {"1h", "older than 1 hour"}, {"4h", "older than 4 hours"},
		{"24h", "older than 1 day"}, {"168h", "older than 7 days"}}
	severityChoices = []string{"info", "low", "medium", "high", "critical"}
)

var queueParams = []string{"status", "severity", "detector", "facility", "department", "assignee", "age"}

// parseQueueFilter reads and checks the filter from a query string.
func parseQueueFilter(q url.Values) (queueFilter, error) {
	for k, vs := range q {
		if !slices.Contains(queueParams, k) && k != "since" {
			return queueFilter{}, &pageError{Status: http.StatusBadRequest, Title: "Bad filter", Msg: "Unknown filter parameter."}
		}
		if len(vs) > 1 {
			return queueFilter{}, &pageError{Status: http.StatusBadRequest, Title: "Bad filter", Msg: "A filter is given twice."}
		}
	}
	f := queueFilter{
		Status: q.Get("status"), Severity: q.Get("severity"), Detector: strings.TrimSpace(q.Get("detector")),
		Facility: strings.TrimSpace(q.Get("facility")), Department: strings.TrimSpace(q.Get("department")),
		Assignee: strings.TrimSpace(q.Get("assignee")), Age: q.Get("age"),
	}
	if f.Status == "" {
		f.Status = "open"
	}
	bad := func(field, msg string) error {
		return &pageError{Status: http.StatusBadRequest, Title: "Bad filter", Msg: field + ": " + msg}
	}
	if !slices.Contains(statusChoices, f.Status) {
		return f, bad("status", "must be one of "+strings.Join(statusChoices, ", "))
	}
	if f.Severity != "" && !slices.Contains(severityChoices, f.Severity) {
		return f, bad("severity", "must be one of "+strings.Join(severityChoices, ", "))
	}
	if f.Age != "" && !slices.ContainsFunc(ageChoices, func(a struct{ Value, Label string }) bool { return a.Value == f.Age }) {
		return f, bad("age", "must be one of 1h, 4h, 24h, 168h")
	}
	for _, v := range []struct{ k, v string }{{"detector", f.Detector}, {"facility", f.Facility}, {"department", f.Department}, {"assignee", f.Assignee}} {
		if v.v != "" {
			if err := triage.CheckID(v.k, v.v); err != nil {
				return f, err
			}
		}
	}
	return f, nil
}

// query renders the filter as a query string (empty values left out).
func (f queueFilter) query() url.Values {
	q := url.Values{}
	for _, kv := range [][2]string{{"status", f.Status}, {"severity", f.Severity}, {"detector", f.Detector},
		{"facility", f.Facility}, {"department", f.Department}, {"assignee", f.Assignee}, {"age", f.Age}} {
		if kv[1] != "" && !(kv[0] == "status" && kv[1] == "open") {
			q.Set(kv[0], kv[1])
		}
	}
	return q
}

// URL is the queue's address with this filter.
func (f queueFilter) URL() string {
	if q := f.query().Encode(); q != "" {
		return "/queue?" + q
	}
	return "/queue"
}

// params are the filter values for the audit row.
func (f queueFilter) params() map[string]string {
	m := map[string]string{}
	for k, vs := range f.query() {
		m[k] = vs[0]
	}
	return m
}

// store translates the filter for the store.
func (f queueFilter) store(me string, now time.Time) triage.AlertFilter {
	tf := triage.AlertFilter{MinSeverity: schemas.Severity(f.Severity), Detector: f.Detector, FacilityID: f.Facility,
		Department: f.Department, Order: triage.OrderRisk}
	switch f.Status {
	case "open":
		tf.Statuses = []triage.Status{triage.StatusNew, triage.StatusTriaged}
	case "all":
	default:
		tf.Status = triage.Status(f.Status)
	}
	switch f.Assignee {
	case "":
	case "me":
		tf.Assignee = me
	case "none":
		tf.Unassigned = true
	default:
		tf.Assignee = f.Assignee
	}
	if f.Age != "" {
		d, _ := time.ParseDuration(f.Age)
		tf.SeenBefore = now.Add(-d)
	}
	return tf
}

// queueRow is one alert on the queue, flat and pre-formatted: the
// template only copies strings (a row of 10 000 must stay cheap).
type queueRow struct {
	ID, Href, AssignHref                    string
	Severity, Detector, User, Facility      string
	Explanation, Status, Assignee, Age, SLA string
	Score                                   uint8
	Version                                 uint64
	PastSLA, CanAssign                      bool
}

// queueView is the queue page.
type queueView struct {
	Filter    queueFilter
	Counts    triage.AlertCounts
	Matching  int
	Rows      []queueRow
	Limited   bool
	Me        string
	CanTriage bool
	// CanCases offers "open a case with the selected" (cases:write).
	CanCases     bool
	Since        int64
	Refresh      int
	PollURL      string
	Statuses     []string
	Severities   []string
	Ages         []struct{ Value, Label string }
	Dispositions []triage.Disposition
	Return       string
	// RowsHTML and FormsHTML are the rendered rows (queueRowsHTML).
	RowsHTML, FormsHTML template.HTML
}

func (c *Console) handleQueue(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	f, err := parseQueueFilter(r.URL.Query())
	if err != nil {
		return err
	}
	now := c.now()
	me := rc.principal.Name
	tf := f.store(me, now)
	counts, err := c.deps.Store.CountAlerts(r.Context(), tf)
	if err != nil {
		return err
	}
	tf.Limit = c.cfg.QueueLimit
	page, err := c.deps.Store.ListAlerts(r.Context(), tf)
	if err != nil {
		return err
	}
	v := queueView{Filter: f, Counts: counts, Me: me, CanTriage: rc.principal.Can(api.PermAlertsTriage), CanCases: rc.principal.Can(api.PermCases),
		Since: now.UnixMilli(), Refresh: int(c.cfg.QueueRefresh / time.Second), Statuses: statusChoices,
		Severities: severityChoices, Ages: ageChoices, Dispositions: triage.Dispositions, Return: f.URL()}
	switch f.Status {
	case "open":
		v.Matching = counts.Open()
	case "new":
		v.Matching = counts.New
	case "triaged":
		v.Matching = counts.Triaged
	case "closed":
		v.Matching = counts.Closed
	default:
		v.Matching = counts.Open() + counts.Closed
	}
	v.Limited = len(page.Alerts) < v.Matching
	var patients []string
	v.Rows = make([]queueRow, 0, len(page.Alerts))
	for _, a := range page.Alerts {
		age := now.Sub(a.FirstSeen)
		sla := c.cfg.SLAFor(a.Severity)
		href := "/alerts/" + pathEscape(a.AlertID)
		v.Rows = append(v.Rows, queueRow{ID: a.AlertID, Href: href, AssignHref: href + "/assign-to-me",
			Severity: a.Severity, Detector: labelOf(a.Detector), User: a.UserID, Facility: a.FacilityID,
			Explanation: a.Explanation, Status: string(a.Triage.Status), Assignee: a.Triage.Assignee,
			Age: humanAge(age), SLA: humanAge(sla), Score: a.Score, Version: a.Triage.Version,
			PastSLA:   a.Triage.Status != triage.StatusClosed && age > sla,
			CanAssign: v.CanTriage && a.Triage.Status != triage.StatusClosed && a.Triage.Assignee != me})
		if a.PatientID != "" {
			patients = append(patients, a.PatientID)
		}
	}
	v.RowsHTML, v.FormsHTML = queueRowsHTML(&v)
	pq := f.query()
	pq.Set("since", strconv.FormatInt(v.Since, 10))
	v.PollURL = "/queue/new?" + pq.Encode()
	slices.Sort(patients)
	if err := c.audit(r, rc, api.AuditEvent{Params: f.params(), Rows: len(v.Rows), Patients: slices.Compact(patients)}); err != nil {
		return err
	}
	c.render(w, r, rc, http.StatusOK, "queue", "Alert queue", "queue", v)
	return nil
}

// newAlertsView is the polled banner.
type newAlertsView struct {
	Count   int
	PollURL string
	Refresh int
	Reload  string
}

// handleQueueNew answers the queue's poll: how many alerts matching the
// filter were created or grew since the page was rendered. It shows counts
// only (no patient-level data), so it writes no audit row.
func (c *Console) handleQueueNew(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := r.URL.Query()
	f, err := parseQueueFilter(q)
	if err != nil {
		return err
	}
	ms, err := strconv.ParseInt(q.Get("since"), 10, 64)
	if err != nil || ms <= 0 {
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "since: want a time in Unix milliseconds"}
	}
	tf := f.store(rc.principal.Name, c.now())
	tf.ChangedSince = time.UnixMilli(ms)
	counts, err := c.deps.Store.CountAlerts(r.Context(), tf)
	if err != nil {
		return err
	}
	n := counts.Open()
	switch f.Status {
	case "new":
		n = counts.New
	case "triaged":
		n = counts.Triaged
	case "closed":
		n = counts.Closed
	case "all":
		n += counts.Closed
	}
	c.render(w, r, rc, http.StatusOK, "queue_new", "New alerts", "queue",
		newAlertsView{Count: n, PollURL: r.URL.RequestURI(), Refresh: int(c.cfg.QueueRefresh / time.Second), Reload: f.URL()})
	return nil
}

// bulkResult is the outcome for one alert of a bulk action.
type bulkResult struct {
	AlertID  string
	OK       bool
	Outcome  string
	Conflict *conflictView
}

type bulkView struct {
	Action  string
	Results []bulkResult
	Done    int
	Return  string
}

// handleBulk assigns or closes the selected alerts, each with the version
// the analyst saw; an alert changed meanwhile is reported with the other
// person's change and left alone.
func (c *Console) handleBulk(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := c.parseForm(w, r); err != nil {
		return err
	}
	ids := r.PostForm["alert"]
	ret := safeReturn(r.PostForm.Get("return"), "/queue")
	if len(ids) == 0 {
		return &pageError{Status: http.StatusBadRequest, Title: "Nothing selected", Msg: "Select at least one alert."}
	}
	if len(ids) > c.cfg.QueueLimit {
		return &pageError{Status: http.StatusBadRequest, Title: "Too many alerts", Msg: fmt.Sprintf("At most %d alerts at once.", c.cfg.QueueLimit)}
	}
	action := r.PostForm.Get("action")
	var ch triage.Change
	switch action {
	case "assign":
		who := strings.TrimSpace(r.PostForm.Get("assignee"))
		if who == "" {
			who = rc.principal.Name
		}
		ch.Assignee = &who
	case "close":
		d := triage.Disposition(r.PostForm.Get("disposition"))
		if !d.Valid() {
			return &pageError{Status: http.StatusBadRequest, Title: "Disposition required",
				Msg: "Choose a disposition to close alerts with."}
		}
		st := triage.StatusClosed
		ch.Status, ch.Disposition = &st, &d
	default:
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "action: must be assign or close"}
	}
	ch.Note = noteChange(r.PostForm.Get("note"))
	actor := rc.principal.Actor()
	v := bulkView{Action: action, Return: ret}
	for _, id := range ids {
		res := bulkResult{AlertID: id}
		if err := triage.CheckID("alert", id); err != nil {
			res.Outcome = "not an alert id"
			v.Results = append(v.Results, res)
			continue
		}
		ver, err := strconv.ParseUint(r.PostForm.Get("version."+id), 10, 64)
		if err != nil {
			res.Outcome = "no version given for this alert; reload the queue"
			v.Results = append(v.Results, res)
			continue
		}
		one := ch
		one.ExpectedVersion = ver
		st, err := c.deps.Store.Update(r.Context(), id, one, actor)
		var ce *triage.ConflictError
		var ve *triage.ValidationError
		switch {
		case err == nil:
			res.OK = true
			res.Outcome = fmt.Sprintf("%s (version %d)", describeState(st), st.Version)
			v.Done++
		case errors.As(err, &ce):
			res.Conflict = c.conflict(r, id, ce)
			res.Outcome = "changed by someone else first; left as it is"
		case errors.As(err, &ve):
			res.Outcome = ve.Error()
		case errors.Is(err, triage.ErrNotFound):
			res.Outcome = "no such alert"
		case errors.Is(err, triage.ErrForbidden):
			res.Outcome = "not allowed: " + triage.ForbiddenReason(err)
		default:
			return err
		}
		v.Results = append(v.Results, res)
	}
	c.render(w, r, rc, http.StatusOK, "bulk", "Bulk "+action, "queue", v)
	return nil
}

// handleAssignToMe assigns an alert to the caller (and marks a new alert
// triaged: someone picked it up), then goes back where the form came from.
func (c *Console) handleAssignToMe(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ver, err := c.alertPost(w, r, func(id string) string { return "version." + id })
	if err != nil {
		return err
	}
	cur, err := c.currentStatus(r, id, ver)
	if err != nil {
		return err
	}
	me := rc.principal.Name
	ch := triage.Change{ExpectedVersion: ver, Assignee: &me}
	if cur == triage.StatusNew {
		st := triage.StatusTriaged
		ch.Status = &st
	}
	_, err = c.deps.Store.Update(r.Context(), id, ch, rc.principal.Actor())
	var ce *triage.ConflictError
	if errors.As(err, &ce) {
		return c.showAlert(w, r, rc, id, http.StatusConflict, &alertForm{Conflict: c.conflict(r, id, ce)})
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, safeReturn(r.PostForm.Get("return"), "/alerts/"+pathEscape(id)), http.StatusSeeOther)
	return nil
}

// currentStatus is the status at version ver (from the history; new at 0).
func (c *Console) currentStatus(r *http.Request, id string, ver uint64) (triage.Status, error) {
	if ver == 0 {
		return triage.StatusNew, nil
	}
	hist, err := c.deps.Store.History(r.Context(), id)
	if err != nil {
		return "", err
	}
	for _, h := range hist {
		if h.Version == ver {
			return h.Status, nil
		}
	}
	return "", nil
}

// parseForm reads a bounded url-encoded form.
func (c *Console) parseForm(w http.ResponseWriter, r *http.Request) error {
	r.Body = http.MaxBytesReader(w, r.Body, 1<<20)
	if err := r.ParseForm(); err != nil {
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "The form could not be read."}
	}
	return nil
}

// safeReturn accepts only the console's own queue and alert pages as
// where to go back to (no open redirect).
func safeReturn(ret, def string) string {
	if (ret == "/queue" || strings.HasPrefix(ret, "/queue?") || strings.HasPrefix(ret, "/alerts/")) &&
		!strings.ContainsAny(ret, "\\\r\n") && !strings.HasPrefix(ret, "//") {
		return ret
	}
	return def
}

func describeState(st triage.State) string {
	s := string(st.Status)
	if st.Assignee != "" {
		s += ", assigned to " + st.Assignee
	}
	if st.Disposition != "" {
		s += ", " + labelOf(st.Disposition)
	}
	return s
}
