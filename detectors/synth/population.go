package synth

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// buildFacilities resolves time zones and day boundaries.
func (p *plan) buildFacilities() error {
	y, m, d := p.cfg.Start.Date()
	for i, fc := range p.cfg.Facilities {
		loc, err := time.LoadLocation(fc.TimeZone)
		if err != nil {
			return fmt.Errorf("synth.facilities[%d].time_zone: %w", i, err)
		}
		src := fc.Source
		if src == "" {
			src = "ehr"
		}
		f := &facility{idx: i, id: fc.ID, source: src, tz: fc.TimeZone, loc: loc, y: y, m: m, d: d, cfg: fc, region: regionFor(fc.TimeZone)}
		f.start = f.atNS(0, 0, 0)
		f.end = f.atNS(p.cfg.Days, 0, 0)
		for di := range numDepts {
			n := min(2000, max(3, int(math.Ceil(float64(fc.Users)*depts[di].share/2))))
			code := depts[di].code
			for k := range n {
				f.ws[di] = append(f.ws[di], workstation{
					id: fmt.Sprintf("WS-%s-%s-%03d", strings.ToUpper(fc.ID), code, k+1),
					ip: fmt.Sprintf("10.%d.%d.%d", 16+i, 10*int(di)+k/200, 10+k%200),
				})
			}
		}
		f.remoteWS = workstation{id: "VPN-" + strings.ToUpper(fc.ID), ip: fmt.Sprintf("172.20.%d.", i)} // + host, per session
		p.facs = append(p.facs, f)
	}
	return nil
}

// buildPopulation creates a facility's users, their households and the
// patients. Staff live in households too: some are patients themselves
// (User.PatientID ↔ Patient.EmployeeUserID) and some have relatives with
// charts (same last name and address, the family detector's evidence).
func (p *plan) buildPopulation(f *facility) {
	r := newRand(p.cfg.Seed, streamPopulation+uint64(f.idx))
	names := newSurnameSampler()
	usedAddr := map[string]bool{}
	newAddress := func() schemas.Address {
		for {
			t := f.region.towns[r.IntN(len(f.region.towns))]
			num := 1 + int(math.Exp(r.Float64()*math.Log(9999)))
			line := strconv.Itoa(num) + " " + streetNames[r.IntN(len(streetNames))] + " " + streetSuffixes[r.IntN(len(streetSuffixes))]
			if r.Float64() < 0.35 {
				line += " Apt " + strconv.Itoa(1+r.IntN(24)) + string(rune('A'+r.IntN(8)))
			}
			key := line + "|" + t.city
			if usedAddr[key] {
				continue
			}
			usedAddr[key] = true
			zip := r.IntN(100)
			return schemas.Address{Line: line, City: t.city, State: t.state, PostalCode: t.zipPrefix + string(rune('0'+zip/10)) + string(rune('0'+zip%10))}
		}
	}
	startYear := p.cfg.Start.Year()
	dob := func(age int) string {
		return time.Date(startYear-age-1+r.IntN(2), time.Month(1+r.IntN(12)), 1+r.IntN(28), 0, 0, 0, 0, time.UTC).Format(time.DateOnly)
	}
	adultAge := func() int {
		// skewed older: chart holders are older than the population
		return 18 + int(77*math.Pow(r.Float64(), 0.8))
	}
	f.patLo = int32(len(p.patients))
	addPatient := func(first, last string, hh int32, age int, general bool) int32 {
		idx := int32(len(p.patients))
		n := int(idx-f.patLo) + 1
		p.patients = append(p.patients, patient{
			id:  padID("MRN"+strconv.Itoa(f.idx+1), n, 7),
			fac: int16(f.idx), first: first, last: last, household: hh, dob: dob(age), age: age,
			employee: -1, general: general,
		})
		return idx
	}

	// Staff: departments, roles and shifts by largest remainder, then shuffled
	// so that ids say nothing about the department.
	type slot struct {
		dept  deptID
		role  roleID
		shift shiftKind
		pat   workPattern
	}
	var slots []slot
	deptShares := make([]float64, numDepts)
	deptMins := make([]int, numDepts)
	for di := range numDepts {
		deptShares[di] = depts[di].share
		deptMins[di] = len(depts[di].staff)
	}
	deptN := apportion(f.cfg.Users, deptShares, deptMins)
	for di := range numDepts {
		spec := &depts[di]
		shares := make([]float64, len(spec.staff))
		mins := make([]int, len(spec.staff))
		for k, s := range spec.staff {
			shares[k], mins[k] = s.share, 1
		}
		roleN := apportion(deptN[di], shares, mins)
		for k, s := range spec.staff {
			mix := s.mix[:]
			shiftN := apportion(roleN[k], mix, nil)
			for sh, n := range shiftN {
				for range n {
					sl := slot{dept: deptID(di), role: s.role, pat: pat24x7}
					switch sh {
					case 0:
						sl.shift, sl.pat = s.dayShift, s.dayPat
					case 1:
						sl.shift = shEvening
					default:
						sl.shift = shNight
					}
					slots = append(slots, sl)
				}
			}
		}
	}
	r.Shuffle(len(slots), func(i, j int) { slots[i], slots[j] = slots[j], slots[i] })

	for k, sl := range slots {
		ui := int32(len(p.users))
		female := r.Float64() < 0.62
		u := user{
			id:   padID("usr-"+f.id+"-", k+1, 4),
			fac:  int16(f.idx),
			role: sl.role, dept: sl.dept, shift: sl.shift,
			first: firstName(r, female), last: names.draw(r),
			patient: -1, status: schemas.UserActive,
		}
		// roster: weekdays or 24×7; full-timers 5 days, part-timers 3
		partTimeShare := 0.18
		if sl.role == rPhysician || sl.role == rRadiologist {
			partTimeShare = 0.08
		}
		u.partTime = r.Float64() < partTimeShare
		u.pat = sl.pat
		if sl.pat == patWeekdays && !u.partTime {
			for wd := time.Monday; wd <= time.Friday; wd++ {
				u.days[wd] = true
			}
		}
		// household
		hh := int32(len(p.households))
		p.households = append(p.households, household{last: u.last, address: newAddress(), user: ui})
		u.household = hh
		u.address = p.households[hh].address
		p.users = append(p.users, u)
		f.users = append(f.users, ui)
		f.byDept[sl.dept] = append(f.byDept[sl.dept], ui)
	}

	// Rosters as a scheduler would make them: full-timers on 24×7 rosters
	// get two consecutive days off, staggered across the group; part-timers
	// then take the three days (weekdays, for weekday roles) that are
	// least covered, so each shift is staffed evenly through the week.
	groups := map[[3]int][]int32{}
	var gkeys [][3]int
	for _, ui := range f.users {
		u := &p.users[ui]
		k := [3]int{int(u.dept), int(u.role), int(u.shift)}
		if groups[k] == nil {
			gkeys = append(gkeys, k)
		}
		groups[k] = append(groups[k], ui)
	}
	for _, k := range gkeys {
		g := groups[k]
		var ft []int32
		for _, ui := range g {
			if u := &p.users[ui]; !u.partTime && u.pat == pat24x7 {
				ft = append(ft, ui)
			}
		}
		base := r.IntN(7)
		for j, ui := range ft {
			off := (base + j*7/len(ft)) % 7
			for wd := range 7 {
				p.users[ui].days[wd] = wd != off && wd != (off+1)%7
			}
		}
		var cover [7]int
		for _, ui := range g {
			for wd, on := range p.users[ui].days {
				if on {
					cover[wd]++
				}
			}
		}
		for _, ui := range g {
			u := &p.users[ui]
			if !u.partTime {
				continue
			}
			for range 3 {
				best := -1
				for _, wd := range r.Perm(7) {
					if u.days[wd] || (u.pat == patWeekdays && !isWeekday(time.Weekday(wd))) {
						continue
					}
					if best < 0 || cover[wd] < cover[best] {
						best = wd
					}
				}
				u.days[best] = true
				cover[best]++
			}
		}
	}

	// Employees' own charts and their relatives'.
	for _, ui := range f.users {
		u := &p.users[ui]
		if r.Float64() < 0.15 {
			pi := addPatient(u.first, u.last, u.household, 22+r.IntN(44), false)
			p.patients[pi].employee = ui
			u.patient = pi
		}
		if r.Float64() < 0.35 {
			n := 1 + r.IntN(3)
			for k := range n {
				last := u.last
				age := 0
				switch k {
				case 0: // spouse, who sometimes kept their name
					if r.Float64() < 0.15 {
						last = names.draw(r)
					}
					age = 22 + r.IntN(50)
				default: // child or parent
					if r.Float64() < 0.6 {
						age = r.IntN(18)
					} else {
						age = 60 + r.IntN(30)
					}
				}
				addPatient(firstName(r, r.IntN(2) == 0), last, u.household, age, false)
			}
		}
	}

	// Everyone else, in households of one to five charts.
	for len(p.patients)-int(f.patLo) < f.cfg.Patients {
		last := names.draw(r)
		hh := int32(len(p.households))
		p.households = append(p.households, household{last: last, address: newAddress(), user: -1})
		size := 1
		switch x := r.Float64(); {
		case x < 0.55:
		case x < 0.80:
			size = 2
		case x < 0.90:
			size = 3
		case x < 0.96:
			size = 4
		default:
			size = 5
		}
		size = min(size, f.cfg.Patients-(len(p.patients)-int(f.patLo)))
		for k := range size {
			l := last
			age := adultAge()
			switch {
			case k == 1 && r.Float64() < 0.15:
				l = names.draw(r)
			case k >= 2 || (k == 1 && size > 2 && r.Float64() < 0.3):
				age = r.IntN(18)
			}
			addPatient(firstName(r, r.IntN(2) == 0), l, hh, age, true)
		}
	}
	f.patHi = int32(len(p.patients))

	// VIPs and long-dead patients, among the general population.
	nVIP := max(3, int(math.Round(float64(f.cfg.Patients)*0.0015)))
	for got, tries := 0, 0; got < nVIP && tries < 100000; tries++ {
		pt := &p.patients[f.patLo+int32(r.IntN(int(f.patHi-f.patLo)))]
		if pt.general && !pt.vip && pt.age >= 25 {
			pt.vip = true
			got++
		}
	}
	nDead := max(3, int(math.Round(float64(f.cfg.Patients)*0.015)))
	for got, tries := 0, 0; got < nDead && tries < 100000; tries++ {
		pt := &p.patients[f.patLo+int32(r.IntN(int(f.patHi-f.patLo)))]
		if pt.general && !pt.vip && pt.deceasedAt == 0 {
			pt.deceasedAt = f.start - 45*nsDay - r.Int64N(3*365*nsDay)
			pt.deceasedAt -= pt.deceasedAt % int64(time.Second)
			got++
		}
	}

	// Account status: a few on leave, a few terminated before the window
	// (they have no activity; HR feeds keep them).
	for _, ui := range f.users {
		switch x := r.Float64(); {
		case x < 0.01:
			p.users[ui].status = schemas.UserInactive
		case x < 0.025:
			p.users[ui].status = schemas.UserTerminated
			t := f.start - 10*nsDay - r.Int64N(200*nsDay)
			p.users[ui].terminatedAt = t - t%int64(time.Second)
		}
	}
}

// noiseEligible reports whether a patient may be the target of an access
// that nothing explains without tripping a relationship detector: alive,
// not VIP, not an employee or an employee's relative.
func (p *plan) noiseEligible(pi int32) bool {
	pt := &p.patients[pi]
	return pt.general && !pt.vip && pt.deceasedAt == 0
}

// randomNoisePatient draws a noise-eligible patient of the facility.
func (p *plan) randomNoisePatient(f *facility, r *rand.Rand) int32 {
	for range 1000 {
		pi := f.patLo + int32(r.IntN(int(f.patHi-f.patLo)))
		if p.noiseEligible(pi) {
			return pi
		}
	}
	return -1
}
