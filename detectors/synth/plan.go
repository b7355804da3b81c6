package synth

import (
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// The generator works in two phases. Planning (this file and the ones it
// calls) builds the reference data and a list of sessions: a user's shift
// with the patients they are assigned, or a scripted episode such as a
// snooping spree. Streaming (stream.go) turns sessions into events lazily,
// merging them in event-time order and then re-ordering by arrival, so a
// stream of any length needs memory only for the sessions in progress.

// RNG streams: every phase draws from its own PCG stream, so a change to
// one phase does not reshuffle the others.
const (
	streamPopulation = 100
	streamRoster     = 200
	streamEncounters = 300
	streamAssign     = 400
	streamScenario   = 500
	streamArrival    = 600
	streamSession    = 1 << 32 // + session index
)

func newRand(seed, stream uint64) *rand.Rand { return rand.New(rand.NewPCG(seed, stream)) }

const (
	nsMinute = int64(time.Minute)
	nsHour   = int64(time.Hour)
	nsDay    = 24 * nsHour
	// unexplainedSlack is the care slack within which an incident's
	// patient has no encounter explaining the access: three days, well
	// beyond any sensible detector setting (ehrwatch's default is 24h).
	unexplainedSlack = 72 * nsHour
)

type facility struct {
	idx      int
	id       string
	source   string
	tz       string
	loc      *time.Location
	y        int
	m        time.Month
	d        int
	start    int64 // local midnight of day 0
	end      int64 // local midnight of day Days
	cfg      FacilityConfig
	users    []int32
	byDept   [numDepts][]int32
	patLo    int32
	patHi    int32
	region   region
	ws       [numDepts][]workstation
	remoteWS workstation
	// per-department encounter indices, sorted by start
	encByDept [numDepts][]int32
	maxLOS    [numDepts]int64
	clinicEnc []int32 // clinic visits, sorted by start
	surgeFrom int64   // ED surge window (0: none)
	surgeTo   int64
}

type workstation struct {
	id string
	ip string
}

// at returns local wall time h:m on day d; time.Date normalises days past
// the month's end and resolves DST gaps and overlaps the standard way.
func (f *facility) at(d, h, m int) time.Time {
	return time.Date(f.y, f.m, f.d+d, h, m, 0, 0, f.loc)
}

func (f *facility) atNS(d, h, m int) int64 { return f.at(d, h, m).UnixNano() }

func (f *facility) weekday(d int) time.Weekday { return f.at(d, 12, 0).Weekday() }

// dayOf returns the local day index of t.
func (f *facility) dayOf(t int64) int {
	lt := time.Unix(0, t).In(f.loc)
	day0 := time.Date(f.y, f.m, f.d, 12, 0, 0, 0, time.UTC)
	cur := time.Date(lt.Year(), lt.Month(), lt.Day(), 12, 0, 0, 0, time.UTC)
	return int(cur.Sub(day0).Hours() / 24)
}

type user struct {
	id           string
	fac          int16
	role         roleID
	dept         deptID
	shift        shiftKind
	days         [7]bool // rostered weekdays
	pat          workPattern
	partTime     bool
	first, last  string
	address      schemas.Address
	household    int32
	patient      int32 // own chart, or -1
	status       schemas.UserStatus
	terminatedAt int64 // 0 when not terminated
	sessions     []int32
}

type patient struct {
	id          string
	fac         int16
	first, last string
	household   int32
	dob         string
	age         int
	vip         bool
	deceasedAt  int64 // 0 when alive
	employee    int32 // user index, or -1
	general     bool  // in a household with no employee
	encs        []int32
}

type household struct {
	last    string
	address schemas.Address
	user    int32 // the employee living here, or -1
}

type encKind uint8

const (
	encED encKind = iota
	encInpatient
	encClinic
)

type encounter struct {
	id      string
	fac     int16
	patient int32
	dept    deptID
	kind    encKind
	start   int64
	end     int64
	team    []int32
	pin     int32 // user who must be assigned the patient when on shift, or -1
	doctor  int32 // clinic physician, or -1
}

func (e *encounter) overlaps(from, to int64) bool { return e.start < to && e.end > from }

func (e *encounter) hasMember(u int32) bool {
	for _, m := range e.team {
		if m == u {
			return true
		}
	}
	return false
}

func (e *encounter) addMember(u int32) {
	if !e.hasMember(u) && len(e.team) < schemas.MaxCareTeam {
		e.team = append(e.team, u)
	}
}

// assignment is one patient on a user's work list for one session.
type assignment struct {
	enc     int32 // -1: no encounter (a deceased patient's records)
	patient int32
	touches int16
	from    int64 // touches fall in [from, to]
	to      int64
}

type sessionKind uint8

const (
	sessWork     sessionKind = iota // a rostered shift
	sessScripted                    // fixed items (incidents and scripted confounders)
)

// session is a stretch of one user's activity.
type session struct {
	kind   sessionKind
	user   int32
	fac    int16
	day    int
	start  int64
	end    int64
	work   []assignment
	items  []item // sessScripted only
	remote bool
	// dropped sessions were rostered but not worked (the user was
	// terminated, or was a patient themselves that day).
	dropped bool
	// noise and background break-glass are drawn at activation for work
	// sessions; scripted ones have none.
}

// item is one event to be emitted.
type item struct {
	t        int64
	patient  int32
	enc      int32
	label    int32 // explicit truth label, or -1
	action   uint8
	resource uint8
	flags    uint8
	reason   int16 // index into goodReasons (flagGoodBTG) or placeholderReasons
}

const (
	flagBTG     uint8 = 1 << iota // break-glass
	flagFailure                   // outcome failure
	flagGoodBTG                   // reason from goodReasons, else placeholderReasons
	flagOnTime                    // never late (injected events)
)

// labelDef is a truth label as planned; the stream fills in event ids.
type labelDef struct {
	detector string
	benign   bool
	scenario string
	fac      int16
	user     int32
	patient  int32 // -1 when the label is about the user's activity
	note     string
}

// watch attaches a user's unlabelled events in [from, to) to a label.
type watch struct {
	from, to int64
	label    int32
}

type plan struct {
	cfg        Config
	facs       []*facility
	users      []user
	patients   []patient
	households []household
	encs       []encounter
	sessions   []session // sorted by start once planning is done
	extra      []session // scripted sessions, merged into sessions by finish
	labels     []labelDef
	watches    map[int32][]watch
}

func (p *plan) user(u int32) *user           { return &p.users[u] }
func (p *plan) patient(i int32) *patient     { return &p.patients[i] }
func (p *plan) fac(u *user) *facility        { return p.facs[u.fac] }
func (p *plan) encounter(i int32) *encounter { return &p.encs[i] }

// explainedBy reports whether an encounter of pat within slack of t has
// user u on its care team or is in u's department: the detectors' care
// relationship.
func (p *plan) explainedBy(u, pat int32, t, slack int64) bool {
	usr := &p.users[u]
	for _, ei := range p.patients[pat].encs {
		e := &p.encs[ei]
		if e.start-slack <= t && t <= e.end+slack && (e.dept == usr.dept || e.hasMember(u)) {
			return true
		}
	}
	return false
}

// unexplainedAt is true when no encounter of pat comes within
// unexplainedSlack of [from, to] for user u.
func (p *plan) unexplainedAt(u, pat int32, from, to int64) bool {
	return !p.explainedBy(u, pat, from, unexplainedSlack) && !p.explainedBy(u, pat, to, unexplainedSlack) &&
		!p.explainedBy(u, pat, (from+to)/2, unexplainedSlack)
}

// inHouse reports whether pi has an encounter overlapping [from, to).
func (p *plan) inHouse(pi int32, from, to int64) bool {
	for _, ei := range p.patients[pi].encs {
		if p.encs[ei].overlaps(from, to) {
			return true
		}
	}
	return false
}

// related reports whether the patient is the user or lives with them.
func (p *plan) related(u, pat int32) bool {
	return p.users[u].household == p.patients[pat].household
}

// newLabel records a label and returns its index.
func (p *plan) newLabel(l labelDef) int32 {
	p.labels = append(p.labels, l)
	return int32(len(p.labels) - 1)
}

func (p *plan) addWatch(u int32, from, to int64, label int32) {
	if p.watches == nil {
		p.watches = map[int32][]watch{}
	}
	p.watches[u] = append(p.watches[u], watch{from: from, to: to, label: label})
}

// padID formats prefix + n zero-padded to width digits.
func padID(prefix string, n, width int) string {
	s := strconv.Itoa(n)
	b := make([]byte, 0, len(prefix)+max(width, len(s)))
	b = append(b, prefix...)
	for i := len(s); i < width; i++ {
		b = append(b, '0')
	}
	return string(append(b, s...))
}

// apportion splits n into len(shares) integer parts proportional to
// shares (largest remainder), each at least mins[i] when n allows.
func apportion(n int, shares []float64, mins []int) []int {
	out := make([]int, len(shares))
	total := 0.0
	for _, s := range shares {
		total += s
	}
	if total <= 0 || n <= 0 {
		return out
	}
	type rem struct {
		i int
		r float64
	}
	rems := make([]rem, 0, len(shares))
	used := 0
	for i, s := range shares {
		x := float64(n) * s / total
		out[i] = int(x)
		rems = append(rems, rem{i, x - float64(out[i])})
		used += out[i]
	}
	// largest remainders first; ties by index
	for k := 0; k < len(rems); k++ {
		for j := k + 1; j < len(rems); j++ {
			if rems[j].r > rems[k].r || (rems[j].r == rems[k].r && rems[j].i < rems[k].i) {
				rems[k], rems[j] = rems[j], rems[k]
			}
		}
	}
	for k := 0; used < n; k = (k + 1) % len(rems) {
		if shares[rems[k].i] > 0 {
			out[rems[k].i]++
			used++
		}
	}
	// enforce minimums by taking from the largest parts
	for i := range out {
		for mins != nil && out[i] < mins[i] {
			big := -1
			for j := range out {
				if j != i && out[j] > mins[j] && (big < 0 || out[j] > out[big]) {
					big = j
				}
			}
			if big < 0 {
				break
			}
			out[big]--
			out[i]++
		}
	}
	return out
}
