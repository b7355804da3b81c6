package synth

import (
	"hash/fnv"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// Vocabulary is a way of spelling the hospital's roles and departments.
// The generator writes the canonical names (the Role* and Dept*
// constants); ExportVocabulary spells them as EHR and HR exports do, and
// Hospital.WithVocabulary rewrites a hospital into it, so the detectors
// can be shown to give the same results whatever the spelling once the
// hospital's mapping (Entries) is loaded.
type Vocabulary struct {
	// Name identifies the vocabulary ("canonical", "export").
	Name string
	// Roles and Departments map canonical names to the vocabulary's, by
	// facility index (facilities past the end use the last map).
	Roles       []map[string]string
	Departments []map[string]string
	// FloatPool is the home department (users.department) of the float
	// pool: FloatShare of the nurses of FloatFrom units belong to it in
	// the reference data while their events still name the unit they
	// work in, as a float pool's do.
	FloatPool  string
	FloatFrom  []string
	FloatShare float64
	// Entries is the hospital's mapping file for this vocabulary: the
	// names the built-in defaults do not cover, with their categories
	// (detectors.Categories).
	Entries []schemas.VocabularyEntry
}

// ExportVocabulary spells roles and departments the way a real export
// does, differently at each facility: abbreviations ("RN", "ED", "MICU"),
// punctuation ("Med/Surg 4W", "Hem/Onc", "Pharmacy - Inpt"), job titles
// ("HIM Coder", "Patient Access Rep") and a nursing float pool whose
// members' events name the unit they work in. Entries maps the names no
// built-in default covers.
func ExportVocabulary() *Vocabulary {
	return &Vocabulary{
		Name: "export",
		Roles: []map[string]string{{
			RoleNurse: "RN", RolePhysician: "Attending Physician", RoleResident: "Resident", RolePharmacist: "Pharmacist, Clinical",
			RoleRegistrationClerk: "Patient Access Rep", RoleBiller: "PFS Representative", RoleCoder: "HIM Coder",
			RoleTherapist: "PT/OT", RoleLabTech: "Med Tech (MLS)", RoleRadiologyTech: "Rad Tech", RoleRadiologist: "Radiologist",
		}, {
			RoleNurse: "Registered Nurse", RolePhysician: "MD", RoleResident: "Resident Physician", RolePharmacist: "RPh",
			RoleRegistrationClerk: "Registrar", RoleBiller: "Billing Spec.", RoleCoder: "Coding Specialist",
			RoleTherapist: "Therapist - Rehab", RoleLabTech: "MLS", RoleRadiologyTech: "RT(R)", RoleRadiologist: "Radiologist MD",
		}},
		Departments: []map[string]string{{
			DeptEmergency: "Emergency Dept", DeptICU: "MICU", DeptMedSurg: "Med/Surg 4W", DeptCardiology: "Cardiology Svcs",
			DeptOncology: "Hem/Onc", DeptPediatrics: "Peds", DeptRadiology: "Diagnostic Imaging", DeptLaboratory: "Lab Svcs",
			DeptPharmacy: "Pharmacy - Inpt", DeptRehab: "Rehab Svcs", DeptRegistration: "Patient Access",
			DeptBilling: "Patient Financial Svcs", DeptHIM: "Health Information Mgmt",
		}, {
			DeptEmergency: "ED", DeptICU: "ICU - Med/Surg", DeptMedSurg: "5 North", DeptCardiology: "CV Services",
			DeptOncology: "Cancer Center", DeptPediatrics: "Pediatrics", DeptRadiology: "Radiology", DeptLaboratory: "Clinical Lab",
			DeptPharmacy: "RX", DeptRehab: "PT/OT/ST", DeptRegistration: "Admitting", DeptBilling: "CBO",
			DeptHIM: "HIM / Medical Records",
		}},
		FloatPool:  "Nursing Float Pool",
		FloatFrom:  []string{DeptMedSurg, DeptICU, DeptCardiology},
		FloatShare: 0.2,
		Entries: []schemas.VocabularyEntry{
			{Kind: schemas.VocabularyRole, Name: "PFS Representative", Categories: []string{"billing_coding"}, Note: "patient financial services"},
			{Kind: schemas.VocabularyRole, Name: "PT/OT", Categories: []string{"therapy", "clinical"}},
			{Kind: schemas.VocabularyRole, Name: "Med Tech (MLS)", Categories: []string{"laboratory"}},
			{Kind: schemas.VocabularyDepartment, Name: "5 North", Categories: []string{"inpatient_ward"}},
			{Kind: schemas.VocabularyDepartment, Name: "CV Services", Categories: []string{"clinical"}, Note: "cardiovascular"},
			{Kind: schemas.VocabularyDepartment, Name: "Cancer Center", Categories: []string{"clinical"}},
			{Kind: schemas.VocabularyDepartment, Name: "PT/OT/ST", Categories: []string{"therapy"}},
		},
	}
}

func (v *Vocabulary) role(fac int, name string) string { return pick(v.Roles, fac, name) }

func (v *Vocabulary) dept(fac int, name string) string { return pick(v.Departments, fac, name) }

func pick(ms []map[string]string, fac int, name string) string {
	if len(ms) == 0 {
		return name
	}
	if r, ok := ms[min(fac, len(ms)-1)][name]; ok {
		return r
	}
	return name
}

// floats reports whether the user (by id) belongs to the float pool.
func (v *Vocabulary) floats(userID, role, dept string) bool {
	if v.FloatPool == "" || role != RoleNurse {
		return false
	}
	found := false
	for _, d := range v.FloatFrom {
		found = found || d == dept
	}
	if !found {
		return false
	}
	h := fnv.New32a()
	h.Write([]byte(userID))
	return float64(h.Sum32()%1000) < v.FloatShare*1000
}

// WithVocabulary returns a copy of the hospital whose users, encounters
// and events (materialised, or streamed by EachEvent and All) spell roles
// and departments in v, and whose WriteReference writes v.Entries as
// vocabulary.ndjson; ids,
// times and ground truth are unchanged. Float-pool nurses get v.FloatPool
// as their reference department; their events keep naming their unit.
// The receiver is not modified.
func (h *Hospital) WithVocabulary(v *Vocabulary) *Hospital {
	out := *h
	facIdx := make(map[string]int, len(h.Facilities))
	for i, f := range h.Facilities {
		facIdx[f.ID] = i
	}
	out.vocab, out.facIdx = v, facIdx
	out.Users = make([]schemas.User, len(h.Users))
	for i, u := range h.Users {
		fac := 0
		if h.plan != nil && i < len(h.plan.users) {
			fac = int(h.plan.users[i].fac)
		}
		floats := v.floats(u.UserID, u.Role, u.Department)
		u.Role, u.Department = v.role(fac, u.Role), v.dept(fac, u.Department)
		if floats {
			u.Department = v.FloatPool
		}
		out.Users[i] = u
	}
	out.Encounters = make([]schemas.Encounter, len(h.Encounters))
	for i, e := range h.Encounters {
		fac := 0
		if h.plan != nil && i < len(h.plan.encs) {
			fac = int(h.plan.encs[i].fac)
		}
		e.Department = v.dept(fac, e.Department)
		out.Encounters[i] = e
	}
	if h.Events != nil {
		out.Events = make([]schemas.AccessEvent, len(h.Events))
		for i, ev := range h.Events {
			v.RenameEvent(&ev, facIdx[ev.FacilityID])
			out.Events[i] = ev
		}
	}
	return &out
}

// renamed wraps an EachEvent callback so that it sees events in the
// hospital's vocabulary.
func (h *Hospital) renamed(fn func(ev *schemas.AccessEvent) error) func(ev *schemas.AccessEvent) error {
	if h.vocab == nil {
		return fn
	}
	return func(ev *schemas.AccessEvent) error {
		h.vocab.RenameEvent(ev, h.facIdx[ev.FacilityID])
		return fn(ev)
	}
}

// RenameEvent spells an event's user_role and user_department in v, for
// the facility with index fac (streams from EachEvent).
func (v *Vocabulary) RenameEvent(ev *schemas.AccessEvent, fac int) {
	ev.UserRole, ev.UserDepartment = v.role(fac, ev.UserRole), v.dept(fac, ev.UserDepartment)
}
