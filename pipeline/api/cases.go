package api

import (
	"context"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// caseRoutes are the investigation endpoints (privacy officer, admin).
func (s *Server) caseRoutes() []route {
	return []route{
		{Method: "GET", Path: "/cases", Perm: PermCases, Cases: true, handle: s.handleListCases,
			Query: []string{"status", "assignee", "alert_id", "limit", "cursor"}},
		{Method: "POST", Path: "/cases", Perm: PermCases, Cases: true, handle: s.handleCreateCase},
		{Method: "GET", Path: "/cases/{id}", Perm: PermCases, Cases: true, Audited: true, AuditID: "case_id", handle: s.handleGetCase},
		{Method: "PATCH", Path: "/cases/{id}", Perm: PermCases, Cases: true, handle: s.handlePatchCase},
		{Method: "POST", Path: "/cases/{id}/alerts", Perm: PermCases, Cases: true, handle: s.handleAddCaseAlerts},
		{Method: "DELETE", Path: "/cases/{id}/alerts/{alert_id}", Perm: PermCases, Cases: true, handle: s.handleRemoveCaseAlert,
			Query: []string{"expected_version"}},
		{Method: "GET", Path: "/cases/{id}/history", Perm: PermCases, Cases: true, handle: s.handleCaseHistory},
		{Method: "GET", Path: "/allowlist", Perm: PermAllowlistWrite, Cases: true, Audited: true, handle: s.handleListAllowlist,
			Query: []string{"include_removed", "limit"}},
		{Method: "POST", Path: "/allowlist", Perm: PermAllowlistWrite, Cases: true, Audited: true, handle: s.handleAddAllowlist},
		{Method: "POST", Path: "/allowlist/{id}/expire", Perm: PermAllowlistWrite, Cases: true, Audited: true, AuditID: "entry_id",
			handle: s.handleExpireAllowlist},
		{Method: "POST", Path: "/allowlist/{id}/remove", Perm: PermAllowlistWrite, Cases: true, Audited: true, AuditID: "entry_id",
			handle: s.handleRemoveAllowlist},
		{Method: "GET", Path: "/allowlist/history", Perm: PermAllowlistWrite, Cases: true, Audited: true, handle: s.handleAllowlistHistory,
			Query: []string{"entry_id", "limit"}},
	}
}

// Actor is the principal as the triage store records it (reopening needs
// alerts:reopen).
func (p *Principal) Actor() triage.Actor {
	return triage.Actor{Name: p.Name, MayReopen: p.Can(PermAlertsReopen)}
}

func (s *Server) handleListCases(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := rc.query
	var err error
	f := triage.CaseFilter{Status: triage.CaseStatus(q["status"]), Assignee: q["assignee"], AlertID: q["alert_id"], Cursor: q["cursor"]}
	if f.Status != "" && !f.Status.Valid() {
		return badRequest("status", "must be one of open, investigating, closed")
	}
	for _, c := range [][2]string{{"assignee", f.Assignee}, {"alert_id", f.AlertID}} {
		if err := checkOptionalID(c[0], c[1]); err != nil {
			return err
		}
	}
	if f.Limit, err = parseLimit(q["limit"], s.cfg.PageSize, s.cfg.MaxPageSize); err != nil {
		return err
	}
	page, err := s.cases.ListCases(r.Context(), f)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

type createCaseBody struct {
	Title    string   `json:"title"`
	AlertIDs []string `json:"alert_ids"`
}

func (s *Server) handleCreateCase(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body createCaseBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	rc.sensitive = append(rc.sensitive, body.Title)
	c, err := s.cases.CreateCase(r.Context(), body.Title, body.AlertIDs, rc.principal.Actor())
	if err != nil {
		return err
	}
	w.Header().Set("Location", Prefix+"/cases/"+c.CaseID)
	writeJSON(w, http.StatusCreated, c)
	return nil
}

// CaseDetail is a case with its alerts.
type CaseDetail struct {
	triage.Case
	Alerts []triage.Alert `json:"alerts"`
}

func (s *Server) handleGetCase(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	c, err := s.cases.Case(r.Context(), id)
	if err != nil {
		return err
	}
	alerts, err := s.cases.AlertsByID(r.Context(), c.AlertIDs)
	if err != nil {
		return err
	}
	if err := s.audit(r.Context(), rc, len(alerts), alertPatients(alerts)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, CaseDetail{Case: c, Alerts: alerts})
	return nil
}

type patchCaseBody struct {
	ExpectedVersion *uint64             `json:"expected_version"`
	Title           *string             `json:"title"`
	Status          *triage.CaseStatus  `json:"status"`
	Assignee        *string             `json:"assignee"`
	Outcome         *triage.CaseOutcome `json:"outcome"`
	Note            *string             `json:"note"`
}

func (s *Server) handlePatchCase(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	var body patchCaseBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	for _, v := range []*string{body.Note, body.Title} {
		if v != nil {
			rc.sensitive = append(rc.sensitive, *v)
		}
	}
	if body.ExpectedVersion == nil {
		return badRequest("expected_version", "required: the case version you last saw")
	}
	c, err := s.cases.UpdateCase(r.Context(), id, triage.CaseUpdate{ExpectedVersion: *body.ExpectedVersion, Title: body.Title,
		Status: body.Status, Assignee: body.Assignee, Outcome: body.Outcome, Note: body.Note}, rc.principal.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

type addCaseAlertsBody struct {
	ExpectedVersion *uint64  `json:"expected_version"`
	AlertIDs        []string `json:"alert_ids"`
	Note            string   `json:"note"`
}

func (s *Server) handleAddCaseAlerts(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	var body addCaseAlertsBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	rc.sensitive = append(rc.sensitive, body.Note)
	if body.ExpectedVersion == nil {
		return badRequest("expected_version", "required: the case version you last saw")
	}
	c, err := s.cases.AddAlerts(r.Context(), id, body.AlertIDs, *body.ExpectedVersion, body.Note, rc.principal.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) handleRemoveCaseAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id, alertID := r.PathValue("id"), r.PathValue("alert_id")
	v, err := strconv.ParseUint(rc.query["expected_version"], 10, 64)
	if err != nil {
		return badRequest("expected_version", "required: the case version you last saw (a query parameter)")
	}
	c, err := s.cases.RemoveAlert(r.Context(), id, alertID, v, "", rc.principal.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, c)
	return nil
}

func (s *Server) handleCaseHistory(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	if _, err := s.cases.Case(r.Context(), id); err != nil {
		return err
	}
	hist, err := s.cases.CaseHistory(r.Context(), id)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"case_id": id, "history": hist})
	return nil
}

func (s *Server) handleListAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := rc.query
	withRemoved := false
	switch q["include_removed"] {
	case "", "false":
	case "true":
		withRemoved = true
	default:
		return badRequest("include_removed", "must be true or false")
	}
	limit, err := parseLimit(q["limit"], s.cfg.MaxPageSize, s.cfg.MaxPageSize)
	if err != nil {
		return err
	}
	items, err := s.cases.ListAllowlist(r.Context(), withRemoved, limit)
	if err != nil {
		return err
	}
	if err := s.audit(r.Context(), rc, len(items), triage.AllowlistPatients(items)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"entries": items})
	return nil
}

type addAllowlistBody struct {
	UserID     string `json:"user_id"`
	PatientID  string `json:"patient_id"`
	Department string `json:"department"`
	Detector   string `json:"detector"`
	Reason     string `json:"reason"`
	Owner      string `json:"owner"`
	ExpiresAt  string `json:"expires_at"`
	Note       string `json:"note"`
}

func (s *Server) handleAddAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	var body addAllowlistBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	rc.sensitive = append(rc.sensitive, body.UserID, body.PatientID, body.Reason, body.Owner, body.Note)
	rc.audit.UserID, rc.audit.PatientID = body.UserID, body.PatientID
	exp, err := triage.ParseTime("expires_at", body.ExpiresAt)
	if err != nil {
		return err
	}
	it, err := s.cases.AddAllowlistEntry(r.Context(), schemas.AllowlistEntry{UserID: body.UserID, PatientID: body.PatientID,
		Department: body.Department, Detector: body.Detector, Reason: body.Reason, Owner: body.Owner, ExpiresAt: exp},
		body.Note, rc.principal.Actor())
	if err != nil {
		return err
	}
	rc.audit.Params["entry_id"] = it.EntryID
	if err := s.audit(r.Context(), rc, 1, triage.AllowlistPatients([]triage.AllowlistItem{it})); err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, it)
	return nil
}

type changeAllowlistBody struct {
	ExpectedUpdatedAt string `json:"expected_updated_at"`
	Note              string `json:"note"`
}

func (s *Server) handleExpireAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.changeAllowlist(w, r, rc, s.cases.ExpireAllowlistEntry)
}

func (s *Server) handleRemoveAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.changeAllowlist(w, r, rc, s.cases.RemoveAllowlistEntry)
}

func (s *Server) changeAllowlist(w http.ResponseWriter, r *http.Request, rc *reqCtx,
	change func(ctx context.Context, id string, expected time.Time, note string, actor triage.Actor) (triage.AllowlistItem, error)) error {
	id := r.PathValue("id")
	var body changeAllowlistBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	rc.sensitive = append(rc.sensitive, body.Note)
	if body.ExpectedUpdatedAt == "" {
		return badRequest("expected_updated_at", "required: the entry's updated_at you last saw")
	}
	expected, err := triage.ParseTime("expected_updated_at", body.ExpectedUpdatedAt)
	if err != nil {
		return err
	}
	it, err := change(r.Context(), id, expected, body.Note, rc.principal.Actor())
	if err != nil {
		return err
	}
	rc.audit.UserID, rc.audit.PatientID = it.UserID, it.PatientID
	if err := s.audit(r.Context(), rc, 1, triage.AllowlistPatients([]triage.AllowlistItem{it})); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, it)
	return nil
}

func (s *Server) handleAllowlistHistory(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := rc.query
	if err := checkOptionalID("entry_id", q["entry_id"]); err != nil {
		return err
	}
	limit, err := parseLimit(q["limit"], s.cfg.PageSize, s.cfg.MaxPageSize)
	if err != nil {
		return err
	}
	hist, err := s.cases.AllowlistHistory(r.Context(), q["entry_id"], limit)
	if err != nil {
		return err
	}
	var patients []string
	for _, h := range hist {
		if h.PatientID != "" && !slices.Contains(patients, h.PatientID) {
			patients = append(patients, h.PatientID)
		}
	}
	if err := s.audit(r.Context(), rc, len(hist), patients); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, map[string]any{"history": hist})
	return nil
}
