package synth

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Detector kinds, as ehrwatch's detectors name themselves (Label.Detector).
const (
	KindVolume     = "volume"
	KindBulkExport = "bulk_export"
	KindOffHours   = "off_hours"
	KindBreakGlass = "break_glass"
	KindSelfAccess = "self_access"
	KindFamily     = "family"
	KindCoworker   = "coworker"
	KindVIP        = "vip"
	KindDeceased   = "deceased"
	KindTerminated = "terminated"
)

// Kinds lists every detector kind the generator injects, in a stable order.
var Kinds = []string{
	KindVolume, KindBulkExport, KindOffHours, KindBreakGlass, KindSelfAccess,
	KindFamily, KindCoworker, KindVIP, KindDeceased, KindTerminated,
}

// Scenario names (Label.Scenario).
const (
	// incidents
	ScenarioSnoopingSpree     = "snooping_spree"     // volume
	ScenarioBulkExfiltration  = "bulk_exfiltration"  // bulk_export
	ScenarioNightSnooping     = "night_snooping"     // off_hours
	ScenarioPlaceholderBTG    = "placeholder_reason" // break_glass
	ScenarioOwnRecord         = "own_record"         // self_access
	ScenarioRelativeRecord    = "relative_record"    // family
	ScenarioCoworkerRecord    = "coworker_record"    // coworker
	ScenarioCuriosityVIP      = "vip_curiosity"      // vip
	ScenarioDeceasedCuriosity = "deceased_curiosity" // deceased
	ScenarioAfterTermination  = "access_after_termination"
	// benign confounders, scripted
	ScenarioEDSurge           = "ed_surge"           // volume
	ScenarioDischargePrinting = "discharge_printing" // bulk_export
	ScenarioNightShift        = "night_shift"        // off_hours
	ScenarioOnCall            = "on_call"            // off_hours
	ScenarioPreTermination    = "pre_termination"    // terminated
	// benign confounders, labelled wherever they occur in the stream
	ScenarioEmergencyAccess   = "emergency_access"      // break_glass with a substantive reason, explained
	ScenarioVIPCareTeam       = "vip_care_team"         // vip, explained
	ScenarioEmployeePatient   = "employee_patient_care" // coworker, explained
	ScenarioRecordsAfterDeath = "records_after_death"   // deceased, billing/HIM roles
	ScenarioCareAfterDeath    = "care_after_death"      // deceased, within the grace period
	ScenarioNamesake          = "namesake"              // family: same common last name, different address
)

// pendingTermination is an account to be used after its termination.
type pendingTermination struct {
	user  int32
	after int64
}

// scenarios holds the scenario planner's state between the two phases.
type scenarios struct {
	p      *plan
	r      *rand.Rand
	nInc   int
	nBen   int
	terms  []pendingTermination
	usedPt map[int32]bool // patients given a scripted encounter
	usedU  map[int32]bool // users already cast in a scenario
	surged []int          // facilities with an ED surge
	caches map[int]*facCache
}

// facCache holds per-facility candidate lists the scenarios draw from.
type facCache struct {
	work      []int32            // work sessions
	vips      []int32            // VIP patients
	dead      []int32            // patients long dead, without encounters
	relatives map[int32][]int32  // employee household → relatives with the employee's last name
	byLast    map[string][]int32 // noise-eligible adults by last name
}

func (sc *scenarios) cache(f *facility) *facCache {
	if c := sc.caches[f.idx]; c != nil {
		return c
	}
	p := sc.p
	c := &facCache{relatives: map[int32][]int32{}, byLast: map[string][]int32{}}
	for si := range p.sessions {
		if s := &p.sessions[si]; int(s.fac) == f.idx && s.kind == sessWork {
			c.work = append(c.work, int32(si))
		}
	}
	for pi := f.patLo; pi < f.patHi; pi++ {
		pt := &p.patients[pi]
		hh := &p.households[pt.household]
		switch {
		case pt.vip:
			c.vips = append(c.vips, pi)
		case pt.deceasedAt != 0 && len(pt.encs) == 0:
			c.dead = append(c.dead, pi)
		case hh.user >= 0 && pt.employee < 0 && pt.last == hh.last && pt.deceasedAt == 0:
			c.relatives[pt.household] = append(c.relatives[pt.household], pi)
		}
		if p.noiseEligible(pi) && pt.age >= 18 {
			c.byLast[pt.last] = append(c.byLast[pt.last], pi)
		}
	}
	if sc.caches == nil {
		sc.caches = map[int]*facCache{}
	}
	sc.caches[f.idx] = c
	return c
}

func newScenarios(p *plan) *scenarios {
	return &scenarios{
		p: p, r: newRand(p.cfg.Seed, streamScenario),
		nInc: p.cfg.countFor(p.cfg.IncidentRate), nBen: p.cfg.countFor(p.cfg.BenignRate),
		usedPt: map[int32]bool{}, usedU: map[int32]bool{},
	}
}

// facilityOrder returns the facilities to try for instance i of kind k:
// round-robin so that every facility gets its share.
func (sc *scenarios) facilityOrder(k, i int) []*facility {
	n := len(sc.p.facs)
	out := make([]*facility, n)
	for j := range n {
		out[j] = sc.p.facs[(k+i+j)%n]
	}
	return out
}

// pickSession returns a random work session of facility f whose day is in
// [dayLo, dayHi), that lies inside the simulated days and that ok accepts,
// or -1. It probes at random first and then scans, so that it stays cheap
// for large hospitals.
func (sc *scenarios) pickSession(f *facility, dayLo, dayHi int, ok func(u *user, s *session) bool) int32 {
	list := sc.cache(f).work
	n := len(list)
	if n == 0 {
		return -1
	}
	try := func(si int32) bool {
		s := &sc.p.sessions[si]
		return !s.dropped && s.day >= dayLo && s.day < dayHi && s.start >= f.start && s.end <= f.end && ok(&sc.p.users[s.user], s)
	}
	for range min(n, 2000) {
		if si := list[sc.r.IntN(n)]; try(si) {
			return si
		}
	}
	off := sc.r.IntN(n)
	for k := range n {
		if si := list[(off+k)%n]; try(si) {
			return si
		}
	}
	return -1
}

// phaseA makes the decisions that change the roster or the encounters:
// terminations, ED surges, VIP admissions, employees treated where they
// work and namesakes cared for by their namesake. It returns each
// facility's scripted encounter requests.
func (sc *scenarios) phaseA() map[int][]encRequest {
	p, r := sc.p, sc.r
	reqs := map[int][]encRequest{}
	days := p.cfg.Days

	// Terminations: incidents keep using the account afterwards; benign
	// ones stop at their last shift.
	for k, benign := range []bool{false, true} {
		n := sc.nInc
		if benign {
			n = sc.nBen
		}
		for i := range n {
			for _, f := range sc.facilityOrder(9+k, i) {
				if days < 4 {
					break
				}
				si := sc.pickSession(f, 1, days-2, func(u *user, s *session) bool {
					return !sc.usedU[s.user] && u.status == schemas.UserActive && len(p.workSessions(s.user)) >= 3 && s.day >= 1
				})
				if si < 0 {
					continue
				}
				s := &p.sessions[si]
				u := &p.users[s.user]
				sc.usedU[s.user] = true
				at := s.end + nsHour + r.Int64N(2*nsHour)
				at -= at % int64(time.Second)
				u.status, u.terminatedAt = schemas.UserTerminated, at
				for _, sj := range u.sessions {
					if p.sessions[sj].start > at {
						p.sessions[sj].dropped = true
					}
				}
				if benign {
					l := p.newLabel(labelDef{detector: KindTerminated, benign: true, scenario: ScenarioPreTermination, fac: int16(f.idx), user: s.user, patient: -1,
						note: fmt.Sprintf("%s was terminated at %s; all of their activity precedes it", u.id, fmtLocal(f, at))})
					p.addWatch(s.user, f.start, at, l)
				} else {
					sc.terms = append(sc.terms, pendingTermination{user: s.user, after: at})
				}
				break
			}
		}
	}

	// ED surges: one day at a facility when arrivals run at 1.8×.
	for i := range min(sc.nBen, len(p.facs)) {
		f := p.facs[i]
		lo := min(p.cfg.WarmupDays, days-1)
		d := lo + r.IntN(days-lo)
		f.surgeFrom, f.surgeTo = f.atNS(d, 8, 0), f.atNS(d+1, 0, 0)
		sc.surged = append(sc.surged, i)
	}

	// VIPs admitted: their care teams open the chart, explained.
	for i := range sc.nBen {
		for _, f := range sc.facilityOrder(2, i) {
			var vips []int32
			for _, pi := range sc.cache(f).vips {
				if !sc.usedPt[pi] {
					vips = append(vips, pi)
				}
			}
			if len(vips) == 0 || days < 3 {
				continue
			}
			pi := vips[r.IntN(len(vips))]
			sc.usedPt[pi] = true
			d := 1 + r.IntN(max(1, days-2))
			dept := []deptID{dCardiology, dOncology, dMedSurg}[r.IntN(3)]
			st := f.atNS(d, 12+r.IntN(7), r.IntN(60))
			rq := encRequest{dept: dept, kind: encInpatient, start: st, end: st + 2*nsDay + r.Int64N(2*nsDay), patient: pi, pin: -1, doctor: -1}
			if r.Float64() < 0.5 {
				rq.edStart = st - 3*nsHour
			}
			reqs[f.idx] = append(reqs[f.idx], rq)
			break
		}
	}

	// Employees treated in their own department: colleagues open the chart
	// with a care relationship. The employee does not work that day.
	for i := range sc.nBen {
		for _, f := range sc.facilityOrder(3, i) {
			var cands []int32
			for _, ui := range f.users {
				u := &p.users[ui]
				if u.patient >= 0 && u.status == schemas.UserActive && !sc.usedU[ui] && !sc.usedPt[u.patient] && p.patients[u.patient].age >= 18 &&
					slices.Contains([]deptID{dED, dMedSurg, dCardiology, dOncology, dICU}, u.dept) {
					cands = append(cands, ui)
				}
			}
			if len(cands) == 0 || days < 3 {
				continue
			}
			ui := cands[r.IntN(len(cands))]
			u := &p.users[ui]
			sc.usedU[ui], sc.usedPt[u.patient] = true, true
			d := 1 + r.IntN(max(1, days-2))
			var rq encRequest
			if u.dept == dED {
				st := f.atNS(d, 10+r.IntN(8), r.IntN(60))
				rq = encRequest{dept: dED, kind: encED, start: st, end: st + 3*nsHour + r.Int64N(2*nsHour)}
			} else {
				st := f.atNS(d, 13+r.IntN(5), r.IntN(60))
				rq = encRequest{dept: u.dept, kind: encInpatient, start: st, end: st + 36*nsHour + r.Int64N(36*nsHour), edStart: st - 3*nsHour}
			}
			rq.patient, rq.pin, rq.doctor = u.patient, -1, -1
			for _, si := range u.sessions {
				if s := &p.sessions[si]; s.end > rq.firstStart()-12*nsHour && s.start < rq.end+12*nsHour {
					s.dropped = true
				}
			}
			reqs[f.idx] = append(reqs[f.idx], rq)
			break
		}
	}

	// Namesakes: a nurse named Smith cares for an unrelated patient named
	// Smith who lives elsewhere.
	for i := range sc.nBen {
		for _, f := range sc.facilityOrder(4, i) {
			si := sc.pickSession(f, 1, days, func(u *user, s *session) bool {
				return u.role == rNurse && slices.Contains(commonSurnames, u.last) && !sc.usedU[s.user] &&
					slices.Contains([]deptID{dED, dMedSurg, dCardiology, dOncology}, u.dept) && s.end < f.end-nsHour
			})
			if si < 0 {
				continue
			}
			s := &p.sessions[si]
			u := &p.users[s.user]
			var cands []int32
			for _, pi := range sc.cache(f).byLast[u.last] {
				if !sc.usedPt[pi] {
					cands = append(cands, pi)
				}
			}
			if len(cands) == 0 {
				continue
			}
			pi := cands[r.IntN(len(cands))]
			sc.usedPt[pi], sc.usedU[s.user] = true, true
			rq := encRequest{dept: u.dept, kind: encInpatient, start: s.start - 20*nsHour, end: s.end + 20*nsHour, patient: pi, pin: s.user, doctor: -1}
			if u.dept == dED {
				rq = encRequest{dept: dED, kind: encED, start: s.start + nsHour, end: s.start + 4*nsHour, patient: pi, pin: s.user, doctor: -1}
			}
			reqs[f.idx] = append(reqs[f.idx], rq)
			break
		}
	}
	return reqs
}

// phaseB scripts the confounders and incidents that need work lists and
// care teams: it runs after assignment.
func (sc *scenarios) phaseB() {
	sc.edSurgeLabels()
	for i := range sc.nBen {
		sc.nightShift(i)
		sc.onCall(i)
		sc.goodBreakGlass(i)
		sc.estateBilling(i)
		sc.dischargePrinting(i)
	}
	for i := range sc.nInc {
		sc.volume(i)
		sc.bulkExport(i)
		sc.offHours(i)
		sc.breakGlass(i)
		sc.selfAccess(i)
		sc.family(i)
		sc.coworker(i)
		sc.vip(i)
		sc.deceased(i)
	}
	for _, t := range sc.terms {
		sc.afterTermination(t)
	}
	sc.quality12()
}

func fmtLocal(f *facility, t int64) string {
	return time.Unix(0, t).In(f.loc).Format("2006-01-02 15:04 MST")
}

// scripted adds a scripted session for user u made of items (sorted here).
func (p *plan) scripted(u int32, f *facility, remote bool, items []item) {
	if len(items) == 0 {
		return
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(a.t, b.t) })
	// Kept apart from p.sessions until finish, so that pointers into
	// p.sessions stay valid while scenarios are planned.
	p.extra = append(p.extra, session{kind: sessScripted, user: u, fac: int16(f.idx), day: f.dayOf(items[0].t),
		start: items[0].t, end: items[len(items)-1].t, items: items, remote: remote})
}

// msTime rounds t down to the millisecond.
func msTime(t int64) int64 { return t - t%int64(time.Millisecond) }

// view builds an injected view item.
func view(t int64, pat, enc, label int32, res uint8) item {
	return item{t: msTime(t), patient: pat, enc: enc, label: label, action: actView, resource: res, flags: flagOnTime}
}

var snoopResources = []uint8{resChart, resNotes, resResults, resDemographics, resImaging}

func (sc *scenarios) snoopRes() uint8 { return snoopResources[sc.r.IntN(len(snoopResources))] }

// within returns a random time in [lo, hi].
func (sc *scenarios) within(lo, hi int64) int64 {
	if hi <= lo {
		return lo
	}
	return lo + sc.r.Int64N(hi-lo)
}

// unexplainedNoise draws a noise-eligible patient that nothing explains
// for user u around [from, to], not in seen.
func (sc *scenarios) unexplainedNoise(f *facility, u int32, from, to int64, seen map[int32]bool) int32 {
	for range 200 {
		pi := sc.p.randomNoisePatient(f, sc.r)
		if pi >= 0 && !seen[pi] && sc.p.unexplainedAt(u, pi, from, to) {
			return pi
		}
	}
	return -1
}

// ---- scripted benign confounders ----

func (sc *scenarios) edSurgeLabels() {
	p := sc.p
	for _, fi := range sc.surged {
		f := p.facs[fi]
		for _, ui := range f.byDept[dED] {
			for _, si := range p.workSessions(ui) {
				s := &p.sessions[si]
				if s.end > f.surgeFrom && s.start < f.surgeTo {
					u := &p.users[ui]
					l := p.newLabel(labelDef{detector: KindVolume, benign: true, scenario: ScenarioEDSurge, fac: int16(fi), user: ui, patient: -1,
						note: fmt.Sprintf("ED arrivals ran at %.1f× from %s; %s (%s) and every ED colleague saw more patients than usual", edSurgeFactor, fmtLocal(f, f.surgeFrom), u.id, roleNames[u.role])})
					p.addWatch(ui, f.surgeFrom, f.surgeTo, l)
					break
				}
			}
		}
	}
}

func (sc *scenarios) nightShift(i int) {
	p := sc.p
	for _, f := range sc.facilityOrder(1, i) {
		si := sc.pickSession(f, p.cfg.WarmupDays, p.cfg.Days-1, func(u *user, s *session) bool {
			return u.shift == shNight && u.role == rNurse && len(s.work) > 0 && isWeekday(f.weekday(s.day+1)) && !sc.usedU[s.user]
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		sc.usedU[s.user] = true
		from, to := f.atNS(s.day+1, 2, 0), f.atNS(s.day+1, 4, 0)
		l := p.newLabel(labelDef{detector: KindOffHours, benign: true, scenario: ScenarioNightShift, fac: int16(f.idx), user: s.user, patient: -1,
			note: fmt.Sprintf("%s is a night-shift %s in %s: charting at 02:00–04:00 is their regular pattern", u.id, roleNames[u.role], depts[u.dept].name)})
		p.addWatch(s.user, from, to, l)
		return
	}
}

func (sc *scenarios) onCall(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(2, i) {
		if p.cfg.Days <= p.cfg.WarmupDays {
			return
		}
		d := p.cfg.WarmupDays + r.IntN(p.cfg.Days-p.cfg.WarmupDays)
		t0 := f.atNS(d, 1, 50) + r.Int64N(40*nsMinute)
		var docs []int32
		for _, ui := range f.users {
			u := &p.users[ui]
			if u.role == rPhysician && u.shift.isDayShift() && u.status == schemas.UserActive && (depts[u.dept].clinic || u.dept == dMedSurg) && !sc.busy(ui, t0-nsHour, t0+2*nsHour) {
				docs = append(docs, ui)
			}
		}
		var pts []int32
		pts = append(pts, p.overlapping(f, dED, t0, t0+nsHour, nsHour)...)
		pts = append(pts, p.overlapping(f, dICU, t0, t0+nsHour, nsHour)...)
		if len(docs) == 0 || len(pts) == 0 {
			continue
		}
		doc := docs[r.IntN(len(docs))]
		ei := pts[r.IntN(len(pts))]
		e := &p.encs[ei]
		if p.related(doc, e.patient) {
			continue
		}
		e.addMember(doc) // the consult puts them on the care team
		sc.usedU[doc] = true
		u := &p.users[doc]
		l := p.newLabel(labelDef{detector: KindOffHours, benign: true, scenario: ScenarioOnCall, fac: int16(f.idx), user: doc, patient: e.patient,
			note: fmt.Sprintf("%s (%s, %s) was paged at night to consult on %s encounter %s and is on its care team", u.id, roleNames[u.role], depts[u.dept].name, depts[e.dept].name, e.id)})
		var items []item
		t := t0
		for k := range 4 + r.IntN(5) {
			it := view(t, e.patient, ei, l, []uint8{resChart, resResults, resImaging, resNotes}[k%4])
			items = append(items, it)
			if k%3 == 2 {
				up := it
				up.t, up.action, up.resource = msTime(t+90*int64(time.Second)), actUpdate, resOrders
				items = append(items, up)
			}
			t += 2*nsMinute + r.Int64N(6*nsMinute)
		}
		p.scripted(doc, f, true, items)
		return
	}
}

// busy reports whether the user works a session overlapping [from, to).
func (sc *scenarios) busy(u int32, from, to int64) bool {
	for _, si := range sc.p.users[u].sessions {
		if s := &sc.p.sessions[si]; !s.dropped && s.start < to && s.end > from {
			return true
		}
	}
	return false
}

func (sc *scenarios) goodBreakGlass(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(3, i) {
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			return u.dept == dED && (u.role == rPhysician || u.role == rNurse) && len(s.work) > 0
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		a := s.work[r.IntN(len(s.work))]
		t := sc.within(a.from, max(a.from, a.to-5*nsMinute))
		reason := int16(r.IntN(len(goodReasons)))
		items := []item{
			{t: msTime(t), patient: a.patient, enc: a.enc, label: -1, action: actView, resource: resChart, flags: flagFailure | flagOnTime},
			{t: msTime(t + 40*int64(time.Second)), patient: a.patient, enc: a.enc, label: -1, action: actView, resource: resChart, flags: flagBTG | flagGoodBTG | flagOnTime, reason: reason},
			{t: msTime(t + 3*nsMinute), patient: a.patient, enc: a.enc, label: -1, action: actView, resource: resMedications, flags: flagOnTime},
		}
		p.scripted(s.user, f, false, items)
		return
	}
}

func (sc *scenarios) estateBilling(i int) {
	p := sc.p
	for _, f := range sc.facilityOrder(4, i) {
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			return u.role == rBiller || u.role == rCoder
		})
		if si >= 0 && p.addDeceasedWork(f, si, sc.r) {
			return
		}
	}
}

func (sc *scenarios) dischargePrinting(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(5, i) {
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			return u.role == rNurse && depts[u.dept].kind == kindInpatient && len(s.work) >= 4 && !sc.usedU[s.user]
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		for k := range 12 {
			t := s.start + 2*nsHour + int64(k)*30*nsMinute
			var fit []assignment
			for _, a := range s.work {
				if a.from <= t && a.to >= t+12*nsMinute {
					fit = append(fit, a)
				}
			}
			if len(fit) < 3 {
				continue
			}
			u := &p.users[s.user]
			sc.usedU[s.user] = true
			l := p.newLabel(labelDef{detector: KindBulkExport, benign: true, scenario: ScenarioDischargePrinting, fac: int16(f.idx), user: s.user, patient: -1,
				note: fmt.Sprintf("%s (%s, %s) printed discharge paperwork for %d of their own patients in a few minutes: well below a bulk-export burst", u.id, roleNames[u.role], depts[u.dept].name, len(fit))})
			var items []item
			for _, a := range fit[:min(len(fit), 6)] {
				for range 1 + r.IntN(2) {
					it := view(t+r.Int64N(12*nsMinute), a.patient, a.enc, l, resDischargeSummary)
					it.action = actPrint
					items = append(items, it)
				}
			}
			p.scripted(s.user, f, false, items)
			return
		}
	}
}

// ---- incidents ----

func (sc *scenarios) volume(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(0, i) {
		si := sc.pickSession(f, p.cfg.WarmupDays, p.cfg.Days, func(u *user, s *session) bool {
			if u.shift == shNight || sc.usedU[s.user] || !(u.role == rNurse || u.role == rPhysician || u.role == rResident || u.role == rTherapist) {
				return false
			}
			m, n := p.usualDistinct(s.user, s.start)
			return n >= 3 && m >= 2 && len(s.work) > 0
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		usual, _ := p.usualDistinct(s.user, s.start)
		sc.usedU[s.user] = true
		mult := 5 + r.Float64()*5
		extra := int(math.Round(usual * (mult - 1)))
		extra = max(extra, 24-int(usual))
		u := &p.users[s.user]
		l := p.newLabel(labelDef{detector: KindVolume, scenario: ScenarioSnoopingSpree, fac: int16(f.idx), user: s.user, patient: -1,
			note: fmt.Sprintf("%s (%s, %s) opened %d charts outside their care on %s on top of their usual ≈%.0f patients a shift (%.1f×)",
				u.id, roleNames[u.role], depts[u.dept].name, extra, fmtLocal(f, s.start)[:10], usual, (usual+float64(extra))/usual)})
		// Mostly random charts, some current inpatients of other units.
		var others []int32
		for di := range numDepts {
			if deptID(di) != u.dept && depts[di].kind == kindInpatient {
				others = append(others, p.overlapping(f, deptID(di), s.start, s.end, nsHour)...)
			}
		}
		seen := map[int32]bool{}
		for _, a := range s.work {
			seen[a.patient] = true
		}
		var items []item
		lo, hi := s.start+20*nsMinute, s.end-20*nsMinute
		for k := 0; k < extra; k++ {
			pi, enc := int32(-1), int32(-1)
			if r.Float64() < 0.15 && len(others) > 0 {
				ei := others[r.IntN(len(others))]
				if e := &p.encs[ei]; !seen[e.patient] && p.noiseEligible(e.patient) && p.unexplainedAt(s.user, e.patient, s.start, s.end) {
					pi, enc = e.patient, ei
				}
			}
			if pi < 0 {
				pi = sc.unexplainedNoise(f, s.user, s.start, s.end, seen)
			}
			if pi < 0 {
				continue
			}
			seen[pi] = true
			t := sc.within(lo, hi)
			items = append(items, view(t, pi, enc, l, sc.snoopRes()))
			if r.Float64() < 0.3 {
				items = append(items, view(t+30*int64(time.Second)+r.Int64N(2*nsMinute), pi, enc, l, sc.snoopRes()))
			}
		}
		p.scripted(s.user, f, false, items)
		return
	}
}

func (sc *scenarios) bulkExport(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(1, i) {
		si := sc.pickSession(f, 1, p.cfg.Days, func(u *user, s *session) bool {
			return !sc.usedU[s.user] && s.end-s.start > 4*nsHour &&
				(u.role == rPhysician || u.role == rNurse || u.role == rCoder || u.role == rBiller || u.role == rResident)
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		sc.usedU[s.user] = true
		n := 30 + r.IntN(16)
		// the patients their department saw in the last two weeks
		var pool []int32
		seen := map[int32]bool{}
		add := func(ei int32) {
			if e := &p.encs[ei]; !seen[e.patient] && !p.related(s.user, e.patient) && p.patients[e.patient].deceasedAt == 0 && !p.patients[e.patient].vip && p.patients[e.patient].employee < 0 {
				seen[e.patient] = true
				pool = append(pool, ei)
			}
		}
		if depts[u.dept].kind == kindOffice {
			for _, ei := range p.endedIn(f, s.start-14*nsDay, s.start, true) {
				add(ei)
			}
		} else {
			for _, ei := range p.overlapping(f, u.dept, s.start-14*nsDay, s.start, 0) {
				add(ei)
			}
		}
		l := p.newLabel(labelDef{detector: KindBulkExport, scenario: ScenarioBulkExfiltration, fac: int16(f.idx), user: s.user, patient: -1})
		t0 := sc.within(s.start+nsHour, s.end-2*nsHour)
		span := 6*nsMinute + r.Int64N(3*nsMinute)
		var items []item
		for k := range n {
			var pi, enc int32 = -1, -1
			if k < len(pool) {
				ei := pool[len(pool)-1-k]
				pi, enc = p.encs[ei].patient, ei
			} else {
				pi = sc.unexplainedNoise(f, s.user, s.start, s.end, seen)
				if pi < 0 {
					continue
				}
				seen[pi] = true
			}
			it := view(t0+span*int64(k)/int64(n)+r.Int64N(span/int64(n)), pi, enc, l, resChart)
			if r.Float64() < 0.6 {
				it.action, it.resource = actExport, resChart
			} else {
				it.action, it.resource = actPrint, resDischargeSummary
			}
			items = append(items, it)
		}
		p.labels[l].note = fmt.Sprintf("%s (%s, %s) printed or exported %d charts in %.0f minutes from %s", u.id, roleNames[u.role], depts[u.dept].name, len(items), float64(span)/float64(nsMinute), fmtLocal(f, t0))
		p.scripted(s.user, f, false, items)
		return
	}
}

func (sc *scenarios) offHours(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(2, i) {
		var days []int
		for d := p.cfg.WarmupDays; d < p.cfg.Days; d++ {
			if isWeekday(f.weekday(d)) {
				days = append(days, d)
			}
		}
		if len(days) == 0 {
			return
		}
		d := days[r.IntN(len(days))]
		t0 := f.atNS(d, 1, 40) + r.Int64N(50*nsMinute)
		var cands []int32
		for _, ui := range f.users {
			u := &p.users[ui]
			if u.status != schemas.UserActive || sc.usedU[ui] || !u.shift.isDayShift() || u.dept == dRadiology || sc.busy(ui, t0-3*nsHour, t0+3*nsHour) {
				continue
			}
			ws := p.workSessions(ui)
			if len(ws) == 0 || p.sessions[ws[0]].day > d-p.cfg.WarmupDays || p.eventsBefore(ui, f.atNS(d, 0, 0)) < 300 {
				continue
			}
			cands = append(cands, ui)
		}
		if len(cands) == 0 {
			continue
		}
		ui := cands[r.IntN(len(cands))]
		sc.usedU[ui] = true
		u := &p.users[ui]
		n := 4 + r.IntN(6)
		l := p.newLabel(labelDef{detector: KindOffHours, scenario: ScenarioNightSnooping, fac: int16(f.idx), user: ui, patient: -1,
			note: fmt.Sprintf("%s (%s, %s, works %s shifts) logged in remotely at %s and opened %d charts nothing explains", u.id, roleNames[u.role], depts[u.dept].name, shiftNames[u.shift], fmtLocal(f, t0), n)})
		seen := map[int32]bool{}
		var items []item
		t := t0
		for range n {
			pi := sc.unexplainedNoise(f, ui, t0, t0+nsHour, seen)
			if pi < 0 {
				continue
			}
			seen[pi] = true
			for k := range 1 + r.IntN(3) {
				items = append(items, view(t+int64(k)*(20*int64(time.Second)+r.Int64N(nsMinute)), pi, -1, l, sc.snoopRes()))
			}
			t += nsMinute + r.Int64N(5*nsMinute)
		}
		p.scripted(ui, f, true, items)
		return
	}
}

func (sc *scenarios) breakGlass(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(3, i) {
		si := sc.pickSession(f, 1, p.cfg.Days, func(u *user, s *session) bool {
			return !sc.usedU[s.user] && u.dept != dED && u.dept != dICU && s.end-s.start > 3*nsHour
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		t := sc.within(s.start+30*nsMinute, s.end-45*nsMinute)
		pi := sc.unexplainedNoise(f, s.user, t, t+nsHour, nil)
		if pi < 0 {
			continue
		}
		sc.usedU[s.user] = true
		u := &p.users[s.user]
		reason := int16(r.IntN(len(placeholderReasons)))
		l := p.newLabel(labelDef{detector: KindBreakGlass, scenario: ScenarioPlaceholderBTG, fac: int16(f.idx), user: s.user, patient: pi,
			note: fmt.Sprintf("%s (%s, %s) broke the glass into a restricted chart with no care relationship, giving the reason %q", u.id, roleNames[u.role], depts[u.dept].name, placeholderReasons[reason])})
		denied := view(t, pi, -1, l, resChart)
		denied.flags |= flagFailure
		btg := view(t+30*int64(time.Second)+r.Int64N(nsMinute), pi, -1, l, resChart)
		btg.flags |= flagBTG
		btg.reason = reason
		items := []item{denied, btg}
		for k := range 1 + r.IntN(3) {
			items = append(items, view(t+int64(k+2)*2*nsMinute+r.Int64N(nsMinute), pi, -1, l, sc.snoopRes()))
		}
		p.scripted(s.user, f, false, items)
		return
	}
}

// relationIncident scripts n views by the user of session si on patient
// pi, labelled l, within the session.
func (sc *scenarios) relationIncident(f *facility, si, pi, l int32, n int, printShare float64) {
	p, r := sc.p, sc.r
	s := &p.sessions[si]
	t := sc.within(s.start+30*nsMinute, s.end-30*nsMinute)
	var items []item
	for k := range n {
		it := view(t+int64(k)*(30*int64(time.Second)+r.Int64N(3*nsMinute)), pi, -1, l, sc.snoopRes())
		if k == n-1 && r.Float64() < printShare {
			it.action = actPrint
		}
		items = append(items, it)
	}
	p.scripted(s.user, f, false, items)
}

func (sc *scenarios) selfAccess(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(4, i) {
		var pt int32 = -1
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			return u.patient >= 0 && !sc.usedU[s.user] && p.unexplainedAt(s.user, u.patient, s.start, s.end)
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		pt = u.patient
		sc.usedU[s.user] = true
		l := p.newLabel(labelDef{detector: KindSelfAccess, scenario: ScenarioOwnRecord, fac: int16(f.idx), user: s.user, patient: pt,
			note: fmt.Sprintf("%s (%s, %s) opened their own chart %s", u.id, roleNames[u.role], depts[u.dept].name, p.patients[pt].id)})
		sc.relationIncident(f, si, pt, l, 1+r.IntN(3), 0.2)
		return
	}
}

func (sc *scenarios) family(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(5, i) {
		relatives := sc.cache(f).relatives
		var rel int32 = -1
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			if sc.usedU[s.user] || len(relatives[u.household]) == 0 {
				return false
			}
			for _, pi := range relatives[u.household] {
				if p.unexplainedAt(s.user, pi, s.start, s.end) {
					return true
				}
			}
			return false
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		for _, pi := range relatives[u.household] {
			if p.unexplainedAt(s.user, pi, s.start, s.end) {
				rel = pi
				break
			}
		}
		sc.usedU[s.user] = true
		l := p.newLabel(labelDef{detector: KindFamily, scenario: ScenarioRelativeRecord, fac: int16(f.idx), user: s.user, patient: rel,
			note: fmt.Sprintf("%s (%s, %s) opened the chart of a relative (same last name and address) with no care relationship", u.id, roleNames[u.role], depts[u.dept].name)})
		sc.relationIncident(f, si, rel, l, 2+r.IntN(4), 0.1)
		return
	}
}

func (sc *scenarios) coworker(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(6, i) {
		var target int32 = -1
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			if sc.usedU[s.user] {
				return false
			}
			for _, vi := range f.byDept[u.dept] {
				v := &p.users[vi]
				if vi != s.user && v.patient >= 0 && v.household != u.household && p.unexplainedAt(s.user, v.patient, s.start, s.end) {
					return true
				}
			}
			return false
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		var cands []int32
		for _, vi := range f.byDept[u.dept] {
			v := &p.users[vi]
			if vi != s.user && v.patient >= 0 && v.household != u.household && p.unexplainedAt(s.user, v.patient, s.start, s.end) {
				cands = append(cands, vi)
			}
		}
		v := cands[r.IntN(len(cands))]
		target = p.users[v].patient
		sc.usedU[s.user] = true
		l := p.newLabel(labelDef{detector: KindCoworker, scenario: ScenarioCoworkerRecord, fac: int16(f.idx), user: s.user, patient: target,
			note: fmt.Sprintf("%s (%s, %s) opened the chart of co-worker %s from the same department with no care relationship", u.id, roleNames[u.role], depts[u.dept].name, p.users[v].id)})
		sc.relationIncident(f, si, target, l, 2+r.IntN(4), 0)
		return
	}
}

func (sc *scenarios) vip(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(7, i) {
		// Prefer a VIP who is in the hospital (the news makes people
		// curious); else any of a few.
		var vips []int32
		for _, pi := range sc.cache(f).vips {
			if len(p.patients[pi].encs) > 0 {
				vips = append(vips, pi)
			}
		}
		for _, k := range r.Perm(len(sc.cache(f).vips))[:min(8, len(sc.cache(f).vips))] {
			if pi := sc.cache(f).vips[k]; len(p.patients[pi].encs) == 0 {
				vips = append(vips, pi)
			}
		}
		target := func(s *session, inHouseOnly bool) int32 {
			for _, pi := range vips {
				if (!inHouseOnly || p.inHouse(pi, s.start-nsDay, s.end)) && p.unexplainedAt(s.user, pi, s.start, s.end) {
					return pi
				}
			}
			return -1
		}
		inHouse := true
		si := sc.pickSession(f, 1, p.cfg.Days, func(u *user, s *session) bool { return !sc.usedU[s.user] && target(s, true) >= 0 })
		if si < 0 {
			inHouse = false
			si = sc.pickSession(f, 1, p.cfg.Days, func(u *user, s *session) bool { return !sc.usedU[s.user] && target(s, false) >= 0 })
		}
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		pi := target(s, inHouse)
		u := &p.users[s.user]
		sc.usedU[s.user] = true
		l := p.newLabel(labelDef{detector: KindVIP, scenario: ScenarioCuriosityVIP, fac: int16(f.idx), user: s.user, patient: pi,
			note: fmt.Sprintf("%s (%s, %s) opened a VIP's chart with no care relationship", u.id, roleNames[u.role], depts[u.dept].name)})
		sc.relationIncident(f, si, pi, l, 1+r.IntN(4), 0.15)
		return
	}
}

func (sc *scenarios) deceased(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(8, i) {
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			return !sc.usedU[s.user] && u.role != rBiller && u.role != rCoder && depts[u.dept].kind != kindOffice
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		var dead []int32
		for _, pi := range sc.cache(f).dead {
			if p.patients[pi].deceasedAt < s.start-45*nsDay && !p.related(s.user, pi) {
				dead = append(dead, pi)
			}
		}
		if len(dead) == 0 {
			continue
		}
		pi := dead[r.IntN(len(dead))]
		sc.usedU[s.user] = true
		u := &p.users[s.user]
		days := (s.start - p.patients[pi].deceasedAt) / nsDay
		l := p.newLabel(labelDef{detector: KindDeceased, scenario: ScenarioDeceasedCuriosity, fac: int16(f.idx), user: s.user, patient: pi,
			note: fmt.Sprintf("%s (%s, %s) opened the chart of a patient who died %d days earlier, with no care relationship", u.id, roleNames[u.role], depts[u.dept].name, days)})
		sc.relationIncident(f, si, pi, l, 1+r.IntN(3), 0.1)
		return
	}
}

func (sc *scenarios) afterTermination(t pendingTermination) {
	p, r := sc.p, sc.r
	u := &p.users[t.user]
	f := p.facs[u.fac]
	d := f.dayOf(t.after) + 1 + r.IntN(2)
	if d >= p.cfg.Days {
		d = p.cfg.Days - 1
	}
	t0 := max(f.atNS(d, 9+r.IntN(11), r.IntN(60)), t.after+2*nsHour)
	if t0 >= f.end-nsHour {
		return
	}
	n := 3 + r.IntN(6)
	l := p.newLabel(labelDef{detector: KindTerminated, scenario: ScenarioAfterTermination, fac: int16(f.idx), user: t.user, patient: -1,
		note: fmt.Sprintf("%s (%s, %s) was terminated at %s but the account was not disabled; it opened %d charts remotely at %s",
			u.id, roleNames[u.role], depts[u.dept].name, fmtLocal(f, t.after), n, fmtLocal(f, t0))})
	var census []int32
	if k := depts[u.dept].kind; k == kindED || k == kindInpatient {
		census = p.overlapping(f, u.dept, t0, t0+nsHour, nsHour)
	}
	seen := map[int32]bool{}
	var items []item
	tt := t0
	for range n {
		pi, enc := int32(-1), int32(-1)
		if len(census) > 0 && r.Float64() < 0.6 {
			ei := census[r.IntN(len(census))]
			if e := &p.encs[ei]; !seen[e.patient] && p.noiseEligible(e.patient) {
				pi, enc = e.patient, ei
			}
		}
		if pi < 0 {
			pi = p.randomNoisePatient(f, r)
		}
		if pi < 0 || seen[pi] {
			continue
		}
		seen[pi] = true
		items = append(items, view(tt, pi, enc, l, sc.snoopRes()))
		tt += nsMinute + r.Int64N(4*nsMinute)
	}
	p.scripted(t.user, f, true, items)
}
