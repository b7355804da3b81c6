package console

import (
	"context"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// Store is what the console's pages read and write. *triage.Store
// (ClickHouse) implements it, and so does the demo's in-memory store.
// Whoever adds a method implements it in every implementation.
type Store interface {
	// ListAlerts returns alerts matching f (the queue uses
	// triage.OrderRisk).
	ListAlerts(ctx context.Context, f triage.AlertFilter) (triage.AlertPage, error)
	// CountAlerts counts alerts matching f per status.
	CountAlerts(ctx context.Context, f triage.AlertFilter) (triage.AlertCounts, error)
	// AlertDetail returns an alert with its findings and events
	// (triage.ErrNotFound for an unknown alert).
	AlertDetail(ctx context.Context, alertID string) (triage.AlertDetail, error)
	// History returns an alert's triage changes, oldest first.
	History(ctx context.Context, alertID string) ([]triage.State, error)
	// Update applies a triage change with optimistic concurrency
	// (*triage.ConflictError when the alert changed meanwhile).
	Update(ctx context.Context, alertID string, ch triage.Change, actor triage.Actor) (triage.State, error)
	// Location returns a facility's time zone (UTC when unknown).
	Location(facilityID string) *time.Location
}

var _ Store = (*triage.Store)(nil)
