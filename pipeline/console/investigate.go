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
	c.page(mux, "GET /cases", api.PermCases, c.handleCases)
	c.page(mux, "POST /cases", api.PermCases, c.handleCreateCase)
	c.page(mux, "POST /cases/from-selection", api.PermCases, c.handleCaseFromSelection)
	c.page(mux, "GET /cases/{case_id}", api.PermCases, c.handleCase)
	c.page(mux, "POST /cases/{case_id}", api.PermCases, c.handleCaseUpdate)
	c.page(mux, "POST /cases/{case_id}/alerts", api.PermCases, c.handleCaseAddAlerts)
	c.page(mux, "POST /cases/{case_id}/alerts/remove", api.PermCases, c.handleCaseRemoveAlert)

	c.page(mux, "GET /patients", api.PermReports, c.handlePatientLookup)
	c.page(mux, "POST /patients", api.PermReports, c.handlePatient)
	c.page(mux, "GET /patients/h/{handle}", api.PermReports, c.handlePatientHandle)
	c.page(mux, "POST /patients/export.csv", api.PermReports, c.handlePatientCSV)
	c.page(mux, "POST /patients/print", api.PermReports, c.handlePatientPrint)

	c.page(mux, "GET /users", api.PermReports, c.handleUserLookup)
	c.page(mux, "GET /users/{user_id}", api.PermReports, c.handleUser)

	c.page(mux, "GET /allowlist", api.PermAllowlistWrite, c.handleAllowlist)
	c.page(mux, "POST /allowlist", api.PermAllowlistWrite, c.handleAllowlistAdd)
	c.page(mux, "POST /allowlist/{entry_id}/expire", api.PermAllowlistWrite, c.handleAllowlistExpire)
	c.page(mux, "POST /allowlist/{entry_id}/remove", api.PermAllowlistWrite, c.handleAllowlistRemove)
}

// inv returns the investigation store, or the page saying this store has
// none.
func (c *Console) inv() (InvestigationStore, error) {
	if s, ok := c.deps.Store.(InvestigationStore); ok {
		return s, nil
	}
	return nil, &pageError{Status: http.StatusNotImplemented, Title: "Not available here",
		Msg: "This store keeps no cases, reports or allowlist; run with ClickHouse to use this page."}
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
