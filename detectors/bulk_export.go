package detectors

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

const bulkExportName = "bulk_export"

// BulkExportConfig configures the bulk_export detector: Count print or
// export actions by one user within Window fire once per burst. Users
// whose role or department maps to a DisclosureCategories category
// (release of information: printing and exporting records is their job)
// are held to DisclosureCount instead;
// their day-to-day print and export volume is judged by the volume
// detector against their own baseline and their peers'.
type BulkExportConfig struct {
	BaseConfig `yaml:",inline"`
	// Count is how many actions make a burst. 2–10000.
	Count int `yaml:"count"`
	// Window is the sliding event-time window the Count actions must fall
	// in (strictly less than Window from first to last). 1s–24h.
	Window time.Duration `yaml:"window"`
	// Actions are the actions counted; default print and export.
	Actions []schemas.Action `yaml:"actions"`
	// DisclosureCategories are the vocabulary categories (see Vocabulary)
	// whose work is disclosing records. Default release_of_information
	// (add him to extend it to all health information management staff,
	// coders included).
	DisclosureCategories []string `yaml:"disclosure_categories"`
	// DisclosureCount replaces Count for those users. Count–10000;
	// default 150.
	DisclosureCount int `yaml:"disclosure_count"`
}

// DefaultBulkExportConfig returns the bulk_export detector's defaults.
func DefaultBulkExportConfig() *BulkExportConfig {
	return &BulkExportConfig{
		BaseConfig:           BaseConfig{Enabled: true, Severity: schemas.SeverityHigh},
		Count:                20,
		Window:               10 * time.Minute,
		Actions:              []schemas.Action{schemas.ActionPrint, schemas.ActionExport},
		DisclosureCategories: []string{string(CategoryReleaseOfInformation)},
		DisclosureCount:      150,
	}
}

// Validate checks the configuration; keys are relative to the detector's
// (the config loader prefixes "detectors.bulk_export.").
func (c *BulkExportConfig) Validate() error {
	errs := []error{c.BaseConfig.Validate()}
	if c.Count < 2 || c.Count > 10000 {
		errs = append(errs, fieldErrorf("count", "must be between 2 and 10000 (got %d)", c.Count))
	}
	if c.Window < time.Second || c.Window > 24*time.Hour {
		errs = append(errs, fieldErrorf("window", "must be between 1s and 24h (got %s)", c.Window))
	}
	if _, err := categoryList(c.DisclosureCategories).set("disclosure_categories"); err != nil {
		errs = append(errs, err)
	}
	if c.DisclosureCount < c.Count || c.DisclosureCount > 10000 {
		errs = append(errs, fieldErrorf("disclosure_count", "must be between count (%d) and 10000 (got %d)", c.Count, c.DisclosureCount))
	}
	if len(c.Actions) == 0 {
		errs = append(errs, fieldErrorf("actions", "must list at least one action"))
	}
	for i, a := range c.Actions {
		if !a.Valid() {
			errs = append(errs, fieldErrorf(fmt.Sprintf("actions[%d]", i), "must be one of view, create, update, delete, print, export, query (got %q)", a))
		}
	}
	return errors.Join(errs...)
}

// BulkExport flags bursts of print/export actions: Count of them by one
// user within a sliding event-time Window.
//
// A burst starts when the Count most recent actions span less than Window
// and fires once, at that moment, with those actions' event ids. It lasts
// until the window empties, i.e. until an action arrives Window or more
// after the previous latest one; only then can the user fire again. So a
// user printing steadily faster than one per Window after a burst stays in
// that burst. The finding's window is [burst start, burst start + Window)
// and its id derives from the user and the burst start.
//
// Events may arrive slightly out of order: each user keeps the Count most
// recent action times in order; an action older than all of them when the
// buffer is full is ignored (it cannot make a newer burst).
//
// # Memory
//
// Only users with an action in the last Window have state: Count × 32 bytes
// (time, event id string header, action) plus the map entry, and a copy of
// each event id (one small allocation per counted action; views and
// other uncounted actions allocate nothing): ~1.6 KB at the default Count
// of 20 with 36-byte ids. FlushUntil forgets users whose window
// has emptied relative to the watermark; a late event for such a user
// (older than the watermark) starts a fresh buffer.
//
// BulkExport is not safe for concurrent use.
type BulkExport struct {
	cfg      BulkExportConfig
	env      Env
	locs     locationCache
	actions  [8]bool // indexed by bulkActionIndex
	disclose CategorySet

	users     map[string]*bulkUser
	lastSweep int64 // watermark (unix ns) of the last forgetting sweep
}

type bulkEntry struct {
	t      int64
	id     string
	action uint8 // bulkActionIndex
}

type bulkUser struct {
	entries    []bulkEntry // ascending by t, at most Count
	latest     int64
	burst      bool
	burstStart int64
}

func bulkActionIndex(a schemas.Action) int {
	return slices.Index(schemas.Actions, a) + 1 // 0 = unknown
}

var (
	printIdx  = uint8(bulkActionIndex(schemas.ActionPrint))
	exportIdx = uint8(bulkActionIndex(schemas.ActionExport))
)

// NewBulkExport builds a bulk_export detector from a validated
// configuration.
func NewBulkExport(cfg *BulkExportConfig, env Env) (*BulkExport, error) {
	if cfg == nil {
		cfg = DefaultBulkExportConfig()
	}
	if err := cfg.Validate(); err != nil {
		return nil, prefixErrors("detectors."+bulkExportName, err)
	}
	d := &BulkExport{
		cfg:       *cfg,
		env:       env,
		locs:      newLocationCache(env.Location),
		users:     make(map[string]*bulkUser),
		lastSweep: math.MinInt64,
	}
	d.cfg.Actions = slices.Clone(cfg.Actions)
	d.disclose, _ = categoryList(cfg.DisclosureCategories).set("disclosure_categories") // validated
	for _, a := range cfg.Actions {
		d.actions[bulkActionIndex(a)] = true
	}
	return d, nil
}

// Name returns "bulk_export".
func (d *BulkExport) Name() string { return bulkExportName }

// Detect adds a print/export action to the user's window and returns a
// finding when it completes a new burst.
func (d *BulkExport) Detect(_ context.Context, ev *schemas.AccessEvent) ([]schemas.Finding, error) {
	if !d.actions[bulkActionIndex(ev.Action)] || ev.UserID == "" {
		return nil, nil
	}
	t := eventNanos(ev.EventTime)
	win := int64(d.cfg.Window)
	count := d.countFor(ev)
	u := d.users[ev.UserID]
	switch {
	case u == nil:
		u = &bulkUser{entries: make([]bulkEntry, 0, count), latest: t}
		d.users[strings.Clone(ev.UserID)] = u
	case t-u.latest >= win: // the window emptied: any burst is over
		clear(u.entries)
		u.entries = u.entries[:0]
		u.burst = false
	}
	// Clone the id: a decoded event's strings share one allocation, and
	// keeping one of them would pin the whole event, patient id included.
	if !u.insert(bulkEntry{t: t, id: strings.Clone(ev.EventID), action: uint8(bulkActionIndex(ev.Action))}, count) {
		return nil, nil
	}
	u.latest = max(u.latest, t)
	n := len(u.entries)
	if u.burst || n < count || u.entries[n-1].t-u.entries[0].t >= win {
		return nil, nil
	}
	u.burst = true
	u.burstStart = u.entries[0].t
	return []schemas.Finding{d.finding(u, ev, count)}, nil
}

// countFor returns the burst size that applies to the event's user:
// DisclosureCount for disclosure staff, Count for everyone else.
func (d *BulkExport) countFor(ev *schemas.AccessEvent) int {
	if d.disclose == 0 {
		return d.cfg.Count
	}
	ref := refOf(d.env)
	var u *schemas.User
	if ev.UserRole == "" || ev.UserDepartment == "" {
		u, _ = eventUser(d.env, ref, ev)
	}
	if vocabOf(ref).UserCategories(ev, u).Intersects(d.disclose) {
		return d.cfg.DisclosureCount
	}
	return d.cfg.Count
}

// insert adds e keeping entries sorted and at most limit long; it reports
// false when e is older than every entry of a full buffer.
func (u *bulkUser) insert(e bulkEntry, limit int) bool {
	n := len(u.entries)
	if n > limit { // the user's limit shrank (a new role): keep the newest
		drop := n - limit
		copy(u.entries, u.entries[drop:])
		clear(u.entries[limit:])
		u.entries = u.entries[:limit]
		n = limit
	}
	if n == limit {
		if e.t < u.entries[0].t {
			return false
		}
		copy(u.entries, u.entries[1:])
		u.entries = u.entries[:n-1]
		n--
	}
	i := n
	for i > 0 && u.entries[i-1].t > e.t {
		i--
	}
	u.entries = append(u.entries, bulkEntry{})
	copy(u.entries[i+1:], u.entries[i:n])
	u.entries[i] = e
	return true
}

func (d *BulkExport) finding(u *bulkUser, ev *schemas.AccessEvent, count int) schemas.Finding {
	start := time.Unix(0, u.burstStart).UTC()
	end := start.Add(d.cfg.Window)
	last := u.entries[len(u.entries)-1].t
	span := time.Duration(last - u.burstStart)
	ids := make([]string, 0, min(len(u.entries), schemas.MaxFindingEventIDs))
	var prints, exports, other int
	for i, e := range u.entries {
		if i < schemas.MaxFindingEventIDs {
			ids = append(ids, e.id)
		}
		switch e.action {
		case printIdx:
			prints++
		case exportIdx:
			exports++
		default:
			other++
		}
	}
	loc := d.locs.get(ev.FacilityID)
	var b strings.Builder
	fmt.Fprintf(&b, "user %s", ev.UserID)
	ru, _ := refOf(d.env).User(ev.UserID)
	writeRoleDept(&b, ev, ru)
	var parts []string
	if prints > 0 {
		parts = append(parts, fmt.Sprintf("printed %d", prints))
	}
	if exports > 0 {
		parts = append(parts, fmt.Sprintf("exported %d", exports))
	}
	if other > 0 {
		parts = append(parts, fmt.Sprintf("made %d other counted actions on", other))
	}
	fmt.Fprintf(&b, " %s patient records within %s starting %s (threshold: %d within %s)",
		strings.Join(parts, " and "), span.Round(time.Second), start.In(loc).Format("2006-01-02 15:04:05 MST"),
		count, schemas.FormatDuration(d.cfg.Window))
	if count != d.cfg.Count {
		b.WriteString(", the threshold for staff whose work is disclosing records (detectors.bulk_export.disclosure_categories)")
	}
	score := schemas.ScoreWithin(d.cfg.Severity, 1-float64(span)/float64(d.cfg.Window))
	return schemas.Finding{
		FindingID:   schemas.FindingID(bulkExportName, []string{ev.UserID}, start, end),
		Detector:    bulkExportName,
		Severity:    d.cfg.Severity,
		Score:       score,
		FacilityID:  ev.FacilityID,
		UserID:      ev.UserID,
		WindowStart: start,
		WindowEnd:   end,
		EventIDs:    ids,
		Explanation: b.String(),
		Evidence: schemas.Evidence{
			Observed:  float64(len(u.entries)),
			Threshold: float64(count),
			Facts: map[string]string{
				"prints":         strconv.Itoa(prints),
				"exports":        strconv.Itoa(exports),
				"span_seconds":   strconv.FormatInt(int64(span/time.Second), 10),
				"window_seconds": strconv.FormatInt(int64(d.cfg.Window/time.Second), 10),
			},
		},
	}
}

// FlushUntil forgets users whose window has emptied by the watermark (no
// action within Window before it). It never returns findings: bursts fire
// in Detect. The sweep runs at most once per Window of watermark progress.
func (d *BulkExport) FlushUntil(_ context.Context, watermark time.Time) ([]schemas.Finding, error) {
	wm := eventNanos(watermark)
	win := int64(d.cfg.Window)
	if d.lastSweep != math.MinInt64 && wm-d.lastSweep < win {
		return nil, nil
	}
	d.lastSweep = wm
	for k, u := range d.users {
		if wm-u.latest >= win {
			delete(d.users, k)
		}
	}
	return nil, nil
}

const bulkExportSnapshotVersion = 1

// Snapshot writes every user's recent actions and burst state.
func (d *BulkExport) Snapshot(w io.Writer) error {
	s := newSnapWriter(w, bulkExportName, bulkExportSnapshotVersion)
	s.varint(d.lastSweep)
	keys := sortedKeys(d.users)
	s.uvarint(uint64(len(keys)))
	for _, k := range keys {
		u := d.users[k]
		s.str(k)
		s.varint(u.latest)
		s.boolean(u.burst)
		s.varint(u.burstStart)
		s.uvarint(uint64(len(u.entries)))
		for _, e := range u.entries {
			s.varint(e.t)
			s.str(e.id)
			s.uvarint(uint64(e.action))
		}
	}
	return s.finish()
}

// Restore replaces the state with a snapshot written by Snapshot. On error
// the state is left empty. Buffers longer than the configured Count keep
// their most recent entries.
func (d *BulkExport) Restore(r io.Reader) error {
	d.users = make(map[string]*bulkUser)
	d.lastSweep = math.MinInt64
	s, version := newSnapReader(r, bulkExportName)
	if s.err == nil && version != bulkExportSnapshotVersion {
		return fmt.Errorf("bulk_export snapshot version %d not supported (want %d)", version, bulkExportSnapshotVersion)
	}
	d.lastSweep = s.varint()
	n := s.count(1 << 32)
	for i := 0; i < n && s.err == nil; i++ {
		k := s.str()
		limit := max(d.cfg.Count, d.cfg.DisclosureCount)
		u := &bulkUser{entries: make([]bulkEntry, 0, d.cfg.Count)}
		u.latest = s.varint()
		u.burst = s.boolean()
		u.burstStart = s.varint()
		ne := s.count(10000)
		for j := 0; j < ne && s.err == nil; j++ {
			u.insert(bulkEntry{t: s.varint(), id: s.str(), action: uint8(s.uvarint())}, limit)
		}
		d.users[k] = u
	}
	if err := s.end(); err != nil {
		d.users = make(map[string]*bulkUser)
		d.lastSweep = math.MinInt64
		return fmt.Errorf("restore bulk_export: %w", err)
	}
	return nil
}
