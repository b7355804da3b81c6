package synth

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
)

// shiftGroup is the staff of one department on one shift of one day.
type shiftGroup struct {
	day   int
	dept  deptID
	shift shiftKind
	sess  []int32
}

// buildAssignments gives every work session its work list and puts the
// user on the care team of every encounter they work on, so that the care
// relationship explains nearly all routine access (the >94 % that
// explanation-based auditing reports).
//
//   - Nurses split their unit's census (ICU 1–2 patients each, med-surg 4–6,
//     ED 6–10 over a shift) and touch each patient 7–12 times a shift.
//   - Physicians and residents split the census on days and cross-cover a
//     quarter of it at night; clinic physicians see their clinic list.
//   - ED registration clerks register each arrival; clinic clerks check in
//     each visit.
//   - Pharmacists, lab and radiology staff, therapists, registration,
//     billing and coding staff draw their own work lists from the patients
//     their department serves.
func (p *plan) buildAssignments(f *facility) {
	r := newRand(p.cfg.Seed, streamAssign+uint64(f.idx))
	groups := map[[3]int]*shiftGroup{}
	var keys [][3]int
	for _, ui := range f.users {
		u := &p.users[ui]
		for _, si := range u.sessions {
			s := &p.sessions[si]
			if s.kind != sessWork || s.dropped {
				continue
			}
			k := [3]int{s.day, int(u.dept), int(u.shift)}
			g := groups[k]
			if g == nil {
				g = &shiftGroup{day: s.day, dept: u.dept, shift: u.shift}
				groups[k] = g
				keys = append(keys, k)
			}
			g.sess = append(g.sess, si)
		}
	}
	slices.SortFunc(keys, func(a, b [3]int) int {
		for i := range a {
			if c := cmp.Compare(a[i], b[i]); c != 0 {
				return c
			}
		}
		return 0
	})
	for _, k := range keys {
		g := groups[k]
		switch depts[g.dept].kind {
		case kindED:
			p.assignED(f, g, r)
		case kindInpatient:
			p.assignInpatient(f, g, r)
		case kindAncillary:
			p.assignAncillary(f, g, r)
		case kindOffice:
			p.assignOffice(f, g, r)
		}
	}
}

// window returns the nominal (unjittered) shift window of a group.
func (g *shiftGroup) window(f *facility) (int64, int64) {
	h := shiftHours[g.shift]
	endDay := g.day
	if h.eh < h.sh {
		endDay++
	}
	return f.atNS(g.day, h.sh, h.sm), f.atNS(endDay, h.eh, h.em)
}

func (p *plan) byRole(g *shiftGroup, role roleID) []int32 {
	var out []int32
	for _, si := range g.sess {
		if p.users[p.sessions[si].user].role == role {
			out = append(out, si)
		}
	}
	return out
}

// assign appends encounter ei to session si's work list with n touches
// (scaled by how much of the shift the encounter covers) inside the
// overlap of the session and [from, to], and puts the user on the care
// team.
func (p *plan) assign(si, ei int32, n int, from, to int64) {
	s := &p.sessions[si]
	e := &p.encs[ei]
	lo, hi := max(s.start, from), min(s.end, to)
	if hi-lo < 5*nsMinute {
		lo = min(lo, s.end-5*nsMinute)
		hi = lo + 5*nsMinute
	}
	s.work = append(s.work, assignment{enc: ei, patient: e.patient, touches: int16(max(1, n)), from: lo, to: hi})
	e.addMember(s.user)
}

// scaled scales touches by how much of the encounter's time on the shift
// the shift covers: n for an encounter spanning the shift (or, when shorter
// than the shift, lying inside it), less for one that ends early or starts
// late.
func scaled(n int, from, to, ws, we int64) int {
	overlap := float64(min(to, we) - max(from, ws))
	frac := math.Min(1, math.Max(0.15, overlap/float64(min(to-from, we-ws))))
	return max(1, int(math.Round(float64(n)*frac)))
}

// distribute gives each encounter in pool to one of sess, balancing work
// lists and keeping continuity (whoever had the patient on an earlier shift
// keeps them while their list is not full); the encounter's pinned user
// gets it when on shift; a user never gets their own chart or a
// relative's.
func (p *plan) distribute(r *rand.Rand, pool, sess []int32, give func(si, ei int32)) {
	if len(sess) == 0 {
		return
	}
	load := make([]int, len(sess))
	full := (len(pool)+len(sess)-1)/len(sess) + 1
	onShift := make(map[int32]int, len(sess))
	for j, si := range sess {
		onShift[p.sessions[si].user] = j
	}
	cursor := r.IntN(len(sess))
	for _, ei := range pool {
		e := &p.encs[ei]
		best := -1
		if j, ok := onShift[e.pin]; ok && e.pin >= 0 {
			best = j
		}
		// continuity: the most recent care-team member on shift
		for k := len(e.team) - 1; k >= 0 && best < 0; k-- {
			if j, ok := onShift[e.team[k]]; ok && load[j] < full && !p.related(e.team[k], e.patient) {
				best = j
			}
		}
		// else the next colleague round the rota with room
		for k := 0; k < len(sess) && best < 0; k++ {
			j := (cursor + k) % len(sess)
			if load[j] < full && !p.related(p.sessions[sess[j]].user, e.patient) {
				best = j
				cursor = (j + 1) % len(sess)
			}
		}
		if best < 0 {
			continue
		}
		load[best]++
		give(sess[best], ei)
	}
}

func between(r *rand.Rand, lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.IntN(hi-lo+1)
}

func (p *plan) assignED(f *facility, g *shiftGroup, r *rand.Rand) {
	ws, we := g.window(f)
	pool := p.overlapping(f, dED, ws, we, 20*nsMinute)
	arrivals := make([]int32, 0, len(pool))
	for _, ei := range pool {
		if e := &p.encs[ei]; e.start >= ws && e.start < we {
			arrivals = append(arrivals, ei)
		}
	}
	touch := func(role roleID, full bool) func(si, ei int32) {
		b := &behaviours[role]
		return func(si, ei int32) {
			e := &p.encs[ei]
			n := between(r, b.edTouches[0], b.edTouches[1])
			if !full && e.start < ws {
				n = between(r, 1, 2) // handed over from the previous shift
			}
			p.assign(si, ei, scaled(n, e.start, e.end, ws, we), e.start, e.end)
		}
	}
	p.distribute(r, pool, p.byRole(g, rNurse), touch(rNurse, true))
	p.distribute(r, pool, p.byRole(g, rPhysician), touch(rPhysician, false))
	var teaching []int32
	for _, ei := range pool {
		if r.Float64() < 0.5 {
			teaching = append(teaching, ei)
		}
	}
	p.distribute(r, teaching, p.byRole(g, rResident), touch(rResident, false))
	p.distribute(r, arrivals, p.byRole(g, rRegClerk), func(si, ei int32) {
		e := &p.encs[ei]
		p.assign(si, ei, between(r, 1, 2), e.start, e.start+20*nsMinute)
	})
}

func (p *plan) assignInpatient(f *facility, g *shiftGroup, r *rand.Rand) {
	ws, we := g.window(f)
	pool := p.overlapping(f, g.dept, ws, we, 30*nsMinute)
	nurseTouch := [2]int{behaviours[rNurse].minTouch, behaviours[rNurse].maxTouch}
	docTouch := [2]int{behaviours[rPhysician].minTouch, behaviours[rPhysician].maxTouch}
	if g.dept == dICU {
		nurseTouch, docTouch = [2]int{12, 20}, [2]int{4, 8}
	}
	clinical := func(role roleID, lo, hi int) func(si, ei int32) {
		return func(si, ei int32) {
			e := &p.encs[ei]
			p.assign(si, ei, scaled(between(r, lo, hi), e.start, e.end, ws, we), e.start, e.end)
		}
	}
	p.distribute(r, pool, p.byRole(g, rNurse), clinical(rNurse, nurseTouch[0], nurseTouch[1]))
	p.distribute(r, pool, p.byRole(g, rTherapist), clinical(rTherapist, 2, 4))

	day := g.shift.isDayShift()
	sample := func(share float64) []int32 {
		var out []int32
		for _, ei := range pool {
			if r.Float64() < share {
				out = append(out, ei)
			}
		}
		return out
	}
	docs := p.byRole(g, rPhysician)
	if day {
		// Clinic physicians see their clinic; the others round on the unit.
		var clinicDocs, wardDocs []int32
		onShift := map[int32]int32{}
		for _, si := range docs {
			onShift[p.sessions[si].user] = si
		}
		isClinic := map[int32]bool{}
		if depts[g.dept].clinic && isWeekday(f.weekday(g.day)) {
			for _, u := range p.clinicDoctors(f, g.dept, g.day) {
				isClinic[u] = true
			}
		}
		for _, si := range docs {
			if isClinic[p.sessions[si].user] {
				clinicDocs = append(clinicDocs, si)
			} else {
				wardDocs = append(wardDocs, si)
			}
		}
		if len(wardDocs) == 0 {
			wardDocs = clinicDocs
		}
		p.distribute(r, pool, wardDocs, clinical(rPhysician, docTouch[0], docTouch[1]))
		var visits []int32
		for _, ei := range p.clinicVisits(f, g.dept, ws, we) {
			visits = append(visits, ei)
			e := &p.encs[ei]
			si, ok := onShift[e.doctor] // an absent physician's clinic is cancelled
			if ok && !p.related(p.sessions[si].user, e.patient) {
				p.assign(si, ei, between(r, 3, 5), e.start-5*nsMinute, e.end+30*nsMinute)
			}
		}
		p.distribute(r, pool, p.byRole(g, rResident), clinical(rResident, behaviours[rResident].minTouch, behaviours[rResident].maxTouch))
		p.distribute(r, visits, p.byRole(g, rRegClerk), func(si, ei int32) {
			e := &p.encs[ei]
			p.assign(si, ei, between(r, 1, 2), e.start, e.start+15*nsMinute)
		})
	} else {
		p.distribute(r, sample(0.25), docs, clinical(rPhysician, 1, 2))
		p.distribute(r, sample(0.3), p.byRole(g, rResident), clinical(rResident, 1, 3))
	}
}

// clinicVisits returns a department's clinic visits starting in [from, to).
func (p *plan) clinicVisits(f *facility, di deptID, from, to int64) []int32 {
	lo, _ := slices.BinarySearchFunc(f.clinicEnc, from, func(ei int32, t int64) int { return cmp.Compare(p.encs[ei].start, t) })
	var out []int32
	for _, ei := range f.clinicEnc[lo:] {
		e := &p.encs[ei]
		if e.start >= to {
			break
		}
		if e.dept == di {
			out = append(out, ei)
		}
	}
	return out
}

// shiftLoad scales an ancillary work list by shift and weekend.
func shiftLoad(f *facility, g *shiftGroup, lohi [2]int, r *rand.Rand) int {
	n := float64(between(r, lohi[0], lohi[1]))
	switch g.shift {
	case shEvening:
		n *= 0.7
	case shNight:
		n *= 0.55
	}
	if wd := f.weekday(g.day); !isWeekday(wd) {
		n *= 0.8
	}
	return max(1, int(math.Round(n)))
}

// sampleOrder returns indexes into a pool of size m in random order, lazily
// enough for large pools: when few of them will be used it probes at
// random instead of shuffling the whole pool.
func sampleOrder(r *rand.Rand, m, want int) []int {
	if m == 0 {
		return nil
	}
	if want*4 >= m {
		return r.Perm(m)
	}
	seen := make(map[int]bool, 2*want)
	out := make([]int, 0, 2*want)
	for tries := 0; len(out) < 2*want && tries < 8*want; tries++ {
		if i := r.IntN(m); !seen[i] {
			seen[i] = true
			out = append(out, i)
		}
	}
	return out
}

// sampleWork gives session si up to n encounters drawn from pool.
func (p *plan) sampleWork(r *rand.Rand, si int32, pool []int32, n int, touches [2]int, afterEnd bool) {
	s := &p.sessions[si]
	for _, k := range sampleOrder(r, len(pool), n) {
		if n == 0 {
			break
		}
		ei := pool[k]
		e := &p.encs[ei]
		if p.related(s.user, e.patient) {
			continue
		}
		from, to := e.start, e.end
		if afterEnd {
			from, to = e.end+5*nsMinute, s.end
		}
		if from >= s.end-5*nsMinute {
			continue
		}
		p.assign(si, ei, between(r, touches[0], touches[1]), from, to)
		n--
	}
}

func (p *plan) assignAncillary(f *facility, g *shiftGroup, r *rand.Rand) {
	ws, we := g.window(f)
	var pool []int32
	for di := range numDepts {
		switch {
		case depts[di].kind == kindInpatient:
			pool = append(pool, p.overlapping(f, deptID(di), ws, we, nsHour)...)
		case depts[di].kind == kindED && g.dept != dRehab:
			pool = append(pool, p.overlapping(f, deptID(di), ws, we, 30*nsMinute)...)
		}
	}
	slices.Sort(pool)
	for _, si := range g.sess {
		role := p.users[p.sessions[si].user].role
		b := &behaviours[role]
		p.sampleWork(r, si, pool, shiftLoad(f, g, ancillaryLoad[role], r), [2]int{b.minTouch, b.maxTouch}, false)
	}
}

func (p *plan) assignOffice(f *facility, g *shiftGroup, r *rand.Rand) {
	ws, we := g.window(f)
	var pool []int32
	afterEnd := false
	switch g.dept {
	case dRegistration:
		// check-in and pre-admission: today's clinic visits and admissions
		for _, ei := range f.clinicEnc {
			if e := &p.encs[ei]; e.start >= ws && e.start < we {
				pool = append(pool, ei)
			}
		}
		for di := range numDepts {
			if depts[di].kind == kindInpatient {
				for _, ei := range p.overlapping(f, deptID(di), ws, we, 0) {
					if e := &p.encs[ei]; e.start >= ws {
						pool = append(pool, ei)
					}
				}
			}
		}
		slices.Sort(pool)
	case dBilling:
		pool = p.endedIn(f, ws-14*nsHour, we-30*nsMinute, true)
		afterEnd = true
	case dHIM:
		pool = p.endedIn(f, ws-14*nsHour, we-30*nsMinute, false)
		afterEnd = true
	}
	for _, si := range g.sess {
		role := p.users[p.sessions[si].user].role
		b := &behaviours[role]
		if afterEnd {
			p.sampleWork(r, si, pool, shiftLoad(f, g, ancillaryLoad[role], r), [2]int{b.minTouch, b.maxTouch}, true)
		} else {
			s := &p.sessions[si]
			n := shiftLoad(f, g, ancillaryLoad[role], r)
			for _, k := range sampleOrder(r, len(pool), n) {
				if n == 0 {
					break
				}
				e := &p.encs[pool[k]]
				if p.related(s.user, e.patient) {
					continue
				}
				p.assign(si, pool[k], between(r, 1, 2), e.start, e.start+15*nsMinute)
				n--
			}
		}
		// Estate billing and records requests: now and then a chart of
		// someone who died long ago (the deceased detector exempts these
		// roles; naive rules do not).
		if g.dept != dRegistration && r.Float64() < 0.06 {
			p.addDeceasedWork(f, si, r)
		}
	}
}

// addDeceasedWork puts a long-dead patient on an office session's list.
func (p *plan) addDeceasedWork(f *facility, si int32, r *rand.Rand) bool {
	s := &p.sessions[si]
	for range 2000 {
		pi := f.patLo + int32(r.IntN(int(f.patHi-f.patLo)))
		pt := &p.patients[pi]
		if pt.deceasedAt != 0 && pt.deceasedAt < f.start-40*nsDay && len(pt.encs) == 0 {
			s.work = append(s.work, assignment{enc: -1, patient: pi, touches: int16(between(r, 1, 3)), from: s.start + 10*nsMinute, to: s.end - 10*nsMinute})
			return true
		}
	}
	return false
}

// usualDistinct is the mean number of distinct patients on the user's work
// lists before time t, and how many sessions that mean is over.
func (p *plan) usualDistinct(u int32, t int64) (float64, int) {
	n, sum := 0, 0
	for _, si := range p.workSessions(u) {
		s := &p.sessions[si]
		if s.end > t {
			continue
		}
		seen := map[int32]bool{}
		for _, a := range s.work {
			seen[a.patient] = true
		}
		sum += len(seen)
		n++
	}
	if n == 0 {
		return 0, 0
	}
	return float64(sum) / float64(n), n
}

// eventsBefore estimates how many events the user produced before t.
func (p *plan) eventsBefore(u int32, t int64) int {
	total := 0.0
	for _, si := range p.workSessions(u) {
		s := &p.sessions[si]
		if s.end > t {
			continue
		}
		for _, a := range s.work {
			total += float64(a.touches) * 1.4
		}
	}
	return int(total)
}
