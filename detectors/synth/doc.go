// Package synth generates a synthetic hospital and its EHR access stream,
// with labelled incidents for every ehrwatch detector and labelled benign
// confounders, for `ehrwatch demo`, `ehrwatch gen`, detector quality tests
// and benchmarks. It depends on the standard library and schemas only.
//
// Everything is deterministic: the same Config gives byte-identical
// reference data, events and ground truth (on one architecture: the
// model uses floating point, which may round differently elsewhere).
// Randomness comes from math/rand/v2 PCG streams derived from Config.Seed,
// one per phase and one per session.
//
// # The hospital
//
// Each facility has users in 13 departments (emergency, icu, med_surg,
// cardiology, oncology, pediatrics, radiology, laboratory, pharmacy, rehab,
// registration, billing, him) with the roles nurse, physician, resident,
// radiologist, pharmacist, registration_clerk, biller, coder, therapist,
// lab_tech and radiology_tech (the Dept* and Role* constants). Users work a
// fixed shift (day 07:00–15:30, evening 15:00–23:30, night 23:00–07:30,
// office 08:00–16:30, physicians' long day 07:00–17:00), five days a week
// (two consecutive days off, staggered so every shift is staffed) or three
// for part-timers; office and clinic roles work weekdays. About 3 % of
// rostered shifts are not worked. A few accounts are inactive or were
// terminated before the window; they have no activity.
//
// Patients live in households: families share a last name and an address,
// and common surnames (Smith, Johnson, …) recur at many unrelated
// addresses. About 15 % of employees are patients too (User.PatientID ↔
// Patient.EmployeeUserID) and about a third have relatives with charts
// (same household). Some patients are VIPs; about 1.5 % died 45 days to
// three years before the window, and a few ICU and oncology inpatients die
// during it.
//
// Encounters follow staffing: each inpatient unit's census is its nurses on
// shift times a patients-per-nurse ratio (ICU 2, med-surg 5, others 4), ED
// arrivals follow a diurnal curve, cardiology, oncology and pediatrics run
// weekday clinics. Work lists come from the census: nurses split their
// unit's patients (keeping the same patients across shifts), physicians and
// residents round on days and cross-cover at night, registration clerks
// check in arrivals, and pharmacy, laboratory, radiology, rehab,
// registration, billing and HIM staff draw their own lists. Everyone who
// works on an encounter is on its care team (Encounter.CareTeam), so the
// care relationship (an encounter in the user's department or with the user
// on its care team, ± 24h) explains nearly all routine access; the rest is
// incidental look-ups (a quarter of shifts open one or two unrelated,
// unremarkable charts).
//
// Typical volumes per shift (medians): nurses about 50 events on 5
// patients (ICU 2, med-surg 6, ED 7), physicians 25–50 on 5–20,
// registration clerks 30–90 brief events on 12–40 patients, billing and
// coding 80–100 on 20–36, pharmacy and laboratory about 60 on 25. The
// default configuration (DefaultConfig: 500 users, 12,000 patients, 14
// days) yields about 250,000 events.
//
// # Time
//
// Shifts and encounters are laid out in each facility's local wall-clock
// time (time.Date in the facility's location) and events are spread over
// the absolute time between, so the night of a fall-back change lasts 9.5
// hours and has events in both the first and the repeated 01:00–02:00 hour.
// Event times are UTC with millisecond precision.
//
// Every event has a LoggedTime: 0.2–3 s after EventTime, or, for
// Config.LateEventRate of the background events, 2 minutes to
// Config.LateMaxDelay after it. The stream is in arrival (LoggedTime)
// order, so late events come after events that happened later, as in a
// real audit feed (Epic's ACCESS_INSTANT vs ACCESS_TIME). Injected incident
// events are never late. Event ids are "evt-<facility>-<n>", numbered in
// event-time order per facility. Kafka producers should key by user_id.
//
// # Ground truth
//
// Truth labels (Label) name a detector, a scenario, the user, the patient
// when there is one, and the exact event ids. Kind is the detector name for
// incidents and "benign:<detector>" for confounders.
//
// Incidents (IncidentRate per kind per 1000 user-days, at least one each):
// volume (a shift with 5–10× the user's usual distinct patients, the extra
// ones unexplained), bulk_export (30–45 prints/exports in 6–9 minutes),
// off_hours (a day-shift user, warm after WarmupDays with 300+ events,
// opens unexplained charts remotely around 02:00 on a weekday), break_glass
// (a non-ED, non-ICU user breaks the glass into an unrelated chart with a
// placeholder reason), self_access, family (a relative with the same last
// name and address), coworker (an employee of the same department),
// vip, deceased (45+ days after death, not a billing or HIM role) and
// terminated (an account used remotely after its termination). volume and
// off_hours are injected only from day WarmupDays; the others from day 0
// or 1. Relationship incidents have no encounter explaining them within 72h.
//
// Confounders scripted at BenignRate: an ED surge day (ED arrivals ×1.8,
// every ED user's volume rises; one label per ED user), nurses printing
// discharge paperwork (below any bulk threshold), night-shift nurses at
// 02:00–04:00, on-call physicians paged at night onto a patient's care team,
// accounts terminated with all activity before termination. Confounders
// labelled wherever they occur: break-glass with a substantive reason on a
// patient in care (ED and ICU), VIP charts opened by the care team,
// employees treated in their own department, billing and HIM work on
// deceased patients' accounts, care documented after a patient's death
// (within the grace period), and namesakes (user and patient share a last
// name but not an address).
//
// Matching findings to labels: per-event detectors' findings carry the
// labelled event ids; windowed ones (volume, bulk_export, off_hours) should
// be matched by detector, user and overlap of the finding window with
// [Start, End]. A finding may legitimately match an incident of another
// kind (a bulk export is also a volume spike for that day). Detectors with
// per-user baselines produce a few findings before they are warm; evaluate
// precision from WarmupDays on. This package holds the one
// implementation: Matches (a finding against one label), MergeVersions (a
// finding id's versions folded into one), Scorer (the per-detector table
// ehrwatch demo prints, and a tag per alert) and EvaluateGate (the
// alert-level quality gate). The detectors' quality tests and the demo
// both use them.
//
// # Use
//
//	h, err := synth.Generate(synth.DefaultConfig()) // h.Events, h.Truth in memory
//
//	h, err := synth.New(cfg)                        // plan only
//	truth, err := h.EachEvent(func(ev *schemas.AccessEvent) error { … })
//
// WriteFiles writes events.ndjson, reference/{users,patients,encounters}.ndjson,
// facilities.ndjson and truth.ndjson; FHIRAuditEventR4 renders one event as
// a FHIR R4 AuditEvent that schemas.DecodeFHIR maps back to an equal event.
package synth
