package console

import (
	"errors"
	"net/http"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// allowlistForm is the new-entry form, re-offered after a refusal.
type allowlistForm struct {
	UserID, PatientID, Department, Detector, Reason, Owner, ExpiresAt, Note string
	Error                                                                   string
}

// allowlistView is the allowlist editor.
type allowlistView struct {
	Items       []allowlistRow
	History     []triage.AllowlistHistoryRow
	WithRemoved bool
	Form        allowlistForm
	// Notice says what the last change did (after a redirect) or why it
	// was refused (conflict).
	Notice   string
	Conflict *triage.AllowlistConflictError
	// Refresh is how soon the detectors see a change.
	Refresh string
}

// allowlistRow is an entry with its version as the forms send it back.
type allowlistRow struct {
	triage.AllowlistItem
	Version string
}

// AllowlistRefreshNote says when a change reaches the detectors: they
// reload the allowlist every reference.refresh_interval (5 minutes by
// default).
const AllowlistRefreshNote = "the detectors reload the allowlist every reference.refresh_interval (5 minutes by default): a change applies to findings raised after their next reload, and never retroactively"

// AllowlistDemoNote replaces AllowlistRefreshNote on the demo's in-memory
// store: the demo's detectors have finished when the console serves.
const AllowlistDemoNote = "never: this is the demo store, kept in memory after the demo's run ended, so entries added, expired or removed here reach no detector and change no finding"

func (c *Console) handleAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	v := allowlistView{WithRemoved: r.URL.Query().Get("removed") == "1"}
	switch r.URL.Query().Get("done") {
	case "added":
		v.Notice = "Entry added."
	case "expired":
		v.Notice = "Entry expired."
	case "removed":
		v.Notice = "Entry removed."
	}
	v.Form.ExpiresAt = c.now().UTC().AddDate(0, 3, 0).Format(time.DateOnly)
	return c.showAllowlist(w, r, rc, http.StatusOK, v)
}

// showAllowlist renders the editor and audits it: entries may name
// patients.
func (c *Console) showAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx, status int, v allowlistView) error {
	ctx := r.Context()
	items, err := c.invs.ListAllowlist(ctx, v.WithRemoved, 1000)
	if err != nil {
		return err
	}
	for _, it := range items {
		v.Items = append(v.Items, allowlistRow{AllowlistItem: it, Version: it.UpdatedAt.UTC().Format(time.RFC3339Nano)})
	}
	if v.History, err = c.invs.AllowlistHistory(ctx, "", 200); err != nil {
		return err
	}
	patients := triage.AllowlistPatients(items)
	for _, h := range v.History {
		if h.PatientID != "" {
			patients = append(patients, h.PatientID)
		}
	}
	if err := c.audit(r, rc, api.AuditEvent{Rows: len(v.Items) + len(v.History), Patients: uniq(patients),
		Params: map[string]string{"view": "allowlist"}}); err != nil {
		return err
	}
	v.Refresh = AllowlistRefreshNote
	if c.deps.DemoStore {
		v.Refresh = AllowlistDemoNote
	}
	c.render(w, r, rc, status, "allowlist", "Allowlist", "allowlist", v)
	return nil
}

func (c *Console) handleAllowlistAdd(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	if err := c.parseForm(w, r); err != nil {
		return err
	}
	f := r.PostForm
	form := allowlistForm{UserID: f.Get("user_id"), PatientID: f.Get("patient_id"), Department: f.Get("department"),
		Detector: f.Get("detector"), Reason: f.Get("reason"), Owner: f.Get("owner"), ExpiresAt: f.Get("expires_at"), Note: f.Get("note")}
	exp, err := triage.ParseTime("expires_at", form.ExpiresAt)
	var it triage.AllowlistItem
	if err == nil {
		it, err = c.invs.AddAllowlistEntry(r.Context(), schemas.AllowlistEntry{UserID: form.UserID, PatientID: form.PatientID,
			Department: form.Department, Detector: form.Detector, Reason: form.Reason, Owner: form.Owner, ExpiresAt: exp},
			form.Note, rc.principal.Actor())
	}
	var ve *triage.ValidationError
	if errors.As(err, &ve) {
		form.Error = ve.Error()
		return c.showAllowlist(w, r, rc, http.StatusBadRequest, allowlistView{Form: form})
	}
	if err != nil {
		return err
	}
	if err := c.auditChange(r, rc, it, "add"); err != nil {
		return err
	}
	http.Redirect(w, r, "/allowlist?done=added", http.StatusSeeOther)
	return nil
}

// auditChange records an allowlist change in api_audit (the entry may
// name a patient); allowlist_history has the change itself.
func (c *Console) auditChange(r *http.Request, rc *reqCtx, it triage.AllowlistItem, change string) error {
	ev := api.AuditEvent{UserID: it.UserID, PatientID: it.PatientID, Rows: 1,
		Params: map[string]string{"entry_id": it.EntryID, "change": change}}
	if it.PatientID != "" {
		ev.Patients = []string{it.PatientID}
	}
	return c.audit(r, rc, ev)
}

func (c *Console) handleAllowlistExpire(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return c.changeAllowlist(w, r, rc, "expire", "expired")
}

func (c *Console) handleAllowlistRemove(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return c.changeAllowlist(w, r, rc, "remove", "removed")
}

func (c *Console) changeAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx, change, done string) error {
	if err := c.parseForm(w, r); err != nil {
		return err
	}
	id := r.PathValue("entry_id")
	expected, err := time.Parse(time.RFC3339Nano, r.PostForm.Get("updated_at"))
	if err != nil {
		return &pageError{Status: http.StatusBadRequest, Title: "Bad request", Msg: "The form lacks the entry version it was made from; reload the allowlist."}
	}
	note := r.PostForm.Get("note")
	var it triage.AllowlistItem
	if change == "expire" {
		it, err = c.invs.ExpireAllowlistEntry(r.Context(), id, expected, note, rc.principal.Actor())
	} else {
		it, err = c.invs.RemoveAllowlistEntry(r.Context(), id, expected, note, rc.principal.Actor())
	}
	var ce *triage.AllowlistConflictError
	var ve *triage.ValidationError
	switch {
	case errors.As(err, &ce):
		return c.showAllowlist(w, r, rc, http.StatusConflict, allowlistView{Conflict: ce, Notice: "Not changed: someone changed this entry after you loaded the page."})
	case errors.As(err, &ve):
		return c.showAllowlist(w, r, rc, http.StatusBadRequest, allowlistView{Notice: "Not changed: " + ve.Error()})
	case errors.Is(err, triage.ErrNotFound):
		return &pageError{Status: http.StatusNotFound, Title: "Not found", Msg: "No allowlist entry has this id."}
	case err != nil:
		return err
	}
	if err := c.auditChange(r, rc, it, change); err != nil {
		return err
	}
	http.Redirect(w, r, "/allowlist?done="+done, http.StatusSeeOther)
	return nil
}
