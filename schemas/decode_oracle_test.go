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
			if i := plainEndOracle(data, l.pos+1); i < len(data) && data[i] == '"' {
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
				if i := plainEndOracle(data, l.pos+1); i < len(data) && data[i] == '"' {
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
	if out.EventTime, r = spanTimeOracle(data, vals[fEventTime]); r != rNone {
		return false, newErr("event_time", ClassInvalidTime, r, vals[fEventTime].start)
	}
	if present&(1<<fLoggedTime) != 0 {
		t, r := spanTimeOracle(data, vals[fLoggedTime])
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

func spanTimeOracle(data []byte, sp span) (time.Time, reason) {
	if sp.dlen > maxTimeLen {
		return time.Time{}, rTimeFormat
	}
	b := data[sp.start:sp.end]
	var buf [maxTimeLen]byte
	if sp.esc {
		b = appendUnescaped(buf[:0], b)
	}
	return parseTimeOracle(b)
}

func parseTimeOracle(b []byte) (time.Time, reason) {
	// YYYY-MM-DDThh:mm:ss is 19 bytes; the shortest valid form adds "Z".
	if len(b) < 19 || b[4] != '-' || b[7] != '-' || b[10] != 'T' || b[13] != ':' || b[16] != ':' {
		return time.Time{}, rTimeFormat
	}
	year, ok1 := digits(b[0:4])
	month, ok2 := digits(b[5:7])
	day, ok3 := digits(b[8:10])
	hour, ok4 := digits(b[11:13])
	minute, ok5 := digits(b[14:16])
	sec, ok6 := digits(b[17:19])
	if !(ok1 && ok2 && ok3 && ok4 && ok5 && ok6) ||
		month < 1 || month > 12 || day < 1 || day > daysIn(month, year) ||
		hour > 23 || minute > 59 || sec > 59 {
		return time.Time{}, rTimeFormat
	}
	i := 19
	nsec := 0
	if i < len(b) && b[i] == '.' {
		i++
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			if n == 9 {
				return time.Time{}, rTimeFormat
			}
			nsec = nsec*10 + int(b[i]-'0')
			n++
			i++
		}
		if n == 0 {
			return time.Time{}, rTimeFormat
		}
		for k := n; k < 9; k++ {
			nsec *= 10
		}
	}
	if i == len(b) {
		return time.Time{}, rTimeNoOffset
	}
	var loc *time.Location
	switch b[i] {
	case 'Z':
		if i+1 != len(b) {
			return time.Time{}, rTimeFormat
		}
		loc = time.UTC
	case '+', '-':
		if len(b)-i != 6 || b[i+3] != ':' {
			return time.Time{}, rTimeFormat
		}
		oh, okh := digits(b[i+1 : i+3])
		om, okm := digits(b[i+4 : i+6])
		if !okh || !okm || oh > 23 || om > 59 {
			return time.Time{}, rTimeFormat
		}
		off := oh*60 + om
		if b[i] == '-' {
			off = -off
		}
		loc = fixedZone(off)
	default:
		return time.Time{}, rTimeFormat
	}
	return time.Date(year, time.Month(month), day, hour, minute, sec, nsec, loc), rNone
}

func plainEndOracle(data []byte, i int) int {
	for i < len(data) && strPlain[data[i]] {
		i++
	}
	return i
}

// writeUnescaped (the old decoder's) writes the decoded form of raw, a validated string of at
// most MaxReasonLen decoded bytes, to b without allocating.
func writeUnescaped(b *strings.Builder, raw []byte) {
	var tmp [MaxReasonLen]byte
	b.Write(appendUnescaped(tmp[:0], raw))
}
