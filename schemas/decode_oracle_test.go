package schemas

// This file keeps the canonical decoder as it was before the throughput
// work (docs/benchmarks.md §2), verbatim but for the names, as the oracle
// of the differential tests in decode_diff_test.go: the decoder in
// decode.go must accept exactly what this one accepts, produce the same
// AccessEvent, and refuse the rest with the same error class and field.
// It is test code only; nothing outside the tests calls it.

import (
	"strings"
	"time"
)

// decodeEventOracle is decodeEvent with the old canonical decoder (FHIR
// input goes to the shared FHIR decoder, as before).
func decodeEventOracle(data []byte, ev *AccessEvent, lt *time.Time, opts *fhirOpts) (Format, error) {
	if len(data) > MaxFHIRMessageSize {
		*ev = AccessEvent{}
		return FormatUnknown, newErr("", ClassTooLarge, rMessageTooLarge, -1)
	}
	format := FormatCanonical
	maybeFHIR, de := decodeCanonicalOracle(data, ev, lt, true)
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

func decodeCanonicalOracle(data []byte, ev *AccessEvent, lt *time.Time, detectFHIR bool) (maybeFHIR bool, _ *DecodeError) {
	l := lexer{data: data}
	var (
		vals       [numEventFields]span
		seen       uint32 // keys met, null included
		present    uint32 // keys with a non-null value
		breakGlass bool
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
			// Inline fast path for the usual plain key; str does the rest.
			var ks span
			var de *DecodeError
			if i := plainEnd(data, l.pos+1); i < len(data) && data[i] == '"' {
				ks = span{start: l.pos + 1, end: i, dlen: i - l.pos - 1}
				l.pos = i + 1
			} else if ks, de = l.str(); de != nil {
				return false, de
			}
			key := data[ks.start:ks.end]
			var kbuf [32]byte
			if ks.esc {
				if ks.dlen <= len(kbuf) {
					key = appendUnescaped(kbuf[:0], key)
				} else {
					key = nil
				}
			}
			f := lookupEventField(key)
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

	var out AccessEvent
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

	// Every other string goes into one allocation.
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
	total := 0
	for _, sf := range strFields {
		total += vals[sf.f].dlen
	}
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

	if de := out.validate(0); de != nil {
		return false, de
	}
	*ev = out
	return false, nil
}
