package console

import (
	"errors"
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

// eventRow is one access behind an alert.
type eventRow struct {
	triage.Event
	Local string
}

// evidenceBar is one value of a finding's evidence chart.
type evidenceBar struct {
	Label string
	Value float64
}

// findingView is a finding with its evidence.
type findingView struct {
	schemas.Finding
	Bars []evidenceBar
	// ChartLabels and ChartValues feed the chart script (data attributes).
	ChartLabels, ChartValues string
	Facts                    []evidenceBar // Label = name, Value unused
	FactText                 []string
}

// conflictView is someone else's change that beat the caller's.
type conflictView struct {
	Expected, Current uint64
	Changes           []triage.State
}

// alertForm is what the caller submitted (re-offered after a conflict or a
// refused change).
type alertForm struct {
	Status, Assignee, Disposition, Note string
	// KeepAssignee: the caller left the assignee as it was, so the form
	// re-offers the current one (not the one they saw, which would undo
	// someone else's reassignment on resubmit).
	KeepAssignee bool
	Error        string
	Conflict     *conflictView
}

// alertView is the alert page.
type alertView struct {
	D              triage.AlertDetail
	Zone           string
	Findings       []findingView
	Events         []eventRow
	WouldExplain   []string
	History        []triage.State
	RelatedUser    []triage.Alert
	RelatedPatient []triage.Alert
	Transitions    []triage.Status
	Dispositions   []triage.Disposition
	CanTriage      bool
	Form           alertForm
	Me             string
	SLA            time.Duration
	Age            time.Duration
	PastSLA        bool
	// PatientLink opens the patient's page through an opaque handle, for
	// callers with the reports permission; CaseLink opens a case over this
	// alert, for callers with the cases permission.
	PatientLink, CaseLink string
}

func (c *Console) handleAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("alert_id")
	if err := triage.CheckID("alert_id", id); err != nil {
		return err
	}
	return c.showAlert(w, r, rc, id, http.StatusOK, nil)
}

// showAlert renders the alert page (with form, when re-offering it) and
// audits it.
func (c *Console) showAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx, id string, status int, form *alertForm) error {
	ctx := r.Context()
	d, err := c.deps.Store.AlertDetail(ctx, id)
	if err != nil {
		return err
	}
	hist, err := c.deps.Store.History(ctx, id)
	if err != nil {
		return err
	}
	loc := c.deps.Store.Location(d.FacilityID)
	now := c.now()
	v := alertView{D: d, Zone: loc.String(), History: hist, Dispositions: triage.Dispositions,
		CanTriage: rc.principal.Can(api.PermAlertsTriage), Me: rc.principal.Name,
		SLA: c.cfg.SLAFor(d.Severity), Age: now.Sub(d.FirstSeen)}
	v.PastSLA = d.Triage.Status != triage.StatusClosed && v.Age > v.SLA
	if d.PatientID != "" && rc.principal.Can(api.PermReports) {
		v.PatientLink = c.PatientLink(rc.principal, d.PatientID)
	}
	if rc.principal.Can(api.PermCases) {
		v.CaseLink = "/cases?alert_ids=" + url.QueryEscape(d.AlertID)
	}
	for _, to := range triage.AllowedTransitions()[d.Triage.Status] {
		if d.Triage.Status == triage.StatusClosed && !rc.principal.Can(api.PermAlertsReopen) {
			continue
		}
		v.Transitions = append(v.Transitions, to)
	}
	for _, f := range d.Findings {
		fv := findingView{Finding: f}
		ev := f.Evidence
		if ev.Observed != 0 || ev.Baseline != 0 || ev.PeerValue != 0 {
			fv.Bars = []evidenceBar{{"Observed", ev.Observed}, {"Own baseline", ev.Baseline}, {"Peers", ev.PeerValue}}
			if ev.Threshold != 0 {
				fv.Bars = append(fv.Bars, evidenceBar{"Threshold", ev.Threshold})
			}
			var ls, vs []string
			for _, b := range fv.Bars {
				ls = append(ls, b.Label)
				vs = append(vs, strconv.FormatFloat(b.Value, 'f', -1, 64))
			}
			fv.ChartLabels, fv.ChartValues = strings.Join(ls, "|"), strings.Join(vs, "|")
		}
		keys := make([]string, 0, len(ev.Facts))
		for k := range ev.Facts {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			fv.FactText = append(fv.FactText, labelOf(k)+": "+labelOf(ev.Facts[k]))
		}
		if ev.WouldExplain != "" && !slices.Contains(v.WouldExplain, ev.WouldExplain) {
			v.WouldExplain = append(v.WouldExplain, ev.WouldExplain)
		}
		v.Findings = append(v.Findings, fv)
	}
	for _, e := range d.Events {
		v.Events = append(v.Events, eventRow{Event: e, Local: e.EventTime.In(c.deps.Store.Location(e.FacilityID)).Format("2006-01-02 15:04:05 MST")})
	}
	related := func(f triage.AlertFilter) ([]triage.Alert, error) {
		f.Limit = 21
		page, err := c.deps.Store.ListAlerts(ctx, f)
		if err != nil {
			return nil, err
		}
		var out []triage.Alert
		for _, a := range page.Alerts {
			if a.AlertID != id && len(out) < 20 {
				out = append(out, a)
			}
		}
		return out, nil
	}
	if v.RelatedUser, err = related(triage.AlertFilter{UserID: d.UserID}); err != nil {
		return err
	}
	if d.PatientID != "" {
		if v.RelatedPatient, err = related(triage.AlertFilter{PatientID: d.PatientID}); err != nil {
			return err
		}
	}
	if form != nil {
		v.Form = *form
	}
	if form == nil || form.KeepAssignee {
		v.Form.Assignee = d.Triage.Assignee
	}
	patients := d.PatientIDs()
	for _, a := range append(slices.Clone(v.RelatedUser), v.RelatedPatient...) {
		if a.PatientID != "" {
			patients = append(patients, a.PatientID)
		}
	}
	slices.Sort(patients)
	if err := c.audit(r, rc, api.AuditEvent{AlertID: id, PatientID: d.PatientID, UserID: d.UserID, Status: status,
		Rows: len(d.Events), Patients: slices.Compact(patients)}); err != nil {
		return err
	}
	c.render(w, r, rc, status, "alert", "Alert "+id, "queue", v)
	return nil
}

// conflict describes the changes made after the version the caller saw.
func (c *Console) conflict(r *http.Request, id string, ce *triage.ConflictError) *conflictView {
	cv := &conflictView{Expected: ce.Expected, Current: ce.Current}
	hist, err := c.deps.Store.History(r.Context(), id)
	if err != nil {
		return cv
	}
	for _, h := range hist {
		if h.Version > ce.Expected {
			cv.Changes = append(cv.Changes, h)
		}
	}
	return cv
}

// optional is a form's choice as a change: nil (leave as it is) when the
// field is empty.
func optional[T ~string](v string) *T {
	if v == "" {
		return nil
	}
	t := T(v)
	return &t
}

// noteChange is a form's note as a change: nil when it is blank.
func noteChange(v string) *string {
	if strings.TrimSpace(v) == "" {
		return nil
	}
	return &v
}

// alertPost reads an alert form's POST: the alert id of the path and the
// alert version the analyst saw, from the form field versionField(id).
func (c *Console) alertPost(w http.ResponseWriter, r *http.Request, versionField func(id string) string) (id string, version uint64, err error) {
	id = r.PathValue("alert_id")
	if err := triage.CheckID("alert_id", id); err != nil {
		return "", 0, err
	}
	if err := c.parseForm(w, r); err != nil {
		return "", 0, err
	}
	v, err := strconv.ParseUint(r.PostForm.Get(versionField(id)), 10, 64)
	if err != nil {
		return "", 0, &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "version: the alert version you saw is required"}
	}
	return id, v, nil
}

// handleAlertUpdate applies the alert page's form: status, assignee,
// disposition and note, at the version the analyst saw. A conflict or a
// refused change re-renders the page with the form as submitted.
func (c *Console) handleAlertUpdate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ver, err := c.alertPost(w, r, func(string) string { return "version" })
	if err != nil {
		return err
	}
	pf := r.PostForm
	form := alertForm{Status: pf.Get("status"), Assignee: pf.Get("assignee"), Disposition: pf.Get("disposition"), Note: pf.Get("note")}
	ch := triage.Change{ExpectedVersion: ver}
	ch.Status = optional[triage.Status](form.Status)
	form.KeepAssignee = strings.TrimSpace(form.Assignee) == strings.TrimSpace(pf.Get("assignee_was"))
	if pf.Has("assignee") && !form.KeepAssignee {
		a := strings.TrimSpace(form.Assignee)
		ch.Assignee = &a
	}
	ch.Disposition = optional[triage.Disposition](form.Disposition)
	ch.Note = noteChange(form.Note)
	_, err = c.deps.Store.Update(r.Context(), id, ch, rc.principal.Actor())
	var ce *triage.ConflictError
	var ve *triage.ValidationError
	switch {
	case err == nil:
		http.Redirect(w, r, "/alerts/"+pathEscape(id), http.StatusSeeOther)
		return nil
	case errors.As(err, &ce):
		form.Conflict = c.conflict(r, id, ce)
		return c.showAlert(w, r, rc, id, http.StatusConflict, &form)
	case errors.As(err, &ve):
		form.Error = ve.Error()
		return c.showAlert(w, r, rc, id, http.StatusUnprocessableEntity, &form)
	case errors.Is(err, triage.ErrForbidden):
		form.Error = "Not allowed: " + triage.ForbiddenReason(err)
		return c.showAlert(w, r, rc, id, http.StatusForbidden, &form)
	}
	return err
}

// changeText describes one history entry ("status triaged, assigned to
// alice").
func changeText(h triage.State) string {
	parts := []string{"status " + string(h.Status)}
	if h.Assignee != "" {
		parts = append(parts, "assigned to "+h.Assignee)
	} else {
		parts = append(parts, "unassigned")
	}
	if h.Disposition != "" {
		parts = append(parts, "disposition "+labelOf(h.Disposition))
	}
	return strings.Join(parts, ", ")
}
