package detectors

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// PeerDay is one user's closed facility-local day as the volume detector
// of the user's partition saw it: the day's counts, and the user's personal
// baseline over the worked days before it. The personal part depends only
// on the user's own events, which all go to one partition; the peer
// comparison needs every partition's PeerDays of that facility and day.
type PeerDay struct {
	Facility   string
	User       string
	Role       string
	Department string
	Day        int32 // facility-local calendar day (days since 1970-01-01)
	Start, End int64 // the day's bounds, unix ns
	Distinct   uint32
	Accesses   uint32
	Value      float64 // the configured metric
	// Median, Spread and HistoryDays are the personal baseline; computed
	// only when Value reaches min_count (below it nothing fires).
	Median, Spread float64
	HistoryDays    int
	EventIDs       []string
}

// PeerActivity is one user's UTC day as the break_glass detector of the
// user's partition saw it: active (any access) with a role, and how many
// break-glass accesses.
type PeerActivity struct {
	User       string `json:"user_id"`
	Role       string `json:"role"`
	Day        int64  `json:"day"` // UTC day index (days since 1970-01-01)
	BreakGlass uint32 `json:"break_glass"`
}

// PeerBreakGlass is a break-glass finding as the user's partition emitted
// it, without the comparison with peers, which the PeerStage adds as a
// later version of the finding.
type PeerBreakGlass struct {
	Finding schemas.Finding
	Role    string
	Day     int64 // UTC day index of the access
	Count   int   // the user's break-glass accesses in the window ending on Day
	Raise   int   // severity steps raised before the peer comparison
}

// PeerBatch is what an Engine hands a PeerStage (Engine.TakePeers).
type PeerBatch struct {
	Days       []PeerDay
	Activity   []PeerActivity
	BreakGlass []PeerBreakGlass
}

// PeerStage judges the volume detector's closed days against the whole
// peer group, whatever the number of partitions: every partition's Engine
// (after DeferPeers) hands it its closed days and its watermark, and the
// stage judges a facility-day once every partition's watermark has passed
// the day's end, so it holds every partition's days of that facility-day
// (a partition closes a day, and can add nothing to it, once its watermark
// passes the end). Its findings are therefore the same for 1, 4 or 12
// partitions, and for any interleaving of the partitions: what a day's
// judgement sees is fixed by the stream, not by timing.
//
// The price is delay: a day is judged when the slowest partition's
// watermark passes its end. A partition that receives no events holds
// every day back until Flush (see docs/detectors.md).
//
// A PeerStage is not safe for concurrent use: one goroutine calls Add,
// Ready and Flush.
type PeerStage struct {
	cfg        VolumeConfig
	enabled    bool
	bg         BreakGlassConfig
	locs       locationCache
	watermarks []int64                             // per source partition, unix ns; math.MinInt64 before the first
	judged     int64                               // everything ending at or before this has been judged; math.MinInt64 at first
	days       map[volBucketKey]map[string]PeerDay // by facility-day, by user
	act        map[int64]map[string]PeerActivity   // by UTC day, by user
	pendBG     map[string][]PeerBreakGlass         // by finding id, in arrival order
}

// NewPeerStage builds the stage for sources partitions, with the volume
// detector's configuration from cfg (its defaults when cfg has none) and
// env's time zones.
func NewPeerStage(cfg EngineConfig, env Env, sources int) (*PeerStage, error) {
	if sources < 1 {
		return nil, fmt.Errorf("detectors: peer stage needs at least one source partition (got %d)", sources)
	}
	vc := DefaultVolumeConfig()
	if c, ok := cfg.Detectors[volumeName]; ok {
		v, ok := c.(*VolumeConfig)
		if !ok {
			return nil, fmt.Errorf("detectors.%s: configuration of type %T", volumeName, c)
		}
		vc = v
	}
	if err := vc.Validate(); err != nil {
		return nil, prefixErrors("detectors."+volumeName, err)
	}
	bg := DefaultBreakGlassConfig()
	if c, ok := cfg.Detectors[breakGlassName]; ok {
		b, ok := c.(*BreakGlassConfig)
		if !ok {
			return nil, fmt.Errorf("detectors.%s: configuration of type %T", breakGlassName, c)
		}
		bg = b
	}
	s := &PeerStage{cfg: *vc, enabled: vc.Enabled, bg: *bg, locs: newLocationCache(env.Location),
		watermarks: make([]int64, sources), judged: math.MinInt64, days: map[volBucketKey]map[string]PeerDay{},
		act: map[int64]map[string]PeerActivity{}, pendBG: map[string][]PeerBreakGlass{}}
	for i := range s.watermarks {
		s.watermarks[i] = math.MinInt64
	}
	return s, nil
}

// Add records what source's Engine handed over (Engine.TakePeers) and its
// watermark (Engine.Watermark) after it. A watermark never moves back.
//
// Add ignores repeats, so a transport that delivers at least once (a
// partition re-read after a crash hands the same days over again) changes
// nothing: a user's day, a user's activity on a UTC day and a break-glass
// access (finding and event ids) are each held once, and anything for a
// day already judged is dropped (a partition hands a day over before its
// watermark passes the day's end, so the first delivery always arrives
// before the day is judged).
func (s *PeerStage) Add(source int, b PeerBatch, watermark time.Time) {
	for _, d := range b.Days {
		if d.End <= s.judged {
			continue
		}
		k := volBucketKey{d.Facility, civilDay(d.Day)}
		m := s.days[k]
		if m == nil {
			m = map[string]PeerDay{}
			s.days[k] = m
		}
		m[d.User] = d
	}
	for _, a := range b.Activity {
		m := s.act[a.Day]
		if m == nil {
			m = map[string]PeerActivity{}
			s.act[a.Day] = m
		}
		m[a.User] = a
	}
	for _, p := range b.BreakGlass {
		if bgReady(&p) <= s.judged {
			continue
		}
		id := p.Finding.FindingID
		if slices.ContainsFunc(s.pendBG[id], func(q PeerBreakGlass) bool { return slices.Equal(q.Finding.EventIDs, p.Finding.EventIDs) }) {
			continue
		}
		s.pendBG[id] = append(s.pendBG[id], p)
	}
	if !watermark.IsZero() {
		s.watermarks[source] = max(s.watermarks[source], eventNanos(watermark))
	}
}

// Ready judges every facility-day whose end every source's watermark has
// passed, and returns the findings, ordered by day end, facility, then
// user.
func (s *PeerStage) Ready() []schemas.Finding {
	return s.judgeUntil(slices.Min(s.watermarks))
}

// Flush judges every remaining facility-day: the end of the input, when
// every source has closed all its days (Engine.Flush).
func (s *PeerStage) Flush() []schemas.Finding {
	return s.judgeUntil(math.MaxInt64)
}

// Pending returns how many facility-days and break-glass findings wait
// for a source's watermark.
func (s *PeerStage) Pending() int { return len(s.days) + len(s.pendBG) }

func (s *PeerStage) judgeUntil(wm int64) []schemas.Finding {
	type bucket struct {
		key volBucketKey
		end int64
	}
	var ready []bucket
	for k, m := range s.days {
		for _, d := range m {
			if d.End <= wm {
				ready = append(ready, bucket{k, d.End})
			}
			break // every day of a facility-day has the same end
		}
	}
	slices.SortFunc(ready, func(a, b bucket) int {
		if c := cmpInt64(a.end, b.end); c != 0 {
			return c
		}
		return strings.Compare(a.key.facility, b.key.facility)
	})
	var out []schemas.Finding
	for _, b := range ready {
		m := s.days[b.key]
		delete(s.days, b.key)
		if !s.enabled {
			continue
		}
		ds := make([]PeerDay, 0, len(m))
		for _, d := range m {
			ds = append(ds, d)
		}
		slices.SortFunc(ds, func(a, b PeerDay) int { return strings.Compare(a.User, b.User) })
		out = judgeDays(&s.cfg, ds, s.locs.get(b.key.facility), out)
	}
	out = s.judgeBreakGlass(wm, out)
	s.judged = max(s.judged, wm)
	return out
}

// bgReady is when a break-glass access can be judged: the end of its
// finding's window (the user's partition adds no access to it after) or
// of its UTC day (every partition has handed that day's activity over),
// whichever is later; unix ns.
func bgReady(p *PeerBreakGlass) int64 {
	return max(eventNanos(p.Finding.WindowEnd), (p.Day+1)*86400*1e9)
}

// judgeBreakGlass adds the peer comparison to every break-glass finding
// whose window (the facility-local day) and UTC day every source has
// passed, so the user's partition can add no access to it and every
// partition has handed over its users' activity up to the access's day.
// The peers are the users of the same role (their role on their latest
// active day) active in the peer_window_days UTC days ending on the
// access's day, other than the user; their mean is over those whole days.
// One version per finding: the access that ranks highest after the
// comparison (the first of equals), with every access's event ids and
// their count, as the Engine folds repeats.
func (s *PeerStage) judgeBreakGlass(wm int64, out []schemas.Finding) []schemas.Finding {
	var ids []string
	for id, ps := range s.pendBG {
		ready := true
		for i := range ps {
			if bgReady(&ps[i]) > wm {
				ready = false
				break
			}
		}
		if ready {
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int {
		fa, fb := &s.pendBG[a][0].Finding, &s.pendBG[b][0].Finding
		if c := fa.WindowEnd.Compare(fb.WindowEnd); c != 0 {
			return c
		}
		return strings.Compare(a, b)
	})
	type peerSum struct{ peers, total int }
	peers := map[int64]map[string]peerSum{} // by day, by role: every active user's count
	latest := map[int64]map[string]PeerActivity{}
	window := int64(s.bg.PeerWindowDays)
	usersOn := func(day int64) map[string]PeerActivity {
		if m, ok := latest[day]; ok {
			return m
		}
		m := map[string]PeerActivity{}
		for d := day - window + 1; d <= day; d++ {
			for _, a := range s.act[d] {
				prev, ok := m[a.User]
				if ok {
					a.BreakGlass += prev.BreakGlass // a is the later day: its role wins
				}
				m[a.User] = a
			}
		}
		latest[day] = m
		sums := map[string]peerSum{}
		for _, a := range m {
			ps := sums[a.Role]
			ps.peers++
			ps.total += int(a.BreakGlass)
			sums[a.Role] = ps
		}
		peers[day] = sums
		return m
	}
	for _, id := range ids {
		ps := s.pendBG[id]
		delete(s.pendBG, id)
		var best schemas.Finding
		bestRank := -1
		var events []string
		for _, p := range ps {
			f := p.Finding
			users := usersOn(p.Day)
			sum := peers[p.Day][p.Role]
			n, total := sum.peers, sum.total
			if self, ok := users[f.UserID]; ok && self.Role == p.Role {
				n--
				total -= int(self.BreakGlass)
			}
			facts := make(map[string]string, len(f.Evidence.Facts)+3)
			for k, v := range f.Evidence.Facts {
				facts[k] = v
			}
			facts["peers"] = strconv.Itoa(n)
			f.Evidence.Facts = facts
			raise := p.Raise
			if n >= s.bg.PeerMinPeers {
				mean := float64(total) / float64(n)
				threshold := s.bg.PeerFactor * mean
				f.Evidence.PeerValue = mean
				f.Evidence.Threshold = max(threshold, float64(s.bg.PeerMinCount))
				facts["peer_mean"] = strconv.FormatFloat(mean, 'f', 2, 64)
				if p.Count >= s.bg.PeerMinCount && float64(p.Count) > threshold {
					raise++
					facts["peer_outlier"] = "true"
					f.Explanation = strings.TrimSuffix(f.Explanation, ".") + fmt.Sprintf("; the user broke the glass %d times in the last %d days, against a mean of %.2f among %d peers with role %s.",
						p.Count, s.bg.PeerWindowDays, mean, n, p.Role)
				}
			}
			f.Severity = RaiseSeverity(s.bg.Severity, raise)
			f.Score = f.Severity.DefaultScore()
			for _, e := range f.EventIDs {
				if len(events) < schemas.MaxFindingEventIDs && !slices.Contains(events, e) {
					events = append(events, e)
				}
			}
			if r := findingRank(f); r > bestRank {
				best, bestRank = f, r
			}
		}
		best.EventIDs = events
		if len(ps) > 1 {
			best.Evidence.Facts["accesses"] = strconv.Itoa(len(ps))
		}
		out = append(out, best)
	}
	// Activity older than any window still to be judged is dropped.
	if wm != math.MaxInt64 {
		oldest := wm/(86400*1e9) - window - 2
		for _, ps := range s.pendBG {
			for _, p := range ps {
				oldest = min(oldest, p.Day-window)
			}
		}
		for d := range s.act {
			if d < oldest {
				delete(s.act, d)
			}
		}
	} else {
		clear(s.act)
	}
	return out
}

// peerDeferrer is a detector that can leave its peer comparison to a
// PeerStage (volume, break_glass).
type peerDeferrer interface {
	deferPeers()
	takePeers(*PeerBatch)
}

func (v *Volume) deferPeers() { v.deferred = true }

func (v *Volume) takePeers(b *PeerBatch) {
	b.Days = append(b.Days, v.days...)
	v.days = nil
}

func (d *BreakGlass) deferPeers() { d.deferred = true }

func (d *BreakGlass) takePeers(b *PeerBatch) {
	b.Activity = append(b.Activity, d.pendAct...)
	b.BreakGlass = append(b.BreakGlass, d.pendBG...)
	d.pendAct, d.pendBG = nil, nil
}

// DeferPeers makes the detectors that compare a user with peers (volume,
// break_glass) hand what the comparison needs to TakePeers instead of
// comparing with this partition's users alone; a PeerStage shared by every
// partition's Engine compares with the whole peer group. Call it before
// the first Process (and before Restore). Take what they produced before
// a Snapshot: the days and findings not taken yet are not part of it (the
// detectors' own state, such as break_glass's open UTC days, is).
func (e *Engine) DeferPeers() {
	for _, r := range e.runners {
		if p, ok := r.det.(peerDeferrer); ok {
			p.deferPeers()
		}
	}
}

// TakePeers returns what the deferred detectors produced since the last
// call (after DeferPeers), for PeerStage.Add together with Watermark.
func (e *Engine) TakePeers() PeerBatch {
	var b PeerBatch
	for _, r := range e.runners {
		if p, ok := r.det.(peerDeferrer); ok {
			p.takePeers(&b)
		}
	}
	return b
}

// AdmitPeerFindings normalises a PeerStage's findings as the Engine does
// its own (score within the severity's band, allowlist at the window's
// end) and counts them; the stage's findings are one per user and day, so
// there is nothing to fold.
func (e *Engine) AdmitPeerFindings(fs []schemas.Finding) []schemas.Finding {
	ref := refOf(e.env)
	out := make([]schemas.Finding, 0, len(fs))
	for _, f := range fs {
		var r *runner
		for _, x := range e.runners {
			if x.name == f.Detector {
				r = x
			}
		}
		if r == nil {
			continue
		}
		dept := ""
		if u, ok := ref.User(f.UserID); ok {
			dept = u.Department
		}
		f.WindowStart, f.WindowEnd = f.WindowStart.UTC(), f.WindowEnd.UTC()
		f.Score = schemas.ClampScore(f.Severity, f.Score)
		allow := e.allowStat
		if e.allowSrc != nil {
			allow = e.allowSrc()
		}
		if allow.Apply(&f, dept, f.WindowEnd) {
			e.suppressed.Add(1)
		}
		r.findings.Add(1)
		out = append(out, f)
	}
	return out
}
