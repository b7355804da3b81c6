package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// maxParamBytes bounds one query parameter value.
const maxParamBytes = 1024

// parseQuery parses the query string, refusing unknown and repeated
// parameters. Every value is remembered for log redaction.
func parseQuery(r *http.Request, rc *reqCtx, allowed ...string) (map[string]string, error) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, badRequest("", "malformed query string")
	}
	out := map[string]string{}
	for k, vs := range vals {
		if !slices.Contains(allowed, k) {
			return nil, badRequest(safeName(k), "unknown query parameter (allowed: %s)", strings.Join(allowed, ", "))
		}
		if len(vs) > 1 {
			return nil, badRequest(k, "given more than once")
		}
		if len(vs[0]) > maxParamBytes {
			return nil, badRequest(k, "too long")
		}
		rc.sensitive = append(rc.sensitive, vs[0])
		if vs[0] != "" {
			out[k] = vs[0]
		}
	}
	return out, nil
}

// safeName returns a parameter name fit to echo back, or "" if it is not.
func safeName(k string) string {
	if len(k) > 64 {
		return ""
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return ""
		}
	}
	return k
}

// recordQueryForAudit fills the audit row from the query string of a
// request that is refused before its handler runs (403), so the attempt
// shows what was asked for.
func (s *Server) recordQueryForAudit(r *http.Request, rc *reqCtx) {
	vals, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return
	}
	for k, vs := range vals {
		if len(vs) == 0 {
			continue
		}
		v := vs[0]
		if len(v) > maxParamBytes {
			v = v[:maxParamBytes]
		}
		rc.sensitive = append(rc.sensitive, v)
		s.noteParam(rc, k, v)
	}
	if id := r.PathValue("id"); id != "" {
		rc.audit.AlertID = id
	}
}

// noteParam puts one request parameter into the audit row.
func (s *Server) noteParam(rc *reqCtx, k, v string) {
	if rc.audit == nil {
		return
	}
	switch k {
	case "patient_id":
		rc.audit.PatientID = v
	case "user_id":
		rc.audit.UserID = v
	default:
		if name := safeName(k); name != "" && len(rc.audit.Params) < 32 {
			if len(v) > 256 {
				v = v[:256]
			}
			rc.audit.Params[name] = v
		}
	}
}

func parseLimit(v string, def, max int) (int, error) {
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > max {
		return 0, badRequest("limit", "must be an integer between 1 and %d", max)
	}
	return n, nil
}

func checkOptionalID(field, v string) error {
	if v == "" {
		return nil
	}
	return triage.CheckID(field, v)
}

func (s *Server) handleOpenAPI(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	w.Header().Set("Content-Type", "application/yaml; charset=utf-8")
	w.Header().Set("Cache-Control", "public, max-age=300")
	_, err := w.Write(openapiYAML)
	if err != nil {
		return nil // client went away
	}
	return nil
}

func (s *Server) handleMe(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	p := rc.principal
	roles := p.Roles
	if roles == nil {
		roles = []Role{}
	}
	perms := p.Permissions()
	if perms == nil {
		perms = []Permission{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": p.Name, "method": p.Method, "roles": roles, "permissions": perms})
	return nil
}

func (s *Server) handleListAlerts(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := rc.query
	var err error
	f := triage.AlertFilter{
		Status: triage.Status(q["status"]), MinSeverity: schemas.Severity(q["severity"]), Detector: q["detector"],
		UserID: q["user_id"], PatientID: q["patient_id"], Assignee: q["assignee"], Cursor: q["cursor"],
	}
	if f.Status != "" && !f.Status.Valid() {
		return badRequest("status", "must be one of new, triaged, closed")
	}
	if f.MinSeverity != "" && !f.MinSeverity.Valid() {
		return badRequest("severity", "must be one of info, low, medium, high, critical (the minimum)")
	}
	for _, c := range [][2]string{{"user_id", f.UserID}, {"patient_id", f.PatientID}, {"detector", f.Detector}, {"assignee", f.Assignee}} {
		if err := checkOptionalID(c[0], c[1]); err != nil {
			return err
		}
	}
	if f.From, err = triage.ParseTime("from", q["from"]); err != nil {
		return err
	}
	if f.To, err = triage.ParseTime("to", q["to"]); err != nil {
		return err
	}
	if !f.From.IsZero() && !f.To.IsZero() && !f.From.Before(f.To) {
		return badRequest("from", "must be before to")
	}
	if f.Limit, err = parseLimit(q["limit"], s.cfg.PageSize, s.cfg.MaxPageSize); err != nil {
		return err
	}
	page, err := s.store.ListAlerts(r.Context(), f)
	if err != nil {
		return err
	}
	if err := s.audit(r.Context(), rc, len(page.Alerts), alertPatients(page.Alerts)); err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, page)
	return nil
}

// alertPatients are the alerts' patients, sorted, each once.
func alertPatients(alerts []triage.Alert) []string {
	var patients []string
	for _, a := range alerts {
		if a.PatientID != "" {
			patients = append(patients, a.PatientID)
		}
	}
	slices.Sort(patients)
	return slices.Compact(patients)
}

func (s *Server) handleGetAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	if err := triage.CheckID("id", id); err != nil {
		return err
	}
	d, err := s.store.AlertDetail(r.Context(), id)
	if err != nil {
		return err
	}
	rc.audit.PatientID = d.PatientID
	if err := s.audit(r.Context(), rc, len(d.Events), d.PatientIDs()); err != nil {
		return err
	}
	d.FindingIDs = nil
	writeJSON(w, http.StatusOK, d)
	return nil
}

// patchBody is the PATCH /alerts/{id} request.
type patchBody struct {
	ExpectedVersion *uint64             `json:"expected_version"`
	Status          *triage.Status      `json:"status"`
	Assignee        *string             `json:"assignee"`
	Disposition     *triage.Disposition `json:"disposition"`
	Note            *string             `json:"note"`
}

func (s *Server) handlePatchAlert(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	if err := triage.CheckID("id", id); err != nil {
		return err
	}
	var body patchBody
	if err := s.decodeJSON(w, r, &body); err != nil {
		return err
	}
	if body.Note != nil {
		rc.sensitive = append(rc.sensitive, *body.Note)
	}
	if body.ExpectedVersion == nil {
		return badRequest("expected_version", "required: the triage.version you last saw (0 for a new alert)")
	}
	st, err := s.store.Update(r.Context(), id, triage.Change{
		ExpectedVersion: *body.ExpectedVersion, Status: body.Status, Assignee: body.Assignee,
		Disposition: body.Disposition, Note: body.Note,
	}, rc.principal.Actor())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, st)
	return nil
}

// decodeJSON reads one JSON object from a bounded body, refusing unknown
// fields and trailing data.
func (s *Server) decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return &apiError{Status: http.StatusUnsupportedMediaType, Field: "Content-Type", Msg: "want application/json"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("", "could not read the request body")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &te):
			return badRequest(safeName(te.Field), "wrong type (want %s)", te.Type)
		case errors.As(err, &se), errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("", "malformed JSON body")
		case strings.HasPrefix(err.Error(), "json: unknown field "):
			name, _ := strconv.Unquote(strings.TrimPrefix(err.Error(), "json: unknown field "))
			return badRequest(safeName(name), "unknown field")
		}
		return badRequest("", "malformed JSON body")
	}
	if dec.More() {
		return badRequest("", "trailing data after the JSON object")
	}
	var extra json.RawMessage
	if err := dec.Decode(&extra); err != io.EOF {
		return badRequest("", "trailing data after the JSON object")
	}
	return nil
}

func (s *Server) handleHistory(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("id")
	if err := triage.CheckID("id", id); err != nil {
		return err
	}
	ok, err := s.store.AlertExists(r.Context(), id)
	if err != nil {
		return err
	}
	if !ok {
		return triage.ErrNotFound
	}
	hist, err := s.store.History(r.Context(), id)
	if err != nil {
		return err
	}
	if hist == nil {
		hist = []triage.State{}
	}
	writeJSON(w, http.StatusOK, map[string]any{"alert_id": id, "history": hist})
	return nil
}

func (s *Server) handlePatientAccess(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.report(w, r, rc, triage.PatientAccess, "patient_id")
}

func (s *Server) handleUserActivity(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	return s.report(w, r, rc, triage.UserActivity, "user_id")
}

// reportQuery are the query parameters of a report about subjectKey.
func reportQuery(subjectKey string) []string {
	return []string{subjectKey, "from", "to", "format", "limit", "cursor"}
}

func (s *Server) report(w http.ResponseWriter, r *http.Request, rc *reqCtx, kind triage.ReportKind, subjectKey string) error {
	q := rc.query
	subject := q[subjectKey]
	if err := triage.CheckID(subjectKey, subject); err != nil {
		return err
	}
	from, err := triage.ParseTime("from", q["from"])
	if err != nil {
		return err
	}
	to, err := triage.ParseTime("to", q["to"])
	if err != nil {
		return err
	}
	if err := triage.CheckRange(from, to, s.cfg.MaxReportRange); err != nil {
		return err
	}
	format := q["format"]
	if format == "" {
		format = "json"
	}
	def, max := s.cfg.PageSize, s.cfg.MaxPageSize
	switch format {
	case "json":
	case "csv":
		def, max = s.cfg.MaxExportRows, s.cfg.MaxExportRows
	default:
		return badRequest("format", "must be json or csv")
	}
	limit, err := parseLimit(q["limit"], def, max)
	if err != nil {
		return err
	}
	rep, err := s.store.ReportAll(r.Context(), triage.ReportQuery{Kind: kind, SubjectID: subject, From: from, To: to,
		Limit: limit, Cursor: q["cursor"]})
	if err != nil {
		return err
	}
	if err := s.audit(r.Context(), rc, len(rep.Rows), rep.Patients()); err != nil {
		return err
	}
	if format == "json" {
		writeJSON(w, http.StatusOK, rep)
		return nil
	}
	h := w.Header()
	h.Set("Content-Type", "text/csv; charset=utf-8; header=present")
	h.Set("Content-Disposition", fmt.Sprintf(`attachment; filename="%s"`, triage.ReportFilename(kind, from, to, "csv")))
	if rep.NextCursor != "" {
		h.Set("X-Next-Cursor", rep.NextCursor)
	}
	for _, wn := range rep.Warnings {
		h.Add("X-Report-Warning", wn)
	}
	w.WriteHeader(http.StatusOK)
	if err := triage.WriteCSV(w, rep.Rows); err != nil {
		s.log.Warn().Str("request_id", rc.id).Str("route", rc.route).Msg("api CSV export interrupted")
	}
	return nil
}
