package alerting

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Store persists alerts and delivery dead letters. ClickHouseStore is the
// production implementation; tests may substitute their own.
type Store interface {
	// WriteAlerts inserts the rows in one batch. Rows of one alert with a
	// higher version supersede lower ones.
	WriteAlerts(ctx context.Context, alerts []Alert) error
	// WriteDeliveryFailures inserts dead letters in one batch.
	WriteDeliveryFailures(ctx context.Context, failures []DeliveryFailure) error
}

// DeliveryFailure is one alert version an output could not deliver: a row
// of alert_delivery_failures. It never holds payloads or response bodies.
type DeliveryFailure struct {
	Output  string
	AlertID string
	Version uint64
	// Attempts made; 0 when the alert was dropped before any attempt.
	Attempts uint32
	// ErrorClass is one of the Class* constants.
	ErrorClass string
	// HTTPStatus is the last HTTP status, 0 when none.
	HTTPStatus uint16
	// FirstAttemptAt is zero when no attempt was made.
	FirstAttemptAt time.Time
	FailedAt       time.Time
}

// ClickHouseStore writes to the alerts and alert_delivery_failures tables
// created by the migrations (0004, 0020), and keeps the engine's state in
// alert_engine_state and alert_findings (0060): it is a StateStore.
type ClickHouseStore struct {
	conn driver.Conn
}

// NewClickHouseStore returns a store on conn; the caller keeps ownership
// of conn and closes it after Manager.Close.
func NewClickHouseStore(conn driver.Conn) *ClickHouseStore {
	return &ClickHouseStore{conn: conn}
}

const insertAlerts = `INSERT INTO alerts (alert_id, rule, detector, severity, score, facility_id, user_id, patient_id,
 first_seen, last_seen, finding_count, finding_ids, explanation, version, notified_version, summary)`

// WriteAlerts implements Store.
func (s *ClickHouseStore) WriteAlerts(ctx context.Context, alerts []Alert) error {
	if len(alerts) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, insertAlerts)
	if err != nil {
		return storeError("prepare alerts insert", err)
	}
	defer func() { _ = batch.Abort() }()
	for i := range alerts {
		a := &alerts[i]
		ids := a.FindingIDs
		if ids == nil {
			ids = []string{}
		}
		if err := batch.Append(a.AlertID, a.Rule, a.Detector, string(a.Severity), a.Score, a.FacilityID,
			a.UserID, a.PatientID, a.FirstSeen.UTC(), a.LastSeen.UTC(), a.FindingCount, ids, a.Explanation, a.Version, a.NotifiedVersion, a.Summary); err != nil {
			return storeError("append alert row", err)
		}
	}
	if err := batch.Send(); err != nil {
		return storeError(fmt.Sprintf("insert %d alerts", len(alerts)), err)
	}
	return nil
}

// LoadState implements StateStore: one query for all the keys.
func (s *ClickHouseStore) LoadState(ctx context.Context, keys StateKeys) ([]StateRecord, error) {
	if keys.empty() {
		return nil, nil
	}
	groups, users, patients := keys.Groups, keys.Users, keys.Patients
	for _, l := range []*[]string{&groups, &users, &patients} {
		if *l == nil {
			*l = []string{}
		}
	}
	rows, err := s.conn.Query(ctx, `SELECT kind, key, version, data FROM alert_engine_state FINAL
 WHERE (kind = 'group' AND has(?, key)) OR (kind = 'risk' AND has(?, key)) OR (kind = 'surge' AND has(?, key))`,
		groups, users, patients)
	if err != nil {
		return nil, storeError("load alert state", err)
	}
	defer rows.Close()
	var out []StateRecord
	for rows.Next() {
		var r StateRecord
		var data string
		if err := rows.Scan(&r.Kind, &r.Key, &r.Version, &data); err != nil {
			return nil, storeError("read alert state", err)
		}
		r.Data = []byte(data)
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, storeError("read alert state", err)
	}
	return out, nil
}

// WriteState implements StateStore: the alerts and memberships first (in
// parallel), then the state, so state never claims an alert row that is
// not there.
func (s *ClickHouseStore) WriteState(ctx context.Context, recs []StateRecord, alerts []Alert, members []Membership) error {
	var wg sync.WaitGroup
	var alertsErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		alertsErr = s.WriteAlerts(ctx, alerts)
	}()
	membersErr := s.writeMembers(ctx, members)
	wg.Wait()
	if err := errors.Join(alertsErr, membersErr); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO alert_engine_state (kind, key, version, data)")
	if err != nil {
		return storeError("prepare alert state insert", err)
	}
	defer func() { _ = batch.Abort() }()
	for _, r := range recs {
		if err := batch.Append(r.Kind, r.Key, r.Version, string(r.Data)); err != nil {
			return storeError("append alert state row", err)
		}
	}
	if err := batch.Send(); err != nil {
		return storeError(fmt.Sprintf("insert %d alert state rows", len(recs)), err)
	}
	return nil
}

const alertColumns = `a.alert_id, a.rule, a.detector, a.severity, a.score, a.facility_id, a.user_id, a.patient_id,
 a.first_seen, a.last_seen, a.finding_count, a.finding_ids, a.explanation, a.summary, a.version, a.notified_version`

// triageStates is each alert's current triage status, its state version,
// when it last changed, and the version of its last row that was not
// closed (0 when it was closed straight away): the key of its closing.
const triageStates = `SELECT alert_id, argMax(status, version) AS cur_status, max(version) AS state_version,
 argMax(changed_at, version) AS closed_at, maxIf(version, status != 'closed') AS open_version
 FROM alert_state_history GROUP BY alert_id`

// FiringAlerts implements LifecycleStore.
func (s *ClickHouseStore) FiringAlerts(ctx context.Context) ([]Alert, error) {
	rows, err := s.conn.Query(ctx, `SELECT `+alertColumns+`
 FROM (SELECT * FROM alerts FINAL WHERE notified_version > 0) AS a
 LEFT JOIN (`+triageStates+`) AS t ON t.alert_id = a.alert_id
 WHERE t.cur_status != 'closed' ORDER BY a.alert_id`)
	if err != nil {
		return nil, storeError("query firing alerts", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		if err := scanAlert(rows, &a); err != nil {
			return nil, storeError("read firing alerts", err)
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, storeError("read firing alerts", err)
	}
	return out, nil
}

// ClosedAlerts implements LifecycleStore.
func (s *ClickHouseStore) ClosedAlerts(ctx context.Context, output string) ([]Alert, error) {
	rows, err := s.conn.Query(ctx, `SELECT `+alertColumns+`, t.closed_at, t.open_version
 FROM (SELECT * FROM alerts FINAL WHERE notified_version > 0) AS a
 INNER JOIN (`+triageStates+`) AS t ON t.alert_id = a.alert_id
 LEFT JOIN (SELECT alert_id, max(state_version) AS done FROM alert_lifecycle
            WHERE output = ? AND kind = 'resolved' GROUP BY alert_id) AS l ON l.alert_id = a.alert_id
 WHERE t.cur_status = 'closed' AND l.done <= t.open_version ORDER BY a.alert_id`, output)
	if err != nil {
		return nil, storeError("query closed alerts", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		if err := scanAlert(rows, &a, &a.ResolvedAt, &a.CloseKey); err != nil {
			return nil, storeError("read closed alerts", err)
		}
		a.Resolved, a.Change = true, ChangeResolved
		a.ResolvedAt = a.ResolvedAt.UTC()
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, storeError("read closed alerts", err)
	}
	return out, nil
}

// MarkResolved implements LifecycleStore: the closing is recorded under a
// state version above its key, so ClosedAlerts no longer returns it.
func (s *ClickHouseStore) MarkResolved(ctx context.Context, output string, a Alert) error {
	if err := s.conn.Exec(ctx, `INSERT INTO alert_lifecycle (output, alert_id, kind, state_version) VALUES (?, ?, 'resolved', ?)`,
		output, a.AlertID, a.CloseKey+1); err != nil {
		return storeError("record resolved alert", err)
	}
	return nil
}

func (s *ClickHouseStore) writeMembers(ctx context.Context, members []Membership) error {
	if len(members) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO alert_findings (finding_id, alert_id, rule)")
	if err != nil {
		return storeError("prepare alert findings insert", err)
	}
	defer func() { _ = batch.Abort() }()
	for _, m := range members {
		if err := batch.Append(m.FindingID, m.AlertID, m.Rule); err != nil {
			return storeError("append alert finding row", err)
		}
	}
	if err := batch.Send(); err != nil {
		return storeError(fmt.Sprintf("insert %d alert findings", len(members)), err)
	}
	return nil
}

// MarkDelivered implements LifecycleStore.
func (s *ClickHouseStore) MarkDelivered(ctx context.Context, sent []Sent) error {
	batch, err := s.conn.PrepareBatch(ctx, "INSERT INTO alert_lifecycle (output, alert_id, kind, state_version)")
	if err != nil {
		return storeError("prepare delivered insert", err)
	}
	defer func() { _ = batch.Abort() }()
	for _, x := range sent {
		if err := batch.Append(x.Output, x.AlertID, "notified", x.Version); err != nil {
			return storeError("append delivered row", err)
		}
	}
	if err := batch.Send(); err != nil {
		return storeError(fmt.Sprintf("insert %d delivered rows", len(sent)), err)
	}
	return nil
}

// PendingNotifications implements LifecycleStore. The alert goes out
// under its notified version, so the resend carries the original key.
func (s *ClickHouseStore) PendingNotifications(ctx context.Context, output string, minAge, maxAge time.Duration) ([]Alert, error) {
	rows, err := s.conn.Query(ctx, `SELECT `+alertColumns+`, d.done
 FROM (SELECT * FROM alerts FINAL WHERE notified_version > 0
       AND created_at < now64(3) - toIntervalSecond(?) AND created_at >= now64(3) - toIntervalSecond(?)) AS a
 LEFT JOIN (SELECT alert_id, max(state_version) AS done FROM alert_lifecycle
            WHERE output = ? AND kind = 'notified' GROUP BY alert_id) AS d ON d.alert_id = a.alert_id
 LEFT JOIN (SELECT alert_id, max(version) AS failed FROM alert_delivery_failures
            WHERE output = ? AND error_class NOT IN ('shutdown', 'queue_full') GROUP BY alert_id) AS f ON f.alert_id = a.alert_id
 WHERE d.done < a.notified_version AND f.failed < a.notified_version ORDER BY a.alert_id`,
		int64(minAge/time.Second), int64(maxAge/time.Second), output, output)
	if err != nil {
		return nil, storeError("query pending notifications", err)
	}
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var done uint64
		if err := scanAlert(rows, &a, &done); err != nil {
			return nil, storeError("read pending notifications", err)
		}
		a.Version, a.Notify, a.Change = a.NotifiedVersion, true, ChangeUpdated
		if done == 0 {
			a.Change = ChangeNew // this output never got any version of it
		}
		out = append(out, a)
	}
	if err := rows.Err(); err != nil {
		return nil, storeError("read pending notifications", err)
	}
	return out, nil
}

// FindingsWithoutAlert implements LifecycleStore.
func (s *ClickHouseStore) FindingsWithoutAlert(ctx context.Context, rules []RuleConfig, lookback, grace time.Duration) (uint64, error) {
	var conds []string
	var args []any
	for _, r := range rules {
		if r.MinCount > 1 {
			continue // a lone finding legitimately raises nothing
		}
		var sevs []string
		for _, sv := range []schemas.Severity{schemas.SeverityInfo, schemas.SeverityLow, schemas.SeverityMedium, schemas.SeverityHigh, schemas.SeverityCritical} {
			if sv.Rank() >= r.MinSeverity.Rank() {
				sevs = append(sevs, string(sv))
			}
		}
		c := "(has(?, severity)"
		args = append(args, sevs)
		if len(r.Detectors) > 0 {
			ds := make([]string, len(r.Detectors))
			for i, d := range r.Detectors {
				ds[i] = strings.TrimSpace(d)
			}
			c += " AND has(?, detector)"
			args = append(args, ds)
		}
		if slices.Contains(r.GroupBy, GroupByUser) {
			c += " AND user_id != ''"
		}
		if slices.Contains(r.GroupBy, GroupByPatient) {
			c += " AND patient_id != ''"
		}
		conds = append(conds, c+")")
	}
	if len(conds) == 0 {
		return 0, nil
	}
	args = append(args, int64(lookback/time.Second), int64(grace/time.Second))
	var n uint64
	err := s.conn.QueryRow(ctx, `SELECT count() FROM findings FINAL
 WHERE NOT suppressed AND (`+strings.Join(conds, " OR ")+`)
 AND detected_at >= now64(3) - toIntervalSecond(?) AND detected_at < now64(3) - toIntervalSecond(?)
 AND finding_id NOT IN (SELECT finding_id FROM alert_findings)`, args...).Scan(&n)
	if err != nil {
		return 0, storeError("count findings without alert", err)
	}
	return n, nil
}

func scanAlert(rows driver.Rows, a *Alert, extra ...any) error {
	var sev string
	dest := []any{&a.AlertID, &a.Rule, &a.Detector, &sev, &a.Score, &a.FacilityID, &a.UserID, &a.PatientID,
		&a.FirstSeen, &a.LastSeen, &a.FindingCount, &a.FindingIDs, &a.Explanation, &a.Summary, &a.Version, &a.NotifiedVersion}
	if err := rows.Scan(append(dest, extra...)...); err != nil {
		return err
	}
	a.Severity = schemas.Severity(sev)
	a.FirstSeen, a.LastSeen = a.FirstSeen.UTC(), a.LastSeen.UTC()
	return nil
}

const insertFailures = `INSERT INTO alert_delivery_failures (output, alert_id, version, attempts, error_class, http_status,
 first_attempt_at, failed_at)`

// WriteDeliveryFailures implements Store.
func (s *ClickHouseStore) WriteDeliveryFailures(ctx context.Context, failures []DeliveryFailure) error {
	if len(failures) == 0 {
		return nil
	}
	batch, err := s.conn.PrepareBatch(ctx, insertFailures)
	if err != nil {
		return storeError("prepare delivery failures insert", err)
	}
	defer func() { _ = batch.Abort() }()
	for i := range failures {
		f := &failures[i]
		var first *time.Time
		if !f.FirstAttemptAt.IsZero() {
			t := f.FirstAttemptAt.UTC()
			first = &t
		}
		if err := batch.Append(f.Output, f.AlertID, f.Version, f.Attempts, f.ErrorClass, f.HTTPStatus, first, f.FailedAt.UTC()); err != nil {
			return storeError("append delivery failure row", err)
		}
	}
	if err := batch.Send(); err != nil {
		return storeError(fmt.Sprintf("insert %d delivery failures", len(failures)), err)
	}
	return nil
}

// errStore is a store failure whose text carries no server message: the
// server can quote the rows it rejected, and those hold patient ids. The
// cause stays reachable through errors.As / errors.Is.
type errStore struct {
	msg   string
	cause error
}

func (e *errStore) Error() string { return e.msg }
func (e *errStore) Unwrap() error { return e.cause }

// storeError describes err by ClickHouse exception code or HTTP status,
// never by its message.
func storeError(op string, err error) error {
	var ex *clickhouse.Exception
	var he *clickhouse.HTTPError
	detail := "failed"
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		detail = "timed out"
	case errors.Is(err, context.Canceled):
		detail = "canceled"
	case errors.As(err, &ex):
		detail = fmt.Sprintf("clickhouse exception code %d", ex.Code)
		if ex.CodeName != "" {
			detail += " (" + ex.CodeName + ")"
		}
	case errors.As(err, &he):
		detail = fmt.Sprintf("clickhouse HTTP %d", he.StatusCode)
	default:
		detail = "failed (" + errClass(err) + ")"
	}
	return &errStore{msg: "alerting: " + op + ": " + detail, cause: err}
}
