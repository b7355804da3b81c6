package triage

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/maphash"
	"strconv"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
)

// Options tune a Store.
type Options struct {
	// CareSlackBefore and CareSlackAfter widen every encounter when the
	// reports decide whether a care relationship explains an access. They
	// must equal the detectors' reference.care_slack_before/after so that a
	// report and a finding never disagree. Default 24h each.
	CareSlackBefore time.Duration
	CareSlackAfter  time.Duration
	// Location returns a facility's time zone, or nil when unknown; reports
	// then show UTC only.
	Location func(facilityID string) *time.Location
	// MaxDetailFindings and MaxDetailEvents bound an alert's detail.
	MaxDetailFindings int
	MaxDetailEvents   int
	// MaxReportFindings bounds the findings listed in a user activity report.
	MaxReportFindings int
	// Now is the clock (tests); default time.Now.
	Now func() time.Time
	// Detectors are the detector names an allowlist entry may name
	// (besides "*"); empty accepts any name.
	Detectors []string
}

// DefaultOptions returns 24h of care slack and the default bounds.
func DefaultOptions() Options {
	return Options{
		CareSlackBefore:   24 * time.Hour,
		CareSlackAfter:    24 * time.Hour,
		MaxDetailFindings: 200,
		MaxDetailEvents:   500,
		MaxReportFindings: 1000,
	}
}

// Store reads and writes triage state, alerts, reports and the API audit
// trail in ClickHouse. It is safe for concurrent use.
type Store struct {
	conn  driver.Conn
	opts  Options
	locks [64]sync.Mutex
	seed  maphash.Seed
	// beforeInsert runs between the version check and the insert (tests
	// use it to interleave another writer).
	beforeInsert func()
}

// WithDefaults returns o with its zero fields set to DefaultOptions' (the
// ClickHouse store and the demo's in-memory store both take options so).
func (o Options) WithDefaults() Options {
	def := DefaultOptions()
	if o.CareSlackBefore == 0 && o.CareSlackAfter == 0 {
		o.CareSlackBefore, o.CareSlackAfter = def.CareSlackBefore, def.CareSlackAfter
	}
	if o.MaxDetailFindings <= 0 {
		o.MaxDetailFindings = def.MaxDetailFindings
	}
	if o.MaxDetailEvents <= 0 {
		o.MaxDetailEvents = def.MaxDetailEvents
	}
	if o.MaxReportFindings <= 0 {
		o.MaxReportFindings = def.MaxReportFindings
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// NewStore returns a Store on conn, whose database holds ehrwatch's tables
// (created by store.Migrate). Zero options take their defaults.
func NewStore(conn driver.Conn, opts Options) *Store {
	return &Store{conn: conn, opts: opts.WithDefaults(), seed: maphash.MakeSeed()}
}

// lock serialises the writers of one record (an alert id, "case/<id>",
// "allowlist/<id>") inside this process and returns the unlock; the
// deduplication tokens and versions handle writers in other processes.
func (s *Store) lock(key string) (unlock func()) {
	mu := &s.locks[maphash.String(s.seed, key)%uint64(len(s.locks))]
	mu.Lock()
	return mu.Unlock
}

// Location returns a facility's time zone (UTC when unknown).
func (s *Store) Location(facility string) *time.Location {
	if loc := s.location(facility); loc != nil {
		return loc
	}
	return time.UTC
}

func (s *Store) location(facility string) *time.Location {
	if s.opts.Location == nil {
		return nil
	}
	return s.opts.Location(facility)
}

// State returns an alert's current triage state from alert_state FINAL; an
// alert without a state row is new at version 0. It does not check that the
// alert exists (AlertExists does).
func (s *Store) State(ctx context.Context, alertID string) (State, error) {
	p := params{}
	p.str("alert", alertID)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT alert_id, version, status, assignee, disposition, note, changed_by, changed_at
FROM alert_state FINAL WHERE alert_id = {alert:String}`)
	if err != nil {
		return State{}, fmt.Errorf("read alert state: %w", err)
	}
	states, err := scanStates(rows)
	if err != nil {
		return State{}, fmt.Errorf("read alert state: %w", err)
	}
	if len(states) == 0 {
		return initialState(alertID), nil
	}
	return states[len(states)-1], nil
}

// History returns every change of an alert, oldest first.
func (s *Store) History(ctx context.Context, alertID string) ([]State, error) {
	p := params{}
	p.str("alert", alertID)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT alert_id, version, status, assignee, disposition, note, changed_by, changed_at
FROM alert_state_history WHERE alert_id = {alert:String}
ORDER BY version, changed_at, change_id`)
	if err != nil {
		return nil, fmt.Errorf("read alert history: %w", err)
	}
	return scanStates(rows)
}

func scanStates(rows driver.Rows) ([]State, error) {
	defer rows.Close()
	var out []State
	for rows.Next() {
		var st State
		var status, disp string
		var at time.Time
		if err := rows.Scan(&st.AlertID, &st.Version, &status, &st.Assignee, &disp, &st.Note, &st.ChangedBy, &at); err != nil {
			return nil, err
		}
		st.Status, st.Disposition = Status(status), Disposition(disp)
		at = at.UTC()
		st.ChangedAt = &at
		out = append(out, st)
	}
	return out, rows.Err()
}

// AlertExists reports whether the alerts table holds alertID.
func (s *Store) AlertExists(ctx context.Context, alertID string) (bool, error) {
	p := params{}
	p.str("alert", alertID)
	var n uint64
	if err := s.conn.QueryRow(p.ctx(ctx), `SELECT count() FROM alerts WHERE alert_id = {alert:String}`).Scan(&n); err != nil {
		return false, fmt.Errorf("look up alert: %w", err)
	}
	return n > 0, nil
}

// Update applies one triage change to an alert with optimistic concurrency
// and returns the new state.
//
// The precondition is checked against the current state, then the new
// history row is inserted with version = current + 1 under the
// insert_deduplication_token "<alert>/v<version>": of two writers that both
// saw version N (in this process or another), ClickHouse keeps the first
// row for N+1 and silently drops the second. Reading the row back tells
// each writer whether it won; the loser gets a *ConflictError. A retried
// insert of the same change is likewise dropped and still reads back as
// won, so retries are safe.
//
// Errors: *ValidationError (bad input), *ConflictError (stale version),
// ErrNotFound (unknown alert), ErrForbidden (reopen without the right).
func (s *Store) Update(ctx context.Context, alertID string, ch Change, actor Actor) (State, error) {
	if err := CheckID("alert_id", alertID); err != nil {
		return State{}, err
	}
	if actor.Name == "" || len(actor.Name) > MaxActorBytes {
		return State{}, errors.New("triage: actor name required (at most 256 bytes)")
	}
	// Serialise writers of one alert inside this process; the
	// deduplication token handles writers in other processes.
	defer s.lock(alertID)()

	ok, err := s.AlertExists(ctx, alertID)
	if err != nil {
		return State{}, err
	}
	if !ok {
		return State{}, ErrNotFound
	}
	cur, err := s.State(ctx, alertID)
	if err != nil {
		return State{}, err
	}
	if cur.Version != ch.ExpectedVersion {
		return State{}, &ConflictError{Expected: ch.ExpectedVersion, Current: cur.Version}
	}
	next, err := apply(cur, ch, actor)
	if err != nil {
		return State{}, err
	}
	now := s.opts.Now().UTC().Truncate(time.Millisecond)
	next.AlertID = alertID
	next.Version = cur.Version + 1
	next.ChangedBy = actor.Name
	next.ChangedAt = &now
	changeID := newChangeID()

	if s.beforeInsert != nil {
		s.beforeInsert()
	}
	token := alertID + "/v" + strconv.FormatUint(next.Version, 10)
	ictx := clickhouse.Context(ctx, clickhouse.WithSettings(clickhouse.Settings{
		"insert_deduplicate":         1,
		"insert_deduplication_token": token,
		// Deduplicate the view's block into alert_state as well.
		"deduplicate_blocks_in_dependent_materialized_views": 1,
	}))
	batch, err := s.conn.PrepareBatch(ictx, `INSERT INTO alert_state_history
(alert_id, version, status, assignee, disposition, note, changed_by, changed_at, change_id)`)
	if err != nil {
		return State{}, fmt.Errorf("write alert state: %w", err)
	}
	if err := batch.Append(alertID, next.Version, string(next.Status), next.Assignee, string(next.Disposition),
		next.Note, next.ChangedBy, now, changeID); err != nil {
		_ = batch.Abort()
		return State{}, fmt.Errorf("write alert state: %w", err)
	}
	if err := batch.Send(); err != nil {
		return State{}, fmt.Errorf("write alert state: %w", err)
	}

	// Did our row win version N+1?
	p := params{}
	p.str("alert", alertID)
	p.uint("version", next.Version)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT change_id FROM alert_state_history
WHERE alert_id = {alert:String} AND version = {version:UInt64} ORDER BY changed_at, change_id`)
	if err != nil {
		return State{}, fmt.Errorf("confirm alert state: %w", err)
	}
	defer rows.Close()
	var winner string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return State{}, fmt.Errorf("confirm alert state: %w", err)
		}
		if winner == "" {
			winner = id
		}
	}
	if err := rows.Err(); err != nil {
		return State{}, fmt.Errorf("confirm alert state: %w", err)
	}
	if winner != changeID {
		return State{}, &ConflictError{Expected: ch.ExpectedVersion, Current: next.Version}
	}
	return next, nil
}

func newChangeID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return hex.EncodeToString(b[:])
}

// CheckSchema verifies that the tables the API and reports use exist (and
// that migration 0031 ran), so `ehrwatch serve` fails at start, not on the
// first request, when `ehrwatch migrate` was not run.
func (s *Store) CheckSchema(ctx context.Context) error {
	want := []string{"access_events", "findings", "alerts", "alert_state", "alert_state_history",
		"users", "encounters", "api_audit", "case_history", "cases", "case_alerts", "allowlist", "allowlist_history"}
	p := params{}
	p.strs("tables", want)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT name FROM system.tables
WHERE database = currentDatabase() AND has({tables:Array(String)}, name)`)
	if err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	defer rows.Close()
	have := map[string]bool{}
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			return fmt.Errorf("check schema: %w", err)
		}
		have[n] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	var missing []string
	for _, t := range want {
		if !have[t] {
			missing = append(missing, t)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("check schema: missing tables %v; run `ehrwatch migrate`", missing)
	}
	var n uint64
	if err := s.conn.QueryRow(ctx, `SELECT count() FROM system.columns
WHERE database = currentDatabase() AND table = 'alert_state_history' AND name = 'change_id'`).Scan(&n); err != nil {
		return fmt.Errorf("check schema: %w", err)
	}
	if n == 0 {
		return errors.New("check schema: alert_state_history lacks change_id; run `ehrwatch migrate`")
	}
	return nil
}
