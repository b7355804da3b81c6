// Package triage is the case-management side of ehrwatch: the triage state
// of alerts (status, assignee, disposition, notes) with an append-only
// history and optimistic concurrency, the read models the API serves (alert
// list and detail), the privacy-officer reports ("who opened this patient's
// chart", "what did this user open"), and the audit trail of those reads.
//
// Everything is stored in ClickHouse. Queries pass patient and user ids as
// server-side parameters ({name:Type}), never inside the SQL text, so a
// ClickHouse error message or query log cannot carry them into ehrwatch's
// own logs. Names, notes and break-glass reasons are returned to callers
// but never logged.
//
// # Alert lifecycle
//
// An alert without a state row is "new" at version 0. Allowed transitions:
//
//	new     → triaged   someone picked it up (optionally assigning it)
//	new     → closed    obvious outcome (e.g. duplicate), disposition required
//	triaged → closed    disposition required
//	closed  → triaged   reopen; only for actors allowed to reopen (privacy
//	                    officers and admins in the API), clears the disposition
//
// Keeping the status (no "status" in the change) is allowed for assignee and
// note changes while the alert is open; a closed alert only takes notes
// until it is reopened. Every change appends one row to alert_state_history
// with version = previous + 1; the caller names the version it saw
// (expected_version) and gets a *ConflictError when someone else changed the
// alert first.
//
// # Cases
//
// A case groups alerts into one investigation (cases.go, migration 0080):
// open → investigating, open → closed, investigating → closed, closed →
// investigating (reopen, Actor.MayReopen). Closing needs an outcome; a
// closed case only takes notes. Every change (creation, alerts added or
// removed, status, assignee, outcome, title, note) appends one row with
// the whole state to case_history at version + 1 under the deduplication
// token "case/<id>/v<version>", as alert triage does; a stale version gets
// a *CaseConflictError listing the changes the caller missed.
//
// # Allowlist
//
// The allowlist editor (allowlist.go) writes the allowlist table the
// detectors read (store.ReadAllowlist) and appends every change to
// allowlist_history (migration 0081). An entry's updated_at is its
// version. The detectors see a change at their next reference refresh.
package triage
