package detectors

import (
	"fmt"
	"math"
	"slices"
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
	locs       locationCache
	watermarks []int64 // per source partition, unix ns; math.MinInt64 before the first
	days       map[volBucketKey][]PeerDay
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
	s := &PeerStage{cfg: *vc, enabled: vc.Enabled, locs: newLocationCache(env.Location),
		watermarks: make([]int64, sources), days: map[volBucketKey][]PeerDay{}}
	for i := range s.watermarks {
		s.watermarks[i] = math.MinInt64
	}
	return s, nil
}

// Add records source's closed days (Engine.TakePeerDays) and its
// watermark (Engine.Watermark) after them. A watermark never moves back.
func (s *PeerStage) Add(source int, days []PeerDay, watermark time.Time) {
	for _, d := range days {
		k := volBucketKey{d.Facility, civilDay(d.Day)}
		s.days[k] = append(s.days[k], d)
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

// Pending returns how many facility-days wait for a source's watermark.
func (s *PeerStage) Pending() int { return len(s.days) }

func (s *PeerStage) judgeUntil(wm int64) []schemas.Finding {
	var keys []volBucketKey
	for k, ds := range s.days {
		if ds[0].End <= wm {
			keys = append(keys, k)
		}
	}
	slices.SortFunc(keys, func(a, b volBucketKey) int {
		if c := cmpInt64(s.days[a][0].End, s.days[b][0].End); c != 0 {
			return c
		}
		return strings.Compare(a.facility, b.facility)
	})
	var out []schemas.Finding
	for _, k := range keys {
		ds := s.days[k]
		delete(s.days, k)
		if !s.enabled {
			continue
		}
		slices.SortFunc(ds, func(a, b PeerDay) int { return strings.Compare(a.User, b.User) })
		out = judgeDays(&s.cfg, ds, s.locs.get(k.facility), out)
	}
	return out
}

// peerDeferrer is a detector that can leave its peer comparison to a
// PeerStage (the volume detector).
type peerDeferrer interface {
	deferPeers()
	takePeerDays() []PeerDay
}

func (v *Volume) deferPeers() { v.deferred = true }

func (v *Volume) takePeerDays() []PeerDay {
	out := v.days
	v.days = nil
	return out
}

// DeferPeers makes the detectors that compare a user with peers (volume)
// keep their closed days for TakePeerDays instead of judging them against
// this partition's users alone; a PeerStage shared by every partition's
// Engine judges them. Call it before the first Process. Days not yet taken
// are not part of a Snapshot.
func (e *Engine) DeferPeers() {
	for _, r := range e.runners {
		if p, ok := r.det.(peerDeferrer); ok {
			p.deferPeers()
		}
	}
}

// TakePeerDays returns the days closed since the last call (after
// DeferPeers), for PeerStage.Add together with Watermark.
func (e *Engine) TakePeerDays() []PeerDay {
	var out []PeerDay
	for _, r := range e.runners {
		if p, ok := r.det.(peerDeferrer); ok {
			out = append(out, p.takePeerDays()...)
		}
	}
	return out
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
