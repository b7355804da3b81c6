package synth

import "github.com/ehrwatch/ehrwatch/schemas"

// absenceRate is the share of rostered shifts not worked (sickness, leave).
const absenceRate = 0.03

// buildRoster creates a work session for every shift each active user works,
// from the night shift that ends on the morning of day 0 to the one that
// starts on the last day. Shift times are local wall-clock times, so the
// night of a fall-back change lasts 9.5 hours and that of a spring-forward
// change 7.5.
func (p *plan) buildRoster(f *facility) {
	r := newRand(p.cfg.Seed, streamRoster+uint64(f.idx))
	for _, ui := range f.users {
		u := &p.users[ui]
		for d := -1; d < p.cfg.Days; d++ {
			absent := r.Float64() < absenceRate
			jStart := r.Int64N(25*nsMinute) - 15*nsMinute
			jEnd := r.Int64N(40*nsMinute) - 10*nsMinute
			if u.status != schemas.UserActive || absent || !u.days[f.weekday(d)] {
				continue
			}
			h := shiftHours[u.shift]
			endDay := d
			if h.eh < h.sh {
				endDay = d + 1
			}
			start := msTime(f.atNS(d, h.sh, h.sm) + jStart)
			end := msTime(f.atNS(endDay, h.eh, h.em) + jEnd)
			if end <= f.start || start >= f.end {
				continue
			}
			p.addSession(session{kind: sessWork, user: ui, fac: int16(f.idx), day: d, start: start, end: end})
		}
	}
}

func (p *plan) addSession(s session) int32 {
	i := int32(len(p.sessions))
	p.sessions = append(p.sessions, s)
	p.users[s.user].sessions = append(p.users[s.user].sessions, i)
	return i
}

// workSessions returns the user's work sessions that are not dropped.
func (p *plan) workSessions(u int32) []int32 {
	var out []int32
	for _, si := range p.users[u].sessions {
		if s := &p.sessions[si]; s.kind == sessWork && !s.dropped {
			out = append(out, si)
		}
	}
	return out
}
