package detectors

import (
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Chance-aware ranking of relationship findings.
//
// Some users open many charts that no care relationship explains, as their
// job (research coordinators, coders, quality review, registration). Such a
// user opens an employee's, a VIP's or a deceased patient's chart by chance
// as often as their breadth predicts. The Engine learns, per user and
// online, how many distinct charts they open per active day and how many of
// those nothing explains (see explainer). For an unexplained access to a
// chart of kind k (employee, VIP, deceased, a relative), the number of such
// charts the user is expected to open by chance per day is
//
//	λ = (unexplained distinct charts per day) × (share of patients of kind k)
//
// so once every 1/λ days. A finding is placed in its severity's score band
// by log10(1/λ)/3: expected daily or more often by chance is the bottom of
// the band, once in 1000 days or less often the top. ChancePolicy may also
// lower the severity of a finding that chance explains well (expected at
// least once every ChancePolicy.Days days), unless something raises
// suspicion whatever the user's breadth: same department, the same related
// patient on more than one day, a print or export, a VIP.

// patientKinds holds how common each kind of patient is, for λ.
type patientKinds struct {
	patients, employees, vips, deceased int
	employeesByDept                     map[string]int // employees with a chart, by their department (folded)
}

// countPatientKinds counts the kinds among n patients; specials are the
// patients with a flag or a link (the others are of no kind but may be an
// employee's chart, linked from the user's side); exists reports whether
// a patient is known.
func countPatientKinds(n int, specials map[string]*schemas.Patient, user func(string) (*schemas.User, bool), employeeOf map[string]string,
	exists func(patientID string) bool) patientKinds {
	k := patientKinds{patients: n, employeesByDept: map[string]int{}}
	// Employees linked from either side (patients.employee_user_id,
	// users.patient_id), as the coworker detector reads them.
	for pid, uid := range employeeOf {
		if !exists(pid) {
			continue
		}
		k.employees++
		if u, ok := user(uid); ok && u.Department != "" {
			k.employeesByDept[foldKey(u.Department)]++
		}
	}
	for _, p := range specials {
		if p.VIP {
			k.vips++
		}
		if p.DeceasedAt != nil {
			k.deceased++
		}
	}
	return k
}

// Kinds of related charts the chance ranking knows.
const (
	chanceEmployee = "employee"
	chanceVIP      = "vip"
	chanceDeceased = "deceased"
	chanceRelative = "relative"
	chanceSameDept = "same_department"
)

var chanceNouns = map[string]string{
	chanceEmployee: "an employee's chart",
	chanceVIP:      "a VIP's chart",
	chanceDeceased: "a deceased patient's chart",
	chanceRelative: "one particular relative's chart",
	chanceSameDept: "a colleague's chart from their own department",
}

// share returns the share of patients of a kind (0 when unknown).
func (k patientKinds) share(kind string) float64 {
	if k.patients == 0 {
		return 0
	}
	n := 0
	switch kind {
	case chanceEmployee:
		n = k.employees
	case chanceVIP:
		n = k.vips
	case chanceDeceased:
		n = k.deceased
	case chanceRelative:
		n = 1
	}
	return float64(n) / float64(k.patients)
}

// ChancePolicy lowers the severity of relationship findings that the
// user's breadth of unexplained access explains by chance.
type ChancePolicy struct {
	// Enabled turns the lowering on; findings are ranked by chance either way.
	Enabled bool `yaml:"enabled"`
	// Days: a finding is lowered when the user is expected to open such a
	// chart by chance at least once every Days days. Default 30.
	Days float64 `yaml:"days"`
	// Severity is the lowered severity. Default low.
	Severity schemas.Severity `yaml:"severity"`
}

// DefaultChancePolicy returns the defaults.
func DefaultChancePolicy() ChancePolicy {
	return ChancePolicy{Enabled: true, Days: 90, Severity: schemas.SeverityLow}
}

// Validate checks the policy; keys are relative to "chance".
func (p *ChancePolicy) Validate() error {
	var errs []error
	if !(p.Days > 0) || math.IsInf(p.Days, 0) {
		errs = append(errs, fieldErrorf("chance.days", "must be > 0 (got %v)", p.Days))
	}
	if !p.Severity.Valid() {
		errs = append(errs, fieldErrorf("chance.severity", "must be one of info, low, medium, high, critical (got %q)", p.Severity))
	}
	return errors.Join(errs...)
}

// chanceRank is how surprising an unexplained access is for its user.
type chanceRank struct {
	known       bool    // the user has enough history
	days        int     // active days learned
	charts      float64 // distinct charts per active day
	unexplained float64 // distinct unexplained charts per active day
	every       float64 // days between such charts by chance; +Inf when never
	kind        string
	need        int // active days needed
}

func nounCount(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// rankUnexplained ranks an access that care does not explain by chance
// (kind as for rankByChance) and returns the rank with its sentence, led by
// "; ", naming the days the user opened this chart when more than one. An
// explained access is not ranked: the zero rank and "".
func rankUnexplained(env Env, ref Reference, ev *schemas.AccessEvent, kind string, explained bool) (chanceRank, string) {
	if explained {
		return chanceRank{}, ""
	}
	repeat := repeatDays(env, ev)
	rank := rankByChance(env, ref, ev.UserID, kind)
	ranking := "; " + rank.sentence()
	if repeat > 1 {
		ranking += fmt.Sprintf("; the user opened this chart on %d days", repeat)
	}
	return rank, ranking
}

// rankByChance returns the ranking of an unexplained access to a chart of
// kind by ev's user; unknown when there is no Engine or too little history.
func rankByChance(env Env, ref Reference, userID, kind string) chanceRank {
	var share float64
	if ri, ok := ref.(*ReferenceIndex); ok {
		share = ri.kinds.share(kind)
	}
	return rankByShare(env, userID, kind, share)
}

// rankBySameDepartment ranks an unexplained access to the chart of an
// employee of dept, the user's own department.
func rankBySameDepartment(env Env, ref Reference, userID, dept string) chanceRank {
	var share float64
	if ri, ok := ref.(*ReferenceIndex); ok && ri.kinds.patients > 0 {
		share = float64(ri.kinds.employeesByDept[foldKey(dept)]) / float64(ri.kinds.patients)
	}
	return rankByShare(env, userID, chanceSameDept, share)
}

func rankByShare(env Env, userID, kind string, share float64) chanceRank {
	r := chanceRank{kind: kind, every: math.Inf(1)}
	x := env.explain
	if x == nil {
		return r
	}
	b := x.breadthOf(userID)
	r.need = x.cfg.BreadthMinDays
	if b == nil || b.Days < x.cfg.BreadthMinDays {
		if b != nil {
			r.days = b.Days
		}
		return r
	}
	r.known, r.days, r.charts, r.unexplained = true, b.Days, b.Charts, b.Unexplained
	if lambda := r.unexplained * share; lambda > 0 {
		r.every = 1 / lambda
	}
	return r
}

// quantile places the finding in its band: 0 when chance brings the user
// to such a chart daily or more often, 1 when once in 1000 days or rarer
// (and when the user's breadth is not known yet).
func (r chanceRank) quantile() float64 {
	if !r.known || math.IsInf(r.every, 1) {
		return 1
	}
	return min(1, max(0, math.Log10(r.every)/3))
}

// likely reports whether chance brings the user to such a chart at least
// once every days days.
func (r chanceRank) likely(days float64) bool { return r.known && r.every <= days }

// chanceOnly renders only the chance part ("a colleague's chart from their
// own department is expected by chance about once a week").
func (r chanceRank) chanceOnly() string {
	if !r.known || math.IsInf(r.every, 1) {
		return "chance alone would not bring them to " + chanceNouns[r.kind]
	}
	return chanceNouns[r.kind] + " is expected by chance " + everyPhrase(r.every)
}

// sentence explains the ranking in words.
func (r chanceRank) sentence() string {
	if !r.known {
		return fmt.Sprintf("ranked at the top of its severity: the user's breadth of access is not learned yet (%s of history, %d needed)", nounCount(r.days, "active day"), r.need)
	}
	s := fmt.Sprintf("the user opens about %s charts a day, %s%% without a care relationship", roundHuman(r.charts), strconv.Itoa(int(math.Round(100*r.unexplained/max(r.charts, 1e-9)))))
	if math.IsInf(r.every, 1) {
		return s + "; chance alone would not bring them to " + chanceNouns[r.kind]
	}
	return s + "; " + chanceNouns[r.kind] + " is expected by chance " + everyPhrase(r.every)
}

// setChanceFacts records the ranking in a finding's evidence.
func (r chanceRank) setFacts(f *schemas.Finding) {
	if !r.known {
		f.Evidence.Facts["chance"] = "unknown"
		return
	}
	f.Evidence.Facts["chance_charts_per_day"] = strconv.FormatFloat(math.Round(r.charts*10)/10, 'f', -1, 64)
	f.Evidence.Facts["chance_unexplained_per_day"] = strconv.FormatFloat(math.Round(r.unexplained*10)/10, 'f', -1, 64)
	if math.IsInf(r.every, 1) {
		f.Evidence.Facts["chance_every_days"] = "never"
	} else {
		f.Evidence.Facts["chance_every_days"] = strconv.FormatFloat(math.Round(r.every*10)/10, 'f', -1, 64)
	}
}

func roundHuman(v float64) string {
	switch {
	case v >= 20:
		return strconv.Itoa(int(math.Round(v/10) * 10))
	case v >= 1:
		return strconv.Itoa(int(math.Round(v)))
	}
	return strconv.FormatFloat(math.Round(v*10)/10, 'f', -1, 64)
}

// everyPhrase renders a period in days as "several times a day", "about
// once a day", "about once a week", "about once every 3 months", "about
// once in 4 years".
func everyPhrase(days float64) string {
	switch {
	case days < 0.5:
		return "several times a day"
	case days < 1.5:
		return "about once a day"
	case days < 5:
		return fmt.Sprintf("about once every %d days", int(math.Round(days)))
	case days < 10:
		return "about once a week"
	case days < 25:
		return fmt.Sprintf("about once every %d weeks", int(math.Round(days/7)))
	case days < 45:
		return "about once a month"
	case days < 300:
		return fmt.Sprintf("about once every %d months", int(math.Round(days/30)))
	case days < 550:
		return "about once a year"
	}
	return fmt.Sprintf("about once in %d years", int(math.Round(days/365)))
}

// repeatNeed is on how many distinct days a user must open the same
// related patient's chart before the repeat raises suspicion: 2 for most
// users; for broad users the smallest count that chance (a Poisson number
// of look-ups of this one patient over the days remembered, beyond the
// first) reaches with less than 1 % probability.
func repeatNeed(env Env, ref Reference, userID string) int {
	x := env.explain
	ri, ok := ref.(*ReferenceIndex)
	if x == nil || !ok || ri.kinds.patients == 0 {
		return 2
	}
	b := x.breadthOf(userID)
	if b == nil || b.Days < x.cfg.BreadthMinDays {
		return 2
	}
	mu := float64(min(b.Days, relatedMemoryDays)) * b.Unexplained / float64(ri.kinds.patients)
	// P(X ≥ k) for X ~ Poisson(mu), k = 1, 2, …
	p, tail := math.Exp(-mu), 1.0
	for k := 1; k < 20; k++ {
		tail -= p
		if tail < 0.01 {
			return k + 1
		}
		p *= mu / float64(k)
	}
	return 21
}
