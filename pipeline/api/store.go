package api

import (
	"context"

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
