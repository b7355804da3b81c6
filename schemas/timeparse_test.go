package schemas

import (
	"strings"
	"testing"
	"time"
)

func TestParseTime(t *testing.T) {
	ok := []struct {
		in     string
		want   time.Time
		offset int
	}{
		{"2026-03-01T08:15:00Z", time.Date(2026, 3, 1, 8, 15, 0, 0, time.UTC), 0},
		{"2026-03-01T08:15:00+00:00", time.Date(2026, 3, 1, 8, 15, 0, 0, time.UTC), 0},
		{"2026-03-01T08:15:00-00:00", time.Date(2026, 3, 1, 8, 15, 0, 0, time.UTC), 0},
		{"2026-03-01T08:15:00.5+01:00", time.Date(2026, 3, 1, 7, 15, 0, 5e8, time.UTC), 3600},
		{"2026-03-01T08:15:00.123456789-09:30", time.Date(2026, 3, 1, 17, 45, 0, 123456789, time.UTC), -9*3600 - 1800},
		{"2024-02-29T23:59:59+23:59", time.Date(2024, 2, 29, 0, 0, 59, 0, time.UTC), 23*3600 + 59*60},
		{"0001-01-01T00:00:00Z", time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC), 0},
	}
	for _, c := range ok {
		got, err := ParseTime(c.in)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if _, off := got.Zone(); !got.Equal(c.want) || off != c.offset {
			t.Errorf("%s: got %v (offset %d), want %v (offset %d)", c.in, got, off, c.want, c.offset)
		}
		// time.Parse agrees on the instant.
		std, err := time.Parse(time.RFC3339Nano, c.in)
		if err != nil || !std.Equal(got) {
			t.Errorf("%s: time.Parse says %v, %v", c.in, std, err)
		}
	}
	bad := map[string]reason{
		"":                                  rTimeFormat,
		"2026-03-01":                        rTimeFormat,
		"2026-03-01T08:15":                  rTimeFormat,
		"2026-03-01T08:15:00":               rTimeNoOffset,
		"2026-03-01T08:15:00.123":           rTimeNoOffset,
		"2026-03-01t08:15:00Z":              rTimeFormat,
		"2026-03-01T08:15:00z":              rTimeFormat,
		"2026-03-01 08:15:00Z":              rTimeFormat,
		"2026-03-01T08:15:00.Z":             rTimeFormat,
		"2026-03-01T08:15:00.1234567890Z":   rTimeFormat,
		"2026-03-01T08:15:00+01":            rTimeFormat,
		"2026-03-01T08:15:00+0100":          rTimeFormat,
		"2026-03-01T08:15:00+01:00:00":      rTimeFormat,
		"2026-03-01T08:15:00+24:00":         rTimeFormat,
		"2026-03-01T08:15:00+01:60":         rTimeFormat,
		"2026-03-01T08:15:00ZZ":             rTimeFormat,
		"2026-03-01T24:00:00Z":              rTimeFormat,
		"2026-03-01T08:60:00Z":              rTimeFormat,
		"2026-03-01T08:15:60Z":              rTimeFormat,
		"2026-02-29T08:15:00Z":              rTimeFormat,
		"2100-02-29T08:15:00Z":              rTimeFormat,
		"2026-04-31T08:15:00Z":              rTimeFormat,
		"2026-00-01T08:15:00Z":              rTimeFormat,
		"2026-01-00T08:15:00Z":              rTimeFormat,
		"+2026-03-01T08:15:00Z":             rTimeFormat,
		"2026-03-01T08:15:00 Z":             rTimeFormat,
		"２０26-03-01T08:15:00Z":              rTimeFormat,
		"2026-03-01T08:15:00Z" + "\x00":     rTimeFormat,
		strings.Repeat("2", maxTimeLen+1):   rTimeFormat,
		"2026-03-01T08:15:00.-1Z":           rTimeFormat,
		"2026-03-01T08:15:00+-1:00":         rTimeFormat,
		"1767268800":                        rTimeFormat,
		"Sun, 01 Mar 2026 08:15:00 +0000":   rTimeFormat,
		"2026-03-01T08:15:00.000000000000Z": rTimeFormat,
	}
	for in, r := range bad {
		_, err := ParseTime(in)
		assertDecodeError(t, err, "", ClassInvalidTime)
		if err.(*DecodeError).Detail != reasonText[r] {
			t.Errorf("%q: detail %q, want %q", in, err.(*DecodeError).Detail, reasonText[r])
		}
	}
}

func TestParseTimeSharesLocations(t *testing.T) {
	a, _ := ParseTime("2026-03-01T08:15:00+05:30")
	b, _ := ParseTime("2027-01-01T00:00:00+05:30")
	if a.Location() != b.Location() {
		t.Fatal("same offset, different *time.Location")
	}
	c, _ := ParseTime("2026-03-01T08:15:00-05:30")
	if a.Location() == c.Location() {
		t.Fatal("opposite offsets share a Location")
	}
	if n := testing.AllocsPerRun(100, func() { _, _ = parseTime([]byte("2026-03-01T08:15:00.5+05:30")) }); n != 0 {
		t.Fatalf("parseTime allocates %v times", n)
	}
}

func TestInTimeRange(t *testing.T) {
	for tm, want := range map[time.Time]bool{
		time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC):                       true,
		time.Date(1899, 12, 31, 23, 59, 59, 999999999, time.UTC):          false,
		time.Date(2299, 12, 31, 23, 59, 59, 999999999, time.UTC):          true,
		time.Date(2300, 1, 1, 0, 0, 0, 0, time.UTC):                       false,
		time.Date(2299, 12, 31, 20, 0, 0, 0, time.FixedZone("", -5*3600)): false,
		time.Date(1900, 1, 1, 0, 30, 0, 0, time.FixedZone("", 3600)):      false,
	} {
		if InTimeRange(tm) != want {
			t.Errorf("InTimeRange(%v) != %v", tm, want)
		}
	}
}
