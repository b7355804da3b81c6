package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

const module = "github.com/ehrwatch/ehrwatch/"

// TestArchitecture checks the import graph against the rules that
// docs/architecture.md states in its ```rules block: every package has a
// rule, and no non-test import crosses it.
func TestArchitecture(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```rules\n(.*?)```").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/architecture.md has no ```rules block")
	}
	type rule struct {
		pattern string
		allowed []string
	}
	var rules []rule
	for _, line := range strings.Split(strings.TrimSpace(string(m[1])), "\n") {
		pat, rest, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("bad rule line %q", line)
		}
		r := rule{pattern: strings.TrimSpace(pat)}
		if f := strings.Fields(rest); len(f) != 1 || f[0] != "-" {
			r.allowed = f
		}
		rules = append(rules, r)
	}
	matches := func(pattern, pkg string) bool {
		if base, ok := strings.CutSuffix(pattern, "/..."); ok {
			return pkg == base || strings.HasPrefix(pkg, base+"/")
		}
		return pkg == pattern
	}
	// The most specific rule wins: an exact name before a /... pattern,
	// a longer pattern before a shorter one.
	ruleFor := func(pkg string) (rule, bool) {
		best, found := rule{}, false
		for _, r := range rules {
			if !matches(r.pattern, pkg) {
				continue
			}
			if !found || (!strings.HasSuffix(r.pattern, "/...") && strings.HasSuffix(best.pattern, "/...")) ||
				(strings.HasSuffix(r.pattern, "/...") == strings.HasSuffix(best.pattern, "/...") && len(r.pattern) > len(best.pattern)) {
				best, found = r, true
			}
		}
		return best, found
	}

	cmd := exec.Command("go", "list", "-json", "./...")
	cmd.Dir = filepath.Join("..", "..")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	seen := 0
	for dec.More() {
		var p struct {
			ImportPath string
			Imports    []string
		}
		if err := dec.Decode(&p); err != nil {
			t.Fatal(err)
		}
		seen++
		pkg := strings.TrimPrefix(p.ImportPath, module)
		r, ok := ruleFor(pkg)
		if !ok {
			t.Errorf("%s: no rule in docs/architecture.md; add one (and a row to its package table)", pkg)
			continue
		}
		for _, imp := range p.Imports {
			dep, ok := strings.CutPrefix(imp, module)
			if !ok || dep == pkg {
				continue
			}
			allowed := false
			for _, a := range r.allowed {
				if matches(a, dep) {
					allowed = true
				}
			}
			if !allowed {
				t.Errorf("%s imports %s, which docs/architecture.md does not allow (rule %q)", pkg, dep, r.pattern)
			}
		}
	}
	if seen < 10 {
		t.Fatalf("go list found %d packages; expected the whole module", seen)
	}
}
