package alerting_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
)

// openAPI is the excerpt of Alertmanager's api/v2/openapi.yaml kept in
// testdata, with a validator for the Swagger 2.0 subset it uses ($ref,
// allOf, object/array/string, properties, required,
// additionalProperties, formats date-time and uri).
type openAPI struct {
	Paths       map[string]any            `yaml:"paths"`
	Definitions map[string]map[string]any `yaml:"definitions"`
}

func loadAlertmanagerSpec(t testing.TB) *openAPI {
	t.Helper()
	raw, err := os.ReadFile("testdata/alertmanager_openapi_v2_postable_alerts.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var s openAPI
	if err := yaml.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	return &s
}

// requestSchema returns the body schema of POST /alerts.
func (s *openAPI) requestSchema(t testing.TB) map[string]any {
	t.Helper()
	post := s.Paths["/alerts"].(map[string]any)["post"].(map[string]any)
	for _, p := range post["parameters"].([]any) {
		pm := p.(map[string]any)
		if pm["in"] == "body" {
			return pm["schema"].(map[string]any)
		}
	}
	t.Fatal("no body parameter")
	return nil
}

func (s *openAPI) resolve(sch map[string]any) map[string]any {
	for {
		ref, ok := sch["$ref"].(string)
		if !ok {
			return sch
		}
		sch = s.Definitions[strings.TrimPrefix(ref, "#/definitions/")]
	}
}

// properties collects the properties an object schema (with its allOf
// parts) defines.
func (s *openAPI) properties(sch map[string]any) map[string]any {
	sch = s.resolve(sch)
	out := map[string]any{}
	if ps, ok := sch["properties"].(map[string]any); ok {
		for k, v := range ps {
			out[k] = v
		}
	}
	if all, ok := sch["allOf"].([]any); ok {
		for _, part := range all {
			for k, v := range s.properties(part.(map[string]any)) {
				out[k] = v
			}
		}
	}
	return out
}

// validate checks v against sch. strict additionally rejects properties
// the schema does not define (a typo such as "startAt" would otherwise
// pass the schema and be ignored by Alertmanager).
func (s *openAPI) validate(sch map[string]any, v any, path string, strict bool) []string {
	sch = s.resolve(sch)
	var errs []string
	if all, ok := sch["allOf"].([]any); ok {
		for _, part := range all {
			errs = append(errs, s.validate(part.(map[string]any), v, path, false)...)
		}
		if strict {
			if obj, ok := v.(map[string]any); ok {
				known := s.properties(sch)
				for k := range obj {
					if _, ok := known[k]; !ok {
						errs = append(errs, fmt.Sprintf("%s.%s: not in the schema", path, k))
					}
				}
			}
		}
		return errs
	}
	switch sch["type"] {
	case "array":
		arr, ok := v.([]any)
		if !ok {
			return []string{path + ": want array"}
		}
		for i, item := range arr {
			errs = append(errs, s.validate(sch["items"].(map[string]any), item, fmt.Sprintf("%s[%d]", path, i), strict)...)
		}
	case "object":
		obj, ok := v.(map[string]any)
		if !ok {
			return []string{path + ": want object"}
		}
		props, _ := sch["properties"].(map[string]any)
		for _, r := range asSlice(sch["required"]) {
			if _, ok := obj[r.(string)]; !ok {
				errs = append(errs, fmt.Sprintf("%s.%s: required", path, r))
			}
		}
		for k, val := range obj {
			if ps, ok := props[k]; ok {
				errs = append(errs, s.validate(ps.(map[string]any), val, path+"."+k, strict)...)
			} else if ap, ok := sch["additionalProperties"].(map[string]any); ok {
				errs = append(errs, s.validate(ap, val, path+"."+k, strict)...)
			}
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			return []string{path + ": want string"}
		}
		switch sch["format"] {
		case "date-time":
			if _, err := time.Parse(time.RFC3339Nano, str); err != nil {
				errs = append(errs, fmt.Sprintf("%s: %q is not an RFC 3339 date-time", path, str))
			}
		case "uri":
			if u, err := url.Parse(str); err != nil || u.Scheme == "" {
				errs = append(errs, fmt.Sprintf("%s: %q is not an absolute URI", path, str))
			}
		}
	}
	return errs
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

var promLabelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// alertmanagerSemantics are the checks Alertmanager's API applies beyond
// the schema (model.Alert.Validate): at least one label, valid label
// names, UTF-8 values, startsAt not after endsAt.
func alertmanagerSemantics(a map[string]any) []string {
	var errs []string
	labels, _ := a["labels"].(map[string]any)
	if len(labels) == 0 {
		errs = append(errs, "no labels")
	}
	for _, set := range []string{"labels", "annotations"} {
		m, _ := a[set].(map[string]any)
		for k, v := range m {
			if !promLabelName.MatchString(k) || strings.HasPrefix(k, "__") {
				errs = append(errs, set+": bad name "+k)
			}
			if s, _ := v.(string); !utf8.ValidString(s) || (set == "labels" && s == "") {
				errs = append(errs, set+": bad value for "+k)
			}
		}
	}
	if s, ok := a["startsAt"].(string); ok {
		if e, ok := a["endsAt"].(string); ok {
			st, _ := time.Parse(time.RFC3339Nano, s)
			et, _ := time.Parse(time.RFC3339Nano, e)
			if et.Before(st) {
				errs = append(errs, "endsAt before startsAt")
			}
		}
	}
	return errs
}

// amReceiver is a local Alertmanager stand-in for POST /api/v2/alerts.
type amReceiver struct {
	mu     sync.Mutex
	bodies [][]byte
	auth   []string
	paths  []string
}

func (r *amReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.bodies = append(r.bodies, body)
	r.auth = append(r.auth, req.Header.Get("Authorization"))
	r.paths = append(r.paths, req.Method+" "+req.URL.Path)
	r.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (r *amReceiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.bodies)
}

func TestAlertmanagerPayloadMatchesOpenAPISchema(t *testing.T) {
	recv := &amReceiver{}
	srv := httptest.NewServer(recv)
	defer srv.Close()
	cfg := alerting.DefaultConfig()
	cfg.PatientSurge.MinUsers = 2
	cfg.UserRisk.Threshold = 140
	cfg.APIBaseURL = "https://ehrwatch.example.org"
	am := &cfg.Outputs.Alertmanager
	am.Enabled, am.URL, am.Delivery = true, srv.URL+"/", fastDelivery(2)
	am.Labels = map[string]string{"team": "privacy"}
	am.ResolveAfter = time.Hour
	am.BearerTokenFile = writeFile(t, "token", "s3cr3t-token\n")
	e := newEnv(t, cfg)

	alerts := e.observe(t,
		finding("vip", "high", "U1", 1, at("09:10")),
		finding("family", "high", "U1", 2, at("09:11")),
		finding("vip", "high", "U2", 1, at("09:12")),
	)
	notified := 0
	for _, a := range alerts {
		if a.Notify {
			notified++
		}
	}
	if notified != 5 { // two user_detector for U1, one for U2, user_risk U1, patient_surge
		t.Fatalf("only %d alerts notified: %+v", notified, alerts)
	}
	waitFor(t, "the alertmanager posts", func() bool { return recv.count() == notified })

	spec := loadAlertmanagerSpec(t)
	body := spec.requestSchema(t)
	recv.mu.Lock()
	defer recv.mu.Unlock()
	rules := map[string]bool{}
	for i, raw := range recv.bodies {
		if recv.paths[i] != "POST /api/v2/alerts" || recv.auth[i] != "Bearer s3cr3t-token" {
			t.Errorf("request %d: %s auth=%q", i, recv.paths[i], recv.auth[i])
		}
		var v any
		if err := json.Unmarshal(raw, &v); err != nil {
			t.Fatal(err)
		}
		if errs := spec.validate(body, v, "body", true); len(errs) > 0 {
			t.Errorf("payload %s violates the OpenAPI schema: %v", raw, errs)
		}
		for _, item := range v.([]any) {
			a := item.(map[string]any)
			if errs := alertmanagerSemantics(a); len(errs) > 0 {
				t.Errorf("payload %s: %v", raw, errs)
			}
			labels := a["labels"].(map[string]any)
			for k, lv := range labels {
				if strings.Contains(lv.(string), "PAT-") || strings.Contains(k, "patient") {
					t.Errorf("label %s=%v carries patient data", k, lv)
				}
			}
			if labels["alertname"] != "EhrwatchAlert" || labels["team"] != "privacy" || labels["alert_id"] == nil || labels["severity"] == nil {
				t.Errorf("labels: %v", labels)
			}
			rules[labels["rule"].(string)] = true
			ann := a["annotations"].(map[string]any)
			if strings.Contains(string(raw), "PAT-") {
				t.Errorf("annotations carry patient ids without include_patient_id: %v", ann)
			}
			link := "https://ehrwatch.example.org/api/v1/alerts/" + labels["alert_id"].(string)
			if ann["alert_url"] != link || a["generatorURL"] != link || ann["summary"] == "" || ann["description"] == "" {
				t.Errorf("annotations: %v generatorURL=%v", ann, a["generatorURL"])
			}
			if a["endsAt"] == nil {
				t.Error("resolve_after set but no endsAt")
			}
		}
	}
	keys := make([]string, 0, len(rules))
	for r := range rules {
		keys = append(keys, r)
	}
	sort.Strings(keys)
	if strings.Join(keys, ",") != "patient_surge,user_detector,user_risk" {
		t.Errorf("rules sent: %v", keys)
	}
}

func TestAlertmanagerSchemaValidatorCatchesMistakes(t *testing.T) {
	spec := loadAlertmanagerSpec(t)
	body := spec.requestSchema(t)
	cases := map[string]string{
		"not an array":       `{"labels":{"a":"b"}}`,
		"labels missing":     `[{"annotations":{"a":"b"}}]`,
		"label not a string": `[{"labels":{"a":1}}]`,
		"bad time":           `[{"labels":{"a":"b"},"startsAt":"2026-03-05 09:10"}]`,
		"relative URL":       `[{"labels":{"a":"b"},"generatorURL":"/api/v1/alerts/x"}]`,
		"typo":               `[{"labels":{"a":"b"},"startAt":"2026-03-05T09:10:00Z"}]`,
	}
	for name, raw := range cases {
		var v any
		if err := json.Unmarshal([]byte(raw), &v); err != nil {
			t.Fatal(err)
		}
		if errs := spec.validate(body, v, "body", true); len(errs) == 0 {
			t.Errorf("%s: accepted %s", name, raw)
		}
	}
	var ok any
	_ = json.Unmarshal([]byte(`[{"labels":{"a":"b"},"annotations":{"c":"d"},"startsAt":"2026-03-05T09:10:00.5Z","endsAt":"2026-03-05T10:10:00Z","generatorURL":"https://x/y"}]`), &ok)
	if errs := spec.validate(body, ok, "body", true); len(errs) > 0 {
		t.Errorf("valid payload rejected: %v", errs)
	}
}

func TestAlertmanagerServerErrorIsRetriedThenDeadLettered(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		mu.Lock()
		calls++
		mu.Unlock()
		w.WriteHeader(http.StatusInternalServerError)
	}))
	defer srv.Close()
	cfg := rulesOnly()
	am := &cfg.Outputs.Alertmanager
	am.Enabled, am.URL, am.Delivery = true, srv.URL, fastDelivery(4)
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U1", 1, at("09:10")))
	waitFor(t, "the dead letter", func() bool { return len(e.store.deadLetters()) == 1 })
	dl := e.store.deadLetters()[0]
	if dl.Attempts != 4 || dl.ErrorClass != alerting.ClassHTTP5xx || dl.HTTPStatus != 500 || dl.Output != "alertmanager" {
		t.Fatalf("dead letter: %+v", dl)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls != 4 {
		t.Fatalf("%d calls, want 4", calls)
	}
	if n := metric(t, e.reg, "ehrwatch_alerting_notifications_failed_total", map[string]string{"output": "alertmanager", "class": "http_5xx"}); n != 1 {
		t.Errorf("failed = %v", n)
	}
}
