package triage

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Alert is one alert with its current triage state.
type Alert struct {
	AlertID      string    `json:"alert_id"`
	Rule         string    `json:"rule"`
	Detector     string    `json:"detector"`
	Severity     string    `json:"severity"`
	Score        uint8     `json:"score"`
	FacilityID   string    `json:"facility_id"`
	UserID       string    `json:"user_id"`
	PatientID    string    `json:"patient_id,omitempty"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	FindingCount uint32    `json:"finding_count"`
	Explanation  string    `json:"explanation"`
	// Revision is the alert's own version (it grows as findings join it);
	// Triage.Version is the one a triage update must name.
	Revision uint64 `json:"revision"`
	Triage   State  `json:"triage"`
	// FindingIDs is filled in the detail only.
	FindingIDs []string `json:"finding_ids,omitempty"`
}

// AlertFilter selects alerts; zero fields do not filter.
type AlertFilter struct {
	Status Status
	// Statuses selects alerts in any of these statuses (with Status, both
	// must hold).
	Statuses    []Status
	MinSeverity schemas.Severity
	Detector    string
	UserID      string
	PatientID   string
	FacilityID  string
	// Department selects alerts about users of this department (users
	// table, compared trimmed and case-insensitively).
	Department string
	Assignee   string
	// Unassigned selects alerts nobody is assigned to.
	Unassigned bool
	// From and To select alerts active in [From, To): last_seen ≥ From and
	// first_seen < To.
	From, To time.Time
	// SeenBefore selects alerts whose first finding is older: first_seen <
	// SeenBefore (the queue's age filter).
	SeenBefore time.Time
	// ChangedSince selects alerts written (created, or grown by a new
	// finding) after this time.
	ChangedSince time.Time
	// Order is OrderNewest (default: first_seen descending, pages with
	// Cursor) or OrderRisk (severity, then score, highest first, then
	// oldest first; one page, no cursor).
	Order  AlertOrder
	Limit  int
	Cursor string
}

// AlertOrder is how ListAlerts sorts.
type AlertOrder string

// The orders.
const (
	OrderNewest AlertOrder = ""
	OrderRisk   AlertOrder = "risk"
)

// AlertPage is one page of alerts, newest (by first_seen) first.
type AlertPage struct {
	Alerts     []Alert `json:"alerts"`
	NextCursor string  `json:"next_cursor,omitempty"`
}

// AlertCounts counts alerts per triage status.
type AlertCounts struct {
	New     int `json:"new"`
	Triaged int `json:"triaged"`
	Closed  int `json:"closed"`
}

// Open is New + Triaged.
func (c AlertCounts) Open() int { return c.New + c.Triaged }

const alertSelect = `SELECT a.alert_id, a.rule, a.detector, a.severity, a.score, a.facility_id, a.user_id, a.patient_id,
       a.first_seen, a.last_seen, a.finding_count, a.finding_ids, a.explanation, a.version,
       s.alert_id, s.version, s.status, s.assignee, s.disposition, s.changed_by, s.changed_at
FROM (SELECT alert_id, rule, detector, severity, score, facility_id, user_id, patient_id, first_seen, last_seen,
             finding_count, finding_ids, explanation, version
      FROM alerts FINAL WHERE %s) AS a
LEFT JOIN (SELECT alert_id, version, status, assignee, disposition, changed_by, changed_at
           FROM alert_state FINAL WHERE %s) AS s ON s.alert_id = a.alert_id`

const alertCount = `SELECT if(s.alert_id = '', 'new', s.status) AS st, count()
FROM (SELECT alert_id FROM alerts FINAL WHERE %s) AS a
LEFT JOIN (SELECT alert_id, status, assignee FROM alert_state FINAL WHERE %s) AS s ON s.alert_id = a.alert_id`

// alertWhere is the SQL of a filter: conditions on the alerts subquery,
// on the alert_state subquery and on the join.
type alertWhere struct {
	p                        params
	inner, stateInner, outer []string
}

func (w alertWhere) query(tmpl string) string {
	q := fmt.Sprintf(tmpl, strings.Join(w.inner, " AND "), strings.Join(w.stateInner, " AND "))
	if len(w.outer) > 0 {
		q += "\nWHERE " + strings.Join(w.outer, " AND ")
	}
	return q
}

// where translates f (all but Limit, Cursor and Order); withStatus false
// leaves out the status conditions (for the counts per status).
func (f AlertFilter) where(withStatus bool) (alertWhere, error) {
	w := alertWhere{p: params{}, inner: []string{"1"}, stateInner: []string{"1"}}
	p := w.p
	if f.Detector != "" {
		p.str("detector", f.Detector)
		w.inner = append(w.inner, "detector = {detector:String}")
	}
	if f.UserID != "" {
		p.str("user", f.UserID)
		w.inner = append(w.inner, "user_id = {user:String}")
	}
	if f.PatientID != "" {
		p.str("patient", f.PatientID)
		w.inner = append(w.inner, "patient_id = {patient:String}")
	}
	if f.FacilityID != "" {
		p.str("facility", f.FacilityID)
		w.inner = append(w.inner, "facility_id = {facility:String}")
	}
	if f.Department != "" {
		p.str("department", strings.ToLower(strings.TrimSpace(f.Department)))
		w.inner = append(w.inner, "user_id IN (SELECT user_id FROM users FINAL WHERE lower(trimBoth(department)) = {department:String})")
	}
	if f.MinSeverity != "" {
		if !f.MinSeverity.Valid() {
			return w, invalid("severity", "must be one of info, low, medium, high, critical")
		}
		var sevs []string
		for _, sv := range []schemas.Severity{schemas.SeverityInfo, schemas.SeverityLow, schemas.SeverityMedium, schemas.SeverityHigh, schemas.SeverityCritical} {
			if sv.Rank() >= f.MinSeverity.Rank() {
				sevs = append(sevs, string(sv))
			}
		}
		p.strs("sevs", sevs)
		w.inner = append(w.inner, "has({sevs:Array(String)}, severity)")
	}
	if !f.From.IsZero() {
		p.time("from", f.From)
		w.inner = append(w.inner, "last_seen >= {from:DateTime64(3, 'UTC')}")
	}
	if !f.To.IsZero() {
		p.time("to", f.To)
		w.inner = append(w.inner, "first_seen < {to:DateTime64(3, 'UTC')}")
	}
	if !f.SeenBefore.IsZero() {
		p.time("seen_before", f.SeenBefore)
		w.inner = append(w.inner, "first_seen < {seen_before:DateTime64(3, 'UTC')}")
	}
	if !f.ChangedSince.IsZero() {
		p.time("changed_since", f.ChangedSince)
		w.inner = append(w.inner, "created_at > {changed_since:DateTime64(3, 'UTC')}")
	}
	if withStatus && f.Status != "" {
		if !f.Status.Valid() {
			return w, invalid("status", "must be one of new, triaged, closed")
		}
		p.str("status", string(f.Status))
		w.outer = append(w.outer, "if(s.alert_id = '', 'new', s.status) = {status:String}")
	}
	if withStatus && len(f.Statuses) > 0 {
		var sts []string
		for _, st := range f.Statuses {
			if !st.Valid() {
				return w, invalid("status", "must be one of new, triaged, closed")
			}
			sts = append(sts, string(st))
		}
		p.strs("statuses", sts)
		w.outer = append(w.outer, "has({statuses:Array(String)}, if(s.alert_id = '', 'new', s.status))")
	}
	switch {
	case f.Assignee != "" && f.Unassigned:
		return w, invalid("assignee", "give an assignee or ask for unassigned alerts, not both")
	case f.Assignee != "":
		p.str("assignee", f.Assignee)
		w.stateInner = append(w.stateInner, "assignee = {assignee:String}")
		w.outer = append(w.outer, "s.alert_id != ''")
	case f.Unassigned:
		w.outer = append(w.outer, "s.assignee = ''")
	}
	return w, nil
}

// ListAlerts returns one page of alerts matching f.
func (s *Store) ListAlerts(ctx context.Context, f AlertFilter) (AlertPage, error) {
	if f.Limit <= 0 {
		return AlertPage{}, invalid("limit", "must be > 0")
	}
	cur, err := decodeCursor(f.Cursor)
	if err != nil {
		return AlertPage{}, err
	}
	if f.Order != OrderNewest && f.Order != OrderRisk {
		return AlertPage{}, invalid("order", "must be newest or risk")
	}
	if f.Order == OrderRisk && cur != nil {
		return AlertPage{}, invalid("cursor", "only the newest-first order has pages")
	}
	w, err := f.where(true)
	if err != nil {
		return AlertPage{}, err
	}
	p := w.p
	if cur != nil {
		p.time("cur_t", cur.t)
		p.str("cur_id", cur.id)
		w.inner = append(w.inner, "(first_seen, alert_id) < ({cur_t:DateTime64(3, 'UTC')}, {cur_id:String})")
	}
	q := w.query(alertSelect)
	p.uint("limit", uint64(f.Limit)+1)
	if f.Order == OrderRisk {
		q += "\nORDER BY indexOf(['info', 'low', 'medium', 'high', 'critical'], a.severity) DESC, a.score DESC, a.first_seen, a.alert_id"
	} else {
		q += "\nORDER BY a.first_seen DESC, a.alert_id DESC"
	}
	q += "\nLIMIT {limit:UInt32}"
	rows, err := s.conn.Query(p.ctx(ctx), q)
	if err != nil {
		return AlertPage{}, fmt.Errorf("list alerts: %w", err)
	}
	alerts, err := scanAlerts(rows)
	if err != nil {
		return AlertPage{}, fmt.Errorf("list alerts: %w", err)
	}
	page := AlertPage{Alerts: alerts}
	if len(alerts) > f.Limit {
		page.Alerts = alerts[:f.Limit]
		if f.Order == OrderNewest {
			last := page.Alerts[f.Limit-1]
			page.NextCursor = encodeCursor(last.FirstSeen, last.AlertID)
		}
	}
	for i := range page.Alerts {
		page.Alerts[i].FindingIDs = nil
	}
	if page.Alerts == nil {
		page.Alerts = []Alert{}
	}
	return page, nil
}

// CountAlerts counts the alerts matching f per status (f's status filters,
// Limit, Cursor and Order are ignored).
func (s *Store) CountAlerts(ctx context.Context, f AlertFilter) (AlertCounts, error) {
	w, err := f.where(false)
	if err != nil {
		return AlertCounts{}, err
	}
	rows, err := s.conn.Query(w.p.ctx(ctx), w.query(alertCount)+"\nGROUP BY st")
	if err != nil {
		return AlertCounts{}, fmt.Errorf("count alerts: %w", err)
	}
	defer rows.Close()
	var c AlertCounts
	for rows.Next() {
		var st string
		var n uint64
		if err := rows.Scan(&st, &n); err != nil {
			return AlertCounts{}, fmt.Errorf("count alerts: %w", err)
		}
		switch Status(st) {
		case StatusNew:
			c.New += int(n)
		case StatusTriaged:
			c.Triaged += int(n)
		case StatusClosed:
			c.Closed += int(n)
		}
	}
	if err := rows.Err(); err != nil {
		return AlertCounts{}, fmt.Errorf("count alerts: %w", err)
	}
	return c, nil
}

func scanAlerts(rows driver.Rows) ([]Alert, error) {
	defer rows.Close()
	var out []Alert
	for rows.Next() {
		var a Alert
		var stateID, status, disp string
		var stateVersion uint64
		var changedAt time.Time
		if err := rows.Scan(&a.AlertID, &a.Rule, &a.Detector, &a.Severity, &a.Score, &a.FacilityID, &a.UserID, &a.PatientID,
			&a.FirstSeen, &a.LastSeen, &a.FindingCount, &a.FindingIDs, &a.Explanation, &a.Revision,
			&stateID, &stateVersion, &status, &a.Triage.Assignee, &disp, &a.Triage.ChangedBy, &changedAt); err != nil {
			return nil, err
		}
		a.FirstSeen, a.LastSeen = a.FirstSeen.UTC(), a.LastSeen.UTC()
		a.Triage.AlertID = a.AlertID
		if stateID == "" {
			a.Triage = initialState(a.AlertID)
		} else {
			a.Triage.Version = stateVersion
			a.Triage.Status = Status(status)
			a.Triage.Disposition = Disposition(disp)
			at := changedAt.UTC()
			a.Triage.ChangedAt = &at
		}
		out = append(out, a)
	}
	return out, rows.Err()
}

// Event is an access event as the API shows it, with whether a care
// relationship explains it.
type Event struct {
	schemas.AccessEvent
	Care Care `json:"care"`
}

// AlertDetail is an alert with its findings and their events.
type AlertDetail struct {
	Alert
	Findings []schemas.Finding `json:"findings"`
	Events   []Event           `json:"events"`
	// Truncated is set when the alert has more findings or events than the
	// detail shows; MissingEvents counts event ids no longer stored.
	Truncated     bool `json:"truncated,omitempty"`
	MissingEvents int  `json:"missing_events,omitempty"`
}

// PatientIDs returns the distinct patients the detail shows (for the audit).
func (d *AlertDetail) PatientIDs() []string {
	var ids []string
	if d.PatientID != "" {
		ids = append(ids, d.PatientID)
	}
	for _, e := range d.Events {
		ids = append(ids, e.PatientID)
	}
	slices.Sort(ids)
	return slices.Compact(ids)
}

// AlertDetail returns an alert with its triage state, findings and the
// underlying events; ErrNotFound for an unknown alert.
func (s *Store) AlertDetail(ctx context.Context, alertID string) (AlertDetail, error) {
	if err := CheckID("alert_id", alertID); err != nil {
		return AlertDetail{}, err
	}
	p := params{}
	p.str("alert", alertID)
	rows, err := s.conn.Query(p.ctx(ctx), fmt.Sprintf(alertSelect, "alert_id = {alert:String}", "alert_id = {alert:String}"))
	if err != nil {
		return AlertDetail{}, fmt.Errorf("read alert: %w", err)
	}
	alerts, err := scanAlerts(rows)
	if err != nil {
		return AlertDetail{}, fmt.Errorf("read alert: %w", err)
	}
	if len(alerts) == 0 {
		return AlertDetail{}, ErrNotFound
	}
	d := AlertDetail{Alert: alerts[0], Findings: []schemas.Finding{}, Events: []Event{}}
	fids := d.FindingIDs
	if len(fids) > s.opts.MaxDetailFindings {
		fids, d.Truncated = fids[:s.opts.MaxDetailFindings], true
	}
	if len(fids) > 0 {
		d.Findings, err = s.findingsByID(ctx, fids)
		if err != nil {
			return AlertDetail{}, err
		}
	}
	eids, truncated := DetailEventIDs(d.Findings, s.opts.MaxDetailEvents)
	d.Truncated = d.Truncated || truncated
	if len(eids) == 0 {
		return d, nil
	}
	ep := params{}
	ep.strs("ids", eids)
	evs, err := s.queryEvents(ctx, ep, "has({ids:Array(String)}, event_id)", "event_time, event_id", 0)
	if err != nil {
		return AlertDetail{}, err
	}
	d.MissingEvents = len(eids) - len(evs)
	explained, err := s.explainEvents(ctx, evs)
	if err != nil {
		return AlertDetail{}, err
	}
	for i, ev := range evs {
		d.Events = append(d.Events, Event{AccessEvent: ev, Care: explained[i].care})
	}
	return d, nil
}

func (s *Store) findingsByID(ctx context.Context, ids []string) ([]schemas.Finding, error) {
	p := params{}
	p.strs("ids", ids)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT finding_id, detector, severity, score, facility_id, user_id, patient_id,
       window_start, window_end, event_ids, explanation, evidence, suppressed, suppression_reason
FROM findings FINAL WHERE has({ids:Array(String)}, finding_id)
ORDER BY window_start, finding_id`)
	if err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	defer rows.Close()
	out := []schemas.Finding{}
	for rows.Next() {
		var f schemas.Finding
		var sev, evidence string
		if err := rows.Scan(&f.FindingID, &f.Detector, &sev, &f.Score, &f.FacilityID, &f.UserID, &f.PatientID,
			&f.WindowStart, &f.WindowEnd, &f.EventIDs, &f.Explanation, &evidence, &f.Suppressed, &f.SuppressionReason); err != nil {
			return nil, fmt.Errorf("read findings: %w", err)
		}
		f.Severity = schemas.Severity(sev)
		f.WindowStart, f.WindowEnd = f.WindowStart.UTC(), f.WindowEnd.UTC()
		if evidence != "" {
			// Evidence is written by ehrwatch itself; a row that does not
			// parse is shown without it rather than failing the detail.
			_ = json.Unmarshal([]byte(evidence), &f.Evidence)
		}
		out = append(out, f)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read findings: %w", err)
	}
	return out, nil
}

const eventColumns = `event_id, event_time, logged_time, source, facility_id, user_id, user_role, user_department,
       workstation_id, client_ip, patient_id, encounter_id, action, resource, break_glass, break_glass_reason, outcome`

// queryEvents reads access events (FINAL) matching where, ordered by order.
// limit 0 means no limit.
func (s *Store) queryEvents(ctx context.Context, p params, where, order string, limit int) ([]schemas.AccessEvent, error) {
	q := "SELECT " + eventColumns + "\nFROM access_events FINAL\nWHERE " + where + "\nORDER BY " + order
	if limit > 0 {
		p.uint("limit", uint64(limit))
		q += "\nLIMIT {limit:UInt32}"
	}
	rows, err := s.conn.Query(p.ctx(ctx), q)
	if err != nil {
		return nil, fmt.Errorf("read access events: %w", err)
	}
	defer rows.Close()
	var out []schemas.AccessEvent
	for rows.Next() {
		var e schemas.AccessEvent
		var action, outcome string
		var clientIP, encounter *string
		if err := rows.Scan(&e.EventID, &e.EventTime, &e.LoggedTime, &e.Source, &e.FacilityID, &e.UserID, &e.UserRole,
			&e.UserDepartment, &e.WorkstationID, &clientIP, &e.PatientID, &encounter, &action, &e.Resource,
			&e.BreakGlass, &e.BreakGlassReason, &outcome); err != nil {
			return nil, fmt.Errorf("read access events: %w", err)
		}
		e.EventTime = e.EventTime.UTC()
		if e.LoggedTime != nil {
			lt := e.LoggedTime.UTC()
			e.LoggedTime = &lt
		}
		if clientIP != nil {
			e.ClientIP = *clientIP
		}
		if encounter != nil {
			e.EncounterID = *encounter
		}
		e.Action, e.Outcome = schemas.Action(action), schemas.Outcome(outcome)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read access events: %w", err)
	}
	return out, nil
}

// explained is one event's care verdict and its user's reference record.
type explained struct {
	care Care
	user userInfo
}

// explainEvents decides, for each event, whether a care relationship
// explains it (and returns the users' reference records).
func (s *Store) explainEvents(ctx context.Context, evs []schemas.AccessEvent) ([]explained, error) {
	out := make([]explained, len(evs))
	if len(evs) == 0 {
		return out, nil
	}
	var users, patients []string
	minT, maxT := evs[0].EventTime, evs[0].EventTime
	for _, e := range evs {
		users = append(users, e.UserID)
		patients = append(patients, e.PatientID)
		if e.EventTime.Before(minT) {
			minT = e.EventTime
		}
		if e.EventTime.After(maxT) {
			maxT = e.EventTime
		}
	}
	slices.Sort(users)
	users = slices.Compact(users)
	slices.Sort(patients)
	patients = slices.Compact(patients)
	// Users and encounters are independent reads: one round trip.
	var ci careIndex
	var careErr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		ci, careErr = s.loadCare(ctx, patients, minT, maxT)
	}()
	ui, err := s.loadUsers(ctx, users)
	<-done
	if err != nil {
		return nil, err
	}
	if careErr != nil {
		return nil, careErr
	}
	for i, e := range evs {
		u := ui[e.UserID]
		dept := e.UserDepartment
		if dept == "" {
			dept = u.department
		}
		out[i] = explained{care: ci.explain(s, e.PatientID, e.UserID, dept, e.EventTime), user: u}
	}
	return out, nil
}

// userInfo is a users row as the reports need it.
type userInfo struct {
	firstName, lastName, role, department string
	known                                 bool
}

func (u userInfo) name() string {
	return strings.TrimSpace(u.firstName + " " + u.lastName)
}

func (s *Store) loadUsers(ctx context.Context, ids []string) (map[string]userInfo, error) {
	out := map[string]userInfo{}
	if len(ids) == 0 {
		return out, nil
	}
	p := params{}
	p.strs("ids", ids)
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT user_id, first_name, last_name, role, department
FROM users FINAL WHERE has({ids:Array(String)}, user_id)`)
	if err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		u := userInfo{known: true}
		if err := rows.Scan(&id, &u.firstName, &u.lastName, &u.role, &u.department); err != nil {
			return nil, fmt.Errorf("read users: %w", err)
		}
		out[id] = u
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read users: %w", err)
	}
	return out, nil
}

// DetailEventIDs are the ids of the events behind an alert's findings,
// sorted, each once, at most max of them (truncated says some were left
// out): the events an alert's detail shows.
func DetailEventIDs(findings []schemas.Finding, max int) (ids []string, truncated bool) {
	for _, f := range findings {
		ids = append(ids, f.EventIDs...)
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	if len(ids) > max {
		return ids[:max], true
	}
	return ids, false
}
