package schemas

import "sync"

// This file holds a small JSON tree parser for nested documents (FHIR
// resources, reference-data lines). It validates the whole text (syntax,
// UTF-8, depth, value count) and records each value as a node that points
// into the input, so nothing is copied until a caller asks for a string.
// Duplicate member names are detected when a caller looks a name up (see
// member), which covers every member a decoder reads.

type jkind uint8

const (
	jNull jkind = iota
	jFalse
	jTrue
	jNumber
	jString
	jObject
	jArray
)

// jnode is one JSON value. Children of a container follow it in pre-order;
// the first child (if count > 0) is the next node, and each child links to
// its next sibling.
type jnode struct {
	start, end   int32 // strings: contents without quotes; others: the token; containers: opening bracket
	kstart, kend int32 // object members: the key's contents
	next         int32 // next sibling, 0 if none (node 0 is the root and never a sibling)
	count        int32 // containers: number of children
	dlen         int32 // strings: length once unescaped
	kind         jkind
	esc, kesc    bool // value / key contain escapes
}

// jdoc is a parsed JSON text.
type jdoc struct {
	data    []byte
	nodes   []jnode
	scratch []byte // unescaped strings handed out by text
}

var docPool = sync.Pool{New: func() any { return &jdoc{nodes: make([]jnode, 0, 256), scratch: make([]byte, 0, 1024)} }}

func getDoc() *jdoc { return docPool.Get().(*jdoc) }

func putDoc(d *jdoc) {
	if cap(d.nodes) > 4096 || cap(d.scratch) > 64<<10 {
		return // let the GC have an unusually large one
	}
	d.data = nil
	d.nodes = d.nodes[:0]
	d.scratch = d.scratch[:0]
	docPool.Put(d)
}

// parse parses data as exactly one JSON value.
func (d *jdoc) parse(data []byte) *DecodeError {
	d.data = data
	d.nodes = d.nodes[:0]
	d.scratch = d.scratch[:0]
	l := lexer{data: data}
	l.ws()
	if l.pos >= len(data) {
		return newErr("", ClassSyntax, rEmptyInput, l.pos)
	}
	if de := d.value(&l, 0); de != nil {
		return de
	}
	l.ws()
	if l.pos != len(data) {
		return newErr("", ClassSyntax, rTrailingData, l.pos)
	}
	return nil
}

// value parses the value at l.pos (which is not white space) as node
// len(d.nodes).
func (d *jdoc) value(l *lexer, depth int) *DecodeError {
	if len(d.nodes) >= MaxJSONValues {
		return newErr("", ClassTooLarge, rTooManyValues, l.pos)
	}
	idx := len(d.nodes)
	d.nodes = append(d.nodes, jnode{start: int32(l.pos)})
	data := l.data
	switch c := data[l.pos]; c {
	case '{', '[':
		if depth >= MaxJSONDepth {
			return newErr("", ClassTooDeep, rTooDeep, l.pos)
		}
		obj := c == '{'
		closer := byte(']')
		d.nodes[idx].kind = jArray
		if obj {
			closer = '}'
			d.nodes[idx].kind = jObject
		}
		l.pos++
		l.ws()
		if l.pos < len(data) && data[l.pos] == closer {
			l.pos++
			return nil
		}
		prev := -1
		count := int32(0)
		for {
			if l.pos >= len(data) {
				return newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
			}
			var ks span
			if obj {
				if data[l.pos] != '"' {
					return newErr("", ClassSyntax, rUnexpectedChar, l.pos)
				}
				if i := plainEnd(data, l.pos+1); i < len(data) && data[i] == '"' {
					ks = span{start: l.pos + 1, end: i, dlen: i - l.pos - 1}
					l.pos = i + 1
				} else {
					var de *DecodeError
					if ks, de = l.str(); de != nil {
						return de
					}
				}
				l.ws()
				if l.pos >= len(data) {
					return newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
				}
				if data[l.pos] != ':' {
					return newErr("", ClassSyntax, rUnexpectedChar, l.pos)
				}
				l.pos++
				l.ws()
				if l.pos >= len(data) {
					return newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
				}
			}
			child := len(d.nodes)
			if de := d.value(l, depth+1); de != nil {
				return de
			}
			if obj {
				n := &d.nodes[child]
				n.kstart, n.kend, n.kesc = int32(ks.start), int32(ks.end), ks.esc
			}
			if prev >= 0 {
				d.nodes[prev].next = int32(child)
			}
			prev = child
			count++
			l.ws()
			if l.pos >= len(data) {
				return newErr("", ClassSyntax, rUnexpectedEOF, l.pos)
			}
			if data[l.pos] == ',' {
				l.pos++
				l.ws()
				continue
			}
			if data[l.pos] == closer {
				l.pos++
				break
			}
			return newErr("", ClassSyntax, rUnexpectedChar, l.pos)
		}
		d.nodes[idx].count = count
		return nil
	case '"':
		var sp span
		if i := plainEnd(data, l.pos+1); i < len(data) && data[i] == '"' {
			sp = span{start: l.pos + 1, end: i, dlen: i - l.pos - 1}
			l.pos = i + 1
		} else {
			var de *DecodeError
			if sp, de = l.str(); de != nil {
				return de
			}
		}
		n := &d.nodes[idx]
		n.kind, n.start, n.end, n.dlen, n.esc = jString, int32(sp.start), int32(sp.end), int32(sp.dlen), sp.esc
		return nil
	case 't':
		d.nodes[idx].kind = jTrue
		return l.lit("true")
	case 'f':
		d.nodes[idx].kind = jFalse
		return l.lit("false")
	case 'n':
		d.nodes[idx].kind = jNull
		return l.lit("null")
	default:
		if c != '-' && (c < '0' || c > '9') {
			return newErr("", ClassSyntax, rUnexpectedChar, l.pos)
		}
		if de := l.num(); de != nil {
			return de
		}
		n := &d.nodes[idx]
		n.kind, n.end = jNumber, int32(l.pos)
		return nil
	}
}

// children calls are written as loops:
//
//	for c, k := d.first(n), 0; k < d.nodes[n].count; c, k = d.nodes[c].next, k+1 { … }
//
// first returns the first child of container n.
func (d *jdoc) first(n int32) int32 { return n + 1 }

// keyIs reports whether member node c's key equals name.
func (d *jdoc) keyIs(c int32, name string) bool {
	n := &d.nodes[c]
	raw := d.data[n.kstart:n.kend]
	if !n.kesc {
		return string(raw) == name
	}
	// Unescaping shrinks a key by at most 6:1, so longer raw keys cannot
	// match and are not unescaped at all.
	if len(raw) < len(name) || len(raw) > 6*len(name) {
		return false
	}
	var buf [128]byte
	k := appendUnescaped(buf[:0], raw)
	return string(k) == name
}

// key returns member node c's key, unescaped (into scratch if needed).
func (d *jdoc) key(c int32) []byte {
	n := &d.nodes[c]
	raw := d.data[n.kstart:n.kend]
	if !n.kesc {
		return raw
	}
	start := len(d.scratch)
	d.scratch = appendUnescaped(d.scratch, raw)
	return d.scratch[start:]
}

// member finds name in object obj: it returns the member's node, or -1 when
// absent. dup reports a second member with the same name.
func (d *jdoc) member(obj int32, name string) (idx int32, dup bool) {
	idx = -1
	n := d.nodes[obj].count
	for c, k := d.first(obj), int32(0); k < n; c, k = d.nodes[c].next, k+1 {
		nd := &d.nodes[c]
		var match bool
		if !nd.kesc {
			match = string(d.data[nd.kstart:nd.kend]) == name
		} else {
			match = d.keyIs(c, name)
		}
		if match {
			if idx >= 0 {
				return idx, true
			}
			idx = c
		}
	}
	return idx, false
}

// text returns string node n's value, unescaped (into scratch if needed).
// The result aliases the input or the scratch buffer.
func (d *jdoc) text(n int32) []byte {
	nd := &d.nodes[n]
	raw := d.data[nd.start:nd.end]
	if !nd.esc {
		return raw
	}
	start := len(d.scratch)
	d.scratch = appendUnescaped(d.scratch, raw)
	return d.scratch[start:]
}
