package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// casesView is the case list.
type casesView struct {
	Cases    []triage.Case
	Status   string
	Statuses []triage.CaseStatus
	// Form is the new-case form re-offered after a refusal.
	Title, AlertIDs, Error string
}

func (c *Console) handleCases(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	status := r.URL.Query().Get("status")
	if status != "" && !triage.CaseStatus(status).Valid() {
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "status must be open, investigating or closed."}
	}
	v := casesView{Status: status, Statuses: triage.CaseStatuses, AlertIDs: r.URL.Query().Get("alert_ids")}
	page, err := c.invs.ListCases(r.Context(), triage.CaseFilter{Status: triage.CaseStatus(status), Limit: 500})
	if err != nil {
		return err
	}
	v.Cases = page.Cases
	c.render(w, r, rc, http.StatusOK, "cases", "Cases", "cases", v)
	return nil
}

// splitIDs splits a list of ids typed or submitted as separate values,
// by commas, spaces or newlines.
func splitIDs(vals []string) []string {
	var out []string
	for _, v := range vals {
		for _, f := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\r' || r == '\t' }) {
			out = append(out, f)
		}
	}
	return out
}

func (c *Console) handleCreateCase(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := c.parseForm(w, r); err != nil {
		return err
	}
	title := r.PostForm.Get("title")
	ids := splitIDs(r.PostForm["alert_id"])
	cs, err := c.invs.CreateCase(r.Context(), title, ids, rc.principal.Actor())
	var ve *triage.ValidationError
	if errors.As(err, &ve) {
		page, lerr := c.invs.ListCases(r.Context(), triage.CaseFilter{Limit: 500})
		if lerr != nil {
			return lerr
		}
		c.render(w, r, rc, http.StatusBadRequest, "cases", "Cases", "cases", casesView{Cases: page.Cases, Statuses: triage.CaseStatuses,
			Title: title, AlertIDs: strings.Join(ids, ", "), Error: ve.Error()})
		return nil
	}
	if err != nil {
		return err
	}
	http.Redirect(w, r, "/cases/"+pathEscape(cs.CaseID), http.StatusSeeOther)
	return nil
}

// handleCaseFromSelection takes the alerts selected on the queue to the
// new-case form (prefilled; the caller still names the case).
func (c *Console) handleCaseFromSelection(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := c.parseForm(w, r); err != nil {
		return err
	}
	ids := splitIDs(r.PostForm["alert"])
	if len(ids) == 0 {
		return &pageError{Status: http.StatusBadRequest, Title: "Nothing selected", Msg: "Select the alerts to group on the queue first."}
	}
	for _, id := range ids {
		if err := triage.CheckID("alert", id); err != nil {
			return err
		}
	}
	http.Redirect(w, r, "/cases?"+url.Values{"alert_ids": {strings.Join(ids, ",")}}.Encode()+"#new-case-h", http.StatusSeeOther)
	return nil
}

// caseForm is what the caller submitted, re-offered after a conflict or a
// refused change.
type caseForm struct {
	Status, Assignee, Outcome, Note, Title, AddAlerts string
	Error                                             string
	Conflict                                          *triage.CaseConflictError
}

// caseLine is one change of a case with what it did, in words.
type caseLine struct {
	triage.CaseChange
	Text string
}

func caseLines(chs []triage.CaseChange) []caseLine {
	out := make([]caseLine, len(chs))
	for i, ch := range chs {
		out[i] = caseLine{CaseChange: ch, Text: caseChangeText(ch)}
	}
	return out
}

// caseView is the case page.
type caseView struct {
	Case        triage.Case
	Alerts      []triage.Alert
	History     []caseLine
	Missed      []caseLine
	Transitions []triage.CaseStatus
	Outcomes    []triage.CaseOutcome
	Form        caseForm
	Me          string
}

func (c *Console) handleCase(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return c.showCase(w, r, rc, r.PathValue("case_id"), http.StatusOK, nil)
}

// showCase renders the case page (with the form re-offered) and audits
// it: the case's alerts name patients.
func (c *Console) showCase(w http.ResponseWriter, r *http.Request, rc *reqCtx, id string, status int, form *caseForm) error {
	if err := triage.CheckID("case_id", id); err != nil {
		return err
	}
	ctx := r.Context()
	cs, err := c.invs.Case(ctx, id)
	if errors.Is(err, triage.ErrNotFound) {
		return &pageError{Status: http.StatusNotFound, Title: "Not found", Msg: "No case has this id."}
	}
	if err != nil {
		return err
	}
	alerts, err := c.invs.AlertsByID(ctx, cs.AlertIDs)
	if err != nil {
		return err
	}
	hist, err := c.invs.CaseHistory(ctx, id)
	if err != nil {
		return err
	}
	v := caseView{Case: cs, Alerts: alerts, History: caseLines(hist), Outcomes: triage.CaseOutcomes, Me: rc.principal.Name}
	for _, to := range triage.CaseStatuses {
		if to == cs.Status || !caseTransitionAllowed(cs.Status, to) {
			continue
		}
		if cs.Status == triage.CaseClosed && !rc.principal.Can(api.PermAlertsReopen) {
			continue
		}
		v.Transitions = append(v.Transitions, to)
	}
	if form != nil {
		v.Form = *form
		if form.Conflict != nil {
			v.Missed = caseLines(form.Conflict.Changes)
		}
	}
	var patients []string
	for _, a := range alerts {
		if a.PatientID != "" {
			patients = append(patients, a.PatientID)
		}
	}
	slices.Sort(patients)
	patients = slices.Compact(patients)
	if err := c.audit(r, rc, api.AuditEvent{Rows: len(alerts), Patients: patients, Params: map[string]string{"case_id": id}}); err != nil {
		return err
	}
	c.render(w, r, rc, status, "case", "Case "+cs.Title, "cases", v)
	return nil
}

func caseTransitionAllowed(from, to triage.CaseStatus) bool {
	switch {
	case from == triage.CaseOpen && (to == triage.CaseInvestigating || to == triage.CaseClosed):
		return true
	case from == triage.CaseInvestigating && to == triage.CaseClosed:
		return true
	case from == triage.CaseClosed && to == triage.CaseInvestigating:
		return true
	}
	return false
}

// caseVersion reads the version the form was rendered at.
// casePost reads a case form's POST: the case id of the path and the case
// version the form was made from.
func (c *Console) casePost(w http.ResponseWriter, r *http.Request) (id string, version uint64, err error) {
	id = r.PathValue("case_id")
	if err := c.parseForm(w, r); err != nil {
		return "", 0, err
	}
	v, err := strconv.ParseUint(r.PostForm.Get("version"), 10, 64)
	if err != nil {
		return "", 0, &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "The form lacks the case version it was made from; reload the case."}
	}
	return id, v, nil
}

// caseResult turns the outcome of a change into a redirect, or re-offers
// the form with the conflict or the refusal.
func (c *Console) caseResult(w http.ResponseWriter, r *http.Request, rc *reqCtx, id string, form caseForm, err error) error {
	var ce *triage.CaseConflictError
	var ve *triage.ValidationError
	switch {
	case err == nil:
		http.Redirect(w, r, "/cases/"+pathEscape(id), http.StatusSeeOther)
		return nil
	case errors.As(err, &ce):
		form.Conflict = ce
		return c.showCase(w, r, rc, id, http.StatusConflict, &form)
	case errors.As(err, &ve):
		form.Error = ve.Error()
		return c.showCase(w, r, rc, id, http.StatusBadRequest, &form)
	case errors.Is(err, triage.ErrNotFound):
		return &pageError{Status: http.StatusNotFound, Title: "Not found", Msg: "No case has this id."}
	}
	return err
}

func (c *Console) handleCaseUpdate(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ver, err := c.casePost(w, r)
	if err != nil {
		return err
	}
	f := r.PostForm
	form := caseForm{Status: f.Get("status"), Assignee: f.Get("assignee"), Outcome: f.Get("outcome"), Note: f.Get("note"), Title: f.Get("title")}
	u := triage.CaseUpdate{ExpectedVersion: ver}
	cur, err := c.invs.Case(r.Context(), id)
	if err != nil {
		return c.caseResult(w, r, rc, id, form, err)
	}
	if form.Status != "" && form.Status != string(cur.Status) {
		st := triage.CaseStatus(form.Status)
		u.Status = &st
	}
	if f.Has("assignee") && strings.TrimSpace(form.Assignee) != cur.Assignee {
		a := form.Assignee
		u.Assignee = &a
	}
	u.Outcome = optional[triage.CaseOutcome](form.Outcome)
	u.Note = noteChange(form.Note)
	if f.Has("title") && strings.TrimSpace(form.Title) != cur.Title {
		t := form.Title
		u.Title = &t
	}
	_, err = c.invs.UpdateCase(r.Context(), id, u, rc.principal.Actor())
	return c.caseResult(w, r, rc, id, form, err)
}

func (c *Console) handleCaseAddAlerts(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ver, err := c.casePost(w, r)
	if err != nil {
		return err
	}
	ids := splitIDs(r.PostForm["alert_id"])
	form := caseForm{AddAlerts: strings.Join(ids, ", "), Note: r.PostForm.Get("note")}
	_, err = c.invs.AddAlerts(r.Context(), id, ids, ver, strings.TrimSpace(form.Note), rc.principal.Actor())
	return c.caseResult(w, r, rc, id, form, err)
}

func (c *Console) handleCaseRemoveAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, ver, err := c.casePost(w, r)
	if err != nil {
		return err
	}
	_, err = c.invs.RemoveAlert(r.Context(), id, r.PostForm.Get("alert_id"), ver, "", rc.principal.Actor())
	return c.caseResult(w, r, rc, id, caseForm{}, err)
}

// caseChangeText says what one case change did.
func caseChangeText(ch triage.CaseChange) string {
	switch ch.Action {
	case triage.CaseCreated:
		return "opened the case with " + strconv.Itoa(len(ch.Added)) + " alert(s): " + strings.Join(ch.Added, ", ")
	case triage.CaseAlertsAdded:
		return "added " + strings.Join(ch.Added, ", ")
	case triage.CaseAlertRemoved:
		return "removed " + strings.Join(ch.Removed, ", ")
	}
	s := "set status " + string(ch.Status)
	if ch.Outcome != "" {
		s += " (" + labelOf(ch.Outcome) + ")"
	}
	if ch.Assignee != "" {
		s += ", assignee " + ch.Assignee
	} else {
		s += ", unassigned"
	}
	return s
}
