package schemas

import (
	"bytes"
	"encoding/binary"
	"unicode/utf16"
	"unicode/utf8"
)

// This file holds the JSON lexing primitives shared by the canonical
// decoder (decode.go) and the small JSON tree parser (jsondoc.go). They
// follow RFC 8259 strictly and, beyond it, reject invalid UTF-8 and unpaired
// surrogate escapes (as I-JSON, RFC 7493, does).

// strPlain[c] is true for bytes that stand for themselves inside a JSON
// string and need no further check: printable ASCII except '"', '\\' and
// DEL (which is valid JSON but noted as a control character).
var strPlain = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// SWAR constants: eight bytes at a time.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// plain8 reports whether all eight bytes of x are strPlain.
func plain8(x uint64) bool {
	ctl := (x - 0x20*ones) &^ x // some byte < 0x20 (or ≥ 0x80, caught below)
	q := x ^ '"'*ones           // zero byte where '"'
	bs := x ^ '\\'*ones         // zero byte where '\\'
	del := x ^ 0x7f*ones        // zero byte where DEL
	m := ctl | (q-ones)&^q | (bs-ones)&^bs | (del-ones)&^del | x
	return m&highs == 0
}

// span locates a string's contents (without quotes) in the input.
type span struct {
	start, end int  // raw bytes, escapes not yet decoded
	dlen       int  // length in bytes once unescaped
	esc        bool // contains escapes
	ctl        bool // decodes to a string with an ASCII control character (C0 or DEL)
}

// lexer is a cursor over one JSON text.
type lexer struct {
	data []byte
	pos  int
}

func (l *lexer) ws() {
	for l.pos < len(l.data) {
		switch l.data[l.pos] {
		case ' ', '\t', '\n', '\r':
			l.pos++
		default:
			return
		}
	}
}

// plainEnd returns the index of the first byte at or after i that is not
// strPlain; callers use it as an inlined fast path before str.
func plainEnd(data []byte, i int) int {
	for i < len(data) && strPlain[data[i]] {
		i++
	}
	return i
}

// str scans the string whose opening quote is at l.pos, validates it and
// leaves l.pos after the closing quote.
func (l *lexer) str() (span, *DecodeError) {
	data := l.data
	i := l.pos + 1
	start := i
	shrink := 0
	esc, ctl := false, false
	for {
		for i+8 <= len(data) && plain8(binary.LittleEndian.Uint64(data[i:])) {
			i += 8
		}
		for i < len(data) && strPlain[data[i]] {
			i++
		}
		if i >= len(data) {
			return span{}, newErr("", ClassSyntax, rUnexpectedEOF, i)
		}
		c := data[i]
		switch {
		case c == '"':
			l.pos = i + 1
			return span{start: start, end: i, dlen: i - start - shrink, esc: esc, ctl: ctl}, nil
		case c == '\\':
			esc = true
			if i+1 >= len(data) {
				return span{}, newErr("", ClassSyntax, rUnexpectedEOF, i)
			}
			switch data[i+1] {
			case '"', '\\', '/':
				i += 2
				shrink++
			case 'b', 'f', 'n', 'r', 't':
				i += 2
				shrink++
				ctl = true
			case 'u':
				r, ok := hex4(data, i+2)
				if !ok {
					return span{}, newErr("", ClassSyntax, rBadEscape, i)
				}
				switch {
				case r >= 0xD800 && r < 0xDC00:
					if i+12 <= len(data) && data[i+6] == '\\' && data[i+7] == 'u' {
						if r2, ok := hex4(data, i+8); ok && r2 >= 0xDC00 && r2 < 0xE000 {
							i += 12
							shrink += 12 - 4
							continue
						}
					}
					return span{}, newErr("", ClassInvalidUTF8, rLoneSurrogate, i)
				case r >= 0xDC00 && r < 0xE000:
					return span{}, newErr("", ClassInvalidUTF8, rLoneSurrogate, i)
				}
				i += 6
				shrink += 6 - utf8.RuneLen(r)
				ctl = ctl || r < 0x20 || r == 0x7f
			default:
				return span{}, newErr("", ClassSyntax, rBadEscape, i)
			}
		case c < 0x20:
			return span{}, newErr("", ClassSyntax, rControlChar, i)
		case c == 0x7f:
			ctl = true
			i++
		default: // c >= 0x80
			r, size := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && size == 1 {
				return span{}, newErr("", ClassInvalidUTF8, rBadUTF8, i)
			}
			i += size
		}
	}
}

// hex4 decodes the four hex digits at data[i:i+4].
func hex4(data []byte, i int) (rune, bool) {
	if i < 0 || i+4 > len(data) {
		return 0, false
	}
	var r rune
	for _, c := range data[i : i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
}

// appendUnescaped appends the decoded form of raw, the contents of a string
// that str has validated, to dst.
func appendUnescaped(dst, raw []byte) []byte {
	for {
		i := bytes.IndexByte(raw, '\\')
		if i < 0 || i+1 >= len(raw) {
			return append(dst, raw...)
		}
		dst = append(dst, raw[:i]...)
		raw = raw[i:]
		switch raw[1] {
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(raw, 2)
			if !ok {
				return append(dst, raw...) // unreachable on validated input
			}
			if utf16.IsSurrogate(r) {
				r2, ok := hex4(raw, 8)
				if !ok {
					return append(dst, raw...) // unreachable on validated input
				}
				dst = utf8.AppendRune(dst, utf16.DecodeRune(r, r2))
				raw = raw[12:]
				continue
			}
			dst = utf8.AppendRune(dst, r)
			raw = raw[6:]
			continue
		default: // '"', '\\', '/'
			dst = append(dst, raw[1])
		}
		raw = raw[2:]
	}
}

// lit checks that the literal word (true, false, null) is at l.pos and
// moves past it.
func (l *lexer) lit(word string) *DecodeError {
	end := l.pos + len(word)
	if end > len(l.data) || string(l.data[l.pos:end]) != word {
		return newErr("", ClassSyntax, rBadLiteral, l.pos)
	}
	l.pos = end
	return nil
}

// num validates the number at l.pos (RFC 8259 grammar) and moves past it.
func (l *lexer) num() *DecodeError {
	data := l.data
	i := l.pos
	bad := func() *DecodeError { return newErr("", ClassSyntax, rBadNumber, l.pos) }
	if i < len(data) && data[i] == '-' {
		i++
	}
	switch {
	case i >= len(data):
		return bad()
	case data[i] == '0':
		i++
	case data[i] >= '1' && data[i] <= '9':
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
	default:
		return bad()
	}
	if i < len(data) && data[i] == '.' {
		i++
		j := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i == j {
			return bad()
		}
	}
	if i < len(data) && (data[i] == 'e' || data[i] == 'E') {
		i++
		if i < len(data) && (data[i] == '+' || data[i] == '-') {
			i++
		}
		j := i
		for i < len(data) && data[i] >= '0' && data[i] <= '9' {
			i++
		}
		if i == j {
			return bad()
		}
	}
	l.pos = i
	return nil
}

// valueStart reports whether c can begin a JSON value; used to tell a wrong
// type from a syntax error.
func valueStart(c byte) bool {
	switch c {
	case '{', '[', '"', 't', 'f', 'n', '-', '0', '1', '2', '3', '4', '5', '6', '7', '8', '9':
		return true
	}
	return false
}
