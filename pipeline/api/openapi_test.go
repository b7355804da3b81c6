package api

import (
	"slices"
	"sort"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// TestOpenAPIMatchesRoutes: every registered route is documented and every
// documented operation is registered.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Tokens = []TokenConfig{{Name: "x", Role: RoleAdmin, Hash: HashToken("x")}}
	srv, err := New(cfg, Deps{Store: triage.NewStore(nil, triage.Options{})})
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.yaml: %v", err)
	}
	if doc["openapi"] != "3.1.0" {
		t.Errorf("openapi version %v", doc["openapi"])
	}
	servers, _ := doc["servers"].([]any)
	if len(servers) != 1 || servers[0].(map[string]any)["url"] != Prefix {
		t.Fatalf("servers must be [%s]: %v", Prefix, servers)
	}
	var documented []string
	paths, _ := doc["paths"].(map[string]any)
	for p, item := range paths {
		for m := range item.(map[string]any) {
			switch m {
			case "get", "put", "post", "delete", "patch", "head", "options", "trace":
				documented = append(documented, strings.ToUpper(m)+" "+Prefix+p)
			}
		}
	}
	registered := srv.Routes()
	sort.Strings(documented)
	sort.Strings(registered)
	for _, r := range registered {
		if !slices.Contains(documented, r) {
			t.Errorf("route %s is not in openapi.yaml", r)
		}
	}
	for _, d := range documented {
		if !slices.Contains(registered, d) {
			t.Errorf("openapi.yaml documents %s, which is not registered", d)
		}
	}

	// Every $ref resolves.
	var walk func(v any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if ref, ok := x["$ref"].(string); ok {
				if !resolves(doc, ref) {
					t.Errorf("dangling $ref %s", ref)
				}
			}
			for _, c := range x {
				walk(c)
			}
		case []any:
			for _, c := range x {
				walk(c)
			}
		}
	}
	walk(doc)

	// The documented enums match the code.
	schemas := doc["components"].(map[string]any)["schemas"].(map[string]any)
	enum := func(name string) []string {
		var out []string
		for _, v := range schemas[name].(map[string]any)["enum"].([]any) {
			out = append(out, v.(string))
		}
		return out
	}
	var dispositions, statuses []string
	for _, d := range triage.Dispositions {
		dispositions = append(dispositions, string(d))
	}
	for _, s := range triage.Statuses {
		statuses = append(statuses, string(s))
	}
	if got := enum("Disposition"); !slices.Equal(got, dispositions) {
		t.Errorf("Disposition enum %v, code %v", got, dispositions)
	}
	if got := enum("Status"); !slices.Equal(got, statuses) {
		t.Errorf("Status enum %v, code %v", got, statuses)
	}
}

func resolves(doc map[string]any, ref string) bool {
	path, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return false
	}
	var cur any = doc
	for _, part := range strings.Split(path, "/") {
		m, ok := cur.(map[string]any)
		if !ok {
			return false
		}
		if cur, ok = m[part]; !ok {
			return false
		}
	}
	return true
}
