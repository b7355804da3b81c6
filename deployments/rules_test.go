package deploy_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// promtoolEnv names the promtool binary the test command builds
// (deployments/dev/promtool.sh).
const promtoolEnv = "EHRDEV_PROMTOOL"

// TestPrometheusRules checks the shipped PrometheusRule with the real
// `promtool check rules`, and that every metric its expressions use is one
// ehrwatch exports.
func TestPrometheusRules(t *testing.T) {
	doc := yamlDoc(t, "k8s/base/prometheusrule.yaml")
	spec, err := yaml.Marshal(get(doc, "spec"))
	if err != nil {
		t.Fatal(err)
	}
	// Every metric named in an expression exists in ehrwatch's code.
	exported := exportedMetrics(t)
	var alerts []string
	for _, g := range list(get(doc, "spec", "groups")) {
		for _, r := range list(get(g, "rules")) {
			alerts = append(alerts, str(get(r, "alert")))
			for _, m := range regexp.MustCompile(`ehrwatch_[a-z_]+`).FindAllString(str(get(r, "expr")), -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_count"), "_sum")
				if !exported[m] && !exported[base] {
					t.Errorf("rule %s uses %s, which ehrwatch does not export", get(r, "alert"), m)
				}
			}
		}
	}
	for _, want := range []string{"EhrwatchNotReady", "EhrwatchConsumerLagGrowing", "EhrwatchDeadLetters", "EhrwatchAlertDeliveryFailing"} {
		if !strings.Contains(strings.Join(alerts, " "), want) {
			t.Errorf("no %s rule", want)
		}
	}

	if testing.Short() {
		t.Skip("promtool check rules: skipped in -short mode")
	}
	promtool := os.Getenv(promtoolEnv)
	if promtool == "" {
		t.Fatalf("%s is not set: run `eval \"$(deployments/dev/promtool.sh env)\"` (builds promtool once) or `make test`", promtoolEnv)
	}
	path := filepath.Join(t.TempDir(), "ehrwatch.rules.yaml")
	if err := os.WriteFile(path, spec, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(promtool, "check", "rules", path).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "SUCCESS") {
		t.Fatalf("promtool check rules:\n%s", out)
	}
}

var (
	constRe = regexp.MustCompile(`const ns, sub = "([a-z_]+)", "([a-z_]+)"`)
	nsRe    = regexp.MustCompile(`Namespace: ns, Subsystem: sub, Name: "([a-z_]+)"`)
)

// exportedMetrics collects the metric names declared in ehrwatch's non-test
// Go code (Name: "ehrwatch_…" in metric options).
func exportedMetrics(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	re := regexp.MustCompile(`Name:\s*"(ehrwatch_[a-z_]+)"`)
	for _, root := range []string{"../pipeline", "../cmd", "../detectors"} {
		err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
				return err
			}
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			for _, m := range re.FindAllStringSubmatch(string(b), -1) {
				out[m[1]] = true
			}
			// Namespace and subsystem constants (pipeline/alerting):
			// const ns, sub = "ehrwatch", "alerting" … Namespace: ns, Subsystem: sub, Name: "x".
			if c := constRe.FindSubmatch(b); c != nil {
				for _, m := range nsRe.FindAllSubmatch(b, -1) {
					out[string(c[1])+"_"+string(c[2])+"_"+string(m[1])] = true
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 20 {
		t.Fatalf("found only %d metric names in the code", len(out))
	}
	return out
}
