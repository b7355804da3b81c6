package synth

import (
	"cmp"
	"iter"
	"slices"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Label is one piece of ground truth: an injected incident, or a benign
// confounder that a naive rule would flag and a good detector should not.
type Label struct {
	// ID numbers labels in order of Start ("lbl-0001").
	ID string `json:"label_id"`
	// Kind is the detector name for incidents ("volume") and
	// "benign:<detector>" for confounders ("benign:volume").
	Kind string `json:"kind"`
	// Detector is the ehrwatch detector the label is about (a Kinds value).
	Detector string `json:"detector"`
	// Benign is true for confounders.
	Benign bool `json:"benign"`
	// Scenario says which story this is (the Scenario* constants).
	Scenario   string `json:"scenario"`
	FacilityID string `json:"facility_id"`
	UserID     string `json:"user_id"`
	// PatientID is set when the label is about one patient (relationship
	// detectors, break-glass); volume, bulk_export, off_hours, terminated
	// and ED-surge labels are about the user's activity.
	PatientID string `json:"patient_id,omitempty"`
	// Start and End are the event times of the first and last labelled
	// event.
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
	// EventIDs are the labelled events, in event-time order. For an
	// incident they are exactly the injected events (for volume: the extra
	// charts, not the user's routine work that day); match windowed
	// findings by detector, user and overlap with [Start, End].
	EventIDs []string `json:"event_ids"`
	// Note says what happened, for people (synthetic names and ids only).
	Note string `json:"note"`
}

// Facility is a generated hospital.
type Facility struct {
	ID       string         `json:"facility_id"`
	TimeZone string         `json:"time_zone"`
	Location *time.Location `json:"-"`
	Source   string         `json:"source"`
	// Start and End bound the simulated days: local midnight of day 0 and of
	// day Days. Every event time is in [Start, End).
	Start time.Time `json:"start"`
	End   time.Time `json:"end"`
}

// Hospital is a generated organisation: reference data, and either the
// materialised stream (Generate) or the means to stream it (New, then
// EachEvent or All). A Hospital is immutable after construction except
// for Events and Truth, which Generate fills; EachEvent and All may run
// concurrently.
type Hospital struct {
	Config     Config
	Facilities []Facility
	// Users, Patients and Encounters are the reference data as of the end
	// of the simulated period: terminated accounts carry TerminatedAt,
	// patients who died carry DeceasedAt, encounters still open at the end
	// have no End, and care teams list everyone who worked on the
	// encounter. Care teams are what explain most accesses.
	Users      []schemas.User
	Patients   []schemas.Patient
	Encounters []schemas.Encounter
	// Events is the stream in arrival order (logged_time order), filled by
	// Generate only.
	Events []schemas.AccessEvent
	// Truth is the ground truth, filled by Generate only (EachEvent returns
	// it).
	Truth []Label

	plan *plan
	// vocab, when set (WithVocabulary), respells the streamed events.
	vocab  *Vocabulary
	facIdx map[string]int
}

// Generate builds the hospital and materialises its whole stream. Memory is
// about 1 KB per event; for millions of events use New and EachEvent.
func Generate(cfg Config) (*Hospital, error) {
	h, err := New(cfg)
	if err != nil {
		return nil, err
	}
	h.Events = make([]schemas.AccessEvent, 0, 40*len(h.Users)*cfg.Days)
	truth, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		h.Events = append(h.Events, *ev)
		return nil
	})
	if err != nil {
		return nil, err
	}
	h.Truth = truth
	return h, nil
}

// New validates cfg and plans the hospital: reference data, rosters,
// encounters, work lists and scripted scenarios. It does not generate the
// events; EachEvent and All do, as often as asked, identically.
func New(cfg Config) (*Hospital, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	p := &plan{cfg: cfg}
	if err := p.buildFacilities(); err != nil {
		return nil, err
	}
	for _, f := range p.facs {
		p.buildPopulation(f)
	}
	for _, f := range p.facs {
		p.buildRoster(f)
	}
	sc := newScenarios(p)
	scripted := sc.phaseA()
	deaths := newRand(cfg.Seed, streamEncounters+99)
	for _, f := range p.facs {
		p.buildEncounters(f, scripted[f.idx])
		p.buildDeaths(f, deaths)
	}
	for _, f := range p.facs {
		p.buildAssignments(f)
	}
	sc.phaseB()
	p.finish()
	return p.export(), nil
}

// finish drops unworked sessions and sorts the rest by start.
func (p *plan) finish() {
	kept := p.sessions[:0]
	for _, s := range append(p.sessions, p.extra...) {
		if !s.dropped && (s.kind == sessScripted || len(s.work) > 0) {
			kept = append(kept, s)
		}
	}
	slices.SortStableFunc(kept, func(a, b session) int {
		if c := cmp.Compare(a.start, b.start); c != 0 {
			return c
		}
		return cmp.Compare(a.user, b.user)
	})
	p.sessions, p.extra = kept, nil
	for i := range p.users {
		p.users[i].sessions = nil // indexes are stale now
	}
}

// EachEvent generates the stream in arrival order and calls fn with each
// event (a fresh value fn may keep). It stops at fn's first error and
// returns it. On success it returns the ground truth, complete with event
// ids. Memory stays proportional to the sessions in progress, not to the
// length of the stream.
func (h *Hospital) EachEvent(fn func(ev *schemas.AccessEvent) error) ([]Label, error) {
	return h.plan.run(h.renamed(fn))
}

// All is EachEvent as an iterator, without the ground truth.
func (h *Hospital) All() iter.Seq[*schemas.AccessEvent] {
	return func(yield func(*schemas.AccessEvent) bool) {
		_, _ = h.plan.run(h.renamed(func(ev *schemas.AccessEvent) error {
			if !yield(ev) {
				return errStop
			}
			return nil
		}))
	}
}

type stopError struct{}

func (stopError) Error() string { return "synth: iteration stopped" }

var errStop error = stopError{}

// Location returns a facility's time zone (UTC for unknown ids), the
// function detectors.Env.Location wants.
func (h *Hospital) Location(facilityID string) *time.Location {
	for _, f := range h.Facilities {
		if f.ID == facilityID {
			return f.Location
		}
	}
	return time.UTC
}

// TimeZones maps facility ids to IANA zone names, the input of
// detectors.FacilityLocations.
func (h *Hospital) TimeZones() map[string]string {
	out := make(map[string]string, len(h.Facilities))
	for _, f := range h.Facilities {
		out[f.ID] = f.TimeZone
	}
	return out
}

func utcPtr(ns int64) *time.Time {
	t := time.Unix(0, ns).UTC()
	return &t
}

// export builds the public reference data.
func (p *plan) export() *Hospital {
	h := &Hospital{Config: p.cfg, plan: p}
	for _, f := range p.facs {
		h.Facilities = append(h.Facilities, Facility{ID: f.id, TimeZone: f.tz, Location: f.loc, Source: f.source,
			Start: time.Unix(0, f.start).UTC(), End: time.Unix(0, f.end).UTC()})
	}
	h.Users = make([]schemas.User, len(p.users))
	for i := range p.users {
		u := &p.users[i]
		su := schemas.User{UserID: u.id, FirstName: u.first, LastName: u.last, Role: roleNames[u.role], Department: depts[u.dept].name,
			Address: u.address, Status: u.status}
		if u.terminatedAt != 0 {
			su.TerminatedAt = utcPtr(u.terminatedAt)
		}
		if u.patient >= 0 {
			su.PatientID = p.patients[u.patient].id
		}
		h.Users[i] = su
	}
	h.Patients = make([]schemas.Patient, len(p.patients))
	for i := range p.patients {
		pt := &p.patients[i]
		sp := schemas.Patient{PatientID: pt.id, FirstName: pt.first, LastName: pt.last, Address: p.households[pt.household].address,
			DateOfBirth: pt.dob, VIP: pt.vip}
		if pt.deceasedAt != 0 {
			sp.DeceasedAt = utcPtr(pt.deceasedAt)
		}
		if pt.employee >= 0 {
			sp.EmployeeUserID = p.users[pt.employee].id
		}
		h.Patients[i] = sp
	}
	h.Encounters = make([]schemas.Encounter, len(p.encs))
	for i := range p.encs {
		e := &p.encs[i]
		se := schemas.Encounter{EncounterID: e.id, PatientID: p.patients[e.patient].id, Department: depts[e.dept].name,
			Start: time.Unix(0, e.start).UTC()}
		if e.end <= p.facs[e.fac].end {
			se.End = utcPtr(e.end)
		}
		if len(e.team) > 0 {
			se.CareTeam = make([]string, len(e.team))
			for k, m := range e.team {
				se.CareTeam[k] = p.users[m].id
			}
		}
		h.Encounters[i] = se
	}
	return h
}

// exportLabel turns a planned label into a public one (without events).
func (p *plan) exportLabel(l labelDef) Label {
	out := Label{Kind: l.detector, Detector: l.detector, Benign: l.benign, Scenario: l.scenario, FacilityID: p.facs[l.fac].id,
		UserID: p.users[l.user].id, Note: l.note, EventIDs: []string{}}
	if l.benign {
		out.Kind = "benign:" + l.detector
	}
	if l.patient >= 0 {
		out.PatientID = p.patients[l.patient].id
	}
	return out
}
