package deploy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/ehrwatch/ehrwatch/detectors"
	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
)

// --- helpers -----------------------------------------------------------------

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// yamlDocs decodes every document of a YAML file into generic maps.
func yamlDocs(t *testing.T, path string) []map[string]any {
	t.Helper()
	dec := yaml.NewDecoder(strings.NewReader(readFile(t, path)))
	var out []map[string]any
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

func yamlDoc(t *testing.T, path string) map[string]any {
	t.Helper()
	docs := yamlDocs(t, path)
	if len(docs) != 1 {
		t.Fatalf("%s: want one YAML document, got %d", path, len(docs))
	}
	return docs[0]
}

// get walks a generic YAML value by keys (strings for maps, ints for lists).
func get(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, ok := v.(map[string]any)
			if !ok {
				return nil
			}
			v = m[k]
		case int:
			l, ok := v.([]any)
			if !ok || k >= len(l) {
				return nil
			}
			v = l[k]
		}
	}
	return v
}

func str(v any) string {
	if v == nil {
		return ""
	}
	return fmt.Sprint(v)
}

func list(v any) []any { l, _ := v.([]any); return l }

func strs(v any) []string {
	var out []string
	for _, x := range list(v) {
		out = append(out, str(x))
	}
	return out
}

func exists(t *testing.T, path string) bool {
	t.Helper()
	_, err := os.Stat(path)
	return err == nil
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// ehrwatchBin builds cmd/ehrwatch once per test binary.
func ehrwatchBin(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		dir, err := os.MkdirTemp("", "ehrwatch-deploy-test")
		if err != nil {
			binErr = err
			return
		}
		binPath = filepath.Join(dir, "ehrwatch")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/ehrwatch")
		cmd.Dir = ".."
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ./cmd/ehrwatch: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binPath
}

// secretFiles creates files standing in for the secrets and certificates a
// configuration references (their content is irrelevant to validation,
// except the hash key's length).
func secretFiles(t *testing.T) map[string]string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{"hash": strings.Repeat("k", 32), "ca": "", "password": "pw"}
	out := map[string]string{}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		out[name] = p
	}
	return out
}

// validateConfig runs `ehrwatch config validate path` with env added.
func validateConfig(t *testing.T, path string, env ...string) {
	t.Helper()
	cmd := exec.Command(ehrwatchBin(t), "config", "validate", path)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Errorf("ehrwatch config validate %s: %v\n%s", path, err, out)
	}
}

// startupChecks runs `ehrwatch config validate --for CMD` on the
// configuration at path as a shipped container starts it: args are the
// container's arguments (CMD first; its --listen becomes api.listen or
// http.listen as the command reads it), env its environment. Settings that
// name files point at stand-ins; the check is the one the command itself
// makes at start-up, so a shipped configuration that passes also starts.
func startupChecks(t *testing.T, path string, args []string, env map[string]string) {
	t.Helper()
	if len(args) == 0 {
		t.Fatalf("%s: container without arguments", path)
	}
	command := args[0]
	f := secretFiles(t)
	vars := fileEnv(t, path)
	for k, v := range env {
		switch {
		case k == "EHRWATCH_REFERENCE_HASH_KEY_FILE" && v != "":
			v = f["hash"]
		case strings.HasSuffix(k, "_FILE") && v != "":
			v = f["password"]
		}
		vars = append(vars, k+"="+v)
	}
	for i, a := range args {
		if (a == "--listen" || a == "-listen") && i+1 < len(args) {
			key := "EHRWATCH_HTTP_LISTEN"
			if command == "serve" {
				key = "EHRWATCH_API_LISTEN"
			}
			vars = append(vars, key+"="+args[i+1])
		}
	}
	cmd := exec.Command(ehrwatchBin(t), "config", "validate", "--for", command, path)
	cmd.Env = append(os.Environ(), vars...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("%s as `ehrwatch %s` starts it: %v\n%s", path, strings.Join(args, " "), err, out)
	}
}

// containerEnv is the literal environment of a container spec (values
// from Secrets or fields are skipped).
func containerEnv(c any) map[string]string {
	out := map[string]string{}
	for _, e := range list(get(c, "env")) {
		if v, ok := get(e, "value").(string); ok {
			out[str(get(e, "name"))] = v
		}
	}
	return out
}

// fileEnv points the file settings of the configuration at path to
// stand-ins: the hash key always, the CA files where TLS is enabled.
func fileEnv(t *testing.T, path string) []string {
	t.Helper()
	f := secretFiles(t)
	cfg := yamlDoc(t, path)
	env := []string{"EHRWATCH_REFERENCE_HASH_KEY_FILE=" + f["hash"]}
	for _, section := range []string{"kafka", "clickhouse"} {
		if get(cfg, section, "tls", "enabled") == true && str(get(cfg, section, "tls", "ca_file")) != "" {
			env = append(env, "EHRWATCH_"+strings.ToUpper(section)+"_TLS_CA_FILE="+f["ca"])
		}
	}
	return env
}

// --- versions ----------------------------------------------------------------

// devKafkaVersion is the Kafka version the dev broker (and so the tests) run.
func devKafkaVersion(t *testing.T) string {
	m := regexp.MustCompile(`KAFKA_VERSION="\$\{EHRDEV_KAFKA_VERSION:-([0-9.]+)\}"`).FindStringSubmatch(readFile(t, "dev/kafka.sh"))
	if m == nil {
		t.Fatal("no KAFKA_VERSION default in deployments/dev/kafka.sh")
	}
	return m[1]
}

// devChDBVersion is the chDB (ClickHouse engine) version the tests run.
func devChDBVersion(t *testing.T) string {
	m := regexp.MustCompile(`(?m)^chdb-core==([0-9.]+)`).FindStringSubmatch(readFile(t, "dev/chdb_http/requirements.txt"))
	if m == nil {
		t.Fatal("no chdb-core pin")
	}
	return m[1]
}

func imageTag(image string) (string, string) {
	i := strings.LastIndex(image, ":")
	if i < 0 || strings.Contains(image[i:], "/") {
		return image, ""
	}
	return image[:i], image[i+1:]
}

// --- Dockerfile ----------------------------------------------------------------

func TestDockerfile(t *testing.T) {
	df := readFile(t, "Dockerfile")
	goMod := readFile(t, "../go.mod")
	goVer := regexp.MustCompile(`(?m)^go ([0-9.]+)`).FindStringSubmatch(goMod)
	if goVer == nil {
		t.Fatal("go.mod has no go directive")
	}
	for _, want := range []string{
		"ARG GO_VERSION=" + goVer[1],
		"FROM golang:${GO_VERSION}-bookworm AS build",
		"CGO_ENABLED=0",
		"-trimpath",
		"-X main.version=${VERSION}",
		"./cmd/ehrwatch",
		"./cmd/healthcheck",
		"FROM gcr.io/distroless/static-debian12:nonroot",
		"USER 65532:65532",
		"EXPOSE 9464 8080",
		`ENTRYPOINT ["/ehrwatch"]`,
		"docker build -f deployments/Dockerfile",
	} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %q", want)
		}
	}
	if !exists(t, "Dockerfile.dockerignore") {
		t.Error("deployments/Dockerfile.dockerignore is missing")
	}
	// The exposed ports are the defaults of http.listen and of the API the
	// compose file publishes.
	if !strings.Contains(readFile(t, "../cmd/ehrwatch/config.go"), `HTTPConfig{Listen: ":9464"}`) {
		t.Error(`http.listen's default is no longer ":9464"; update EXPOSE, the compose file and the manifests`)
	}
	if api.DefaultConfig().Listen != "127.0.0.1:8080" {
		t.Errorf("api.listen default %q: update EXPOSE and the compose file", api.DefaultConfig().Listen)
	}
}

// --- docker compose ------------------------------------------------------------

type composeService struct {
	name string
	m    map[string]any
}

func composeServices(t *testing.T) (map[string]any, []composeService) {
	t.Helper()
	doc := yamlDoc(t, "docker-compose.yml")
	var out []composeService
	svcs, _ := doc["services"].(map[string]any)
	for name, v := range svcs {
		out = append(out, composeService{name, v.(map[string]any)})
	}
	slices.SortFunc(out, func(a, b composeService) int { return strings.Compare(a.name, b.name) })
	return doc, out
}

func TestComposeFile(t *testing.T) {
	doc, svcs := composeServices(t)
	byName := map[string]map[string]any{}
	for _, s := range svcs {
		byName[s.name] = s.m
	}
	for _, want := range []string{"kafka", "kafka-init", "clickhouse", "migrate", "run", "serve", "generator", "grafana", "prometheus", "hospital", "reference-load", "secrets"} {
		if byName[want] == nil {
			t.Errorf("service %s missing", want)
		}
	}
	readme := readFile(t, "README.md")
	if !strings.Contains(readme, "chDB "+devChDBVersion(t)) {
		t.Errorf("deployments/README.md must name the engine the tests run (chDB %s)", devChDBVersion(t))
	}
	usage := readFile(t, "../cmd/ehrwatch/main.go")
	users := accessUsers(t)
	secretNames := readFile(t, "compose/init-secrets.sh")
	for _, s := range svcs {
		t.Run(s.name, func(t *testing.T) {
			img := str(s.m["image"])
			repo, tag := imageTag(img)
			if tag == "" || tag == "latest" {
				t.Errorf("image %q: pin a tag", img)
			}
			if s.m["build"] == nil && !strings.Contains(readme, img) {
				t.Errorf("image %s is not listed in deployments/README.md", img)
			}
			switch repo {
			case "apache/kafka":
				if tag != devKafkaVersion(t) {
					t.Errorf("kafka %s, but the dev broker the tests use is %s", tag, devKafkaVersion(t))
				}
			case "clickhouse/clickhouse-server":
				if !regexp.MustCompile(`^\d+\.(3|8)$`).MatchString(tag) {
					t.Errorf("clickhouse %s is not an LTS line (YY.3 or YY.8)", tag)
				}
			case "ehrwatch":
				if str(get(s.m, "build", "context")) != ".." || str(get(s.m, "build", "dockerfile")) != "deployments/Dockerfile" {
					t.Errorf("ehrwatch image must build from the repository root with deployments/Dockerfile")
				}
				cmd := strs(s.m["command"])
				if len(cmd) == 0 || !regexp.MustCompile(`(?m)^  `+regexp.QuoteMeta(cmd[0])+`\s`).MatchString(usage) {
					t.Errorf("command %v: %q is not an ehrwatch subcommand", cmd, cmd)
				}
				if slices.Contains(cmd, "--config") && cmd[slices.Index(cmd, "--config")+1] != "/etc/ehrwatch/ehrwatch.yaml" {
					t.Errorf("command %v: the config is mounted at /etc/ehrwatch/ehrwatch.yaml", cmd)
				}
				if s.m["read_only"] != true || !slices.Contains(strs(s.m["cap_drop"]), "ALL") {
					t.Error("ehrwatch containers run read-only with every capability dropped")
				}
				env, _ := s.m["environment"].(map[string]any)
				if u := str(env["EHRWATCH_CLICKHOUSE_USERNAME"]); u != "" {
					if !slices.Contains(users, u) {
						t.Errorf("ClickHouse user %s is not created by clickhouse/access.sql", u)
					}
					pf := str(env["EHRWATCH_CLICKHOUSE_PASSWORD_FILE"])
					if filepath.Base(pf) != u+"-password" || !strings.Contains(secretNames, strings.TrimSuffix(filepath.Base(pf), "-password")) {
						t.Errorf("%s's password file %q is not one init-secrets.sh creates", u, pf)
					}
				}
			}
			for _, v := range list(s.m["volumes"]) {
				src, _, _ := strings.Cut(str(v), ":")
				if strings.HasPrefix(src, ".") && !exists(t, src) {
					t.Errorf("volume %q: %s does not exist", v, src)
				}
			}
			for _, p := range list(s.m["ports"]) {
				if !strings.HasPrefix(str(p), "127.0.0.1:") {
					t.Errorf("port %v: publish on 127.0.0.1 only", p)
				}
			}
			deps, _ := s.m["depends_on"].(map[string]any)
			for dep, c := range deps {
				target := byName[dep]
				if target == nil {
					t.Errorf("depends on unknown service %s", dep)
					continue
				}
				switch cond := str(get(c, "condition")); cond {
				case "service_healthy":
					if target["healthcheck"] == nil {
						t.Errorf("waits for %s to be healthy, but it has no healthcheck", dep)
					}
				case "service_completed_successfully":
					if str(target["restart"]) != "no" {
						t.Errorf("waits for %s to complete, but it is not a one-shot (restart: \"no\")", dep)
					}
				case "service_started":
				default:
					t.Errorf("depends_on %s: condition %q", dep, cond)
				}
			}
		})
	}
	for _, name := range []string{"kafka", "clickhouse", "run", "serve", "grafana", "prometheus"} {
		if byName[name]["healthcheck"] == nil {
			t.Errorf("%s has no healthcheck", name)
		}
	}
	if !slices.Contains(strs(byName["generator"]["profiles"]), "generator") {
		t.Error("the generator runs only in the generator profile")
	}
	if cmd := strs(byName["generator"]["command"]); !slices.Contains(cmd, "--kafka") || !slices.Contains(cmd, "--rate") {
		t.Errorf("generator command %v: want gen --kafka … --rate N", cmd)
	}
	// hospital (reference data) and generator (events) describe one hospital.
	flags := func(s string) []string {
		var out []string
		for _, a := range strs(byName[s]["command"]) {
			for _, f := range []string{"--seed=", "--days=", "--users=", "--start="} {
				if strings.HasPrefix(a, f) {
					out = append(out, a)
				}
			}
		}
		return out
	}
	if h, g := flags("hospital"), flags("generator"); len(h) != 4 || !slices.Equal(h, g) {
		t.Errorf("hospital %v and generator %v must share --seed, --days, --users and --start", h, g)
	}
	// run: the healthcheck probes http.listen; Docker waits longer than the pipeline's shutdown.
	cfg := yamlDoc(t, "compose/ehrwatch.yaml")
	_, port, _ := strings.Cut(str(get(cfg, "http", "listen")), ":")
	if hc := strings.Join(strs(get(byName["run"], "healthcheck", "test")), " "); !strings.Contains(hc, "127.0.0.1:"+port+"/readyz") {
		t.Errorf("run healthcheck %q does not probe /readyz on http.listen's port %s", hc, port)
	}
	grace, err := time.ParseDuration(str(byName["run"]["stop_grace_period"]))
	if err != nil || grace <= shutdownTimeout(t, cfg) {
		t.Errorf("run stop_grace_period %v must exceed pipeline.shutdown_timeout %s", byName["run"]["stop_grace_period"], shutdownTimeout(t, cfg))
	}
	// Grafana: the pinned plugin, the provisioning and the dashboards where the provider looks.
	genv, _ := byName["grafana"]["environment"].(map[string]any)
	plugin := strings.Fields(str(genv["GF_INSTALL_PLUGINS"]))
	if len(plugin) != 2 || plugin[0] != "grafana-clickhouse-datasource" {
		t.Fatalf("GF_INSTALL_PLUGINS %q: want \"grafana-clickhouse-datasource <version>\"", genv["GF_INSTALL_PLUGINS"])
	}
	ds := yamlDoc(t, "grafana/provisioning/datasources/clickhouse.yaml")
	if v := str(get(ds, "datasources", 0, "jsonData", "version")); v != plugin[1] {
		t.Errorf("datasource jsonData.version %s, plugin installed %s", v, plugin[1])
	}
	if !strings.Contains(readme, "grafana-clickhouse-datasource "+plugin[1]) {
		t.Errorf("deployments/README.md does not name grafana-clickhouse-datasource %s", plugin[1])
	}
	provider := yamlDoc(t, "grafana/provisioning/dashboards/ehrwatch.yaml")
	mounts := map[string]string{}
	for _, v := range list(byName["grafana"]["volumes"]) {
		parts := strings.Split(str(v), ":")
		mounts[parts[1]] = parts[0]
	}
	if src := mounts[str(get(provider, "providers", 0, "options", "path"))]; src != "./grafana/dashboards" {
		t.Errorf("the dashboard provider reads %s, where compose mounts %q, not ./grafana/dashboards",
			get(provider, "providers", 0, "options", "path"), src)
	}
	if mounts["/etc/grafana/provisioning"] != "./grafana/provisioning" {
		t.Error("grafana must mount ./grafana/provisioning at /etc/grafana/provisioning")
	}
	for _, key := range []string{"EHRWATCH_CLICKHOUSE_HOST", "EHRWATCH_CLICKHOUSE_PORT", "EHRWATCH_CLICKHOUSE_SECURE", "EHRWATCH_PROMETHEUS_URL"} {
		if genv[key] == nil || !strings.Contains(readFile(t, "grafana/provisioning/datasources/clickhouse.yaml"), "${"+key+"}") {
			t.Errorf("%s: set in grafana's environment and used by the datasource provisioning", key)
		}
	}
	if str(get(ds, "datasources", 0, "jsonData", "username")) != "ehrwatch_reader" {
		t.Error("Grafana must use the read-only ehrwatch_reader user")
	}
	// Prometheus scrapes run's metrics port.
	if prom := readFile(t, "compose/prometheus.yml"); !strings.Contains(prom, `"run:`+port+`"`) {
		t.Errorf("compose/prometheus.yml does not scrape run:%s", port)
	}
	if doc["volumes"] == nil {
		t.Error("named volumes missing")
	}

	// The compose config validates, passes the start-up checks of every
	// command that uses it, and its demo token is what it says.
	validateConfig(t, "compose/ehrwatch.yaml", fileEnv(t, "compose/ehrwatch.yaml")...)
	for _, name := range []string{"run", "serve", "migrate"} {
		env := map[string]string{}
		if m, ok := byName[name]["environment"].(map[string]any); ok {
			for k, v := range m {
				env[k] = fmt.Sprint(v)
			}
		}
		startupChecks(t, "compose/ehrwatch.yaml", strs(byName[name]["command"]), env)
	}
	m := regexp.MustCompile(`demo token is "([^"]+)"`).FindStringSubmatch(readFile(t, "compose/ehrwatch.yaml"))
	if m == nil || str(get(cfg, "api", "tokens", 0, "hash")) != api.HashToken(m[1]) {
		t.Error("compose/ehrwatch.yaml: the documented demo token does not hash to api.tokens[0].hash")
	}
}

func shutdownTimeout(t *testing.T, cfg map[string]any) time.Duration {
	t.Helper()
	s := str(get(cfg, "pipeline", "shutdown_timeout"))
	if s == "" {
		return 30 * time.Second // ingest.DefaultConfig
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.Fatalf("pipeline.shutdown_timeout %q: %v", s, err)
	}
	return d
}

// --- Kubernetes -------------------------------------------------------------------

// kustomizeFiles checks a kustomization's file references and returns the
// manifests (resources that are files) it lists.
func kustomizeFiles(t *testing.T, dir string) []string {
	t.Helper()
	k := yamlDoc(t, filepath.Join(dir, "kustomization.yaml"))
	var manifests []string
	for _, r := range strs(k["resources"]) {
		p := filepath.Join(dir, r)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("%s: resource %s does not exist", dir, r)
			continue
		}
		if st.IsDir() {
			if !exists(t, filepath.Join(p, "kustomization.yaml")) {
				t.Errorf("%s: %s is a directory without kustomization.yaml", dir, r)
			}
			continue
		}
		manifests = append(manifests, p)
	}
	for _, g := range list(k["configMapGenerator"]) {
		for _, f := range strs(get(g, "files")) {
			_, f, _ = strings.Cut(f, "=")
			if !exists(t, filepath.Join(dir, f)) {
				t.Errorf("%s: configMapGenerator file %s does not exist", dir, f)
			}
		}
	}
	for _, p := range list(k["patches"]) {
		if f := str(get(p, "path")); f != "" && !exists(t, filepath.Join(dir, f)) {
			t.Errorf("%s: patch %s does not exist", dir, f)
		}
	}
	for _, img := range list(k["images"]) {
		if tag := str(get(img, "newTag")); tag == "" || tag == "latest" {
			t.Errorf("%s: image %v: pin newTag", dir, get(img, "name"))
		}
	}
	return manifests
}

func TestKubernetesManifests(t *testing.T) {
	base := kustomizeFiles(t, "k8s/base")
	overlay := kustomizeFiles(t, "k8s/overlays/example")
	objects := map[string]map[string]any{} // kind/name
	for _, f := range append(base, overlay...) {
		for _, d := range yamlDocs(t, f) {
			kind, name := str(d["kind"]), str(get(d, "metadata", "name"))
			if kind == "" || name == "" || d["apiVersion"] == nil {
				t.Errorf("%s: object without apiVersion, kind or name", f)
			}
			objects[kind+"/"+name] = d
		}
	}
	readme := readFile(t, "README.md")
	cfg := yamlDoc(t, "k8s/base/ehrwatch.yaml")
	_, metricsPort, _ := strings.Cut(str(get(cfg, "http", "listen")), ":")

	run := objects["Deployment/ehrwatch-run"]
	serve := objects["Deployment/ehrwatch-serve"]
	job := objects["Job/ehrwatch-migrate"]
	if run == nil || serve == nil || job == nil {
		t.Fatalf("want Deployments ehrwatch-run, ehrwatch-serve and Job ehrwatch-migrate; have %v", keysOf(objects))
	}
	for _, o := range []map[string]any{run, serve, job} {
		checkPodSpec(t, str(get(o, "metadata", "name")), get(o, "spec", "template", "spec"), readme)
	}
	// run: probes on the operational endpoint, graceful termination.
	c := get(run, "spec", "template", "spec", "containers", 0)
	if args := strs(get(c, "args")); len(args) == 0 || args[0] != "run" {
		t.Errorf("ehrwatch-run args %v", args)
	}
	if p := str(get(c, "livenessProbe", "httpGet", "path")); p != "/healthz" {
		t.Errorf("run liveness probe %s, want /healthz", p)
	}
	if p := str(get(c, "readinessProbe", "httpGet", "path")); p != "/readyz" {
		t.Errorf("run readiness probe %s, want /readyz", p)
	}
	if port := str(get(c, "ports", 0, "containerPort")); port != metricsPort {
		t.Errorf("run containerPort %s, http.listen port %s", port, metricsPort)
	}
	grace, _ := strconv.Atoi(str(get(run, "spec", "template", "spec", "terminationGracePeriodSeconds")))
	if time.Duration(grace)*time.Second <= shutdownTimeout(t, cfg) {
		t.Errorf("terminationGracePeriodSeconds %d must exceed pipeline.shutdown_timeout %s", grace, shutdownTimeout(t, cfg))
	}
	// serve and migrate use their own ClickHouse users.
	for o, user := range map[string]string{"ehrwatch-run": "ehrwatch_writer", "ehrwatch-serve": "ehrwatch_api", "ehrwatch-migrate": "ehrwatch_admin"} {
		var obj map[string]any
		for _, x := range []map[string]any{run, serve, job} {
			if str(get(x, "metadata", "name")) == o {
				obj = x
			}
		}
		found := false
		for _, e := range list(get(obj, "spec", "template", "spec", "containers", 0, "env")) {
			if str(get(e, "name")) == "EHRWATCH_CLICKHOUSE_USERNAME" && str(get(e, "value")) == user {
				found = true
			}
		}
		if !found {
			t.Errorf("%s must connect as %s (EHRWATCH_CLICKHOUSE_USERNAME)", o, user)
		}
	}
	if args := strs(get(job, "spec", "template", "spec", "containers", 0, "args")); len(args) == 0 || args[0] != "migrate" {
		t.Errorf("migrate job args %v", args)
	}
	if args := strs(get(serve, "spec", "template", "spec", "containers", 0, "args")); len(args) == 0 || args[0] != "serve" {
		t.Errorf("serve args %v", args)
	}
	// Services and budgets select the pods they are for.
	runLabels := get(run, "spec", "template", "metadata", "labels").(map[string]any)
	serveLabels := get(serve, "spec", "template", "metadata", "labels").(map[string]any)
	for key, labels := range map[string]map[string]any{
		"Service/ehrwatch-metrics": runLabels, "PodDisruptionBudget/ehrwatch-run": runLabels,
		"Service/ehrwatch-api": serveLabels, "PodDisruptionBudget/ehrwatch-serve": serveLabels,
	} {
		o := objects[key]
		if o == nil {
			t.Errorf("%s missing", key)
			continue
		}
		sel := get(o, "spec", "selector")
		if m, ok := get(sel, "matchLabels").(map[string]any); ok {
			sel = m
		}
		for k, v := range sel.(map[string]any) {
			if labels[k] != v {
				t.Errorf("%s selects %s=%v, which its pods do not carry", key, k, v)
			}
		}
	}
	if !strings.Contains(readme, "partition") || !strings.Contains(readFile(t, "k8s/base/deployment-run.yaml"), "partition count") {
		t.Error("the README and the run Deployment must say that replicas beyond the partition count do nothing")
	}

	// The configurations validate (file settings pointed at stand-ins).
	validateConfig(t, "k8s/base/ehrwatch.yaml", fileEnv(t, "k8s/base/ehrwatch.yaml")...)
	validateConfig(t, "k8s/overlays/example/ehrwatch.yaml", fileEnv(t, "k8s/overlays/example/ehrwatch.yaml")...)
	// ... and pass the start-up checks of each workload that reads them.
	for _, path := range []string{"k8s/base/ehrwatch.yaml", "k8s/overlays/example/ehrwatch.yaml"} {
		for _, o := range []map[string]any{run, serve, job} {
			c := get(o, "spec", "template", "spec", "containers", 0)
			startupChecks(t, path, strs(get(c, "args")), containerEnv(c))
		}
	}

	// kubectl, where installed, renders the overlay.
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		testenv.Skip(t, "kubectl not installed: the overlay was checked file by file only, not rendered")
	}
	out, err := exec.Command(kubectl, "kustomize", "k8s/overlays/example").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl kustomize k8s/overlays/example: %v\n%s", err, out)
	}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	rendered := map[string]bool{}
	var configRefs []string
	for {
		var d map[string]any
		if err := dec.Decode(&d); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatal(err)
			}
			break
		}
		rendered[str(d["kind"])+"/"+str(get(d, "metadata", "name"))] = true
		if ns := str(get(d, "metadata", "namespace")); str(d["kind"]) != "Namespace" && ns != "ehrwatch" {
			t.Errorf("%s/%s rendered in namespace %q", d["kind"], get(d, "metadata", "name"), ns)
		}
		for _, v := range list(get(d, "spec", "template", "spec", "volumes")) {
			if n := str(get(v, "configMap", "name")); n != "" {
				configRefs = append(configRefs, n)
			}
		}
		for _, c := range list(get(d, "spec", "template", "spec", "containers")) {
			if _, tag := imageTag(str(get(c, "image"))); tag == "" || tag == "latest" {
				t.Errorf("rendered image %v is not pinned", get(c, "image"))
			}
		}
	}
	for _, n := range configRefs {
		if !rendered["ConfigMap/"+n] && !strings.Contains(readme, n) {
			t.Errorf("a pod mounts ConfigMap %s, which is neither generated nor documented", n)
		}
	}
	// The migrate Job is named after the image tag and mounts a ConfigMap
	// whose name does not change with its content, so `kubectl apply`
	// never tries to change a finished (immutable) Job.
	tag := str(get(yamlDoc(t, "k8s/overlays/example/kustomization.yaml"), "images", 0, "newTag"))
	if !rendered["Job/ehrwatch-migrate-"+tag] {
		t.Errorf("rendered overlay has no Job ehrwatch-migrate-%s (have %v)", tag, keysOf(rendered))
	}
	if !rendered["ConfigMap/ehrwatch-migrate-config"] || !rendered["ServiceMonitor/ehrwatch-run"] || !rendered["PrometheusRule/ehrwatch"] {
		t.Error("rendered overlay lacks ehrwatch-migrate-config (unhashed), the ServiceMonitor or the PrometheusRule")
	}
}

func keysOf[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// checkPodSpec: non-root, read-only root file system, no capabilities,
// resources, secrets by reference and documented.
func checkPodSpec(t *testing.T, name string, spec any, readme string) {
	t.Helper()
	if get(spec, "securityContext", "runAsNonRoot") != true {
		t.Errorf("%s: pod securityContext.runAsNonRoot must be true", name)
	}
	if get(spec, "automountServiceAccountToken") != false {
		t.Errorf("%s: ehrwatch needs no service account token", name)
	}
	for _, c := range list(get(spec, "containers")) {
		sc := get(c, "securityContext")
		if get(sc, "readOnlyRootFilesystem") != true || get(sc, "allowPrivilegeEscalation") != false ||
			!slices.Contains(strs(get(sc, "capabilities", "drop")), "ALL") {
			t.Errorf("%s: container securityContext must set readOnlyRootFilesystem, no privilege escalation, drop ALL", name)
		}
		for _, kind := range []string{"requests", "limits"} {
			for _, r := range []string{"cpu", "memory"} {
				if get(c, "resources", kind, r) == nil {
					t.Errorf("%s: resources.%s.%s missing", name, kind, r)
				}
			}
		}
		if img := str(get(c, "image")); img != "ehrwatch" {
			t.Errorf("%s: image %q: the base uses the name ehrwatch, pinned by the kustomization's images", name, img)
		}
		mounts := map[string]bool{}
		for _, m := range list(get(c, "volumeMounts")) {
			mounts[str(get(m, "name"))] = true
		}
		for _, v := range list(get(spec, "volumes")) {
			if !mounts[str(get(v, "name"))] {
				t.Errorf("%s: volume %v is not mounted", name, get(v, "name"))
			}
		}
		for _, e := range list(get(c, "env")) {
			if get(e, "valueFrom", "secretKeyRef") != nil {
				t.Errorf("%s: %v: secrets are mounted as files, not put into the environment", name, get(e, "name"))
			}
		}
	}
	for _, v := range list(get(spec, "volumes")) {
		for _, ref := range []string{str(get(v, "secret", "secretName")), str(get(v, "configMap", "name"))} {
			if ref != "" && ref != "ehrwatch-config" && !strings.Contains(readme, ref) {
				t.Errorf("%s: %s is referenced but not documented in deployments/README.md", name, ref)
			}
		}
	}
}

// --- the example configuration -----------------------------------------------------

// leafKeys flattens a YAML mapping into dotted key paths (list elements as
// key[]), the way `config defaults` lays the configuration out.
func leafKeys(v any, prefix string, out map[string]bool) {
	switch x := v.(type) {
	case map[string]any:
		if len(x) == 0 {
			out[prefix] = true
		}
		for k, c := range x {
			p := k
			if prefix != "" {
				p = prefix + "." + k
			}
			leafKeys(c, p, out)
		}
	case []any:
		if len(x) > 0 {
			if m, ok := x[0].(map[string]any); ok {
				leafKeys(m, prefix+"[]", out)
				return
			}
		}
		out[prefix] = true
	default:
		out[prefix] = true
	}
}

// yamlKeys lists the yaml keys of a struct type's fields.
func yamlKeys(v any) []string {
	var out []string
	t := reflect.TypeOf(v)
	for i := 0; i < t.NumField(); i++ {
		if n := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]; n != "" && n != "-" {
			out = append(out, n)
		}
	}
	return out
}

func TestExampleConfig(t *testing.T) {
	const path = "ehrwatch.example.yaml"
	validateConfig(t, path, fileEnv(t, path)...)

	cmd := exec.Command(ehrwatchBin(t), "config", "defaults")
	defaults, err := cmd.Output()
	if err != nil {
		t.Fatalf("ehrwatch config defaults: %v", err)
	}
	var def map[string]any
	if err := yaml.Unmarshal(defaults, &def); err != nil {
		t.Fatal(err)
	}
	want, have := map[string]bool{}, map[string]bool{}
	leafKeys(def, "", want)
	var ex map[string]any
	text := readFile(t, path)
	if err := yaml.Unmarshal([]byte(text), &ex); err != nil {
		t.Fatal(err)
	}
	leafKeys(ex, "", have)
	// Every key of `config defaults` is in the example, with a comment on the line above.
	for k := range want {
		present := have[k]
		for h := range have {
			present = present || strings.HasPrefix(h, k+".") // a map that is empty by default, filled in
		}
		if !present {
			t.Errorf("the example lacks %s", k)
		}
	}
	// Every such key has a comment on the line above (or above its list item).
	type frame struct {
		indent int
		key    string
	}
	var stack []frame
	lines := strings.Split(text, "\n")
	keyRe := regexp.MustCompile(`^(\s*)(- )?([a-z0-9_]+):`)
	for i, l := range lines {
		m := keyRe.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		indent := len(m[1]) + len(m[2])
		for len(stack) > 0 && stack[len(stack)-1].indent >= indent {
			stack = stack[:len(stack)-1]
		}
		if m[2] != "" && len(stack) > 0 && !strings.HasSuffix(stack[len(stack)-1].key, "[]") {
			stack[len(stack)-1].key += "[]"
		}
		var parts []string
		for _, f := range stack {
			parts = append(parts, f.key)
		}
		path := strings.Join(append(parts, m[3]), ".")
		stack = append(stack, frame{indent, m[3]})
		if !want[path] && strings.Contains(path, ".") {
			continue
		}
		if i == 0 || !strings.HasPrefix(strings.TrimSpace(lines[i-1]), "#") {
			t.Errorf("line %d (%s) has no comment above it", i+1, path)
		}
	}
	// Keys of list elements that are empty by default are shown in commented examples.
	for lst, keys := range map[string][]string{
		"api.tokens":          yamlKeys(api.TokenConfig{}),
		"api.oidc":            yamlKeys(api.OIDCConfig{}),
		"detection.allowlist": yamlKeys(detectors.AllowlistEntry{}),
	} {
		for _, k := range keys {
			if !regexp.MustCompile(`(?m)^\s*#\s+(- )?` + k + `:`).MatchString(text) {
				t.Errorf("%s[].%s is not shown in a commented example", lst, k)
			}
		}
	}
	if len(want) < 200 {
		t.Errorf("only %d keys in `config defaults`", len(want))
	}
}
