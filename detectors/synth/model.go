package synth

import "time"

// Roles written into User.Role and AccessEvent.UserRole. "biller" and
// "coder" are spelled so that the deceased detector's default legitimate
// roles recognise them.
const (
	RoleNurse             = "nurse"
	RolePhysician         = "physician"
	RoleResident          = "resident"
	RolePharmacist        = "pharmacist"
	RoleRegistrationClerk = "registration_clerk"
	RoleBiller            = "biller"
	RoleCoder             = "coder"
	RoleTherapist         = "therapist"
	RoleLabTech           = "lab_tech"
	RoleRadiologyTech     = "radiology_tech"
	RoleRadiologist       = "radiologist"
)

// Departments written into User.Department, Encounter.Department and
// AccessEvent.UserDepartment. "emergency" and "icu" are what the
// break_glass detector's default emergency departments expect; "billing"
// and "him" are what the deceased detector's default legitimate
// departments expect.
const (
	DeptEmergency    = "emergency"
	DeptICU          = "icu"
	DeptMedSurg      = "med_surg"
	DeptCardiology   = "cardiology"
	DeptOncology     = "oncology"
	DeptPediatrics   = "pediatrics"
	DeptRadiology    = "radiology"
	DeptLaboratory   = "laboratory"
	DeptPharmacy     = "pharmacy"
	DeptRehab        = "rehab"
	DeptRegistration = "registration"
	DeptBilling      = "billing"
	DeptHIM          = "him"
)

type roleID uint8

const (
	rNurse roleID = iota
	rPhysician
	rResident
	rPharmacist
	rRegClerk
	rBiller
	rCoder
	rTherapist
	rLabTech
	rRadTech
	rRadiologist
	numRoles
)

var roleNames = [numRoles]string{
	RoleNurse, RolePhysician, RoleResident, RolePharmacist, RoleRegistrationClerk,
	RoleBiller, RoleCoder, RoleTherapist, RoleLabTech, RoleRadiologyTech, RoleRadiologist,
}

type deptID uint8

const (
	dED deptID = iota
	dICU
	dMedSurg
	dCardiology
	dOncology
	dPediatrics
	dRadiology
	dLab
	dPharmacy
	dRehab
	dRegistration
	dBilling
	dHIM
	numDepts
)

// deptKind says how a department's work arrives.
type deptKind uint8

const (
	kindED        deptKind = iota // walk-in visits of hours
	kindInpatient                 // admissions of days (cardiology, oncology and pediatrics also run weekday clinics)
	kindAncillary                 // works on other departments' patients
	kindOffice                    // works on discharged accounts
)

// shiftKind is a user's regular shift.
type shiftKind uint8

const (
	shDay     shiftKind = iota // 07:00–15:30
	shEvening                  // 15:00–23:30
	shNight                    // 23:00–07:30 next day
	shOffice                   // 08:00–16:30
	shLongDay                  // 07:00–17:00 (physicians and residents on days)
)

var shiftHours = [...]struct{ sh, sm, eh, em int }{
	shDay:     {7, 0, 15, 30},
	shEvening: {15, 0, 23, 30},
	shNight:   {23, 0, 7, 30},
	shOffice:  {8, 0, 16, 30},
	shLongDay: {7, 0, 17, 0},
}

var shiftNames = [...]string{shDay: "day", shEvening: "evening", shNight: "night", shOffice: "office", shLongDay: "day"}

// isDayShift reports whether users on s normally sleep at 02:00.
func (s shiftKind) isDayShift() bool { return s == shDay || s == shOffice || s == shLongDay }

// workPattern says which days a user can be rostered on.
type workPattern uint8

const (
	pat24x7     workPattern = iota // any day; full-timers get two consecutive days off a week
	patWeekdays                    // Monday to Friday
)

// staffSpec is one role's share of a department and how it is rostered.
type staffSpec struct {
	role  roleID
	share float64
	// mix is the share of the role on day, evening and night shifts.
	mix      [3]float64
	dayShift shiftKind   // the day-ish shift (day, office or long day)
	dayPat   workPattern // pattern of the day-ish shift; evenings and nights are 24×7
}

// deptSpec describes a department.
type deptSpec struct {
	name   string
	code   string  // in workstation names
	share  float64 // of the facility's users
	kind   deptKind
	clinic bool // also runs weekday outpatient clinics
	// ratio is patients per nurse at once (ED and inpatient units).
	ratio float64
	// los is the mean length of stay (ED and inpatient units).
	los   time.Duration
	staff []staffSpec
}

var (
	mixAllShifts = [3]float64{0.40, 0.30, 0.30}
	mixDaysOnly  = [3]float64{1, 0, 0}
)

var depts = [numDepts]deptSpec{
	dED: {name: DeptEmergency, code: "ED", share: 0.14, kind: kindED, ratio: 2.5, los: 4 * time.Hour, staff: []staffSpec{
		// ED staffing follows arrivals (about 48 % by day, 37 % in the
		// evening, 15 % at night), so each clinician's load is even.
		{rNurse, 0.48, [3]float64{0.42, 0.33, 0.25}, shDay, pat24x7},
		{rPhysician, 0.20, [3]float64{0.45, 0.35, 0.20}, shDay, pat24x7},
		{rResident, 0.12, [3]float64{0.5, 0.3, 0.2}, shDay, pat24x7},
		{rRegClerk, 0.20, [3]float64{0.4, 0.35, 0.25}, shDay, pat24x7},
	}},
	dICU: {name: DeptICU, code: "ICU", share: 0.10, kind: kindInpatient, ratio: 2, los: 84 * time.Hour, staff: []staffSpec{
		{rNurse, 0.66, mixAllShifts, shDay, pat24x7},
		{rPhysician, 0.14, [3]float64{0.7, 0, 0.3}, shLongDay, pat24x7},
		{rResident, 0.10, [3]float64{0.7, 0, 0.3}, shLongDay, pat24x7},
		{rTherapist, 0.10, mixAllShifts, shDay, pat24x7},
	}},
	dMedSurg: {name: DeptMedSurg, code: "MSU", share: 0.18, kind: kindInpatient, ratio: 5, los: 96 * time.Hour, staff: []staffSpec{
		{rNurse, 0.72, mixAllShifts, shDay, pat24x7},
		{rPhysician, 0.16, [3]float64{0.8, 0, 0.2}, shLongDay, pat24x7},
		{rResident, 0.12, [3]float64{0.75, 0, 0.25}, shLongDay, pat24x7},
	}},
	dCardiology: {name: DeptCardiology, code: "CARD", share: 0.07, kind: kindInpatient, clinic: true, ratio: 4, los: 72 * time.Hour, staff: []staffSpec{
		{rNurse, 0.50, mixAllShifts, shDay, pat24x7},
		{rPhysician, 0.32, [3]float64{0.9, 0, 0.1}, shLongDay, patWeekdays},
		{rRegClerk, 0.18, mixDaysOnly, shOffice, patWeekdays},
	}},
	dOncology: {name: DeptOncology, code: "ONC", share: 0.06, kind: kindInpatient, clinic: true, ratio: 4, los: 120 * time.Hour, staff: []staffSpec{
		{rNurse, 0.50, mixAllShifts, shDay, pat24x7},
		{rPhysician, 0.32, [3]float64{0.9, 0, 0.1}, shLongDay, patWeekdays},
		{rRegClerk, 0.18, mixDaysOnly, shOffice, patWeekdays},
	}},
	dPediatrics: {name: DeptPediatrics, code: "PEDS", share: 0.06, kind: kindInpatient, clinic: true, ratio: 4, los: 60 * time.Hour, staff: []staffSpec{
		{rNurse, 0.62, mixAllShifts, shDay, pat24x7},
		{rPhysician, 0.25, [3]float64{0.85, 0, 0.15}, shLongDay, patWeekdays},
		{rRegClerk, 0.13, mixDaysOnly, shOffice, patWeekdays},
	}},
	dRadiology: {name: DeptRadiology, code: "RAD", share: 0.06, kind: kindAncillary, staff: []staffSpec{
		{rRadiologist, 0.30, [3]float64{0.7, 0.15, 0.15}, shLongDay, patWeekdays},
		{rRadTech, 0.70, [3]float64{0.5, 0.3, 0.2}, shDay, pat24x7},
	}},
	dLab: {name: DeptLaboratory, code: "LAB", share: 0.06, kind: kindAncillary, staff: []staffSpec{
		{rLabTech, 1, [3]float64{0.45, 0.3, 0.25}, shDay, pat24x7},
	}},
	dPharmacy: {name: DeptPharmacy, code: "RX", share: 0.05, kind: kindAncillary, staff: []staffSpec{
		{rPharmacist, 1, [3]float64{0.5, 0.3, 0.2}, shDay, pat24x7},
	}},
	dRehab: {name: DeptRehab, code: "REHB", share: 0.04, kind: kindAncillary, staff: []staffSpec{
		{rTherapist, 1, mixDaysOnly, shDay, patWeekdays},
	}},
	dRegistration: {name: DeptRegistration, code: "REG", share: 0.05, kind: kindOffice, staff: []staffSpec{
		{rRegClerk, 1, mixDaysOnly, shOffice, patWeekdays},
	}},
	dBilling: {name: DeptBilling, code: "BILL", share: 0.07, kind: kindOffice, staff: []staffSpec{
		{rBiller, 1, mixDaysOnly, shOffice, patWeekdays},
	}},
	dHIM: {name: DeptHIM, code: "HIM", share: 0.06, kind: kindOffice, staff: []staffSpec{
		{rCoder, 1, mixDaysOnly, shOffice, patWeekdays},
	}},
}

// resources are the parts of the chart an access touches.
const (
	resChart uint8 = iota
	resNotes
	resResults
	resOrders
	resMAR
	resFlowsheet
	resImaging
	resDemographics
	resInsurance
	resBillingAccount
	resDischargeSummary
	resMedications
	resPatientList
	numResources
)

var resourceNames = [numResources]string{
	"chart", "notes", "results", "orders", "mar", "flowsheet", "imaging",
	"demographics", "insurance", "billing_account", "discharge_summary", "medications", "patient_list",
}

// actions, indexed like schemas.Actions.
const (
	actView uint8 = iota
	actCreate
	actUpdate
	actDelete
	actPrint
	actExport
	actQuery
)

// roleBehaviour is how a role touches a chart: which resources it opens
// and what it does after opening.
type roleBehaviour struct {
	open      []uint8 // resources opened (uniform)
	pUpdate   float64 // a touch also updates
	pCreate   float64 // a touch also creates (a note, a result, a report)
	pPrint    float64
	pQuery    float64 // the touch starts with a patient search
	writeRes  uint8   // resource written
	printRes  uint8
	minTouch  int // touches per patient per shift, before scaling by overlap
	maxTouch  int
	edTouches [2]int // touches per ED patient, for ED staff
}

var behaviours = [numRoles]roleBehaviour{
	rNurse: {open: []uint8{resChart, resFlowsheet, resMAR, resOrders, resNotes, resResults}, pUpdate: 0.35, pCreate: 0.08, pPrint: 0.006,
		writeRes: resFlowsheet, printRes: resMAR, minTouch: 7, maxTouch: 12, edTouches: [2]int{4, 7}},
	rPhysician: {open: []uint8{resChart, resNotes, resResults, resImaging, resOrders}, pUpdate: 0.15, pCreate: 0.18, pPrint: 0.006, pQuery: 0.03,
		writeRes: resOrders, printRes: resNotes, minTouch: 1, maxTouch: 3, edTouches: [2]int{3, 5}},
	rResident: {open: []uint8{resChart, resNotes, resResults, resOrders, resImaging}, pUpdate: 0.20, pCreate: 0.20, pPrint: 0.004, pQuery: 0.03,
		writeRes: resNotes, printRes: resNotes, minTouch: 2, maxTouch: 4, edTouches: [2]int{3, 5}},
	rPharmacist: {open: []uint8{resMedications, resOrders, resMAR, resResults}, pUpdate: 0.55, pCreate: 0.05, pPrint: 0.002,
		writeRes: resOrders, printRes: resMedications, minTouch: 1, maxTouch: 2},
	rRegClerk: {open: []uint8{resDemographics, resInsurance, resChart}, pUpdate: 0.35, pCreate: 0.03, pPrint: 0.08, pQuery: 0.25,
		writeRes: resDemographics, printRes: resDemographics, minTouch: 1, maxTouch: 2, edTouches: [2]int{1, 2}},
	rBiller: {open: []uint8{resBillingAccount, resInsurance, resChart, resNotes}, pUpdate: 0.25, pPrint: 0.01, pQuery: 0.10,
		writeRes: resBillingAccount, printRes: resBillingAccount, minTouch: 1, maxTouch: 3},
	rCoder: {open: []uint8{resNotes, resDischargeSummary, resResults, resChart}, pUpdate: 0.40, pPrint: 0.003, pQuery: 0.05,
		writeRes: resBillingAccount, printRes: resDischargeSummary, minTouch: 2, maxTouch: 4},
	rTherapist: {open: []uint8{resChart, resNotes, resOrders, resFlowsheet}, pUpdate: 0.25, pCreate: 0.45, pPrint: 0.002,
		writeRes: resNotes, printRes: resNotes, minTouch: 2, maxTouch: 4},
	rLabTech: {open: []uint8{resOrders, resResults}, pUpdate: 0.50, pCreate: 0.05, pPrint: 0.01,
		writeRes: resResults, printRes: resOrders, minTouch: 1, maxTouch: 2},
	rRadTech: {open: []uint8{resOrders, resImaging, resChart}, pUpdate: 0.30, pCreate: 0.05, pPrint: 0.002,
		writeRes: resImaging, printRes: resImaging, minTouch: 1, maxTouch: 3},
	rRadiologist: {open: []uint8{resImaging, resOrders, resChart, resResults}, pUpdate: 0.05, pCreate: 0.75, pPrint: 0.002,
		writeRes: resResults, printRes: resImaging, minTouch: 1, maxTouch: 2},
}

// ancillaryLoad is how many distinct patients an ancillary or office user
// works on per shift (day shift; evenings and nights get 70 % and 55 %).
var ancillaryLoad = [numRoles][2]int{
	rPharmacist:  {25, 45},
	rLabTech:     {25, 45},
	rRadTech:     {12, 22},
	rRadiologist: {28, 45},
	rTherapist:   {7, 11},
	rRegClerk:    {28, 45},
	rBiller:      {25, 45},
	rCoder:       {15, 25},
}

// Break-glass reasons. The placeholders are what users type to get past
// the dialog; the break_glass detector's defaults treat them (and anything
// shorter than 10 characters) as no reason.
var placeholderReasons = []string{"override", "x", "n/a", "asdf", ".", "security override", "test", "btg", "patient care"}

var goodReasons = []string{
	"Patient arrived unresponsive by EMS; reviewing prior records for allergies and anticoagulants",
	"Trauma activation, patient unable to give history; need medication list and code status",
	"Rapid response called on this patient; reviewing recent labs and imaging before intervention",
	"Transfer from outside hospital accepted to ICU; chart restricted, reviewing history before arrival",
	"Patient in cardiac arrest in ED bay 3; need prior ECGs and problem list",
	"Overdose presentation, restricted behavioral health chart; need prior toxicology and psychiatric meds",
	"Stroke alert, last known well unclear; reviewing prior neurology notes and anticoagulation",
}
