package synth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

var (
	defaultOnce sync.Once
	defaultH    *synth.Hospital
	defaultErr  error
)

// defaultHospital generates DefaultConfig once for the whole test binary.
func defaultHospital(t testing.TB) *synth.Hospital {
	t.Helper()
	defaultOnce.Do(func() { defaultH, defaultErr = synth.Generate(synth.DefaultConfig()) })
	if defaultErr != nil {
		t.Fatal(defaultErr)
	}
	return defaultH
}

// smallConfig is a week at one small facility, across the DST change.
func smallConfig() synth.Config {
	cfg := synth.DefaultConfig()
	cfg.Days, cfg.WarmupDays = 7, 3
	cfg.Start = time.Date(2026, 10, 29, 0, 0, 0, 0, time.UTC)
	cfg.Facilities = []synth.FacilityConfig{{ID: "mini", TimeZone: "America/New_York", Users: 120, Patients: 2400}}
	cfg.IncidentRate = 1
	return cfg
}

func TestDeterministicBytes(t *testing.T) {
	cfg := smallConfig()
	var dirs [2]string
	for i := range dirs {
		h, err := synth.Generate(cfg)
		if err != nil {
			t.Fatal(err)
		}
		dirs[i] = t.TempDir()
		if err := h.WriteFiles(dirs[i]); err != nil {
			t.Fatal(err)
		}
	}
	// The streaming path (New, then WriteFiles streams) must write the same bytes.
	h, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	streamed := t.TempDir()
	if err := h.WriteFiles(streamed); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{synth.EventsFile, synth.UsersFile, synth.PatientsFile, synth.EncountersFile, synth.TruthFile, synth.FacilitiesFile} {
		a := readFile(t, filepath.Join(dirs[0], name))
		if len(a) == 0 {
			t.Errorf("%s is empty", name)
		}
		if b := readFile(t, filepath.Join(dirs[1], name)); !bytes.Equal(a, b) {
			t.Errorf("%s differs between two runs with the same seed", name)
		}
		if b := readFile(t, filepath.Join(streamed, name)); !bytes.Equal(a, b) {
			t.Errorf("%s differs between Generate and New+WriteFiles", name)
		}
	}

	// The reference files pass the schemas loader (strict decoding and the
	// record validators).
	set, err := schemas.LoadReferenceDir(filepath.Join(dirs[0], "reference"))
	if err != nil {
		t.Fatalf("schemas.LoadReferenceDir: %v", err)
	}
	if len(set.Users) != len(h.Users) || len(set.Patients) != len(h.Patients) || len(set.Encounters) != len(h.Encounters) {
		t.Errorf("loaded %d users, %d patients, %d encounters; generated %d, %d, %d",
			len(set.Users), len(set.Patients), len(set.Encounters), len(h.Users), len(h.Patients), len(h.Encounters))
	}

	cfg.Seed++
	other, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := other.WriteFiles(dir); err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(readFile(t, filepath.Join(dirs[0], synth.EventsFile)), readFile(t, filepath.Join(dir, synth.EventsFile))) {
		t.Error("a different seed produced the same events")
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDSTFallBackHasBothOneOClocks(t *testing.T) {
	h := defaultHospital(t)
	loc := h.Location("nyc")
	var edt, est int
	for i := range h.Events {
		ev := &h.Events[i]
		if ev.FacilityID != "nyc" {
			continue
		}
		lt := ev.EventTime.In(loc)
		if lt.Year() != 2026 || lt.Month() != time.November || lt.Day() != 1 || lt.Hour() != 1 {
			continue
		}
		switch name, _ := lt.Zone(); name {
		case "EDT":
			edt++
		case "EST":
			est++
		}
	}
	t.Logf("2026-11-01 01:00–01:59 in New York: %d events EDT, %d EST", edt, est)
	if edt < 20 || est < 20 {
		t.Errorf("want events in both the EDT and the EST 01:00 hour of the fall-back night, got %d EDT and %d EST", edt, est)
	}
	// The night shift that spans the change is 9.5 hours long: night nurses
	// who started at 23:00 EDT chart until about 07:30 EST.
	late := 0
	for i := range h.Events {
		ev := &h.Events[i]
		if lt := ev.EventTime.In(loc); ev.FacilityID == "nyc" && lt.Month() == time.November && lt.Day() == 1 && lt.Hour() == 7 && lt.Minute() < 30 {
			late++
		}
	}
	if late == 0 {
		t.Error("no events between 07:00 and 07:30 EST on the fall-back morning")
	}
}

func TestStreamInvariants(t *testing.T) {
	h := defaultHospital(t)
	users := map[string]*schemas.User{}
	for i := range h.Users {
		users[h.Users[i].UserID] = &h.Users[i]
	}
	patients := map[string]*schemas.Patient{}
	for i := range h.Patients {
		patients[h.Patients[i].PatientID] = &h.Patients[i]
	}
	encs := map[string]*schemas.Encounter{}
	for i := range h.Encounters {
		encs[h.Encounters[i].EncounterID] = &h.Encounters[i]
	}
	facs := map[string]synth.Facility{}
	for _, f := range h.Facilities {
		facs[f.ID] = f
	}
	terminatedIncident := map[string]bool{}
	for _, l := range h.Truth {
		if l.Detector == synth.KindTerminated && !l.Benign {
			terminatedIncident[l.UserID] = true
		}
	}
	seen := make(map[string]bool, len(h.Events))
	var prevArrival time.Time
	late, outOfOrder := 0, 0
	var maxEventTime time.Time
	for i := range h.Events {
		ev := &h.Events[i]
		if err := ev.Validate(); err != nil {
			t.Fatalf("event %d (%s) is invalid: %v", i, ev.EventID, err)
		}
		if seen[ev.EventID] {
			t.Fatalf("duplicate event id %s", ev.EventID)
		}
		seen[ev.EventID] = true
		if !strings.HasPrefix(ev.EventID, "evt-"+ev.FacilityID+"-") {
			t.Fatalf("event id %s does not name facility %s", ev.EventID, ev.FacilityID)
		}
		if ev.LoggedTime == nil {
			t.Fatalf("event %s has no logged_time", ev.EventID)
		}
		if ev.LoggedTime.Before(prevArrival) {
			t.Fatalf("event %s: stream is not in arrival (logged_time) order", ev.EventID)
		}
		prevArrival = *ev.LoggedTime
		lag := ev.LoggedTime.Sub(ev.EventTime)
		if lag < 200*time.Millisecond || lag > h.Config.LateMaxDelay {
			t.Fatalf("event %s: logged %s after it happened", ev.EventID, lag)
		}
		if lag > time.Minute {
			late++
		}
		if ev.EventTime.Before(maxEventTime) {
			outOfOrder++
		} else {
			maxEventTime = ev.EventTime
		}
		if ev.EventTime.Location() != time.UTC || ev.EventTime.Nanosecond()%int(time.Millisecond) != 0 {
			t.Fatalf("event %s: event_time %v is not UTC milliseconds", ev.EventID, ev.EventTime)
		}
		f := facs[ev.FacilityID]
		if ev.EventTime.Before(f.Start) || !ev.EventTime.Before(f.End) {
			t.Fatalf("event %s at %v is outside the simulated days [%v, %v)", ev.EventID, ev.EventTime, f.Start, f.End)
		}
		u := users[ev.UserID]
		if u == nil || patients[ev.PatientID] == nil {
			t.Fatalf("event %s: unknown user %q or patient", ev.EventID, ev.UserID)
		}
		if u.Role != ev.UserRole || u.Department != ev.UserDepartment {
			t.Fatalf("event %s: role/department %s/%s differ from the user's %s/%s", ev.EventID, ev.UserRole, ev.UserDepartment, u.Role, u.Department)
		}
		if ev.EncounterID != "" && (encs[ev.EncounterID] == nil || encs[ev.EncounterID].PatientID != ev.PatientID) {
			t.Fatalf("event %s: encounter %s is not the patient's", ev.EventID, ev.EncounterID)
		}
		switch u.Status {
		case schemas.UserInactive:
			t.Fatalf("event %s by inactive user %s", ev.EventID, u.UserID)
		case schemas.UserTerminated:
			if !ev.EventTime.Before(*u.TerminatedAt) && !terminatedIncident[u.UserID] {
				t.Fatalf("event %s by %s after termination, unlabelled", ev.EventID, u.UserID)
			}
		}
	}
	share := float64(late) / float64(len(h.Events))
	t.Logf("%d events, %.2f%% late, %d arrive after a later event", len(h.Events), 100*share, outOfOrder)
	if math.Abs(share-h.Config.LateEventRate) > h.Config.LateEventRate/2 {
		t.Errorf("late share %.4f, want about %.4f", share, h.Config.LateEventRate)
	}
	if outOfOrder < late {
		t.Errorf("only %d events arrive after later ones, want at least the %d late ones", outOfOrder, late)
	}
}

func TestReferenceIntegrity(t *testing.T) {
	h := defaultHospital(t)
	users := map[string]*schemas.User{}
	for i := range h.Users {
		u := &h.Users[i]
		if err := u.Validate(); err != nil {
			t.Fatalf("user %s: %v", u.UserID, err)
		}
		if users[u.UserID] != nil {
			t.Fatalf("duplicate user %s", u.UserID)
		}
		users[u.UserID] = u
		if !u.Status.Valid() || u.Role == "" || u.Department == "" || u.LastName == "" || u.Address.Line == "" {
			t.Fatalf("incomplete user %+v", u)
		}
		if (u.Status == schemas.UserTerminated) != (u.TerminatedAt != nil) {
			t.Fatalf("user %s: status %s with terminated_at %v", u.UserID, u.Status, u.TerminatedAt)
		}
	}
	patients := map[string]*schemas.Patient{}
	vip, dead, employees := 0, 0, 0
	for i := range h.Patients {
		p := &h.Patients[i]
		if err := p.Validate(); err != nil {
			t.Fatalf("patient %s: %v", p.PatientID, err)
		}
		if patients[p.PatientID] != nil {
			t.Fatalf("duplicate patient %s", p.PatientID)
		}
		patients[p.PatientID] = p
		if _, err := time.Parse(time.DateOnly, p.DateOfBirth); err != nil {
			t.Fatalf("patient %s: date of birth %q", p.PatientID, p.DateOfBirth)
		}
		if p.VIP {
			vip++
		}
		if p.DeceasedAt != nil {
			dead++
		}
		if p.EmployeeUserID != "" {
			employees++
			u := users[p.EmployeeUserID]
			if u == nil || u.PatientID != p.PatientID {
				t.Fatalf("patient %s: employee link to %s is not mirrored", p.PatientID, p.EmployeeUserID)
			}
		}
	}
	for _, u := range h.Users {
		if u.PatientID != "" && (patients[u.PatientID] == nil || patients[u.PatientID].EmployeeUserID != u.UserID) {
			t.Fatalf("user %s: patient link to %s is not mirrored", u.UserID, u.PatientID)
		}
	}
	encIDs := map[string]bool{}
	for _, e := range h.Encounters {
		if err := e.Validate(); err != nil {
			t.Fatalf("encounter %s: %v", e.EncounterID, err)
		}
		if encIDs[e.EncounterID] {
			t.Fatalf("duplicate encounter %s", e.EncounterID)
		}
		encIDs[e.EncounterID] = true
		if patients[e.PatientID] == nil {
			t.Fatalf("encounter %s: unknown patient %s", e.EncounterID, e.PatientID)
		}
		if e.End != nil && e.End.Before(e.Start) {
			t.Fatalf("encounter %s ends before it starts", e.EncounterID)
		}
		if len(e.CareTeam) > schemas.MaxCareTeam {
			t.Fatalf("encounter %s: care team of %d", e.EncounterID, len(e.CareTeam))
		}
		for _, m := range e.CareTeam {
			if users[m] == nil {
				t.Fatalf("encounter %s: unknown care-team member %s", e.EncounterID, m)
			}
		}
	}
	t.Logf("%d users (%d employee-patients), %d patients (%d VIP, %d deceased), %d encounters", len(h.Users), employees, len(h.Patients), vip, dead, len(h.Encounters))
	if vip == 0 || dead == 0 || employees == 0 {
		t.Error("want VIPs, deceased patients and employee-patients")
	}

	// Families share a last name and an address; namesakes share only the name.
	type key struct{ last, line, city string }
	households := map[key]int{}
	byName := map[string]map[string]bool{}
	for _, p := range h.Patients {
		households[key{p.LastName, p.Address.Line, p.Address.City}]++
		if byName[p.LastName] == nil {
			byName[p.LastName] = map[string]bool{}
		}
		byName[p.LastName][p.Address.Line+"|"+p.Address.City] = true
	}
	families := 0
	for _, n := range households {
		if n >= 2 {
			families++
		}
	}
	if families < 100 {
		t.Errorf("only %d families sharing last name and address", families)
	}
	if n := len(byName["Smith"]); n < 30 {
		t.Errorf("only %d addresses for patients named Smith; want many unrelated Smiths", n)
	}
}

func TestTruthLabels(t *testing.T) {
	h := defaultHospital(t)
	byID := make(map[string]*schemas.AccessEvent, len(h.Events))
	for i := range h.Events {
		byID[h.Events[i].EventID] = &h.Events[i]
	}
	facStart := map[string]time.Time{}
	for _, f := range h.Facilities {
		facStart[f.ID] = f.Start
	}
	ids := map[string]bool{}
	incidents := map[string]int{}
	scenarios := map[string]int{}
	for _, l := range h.Truth {
		if ids[l.ID] {
			t.Fatalf("duplicate label id %s", l.ID)
		}
		ids[l.ID] = true
		if len(l.EventIDs) == 0 || l.End.Before(l.Start) || !slices.Contains(synth.Kinds, l.Detector) {
			t.Fatalf("malformed label %+v", l)
		}
		wantKind := l.Detector
		if l.Benign {
			wantKind = "benign:" + l.Detector
		}
		if l.Kind != wantKind {
			t.Fatalf("label %s: kind %q, want %q", l.ID, l.Kind, wantKind)
		}
		for _, id := range l.EventIDs {
			ev := byID[id]
			if ev == nil {
				t.Fatalf("label %s: event %s does not exist", l.ID, id)
			}
			if ev.UserID != l.UserID || ev.FacilityID != l.FacilityID {
				t.Fatalf("label %s (user %s): event %s is by %s", l.ID, l.UserID, id, ev.UserID)
			}
			if l.PatientID != "" && ev.PatientID != l.PatientID {
				t.Fatalf("label %s (patient %s): event %s is on another patient", l.ID, l.PatientID, id)
			}
			if ev.EventTime.Before(l.Start) || ev.EventTime.After(l.End) {
				t.Fatalf("label %s: event %s outside [start, end]", l.ID, id)
			}
		}
		scenarios[l.Kind+"/"+l.Scenario]++
		if !l.Benign {
			incidents[l.Detector]++
			// Baseline-dependent incidents wait for the warm-up.
			if l.Detector == synth.KindVolume || l.Detector == synth.KindOffHours {
				if warm := facStart[l.FacilityID].AddDate(0, 0, h.Config.WarmupDays); l.Start.Before(warm.Add(-2 * time.Hour)) {
					t.Errorf("label %s (%s) starts %v, before the warm-up ends %v", l.ID, l.Detector, l.Start, warm)
				}
			}
		}
	}
	for _, k := range synth.Kinds {
		if incidents[k] == 0 {
			t.Errorf("no %s incident with the default config", k)
		}
	}
	for _, sc := range []string{
		"benign:volume/" + synth.ScenarioEDSurge,
		"benign:bulk_export/" + synth.ScenarioDischargePrinting,
		"benign:off_hours/" + synth.ScenarioNightShift,
		"benign:off_hours/" + synth.ScenarioOnCall,
		"benign:terminated/" + synth.ScenarioPreTermination,
		"benign:break_glass/" + synth.ScenarioEmergencyAccess,
		"benign:vip/" + synth.ScenarioVIPCareTeam,
		"benign:coworker/" + synth.ScenarioEmployeePatient,
		"benign:deceased/" + synth.ScenarioRecordsAfterDeath,
		"benign:deceased/" + synth.ScenarioCareAfterDeath,
		"benign:family/" + synth.ScenarioNamesake,
	} {
		if scenarios[sc] == 0 {
			t.Errorf("no %s confounder with the default config", sc)
		}
	}
	t.Logf("labels: %v", scenarios)
}

// careIndex answers the detectors' care question on the exported reference
// data: an encounter of the patient in the user's department or with the
// user on its care team, widened by slack.
type careIndex map[string][]*schemas.Encounter

func newCareIndex(h *synth.Hospital) careIndex {
	ci := careIndex{}
	for i := range h.Encounters {
		e := &h.Encounters[i]
		ci[e.PatientID] = append(ci[e.PatientID], e)
	}
	return ci
}

func (ci careIndex) explained(ev *schemas.AccessEvent, slack time.Duration) bool {
	for _, e := range ci[ev.PatientID] {
		if ev.EventTime.Before(e.Start.Add(-slack)) || (e.End != nil && ev.EventTime.After(e.End.Add(slack))) {
			continue
		}
		if e.Department == ev.UserDepartment || slices.Contains(e.CareTeam, ev.UserID) {
			return true
		}
	}
	return false
}

func TestIncidentsUnexplainedConfoundersExplained(t *testing.T) {
	h := defaultHospital(t)
	ci := newCareIndex(h)
	byID := map[string]*schemas.AccessEvent{}
	for i := range h.Events {
		byID[h.Events[i].EventID] = &h.Events[i]
	}
	// Central registration clerks and HIM coders are broad-access roles
	// (ScenarioBroadAccess): much of their work is explained by no
	// encounter, by design. Everyone else's must be, as in real hospitals.
	broad := func(ev *schemas.AccessEvent) bool {
		return (ev.UserRole == synth.RoleRegistrationClerk && ev.UserDepartment == synth.DeptRegistration) ||
			(ev.UserRole == synth.RoleCoder && ev.UserDepartment == synth.DeptHIM)
	}
	var explained, n, bExplained, bN int
	for i := range h.Events {
		ev := &h.Events[i]
		ok := ci.explained(ev, 24*time.Hour)
		if broad(ev) {
			bN++
			if ok {
				bExplained++
			}
			continue
		}
		n++
		if ok {
			explained++
		}
	}
	share := float64(explained) / float64(n)
	bShare := float64(bExplained) / float64(max(bN, 1))
	t.Logf("%.1f%% of events explained by a care relationship (±24h); broad-access roles %.1f%% of %d events", 100*share, 100*bShare, bN)
	if share < 0.94 {
		t.Errorf("only %.1f%% of events are explained; real hospitals explain > 94%%", 100*share)
	}
	if bN == 0 || bShare > 0.7 {
		t.Errorf("broad-access roles: %.1f%% of %d events explained, want a broad share unexplained", 100*bShare, bN)
	}
	for _, l := range h.Truth {
		for _, id := range l.EventIDs {
			ev := byID[id]
			switch {
			case !l.Benign && l.Detector != synth.KindBulkExport && l.Detector != synth.KindTerminated:
				if ci.explained(ev, 72*time.Hour) {
					t.Errorf("incident %s (%s): event %s is explained by a care relationship", l.ID, l.Detector, id)
				}
			case l.Scenario == synth.ScenarioOnCall || l.Scenario == synth.ScenarioEmergencyAccess:
				if !ci.explained(ev, 0) {
					t.Errorf("confounder %s (%s): event %s is not explained", l.ID, l.Scenario, id)
				}
			case l.Scenario == synth.ScenarioVIPCareTeam || l.Scenario == synth.ScenarioEmployeePatient:
				// billing and coding work follows discharge: explained with
				// the detectors' default 24h of slack
				if !ci.explained(ev, 24*time.Hour) {
					t.Errorf("confounder %s (%s): event %s is not explained", l.ID, l.Scenario, id)
				}
			}
		}
	}
}

func TestRelationshipIncidentsMatchReference(t *testing.T) {
	h := defaultHospital(t)
	users := map[string]*schemas.User{}
	for i := range h.Users {
		users[h.Users[i].UserID] = &h.Users[i]
	}
	patients := map[string]*schemas.Patient{}
	for i := range h.Patients {
		patients[h.Patients[i].PatientID] = &h.Patients[i]
	}
	for _, l := range h.Truth {
		if l.Benign {
			continue
		}
		u, p := users[l.UserID], patients[l.PatientID]
		switch l.Detector {
		case synth.KindSelfAccess:
			if u.PatientID != l.PatientID {
				t.Errorf("self_access %s: %s is not the user's own chart", l.ID, l.PatientID)
			}
		case synth.KindFamily:
			if p.LastName != u.LastName || p.Address != u.Address {
				t.Errorf("family %s: patient does not share last name and address with the user", l.ID)
			}
		case synth.KindCoworker:
			if v := users[p.EmployeeUserID]; v == nil || v.Department != u.Department || v.UserID == u.UserID {
				t.Errorf("coworker %s: patient is not a co-worker in the same department", l.ID)
			}
		case synth.KindVIP:
			if !p.VIP {
				t.Errorf("vip %s: patient is not a VIP", l.ID)
			}
		case synth.KindDeceased:
			minDays := 31
			if l.Scenario == synth.ScenarioDeceasedNoRelationship {
				minDays = 3 // within the grace period: only those with no relationship
				for _, e := range h.Encounters {
					if e.PatientID == l.PatientID && (e.Department == u.Department || slices.Contains(e.CareTeam, u.UserID)) {
						t.Errorf("deceased %s: encounter %s relates the user to the patient", l.ID, e.EncounterID)
					}
				}
			}
			if p.DeceasedAt == nil || l.Start.Sub(*p.DeceasedAt) < time.Duration(minDays)*24*time.Hour || u.Role == synth.RoleBiller || u.Role == synth.RoleCoder {
				t.Errorf("deceased %s: not a late access by a clinical role", l.ID)
			}
		case synth.KindTerminated:
			if u.Status != schemas.UserTerminated || !l.Start.After(*u.TerminatedAt) {
				t.Errorf("terminated %s: access does not follow the termination", l.ID)
			}
		case synth.KindBreakGlass:
			ev := firstEvent(h, l, func(ev *schemas.AccessEvent) bool { return ev.BreakGlass })
			if ev == nil || len(ev.BreakGlassReason) >= 20 || u.Department == synth.DeptEmergency || u.Department == synth.DeptICU {
				t.Errorf("break_glass %s: want a placeholder reason from outside the ED and ICU", l.ID)
			}
		case synth.KindBulkExport:
			n := 0
			for _, id := range l.EventIDs {
				if ev := eventByID(h, id); ev.Action == schemas.ActionPrint || ev.Action == schemas.ActionExport {
					n++
				}
			}
			if n < 25 || l.End.Sub(l.Start) > 10*time.Minute {
				t.Errorf("bulk_export %s: %d prints/exports over %s", l.ID, n, l.End.Sub(l.Start))
			}
		case synth.KindOffHours:
			loc := h.Location(l.FacilityID)
			if st := l.Start.In(loc); st.Hour() < 1 || st.Hour() > 3 || st.Weekday() == time.Saturday || st.Weekday() == time.Sunday {
				t.Errorf("off_hours %s starts %v, want about 02:00 on a weekday", l.ID, st)
			}
		}
	}
}

var eventIndex struct {
	once sync.Once
	m    map[string]*schemas.AccessEvent
}

func eventByID(h *synth.Hospital, id string) *schemas.AccessEvent {
	eventIndex.once.Do(func() {
		eventIndex.m = map[string]*schemas.AccessEvent{}
		for i := range h.Events {
			eventIndex.m[h.Events[i].EventID] = &h.Events[i]
		}
	})
	return eventIndex.m[id]
}

func firstEvent(h *synth.Hospital, l synth.Label, ok func(*schemas.AccessEvent) bool) *schemas.AccessEvent {
	for _, id := range l.EventIDs {
		if ev := eventByID(h, id); ok(ev) {
			return ev
		}
	}
	return nil
}

// TestShiftVolumes checks per-user, per-shift volumes against what EHR
// audit logs show: tens of accesses per shift, nurses on a handful of
// patients, clerks and billing on many.
func TestShiftVolumes(t *testing.T) {
	h := defaultHospital(t)
	incident := map[string]bool{}
	for _, l := range h.Truth {
		if !l.Benign {
			incident[l.UserID] = true
		}
	}
	byTime := slices.Clone(h.Events)
	sort.SliceStable(byTime, func(i, j int) bool { return byTime[i].EventTime.Before(byTime[j].EventTime) })
	type shift struct {
		events   int
		patients map[string]bool
	}
	last := map[string]time.Time{}
	cur := map[string]*shift{}
	perRole := map[string][]*shift{}
	for i := range byTime {
		ev := &byTime[i]
		if incident[ev.UserID] {
			continue
		}
		s := cur[ev.UserID]
		if s == nil || ev.EventTime.Sub(last[ev.UserID]) > 4*time.Hour {
			s = &shift{patients: map[string]bool{}}
			cur[ev.UserID] = s
			perRole[ev.UserRole] = append(perRole[ev.UserRole], s)
		}
		last[ev.UserID] = ev.EventTime
		s.events++
		s.patients[ev.PatientID] = true
	}
	median := func(xs []int) int { slices.Sort(xs); return xs[len(xs)/2] }
	bounds := map[string][4]int{ // median events lo–hi, median distinct patients lo–hi
		synth.RoleNurse:             {30, 80, 2, 10},
		synth.RolePhysician:         {15, 80, 4, 30},
		synth.RoleResident:          {15, 80, 4, 30},
		synth.RoleRegistrationClerk: {20, 120, 10, 45},
		synth.RoleBiller:            {40, 140, 20, 50},
		synth.RoleCoder:             {40, 200, 12, 100}, // HIM coders do chart review (ScenarioBroadAccess)
		synth.RolePharmacist:        {30, 120, 15, 45},
		synth.RoleLabTech:           {25, 110, 15, 45},
		synth.RoleRadiologyTech:     {15, 80, 8, 25},
		synth.RoleRadiologist:       {40, 140, 20, 50},
		synth.RoleTherapist:         {25, 80, 5, 15},
	}
	for role, shifts := range perRole {
		var evs, pts []int
		for _, s := range shifts {
			evs = append(evs, s.events)
			pts = append(pts, len(s.patients))
			if s.events > 400 {
				t.Errorf("a %s shift with %d events", role, s.events)
			}
		}
		me, mp := median(evs), median(pts)
		t.Logf("%-18s %5d shifts: median %3d events on %2d patients", role, len(shifts), me, mp)
		b, ok := bounds[role]
		if !ok {
			t.Errorf("no bounds for role %s", role)
			continue
		}
		if me < b[0] || me > b[1] || mp < b[2] || mp > b[3] {
			t.Errorf("%s: median %d events on %d patients per shift, want %d–%d events on %d–%d patients", role, me, mp, b[0], b[1], b[2], b[3])
		}
	}
}

func TestEachEventMatchesGenerate(t *testing.T) {
	cfg := smallConfig()
	g, err := synth.Generate(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if h.Events != nil || h.Truth != nil {
		t.Fatal("New materialised the stream")
	}
	i := 0
	truth, err := h.EachEvent(func(ev *schemas.AccessEvent) error {
		if i >= len(g.Events) || !ev.Equal(&g.Events[i]) {
			t.Fatalf("event %d differs", i)
		}
		i++
		return nil
	})
	if err != nil || i != len(g.Events) {
		t.Fatalf("EachEvent: %d events, err %v; want %d", i, err, len(g.Events))
	}
	a, _ := json.Marshal(truth)
	b, _ := json.Marshal(g.Truth)
	if !bytes.Equal(a, b) {
		t.Error("EachEvent's truth differs from Generate's")
	}

	// fn's error stops the stream and comes back.
	stop := errors.New("stop")
	n := 0
	if _, err := h.EachEvent(func(*schemas.AccessEvent) error {
		if n++; n == 10 {
			return stop
		}
		return nil
	}); !errors.Is(err, stop) || n != 10 {
		t.Errorf("EachEvent after an error: n=%d err=%v", n, err)
	}
	// All stops when the loop breaks.
	n = 0
	for range h.All() {
		if n++; n == 5 {
			break
		}
	}
	if n != 5 {
		t.Errorf("All yielded %d before break", n)
	}
}

// TestFHIRRoundTrip renders every event as a FHIR R4 AuditEvent and
// decodes it back with schemas.DecodeFHIR (every 10th under -race or
// -short, where the full pass takes minutes).
func TestFHIRRoundTrip(t *testing.T) {
	h := defaultHospital(t)
	step := 1
	if testing.Short() || raceEnabled {
		step = 10
	}
	var ev schemas.AccessEvent
	for i := 0; i < len(h.Events); i += step {
		want := &h.Events[i]
		raw, err := synth.FHIRAuditEventR4(want)
		if err != nil {
			t.Fatalf("render %s: %v", want.EventID, err)
		}
		if err := schemas.DecodeFHIR(raw, &ev); err != nil {
			t.Fatalf("decode FHIR of %s: %v\n%s", want.EventID, err, raw)
		}
		if !ev.Equal(want) {
			t.Fatalf("FHIR round trip of %s differs:\n got %+v\nwant %+v\n%s", want.EventID, ev, *want, raw)
		}
		canon, err := json.Marshal(want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := schemas.DecodeEvent(canon)
		if err != nil || !got.Equal(want) {
			t.Fatalf("canonical round trip of %s: %v", want.EventID, err)
		}
	}
}

func TestFHIRShape(t *testing.T) {
	lt := time.Date(2026, 11, 1, 6, 30, 0, 0, time.UTC)
	ev := &schemas.AccessEvent{
		EventID: "evt-nyc-0000042", EventTime: time.Date(2026, 11, 1, 6, 29, 58, 125e6, time.UTC), LoggedTime: &lt,
		Source: "epic", FacilityID: "nyc", UserID: "usr-nyc-0001", UserRole: "physician", UserDepartment: "emergency",
		WorkstationID: "WS-NYC-ED-001", ClientIP: "10.16.0.10", PatientID: "MRN10000001", EncounterID: "enc-nyc-000001",
		Action: schemas.ActionExport, Resource: "chart", BreakGlass: true, BreakGlassReason: "Trauma activation, patient unable to give history",
		Outcome: schemas.OutcomeFailure,
	}
	raw, err := synth.FHIRAuditEventR4(ev)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	if m["resourceType"] != "AuditEvent" || m["id"] != ev.EventID || m["action"] != "R" || m["outcome"] != "4" {
		t.Errorf("unexpected AuditEvent header: %s", raw)
	}
	for _, want := range []string{`"code":"BTG"`, `"code":"110106"`, `"site":"nyc"`, `"reference":"Patient/MRN10000001"`, `"reference":"Encounter/enc-nyc-000001"`, `"value":"usr-nyc-0001"`, `"start":"2026-11-01T06:29:58.125Z"`, `"recorded":"2026-11-01T06:30:00Z"`} {
		if !bytes.Contains(raw, []byte(want)) {
			t.Errorf("AuditEvent lacks %s:\n%s", want, raw)
		}
	}
	if _, err := synth.FHIRAuditEventR4(&schemas.AccessEvent{Action: "peek"}); err == nil {
		t.Error("an unknown action rendered")
	}
}

func TestConfigValidate(t *testing.T) {
	if def := synth.DefaultConfig(); def.Validate() != nil {
		t.Fatalf("default config: %v", def.Validate())
	}
	if err := error(nil); err != nil {
		t.Fatalf("default config: %v", err)
	}
	cases := []struct {
		name string
		edit func(*synth.Config)
		key  string
	}{
		{"days", func(c *synth.Config) { c.Days = 0 }, "synth.days: must be ≥ 1"},
		{"warmup", func(c *synth.Config) { c.WarmupDays = c.Days }, "synth.warmup_days"},
		{"start", func(c *synth.Config) { c.Start = time.Time{} }, "synth.start"},
		{"no facilities", func(c *synth.Config) { c.Facilities = nil }, "synth.facilities:"},
		{"facility id", func(c *synth.Config) { c.Facilities[1].ID = "Bad ID" }, "synth.facilities[1].id"},
		{"duplicate id", func(c *synth.Config) { c.Facilities[1].ID = c.Facilities[0].ID }, "synth.facilities[1].id: duplicate"},
		{"time zone", func(c *synth.Config) { c.Facilities[0].TimeZone = "Mars/Olympus_Mons" }, "synth.facilities[0].time_zone"},
		{"users", func(c *synth.Config) { c.Facilities[0].Users = 10 }, "synth.facilities[0].users"},
		{"patients", func(c *synth.Config) { c.Facilities[0].Patients = 100 }, "synth.facilities[0].patients"},
		{"incident rate", func(c *synth.Config) { c.IncidentRate = -1 }, "synth.incident_rate"},
		{"late rate", func(c *synth.Config) { c.LateEventRate = 0.9 }, "synth.late_event_rate"},
		{"late delay", func(c *synth.Config) { c.LateMaxDelay = time.Second }, "synth.late_max_delay"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cfg := synth.DefaultConfig()
			tc.edit(&cfg)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.key) {
				t.Fatalf("Validate() = %v, want an error naming %q", err, tc.key)
			}
			var fe *synth.FieldError
			if !errors.As(err, &fe) || !strings.HasPrefix(fe.Key, "synth.") {
				t.Errorf("error %v is not a *FieldError keyed under synth.", err)
			}
			if _, gerr := synth.Generate(cfg); gerr == nil {
				t.Error("Generate accepted an invalid config")
			}
		})
	}
	// Several bad keys are all reported.
	cfg := synth.DefaultConfig()
	cfg.Days, cfg.LateEventRate = 0, 2
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "synth.days") || !strings.Contains(err.Error(), "synth.late_event_rate") {
		t.Errorf("want both keys reported, got %v", err)
	}
}

func TestSmallAndEdgeConfigs(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*synth.Config)
	}{
		{"one day", func(c *synth.Config) { c.Days, c.WarmupDays = 1, 0 }},
		{"two days", func(c *synth.Config) { c.Days, c.WarmupDays = 2, 1 }},
		{"smallest facility", func(c *synth.Config) {
			c.Facilities = []synth.FacilityConfig{{ID: "tiny", TimeZone: "Europe/London", Users: synth.MinUsers, Patients: 5 * synth.MinUsers}}
		}},
		{"spring forward", func(c *synth.Config) {
			c.Start, c.Days, c.WarmupDays = time.Date(2026, 3, 6, 0, 0, 0, 0, time.UTC), 4, 1
		}},
		{"no incidents, no lateness", func(c *synth.Config) { c.IncidentRate, c.BenignRate, c.LateEventRate = 0, 0, 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := smallConfig()
			tc.edit(&cfg)
			h, err := synth.Generate(cfg)
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Events) == 0 {
				t.Fatal("no events")
			}
			var prev time.Time
			for i := range h.Events {
				ev := &h.Events[i]
				if err := ev.Validate(); err != nil {
					t.Fatalf("%s: %v", ev.EventID, err)
				}
				if ev.LoggedTime.Before(prev) {
					t.Fatal("not in arrival order")
				}
				prev = *ev.LoggedTime
			}
			if cfg.IncidentRate == 0 {
				for _, l := range h.Truth {
					if !l.Benign {
						t.Fatalf("incident %s with incident_rate 0", l.ID)
					}
				}
			}
			t.Logf("%d events, %d labels", len(h.Events), len(h.Truth))
		})
	}
}

func TestWithUsers(t *testing.T) {
	cfg := synth.DefaultConfig().WithUsers(5000)
	total := 0
	for _, f := range cfg.Facilities {
		total += f.Users
		if f.Patients < 5*f.Users {
			t.Errorf("facility %s: %d patients for %d users", f.ID, f.Patients, f.Users)
		}
	}
	if total < 4990 || total > 5010 {
		t.Errorf("WithUsers(5000) gave %d users", total)
	}
	if err := cfg.Validate(); err != nil {
		t.Error(err)
	}
}

// BenchmarkEachEvent measures streaming generation (no output) of one day
// at a 5,000-user facility.
func BenchmarkEachEvent(b *testing.B) {
	cfg := synth.DefaultConfig().WithUsers(5000)
	cfg.Days, cfg.WarmupDays = 2, 1
	h, err := synth.New(cfg)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for b.Loop() {
		if _, err := h.EachEvent(func(*schemas.AccessEvent) error { events++; return nil }); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkNew measures planning (reference data, rosters, encounters,
// work lists and scenarios) for a 5,000-user, two-day hospital.
func BenchmarkNew(b *testing.B) {
	cfg := synth.DefaultConfig().WithUsers(5000)
	cfg.Days, cfg.WarmupDays = 2, 1
	for b.Loop() {
		if _, err := synth.New(cfg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestConcurrentStreams runs two streams of one Hospital at once (the plan
// is read-only while streaming; -race checks it).
func TestConcurrentStreams(t *testing.T) {
	cfg := smallConfig()
	cfg.Days, cfg.WarmupDays = 3, 1
	h, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	counts := make([]int, 2)
	for i := range counts {
		wg.Go(func() {
			if _, err := h.EachEvent(func(*schemas.AccessEvent) error { counts[i]++; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if counts[0] == 0 || counts[0] != counts[1] {
		t.Errorf("concurrent streams produced %v events", counts)
	}
}
