package triage

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/store"
	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestAllowlistEditor: entries added, expired and removed through the
// store are what store.ReadAllowlist (the detectors' refresh) reads, and
// every change is in allowlist_history.
func TestAllowlistEditor(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	clock := time.Now().UTC().Truncate(time.Millisecond)
	s := NewStore(conn, Options{Now: func() time.Time { clock = clock.Add(time.Second); return clock },
		Detectors: []string{"break_glass", "volume"}})
	po := Actor{Name: "po-bob"}
	entry := schemas.AllowlistEntry{UserID: "u-bob", PatientID: tt.PatientMain, Detector: "break_glass",
		Reason: "oncology cover rota", Owner: "privacy office", ExpiresAt: clock.Add(30 * 24 * time.Hour)}

	bad := entry
	bad.Owner = " "
	_, err := s.AddAllowlistEntry(ctx, bad, "", po)
	wantValidation(t, err, "owner")
	bad = entry
	bad.ExpiresAt = clock.Add(-time.Hour)
	_, err = s.AddAllowlistEntry(ctx, bad, "", po)
	wantValidation(t, err, "expires_at")
	bad = entry
	bad.Detector = "nope"
	_, err = s.AddAllowlistEntry(ctx, bad, "", po)
	wantValidation(t, err, "detector")
	bad = entry
	bad.UserID, bad.PatientID = "", ""
	_, err = s.AddAllowlistEntry(ctx, bad, "", po)
	wantValidation(t, err, "user_id")

	a, err := s.AddAllowlistEntry(ctx, entry, "agreed with the CMO", po)
	if err != nil {
		t.Fatal(err)
	}
	second := entry
	second.UserID, second.PatientID, second.Department, second.Detector = "", "", "Radiology", "*"
	b, err := s.AddAllowlistEntry(ctx, second, "", po)
	if err != nil {
		t.Fatal(err)
	}
	ld, err := store.ReadAllowlist(ctx, conn)
	if err != nil || len(ld.Entries) != 2 {
		t.Fatalf("detectors read %+v %v, want both entries", ld, err)
	}

	// Expire a: the detectors still read it, but with expires_at = now.
	_, err = s.ExpireAllowlistEntry(ctx, a.EntryID, a.UpdatedAt.Add(-time.Second), "", po)
	var ce *AllowlistConflictError
	if !errors.As(err, &ce) {
		t.Fatalf("stale expire: %v", err)
	}
	ea, err := s.ExpireAllowlistEntry(ctx, a.EntryID, a.UpdatedAt, "rota ended", Actor{Name: "po-carla"})
	if err != nil || ea.State != "expired" || !ea.ExpiresAt.Before(a.ExpiresAt) {
		t.Fatalf("expire: %+v %v", ea, err)
	}
	// A second writer that saw the old version sees the expiry.
	_, err = s.RemoveAllowlistEntry(ctx, a.EntryID, a.UpdatedAt, "", po)
	if !errors.As(err, &ce) || ce.Last == nil || ce.Last.Change != AllowlistExpired || ce.Last.ChangedBy != "po-carla" {
		t.Fatalf("conflict after expiry: %v (%+v)", err, ce)
	}
	// Remove b: the detectors no longer read it.
	if _, err := s.RemoveAllowlistEntry(ctx, b.EntryID, b.UpdatedAt, "", po); err != nil {
		t.Fatal(err)
	}
	ld, err = store.ReadAllowlist(ctx, conn)
	if err != nil || len(ld.Entries) != 1 || !ld.Entries[0].ExpiresAt.Equal(ea.ExpiresAt) {
		t.Fatalf("after expire and remove the detectors read %+v %v", ld, err)
	}
	items, err := s.ListAllowlist(ctx, false, 100)
	if err != nil || len(items) != 1 || items[0].State != "expired" {
		t.Fatalf("list: %+v %v", items, err)
	}
	items, err = s.ListAllowlist(ctx, true, 100)
	if err != nil || len(items) != 2 {
		t.Fatalf("list with removed: %+v %v", items, err)
	}
	hist, err := s.AllowlistHistory(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var changes []string
	for _, h := range hist {
		changes = append(changes, string(h.Change)+" "+h.ChangedBy)
	}
	if len(hist) != 4 || changes[0] != "removed po-bob" || changes[1] != "expired po-carla" || hist[1].Note != "rota ended" {
		t.Fatalf("history: %v", changes)
	}
	if _, err := s.RemoveAllowlistEntry(ctx, "allow-nope", time.Now(), "", po); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown entry: %v", err)
	}
}
