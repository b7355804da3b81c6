package schemas

import (
	"sync/atomic"
	"time"
)

// Supported instants: ClickHouse DateTime64 stores 1900-01-01 through
// 2299-12-31, so an event outside that range is rejected at decode time
// instead of failing a whole insert batch later.
var (
	minTime = time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC)
	maxTime = time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC) // exclusive
)

// ParseTime parses an RFC 3339 date-time that carries an explicit UTC
// offset: "2026-03-01T08:15:00Z", "2026-03-01T08:15:00.123+01:00". The
// fraction has 1–9 digits. Lower-case 't'/'z' (which RFC 3339 permits but
// Go's time.Parse does not), a space instead of 'T', a missing offset, a
// leap second "60", or a partial date are rejected.
//
// The result keeps the original offset (its Location is a fixed zone with
// that offset; "Z", "+00:00" and "-00:00" give UTC), so two parses of the
// same offset share one *time.Location. Storage converts to UTC.
//
// Errors are *DecodeError with class ClassInvalidTime and no Field; they
// never contain the input.
func ParseTime(s string) (time.Time, error) {
	if len(s) > maxTimeLen {
		return time.Time{}, newErr("", ClassInvalidTime, rTimeFormat, -1)
	}
	var buf [maxTimeLen]byte
	t, r := parseTime(append(buf[:0], s...))
	if r != rNone {
		return time.Time{}, newErr("", ClassInvalidTime, r, -1)
	}
	return t, nil
}

// InTimeRange reports whether t is inside the range storage supports
// (1900-01-01T00:00:00Z inclusive to 2300-01-01T00:00:00Z exclusive).
func InTimeRange(t time.Time) bool {
	return !t.Before(minTime) && t.Before(maxTime)
}

// parseTime is ParseTime on bytes, without allocating. It reports why the
// input was rejected as rTimeFormat or rTimeNoOffset.
func parseTime(b []byte) (time.Time, reason) {
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

// digits parses a short run of ASCII digits.
func digits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

func daysIn(month, year int) int {
	switch month {
	case 2:
		if year%4 == 0 && (year%100 != 0 || year%400 == 0) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// zones caches one fixed-offset Location per offset minute (-23:59..+23:59)
// so parsing does not allocate a Location per event and equal offsets share
// a pointer.
var zones [2*24*60 - 1]atomic.Pointer[time.Location]

func fixedZone(offMinutes int) *time.Location {
	if offMinutes == 0 {
		return time.UTC
	}
	slot := &zones[offMinutes+24*60-1]
	if loc := slot.Load(); loc != nil {
		return loc
	}
	slot.CompareAndSwap(nil, time.FixedZone("", offMinutes*60))
	return slot.Load()
}
