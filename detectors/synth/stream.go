package synth

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Background behaviour drawn per work session.
const (
	noiseSessionShare = 0.35 // sessions with one to three incidental unexplained charts
	bgBreakGlassShare = 0.04 // ED and ICU clinician sessions with a break-glass
	failureShare      = 0.002
	deleteShare       = 0.0008
)

// activeSession is a session being emitted.
type activeSession struct {
	t     int64 // time of items[pos], the heap key
	order int   // index in plan.sessions, the tie-breaker
	s     *session
	items []item
	pos   int
	ws    workstation
}

func (a *activeSession) next() int64 { return a.t }

// pendingEvent is an event waiting for its arrival time.
type pendingEvent struct {
	arrival int64
	seq     uint64
	ev      *schemas.AccessEvent
}

// autoKey identifies a label created on the fly for a naturally occurring
// confounder.
type autoKey struct {
	scenario string
	user     int32
	patient  int32
}

// streamer runs one pass of the simulation.
type streamer struct {
	p        *plan
	fn       func(*schemas.AccessEvent) error
	arr      *rand.Rand
	labels   []Label
	auto     map[autoKey]int32
	seq      []int
	prefix   []string
	emitted  uint64
	active   heap[*activeSession]
	pending  heap[pendingEvent]
	lateRate float64
	lateMax  int64
}

// run emits every event in arrival order and returns the ground truth.
func (p *plan) run(fn func(*schemas.AccessEvent) error) ([]Label, error) {
	st := &streamer{
		p: p, fn: fn, arr: newRand(p.cfg.Seed, streamArrival),
		auto: map[autoKey]int32{}, seq: make([]int, len(p.facs)), prefix: make([]string, len(p.facs)),
		lateRate: p.cfg.LateEventRate, lateMax: int64(p.cfg.LateMaxDelay),
	}
	st.active.less = func(a, b *activeSession) bool {
		if a.t != b.t {
			return a.t < b.t
		}
		return a.order < b.order
	}
	st.pending.less = func(a, b pendingEvent) bool {
		if a.arrival != b.arrival {
			return a.arrival < b.arrival
		}
		return a.seq < b.seq
	}
	for i, f := range p.facs {
		st.prefix[i] = "evt-" + f.id + "-"
	}
	st.labels = make([]Label, len(p.labels))
	for i, l := range p.labels {
		st.labels[i] = p.exportLabel(l)
	}
	next := 0
	for {
		// Activate every session that starts before the next item is due.
		if next < len(p.sessions) && (st.active.len() == 0 || p.sessions[next].start <= st.active.top().next()) {
			if a := st.activate(next); a != nil {
				st.active.push(a)
			}
			next++
			continue
		}
		if st.active.len() == 0 {
			break
		}
		a := st.active.top()
		it := a.items[a.pos]
		if err := st.emit(a, &it); err != nil {
			return nil, err
		}
		a.pos++
		if a.pos == len(a.items) {
			st.active.pop()
		} else {
			a.t = a.items[a.pos].t
			st.active.fix0()
		}
	}
	for st.pending.len() > 0 {
		if err := st.fn(st.pending.pop().ev); err != nil {
			return nil, err
		}
	}
	return st.finishLabels(), nil
}

// activate generates a session's items (work sessions are drawn from their
// own PCG stream, so a session's events do not depend on the others).
func (st *streamer) activate(order int) *activeSession {
	p := st.p
	s := &p.sessions[order]
	u := &p.users[s.user]
	f := p.facs[u.fac]
	r := newRand(p.cfg.Seed, streamSession+uint64(order))
	a := &activeSession{order: order, s: s}
	pool := f.ws[u.dept]
	a.ws = pool[r.IntN(len(pool))]
	if s.remote {
		// a VPN address from the remote-access pool
		a.ws = workstation{id: f.remoteWS.id, ip: f.remoteWS.ip + strconv.Itoa(10+r.IntN(240))}
	}
	var items []item
	if s.kind == sessScripted {
		items = s.items
	} else {
		items = p.workItems(s, r)
	}
	// keep what falls inside the simulated days
	lo := max(f.start, s.start)
	kept := items[:0:0]
	for _, it := range items {
		if it.t < lo {
			if it.t < f.start {
				continue
			}
			it.t = lo
		}
		if it.t >= f.end {
			continue
		}
		kept = append(kept, it)
	}
	if len(kept) == 0 {
		return nil
	}
	a.items, a.t = kept, kept[0].t
	return a
}

// workItems draws a work session's events: each assigned patient's touches
// (front-loaded: handoff and rounds happen early), each touch a view
// possibly followed by an update, a note, a print; plus incidental charts
// and, in the ED and ICU, the odd break-the-glass.
func (p *plan) workItems(s *session, r *rand.Rand) []item {
	u := &p.users[s.user]
	f := p.facs[u.fac]
	b := &behaviours[u.role]
	items := make([]item, 0, 64)
	add := func(t int64, pat, enc int32, act, res uint8, flags uint8) {
		items = append(items, item{t: msTime(max(t, s.start)), patient: pat, enc: enc, label: -1, action: act, resource: res, flags: flags})
	}
	for _, a := range s.work {
		for range a.touches {
			span := a.to - a.from
			var t int64
			if r.Float64() < 0.3 && span > 90*nsMinute {
				t = a.from + r.Int64N(90*nsMinute)
			} else {
				t = a.from + r.Int64N(max(1, span))
			}
			if r.Float64() < b.pQuery {
				add(t-5*int64(time.Second)-r.Int64N(35*int64(time.Second)), a.patient, a.enc, actQuery, resPatientList, 0)
			}
			var fl uint8
			if r.Float64() < failureShare {
				fl = flagFailure
			}
			add(t, a.patient, a.enc, actView, b.open[r.IntN(len(b.open))], fl)
			if r.Float64() < b.pUpdate {
				add(t+20*int64(time.Second)+r.Int64N(4*nsMinute), a.patient, a.enc, actUpdate, b.writeRes, 0)
			}
			if r.Float64() < b.pCreate {
				add(t+nsMinute+r.Int64N(7*nsMinute), a.patient, a.enc, actCreate, resNotes, 0)
			}
			if r.Float64() < b.pPrint {
				add(t+30*int64(time.Second)+r.Int64N(3*nsMinute), a.patient, a.enc, actPrint, b.printRes, 0)
			}
			if r.Float64() < deleteShare {
				add(t+nsMinute+r.Int64N(5*nsMinute), a.patient, a.enc, actDelete, resNotes, 0)
			}
		}
	}
	if len(s.work) > 0 && (u.dept == dED || u.dept == dICU) && (u.role == rNurse || u.role == rPhysician || u.role == rResident) && r.Float64() < bgBreakGlassShare {
		a := s.work[r.IntN(len(s.work))]
		t := a.from + r.Int64N(max(1, a.to-a.from))
		add(t, a.patient, a.enc, actView, resChart, flagFailure)
		items = append(items, item{t: msTime(max(t, s.start) + 30*int64(time.Second) + r.Int64N(nsMinute)), patient: a.patient, enc: a.enc, label: -1,
			action: actView, resource: resChart, flags: flagBTG | flagGoodBTG, reason: int16(r.IntN(len(goodReasons)))})
	}
	if r.Float64() < noiseSessionShare {
		for range 1 + r.IntN(3) {
			pi := p.randomNoisePatient(f, r)
			if pi < 0 || p.related(s.user, pi) {
				continue
			}
			// mid-shift: an incidental look-up while at work
			add(s.start+30*nsMinute+r.Int64N(max(1, s.end-s.start-60*nsMinute)), pi, -1, actView, resChart, 0)
		}
	}
	slices.SortStableFunc(items, func(x, y item) int { return cmp.Compare(x.t, y.t) })
	return items
}

// emit turns an item into an event, labels it and queues it for arrival.
func (st *streamer) emit(a *activeSession, it *item) error {
	p := st.p
	u := &p.users[a.s.user]
	fi := int(u.fac)
	f := p.facs[fi]
	pt := &p.patients[it.patient]
	st.seq[fi]++
	// one allocation for the event and its logged time
	box := &struct {
		ev     schemas.AccessEvent
		logged time.Time
	}{}
	ev := &box.ev
	*ev = schemas.AccessEvent{
		EventID:        padID(st.prefix[fi], st.seq[fi], 7),
		EventTime:      time.Unix(0, it.t).UTC(),
		Source:         f.source,
		FacilityID:     f.id,
		UserID:         u.id,
		UserRole:       roleNames[u.role],
		UserDepartment: depts[u.dept].name,
		WorkstationID:  a.ws.id,
		ClientIP:       a.ws.ip,
		PatientID:      pt.id,
		Action:         schemas.Actions[it.action],
		Resource:       resourceNames[it.resource],
		Outcome:        schemas.OutcomeSuccess,
	}
	if it.enc >= 0 {
		ev.EncounterID = p.encs[it.enc].id
	}
	if it.flags&flagFailure != 0 {
		ev.Outcome = schemas.OutcomeFailure
	}
	if it.flags&flagBTG != 0 {
		ev.BreakGlass = true
		if it.flags&flagGoodBTG != 0 {
			ev.BreakGlassReason = goodReasons[it.reason]
		} else {
			ev.BreakGlassReason = placeholderReasons[it.reason]
		}
	}

	// Arrival: a few seconds after the fact, or (a small share of background
	// events) minutes to hours late.
	var delay int64
	if it.flags&flagOnTime == 0 && st.lateRate > 0 && st.arr.Float64() < st.lateRate {
		lo := math.Log(float64(2 * nsMinute))
		delay = int64(math.Exp(lo + st.arr.Float64()*(math.Log(float64(st.lateMax))-lo)))
	} else {
		delay = 200*int64(time.Millisecond) + st.arr.Int64N(2800*int64(time.Millisecond))
	}
	box.logged = time.Unix(0, msTime(it.t+delay)).UTC()
	ev.LoggedTime = &box.logged

	st.label(a.s.user, it, ev)

	st.emitted++
	st.pending.push(pendingEvent{arrival: box.logged.UnixNano(), seq: st.emitted, ev: ev})
	// Every later event happens at or after it.t and arrives at least 200 ms
	// after that, so whatever arrives by it.t can go out now.
	for st.pending.len() > 0 && st.pending.top().arrival <= it.t {
		if err := st.fn(st.pending.pop().ev); err != nil {
			return err
		}
	}
	return nil
}

// label attaches the event to its truth labels: the item's own, the user's
// watches, and the confounders recognised on the fly.
func (st *streamer) label(u int32, it *item, ev *schemas.AccessEvent) {
	p := st.p
	if it.label >= 0 {
		st.attach(it.label, ev)
		return
	}
	for _, w := range p.watches[u] {
		if it.t >= w.from && it.t < w.to {
			st.attach(w.label, ev)
		}
	}
	usr := &p.users[u]
	pt := &p.patients[it.patient]
	if ev.BreakGlass {
		st.autoLabel(KindBreakGlass, ScenarioEmergencyAccess, u, it.patient, ev,
			"break-the-glass by "+usr.id+" ("+roleNames[usr.role]+", "+depts[usr.dept].name+") on a patient in their care, with a substantive reason")
	}
	if pt.vip {
		st.autoLabel(KindVIP, ScenarioVIPCareTeam, u, it.patient, ev,
			usr.id+" ("+roleNames[usr.role]+", "+depts[usr.dept].name+") opened a VIP's chart as part of their care")
	}
	if pt.employee >= 0 && pt.employee != u && p.users[pt.employee].dept == usr.dept {
		st.autoLabel(KindCoworker, ScenarioEmployeePatient, u, it.patient, ev,
			usr.id+" cared for co-worker "+p.users[pt.employee].id+", treated in their own department")
	}
	if pt.deceasedAt != 0 && it.t > pt.deceasedAt {
		if usr.role == rBiller || usr.role == rCoder {
			st.autoLabel(KindDeceased, ScenarioRecordsAfterDeath, u, it.patient, ev,
				usr.id+" ("+roleNames[usr.role]+") worked on a deceased patient's account, which their role does after death")
		} else {
			st.autoLabel(KindDeceased, ScenarioCareAfterDeath, u, it.patient, ev,
				usr.id+" ("+roleNames[usr.role]+", "+depts[usr.dept].name+") documented after their patient died, within the grace period")
		}
	}
	if pt.last == usr.last && pt.household != usr.household {
		st.autoLabel(KindFamily, ScenarioNamesake, u, it.patient, ev,
			usr.id+" and the patient share the common last name "+usr.last+" but live at different addresses: not family")
	}
}

func (st *streamer) attach(l int32, ev *schemas.AccessEvent) {
	lb := &st.labels[l]
	lb.EventIDs = append(lb.EventIDs, ev.EventID)
	if lb.Start.IsZero() || ev.EventTime.Before(lb.Start) {
		lb.Start = ev.EventTime
	}
	if ev.EventTime.After(lb.End) {
		lb.End = ev.EventTime
	}
}

func (st *streamer) autoLabel(detector, scenario string, u, pat int32, ev *schemas.AccessEvent, note string) {
	k := autoKey{scenario: scenario, user: u, patient: pat}
	l, ok := st.auto[k]
	if !ok {
		usr := &st.p.users[u]
		l = int32(len(st.labels))
		st.labels = append(st.labels, st.p.exportLabel(labelDef{detector: detector, benign: true, scenario: scenario, fac: usr.fac, user: u, patient: pat, note: note}))
		st.auto[k] = l
	}
	st.attach(l, ev)
}

// finishLabels drops labels that caught no event, sorts the rest by start
// and numbers them.
func (st *streamer) finishLabels() []Label {
	out := make([]Label, 0, len(st.labels))
	for _, l := range st.labels {
		if len(l.EventIDs) > 0 {
			out = append(out, l)
		}
	}
	slices.SortStableFunc(out, func(a, b Label) int {
		if c := a.Start.Compare(b.Start); c != 0 {
			return c
		}
		if c := cmp.Compare(a.Kind, b.Kind); c != 0 {
			return c
		}
		if c := cmp.Compare(a.UserID, b.UserID); c != 0 {
			return c
		}
		return cmp.Compare(a.PatientID, b.PatientID)
	})
	for i := range out {
		out[i].ID = padID("lbl-", i+1, 4)
	}
	return out
}

// heap is a binary min-heap ordered by less.
type heap[T any] struct {
	xs   []T
	less func(a, b T) bool
}

func (h *heap[T]) len() int { return len(h.xs) }
func (h *heap[T]) top() T   { return h.xs[0] }

func (h *heap[T]) push(x T) {
	h.xs = append(h.xs, x)
	i := len(h.xs) - 1
	for i > 0 {
		parent := (i - 1) / 2
		if !h.less(h.xs[i], h.xs[parent]) {
			break
		}
		h.xs[i], h.xs[parent] = h.xs[parent], h.xs[i]
		i = parent
	}
}

func (h *heap[T]) pop() T {
	x := h.xs[0]
	last := len(h.xs) - 1
	h.xs[0] = h.xs[last]
	var zero T
	h.xs[last] = zero
	h.xs = h.xs[:last]
	if last > 0 {
		h.down(0)
	}
	return x
}

// fix0 restores the heap after the top element's key grew.
func (h *heap[T]) fix0() { h.down(0) }

func (h *heap[T]) down(i int) {
	n := len(h.xs)
	for {
		l := 2*i + 1
		if l >= n {
			return
		}
		m := l
		if r := l + 1; r < n && h.less(h.xs[r], h.xs[l]) {
			m = r
		}
		if !h.less(h.xs[m], h.xs[i]) {
			return
		}
		h.xs[i], h.xs[m] = h.xs[m], h.xs[i]
		i = m
	}
}
