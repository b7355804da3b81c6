package synth

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"time"
)

// Arrivals by local hour, relative (normalised to a mean of 1 on use).
var (
	edArrivalByHour = [24]float64{0.55, 0.45, 0.40, 0.35, 0.30, 0.35, 0.50, 0.75, 1.05, 1.30, 1.45, 1.50,
		1.50, 1.45, 1.40, 1.35, 1.30, 1.30, 1.25, 1.15, 1.00, 0.90, 0.80, 0.65}
	admissionByHour = [24]float64{0.3, 0.2, 0.2, 0.2, 0.2, 0.2, 0.3, 0.5, 0.8, 1.1, 1.3, 1.5,
		1.6, 1.7, 1.8, 1.8, 1.7, 1.6, 1.5, 1.3, 1.1, 0.9, 0.6, 0.4}
)

// viaED is the share of a department's admissions that come through the
// emergency department (an ED visit ends when the admission starts).
var viaED = [numDepts]float64{dICU: 0.7, dMedSurg: 0.55, dCardiology: 0.5, dOncology: 0.3, dPediatrics: 0.4}

const (
	inpatientHistoryDays = 30 // admissions start this long before day 0, so the census is full on day 0
	shortHistoryDays     = 3  // ED and clinic visits before day 0 (billing and coding work on them)
	maxInpatientLOS      = 21 * nsDay
	edSurgeFactor        = 1.8
)

// encRequest asks for an encounter; patient -1 means "draw one".
type encRequest struct {
	dept    deptID
	kind    encKind
	start   int64
	end     int64
	patient int32
	child   bool
	pin     int32
	doctor  int32
	edStart int64 // > 0: an ED visit from edStart to start precedes the admission
}

// buildEncounters generates a facility's ED visits, admissions and clinic
// visits. Rates follow staffing: each unit's census is its nurses on shift
// times its patients-per-nurse ratio, so per-user volumes come out right
// for any facility size. Scripted requests (a VIP admitted, an employee
// treated in their own department) are placed first, with their patients.
func (p *plan) buildEncounters(f *facility, scripted []encRequest) {
	r := newRand(p.cfg.Seed, streamEncounters+uint64(f.idx))

	// Nurses on shift per department, from the roster.
	var nurseShifts [numDepts]float64
	for _, ui := range f.users {
		u := &p.users[ui]
		if u.role != rNurse {
			continue
		}
		for _, si := range u.sessions {
			if s := &p.sessions[si]; s.day >= 0 && !s.dropped {
				nurseShifts[u.dept]++
			}
		}
	}
	var census [numDepts]float64
	for di := range numDepts {
		census[di] = nurseShifts[di] / float64(3*p.cfg.Days) * depts[di].ratio
	}
	admitPerDay := func(di deptID) float64 { return census[di] / (float64(depts[di].los) / float64(nsDay)) }
	// ED visits per hour, less the ED visits that precede admissions.
	edPerHour := census[dED] / (float64(depts[dED].los) / float64(nsHour))
	viaPerDay := 0.0
	for di := range numDepts {
		if depts[di].kind == kindInpatient {
			viaPerDay += admitPerDay(di) * viaED[di]
		}
	}
	edPerHour = math.Max(edPerHour*0.25, edPerHour-viaPerDay/24)

	var reqs []encRequest
	edW, admW := normalise(edArrivalByHour), normalise(admissionByHour)
	for d := -inpatientHistoryDays; d < p.cfg.Days; d++ {
		for h := range 24 {
			hs, he := f.atNS(d, h, 0), f.atNS(d, h+1, 0)
			if he <= hs {
				continue // the skipped hour of a spring-forward day
			}
			dur := float64(he-hs) / float64(nsHour)
			if d >= -shortHistoryDays {
				lam := edPerHour * edW[h] * dur
				if f.surgeFrom != 0 && hs >= f.surgeFrom && hs < f.surgeTo {
					lam *= edSurgeFactor
				}
				for range poisson(r, lam) {
					st := hs + r.Int64N(he-hs)
					los := logNormalNS(r, depts[dED].los, 0.5, nsHour, 16*nsHour)
					reqs = append(reqs, encRequest{dept: dED, kind: encED, start: st, end: st + los, patient: -1, child: r.Float64() < 0.15, pin: -1, doctor: -1})
				}
			}
			for di := range numDepts {
				if depts[di].kind != kindInpatient {
					continue
				}
				for range poisson(r, admitPerDay(deptID(di))/24*admW[h]*dur) {
					st := hs + r.Int64N(he-hs)
					los := logNormalNS(r, depts[di].los, 0.6, 12*nsHour, maxInpatientLOS)
					rq := encRequest{dept: deptID(di), kind: encInpatient, start: st, end: st + los, patient: -1, child: di == dPediatrics, pin: -1, doctor: -1}
					if r.Float64() < viaED[di] {
						rq.edStart = st - 2*nsHour - r.Int64N(4*nsHour)
					}
					reqs = append(reqs, rq)
				}
			}
		}
		// Weekday clinics: each clinic physician sees 10–16 patients.
		if d >= -shortHistoryDays && isWeekday(f.weekday(d)) {
			for di := range numDepts {
				if !depts[di].clinic {
					continue
				}
				for _, doc := range p.clinicDoctors(f, deptID(di), d) {
					n := 10 + r.IntN(7)
					slot := f.atNS(d, 8, 0)
					for k := 0; k < n; k++ {
						if k == n/2 {
							slot += nsHour // lunch
						}
						st := slot + r.Int64N(10*nsMinute)
						reqs = append(reqs, encRequest{dept: deptID(di), kind: encClinic, start: st, end: st + 20*nsMinute + r.Int64N(20*nsMinute),
							patient: -1, child: di == dPediatrics, pin: -1, doctor: doc})
						slot += 30 * nsMinute
					}
				}
			}
		}
	}
	slices.SortStableFunc(reqs, func(a, b encRequest) int { return cmp.Compare(a.firstStart(), b.firstStart()) })

	// Candidate patients: alive, not VIP (VIPs are only admitted by script,
	// so every access to a VIP is planned), by age.
	var adults, children []int32
	for pi := f.patLo; pi < f.patHi; pi++ {
		pt := &p.patients[pi]
		if pt.vip || pt.deceasedAt != 0 {
			continue
		}
		if pt.age < 18 {
			children = append(children, pi)
		} else {
			adults = append(adults, pi)
		}
	}
	for _, rq := range scripted {
		p.addEncounter(f, rq, rq.patient)
	}
	for _, rq := range reqs {
		pool := adults
		if rq.child {
			pool = children
		}
		if len(pool) == 0 {
			continue
		}
		for range 40 {
			pi := pool[r.IntN(len(pool))]
			if p.patientFree(pi, rq.firstStart(), rq.end) {
				p.addEncounter(f, rq, pi)
				break
			}
		}
	}
	p.indexEncounters(f)
}

func (rq *encRequest) firstStart() int64 {
	if rq.edStart > 0 {
		return rq.edStart
	}
	return rq.start
}

// addEncounter records rq (and the ED visit before it) for patient pi.
func (p *plan) addEncounter(f *facility, rq encRequest, pi int32) {
	add := func(e encounter) {
		e.fac, e.patient, e.pin = int16(f.idx), pi, rq.pin
		e.start -= e.start % int64(time.Second)
		e.end -= e.end % int64(time.Second)
		p.encs = append(p.encs, e)
		p.patients[pi].encs = append(p.patients[pi].encs, int32(len(p.encs)-1))
	}
	if rq.edStart > 0 {
		add(encounter{dept: dED, kind: encED, start: rq.edStart, end: rq.start, doctor: -1})
	}
	add(encounter{dept: rq.dept, kind: rq.kind, start: rq.start, end: rq.end, doctor: rq.doctor})
}

// patientFree reports whether pi has no encounter overlapping [from, to).
func (p *plan) patientFree(pi int32, from, to int64) bool {
	for _, ei := range p.patients[pi].encs {
		if p.encs[ei].overlaps(from-2*nsHour, to+2*nsHour) {
			return false
		}
	}
	return true
}

// indexEncounters sorts the facility's encounters by start, gives them ids
// and builds the per-department indexes. Encounters of earlier facilities
// are already final.
func (p *plan) indexEncounters(f *facility) {
	lo := 0
	for lo < len(p.encs) && int(p.encs[lo].fac) != f.idx {
		lo++
	}
	mine := p.encs[lo:]
	slices.SortStableFunc(mine, func(a, b encounter) int {
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return cmp.Compare(a.patient, b.patient)
	})
	for pi := f.patLo; pi < f.patHi; pi++ {
		p.patients[pi].encs = p.patients[pi].encs[:0]
	}
	for k := range mine {
		ei := int32(lo + k)
		e := &p.encs[ei]
		e.id = padID("enc-"+f.id+"-", k+1, 6)
		p.patients[e.patient].encs = append(p.patients[e.patient].encs, ei)
		if e.kind == encClinic {
			f.clinicEnc = append(f.clinicEnc, ei)
		} else {
			f.encByDept[e.dept] = append(f.encByDept[e.dept], ei)
			f.maxLOS[e.dept] = max(f.maxLOS[e.dept], e.end-e.start)
		}
	}
}

// overlapping returns the department's ED or inpatient encounters that
// overlap [from, to) by at least minOverlap.
func (p *plan) overlapping(f *facility, di deptID, from, to, minOverlap int64) []int32 {
	list := f.encByDept[di]
	// encounters are sorted by start; none starting before from−maxLOS can reach from
	lo, _ := slices.BinarySearchFunc(list, from-f.maxLOS[di]-1, func(ei int32, t int64) int { return cmp.Compare(p.encs[ei].start, t) })
	var out []int32
	for _, ei := range list[lo:] {
		e := &p.encs[ei]
		if e.start >= to {
			break
		}
		if min(e.end, to)-max(e.start, from) >= minOverlap {
			out = append(out, ei)
		}
	}
	return out
}

// endedIn returns the facility's ED and inpatient encounters (and clinic
// visits when withClinic) that ended in [from, to).
func (p *plan) endedIn(f *facility, from, to int64, withClinic bool) []int32 {
	var out []int32
	for di := range numDepts {
		for _, ei := range p.overlapping(f, deptID(di), from, to+1, 0) {
			if e := &p.encs[ei]; e.end >= from && e.end < to {
				out = append(out, ei)
			}
		}
	}
	if withClinic {
		lo, _ := slices.BinarySearchFunc(f.clinicEnc, from-nsHour, func(ei int32, t int64) int { return cmp.Compare(p.encs[ei].start, t) })
		for _, ei := range f.clinicEnc[lo:] {
			e := &p.encs[ei]
			if e.start >= to {
				break
			}
			if e.end >= from && e.end < to {
				out = append(out, ei)
			}
		}
	}
	slices.Sort(out)
	return out
}

// clinicDoctors returns the physicians who run a department's clinic on
// day d: every other day-shift physician rostered that weekday.
func (p *plan) clinicDoctors(f *facility, di deptID, d int) []int32 {
	wd := f.weekday(d)
	var out []int32
	k := 0
	for _, ui := range f.byDept[di] {
		u := &p.users[ui]
		if u.role != rPhysician || !u.shift.isDayShift() || !u.days[wd] {
			continue
		}
		if k%2 == 0 {
			out = append(out, ui)
		}
		k++
	}
	return out
}

func isWeekday(wd time.Weekday) bool { return wd != time.Saturday && wd != time.Sunday }

// buildDeaths lets a few ICU and oncology patients die during their stay;
// the encounter runs on for an hour or more (post-mortem documentation).
func (p *plan) buildDeaths(f *facility, r *rand.Rand) {
	want := max(1, int(math.Round(float64(p.cfg.Days)/7)))
	var cands []int32
	for _, di := range []deptID{dICU, dOncology} {
		for _, ei := range f.encByDept[di] {
			e := &p.encs[ei]
			pt := &p.patients[e.patient]
			if e.end > f.start+nsDay && e.end < f.end-6*nsHour && e.end-e.start > 24*nsHour && pt.general && pt.deceasedAt == 0 &&
				pt.encs[len(pt.encs)-1] == ei {
				cands = append(cands, ei)
			}
		}
	}
	slices.Sort(cands)
	for k := 0; k < want && len(cands) > 0; k++ {
		i := r.IntN(len(cands))
		e := &p.encs[cands[i]]
		t := e.end - nsHour - r.Int64N(2*nsHour)
		p.patients[e.patient].deceasedAt = t - t%int64(time.Second)
		cands = slices.Delete(cands, i, i+1)
	}
}

func normalise(w [24]float64) [24]float64 {
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	for i := range w {
		w[i] *= 24 / sum
	}
	return w
}

// poisson draws a Poisson variate (Knuth below 30, normal above).
func poisson(r *rand.Rand, lam float64) int {
	if lam <= 0 {
		return 0
	}
	if lam > 30 {
		return max(0, int(math.Round(lam+math.Sqrt(lam)*r.NormFloat64())))
	}
	l, k, prod := math.Exp(-lam), 0, r.Float64()
	for prod > l {
		k++
		prod *= r.Float64()
	}
	return k
}

// logNormalNS draws a duration with the given mean and log-sd, clamped.
func logNormalNS(r *rand.Rand, mean time.Duration, sigma float64, lo, hi int64) int64 {
	mu := math.Log(float64(mean)) - sigma*sigma/2
	return min(hi, max(lo, int64(math.Exp(mu+sigma*r.NormFloat64()))))
}
