package console

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"net/http"
	"sync"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// InvestigationStore is what the privacy office's pages (cases, patient,
// user, allowlist) read and write. *triage.Store and the demo's in-memory
// store (memstore) implement it. It is separate from Store so that a store
// without investigations still serves the queue and alert pages; those
// pages then answer 501 and say why.
type InvestigationStore interface {
	// api.CaseStore: cases and the allowlist, as the API serves them.
	api.CaseStore
	CasesForAlerts(ctx context.Context, alertIDs []string, limit int) ([]triage.Case, error)

	// ReportAll is the patient access and user activity report (the API's
	// and `ehrwatch report`'s query).
	ReportAll(ctx context.Context, q triage.ReportQuery) (triage.Report, error)
	ReferenceCounts(ctx context.Context) (triage.ReferenceCounts, error)
	UserHeatmap(ctx context.Context, userID string, from, to time.Time, baselineDays int) (triage.Heatmap, error)
}

var _ InvestigationStore = (*triage.Store)(nil)

// investigationRoutes registers the privacy office's pages.
func (c *Console) investigationRoutes(mux *http.ServeMux) {
	c.investigation(mux, "GET /cases", api.PermCases, c.handleCases)
	c.investigation(mux, "POST /cases", api.PermCases, c.handleCreateCase)
	c.investigation(mux, "POST /cases/from-selection", api.PermCases, c.handleCaseFromSelection)
	c.investigation(mux, "GET /cases/{case_id}", api.PermCases, c.handleCase)
	c.investigation(mux, "POST /cases/{case_id}", api.PermCases, c.handleCaseUpdate)
	c.investigation(mux, "POST /cases/{case_id}/alerts", api.PermCases, c.handleCaseAddAlerts)
	c.investigation(mux, "POST /cases/{case_id}/alerts/remove", api.PermCases, c.handleCaseRemoveAlert)

	c.investigation(mux, "GET /patients", api.PermReports, c.handlePatientLookup)
	c.investigation(mux, "POST /patients", api.PermReports, c.handlePatient)
	c.investigation(mux, "GET /patients/h/{handle}", api.PermReports, c.handlePatientHandle)
	c.investigation(mux, "POST /patients/export.csv", api.PermReports, c.handlePatientCSV)
	c.investigation(mux, "POST /patients/print", api.PermReports, c.handlePatientPrint)

	c.investigation(mux, "GET /users", api.PermReports, c.handleUserLookup)
	c.investigation(mux, "GET /users/{user_id}", api.PermReports, c.handleUser)

	c.investigation(mux, "GET /allowlist", api.PermAllowlistWrite, c.handleAllowlist)
	c.investigation(mux, "POST /allowlist", api.PermAllowlistWrite, c.handleAllowlistAdd)
	c.investigation(mux, "POST /allowlist/{entry_id}/expire", api.PermAllowlistWrite, c.handleAllowlistExpire)
	c.investigation(mux, "POST /allowlist/{entry_id}/remove", api.PermAllowlistWrite, c.handleAllowlistRemove)
}

// errNoInvestigations is every privacy office page of a store without
// investigations.
var errNoInvestigations = &pageError{Status: http.StatusNotImplemented, Title: "Not available here",
	Msg: "This store keeps no cases, reports or allowlist; run with ClickHouse to use this page."}

// investigation registers a privacy office page (c.page): with a store
// that keeps no investigations (c.invs nil) it answers 501 and says why,
// after authentication and the permission check.
func (c *Console) investigation(mux *http.ServeMux, pattern string, perm api.Permission, h handlerFunc) {
	c.page(mux, pattern, perm, func(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
		if c.invs == nil {
			return errNoInvestigations
		}
		return h(w, r, rc)
	})
}

// PatientHandleTTL is how long a patient page link (/patients/h/{handle})
// works.
const PatientHandleTTL = 30 * time.Minute

// maxHandles bounds the handles kept; the oldest go first.
const maxHandles = 100000

// patientHandles maps opaque, short-lived handles to patient ids, so that
// pages can link to a patient's page without the id in the URL (URLs end
// up in access logs, browser history and Referer headers). A handle is
// bound to the principal it was made for and lives in this process only:
// behind several `ehrwatch serve` replicas without session affinity a link
// can land on a replica that does not know it, and the page then asks for
// the patient id again (POST form).
type patientHandles struct {
	mu sync.Mutex
	m  map[string]patientHandle
}

type patientHandle struct {
	patientID string
	principal string
	expires   time.Time
}

// PatientLink returns a link to patientID's page for principal p, valid
// for PatientHandleTTL.
func (c *Console) PatientLink(p *api.Principal, patientID string) string {
	return "/patients/h/" + c.handles.make(p.Name, patientID, c.now())
}

func (h *patientHandles) make(principal, patientID string, now time.Time) string {
	var b [18]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err)
	}
	id := base64.RawURLEncoding.EncodeToString(b[:])
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.m == nil {
		h.m = map[string]patientHandle{}
	}
	if len(h.m) >= maxHandles {
		for k, v := range h.m {
			if now.After(v.expires) || len(h.m) >= maxHandles {
				delete(h.m, k)
			}
		}
	}
	h.m[id] = patientHandle{patientID: patientID, principal: principal, expires: now.Add(PatientHandleTTL)}
	return id
}

func (h *patientHandles) resolve(id, principal string, now time.Time) (string, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	v, ok := h.m[id]
	if !ok || now.After(v.expires) || v.principal != principal {
		return "", false
	}
	return v.patientID, true
}
