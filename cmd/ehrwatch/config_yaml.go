package main

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// keyPathErrors rewrites the YAML decoder's errors about a configuration
// file so that each names the key by its path ("kafka.brokerz: unknown key
// (did you mean kafka.brokers?)", "pipeline.batch_max_wait: want a duration
// such as 500ms or 10s, got \"soon\"") instead of Go types ("field brokerz
// not found in type ingest.KafkaConfig"). Each message keeps the line.
func keyPathErrors(file string, raw []byte, te *yaml.TypeError) error {
	var root yaml.Node
	paths := map[int][]string{} // line -> key paths that start on it
	if yaml.Unmarshal(raw, &root) == nil {
		indexKeyLines(&root, "", paths)
	}
	errs := make([]error, 0, len(te.Errors))
	for _, msg := range te.Errors {
		errs = append(errs, fmt.Errorf("%s: %s", file, keyPathMessage(msg, paths)))
	}
	return errors.Join(errs...)
}

var (
	yamlLineRe    = regexp.MustCompile(`^line (\d+): (.*)$`)
	yamlUnknownRe = regexp.MustCompile(`^field (\S+) not found in type \S+$`)
	yamlTypeRe    = regexp.MustCompile("^cannot unmarshal !!(\\w+)(?: `(.*)`)? into (.+)$")
)

func keyPathMessage(msg string, paths map[int][]string) string {
	m := yamlLineRe.FindStringSubmatch(msg)
	if m == nil {
		return msg // already a key path (the detection section says its own)
	}
	line, _ := strconv.Atoi(m[1])
	rest := m[2]
	if u := yamlUnknownRe.FindStringSubmatch(rest); u != nil {
		key := pathEnding(paths[line], u[1])
		if key == "" {
			key = u[1]
		}
		out := fmt.Sprintf("%s: unknown key (line %d)", key, line)
		if s := suggestKey(key); s != "" {
			out += fmt.Sprintf("; did you mean %s?", s)
		}
		return out
	}
	if t := yamlTypeRe.FindStringSubmatch(rest); t != nil {
		key := "(unknown key)"
		if ps := paths[line]; len(ps) > 0 {
			// A list or mapping where a scalar belongs is about the key
			// that holds it; a bad scalar about the innermost path.
			key = ps[len(ps)-1]
			if t[1] == "seq" || t[1] == "map" {
				key = ps[0]
			}
		}
		got := "a " + yamlTagName(t[1])
		if t[2] != "" {
			got = strconv.Quote(t[2])
		}
		return fmt.Sprintf("%s: want %s, got %s (line %d)", key, wantForGoType(t[3]), got, line)
	}
	return fmt.Sprintf("%s (line %d)", rest, line)
}

// indexKeyLines records, for every key of every mapping under n, its
// dotted path under the line its key and its value start on.
func indexKeyLines(n *yaml.Node, prefix string, paths map[int][]string) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			indexKeyLines(c, prefix, paths)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := k.Value
			if prefix != "" {
				p = prefix + "." + k.Value
			}
			paths[k.Line] = append(paths[k.Line], p)
			if v.Line != k.Line {
				paths[v.Line] = append(paths[v.Line], p)
			}
			indexKeyLines(v, p, paths)
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			p := fmt.Sprintf("%s[%d]", prefix, i)
			if c.Kind == yaml.ScalarNode {
				paths[c.Line] = append(paths[c.Line], p)
			}
			indexKeyLines(c, p, paths)
		}
	}
}

// pathEnding returns the path in ps whose last element is key.
func pathEnding(ps []string, key string) string {
	for _, p := range ps {
		if p == key || strings.HasSuffix(p, "."+key) {
			return p
		}
	}
	return ""
}

func yamlTagName(tag string) string {
	switch tag {
	case "str":
		return "string"
	case "seq":
		return "list"
	case "map":
		return "mapping"
	case "int":
		return "number"
	}
	return tag
}

// wantForGoType says in YAML words what a Go type expects.
func wantForGoType(goType string) string {
	switch {
	case goType == "time.Duration":
		return "a duration such as 500ms, 10s or 1h"
	case goType == "bool":
		return "true or false"
	case strings.HasPrefix(goType, "int"):
		return "a whole number"
	case strings.HasPrefix(goType, "uint"):
		return "a non-negative whole number"
	case strings.HasPrefix(goType, "float"):
		return "a number"
	case goType == "string":
		return "a string"
	case strings.HasPrefix(goType, "[]"):
		return "a list"
	case strings.HasPrefix(goType, "map["):
		return "a mapping of keys to values"
	}
	return "a mapping (a section with keys)"
}

// suggestKey returns the known key closest to an unknown dotted key (same
// parent, edit distance at most 2), or "".
func suggestKey(key string) string {
	parts := strings.Split(key, ".")
	t := reflect.TypeOf(Config{})
	for _, p := range parts[:len(parts)-1] {
		if i := strings.IndexByte(p, '['); i >= 0 {
			p = p[:i]
		}
		f, ok := yamlField(t, p)
		if !ok {
			return ""
		}
		t = f
		for t.Kind() == reflect.Slice || t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return ""
		}
	}
	best := closest(parts[len(parts)-1], yamlFieldNames(t), 2)
	if best == "" {
		return ""
	}
	return strings.Join(append(parts[:len(parts)-1:len(parts)-1], best), ".")
}

func yamlField(t reflect.Type, name string) (reflect.Type, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		if tag[0] == name {
			return f.Type, true
		}
		if len(tag) > 1 && tag[1] == "inline" && f.Type.Kind() == reflect.Struct {
			if ft, ok := yamlField(f.Type, name); ok {
				return ft, true
			}
		}
	}
	return nil, false
}

func yamlFieldNames(t reflect.Type) []string {
	if t == durationType || t.Kind() != reflect.Struct {
		return nil
	}
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("yaml"), ",")
		switch {
		case len(tag) > 1 && tag[1] == "inline":
			out = append(out, yamlFieldNames(f.Type)...)
		case tag[0] != "" && tag[0] != "-":
			out = append(out, tag[0])
		}
	}
	return out
}

// closest returns the candidate nearest to name, at an edit distance of
// at most maxDist (the first of equals), or "": the "did you mean" of
// unknown keys, variables and commands.
func closest(name string, candidates []string, maxDist int) string {
	best, bestD := "", maxDist+1
	for _, c := range candidates {
		if d := editDistance(name, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance of a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
