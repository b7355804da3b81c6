package console_test

import (
	"html"
	"regexp"
	"strings"
)

// The console's own pages escape every '>' inside attribute values
// (html/template), so a tag ends at the first '>'.
var (
	tagRE  = regexp.MustCompile(`<([a-zA-Z][a-zA-Z0-9-]*)((?:\s[^>]*)?)>`)
	attrRE = regexp.MustCompile(`([a-zA-Z_:][-a-zA-Z0-9_:.]*)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>` + "`" + `]+)))?`)
)

type tag struct {
	name  string
	attrs map[string]string
}

func tags(page string) []tag {
	var out []tag
	for _, m := range tagRE.FindAllStringSubmatch(page, -1) {
		t := tag{name: strings.ToLower(m[1]), attrs: map[string]string{}}
		for _, a := range attrRE.FindAllStringSubmatch(m[2], -1) {
			t.attrs[strings.ToLower(a[1])] = html.UnescapeString(a[2] + a[3] + a[4])
		}
		out = append(out, t)
	}
	return out
}

// inlineViolations lists what a strict CSP would refuse: <script> without
// src, <style>, style="…" and on*="…" attributes, javascript: URLs.
func inlineViolations(page string) []string {
	var bad []string
	for _, t := range tags(page) {
		if t.name == "script" {
			if _, ok := t.attrs["src"]; !ok {
				bad = append(bad, "<script> without src")
			}
		}
		if t.name == "style" {
			bad = append(bad, "<style>")
		}
		for k, v := range t.attrs {
			if k == "style" || strings.HasPrefix(k, "on") || strings.HasPrefix(k, "hx-on") {
				bad = append(bad, "<"+t.name+" "+k+">")
			}
			if strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "javascript:") {
				bad = append(bad, "<"+t.name+" "+k+"=javascript:>")
			}
		}
	}
	return bad
}

// urlAttrs are the attributes whose value a browser requests or navigates to.
var urlAttrs = []string{"href", "src", "action", "formaction", "hx-get", "hx-post", "hx-put", "hx-patch", "hx-delete", "data-url"}

// emittedURLs lists every URL a page emits.
func emittedURLs(page string) []string {
	var out []string
	for _, t := range tags(page) {
		for _, k := range urlAttrs {
			if v, ok := t.attrs[k]; ok {
				out = append(out, v)
			}
		}
	}
	return out
}
