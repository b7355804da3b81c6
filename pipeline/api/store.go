package api

import (
	"context"
	"github.com/ehrwatch/ehrwatch/schemas"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// Store is what the API reads and writes: *triage.Store (ClickHouse), or
// the demo's in-memory store (pipeline/console/memstore), which follows
// the same lifecycle, versions and errors (triage.ErrNotFound,
// *triage.ConflictError, *triage.ValidationError, triage.ErrForbidden).
type Store interface {
	ListAlerts(ctx context.Context, f triage.AlertFilter) (triage.AlertPage, error)
	AlertDetail(ctx context.Context, alertID string) (triage.AlertDetail, error)
	AlertExists(ctx context.Context, alertID string) (bool, error)
	History(ctx context.Context, alertID string) ([]triage.State, error)
	Update(ctx context.Context, alertID string, ch triage.Change, actor triage.Actor) (triage.State, error)
	ReportAll(ctx context.Context, q triage.ReportQuery) (triage.Report, error)
	WriteAudit(ctx context.Context, r triage.AuditRecord) error
}

var _ Store = (*triage.Store)(nil)

// CaseStore is what the cases and allowlist endpoints need beyond Store.
// *triage.Store and the demo's in-memory store (memstore) have it; a
// store without it answers those endpoints with 501.
type CaseStore interface {
	CreateCase(ctx context.Context, title string, alertIDs []string, actor triage.Actor) (triage.Case, error)
	AddAlerts(ctx context.Context, caseID string, alertIDs []string, expectedVersion uint64, note string, actor triage.Actor) (triage.Case, error)
	RemoveAlert(ctx context.Context, caseID, alertID string, expectedVersion uint64, note string, actor triage.Actor) (triage.Case, error)
	UpdateCase(ctx context.Context, caseID string, u triage.CaseUpdate, actor triage.Actor) (triage.Case, error)
	Case(ctx context.Context, caseID string) (triage.Case, error)
	ListCases(ctx context.Context, f triage.CaseFilter) (triage.CasePage, error)
	CaseHistory(ctx context.Context, caseID string) ([]triage.CaseChange, error)
	AlertsByID(ctx context.Context, ids []string) ([]triage.Alert, error)
	ListAllowlist(ctx context.Context, withRemoved bool, limit int) ([]triage.AllowlistItem, error)
	AddAllowlistEntry(ctx context.Context, e schemas.AllowlistEntry, note string, actor triage.Actor) (triage.AllowlistItem, error)
	ExpireAllowlistEntry(ctx context.Context, entryID string, expected time.Time, note string, actor triage.Actor) (triage.AllowlistItem, error)
	RemoveAllowlistEntry(ctx context.Context, entryID string, expected time.Time, note string, actor triage.Actor) (triage.AllowlistItem, error)
	AllowlistHistory(ctx context.Context, entryID string, limit int) ([]triage.AllowlistHistoryRow, error)
}

var _ CaseStore = (*triage.Store)(nil)
