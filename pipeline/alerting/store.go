package alerting

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
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
 first_seen, last_seen, finding_count, finding_ids, explanation, version, notified_version)`

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
			a.UserID, a.PatientID, a.FirstSeen.UTC(), a.LastSeen.UTC(), a.FindingCount, ids, a.Explanation, a.Version, a.NotifiedVersion); err != nil {
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

// WriteState implements StateStore: the alerts and memberships first, then
// the state, so state never claims an alert row that is not there.
func (s *ClickHouseStore) WriteState(ctx context.Context, recs []StateRecord, alerts []Alert, members []Membership) error {
	if err := s.WriteAlerts(ctx, alerts); err != nil {
		return err
	}
	if len(members) > 0 {
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
