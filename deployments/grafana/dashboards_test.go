package grafana_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/deployments/grafana"
	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

const (
	chType   = "grafana-clickhouse-datasource"
	chUID    = "ehrwatch-clickhouse"
	promType = "prometheus"
	promUID  = "ehrwatch-prometheus"
)

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type target struct {
	RefID      string         `json:"refId"`
	Datasource *datasourceRef `json:"datasource"`
	EditorType string         `json:"editorType"`
	Format     *int           `json:"format"`
	QueryType  string         `json:"queryType"`
	RawSQL     string         `json:"rawSql"`
	Expr       string         `json:"expr"`
}

type panel struct {
	ID          int            `json:"id"`
	Type        string         `json:"type"`
	Title       string         `json:"title"`
	Description string         `json:"description"`
	Datasource  *datasourceRef `json:"datasource"`
	GridPos     struct{ H, W, X, Y int }
	Targets     []target `json:"targets"`
	FieldConfig struct {
		Overrides []struct {
			Matcher struct {
				ID      string `json:"id"`
				Options string `json:"options"`
			} `json:"matcher"`
			Properties []struct {
				ID    string          `json:"id"`
				Value json.RawMessage `json:"value"`
			} `json:"properties"`
		} `json:"overrides"`
	} `json:"fieldConfig"`
}

type variable struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Datasource *datasourceRef `json:"datasource"`
	Query      any            `json:"query"`
	Multi      bool           `json:"multi"`
	IncludeAll bool           `json:"includeAll"`
	Options    []struct {
		Value string `json:"value"`
	} `json:"options"`
}

type dashboard struct {
	file          string
	UID           string   `json:"uid"`
	Title         string   `json:"title"`
	Tags          []string `json:"tags"`
	SchemaVersion int      `json:"schemaVersion"`
	Time          struct {
		From string `json:"from"`
		To   string `json:"to"`
	} `json:"time"`
	Templating struct {
		List []variable `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

func loadDashboards(t *testing.T) []dashboard {
	t.Helper()
	files, err := filepath.Glob("dashboards/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no dashboards in deployments/grafana/dashboards (%v)", err)
	}
	var out []dashboard
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		dec := json.NewDecoder(strings.NewReader(string(raw)))
		var d dashboard
		if err := dec.Decode(&d); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		d.file = f
		out = append(out, d)
	}
	return out
}

// The dashboards, by uid: every one the issue asks for.
var wantDashboards = []string{
	"ehrwatch-soc-overview", "ehrwatch-triage-queue", "ehrwatch-patient-investigation",
	"ehrwatch-user-investigation", "ehrwatch-detector-quality", "ehrwatch-pipeline-health",
}

// TestDashboardsWellFormed checks the JSON itself: identity, schema
// version, time range, datasources, targets and layout.
func TestDashboardsWellFormed(t *testing.T) {
	ds := loadDashboards(t)
	var uids []string
	for _, d := range ds {
		t.Run(filepath.Base(d.file), func(t *testing.T) {
			uids = append(uids, d.UID)
			if d.UID == "" || len(d.UID) > 40 || d.Title == "" || !slices.Contains(d.Tags, "ehrwatch") {
				t.Errorf("uid %q (at most 40 chars), title %q and tag ehrwatch required", d.UID, d.Title)
			}
			if d.SchemaVersion < 39 {
				t.Errorf("schemaVersion %d: want a current one (>= 39)", d.SchemaVersion)
			}
			if !strings.HasPrefix(d.Time.From, "now-") || d.Time.To != "now" {
				t.Errorf("time %+v: want a relative range ending now", d.Time)
			}
			ids := map[int]bool{}
			for _, p := range d.Panels {
				if ids[p.ID] {
					t.Errorf("panel id %d used twice", p.ID)
				}
				ids[p.ID] = true
				if p.Title == "" || p.Datasource == nil || len(p.Targets) == 0 {
					t.Errorf("panel %d: title, datasource and targets required", p.ID)
					continue
				}
				if p.GridPos.W <= 0 || p.GridPos.X+p.GridPos.W > 24 || p.GridPos.H <= 0 {
					t.Errorf("panel %q: gridPos %+v outside the 24-column grid", p.Title, p.GridPos)
				}
				for _, tg := range p.Targets {
					checkTarget(t, p, tg)
				}
			}
			for _, v := range d.Templating.List {
				if v.Type == "query" && (v.Datasource == nil || v.Datasource.UID != chUID) {
					t.Errorf("variable %s: query variables must use the %s datasource", v.Name, chUID)
				}
			}
		})
	}
	sort.Strings(uids)
	want := slices.Clone(wantDashboards)
	sort.Strings(want)
	if !slices.Equal(uids, want) {
		t.Errorf("dashboards %v, want %v", uids, want)
	}
}

func checkTarget(t *testing.T, p panel, tg target) {
	t.Helper()
	ds := tg.Datasource
	if ds == nil {
		ds = p.Datasource
	}
	switch {
	case ds.Type == chType && ds.UID == chUID:
		if tg.RawSQL == "" || tg.EditorType != "sql" || tg.Format == nil {
			t.Errorf("panel %q %s: ClickHouse targets need rawSql, editorType sql and format", p.Title, tg.RefID)
			return
		}
		// The plugin's formats: 0 time series, 1 table (sqlutil.FormatQueryOption).
		switch {
		case *tg.Format == 0 && tg.QueryType == "timeseries":
		case *tg.Format == 1 && tg.QueryType == "table":
		default:
			t.Errorf("panel %q %s: format %d with queryType %q", p.Title, tg.RefID, *tg.Format, tg.QueryType)
		}
		if (p.Type == "timeseries") != (*tg.Format == 0) {
			t.Errorf("panel %q (%s) %s: time series panels and only they use format 0", p.Title, p.Type, tg.RefID)
		}
		if strings.Contains(tg.RawSQL, "ehrwatch.") {
			t.Errorf("panel %q %s: use unqualified table names (the datasource's default database)", p.Title, tg.RefID)
		}
	case ds.Type == promType && ds.UID == promUID:
		if tg.Expr == "" {
			t.Errorf("panel %q %s: Prometheus target without expr", p.Title, tg.RefID)
		}
	default:
		t.Errorf("panel %q %s: datasource %+v is neither %s/%s nor %s/%s", p.Title, tg.RefID, ds, chType, chUID, promType, promUID)
	}
}

// consolePaths are the console pages dashboards may link to (the console
// contract's URL map); {id} parts are Grafana field values.
var consolePaths = []*regexp.Regexp{
	regexp.MustCompile(`^\$\{console_url\}/alerts/\$\{__data\.fields\.alert_id\}$`),
	regexp.MustCompile(`^\$\{console_url\}/users/\$\{__data\.fields\.user_id\}$`),
	regexp.MustCompile(`^\$\{console_url\}/patients$`),
	regexp.MustCompile(`^\$\{console_url\}/queue(\?severity=\$\{__data\.fields\.severity\}&assignee=none)?$`),
}

// dashboardLink is a URL found anywhere in a dashboard: a data link, a
// panel link or a dashboard link.
type dashboardLink struct{ where, url string }

func dashboardLinks(t *testing.T, file string) (links []dashboardLink, descriptions []string) {
	t.Helper()
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var doc any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch x := v.(type) {
		case map[string]any:
			if u, ok := x["url"].(string); ok {
				links = append(links, dashboardLink{path, u})
			}
			if d, ok := x["description"].(string); ok {
				descriptions = append(descriptions, d)
			}
			for k, c := range x {
				walk(path+"/"+k, c)
			}
		case []any:
			for i, c := range x {
				walk(fmt.Sprintf("%s[%d]", path, i), c)
			}
		}
	}
	walk("", doc)
	return links, descriptions
}

// TestLinksOpenTheConsole: dashboards link to the console's pages, never
// to raw API URLs (a browser has no bearer token: they answered 401), and
// never put a patient id into a URL (URLs end up in access logs); the
// console's base URL is a constant variable of every dashboard that links
// to it; the triage queue links each alert to its console page.
func TestLinksOpenTheConsole(t *testing.T) {
	alertLink := false
	for _, d := range loadDashboards(t) {
		links, _ := dashboardLinks(t, d.file)
		usesConsole := false
		for _, l := range links {
			name := filepath.Base(d.file) + l.where
			if strings.Contains(l.url, "/api/") {
				t.Errorf("%s: link %q opens a raw API URL; link the console page instead", name, l.url)
			}
			if strings.Contains(l.url, "patient_id") {
				t.Errorf("%s: link %q puts a patient id into a URL; link the console's /patients lookup", name, l.url)
			}
			if strings.Contains(l.url, "console_url") {
				usesConsole = true
				if !slices.ContainsFunc(consolePaths, func(re *regexp.Regexp) bool { return re.MatchString(l.url) }) {
					t.Errorf("%s: console link %q is not a console page of the URL map", name, l.url)
				}
			} else if !strings.HasPrefix(l.url, "/d/ehrwatch-") {
				t.Errorf("%s: link %q is neither a console page nor an ehrwatch dashboard", name, l.url)
			}
			if d.UID == "ehrwatch-triage-queue" && l.url == "${console_url}/alerts/${__data.fields.alert_id}" {
				alertLink = true
			}
		}
		if usesConsole {
			i := slices.IndexFunc(d.Templating.List, func(v variable) bool { return v.Name == "console_url" })
			if i < 0 || d.Templating.List[i].Type != "constant" {
				t.Errorf("%s links to ${console_url} without a console_url constant variable", d.file)
			}
		}
	}
	if !alertLink {
		t.Error("the triage queue has no alert_id data link to ${console_url}/alerts/${__data.fields.alert_id}")
	}
}

// TestPatientPanelsSayTheyAreNotAudited: every panel that looks a patient
// up (its SQL filters on the patient_id variable) or lists patient ids
// says plainly that it bypasses the audit and points to the console's
// patient page, and so does the patient dashboard itself.
func TestPatientPanelsSayTheyAreNotAudited(t *testing.T) {
	lists := regexp.MustCompile(`(?i)\bpatient_id\b`)
	for _, d := range loadDashboards(t) {
		for _, p := range d.Panels {
			sql := ""
			for _, tg := range p.Targets {
				sql += tg.RawSQL
			}
			lookup := strings.Contains(sql, "${patient_id")
			shows := p.Type == "table" && lists.MatchString(sql) && d.UID != "ehrwatch-detector-quality"
			if (lookup || shows) && (!strings.Contains(p.Description, "Not audited") || !strings.Contains(p.Description, "${console_url}/patients")) {
				t.Errorf("%s panel %q reads patient-level data from ClickHouse but does not say it is not audited", d.file, p.Title)
			}
		}
	}
	raw, err := os.ReadFile("dashboards/patient-investigation.json")
	if err != nil {
		t.Fatal(err)
	}
	var pd struct {
		Description string `json:"description"`
	}
	if err := json.Unmarshal(raw, &pd); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(pd.Description, "NOT AUDITED") {
		t.Errorf("the patient investigation dashboard's description must start by saying it is not audited: %q", pd.Description)
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// TestPrometheusMetricsExist: every metric a Prometheus panel queries is
// one ehrwatch registers (pipeline/ingest/metrics.go and health.go, and the detector engines'
// collector in cmd/ehrwatch/detect.go), histograms with their
// _bucket/_sum/_count series.
func TestPrometheusMetricsExist(t *testing.T) {
	src, err := os.ReadFile("../../pipeline/ingest/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"../../pipeline/ingest/health.go", "../../cmd/ehrwatch/detect.go"} {
		more, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		src = append(src, more...)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?:Name:\s*|NewDesc\()"(ehrwatch_[a-z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		known[m[1]] = true
		for _, suf := range []string{"_bucket", "_sum", "_count"} {
			known[m[1]+suf] = true
		}
	}
	if len(known) < 10 {
		t.Fatalf("found only %d metric names in pipeline/ingest/metrics.go", len(known))
	}
	// Alerting's metrics are named by subsystem: ehrwatch_alerting_<name>.
	asrc, err := os.ReadFile("../../pipeline/alerting/metrics.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range regexp.MustCompile(`Subsystem: sub, Name:\s*"([a-z0-9_]+)"`).FindAllStringSubmatch(string(asrc), -1) {
		known["ehrwatch_alerting_"+m[1]] = true
	}
	// ... and those named in full (ehrwatch_event_to_alert_seconds).
	for _, m := range regexp.MustCompile(`Name:\s*"(ehrwatch_[a-z0-9_]+)"`).FindAllStringSubmatch(string(asrc), -1) {
		for _, suf := range []string{"", "_bucket", "_sum", "_count"} {
			known[m[1]+suf] = true
		}
	}
	n := 0
	for _, d := range loadDashboards(t) {
		for _, p := range d.Panels {
			for _, tg := range p.Targets {
				for _, name := range regexp.MustCompile(`\behrwatch_[a-z0-9_]+`).FindAllString(tg.Expr, -1) {
					n++
					if !known[name] {
						t.Errorf("%s panel %q: metric %s is not registered in pipeline/ingest/metrics.go", d.UID, p.Title, name)
					}
				}
			}
		}
	}
	if n == 0 {
		t.Error("no Prometheus panel queries an ehrwatch metric")
	}
}

// TestCareSlackMatchesDetectors: the investigation dashboards compute
// "explained" with the detectors' default care slack.
func TestCareSlackMatchesDetectors(t *testing.T) {
	o := detectors.DefaultReferenceOptions()
	want := map[string]string{
		"care_slack_before_hours": fmt.Sprint(int(o.CareSlackBefore.Hours())),
		"care_slack_after_hours":  fmt.Sprint(int(o.CareSlackAfter.Hours())),
	}
	for _, d := range loadDashboards(t) {
		for _, v := range d.Templating.List {
			if w, ok := want[v.Name]; ok && fmt.Sprint(v.Query) != w {
				t.Errorf("%s: %s = %v, want %s (detectors.DefaultReferenceOptions)", d.UID, v.Name, v.Query, w)
			}
		}
	}
}

// expectation is what one ClickHouse target must return on the demo data.
type expectation struct {
	cols []string
	rows bool // the demo data guarantees at least one row
}

// expectations, by "dashboard uid/panel title/refId" (query variables:
// "uid/var name"). Every ClickHouse target must have one.
var expectations = map[string]expectation{
	"ehrwatch-soc-overview/var facility":                                    {[]string{"facility_id"}, true},
	"ehrwatch-soc-overview/Open queue/A":                                    {[]string{"open_alerts"}, true},
	"ehrwatch-soc-overview/Open queue by severity/A":                        {[]string{"severity", "open_alerts"}, true},
	"ehrwatch-soc-overview/Alerts raised in range/A":                        {[]string{"alerts", "high_or_critical", "users"}, true},
	"ehrwatch-soc-overview/Alerts by severity/A":                            {[]string{"time", "severity", "alerts"}, true},
	"ehrwatch-soc-overview/Alerts by detector/A":                            {[]string{"time", "detector", "alerts"}, true},
	"ehrwatch-soc-overview/Findings by detector (not suppressed)/A":         {[]string{"time", "detector", "findings"}, true},
	"ehrwatch-soc-overview/Top users by accumulated risk/A":                 {[]string{"user_id", "user_name", "role", "department", "accumulated_risk", "findings", "detectors", "open_alerts", "peak_user_risk"}, true},
	"ehrwatch-triage-queue/var facility":                                    {[]string{"facility_id"}, true},
	"ehrwatch-triage-queue/Open alerts by status/A":                         {[]string{"new", "triaged"}, true},
	"ehrwatch-triage-queue/Unassigned open alerts by severity/A":            {[]string{"severity", "unassigned"}, true},
	"ehrwatch-triage-queue/Open alerts/A":                                   {[]string{"alert_id", "first_seen", "last_seen", "severity", "score", "rule", "detector", "facility_id", "user_id", "patient_id", "findings", "status", "assignee", "explanation"}, true},
	"ehrwatch-patient-investigation/Accesses/A":                             {[]string{"accesses", "users", "unexplained", "break_glass"}, true},
	"ehrwatch-patient-investigation/Every access/A":                         {[]string{"time", "facility_id", "user_id", "user_name", "role", "department", "action", "resource", "outcome", "break_glass", "break_glass_reason", "explained_by", "explained", "flagged_by", "event_id"}, true},
	"ehrwatch-patient-investigation/Users who opened this record/A":         {[]string{"user_id", "user_name", "role", "department", "accesses", "unexplained", "break_glass", "first_access", "last_access"}, true},
	"ehrwatch-patient-investigation/Alerts on this patient/A":               {[]string{"alert_id", "first_seen", "severity", "detector", "user_id", "status", "disposition", "explanation"}, true},
	"ehrwatch-user-investigation/Account/A":                                 {[]string{"user_id", "user_name", "role", "department", "status", "terminated_at"}, true},
	"ehrwatch-user-investigation/Activity/A":                                {[]string{"time", "accesses", "patients", "break_glass", "prints_exports"}, true},
	"ehrwatch-user-investigation/Patients opened/A":                         {[]string{"patient_id", "accesses", "unexplained", "break_glass", "prints_exports", "first_access", "last_access"}, true},
	"ehrwatch-user-investigation/Findings/A":                                {[]string{"window_start", "window_end", "detector", "severity", "score", "patient_id", "suppressed", "explanation"}, true},
	"ehrwatch-user-investigation/Alerts/A":                                  {[]string{"alert_id", "first_seen", "severity", "detector", "patient_id", "findings", "status", "disposition", "explanation"}, true},
	"ehrwatch-detector-quality/Dispositions per detector/A":                 {[]string{"detector", "alerts", "closed", "open", "confirmed_violation", "false_positive", "policy_exception", "user_educated", "duplicate", "insufficient_evidence", "precision", "median_hours_to_close"}, true},
	"ehrwatch-detector-quality/Precision over time/A":                       {[]string{"time", "detector", "precision"}, true},
	"ehrwatch-detector-quality/Closed alerts by disposition/A":              {[]string{"time", "disposition", "alerts"}, true},
	"ehrwatch-pipeline-health/Events stored per second/A":                   {[]string{"time", "events_per_second"}, true},
	"ehrwatch-pipeline-health/Ingest delay/A":                               {[]string{"time", "p50", "p95", "max"}, true},
	"ehrwatch-pipeline-health/Dead-lettered messages/A":                     {[]string{"time", "error_class", "messages"}, true},
	"ehrwatch-pipeline-health/Recent dead letters/A":                        {[]string{"received_at", "kafka_topic", "kafka_partition", "kafka_offset", "error_class", "error"}, true},
	"ehrwatch-pipeline-health/Partitions/A":                                 {[]string{"kafka_topic", "kafka_partition", "events", "last_offset", "last_stored"}, true},
	"ehrwatch-pipeline-health/Alert delivery failures/A":                    {[]string{"failed_at", "output", "alert_id", "version", "attempts", "error_class", "http_status"}, true},
	"ehrwatch-pipeline-health/Findings stored/A":                            {[]string{"time", "detector", "findings"}, true},
	"ehrwatch-pipeline-health/Findings without an alert, from ClickHouse/A": {[]string{"findings_without_alert"}, true},
}

// sqlTarget is one ClickHouse query of a dashboard.
type sqlTarget struct {
	key        string
	sql        string
	timeSeries bool
}

func sqlTargets(d dashboard) []sqlTarget {
	var out []sqlTarget
	for _, v := range d.Templating.List {
		if v.Type == "query" {
			out = append(out, sqlTarget{key: d.UID + "/var " + v.Name, sql: fmt.Sprint(v.Query)})
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.RawSQL != "" {
				out = append(out, sqlTarget{key: d.UID + "/" + p.Title + "/" + tg.RefID, sql: tg.RawSQL, timeSeries: *tg.Format == 0})
			}
		}
	}
	return out
}

// scenario is one set of variable values a dashboard is run with.
type scenario struct {
	name string
	vars map[string]grafana.Variable
	// hostile: the values are adversarial; queries must run and may return nothing.
	hostile bool
}

func scenarios(d dashboard, demo *demo) []scenario {
	base := map[string]grafana.Variable{}
	for _, v := range d.Templating.List {
		switch v.Type {
		case "constant":
			base[v.Name] = grafana.Variable{Values: []string{fmt.Sprint(v.Query)}}
		case "textbox":
			base[v.Name] = grafana.Variable{Values: []string{""}}
		case "query", "custom":
			var all []string
			for _, o := range v.Options {
				all = append(all, o.Value)
			}
			base[v.Name] = grafana.Variable{Values: all, Multi: v.Multi || v.IncludeAll, All: v.IncludeAll}
		}
	}
	with := func(name string, set map[string]grafana.Variable, hostile bool) scenario {
		vars := map[string]grafana.Variable{}
		for k, v := range base {
			vars[k] = v
		}
		for k, v := range set {
			vars[k] = v
		}
		return scenario{name: name, vars: vars, hostile: hostile}
	}
	one := func(v string) grafana.Variable { return grafana.Variable{Values: []string{v}} }
	fac := demo.h.Facilities[0].ID
	switch d.UID {
	case "ehrwatch-patient-investigation":
		return []scenario{
			with("patient", map[string]grafana.Variable{"patient_id": one(demo.patientID)}, false),
			with("quote injection", map[string]grafana.Variable{"patient_id": one(`x' OR 1=1 OR '" --`)}, true),
		}
	case "ehrwatch-user-investigation":
		return []scenario{
			with("user", map[string]grafana.Variable{"user_id": one(demo.userID)}, false),
			with("quote injection", map[string]grafana.Variable{"user_id": one(`u' OR ''='`)}, true),
		}
	case "ehrwatch-soc-overview":
		return []scenario{
			with("all facilities", nil, false),
			with("one facility", map[string]grafana.Variable{"facility": {Values: []string{fac}, Multi: true}}, false),
		}
	case "ehrwatch-triage-queue":
		return []scenario{
			with("all", nil, false),
			with("selection", map[string]grafana.Variable{
				"facility": {Values: []string{demo.h.Facilities[0].ID, demo.h.Facilities[1].ID}, Multi: true},
				"status":   {Values: []string{"new", "triaged"}, Multi: true},
				"severity": {Values: []string{"critical", "high", "medium", "low"}, Multi: true},
			}, false),
		}
	}
	return []scenario{with("default", nil, false)}
}

// TestDashboardQueries expands every ClickHouse query of every dashboard
// the way Grafana and the plugin do and runs it on the real engine over
// the demo data: it must run, return the declared columns (time series:
// a time column first, in ascending order), and return rows where the
// data guarantees some. The investigation dashboards' "explained" is
// checked against the detectors' own care rule, event by event.
func TestDashboardQueries(t *testing.T) {
	dm := newDemo(t)
	ctx := context.Background()
	seen := map[string]bool{}
	for _, d := range loadDashboards(t) {
		for _, sc := range scenarios(d, dm) {
			from, to := dm.from, dm.to
			if d.UID == "ehrwatch-pipeline-health" {
				// Ingestion, dead letters and delivery failures carry wall-clock times.
				to = time.Now().Add(5 * time.Minute)
				from = to.Add(-6 * time.Hour)
			}
			req := grafana.Request{From: from, To: to, Interval: grafana.AutoInterval(from, to, 1000, 0), Vars: sc.vars}
			for _, st := range sqlTargets(d) {
				t.Run(st.key+"/"+sc.name, func(t *testing.T) {
					seen[st.key] = true
					exp, ok := expectations[st.key]
					if !ok {
						t.Fatalf("no expectation declared for %s", st.key)
					}
					q, err := grafana.Expand(st.sql, req)
					if err != nil {
						t.Fatalf("expand: %v", err)
					}
					names, types, rows, err := query(ctx, dm.conn, q)
					if err != nil {
						t.Fatalf("query failed: %v\n%s", err, q)
					}
					if len(rows) == 0 {
						// An empty result over HTTP carries no header block:
						// ask the engine for the query's columns instead.
						if names, types, err = describe(ctx, dm.conn, q); err != nil {
							t.Fatalf("describe: %v\n%s", err, q)
						}
					}
					if !slices.Equal(names, exp.cols) {
						t.Errorf("columns %v, want %v", names, exp.cols)
					}
					t.Logf("%d rows", len(rows))
					if exp.rows && !sc.hostile && len(rows) == 0 {
						t.Errorf("no rows; the demo data guarantees some\n%s", q)
					}
					if st.timeSeries {
						checkTimeSeries(t, names, types, rows)
					}
					if !sc.hostile {
						checkSemantics(t, dm, st.key, names, rows)
					}
				})
			}
		}
	}
	for k := range expectations {
		if !seen[k] {
			t.Errorf("expectation %s matches no dashboard query", k)
		}
	}
}

func checkTimeSeries(t *testing.T, names, types []string, rows [][]any) {
	t.Helper()
	if len(names) == 0 || names[0] != "time" || !strings.HasPrefix(types[0], "DateTime") {
		t.Fatalf("time series: first column must be a DateTime named time, got %v %v", names, types)
	}
	var prev time.Time
	for i, r := range rows {
		ts, ok := deref(r[0]).(time.Time)
		if !ok {
			t.Fatalf("row %d: time is %T", i, deref(r[0]))
		}
		if ts.Before(prev) {
			t.Fatalf("row %d: time %s before %s; the plugin's long-to-wide conversion wants ascending time", i, ts, prev)
		}
		prev = ts
	}
}

func col(names []string, row []any, name string) any {
	i := slices.Index(names, name)
	if i < 0 {
		return nil
	}
	return deref(row[i])
}

// checkSemantics checks values that the demo data determines.
func checkSemantics(t *testing.T, dm *demo, key string, names []string, rows [][]any) {
	t.Helper()
	switch key {
	case "ehrwatch-pipeline-health/Findings without an alert, from ClickHouse/A":
		// The demo's findings all went through alerting.Manager: none may lack an alert.
		if n := col(names, rows[0], "findings_without_alert"); fmt.Sprint(deref(n)) != "0" {
			t.Errorf("findings without an alert: %v, want 0", n)
		}
	case "ehrwatch-patient-investigation/Every access/A":
		var nExp, nUnexp int
		got := map[string]bool{}
		for _, r := range rows {
			id := col(names, r, "event_id").(string)
			got[id] = true
			ev, ok := dm.events[id]
			if !ok {
				t.Errorf("unknown event %s", id)
				continue
			}
			want := dm.ref.Care(ev)
			explained := col(names, r, "explained").(bool)
			if explained != want.Explained {
				t.Errorf("event %s (user %s, dept %q, %s): dashboard explained=%v, detectors say %v (%s)",
					id, ev.UserID, ev.UserDepartment, ev.EventTime.Format(time.RFC3339), explained, want.Explained, want.Reason)
			}
			if explained {
				nExp++
			} else {
				nUnexp++
			}
			if by, ok := dm.crafted[id]; ok && col(names, r, "explained_by") != by {
				t.Errorf("crafted event %s: explained_by %v, want %s", id, col(names, r, "explained_by"), by)
			}
			if name := col(names, r, "user_name").(string); name == "" {
				t.Errorf("event %s: no user name from the users table", id)
			}
		}
		for id, ev := range dm.events {
			if ev.PatientID == dm.patientID && !got[id] {
				t.Errorf("access %s to the patient is missing", id)
			}
		}
		if nExp == 0 || nUnexp == 0 {
			t.Errorf("want explained and unexplained accesses, got %d and %d", nExp, nUnexp)
		}
	case "ehrwatch-user-investigation/Patients opened/A":
		type agg struct{ n, unexp uint64 }
		want := map[string]*agg{}
		for _, ev := range dm.events {
			if ev.UserID != dm.userID {
				continue
			}
			a := want[ev.PatientID]
			if a == nil {
				a = &agg{}
				want[ev.PatientID] = a
			}
			a.n++
			if !dm.ref.Care(ev).Explained {
				a.unexp++
			}
		}
		if len(rows) != len(want) {
			t.Errorf("%d patients, want %d", len(rows), len(want))
		}
		for _, r := range rows {
			p := col(names, r, "patient_id").(string)
			w := want[p]
			if w == nil {
				t.Errorf("patient %s was not opened by %s", p, dm.userID)
				continue
			}
			if n, u := col(names, r, "accesses"), col(names, r, "unexplained"); n != w.n || u != w.unexp {
				t.Errorf("patient %s: accesses %v unexplained %v, want %d and %d (detectors' care rule)", p, n, u, w.n, w.unexp)
			}
		}
	case "ehrwatch-detector-quality/Dispositions per detector/A":
		var confirmed, fp uint64
		for _, r := range rows {
			confirmed += col(names, r, "confirmed_violation").(uint64)
			fp += col(names, r, "false_positive").(uint64)
		}
		var wc, wf uint64
		for _, d := range dm.closed {
			switch d {
			case triage.DispositionConfirmedViolation:
				wc++
			case triage.DispositionFalsePositive:
				wf++
			}
		}
		if confirmed != wc || fp != wf {
			t.Errorf("confirmed %d false positives %d, want %d and %d (seeded)", confirmed, fp, wc, wf)
		}
	case "ehrwatch-soc-overview/Open queue/A":
		var total uint64
		if err := dm.conn.QueryRow(context.Background(), "SELECT count() FROM alerts FINAL").Scan(&total); err != nil {
			t.Fatal(err)
		}
		if len(rows) == 1 {
			if open := col(names, rows[0], "open_alerts").(uint64); open == 0 || open > total-uint64(len(dm.closed)) {
				t.Errorf("open queue %d; %d alerts, %d closed", open, total, len(dm.closed))
			}
		}
	}
}

// deref turns the *T the scan filled into T (nil for a NULL).
func deref(v any) any {
	rv := reflect.ValueOf(v)
	for rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil
		}
		rv = rv.Elem()
	}
	return rv.Interface()
}

// describe returns the columns and types of q's result (DESCRIBE (q)).
func describe(ctx context.Context, conn driver.Conn, q string) ([]string, []string, error) {
	rows, err := conn.Query(ctx, "DESCRIBE ("+q+")")
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	var names, types []string
	for rows.Next() {
		var name, typ, defType, defExpr, comment, codec, ttl string
		if err := rows.Scan(&name, &typ, &defType, &defExpr, &comment, &codec, &ttl); err != nil {
			return nil, nil, err
		}
		names, types = append(names, name), append(types, typ)
	}
	return names, types, rows.Err()
}

func newOf(ct driver.ColumnType) any { return reflect.New(ct.ScanType()).Interface() }

// TestProvisioning: the provisioned data sources carry the uids and types
// the dashboards use, the ClickHouse one with the read-only user, and the
// dashboard provider loads a directory.
func TestProvisioning(t *testing.T) {
	raw, err := os.ReadFile("provisioning/datasources/clickhouse.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var ds struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			UID      string         `yaml:"uid"`
			Type     string         `yaml:"type"`
			JSONData map[string]any `yaml:"jsonData"`
			Secure   map[string]any `yaml:"secureJsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(raw, &ds); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, d := range ds.Datasources {
		got[d.UID] = d.Type
		if d.UID == chUID {
			if d.JSONData["username"] != "ehrwatch_reader" || d.JSONData["defaultDatabase"] != "ehrwatch" || d.JSONData["protocol"] != "native" {
				t.Errorf("ClickHouse datasource jsonData %v: want the ehrwatch_reader user, database ehrwatch, native protocol", d.JSONData)
			}
			if pw, _ := d.Secure["password"].(string); !strings.HasPrefix(pw, "$__file{") {
				t.Errorf("the reader's password must come from a file ($__file{…}), got %q", pw)
			}
		}
	}
	if ds.APIVersion != 1 || got[chUID] != chType || got[promUID] != promType {
		t.Errorf("provisioned datasources %v (apiVersion %d): want %s=%s and %s=%s", got, ds.APIVersion, chUID, chType, promUID, promType)
	}
	raw, err = os.ReadFile("provisioning/dashboards/ehrwatch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var prov struct {
		Providers []struct {
			Type    string `yaml:"type"`
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	if err := yaml.Unmarshal(raw, &prov); err != nil {
		t.Fatal(err)
	}
	if len(prov.Providers) != 1 || prov.Providers[0].Type != "file" || !strings.HasPrefix(prov.Providers[0].Options.Path, "/") {
		t.Errorf("dashboard providers %+v: want one file provider with an absolute path", prov.Providers)
	}
}
