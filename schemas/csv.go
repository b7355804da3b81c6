package schemas

import (
	"bytes"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// CSVMapping describes one CSV or TSV access-log export: which column holds
// which AccessEvent field, how times are written, and the export's action
// vocabulary. It is read from a small YAML file (LoadCSVMapping); see
// docs/feeds.md and the shipped mappings in deployments/csv/.
type CSVMapping struct {
	// Delimiter is "," (default), "tab", ";" or "|".
	Delimiter string `yaml:"delimiter"`
	// Columns names the header of the column that holds each field. Required:
	// event_time, user_id, patient_id, action; facility_id unless FacilityID
	// is set. Without an event_id column, event_id is "csv-" and the first
	// 32 hex digits of the SHA-256 of the row's mapped values, so identical
	// rows are one event (deduplicated) and a re-export maps to the same ids.
	Columns CSVColumns `yaml:"columns"`
	// TimeFormat is "rfc3339" (default: with a UTC offset) or a Go time
	// layout ("01/02/2006 15:04:05", "2006-01-02 15:04:05").
	TimeFormat string `yaml:"time_format"`
	// TimeZone is the IANA zone of times written without an offset
	// (required then; there is no silent UTC).
	TimeZone string `yaml:"time_zone"`
	// Actions maps the export's action or metric values (compared without
	// regard to case and surrounding spaces) to view, create, update,
	// delete, print, export, query, or ignore (not a chart access: counted
	// and skipped). The canonical action names map to themselves; any other
	// value is a bad row (invalid_value action).
	Actions map[string]string `yaml:"actions"`
	// BreakGlassValues are the break_glass column values that mean true
	// (case-insensitive); default Y, YES, TRUE, T, 1. Anything else is
	// false.
	BreakGlassValues []string `yaml:"break_glass_values"`
	// FacilityID is the facility of every row when the export has no
	// facility column (a one-hospital export).
	FacilityID string `yaml:"facility_id"`
	// Source is the source of every row when there is no source column.
	Source string `yaml:"source"`

	loc     *time.Location
	actions map[string]Action // lower-case value → action ("" for ignore)
	bgTrue  map[string]bool
	comma   rune
}

// CSVColumns names the column of each field (empty: not in the export).
type CSVColumns struct {
	EventID          string `yaml:"event_id"`
	EventTime        string `yaml:"event_time"`
	LoggedTime       string `yaml:"logged_time"`
	Source           string `yaml:"source"`
	FacilityID       string `yaml:"facility_id"`
	UserID           string `yaml:"user_id"`
	UserRole         string `yaml:"user_role"`
	UserDepartment   string `yaml:"user_department"`
	WorkstationID    string `yaml:"workstation_id"`
	ClientIP         string `yaml:"client_ip"`
	PatientID        string `yaml:"patient_id"`
	EncounterID      string `yaml:"encounter_id"`
	Action           string `yaml:"action"`
	Resource         string `yaml:"resource"`
	BreakGlass       string `yaml:"break_glass"`
	BreakGlassReason string `yaml:"break_glass_reason"`
	Outcome          string `yaml:"outcome"`
}

// LoadCSVMapping reads and validates a mapping file. Unknown keys are
// errors.
func LoadCSVMapping(path string) (*CSVMapping, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("csv mapping: %w", err)
	}
	var m CSVMapping
	dec := yaml.NewDecoder(bytes.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("csv mapping %s: %w", path, err)
	}
	if err := m.Validate(); err != nil {
		return nil, fmt.Errorf("csv mapping %s: %w", path, err)
	}
	return &m, nil
}

// Validate reports every bad key by name, and prepares the mapping for
// NewCSVReader.
func (m *CSVMapping) Validate() error {
	var errs []error
	bad := func(key, format string, a ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...)))
	}
	switch m.Delimiter {
	case "", ",":
		m.comma = ','
	case "tab", "\t":
		m.comma = '\t'
	case ";", "|":
		m.comma = rune(m.Delimiter[0])
	default:
		bad("delimiter", `want ",", "tab", ";" or "|", got %q`, m.Delimiter)
	}
	for _, c := range []struct{ key, v string }{
		{"columns.event_time", m.Columns.EventTime}, {"columns.user_id", m.Columns.UserID},
		{"columns.patient_id", m.Columns.PatientID}, {"columns.action", m.Columns.Action},
	} {
		if c.v == "" {
			bad(c.key, "required")
		}
	}
	if m.Columns.FacilityID == "" && m.FacilityID == "" {
		bad("columns.facility_id", "required unless facility_id gives every row's facility")
	}
	if m.Columns.FacilityID != "" && m.FacilityID != "" {
		bad("facility_id", "set either facility_id or columns.facility_id, not both")
	}
	if len(m.FacilityID) > MaxIDLen || hasControl(m.FacilityID) || len(m.Source) > MaxIDLen || hasControl(m.Source) {
		bad("facility_id", "facility_id and source must be identifiers of at most %d bytes", MaxIDLen)
	}
	layout := m.TimeFormat
	if layout == "" || strings.EqualFold(layout, "rfc3339") {
		m.TimeFormat = "rfc3339"
	} else {
		probe := time.Date(2026, 3, 1, 13, 4, 5, 0, time.UTC).Format(layout)
		if _, err := time.Parse(layout, probe); err != nil || !strings.Contains(layout, "2006") {
			bad("time_format", "not a Go time layout with a 4-digit year (e.g. \"01/02/2006 15:04:05\")")
		}
	}
	hasOffset := m.TimeFormat == "rfc3339" || strings.Contains(layout, "Z07") || strings.Contains(layout, "-07")
	if m.TimeZone != "" {
		loc, err := time.LoadLocation(m.TimeZone)
		if err != nil {
			bad("time_zone", "unknown IANA zone %q", m.TimeZone)
		}
		m.loc = loc
	} else if !hasOffset {
		bad("time_zone", "required: time_format has no UTC offset (an IANA zone such as America/Chicago)")
	}
	m.actions = map[string]Action{}
	for _, a := range []Action{ActionView, ActionCreate, ActionUpdate, ActionDelete, ActionPrint, ActionExport, ActionQuery} {
		m.actions[string(a)] = a
	}
	for _, k := range sortedKeys(m.Actions) {
		v := m.Actions[k]
		key := strings.ToLower(strings.TrimSpace(k))
		switch v {
		case "ignore":
			m.actions[key] = ""
		case "view", "create", "update", "delete", "print", "export", "query":
			m.actions[key] = Action(v)
		default:
			bad("actions."+k, "want view, create, update, delete, print, export, query or ignore, got %q", v)
		}
	}
	m.bgTrue = map[string]bool{}
	vals := m.BreakGlassValues
	if len(vals) == 0 {
		vals = []string{"y", "yes", "true", "t", "1"}
	}
	for _, v := range vals {
		m.bgTrue[strings.ToLower(strings.TrimSpace(v))] = true
	}
	return errors.Join(errs...)
}

// CSVReader reads AccessEvents from a CSV/TSV export with a CSVMapping.
type CSVReader struct {
	m    *CSVMapping
	r    *csv.Reader
	col  [numEventFields + 1]int // column index per field (-1: absent); +1: logged_time
	line int
}

const csvLoggedTime = int(numEventFields)

// NewCSVReader reads the header row and checks that every mapped column is
// there (the error names the mapping key, and the column name from the
// mapping file, never row content).
func NewCSVReader(r io.Reader, m *CSVMapping) (*CSVReader, error) {
	if m.actions == nil {
		if err := m.Validate(); err != nil {
			return nil, err
		}
	}
	cr := csv.NewReader(r)
	cr.Comma = m.comma
	cr.ReuseRecord = true
	header, err := cr.Read()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("csv: empty export (no header row)")
		}
		return nil, fmt.Errorf("csv: header row: %w", errors.Unwrap(err))
	}
	at := map[string]int{}
	for i, h := range header {
		h = strings.TrimSpace(strings.TrimPrefix(h, "\ufeff"))
		if _, dup := at[h]; !dup {
			at[h] = i
		}
	}
	c := &CSVReader{m: m, r: cr, line: 1}
	cols := m.Columns
	for i := range c.col {
		c.col[i] = -1
	}
	var missing []string
	for _, x := range []struct {
		f    int
		key  string
		name string
	}{
		{int(fEventID), "event_id", cols.EventID}, {int(fEventTime), "event_time", cols.EventTime},
		{int(csvLoggedTime), "logged_time", cols.LoggedTime}, {int(fSource), "source", cols.Source},
		{int(fFacilityID), "facility_id", cols.FacilityID}, {int(fUserID), "user_id", cols.UserID},
		{int(fUserRole), "user_role", cols.UserRole}, {int(fUserDepartment), "user_department", cols.UserDepartment},
		{int(fWorkstationID), "workstation_id", cols.WorkstationID}, {int(fClientIP), "client_ip", cols.ClientIP},
		{int(fPatientID), "patient_id", cols.PatientID}, {int(fEncounterID), "encounter_id", cols.EncounterID},
		{int(fAction), "action", cols.Action}, {int(fResource), "resource", cols.Resource},
		{int(fBreakGlass), "break_glass", cols.BreakGlass}, {int(fBreakGlassReason), "break_glass_reason", cols.BreakGlassReason},
		{int(fOutcome), "outcome", cols.Outcome},
	} {
		if x.name == "" {
			continue
		}
		i, ok := at[x.name]
		if !ok {
			missing = append(missing, fmt.Sprintf("columns.%s (%q)", x.key, x.name))
			continue
		}
		c.col[x.f] = i
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("csv: the header lacks the mapped column(s) %s", strings.Join(missing, ", "))
	}
	return c, nil
}

// Next returns the next row's event and its 1-based line number. At the
// end it returns io.EOF. A bad row gives a *DecodeError (with Line set;
// class and field only, never content) and a row that is not a chart
// access a *NotAccessError; reading can go on after both. Any other error
// is an I/O error.
func (c *CSVReader) Next() (*AccessEvent, int, error) {
	rec, err := c.r.Read()
	if err != nil {
		var pe *csv.ParseError
		if errors.As(err, &pe) {
			r := rCSVQuote
			if errors.Is(pe.Err, csv.ErrFieldCount) {
				r = rCSVFieldCount
			}
			de := newErr("", ClassSyntax, r, -1)
			de.Line = pe.StartLine
			return nil, pe.StartLine, de
		}
		return nil, 0, err
	}
	line, _ := c.r.FieldPos(0)
	ev, de := c.row(rec)
	if de != nil {
		if na, ok := de.(*NotAccessError); ok {
			return nil, line, na
		}
		d := de.(*DecodeError)
		d.Line = line
		return nil, line, d
	}
	return ev, line, nil
}

func (c *CSVReader) get(rec []string, f int) string {
	if i := c.col[f]; i >= 0 && i < len(rec) {
		return strings.TrimSpace(rec[i])
	}
	return ""
}

func (c *CSVReader) time(v, field string) (time.Time, error) {
	if v == "" {
		return time.Time{}, newErr(field, ClassMissingField, rEmpty, -1)
	}
	var t time.Time
	if c.m.TimeFormat == "rfc3339" {
		var r reason
		if t, r = parseTime([]byte(v)); r != rNone {
			return time.Time{}, newErr(field, ClassInvalidTime, r, -1)
		}
		return t, nil
	}
	loc := c.m.loc
	if loc == nil {
		loc = time.UTC // unreachable: Validate requires a zone for offset-less layouts
	}
	t, err := time.ParseInLocation(c.m.TimeFormat, v, loc)
	if err != nil {
		return time.Time{}, newErr(field, ClassInvalidTime, rTimeFormat, -1)
	}
	if wall, err := time.Parse(c.m.TimeFormat, v); err == nil && t.Location() == loc {
		// A wall-clock time skipped by a daylight-saving change is
		// normalised by Go to another hour: refuse it rather than guess.
		y, mo, d := t.Date()
		wy, wmo, wd := wall.Date()
		if y != wy || mo != wmo || d != wd || t.Hour() != wall.Hour() || t.Minute() != wall.Minute() {
			return time.Time{}, newErr(field, ClassInvalidTime, rLocalTimeGap, -1)
		}
	}
	if !InTimeRange(t) {
		return time.Time{}, newErr(field, ClassInvalidTime, rTimeRange, -1)
	}
	return t, nil
}

func (c *CSVReader) row(rec []string) (*AccessEvent, error) {
	m := c.m
	rawAction := c.get(rec, int(fAction))
	if rawAction == "" {
		return nil, newErr("action", ClassMissingField, rEmpty, -1)
	}
	action, ok := m.actions[strings.ToLower(rawAction)]
	if !ok {
		return nil, newErr("action", ClassInvalidValue, rUnmappedAction, -1)
	}
	if action == "" {
		return nil, &NotAccessError{Reason: IgnoreMappedAction}
	}
	if c.get(rec, int(fPatientID)) == "" {
		if action == ActionQuery {
			return nil, &NotAccessError{Reason: IgnoreQueryWithoutPatient}
		}
		return nil, &NotAccessError{Reason: IgnoreNoPatient}
	}
	h := new(struct {
		ev AccessEvent
		lt time.Time
	})
	ev := &h.ev
	ev.Action = action
	var err error
	if ev.EventTime, err = c.time(c.get(rec, int(fEventTime)), "event_time"); err != nil {
		return nil, err
	}
	if v := c.get(rec, csvLoggedTime); v != "" {
		if h.lt, err = c.time(v, "logged_time"); err != nil {
			return nil, err
		}
		ev.LoggedTime = &h.lt
	}
	ev.Source = c.get(rec, int(fSource))
	if ev.Source == "" {
		ev.Source = m.Source
	}
	ev.FacilityID = c.get(rec, int(fFacilityID))
	if c.col[fFacilityID] < 0 {
		ev.FacilityID = m.FacilityID
	}
	ev.UserID = c.get(rec, int(fUserID))
	ev.UserRole = c.get(rec, int(fUserRole))
	ev.UserDepartment = c.get(rec, int(fUserDepartment))
	ev.WorkstationID = c.get(rec, int(fWorkstationID))
	ev.ClientIP = c.get(rec, int(fClientIP))
	ev.PatientID = c.get(rec, int(fPatientID))
	ev.EncounterID = c.get(rec, int(fEncounterID))
	ev.Resource = c.get(rec, int(fResource))
	ev.BreakGlass = m.bgTrue[strings.ToLower(c.get(rec, int(fBreakGlass)))]
	if ev.BreakGlass {
		ev.BreakGlassReason = c.get(rec, int(fBreakGlassReason))
	}
	ev.Outcome = OutcomeSuccess
	switch strings.ToLower(c.get(rec, int(fOutcome))) {
	case "", "success":
	case "failure":
		ev.Outcome = OutcomeFailure
	default:
		return nil, newErr("outcome", ClassInvalidValue, rUnknownOutcome, -1)
	}
	ev.EventID = c.get(rec, int(fEventID))
	if c.col[fEventID] < 0 {
		ev.EventID = csvEventID(ev)
	}
	if de := ev.validate(checkEncoding | checkControl); de != nil {
		return nil, de
	}
	return ev, nil
}

// csvEventID derives a stable event id from an event's mapped values.
func csvEventID(ev *AccessEvent) string {
	h := sha256.New()
	for _, s := range []string{ev.EventTime.UTC().Format(time.RFC3339Nano), ev.Source, ev.FacilityID, ev.UserID, ev.UserRole,
		ev.UserDepartment, ev.WorkstationID, ev.ClientIP, ev.PatientID, ev.EncounterID, string(ev.Action), ev.Resource,
		fmt.Sprint(ev.BreakGlass), ev.BreakGlassReason, string(ev.Outcome)} {
		h.Write([]byte(s))
		h.Write([]byte{0x1f})
	}
	return "csv-" + hex.EncodeToString(h.Sum(nil))[:32]
}
