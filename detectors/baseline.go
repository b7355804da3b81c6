package detectors

// Shared helpers for the stateful, time-windowed detectors (volume,
// bulk_export, off_hours): local-calendar arithmetic that is correct across
// DST changes, robust statistics (median, MAD), a bounded distinct-patient
// counter, a packed event-id sample, and the small binary codec their
// snapshots use.
//
// Everything here is deterministic: no wall clock, no map iteration, no
// per-process hash seeds.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"time"

	"github.com/ehrwatch/ehrwatch/schemas"
)

// ---------------------------------------------------------------------------
// Local calendar

// civilDay is a local calendar date as a day number (days since 1970-01-01 in
// the proleptic Gregorian calendar). It does not depend on any zone or DST
// rule, so "the N days before day d" is plain integer arithmetic.
type civilDay int32

// civilDayOf returns the calendar date t shows in its own location; call it
// with t.In(loc).
func civilDayOf(t time.Time) civilDay {
	y, m, d := t.Date()
	return civilDayFromDate(y, m, d)
}

func civilDayFromDate(y int, m time.Month, d int) civilDay {
	return civilDay(time.Date(y, m, d, 0, 0, 0, 0, time.UTC).Unix() / 86400)
}

// date returns the year, month and day of d.
func (d civilDay) date() (int, time.Month, int) {
	return time.Unix(int64(d)*86400, 0).UTC().Date()
}

// String formats d as YYYY-MM-DD.
func (d civilDay) String() string {
	return time.Unix(int64(d)*86400, 0).UTC().Format(time.DateOnly)
}

// parseCivilDay parses YYYY-MM-DD.
func parseCivilDay(s string) (civilDay, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return 0, err
	}
	return civilDayOf(t), nil
}

// localDayStart returns the first instant whose local date in loc is d.
// Usually that is 00:00; on days where a DST change skips local midnight
// (America/Havana, America/Santiago, …) time.Date would return an instant
// on the previous day, so the start is moved to the transition instead.
func localDayStart(d civilDay, loc *time.Location) time.Time {
	y, m, dd := d.date()
	t := time.Date(y, m, dd, 0, 0, 0, 0, loc)
	if civilDayOf(t.In(loc)) < d {
		if _, end := t.ZoneBounds(); !end.IsZero() && civilDayOf(end.In(loc)) == d {
			t = end
		}
	}
	return t
}

// localDayBounds returns the half-open interval [start, end) of local date d
// in loc. It is 24 hours long except on DST change days (23 or 25 hours in
// most zones).
func localDayBounds(d civilDay, loc *time.Location) (start, end time.Time) {
	return localDayStart(d, loc), localDayStart(d+1, loc)
}

// localHourStart returns the start of the local clock hour containing t
// (t must already be in its location). Subtracting the minutes and seconds
// rather than truncating UTC keeps half-hour zones right, and the two
// 01:00–02:00 hours of a fall-back night stay distinct instants.
func localHourStart(t time.Time) time.Time {
	_, mi, s := t.Clock()
	return t.Add(-time.Duration(mi)*time.Minute - time.Duration(s)*time.Second - time.Duration(t.Nanosecond()))
}

// locationCache memoizes Env.Location per facility; locations are treated as
// static for the life of a detector.
type locationCache struct {
	fn   func(string) *time.Location
	locs map[string]*time.Location
}

func newLocationCache(fn func(string) *time.Location) locationCache {
	return locationCache{fn: fn, locs: make(map[string]*time.Location)}
}

func (c *locationCache) get(facility string) *time.Location {
	if loc, ok := c.locs[facility]; ok {
		return loc
	}
	var loc *time.Location
	if c.fn != nil {
		loc = c.fn(facility)
	}
	if loc == nil {
		loc = time.UTC
	}
	c.locs[facility] = loc
	return loc
}

// maxNanoTime is the last instant time.Time.UnixNano can represent (2262).
var maxNanoTime = time.Unix(0, math.MaxInt64)

// eventNanos converts t to Unix nanoseconds clamped to [0, MaxInt64], so
// that event-time arithmetic never overflows: the Engine's Flush passes a
// year-9999 watermark, and a garbage event time may be anything.
func eventNanos(t time.Time) int64 {
	if t.After(maxNanoTime) {
		return math.MaxInt64
	}
	if n := t.UnixNano(); n > 0 {
		return n
	}
	return 0
}

// ---------------------------------------------------------------------------
// Robust statistics

// madToSigma scales a median absolute deviation to a standard-deviation
// estimate for normally distributed data.
const madToSigma = 1.4826

// medianSorted returns the median of an ascending slice (0 when empty).
func medianSorted(xs []float64) float64 {
	n := len(xs)
	switch {
	case n == 0:
		return 0
	case n%2 == 1:
		return xs[n/2]
	default:
		return (xs[n/2-1] + xs[n/2]) / 2
	}
}

// medianMAD sorts xs in place and returns its median and median absolute
// deviation; scratch (reused, may be nil) holds the deviations.
func medianMAD(xs, scratch []float64) (med, mad float64, _ []float64) {
	if len(xs) == 0 {
		return 0, 0, scratch
	}
	slices.Sort(xs)
	med = medianSorted(xs)
	scratch = scratch[:0]
	for _, x := range xs {
		scratch = append(scratch, math.Abs(x-med))
	}
	slices.Sort(scratch)
	return med, medianSorted(scratch), scratch
}

// medianWithout returns the median of the ascending slice xs with one
// occurrence of v removed (v must be in xs), without copying.
func medianWithout(xs []float64, v float64) float64 {
	n := len(xs) - 1
	if n <= 0 {
		return 0
	}
	skip, _ := slices.BinarySearch(xs, v)
	at := func(i int) float64 {
		if i >= skip {
			return xs[i+1]
		}
		return xs[i]
	}
	if n%2 == 1 {
		return at(n / 2)
	}
	return (at(n/2-1) + at(n/2)) / 2
}

// ---------------------------------------------------------------------------
// Hashing

// hashID is a fixed, seedless 64-bit hash (FNV-1a followed by the splitmix64
// finalizer) so snapshots and results do not depend on the process.
func hashID(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		h ^= uint64(s[i])
		h *= 1099511628211
	}
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	return h
}

// ---------------------------------------------------------------------------
// Bounded distinct counter

const (
	// distinctExactMax is how many distinct 32-bit hashes patientSet keeps
	// exactly; past it the same 64 words become a 2048-bit linear-counting
	// bitmap, so the counter never exceeds 256 bytes.
	distinctExactMax = 64
	distinctBits     = distinctExactMax * 32
)

// patientSet counts distinct patients per window. Up to 64 patients it is
// exact (barring a 32-bit hash collision, p ≈ 5·10⁻⁷ at 64 entries). Beyond
// that it is a linear-counting sketch over 2048 bits: standard error is about
// 1.6 % at 200 patients and 2 % at 2 000, and it saturates (reports a lower
// bound) near 15 000 distinct patients in one day.
type patientSet struct {
	words  []uint32 // exact: the hashes; sketch: the bitmap (64 words)
	sketch bool
}

func (p *patientSet) add(h uint64) {
	v := uint32(h >> 32)
	if p.sketch {
		p.words[(v%distinctBits)/32] |= 1 << (v % 32)
		return
	}
	for _, w := range p.words {
		if w == v {
			return
		}
	}
	if len(p.words) < distinctExactMax {
		if p.words == nil {
			p.words = make([]uint32, 0, 8)
		}
		p.words = append(p.words, v)
		return
	}
	var bm [distinctExactMax]uint32
	for _, w := range p.words {
		bm[(w%distinctBits)/32] |= 1 << (w % 32)
	}
	bm[(v%distinctBits)/32] |= 1 << (v % 32)
	p.words = append(p.words[:0], bm[:]...)
	p.sketch = true
}

// count returns the (estimated) number of distinct patients.
func (p *patientSet) count() uint32 {
	if !p.sketch {
		return uint32(len(p.words))
	}
	set := 0
	for _, w := range p.words {
		for ; w != 0; w &= w - 1 {
			set++
		}
	}
	zero := distinctBits - set
	if zero == 0 {
		zero = 1 // saturated: report the largest estimate we can make
	}
	est := float64(distinctBits) * math.Log(float64(distinctBits)/float64(zero))
	n := uint32(math.Round(est))
	if n < distinctExactMax+1 {
		n = distinctExactMax + 1 // never below what exact mode already saw
	}
	return n
}

// ---------------------------------------------------------------------------
// Event-id sample

// idSample keeps the first few event ids of a window packed in one byte
// slice (uvarint length + bytes), which costs a fraction of a []string.
type idSample struct {
	buf []byte
	n   uint8
}

func (s *idSample) add(id string, limit int) {
	if int(s.n) >= limit || id == "" {
		return
	}
	s.buf = binary.AppendUvarint(s.buf, uint64(len(id)))
	s.buf = append(s.buf, id...)
	s.n++
}

// strings returns the sampled ids in arrival order (never nil).
func (s *idSample) strings() []string {
	out := make([]string, 0, s.n)
	b := s.buf
	for len(b) > 0 {
		l, k := binary.Uvarint(b)
		if k <= 0 || uint64(len(b)-k) < l {
			break
		}
		out = append(out, string(b[k:k+int(l)]))
		b = b[k+int(l):]
	}
	return out
}

// ---------------------------------------------------------------------------
// Snapshot codec

// snapMagic starts every snapshot written by these detectors.
const snapMagic = "EHRWSNAP"

// maxSnapString bounds strings and byte slices read from a snapshot so a
// corrupt snapshot cannot make Restore allocate without limit.
const maxSnapString = 1 << 20

// snapWriter writes varint-encoded values and remembers the first error.
type snapWriter struct {
	w   *bufio.Writer
	err error
	tmp [binary.MaxVarintLen64]byte
}

func newSnapWriter(w io.Writer, detector string, version uint64) *snapWriter {
	sw := &snapWriter{w: bufio.NewWriter(w)}
	sw.raw([]byte(snapMagic))
	sw.str(detector)
	sw.uvarint(version)
	return sw
}

func (s *snapWriter) raw(b []byte) {
	if s.err == nil {
		_, s.err = s.w.Write(b)
	}
}

func (s *snapWriter) uvarint(v uint64) { s.raw(binary.AppendUvarint(s.tmp[:0], v)) }
func (s *snapWriter) varint(v int64)   { s.raw(binary.AppendVarint(s.tmp[:0], v)) }
func (s *snapWriter) bytes(b []byte)   { s.uvarint(uint64(len(b))); s.raw(b) }
func (s *snapWriter) str(v string)     { s.uvarint(uint64(len(v))); s.raw([]byte(v)) }

func (s *snapWriter) boolean(b bool) {
	if b {
		s.uvarint(1)
	} else {
		s.uvarint(0)
	}
}

func (s *snapWriter) finish() error {
	if s.err == nil {
		s.err = s.w.Flush()
	}
	return s.err
}

// snapReader mirrors snapWriter; after the first error every read returns a
// zero value and err keeps that first error.
type snapReader struct {
	r   *bufio.Reader
	err error
}

// newSnapReader checks the header and returns the snapshot's version.
func newSnapReader(r io.Reader, detector string) (*snapReader, uint64) {
	sr := &snapReader{r: bufio.NewReader(r)}
	magic := make([]byte, len(snapMagic))
	if _, err := io.ReadFull(sr.r, magic); err != nil || string(magic) != snapMagic {
		sr.fail(errors.New("not a detector snapshot"))
		return sr, 0
	}
	if name := sr.str(); sr.err == nil && name != detector {
		sr.fail(fmt.Errorf("snapshot is for detector %q, not %q", name, detector))
	}
	return sr, sr.uvarint()
}

func (s *snapReader) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

func (s *snapReader) uvarint() uint64 {
	if s.err != nil {
		return 0
	}
	v, err := binary.ReadUvarint(s.r)
	if err != nil {
		s.fail(fmt.Errorf("truncated snapshot: %w", err))
	}
	return v
}

func (s *snapReader) varint() int64 {
	if s.err != nil {
		return 0
	}
	v, err := binary.ReadVarint(s.r)
	if err != nil {
		s.fail(fmt.Errorf("truncated snapshot: %w", err))
	}
	return v
}

// count reads a length and checks it against limit.
func (s *snapReader) count(limit uint64) int {
	n := s.uvarint()
	if n > limit {
		s.fail(fmt.Errorf("corrupt snapshot: count %d exceeds %d", n, limit))
		return 0
	}
	return int(n)
}

func (s *snapReader) bytes() []byte {
	n := s.count(maxSnapString)
	if s.err != nil || n == 0 {
		return nil
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(s.r, b); err != nil {
		s.fail(fmt.Errorf("truncated snapshot: %w", err))
		return nil
	}
	return b
}

func (s *snapReader) str() string { return string(s.bytes()) }

func (s *snapReader) boolean() bool { return s.uvarint() != 0 }

// end checks that the whole snapshot was consumed.
func (s *snapReader) end() error {
	if s.err != nil {
		return s.err
	}
	if _, err := s.r.ReadByte(); err != io.EOF {
		return errors.New("corrupt snapshot: trailing data")
	}
	return nil
}

// patientSet writes p; snapReader.patientSet reads it back.
func (s *snapWriter) patientSet(p *patientSet) {
	s.boolean(p.sketch)
	s.uvarint(uint64(len(p.words)))
	for _, w := range p.words {
		s.uvarint(uint64(w))
	}
}

func (s *snapReader) patientSet() patientSet {
	var p patientSet
	p.sketch = s.boolean()
	n := s.count(distinctExactMax)
	if p.sketch && n != distinctExactMax && s.err == nil {
		s.fail(errors.New("corrupt snapshot: sketch of wrong size"))
	}
	if n > 0 {
		p.words = make([]uint32, n, max(n, 8))
		for i := range p.words {
			p.words[i] = uint32(s.uvarint())
		}
	}
	return p
}

// ---------------------------------------------------------------------------
// Formatting

// fmtNum formats a non-negative statistic compactly: integers without a
// decimal point, others with one decimal.
func fmtNum(v float64) string {
	if v == math.Trunc(v) && math.Abs(v) < 1e15 {
		return strconv.FormatInt(int64(v), 10)
	}
	return strconv.FormatFloat(v, 'f', 1, 64)
}

// sevMax returns the more severe of a and b.
func sevMax(a, b schemas.Severity) schemas.Severity {
	if b.Rank() > a.Rank() {
		return b
	}
	return a
}
