package schemas

import (
	"bytes"
	"strings"
	"time"
)

// Extension URLs the FHIR decoder reads. They belong to ehrwatch; an EHR
// integration that has the information puts it there.
const (
	// FHIRExtUserDepartment, on the requesting agent, carries the user's
	// department as valueString or valueCode.
	FHIRExtUserDepartment = "https://github.com/ehrwatch/ehrwatch/fhir/StructureDefinition/user-department"
	// FHIRExtBreakGlassReason, on the AuditEvent, carries the free-text
	// reason the user typed when breaking the glass, as valueString. Its
	// presence marks the access as break-glass.
	FHIRExtBreakGlassReason = "https://github.com/ehrwatch/ehrwatch/fhir/StructureDefinition/break-glass-reason"
)

// Code systems the FHIR decoder recognises.
const (
	sysDICOM        = "http://dicom.nema.org/resources/ontology/DCM"
	sysRestful      = "http://hl7.org/fhir/restful-interaction"
	sysActReason    = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
	sysActReasonOld = "http://hl7.org/fhir/v3/ActReason"
	sysActReasonOID = "urn:oid:2.16.840.1.113883.5.8"
	sysEntityType   = "http://terminology.hl7.org/CodeSystem/audit-entity-type"
	sysObjectRole   = "http://terminology.hl7.org/CodeSystem/object-role"
)

// DecodeFHIR decodes one FHIR AuditEvent (R4 or R5, JSON) into ev with
// the default FHIRConfig. The mapping, rule by rule with the FHIR path each
// rule reads, is in docs/feeds.md; in short:
//
//	patient_id     R5 patient; else entities whose role is Patient (object-role 1);
//	               else entities whose what is a Patient reference. The identifier
//	               (HL7 v2 CX or Identifier, assigning authority mapped by
//	               fhir.patient_identifier_authorities) wins over the reference id
//	               ("_history" stripped). No patient: not a chart access.
//	user_id        the requestor agent's who: identifier, then reference (fhir.user_id_from);
//	               never who.display (display only: not a chart access, no_user)
//	facility_id    source.site; else the requestor's location; else source.observer
//	               when it is an Organization or Location; else
//	               fhir.source_facilities[source] (or ["*"]); else missing_field source.site
//	action         DICOM 110106 / "export" / "Disclosure" → export; "print" → print;
//	               DICOM 110127/110128 → view; else action C/R/U/D/E; else REST codes
//	break_glass    DICOM 110127/110128 in any code; BTG or ETREAT in purposeOfEvent,
//	               authorization or the agent's purposeOfUse/authorization; a code or
//	               display "emergency override"/"break-glass"; the reason extension
//
// Errors are *DecodeError whose Field is the FHIR element path without
// indexes ("agent.who", "source.site", "entity"), or the canonical field
// name when a rule of AccessEvent.Validate failed on a value with no single
// source element, or a *NotAccessError for a well-formed event that is not
// a chart access. On error *ev is zeroed.
func DecodeFHIR(data []byte, ev *AccessEvent) error {
	f, de, ignore := decodeFHIR(data, ev, nil, nil, defaultFHIROpts)
	if ignore != "" {
		*ev = AccessEvent{}
		return &NotAccessError{Reason: ignore, Format: f}
	}
	if de != nil {
		*ev = AccessEvent{}
		return de
	}
	return nil
}

// decodeFHIR decodes data as a FHIR AuditEvent. If the top-level object has
// no resourceType, it returns notFHIR when that is set (the canonical error
// DecodeEvent met) and FormatCanonical. A non-empty IgnoreReason means the
// event is well formed but not a chart access.
func decodeFHIR(data []byte, ev *AccessEvent, lt *time.Time, notFHIR *DecodeError, opts *fhirOpts) (Format, *DecodeError, IgnoreReason) {
	if len(data) > MaxFHIRMessageSize {
		return FormatUnknown, newErr("", ClassTooLarge, rMessageTooLarge, -1), ""
	}
	d := getDoc()
	defer putDoc(d)
	if de := d.parse(data); de != nil {
		return FormatUnknown, de, ""
	}
	if d.nodes[0].kind != jObject {
		return FormatUnknown, newErr("", ClassWrongType, rNotObject, 0), ""
	}
	m := fhirMapper{d: d, opts: opts, userAgent: -1}
	rt, de := m.get(0, "resourceType", "resourceType", jString, rWantString)
	if de != nil {
		return FormatUnknown, de, ""
	}
	if rt < 0 {
		if notFHIR != nil {
			return FormatCanonical, notFHIR, ""
		}
		return FormatUnknown, newErr("resourceType", ClassUnsupportedFormat, rNotFHIR, -1), ""
	}
	if string(d.text(rt)) != "AuditEvent" {
		return FormatUnknown, newErr("resourceType", ClassUnsupportedFormat, rNotAuditEvent, int(d.nodes[rt].start)), ""
	}
	f, de := m.run()
	if de != nil || m.ignore != "" {
		return f, de, m.ignore
	}
	if m.hasLogged {
		if lt == nil {
			lt = new(time.Time)
		}
		*lt = m.logged
		m.ev.LoggedTime = lt
	}
	*ev = m.ev
	return f, nil, ""
}

// fhirMapper holds one AuditEvent's mapping in progress.
type fhirMapper struct {
	d    *jdoc
	opts *fhirOpts
	r5   bool
	vals [numEventFields][]byte // decoded text of each string field
	src  [numEventFields]string // the FHIR path each value came from
	ev   AccessEvent            // non-string fields

	logged      time.Time // recorded, once read
	hasLogged   bool
	ipTentative bool // client_ip holds a network address that may not be an IP
	ignore      IgnoreReason
	userAgent   int32 // the requestor agent's node, once chosen
}

// codeFlags is what a set of codings says about the access.
type codeFlags uint16

const (
	flagPrint codeFlags = 1 << iota
	flagExport
	flagEmergency // break-glass named by a type code
	flagBTG       // break-glass named by a purpose of use
	flagView      // restful-interaction hints, used when there is no action code
	flagCreate
	flagUpdate
	flagDelete
	flagQuery
	flagAuth     // DICOM 110114 User Authentication, 110122 Login, 110123 Logout
	flagOverride // DICOM 110127/110128 Emergency Override Started/Stopped
	flagSecAlert // DICOM 110113 Security Alert
)

func (m *fhirMapper) run() (Format, *DecodeError) {
	d := m.d
	const root = int32(0)

	// Version by shape, in one pass over the top-level members.
	r4, r5 := false, false
	for c, k := d.first(root), int32(0); k < d.nodes[root].count; c, k = d.nodes[c].next, k+1 {
		switch string(d.key(c)) {
		case "type", "subtype", "period", "purposeOfEvent", "outcomeDesc":
			r4 = true
		case "code", "category", "occurredDateTime", "occurredPeriod", "patient", "encounter", "authorization", "basedOn", "severity":
			r5 = true
		case "outcome":
			switch d.nodes[c].kind {
			case jString:
				r4 = true
			case jObject:
				r5 = true
			}
		}
	}
	if r4 == r5 {
		return FormatUnknown, newErr("", ClassUnsupportedFormat, rFHIRVersion, -1)
	}
	m.r5 = r5
	format := FormatFHIRR4
	if r5 {
		format = FormatFHIRR5
	}

	// id
	if b, de := m.str(root, "id", "id"); de != nil {
		return format, de
	} else if b == nil {
		return format, newErr("id", ClassMissingField, rRequired, -1)
	} else if de := m.set(fEventID, b, "id"); de != nil {
		return format, de
	}

	// Type codes: action hints and emergency override.
	var typeFlags codeFlags
	if !r5 {
		t, de := m.get(root, "type", "type", jObject, rWantObject)
		if de != nil {
			return format, de
		}
		if t >= 0 {
			fl, de := m.codingFlags(t, "type")
			if de != nil {
				return format, de
			}
			typeFlags |= fl
		}
		fl, de := m.codingArrayFlags(root, "subtype", "subtype")
		if de != nil {
			return format, de
		}
		typeFlags |= fl
	} else {
		fl, de := m.conceptArrayFlags(root, "category", "category", nil)
		if de != nil {
			return format, de
		}
		typeFlags |= fl
		c, de := m.get(root, "code", "code", jObject, rWantObject)
		if de != nil {
			return format, de
		}
		if c >= 0 {
			fl, _, de := m.conceptFlags(c, "code")
			if de != nil {
				return format, de
			}
			typeFlags |= fl
		}
	}

	// Patient, encounter and resource: an event without a patient is not
	// a chart access, whatever else it holds.
	if de := m.subjects(); de != nil {
		return format, de
	}
	if m.vals[fPatientID] == nil {
		switch {
		case typeFlags&flagAuth != 0:
			m.ignore = IgnoreAuthentication
		case typeFlags&flagQuery != 0:
			m.ignore = IgnoreQueryWithoutPatient
		default:
			m.ignore = IgnoreNoPatient
		}
		return format, nil
	}

	// Action.
	var codeAction Action
	if b, de := m.str(root, "action", "action"); de != nil {
		return format, de
	} else if b != nil {
		switch string(b) {
		case "C":
			codeAction = ActionCreate
		case "R":
			codeAction = ActionView
		case "U":
			codeAction = ActionUpdate
		case "D":
			codeAction = ActionDelete
		case "E":
			codeAction = ActionQuery
		default:
			return format, newErr("action", ClassInvalidValue, rActionCode, -1)
		}
	}
	switch {
	case typeFlags&flagExport != 0:
		m.ev.Action = ActionExport
	case typeFlags&flagPrint != 0:
		m.ev.Action = ActionPrint
	case typeFlags&flagOverride != 0 && (codeAction == "" || codeAction == ActionQuery):
		// An emergency override opens the chart (action E: "execute").
		m.ev.Action = ActionView
	case codeAction != "":
		m.ev.Action = codeAction
	case typeFlags&flagDelete != 0:
		m.ev.Action = ActionDelete
	case typeFlags&flagUpdate != 0:
		m.ev.Action = ActionUpdate
	case typeFlags&flagCreate != 0:
		m.ev.Action = ActionCreate
	case typeFlags&flagQuery != 0:
		m.ev.Action = ActionQuery
	case typeFlags&flagView != 0:
		m.ev.Action = ActionView
	default:
		return format, newErr("action", ClassMissingField, rNoAction, -1)
	}

	// Times.
	if de := m.times(); de != nil {
		return format, de
	}

	// Outcome.
	if de := m.outcome(); de != nil {
		return format, de
	}

	// Purpose of use at the event level.
	var reason []byte
	purposeName := "purposeOfEvent"
	if r5 {
		purposeName = "authorization"
	}
	pf, ptext, de := m.purpose(root, purposeName, purposeName)
	if de != nil {
		return format, de
	}
	if pf&flagBTG != 0 && ptext != nil {
		reason = ptext
	}
	breakGlass := (pf|typeFlags)&(flagBTG|flagEmergency|flagOverride|flagSecAlert) != 0

	// The break-glass reason extension wins over concept text.
	ext, de := m.extension(root, "extension", FHIRExtBreakGlassReason, false)
	if de != nil {
		return format, de
	}
	if ext != nil {
		breakGlass = true
		reason = ext
	}

	// Agents.
	agentFlags, agentReason, de := m.agents()
	if de != nil || m.ignore != "" {
		return format, de
	}
	if agentFlags&flagBTG != 0 {
		breakGlass = true
		if reason == nil {
			reason = agentReason
		}
	}
	m.ev.BreakGlass = breakGlass
	if breakGlass && reason != nil {
		if de := m.set(fBreakGlassReason, reason, "break_glass_reason"); de != nil {
			return format, de
		}
	}

	// Source and facility.
	if de := m.source(); de != nil {
		return format, de
	}

	return format, m.finish()
}

// times sets event_time and logged_time.
func (m *fhirMapper) times() *DecodeError {
	const root = int32(0)
	var start int32 = -1
	startPath := ""
	if !m.r5 {
		p, de := m.get(root, "period", "period", jObject, rWantObject)
		if de != nil {
			return de
		}
		if p >= 0 {
			if start, de = m.get(p, "start", "period.start", jString, rWantString); de != nil {
				return de
			}
			startPath = "period.start"
		}
	} else {
		dt, de := m.get(root, "occurredDateTime", "occurredDateTime", jString, rWantString)
		if de != nil {
			return de
		}
		p, de := m.get(root, "occurredPeriod", "occurredPeriod", jObject, rWantObject)
		if de != nil {
			return de
		}
		switch {
		case dt >= 0:
			start, startPath = dt, "occurredDateTime"
		case p >= 0:
			if start, de = m.get(p, "start", "occurredPeriod.start", jString, rWantString); de != nil {
				return de
			}
			startPath = "occurredPeriod.start"
		}
	}
	rec, de := m.get(root, "recorded", "recorded", jString, rWantString)
	if de != nil {
		return de
	}
	if rec >= 0 {
		t, de := m.time(rec, "recorded")
		if de != nil {
			return de
		}
		if !InTimeRange(t) {
			return newErr("recorded", ClassInvalidTime, rTimeRange, int(m.d.nodes[rec].start))
		}
		m.logged, m.hasLogged = t, true
	}
	switch {
	case start >= 0:
		t, de := m.time(start, startPath)
		if de != nil {
			return de
		}
		m.ev.EventTime = t
		m.src[fEventTime] = startPath
	case m.hasLogged:
		m.ev.EventTime = m.logged
		m.src[fEventTime] = "recorded"
	default:
		return newErr("recorded", ClassMissingField, rRequired, -1)
	}
	m.src[fLoggedTime] = "recorded"
	return nil
}

func (m *fhirMapper) time(n int32, path string) (time.Time, *DecodeError) {
	if m.d.nodes[n].dlen > maxTimeLen {
		return time.Time{}, newErr(path, ClassInvalidTime, rTimeFormat, int(m.d.nodes[n].start))
	}
	t, r := parseTime(m.d.text(n))
	if r != rNone {
		return time.Time{}, newErr(path, ClassInvalidTime, r, int(m.d.nodes[n].start))
	}
	return t, nil
}

// outcome sets the outcome from R4 outcome or R5 outcome.code.code.
func (m *fhirMapper) outcome() *DecodeError {
	const root = int32(0)
	m.ev.Outcome = OutcomeSuccess
	var code []byte
	path := "outcome"
	if !m.r5 {
		b, de := m.str(root, "outcome", "outcome")
		if de != nil || b == nil {
			return de
		}
		code = b
	} else {
		o, de := m.get(root, "outcome", "outcome", jObject, rWantObject)
		if de != nil || o < 0 {
			return de
		}
		c, de := m.get(o, "code", "outcome.code", jObject, rWantObject)
		if de != nil {
			return de
		}
		if c < 0 {
			return newErr("outcome.code", ClassMissingField, rRequired, -1)
		}
		path = "outcome.code.code"
		b, de := m.str(c, "code", path)
		if de != nil {
			return de
		}
		if b == nil {
			return newErr(path, ClassMissingField, rRequired, -1)
		}
		code = b
	}
	switch string(code) {
	case "0", "information", "warning":
	case "4", "8", "12", "error", "fatal": // audit-event-outcome; R5 also allows issue-severity
		m.ev.Outcome = OutcomeFailure
	default:
		return newErr(path, ClassInvalidValue, rOutcomeCode, -1)
	}
	return nil
}

// agents picks the user agent and maps it; it returns the purpose-of-use
// flags and break-glass text of that agent.
func (m *fhirMapper) agents() (codeFlags, []byte, *DecodeError) {
	d := m.d
	arr, de := m.get(0, "agent", "agent", jArray, rWantArray)
	if de != nil {
		return 0, nil, de
	}
	if arr < 0 || d.nodes[arr].count == 0 {
		return 0, nil, newErr("agent", ClassMissingField, rRequired, -1)
	}
	user, byRole := int32(-1), int32(-1)
	n := d.nodes[arr].count
	for c, k := d.first(arr), int32(0); k < n; c, k = d.nodes[c].next, k+1 {
		if d.nodes[c].kind != jObject {
			return 0, nil, newErr("agent", ClassWrongType, rWantObject, int(d.nodes[c].start))
		}
		rq, de := m.get(c, "requestor", "agent.requestor", jTrue, rWantBool)
		if de != nil {
			return 0, nil, de
		}
		if rq >= 0 && user < 0 {
			user = c
		}
		if byRole < 0 {
			if who, de := m.refOf(c, "who", "agent.who", false); de != nil {
				return 0, nil, de
			} else if string(who.typ) == "Practitioner" || string(who.typ) == "PractitionerRole" {
				byRole = c
			}
		}
	}
	switch {
	case user >= 0:
	case byRole >= 0:
		user = byRole
	case n == 1:
		user = d.first(arr)
	default:
		// Several agents, none the requestor nor a practitioner: a
		// system-to-system access (IHE BALP's "no user" examples).
		m.ignore = IgnoreNoUser
		return 0, nil, nil
	}

	m.userAgent = user

	// who → user_id
	who, de := m.refOf(user, "who", "agent.who", false)
	if de != nil {
		return 0, nil, de
	}
	if !who.present {
		return 0, nil, newErr("agent.who", ClassMissingField, rRequired, -1)
	}
	if who.contained {
		return 0, nil, newErr("agent.who", ClassInvalidValue, rContainedReference, who.pos)
	}
	uid := m.userID(who)
	if uid == nil {
		if who.refID == nil && who.ident == nil && who.display == nil {
			return 0, nil, newErr("agent.who", ClassInvalidValue, rBadReference, who.pos)
		}
		// Known by display only (or by identifiers of other systems): a
		// well-formed event nobody can be held accountable for.
		m.ignore = IgnoreNoUser
		return 0, nil, nil
	}
	if de := m.set(fUserID, uid, "agent.who"); de != nil {
		return 0, nil, de
	}

	// role → user_role
	roles, de := m.get(user, "role", "agent.role", jArray, rWantArray)
	if de != nil {
		return 0, nil, de
	}
	if roles >= 0 && d.nodes[roles].count > 0 {
		cc := d.first(roles)
		if d.nodes[cc].kind != jObject {
			return 0, nil, newErr("agent.role", ClassWrongType, rWantObject, int(d.nodes[cc].start))
		}
		code, de := m.conceptCode(cc, "agent.role")
		if de != nil {
			return 0, nil, de
		}
		if de := m.set(fUserRole, code, "agent.role"); de != nil {
			return 0, nil, de
		}
	}

	// department: extension, else location
	dept, de := m.extension(user, "agent.extension", FHIRExtUserDepartment, true)
	if de != nil {
		return 0, nil, de
	}
	deptPath := "agent.extension"
	if dept == nil {
		loc, de := m.refOf(user, "location", "agent.location", true)
		if de != nil {
			return 0, nil, de
		}
		dept, deptPath = loc.id, "agent.location"
	}
	if de := m.set(fUserDepartment, dept, deptPath); de != nil {
		return 0, nil, de
	}

	// network → client_ip / workstation_id
	if de := m.network(user); de != nil {
		return 0, nil, de
	}
	if m.vals[fWorkstationID] == nil {
		// The observer (the server that recorded the event) is not the
		// user's workstation.
		var observer []byte
		if src, _ := m.d.member(0, "source"); src >= 0 && m.d.nodes[src].kind == jObject {
			if obs, _ := m.d.member(src, "observer"); obs >= 0 && m.d.nodes[obs].kind == jObject {
				if r, _ := m.d.member(obs, "reference"); r >= 0 && m.d.nodes[r].kind == jString {
					observer = m.d.text(r)
				}
			}
		}
		for c, k := d.first(arr), int32(0); k < n; c, k = d.nodes[c].next, k+1 {
			if c == user {
				continue
			}
			dev, de := m.refOf(c, "who", "agent.who", false)
			if de != nil {
				return 0, nil, de
			}
			if string(dev.typ) == "Device" && dev.id != nil && (observer == nil || !bytes.Equal(dev.ref, observer)) {
				if de := m.set(fWorkstationID, dev.id, "agent.who"); de != nil {
					return 0, nil, de
				}
				break
			}
		}
	}

	// purpose of use of the user agent
	name, path := "purposeOfUse", "agent.purposeOfUse"
	if m.r5 {
		name, path = "authorization", "agent.authorization"
	}
	return m.purpose(user, name, path)
}

// network maps the user agent's network address.
func (m *fhirMapper) network(agent int32) *DecodeError {
	if !m.r5 {
		nw, de := m.get(agent, "network", "agent.network", jObject, rWantObject)
		if de != nil || nw < 0 {
			return de
		}
		addr, de := m.str(nw, "address", "agent.network.address")
		if de != nil || addr == nil {
			return de
		}
		typ, de := m.str(nw, "type", "agent.network.type")
		if de != nil {
			return de
		}
		return m.address(addr, string(typ) == "2", "agent.network.address")
	}
	s, de := m.str(agent, "networkString", "agent.networkString")
	if de != nil {
		return de
	}
	if s != nil {
		return m.address(s, false, "agent.networkString")
	}
	ref, de := m.refOf(agent, "networkReference", "agent.networkReference", true)
	if de != nil {
		return de
	}
	return m.set(fWorkstationID, ref.id, "agent.networkReference")
}

// address stores addr as client_ip if it is (or must be) an IP address,
// and as workstation_id otherwise. An address that merely looks like an IP
// is stored as client_ip tentatively; finish parses it (on the final
// string, saving an allocation) and moves it to workstation_id if it is
// not one.
func (m *fhirMapper) address(addr []byte, mustBeIP bool, path string) *DecodeError {
	if mustBeIP || looksLikeIP(addr) {
		m.ipTentative = !mustBeIP
		return m.set(fClientIP, addr, path)
	}
	return m.set(fWorkstationID, addr, path)
}

// looksLikeIP is a cheap pre-filter: IP literals use only hex digits, '.'
// and ':', and contain at least one '.' or ':'.
func looksLikeIP(b []byte) bool {
	if len(b) == 0 || len(b) > MaxClientIPLen {
		return false
	}
	sep := false
	for _, c := range b {
		switch {
		case c == '.' || c == ':':
			sep = true
		case c >= '0' && c <= '9', c >= 'a' && c <= 'f', c >= 'A' && c <= 'F':
		default:
			return false
		}
	}
	return sep
}

// source maps source.site and source.observer.
func (m *fhirMapper) source() *DecodeError {
	src, de := m.get(0, "source", "source", jObject, rWantObject)
	if de != nil {
		return de
	}
	if src < 0 {
		return newErr("source", ClassMissingField, rRequired, -1)
	}
	site, dup := m.d.member(src, "site")
	if dup {
		return newErr("source.site", ClassDuplicateField, rDuplicateField, -1)
	}
	var facility []byte
	if site >= 0 {
		switch m.d.nodes[site].kind {
		case jString:
			facility = m.d.text(site)
		case jObject:
			ref, de := m.refOf(src, "site", "source.site", true)
			if de != nil {
				return de
			}
			facility = ref.id
		case jNull:
		default:
			return newErr("source.site", ClassWrongType, rWantStringOrObject, int(m.d.nodes[site].start))
		}
	}
	obs, de := m.refOf(src, "observer", "source.observer", true)
	if de != nil {
		return de
	}
	if de := m.set(fSource, obs.id, "source.observer"); de != nil {
		return de
	}
	// The facility chain (docs/feeds.md): source.site, the requestor's
	// location, an Organization or Location observer, the configured
	// facility of the source. Never a silent default.
	path := "source.site"
	if len(facility) == 0 && m.userAgent >= 0 {
		loc, de := m.refOf(m.userAgent, "location", "agent.location", false)
		if de != nil {
			return de
		}
		facility, path = loc.ident, "agent.location"
		if facility == nil {
			facility = loc.refID
		}
	}
	if len(facility) == 0 && (string(obs.typ) == "Organization" || string(obs.typ) == "Location") {
		facility, path = obs.id, "source.observer"
	}
	if len(facility) == 0 && len(m.opts.facilityOfSrc) > 0 {
		f, ok := m.opts.facilityOfSrc[string(obs.id)]
		if !ok {
			f = m.opts.facilityOfSrc["*"]
		}
		facility, path = []byte(f), "source.observer"
	}
	if len(facility) == 0 {
		return newErr("source.site", ClassMissingField, rRequired, -1)
	}
	return m.set(fFacilityID, facility, path)
}

// subjects maps patient, encounter and resource from R5 patient/encounter
// and from entity[]. The patient comes from the first of these tiers that
// names one: (1) R5 patient and entities whose role is Patient
// (object-role 1); (2) entities whose what is a Patient reference. Within
// the tier every designation must agree. It leaves patient_id unset when
// no tier names a patient.
func (m *fhirMapper) subjects() *DecodeError {
	d := m.d
	var patient [3][]byte // by tier; [0] unused
	var patientPath [3]string
	add := func(tier int, id []byte, path string, pos int) *DecodeError {
		if patient[tier] != nil && !bytes.Equal(patient[tier], id) {
			return newErr("entity", ClassInvalidValue, rSeveralPatients, pos)
		}
		if patient[tier] == nil {
			patient[tier], patientPath[tier] = id, path
		}
		return nil
	}
	if m.r5 {
		p, de := m.refOf(0, "patient", "patient", false)
		if de != nil {
			return de
		}
		if p.present {
			id, de := m.patientID(p, "patient")
			if de != nil {
				return de
			}
			if de := add(1, id, "patient", p.pos); de != nil {
				return de
			}
		}
		e, de := m.refOf(0, "encounter", "encounter", false)
		if de != nil {
			return de
		}
		if de := m.set(fEncounterID, e.id, "encounter"); de != nil {
			return de
		}
	}
	arr, de := m.get(0, "entity", "entity", jArray, rWantArray)
	if de != nil {
		return de
	}
	if arr >= 0 {
		n := d.nodes[arr].count
		for c, k := d.first(arr), int32(0); k < n; c, k = d.nodes[c].next, k+1 {
			if d.nodes[c].kind != jObject {
				return newErr("entity", ClassWrongType, rWantObject, int(d.nodes[c].start))
			}
			what, de := m.refOf(c, "what", "entity.what", false)
			if de != nil {
				return de
			}
			if !what.present {
				continue
			}
			role, de := m.patientRole(c)
			if de != nil {
				return de
			}
			tier := 0
			switch {
			case role:
				tier = 1
			case string(what.typ) == "Patient":
				tier = 2
			}
			switch {
			case tier > 0:
				id, de := m.patientID(what, "entity.what")
				if de != nil {
					return de
				}
				if de := add(tier, id, "entity.what", int(d.nodes[c].start)); de != nil {
					return de
				}
			case string(what.typ) == "Encounter":
				if m.vals[fEncounterID] == nil {
					if de := m.set(fEncounterID, what.id, "entity.what"); de != nil {
						return de
					}
				}
			default:
				if m.vals[fResource] == nil && len(what.ref) > 0 && !what.contained {
					if de := m.set(fResource, what.ref, "entity.what.reference"); de != nil {
						return de
					}
				}
			}
		}
	}
	for tier := 1; tier <= 2; tier++ {
		if patient[tier] != nil {
			return m.set(fPatientID, patient[tier], patientPath[tier])
		}
	}
	return nil
}

// patientRole reports whether an entity is marked as the patient by code:
// role "1" (object-role Patient); in R4, a type, if present, must be "1"
// (audit-entity-type Person).
func (m *fhirMapper) patientRole(entity int32) (bool, *DecodeError) {
	role := false
	if !m.r5 {
		t, de := m.get(entity, "type", "entity.type", jObject, rWantObject)
		if de != nil {
			return false, de
		}
		if t >= 0 {
			sys, code, _, de := m.coding(t, "entity.type")
			if de != nil {
				return false, de
			}
			if string(code) != "1" || (sys != nil && string(sys) != sysEntityType) {
				return false, nil
			}
		}
		r, de := m.get(entity, "role", "entity.role", jObject, rWantObject)
		if de != nil || r < 0 {
			return false, de
		}
		sys, code, _, de := m.coding(r, "entity.role")
		if de != nil {
			return false, de
		}
		role = string(code) == "1" && (sys == nil || string(sys) == sysObjectRole)
		return role, nil
	}
	r, de := m.get(entity, "role", "entity.role", jObject, rWantObject)
	if de != nil || r < 0 {
		return false, de
	}
	codings, de := m.get(r, "coding", "entity.role.coding", jArray, rWantArray)
	if de != nil || codings < 0 {
		return false, de
	}
	n := m.d.nodes[codings].count
	for c, k := m.d.first(codings), int32(0); k < n; c, k = m.d.nodes[c].next, k+1 {
		if m.d.nodes[c].kind != jObject {
			return false, newErr("entity.role.coding", ClassWrongType, rWantObject, int(m.d.nodes[c].start))
		}
		sys, code, _, de := m.coding(c, "entity.role.coding")
		if de != nil {
			return false, de
		}
		if string(code) == "1" && (sys == nil || string(sys) == sysObjectRole) {
			return true, nil
		}
	}
	return false, nil
}

// finish checks required fields and builds the strings of m.ev.
func (m *fhirMapper) finish() *DecodeError {
	total := 0
	for _, v := range m.vals {
		total += len(v)
	}
	var b strings.Builder
	b.Grow(total)
	for _, v := range m.vals {
		b.Write(v)
	}
	all := b.String()
	off := 0
	take := func(f eventField) string {
		s := all[off : off+len(m.vals[f])]
		off += len(m.vals[f])
		return s
	}
	for f := range numEventFields {
		if len(m.vals[f]) == 0 {
			continue
		}
		switch f {
		case fEventID:
			m.ev.EventID = take(f)
		case fSource:
			m.ev.Source = take(f)
		case fFacilityID:
			m.ev.FacilityID = take(f)
		case fUserID:
			m.ev.UserID = take(f)
		case fUserRole:
			m.ev.UserRole = take(f)
		case fUserDepartment:
			m.ev.UserDepartment = take(f)
		case fWorkstationID:
			m.ev.WorkstationID = take(f)
		case fClientIP:
			m.ev.ClientIP = take(f)
		case fPatientID:
			m.ev.PatientID = take(f)
		case fEncounterID:
			m.ev.EncounterID = take(f)
		case fResource:
			m.ev.Resource = take(f)
		case fBreakGlassReason:
			m.ev.BreakGlassReason = take(f)
		}
	}
	if m.ipTentative && m.ev.ClientIP != "" && checkIP(m.ev.ClientIP) != rNone {
		if m.ev.WorkstationID == "" {
			m.ev.WorkstationID = m.ev.ClientIP
			m.src[fWorkstationID] = m.src[fClientIP]
		}
		m.ev.ClientIP = ""
	}
	if de := m.ev.validate(checkControl); de != nil {
		// Name the FHIR element the value came from, where there is one.
		for f := range numEventFields {
			if eventFields[f].name == de.Field && m.src[f] != "" {
				de.Field = m.src[f]
				break
			}
		}
		return de
	}
	return nil
}

// set records the value of string field f, read from path. A nil or empty
// value leaves the field unset.
func (m *fhirMapper) set(f eventField, v []byte, path string) *DecodeError {
	m.src[f] = path
	if len(v) == 0 {
		return nil
	}
	if len(v) > eventFields[f].limit {
		return newErr(path, ClassTooLarge, rValueTooLarge, -1)
	}
	m.vals[f] = v
	m.src[f] = path
	return nil
}

// get returns member name of object obj, or -1 if it is absent or null. A
// repeated member is a duplicate_field error and a member of another kind a
// wrong_type error (jTrue stands for "boolean").
func (m *fhirMapper) get(obj int32, name, path string, kind jkind, want reason) (int32, *DecodeError) {
	c, dup := m.d.member(obj, name)
	if dup {
		return -1, newErr(path, ClassDuplicateField, rDuplicateField, int(m.d.nodes[c].start))
	}
	if c < 0 {
		return -1, nil
	}
	k := m.d.nodes[c].kind
	if k == jNull {
		return -1, nil
	}
	if k != kind && !(kind == jTrue && k == jFalse) {
		return -1, newErr(path, ClassWrongType, want, int(m.d.nodes[c].start))
	}
	if kind == jTrue && k == jFalse {
		return -1, nil // requestor: false is as good as absent
	}
	return c, nil
}

// str returns the text of string member name, or nil if absent.
func (m *fhirMapper) str(obj int32, name, path string) ([]byte, *DecodeError) {
	c, de := m.get(obj, name, path, jString, rWantString)
	if de != nil || c < 0 {
		return nil, de
	}
	return m.d.text(c), nil
}

// containedType returns the resourceType of the contained resource with
// id, or nil.
func (m *fhirMapper) containedType(id []byte) []byte {
	d := m.d
	arr, dup := d.member(0, "contained")
	if dup || arr < 0 || d.nodes[arr].kind != jArray {
		return nil
	}
	n := d.nodes[arr].count
	for c, k := d.first(arr), int32(0); k < n; c, k = d.nodes[c].next, k+1 {
		if d.nodes[c].kind != jObject {
			continue
		}
		i, dup := d.member(c, "id")
		if dup || i < 0 || d.nodes[i].kind != jString || !bytes.Equal(d.text(i), id) {
			continue
		}
		if t, dup := d.member(c, "resourceType"); !dup && t >= 0 && d.nodes[t].kind == jString {
			return d.text(t)
		}
	}
	return nil
}

// userID picks user_id from the requestor's who by fhir.user_id_from and
// fhir.user_identifier_systems; nil if none qualifies. display never does.
func (m *fhirMapper) userID(who refInfo) []byte {
	o := m.opts
	ident, ref := who.ident, who.refID
	if o.userNoIdent {
		ident = nil
	} else if len(o.userSystems) > 0 && ident != nil {
		ok := false
		for _, s := range o.userSystems {
			if string(who.identSys) == s {
				ok = true
				break
			}
		}
		if !ok {
			ident = nil
		}
	}
	if o.userNoRef {
		ref = nil
	}
	if o.userRefFirst && ref != nil {
		return ref
	}
	if ident != nil {
		return ident
	}
	return ref
}

// patientID maps a Reference that designates the patient: its identifier
// (the ID of an HL7 v2 CX value, prefixed per assigning authority by
// fhir.patient_identifier_authorities), else the id of its reference.
func (m *fhirMapper) patientID(r refInfo, path string) ([]byte, *DecodeError) {
	if r.ident != nil {
		id, auth := r.ident, r.identSys
		if i := bytes.IndexByte(id, '^'); i >= 0 {
			// CX: ID^check digit^scheme^assigning authority (HD:
			// namespace&universal id&type)^…
			auth = nil
			parts := bytes.SplitN(id, []byte("^"), 5)
			id = parts[0]
			if len(parts) > 3 {
				hd := bytes.Split(parts[3], []byte("&"))
				auth = hd[0]
				if len(hd) > 1 && len(hd[1]) > 0 {
					auth = hd[1]
				}
			}
		}
		auth = bytes.TrimPrefix(auth, []byte("urn:oid:"))
		if len(id) > 0 {
			if len(m.opts.authorities) == 0 {
				return id, nil
			}
			if prefix, ok := m.opts.authorities[string(auth)]; ok {
				if prefix == "" {
					return id, nil
				}
				return append(append(make([]byte, 0, len(prefix)+len(id)), prefix...), id...), nil
			}
		}
	}
	if r.contained {
		return nil, newErr(path, ClassInvalidValue, rContainedReference, r.pos)
	}
	if r.refID != nil {
		return r.refID, nil
	}
	return nil, newErr(path, ClassInvalidValue, rBadReference, r.pos)
}

// refInfo is what refOf reads from a Reference.
type refInfo struct {
	id        []byte // identifier.value, else the reference's id, else (allowDisplay) display
	refID     []byte // the id of reference ("_history" stripped), nil if none or contained
	ident     []byte // identifier.value
	identSys  []byte // identifier.system
	display   []byte // display
	typ       []byte // resource type, from reference or Reference.type
	ref       []byte // the reference string verbatim
	contained bool   // reference is "#…" (a contained resource)
	present   bool   // the member exists (and is not null)
	pos       int    // offset of the Reference object
}

// refOf reads the Reference in member name of obj.
func (m *fhirMapper) refOf(obj int32, name, path string, allowDisplay bool) (refInfo, *DecodeError) {
	var ri refInfo
	r, de := m.get(obj, name, path, jObject, rWantObject)
	if de != nil || r < 0 {
		return refInfo{}, de
	}
	ri.present, ri.pos = true, int(m.d.nodes[r].start)
	if ri.ref, de = m.str(r, "reference", path); de != nil {
		return refInfo{}, de
	}
	if s := ri.ref; len(s) > 0 {
		if s[0] == '#' {
			ri.contained = true
			ri.typ = m.containedType(s[1:])
		} else {
			if i := bytes.Index(s, []byte("/_history/")); i >= 0 {
				s = s[:i]
			}
			if bytes.HasPrefix(s, []byte("urn:")) {
				ri.refID = s
			} else {
				i := bytes.LastIndexByte(s, '/')
				ri.refID = s[i+1:]
				if i > 0 {
					t := s[:i]
					ri.typ = t[bytes.LastIndexByte(t, '/')+1:]
				}
			}
			if len(ri.refID) == 0 {
				return refInfo{}, newErr(path, ClassInvalidValue, rBadReference, ri.pos)
			}
		}
	}
	if ri.typ == nil {
		t, de := m.str(r, "type", path)
		if de != nil {
			return refInfo{}, de
		}
		if len(t) > 0 {
			ri.typ = t[bytes.LastIndexByte(t, '/')+1:]
		}
	}
	ident, de := m.get(r, "identifier", path, jObject, rWantObject)
	if de != nil {
		return refInfo{}, de
	}
	if ident >= 0 {
		v, de := m.str(ident, "value", path)
		if de != nil {
			return refInfo{}, de
		}
		if len(v) > 0 {
			ri.ident = v
		}
		if ri.identSys, de = m.str(ident, "system", path); de != nil {
			return refInfo{}, de
		}
	}
	if ri.display, de = m.str(r, "display", path); de != nil {
		return refInfo{}, de
	}
	if len(ri.display) == 0 {
		ri.display = nil
	}
	switch {
	case ri.ident != nil:
		ri.id = ri.ident
	case ri.refID != nil:
		ri.id = ri.refID
	case allowDisplay:
		ri.id = ri.display
	}
	return ri, nil
}

// coding reads a Coding object.
func (m *fhirMapper) coding(c int32, path string) (system, code, display []byte, _ *DecodeError) {
	var de *DecodeError
	if system, de = m.str(c, "system", path); de != nil {
		return nil, nil, nil, de
	}
	if code, de = m.str(c, "code", path); de != nil {
		return nil, nil, nil, de
	}
	if display, de = m.str(c, "display", path); de != nil {
		return nil, nil, nil, de
	}
	return system, code, display, nil
}

// codingFlags classifies one Coding object.
func (m *fhirMapper) codingFlags(c int32, path string) (codeFlags, *DecodeError) {
	sys, code, display, de := m.coding(c, path)
	if de != nil {
		return 0, de
	}
	return classifyCoding(sys, code, display), nil
}

// codingArrayFlags classifies every Coding in array member name of obj.
func (m *fhirMapper) codingArrayFlags(obj int32, name, path string) (codeFlags, *DecodeError) {
	arr, de := m.get(obj, name, path, jArray, rWantArray)
	if de != nil || arr < 0 {
		return 0, de
	}
	var f codeFlags
	n := m.d.nodes[arr].count
	for c, k := m.d.first(arr), int32(0); k < n; c, k = m.d.nodes[c].next, k+1 {
		if m.d.nodes[c].kind != jObject {
			return 0, newErr(path, ClassWrongType, rWantObject, int(m.d.nodes[c].start))
		}
		sys, code, display, de := m.coding(c, path)
		if de != nil {
			return 0, de
		}
		f |= classifyCoding(sys, code, display)
	}
	return f, nil
}

// conceptFlags classifies the codings of CodeableConcept cc and returns its
// text.
func (m *fhirMapper) conceptFlags(cc int32, path string) (codeFlags, []byte, *DecodeError) {
	f, de := m.codingArrayFlags(cc, "coding", path)
	if de != nil {
		return 0, nil, de
	}
	text, de := m.str(cc, "text", path)
	if de != nil {
		return 0, nil, de
	}
	return f, text, nil
}

// conceptArrayFlags classifies every CodeableConcept in array member name
// of obj. If textOf is not nil, it receives the text of the first concept
// whose flags include flagBTG.
func (m *fhirMapper) conceptArrayFlags(obj int32, name, path string, textOf *[]byte) (codeFlags, *DecodeError) {
	arr, de := m.get(obj, name, path, jArray, rWantArray)
	if de != nil || arr < 0 {
		return 0, de
	}
	var f codeFlags
	n := m.d.nodes[arr].count
	for c, k := m.d.first(arr), int32(0); k < n; c, k = m.d.nodes[c].next, k+1 {
		if m.d.nodes[c].kind != jObject {
			return 0, newErr(path, ClassWrongType, rWantObject, int(m.d.nodes[c].start))
		}
		cf, text, de := m.conceptFlags(c, path)
		if de != nil {
			return 0, de
		}
		if textOf != nil && *textOf == nil && cf&flagBTG != 0 && len(text) > 0 {
			*textOf = text
		}
		f |= cf
	}
	return f, nil
}

// purpose reads a purpose-of-use array; it returns its flags and the text
// of the concept that carried BTG.
func (m *fhirMapper) purpose(obj int32, name, path string) (codeFlags, []byte, *DecodeError) {
	var text []byte
	f, de := m.conceptArrayFlags(obj, name, path, &text)
	return f, text, de
}

// conceptCode returns the first coding's code of CodeableConcept cc, else
// its text.
func (m *fhirMapper) conceptCode(cc int32, path string) ([]byte, *DecodeError) {
	codings, de := m.get(cc, "coding", path, jArray, rWantArray)
	if de != nil {
		return nil, de
	}
	if codings >= 0 {
		n := m.d.nodes[codings].count
		for c, k := m.d.first(codings), int32(0); k < n; c, k = m.d.nodes[c].next, k+1 {
			if m.d.nodes[c].kind != jObject {
				return nil, newErr(path, ClassWrongType, rWantObject, int(m.d.nodes[c].start))
			}
			code, de := m.str(c, "code", path)
			if de != nil {
				return nil, de
			}
			if len(code) > 0 {
				return code, nil
			}
		}
	}
	return m.str(cc, "text", path)
}

// extension returns the value of the first extension with url in array
// member "extension" of obj: valueString, or (allowCode) valueCode.
func (m *fhirMapper) extension(obj int32, path, url string, allowCode bool) ([]byte, *DecodeError) {
	arr, de := m.get(obj, "extension", path, jArray, rWantArray)
	if de != nil || arr < 0 {
		return nil, de
	}
	n := m.d.nodes[arr].count
	for c, k := m.d.first(arr), int32(0); k < n; c, k = m.d.nodes[c].next, k+1 {
		if m.d.nodes[c].kind != jObject {
			return nil, newErr(path, ClassWrongType, rWantObject, int(m.d.nodes[c].start))
		}
		u, de := m.str(c, "url", path)
		if de != nil {
			return nil, de
		}
		if string(u) != url {
			continue
		}
		v, de := m.str(c, "valueString", path)
		if de != nil {
			return nil, de
		}
		if v == nil && allowCode {
			if v, de = m.str(c, "valueCode", path); de != nil {
				return nil, de
			}
		}
		return v, nil
	}
	return nil, nil
}

// classifyCoding says what one coding implies.
func classifyCoding(system, code, display []byte) codeFlags {
	var f codeFlags
	switch string(system) {
	case sysDICOM:
		switch string(code) {
		case "110106": // Export
			f |= flagExport
		case "110112": // Query
			f |= flagQuery
		case "110114", "110122", "110123": // User Authentication, Login, Logout
			f |= flagAuth
		case "110127", "110128": // Emergency Override Started, Stopped
			f |= flagOverride
		case "110113": // Security Alert
			f |= flagSecAlert
		}
	case sysRestful:
		switch string(code) {
		case "read", "vread", "history", "history-instance", "history-type", "history-system":
			f |= flagView
		case "create":
			f |= flagCreate
		case "update", "patch":
			f |= flagUpdate
		case "delete":
			f |= flagDelete
		case "search", "search-type", "search-system", "search-compartment":
			f |= flagQuery
		}
	case sysActReason, sysActReasonOld, sysActReasonOID, "":
		if string(code) == "BTG" || string(code) == "ETREAT" {
			f |= flagBTG
		}
	}
	for _, w := range [2][]byte{code, display} {
		switch {
		case foldEq(w, "print"):
			f |= flagPrint
		case foldEq(w, "export"), foldEq(w, "disclosure"):
			f |= flagExport
		case foldEq(w, "emergency override"), foldEq(w, "emergency-override"),
			foldEq(w, "break-glass"), foldEq(w, "break the glass"), foldEq(w, "breakglass"):
			f |= flagEmergency
		}
	}
	return f
}

// foldEq reports whether b equals the lower-case ASCII word s, ignoring
// ASCII case.
func foldEq(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
