package synth

import "fmt"

// Confounders and incidents for chance-aware ranking and continuity of
// care (issue 12). They are planned last, so the rest of the hospital is
// the same with or without them.

// Scenario names added for chance-aware ranking and continuity of care.
const (
	// ScenarioBroadAccess: a broad-access user (registration clerks and
	// coders doing look-ups, chart review) opens random charts every shift;
	// a chart that is an employee's (benign:coworker) or a deceased
	// patient's (benign:deceased) is labelled.
	ScenarioBroadAccess = "broad_access"
	// ScenarioDepartmentConsult: a member of a consulting department joins
	// an employee-patient's care team and a colleague of theirs follows up
	// in the chart without a formal encounter (benign:coworker).
	ScenarioDepartmentConsult = "department_consult"
	// ScenarioDeceasedNoRelationship: staff with no prior relationship open
	// the chart of a patient who died in the hospital 3–25 days earlier
	// (deceased incident).
	ScenarioDeceasedNoRelationship = "deceased_no_relationship"
)

// quality12 plans the scenarios of this file.
func (sc *scenarios) quality12() {
	for _, f := range sc.p.facs {
		sc.broadAccess(f)
	}
	for i := range sc.nBen {
		sc.departmentConsult(i)
	}
	for i := range sc.nInc {
		sc.deceasedNoRelationship(i)
	}
}

// broadAccess makes two roles broad by the nature of their work: central
// registration clerks (patient look-ups, insurance verification) and HIM
// coders (retrospective chart review) get 30–90 extra look-ups of random
// charts (never VIPs', never their own household's) in every shift they
// work.
func (sc *scenarios) broadAccess(f *facility) {
	p, r := sc.p, sc.r
	for _, ui := range f.users {
		u := &p.users[ui]
		if !(u.role == rRegClerk && u.dept == dRegistration) && !(u.role == rCoder && u.dept == dHIM) {
			continue
		}
		for _, si := range p.workSessions(ui) {
			s := p.sessions[si]
			if s.start < f.start || s.end > f.end {
				continue
			}
			var items []item
			for range 30 + r.IntN(61) {
				pi := f.patLo + int32(r.IntN(int(f.patHi-f.patLo)))
				pt := &p.patients[pi]
				if pt.vip || p.related(ui, pi) || pt.employee == ui {
					continue
				}
				t := sc.within(s.start+5*nsMinute, s.end-5*nsMinute)
				l := int32(-1)
				switch {
				case pt.employee >= 0:
					l = p.newLabel(labelDef{detector: KindCoworker, benign: true, scenario: ScenarioBroadAccess, fac: int16(f.idx), user: ui, patient: pi,
						note: fmt.Sprintf("%s (%s, %s), whose work opens many charts without a care relationship, looked up an employee's chart among them", u.id, roleNames[u.role], depts[u.dept].name)})
				case pt.deceasedAt != 0 && t > pt.deceasedAt && u.role != rCoder:
					l = p.newLabel(labelDef{detector: KindDeceased, benign: true, scenario: ScenarioBroadAccess, fac: int16(f.idx), user: ui, patient: pi,
						note: fmt.Sprintf("%s (%s, %s), whose work opens many charts without a care relationship, looked up a deceased patient's chart among them", u.id, roleNames[u.role], depts[u.dept].name)})
				}
				items = append(items, view(t, pi, -1, l, resDemographics))
			}
			p.scripted(ui, f, false, items)
		}
	}
}

// consultDepts are the departments that consult on other departments'
// inpatients, with the roles that follow up.
var consultDepts = []deptID{dCardiology, dOncology, dPharmacy, dRehab, dICU}

// departmentConsult: an employee is an inpatient; a clinician of another
// department is put on the care team (the consult), and a colleague of
// that clinician, from the same department, opens the chart during the
// stay with no encounter of their own.
func (sc *scenarios) departmentConsult(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(9, i) {
		for range 200 {
			cd := consultDepts[r.IntN(len(consultDepts))]
			staff := f.byDept[cd]
			if len(staff) < 2 {
				continue
			}
			var encs []int32
			for d := range numDepts {
				if deptID(d) == cd {
					continue
				}
				for _, ei := range f.encByDept[d] {
					e := &p.encs[ei]
					pt := &p.patients[e.patient]
					if e.kind == encInpatient && pt.employee >= 0 && p.users[pt.employee].dept != cd &&
						e.start >= f.start && e.end-e.start >= 2*nsDay && e.end <= f.end {
						encs = append(encs, ei)
					}
				}
			}
			if len(encs) == 0 {
				break
			}
			ei := encs[r.IntN(len(encs))]
			e := &p.encs[ei]
			consultant := staff[r.IntN(len(staff))]
			var follow []int32
			for _, si := range sc.cache(f).work {
				s := &p.sessions[si]
				if s.dropped || s.user == consultant || p.users[s.user].dept != cd || p.related(s.user, e.patient) ||
					s.start < e.start+12*nsHour || s.end > e.end || !p.unexplainedAt(s.user, e.patient, s.start, s.end) {
					continue
				}
				follow = append(follow, si)
			}
			if len(follow) == 0 {
				continue
			}
			si := follow[r.IntN(len(follow))]
			s := &p.sessions[si]
			e.addMember(consultant)
			u := &p.users[s.user]
			l := p.newLabel(labelDef{detector: KindCoworker, benign: true, scenario: ScenarioDepartmentConsult, fac: int16(f.idx), user: s.user, patient: e.patient,
				note: fmt.Sprintf("%s (%s, %s) followed up on a %s consult by colleague %s for an employee admitted to %s, without an encounter of their own",
					u.id, roleNames[u.role], depts[u.dept].name, depts[cd].name, p.users[consultant].id, depts[e.dept].name)})
			t := sc.within(s.start+20*nsMinute, s.end-20*nsMinute)
			var items []item
			for k := range 1 + r.IntN(3) {
				items = append(items, view(t+int64(k)*5*nsMinute, e.patient, -1, l, resNotes))
			}
			p.scripted(s.user, f, false, items)
			return
		}
	}
}

// noRelationship reports whether nothing in the reference relates user u
// to patient pi: no encounter of pi in u's department or with u, or with
// a member of u's department, on its care team; not the same household.
func (p *plan) noRelationship(u, pi int32) bool {
	if p.related(u, pi) {
		return false
	}
	ud := p.users[u].dept
	for _, ei := range p.patients[pi].encs {
		e := &p.encs[ei]
		if e.dept == ud {
			return false
		}
		for _, m := range e.team {
			if m == u || p.users[m].dept == ud {
				return false
			}
		}
	}
	return true
}

// deceasedNoRelationship: a patient died in the hospital during the
// window; 3–25 days later someone with no relationship to them opens the
// chart.
func (sc *scenarios) deceasedNoRelationship(i int) {
	p, r := sc.p, sc.r
	for _, f := range sc.facilityOrder(10, i) {
		var died []int32
		for pi := f.patLo; pi < f.patHi; pi++ {
			if pt := &p.patients[pi]; pt.deceasedAt >= f.start && pt.deceasedAt < f.end-3*nsDay && !pt.vip && pt.employee < 0 {
				died = append(died, pi)
			}
		}
		if len(died) == 0 {
			continue
		}
		pi := died[r.IntN(len(died))]
		at := p.patients[pi].deceasedAt
		si := sc.pickSession(f, 0, p.cfg.Days, func(u *user, s *session) bool {
			k := depts[u.dept].kind
			return !sc.usedU[s.user] && u.role != rBiller && u.role != rCoder && k != kindOffice &&
				s.start >= at+3*nsDay && s.start <= at+25*nsDay && p.noRelationship(s.user, pi) && p.unexplainedAt(s.user, pi, s.start, s.end)
		})
		if si < 0 {
			continue
		}
		s := &p.sessions[si]
		u := &p.users[s.user]
		sc.usedU[s.user] = true
		l := p.newLabel(labelDef{detector: KindDeceased, scenario: ScenarioDeceasedNoRelationship, fac: int16(f.idx), user: s.user, patient: pi,
			note: fmt.Sprintf("%s (%s, %s) opened the chart of a patient who died in the hospital %d days earlier, with no relationship to them",
				u.id, roleNames[u.role], depts[u.dept].name, (s.start-at)/nsDay)})
		sc.relationIncident(f, si, pi, l, 1+r.IntN(3), 0.1)
		return
	}
}
