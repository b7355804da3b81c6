package schemas

import (
	"strings"
	"time"
	"unsafe"
)

// Format is the wire format a message was decoded from.
type Format uint8

// The formats DecodeEventInto reports.
const (
	FormatUnknown   Format = iota // not decoded far enough to tell
	FormatCanonical               // ehrwatch canonical JSON
	FormatFHIRR4                  // FHIR R4 AuditEvent
	FormatFHIRR5                  // FHIR R5 AuditEvent
)

// String returns a label-safe name: "unknown", "canonical", "fhir_r4",
// "fhir_r5".
func (f Format) String() string {
	switch f {
	case FormatCanonical:
		return "canonical"
	case FormatFHIRR4:
		return "fhir_r4"
	case FormatFHIRR5:
		return "fhir_r5"
	}
	return "unknown"
}

// DecodeEvent decodes one Kafka payload into a new AccessEvent. It reads
// canonical JSON, and switches to the FHIR AuditEvent decoder when the
// top-level object has a "resourceType" member. See DecodeEventInto.
func DecodeEvent(data []byte) (*AccessEvent, error) {
	return newEvent(data, defaultFHIROpts, false)
}

// newEvent decodes data into a new event (see decodeEvent).
func newEvent(data []byte, opts *fhirOpts, owned bool) (*AccessEvent, error) {
	// One allocation holds the event and its logged time.
	h := new(struct {
		ev AccessEvent
		lt time.Time
	})
	if _, err := decodeEvent(data, &h.ev, &h.lt, opts, owned); err != nil {
		return nil, err
	}
	return &h.ev, nil
}

// DecodeEventOwned is DecodeEvent for a payload the caller hands over:
// the event's string fields may point into data instead of into a copy,
// so data must never be modified or reused afterwards, and the event (or
// any string kept from it) keeps all of data alive. A Kafka message's
// value, which kafka-go allocates for each message, is such a payload; a
// line buffer that is read into again is not. Canonical events without
// escapes save an allocation and a copy of their strings this way; the
// result is the same as DecodeEvent's (docs/benchmarks.md §2).
func DecodeEventOwned(data []byte) (*AccessEvent, error) {
	return newEvent(data, defaultFHIROpts, true)
}

// DecodeEventInto is DecodeEvent into a caller-owned event, reporting the
// format it found. On error *ev is zeroed and the error is either a
// *NotAccessError (errors.Is(err, ErrNotAccess): a well-formed event that
// is not a chart access, such as a login; count it and skip it) or a
// *DecodeError (permanent: send the message to the dead-letter queue).
//
// All string fields of a decoded event share one backing allocation that
// holds only the event's own strings. Code that keeps one field much longer
// than the event (a map key in long-lived detector state, say) should
// strings.Clone it, or it pins the whole event's strings, patient id
// included.
func DecodeEventInto(data []byte, ev *AccessEvent) (Format, error) {
	return decodeEvent(data, ev, nil, defaultFHIROpts, false)
}

// decodeEvent decodes data into ev; with owned set, canonical string
// fields may point into data (DecodeEventOwned).
func decodeEvent(data []byte, ev *AccessEvent, lt *time.Time, opts *fhirOpts, owned bool) (Format, error) {
	if len(data) > MaxFHIRMessageSize {
		*ev = AccessEvent{}
		return FormatUnknown, newErr("", ClassTooLarge, rMessageTooLarge, -1)
	}
	format := FormatCanonical
	maybeFHIR, de := decodeCanonical(data, ev, lt, true, owned)
	if maybeFHIR {
		var ignore IgnoreReason
		format, de, ignore = decodeFHIR(data, ev, lt, de, opts)
		if ignore != "" {
			*ev = AccessEvent{}
			return format, &NotAccessError{Reason: ignore, Format: format}
		}
	}
	if format == FormatCanonical && len(data) > MaxCanonicalMessageSize {
		// Too large for canonical JSON whatever else is wrong with it.
		de = newErr("", ClassTooLarge, rMessageTooLarge, -1)
	}
	if de != nil {
		*ev = AccessEvent{}
		return format, de
	}
	return format, nil
}

// DecodeCanonical decodes one canonical JSON event into ev.
//
// The input must be a single JSON object of at most MaxCanonicalMessageSize
// bytes whose members are exactly the AccessEvent json tags, with string
// values (break_glass: boolean), each key at most once. Required members:
// event_id, event_time, facility_id, user_id, patient_id, action (see
// RequiredEventFields); null counts as absent. outcome defaults to
// "success". Times must be RFC 3339 with an explicit offset (see
// ParseTime). The input must be valid UTF-8 JSON with nothing after the
// object; nested values are rejected (wrong_type for a known member,
// unknown_field otherwise), so nesting depth is never an issue.
//
// On error *ev is zeroed and the error is a *DecodeError naming the field.
func DecodeCanonical(data []byte, ev *AccessEvent) error {
	if len(data) > MaxCanonicalMessageSize {
		*ev = AccessEvent{}
		return newErr("", ClassTooLarge, rMessageTooLarge, -1)
	}
	if _, de := decodeCanonical(data, ev, nil, false, false); de != nil {
		*ev = AccessEvent{}
		return de
	}
	return nil
}

// decodeCanonical does the work of DecodeCanonical. With detectFHIR set, it
// stops at the first member that is not a canonical field and reports
// maybeFHIR: at "resourceType" with a nil error, at any other unknown key
// with the unknown_field error to report if the message is not FHIR after
// all. lt, if not nil, is where a logged_time is stored (saving an
// allocation). It builds the event in *ev itself; on an error the callers
// zero *ev. With owned set and no escaped string, the string fields
// point into data (DecodeEventOwned). Members are expected in
// json.Marshal's order (the schema's): the next one is matched with one
// comparison before falling back to the key scan, which was the largest
// share of the decoder's profile (docs/benchmarks.md §2).
func decodeCanonical(data []byte, ev *AccessEvent, lt *time.Time, detectFHIR, owned bool) (maybeFHIR bool, _ *DecodeError) {
	l := lexer{data: data}
	var (
		vals       [numEventFields]span
		seen       uint32 // keys met, null included
		present    uint32 // keys with a non-null value
		breakGlass bool
		expect     eventField // the member json.Marshal writes next
	)
	l.ws()
	if l.pos >= len(data) {
		return false, newErr("", ClassSyntax, rEmptyInput, l.pos)
	}
	if data[l.pos] != '{' {
		if valueStart(data[l.pos]) {
			return false, newErr("", ClassWrongType, rNotObject, l.pos)
		}
		return false, newErr("", ClassSyntax, rUnexpectedChar, l.pos)
	}
	l.pos++
	l.ws()
	if l.pos < len(data) && data[l.pos] == '}' {
		l.pos++
	} else {
		for {
			if l.pos >= len(data) {
				return false, newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
			}
			if data[l.pos] != '"' {
				return false, newErr("", ClassSyntax, rUnexpectedChar, l.pos)
			}
			keyPos := l.pos
			var de *DecodeError
			f := numEventFields
			// Fast path: the key json.Marshal writes next (the members in
			// schema order), written plainly, found with one comparison.
			if expect < numEventFields {
				name := eventFields[expect].name
				if e := l.pos + 1 + len(name); e < len(data) && data[e] == '"' && string(data[l.pos+1:e]) == name {
					f = expect
					l.pos = e + 1
				}
			}
			var key []byte
			if f == numEventFields {
				// Inline fast path for the usual plain key; str does the rest.
				var ks span
				if i := plainEnd(data, l.pos+1); i < len(data) && data[i] == '"' {
					ks = span{start: l.pos + 1, end: i, dlen: i - l.pos - 1}
					l.pos = i + 1
				} else if ks, de = l.str(); de != nil {
					return false, de
				}
				key = data[ks.start:ks.end]
				var kbuf [32]byte
				if ks.esc {
					if ks.dlen <= len(kbuf) {
						key = appendUnescaped(kbuf[:0], key)
					} else {
						key = nil
					}
				}
				f = lookupEventField(key)
			}
			expect = f + 1
			if f == numEventFields {
				if string(key) == "resourceType" {
					if detectFHIR {
						return true, nil
					}
					return false, newErr("resourceType", ClassUnsupportedFormat, rFHIRInCanonical, keyPos)
				}
				name := redactedName
				if key != nil {
					name = echoName(key)
				}
				// In detect mode an unknown key may be a FHIR element that
				// precedes "resourceType": the caller decides.
				return detectFHIR, newErr(name, ClassUnknownField, rUnknownField, keyPos)
			}
			spec := &eventFields[f]
			bit := uint32(1) << f
			if seen&bit != 0 {
				return false, newErr(spec.name, ClassDuplicateField, rDuplicateField, keyPos)
			}
			seen |= bit
			l.ws()
			if l.pos >= len(data) {
				return false, newErr(spec.name, ClassSyntax, rUnexpectedEOF, l.pos)
			}
			if data[l.pos] != ':' {
				return false, newErr(spec.name, ClassSyntax, rUnexpectedChar, l.pos)
			}
			l.pos++
			l.ws()
			if l.pos >= len(data) {
				return false, newErr(spec.name, ClassSyntax, rUnexpectedEOF, l.pos)
			}
			valPos := l.pos
			switch c := data[l.pos]; {
			case c == 'n':
				de = l.lit("null")
			case f == fBreakGlass && c == 't':
				de = l.lit("true")
				breakGlass = true
				present |= bit
			case f == fBreakGlass && c == 'f':
				de = l.lit("false")
				present |= bit
			case f != fBreakGlass && c == '"':
				var sp span
				if i := plainEnd(data, l.pos+1); i < len(data) && data[i] == '"' {
					sp = span{start: l.pos + 1, end: i, dlen: i - l.pos - 1}
					l.pos = i + 1
				} else {
					sp, de = l.str()
				}
				if de == nil && sp.dlen > spec.limit {
					return false, newErr(spec.name, ClassTooLarge, rValueTooLarge, valPos)
				}
				if de == nil && sp.ctl && spec.id {
					return false, newErr(spec.name, ClassInvalidValue, rControlInID, valPos)
				}
				vals[f] = sp
				present |= bit
			case valueStart(c):
				r := rWantString
				if f == fBreakGlass {
					r = rWantBool
				}
				return false, newErr(spec.name, ClassWrongType, r, valPos)
			default:
				return false, newErr(spec.name, ClassSyntax, rUnexpectedChar, valPos)
			}
			if de != nil {
				de.Field = spec.name
				return false, de
			}
			l.ws()
			if l.pos >= len(data) {
				return false, newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
			}
			if data[l.pos] == ',' {
				l.pos++
				l.ws()
				continue
			}
			if data[l.pos] == '}' {
				l.pos++
				break
			}
			return false, newErr("", ClassSyntax, rUnexpectedChar, l.pos)
		}
	}
	l.ws()
	if l.pos != len(data) {
		return false, newErr("", ClassSyntax, rTrailingData, l.pos)
	}
	for f := range numEventFields {
		if eventFields[f].required && present&(1<<f) == 0 {
			return false, newErr(eventFields[f].name, ClassMissingField, rRequired, -1)
		}
	}

	// Built in place (every field is assigned): on an error below, the
	// callers zero *ev.
	out := ev
	out.LoggedTime = nil
	out.BreakGlass = breakGlass

	// Enumerations map to constants: no allocation.
	var de *DecodeError
	if out.Action, de = canonAction(data, vals[fAction]); de != nil {
		return false, de
	}
	out.Outcome = OutcomeSuccess
	if present&(1<<fOutcome) != 0 {
		if out.Outcome, de = canonOutcome(data, vals[fOutcome]); de != nil {
			return false, de
		}
	}

	var r reason
	if out.EventTime, r = spanTime(data, vals[fEventTime]); r != rNone {
		return false, newErr("event_time", ClassInvalidTime, r, vals[fEventTime].start)
	}
	if present&(1<<fLoggedTime) != 0 {
		t, r := spanTime(data, vals[fLoggedTime])
		if r != rNone {
			return false, newErr("logged_time", ClassInvalidTime, r, vals[fLoggedTime].start)
		}
		if lt == nil {
			lt = new(time.Time)
		}
		*lt = t
		out.LoggedTime = lt
	}

	// Every other string goes into one allocation, or, from an owned
	// payload without escapes, points into it.
	strFields := [...]struct {
		f   eventField
		dst *string
	}{
		{fEventID, &out.EventID},
		{fSource, &out.Source},
		{fFacilityID, &out.FacilityID},
		{fUserID, &out.UserID},
		{fUserRole, &out.UserRole},
		{fUserDepartment, &out.UserDepartment},
		{fWorkstationID, &out.WorkstationID},
		{fClientIP, &out.ClientIP},
		{fPatientID, &out.PatientID},
		{fEncounterID, &out.EncounterID},
		{fResource, &out.Resource},
		{fBreakGlassReason, &out.BreakGlassReason},
	}
	total, esc := 0, false
	for _, sf := range strFields {
		total += vals[sf.f].dlen
		esc = esc || vals[sf.f].esc
	}
	if owned && !esc {
		for _, sf := range strFields {
			*sf.dst = ""
			if sp := vals[sf.f]; sp.dlen > 0 {
				*sf.dst = unsafe.String(&data[sp.start], sp.dlen)
			}
		}
	} else {
		var b strings.Builder
		b.Grow(total)
		var offs [len(strFields)]int
		for i, sf := range strFields {
			offs[i] = b.Len()
			sp := vals[sf.f]
			if sp.esc {
				writeUnescaped(&b, data[sp.start:sp.end])
			} else {
				b.Write(data[sp.start:sp.end])
			}
		}
		all := b.String()
		for i, sf := range strFields {
			*sf.dst = all[offs[i] : offs[i]+vals[sf.f].dlen]
		}
	}
	if de := out.validate(0); de != nil {
		return false, de
	}
	return false, nil
}

// writeUnescaped writes the decoded form of raw, a validated string of at
// most MaxReasonLen decoded bytes, to b without allocating.
func writeUnescaped(b *strings.Builder, raw []byte) {
	var tmp [MaxReasonLen]byte
	b.Write(appendUnescaped(tmp[:0], raw))
}

// spanTime parses the date-time string at sp.
func spanTime(data []byte, sp span) (time.Time, reason) {
	if sp.dlen > maxTimeLen {
		return time.Time{}, rTimeFormat
	}
	b := data[sp.start:sp.end]
	var buf [maxTimeLen]byte
	if sp.esc {
		b = appendUnescaped(buf[:0], b)
	}
	return parseTime(b)
}

func canonAction(data []byte, sp span) (Action, *DecodeError) {
	b := data[sp.start:sp.end]
	var buf [16]byte
	if sp.esc {
		b = appendUnescaped(buf[:0], b)
	}
	switch string(b) {
	case "view":
		return ActionView, nil
	case "create":
		return ActionCreate, nil
	case "update":
		return ActionUpdate, nil
	case "delete":
		return ActionDelete, nil
	case "print":
		return ActionPrint, nil
	case "export":
		return ActionExport, nil
	case "query":
		return ActionQuery, nil
	case "":
		return "", newErr("action", ClassMissingField, rEmpty, sp.start)
	}
	return "", newErr("action", ClassInvalidValue, rUnknownAction, sp.start)
}

func canonOutcome(data []byte, sp span) (Outcome, *DecodeError) {
	b := data[sp.start:sp.end]
	var buf [16]byte
	if sp.esc {
		b = appendUnescaped(buf[:0], b)
	}
	switch string(b) {
	case "success":
		return OutcomeSuccess, nil
	case "failure":
		return OutcomeFailure, nil
	}
	return "", newErr("outcome", ClassInvalidValue, rUnknownOutcome, sp.start)
}
