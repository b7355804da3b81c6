package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Every command and subcommand answers --help (and -h) with its usage on
// stdout and exit status 0, as go, kubectl and promtool do.
func TestHelpOnEveryCommand(t *testing.T) {
	cmds := [][]string{{}}
	for _, c := range commands {
		cmds = append(cmds, []string{c.name})
		for _, s := range c.subs {
			cmds = append(cmds, []string{c.name, s})
		}
	}
	for _, c := range cmds {
		for _, h := range []string{"--help", "-h"} {
			args := append(append([]string{}, c...), h)
			t.Run(strings.Join(args, " "), func(t *testing.T) {
				var out, errb bytes.Buffer
				err := run(context.Background(), args, &out, &errb)
				if code := exitCode(err); code != 0 {
					t.Fatalf("exit status %d (err %v), want 0; stderr:\n%s", code, err, errb.String())
				}
				want := "usage: ehrwatch"
				if len(c) > 0 && c[0] == "version" {
					want = "ehrwatch " + version
				}
				if !strings.Contains(out.String(), want) {
					t.Fatalf("stdout does not contain %q:\n%s", want, out.String())
				}
			})
		}
	}
	// `help CMD` is CMD --help; `--version` prints the version.
	for _, args := range [][]string{{"help", "report", "patient"}, {"--version"}} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), args, &out, &errb); exitCode(err) != 0 || out.Len() == 0 {
			t.Errorf("%v: exit %d, stdout %q", args, exitCode(err), out.String())
		}
	}
	// A mistake is still exit status 2.
	var out, errb bytes.Buffer
	if err := run(context.Background(), []string{"run", "--no-such-flag"}, &out, &errb); exitCode(err) != 2 {
		t.Errorf("run --no-such-flag: exit %d (%v), want 2", exitCode(err), err)
	}
	// A mistyped command or subcommand is exit status 2 and names the
	// closest one.
	for _, c := range []struct{ args, want string }{
		{"serv", "did you mean serve?"},
		{"migrat", "did you mean migrate?"},
		{"frobnicate", `unknown command "frobnicate"`},
		{"report patiant", "report: want `report patient` or `report user`; did you mean patient?"},
		{"bench pipline", "did you mean pipeline?"},
		{"check", "check: want `check clickhouse`"},
	} {
		err := run(context.Background(), strings.Fields(c.args), &out, &errb)
		if exitCode(err) != 2 || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: exit %d, err %v, want exit 2 and %q", c.args, exitCode(err), err, c.want)
		}
	}
}

func TestCompletionScripts(t *testing.T) {
	for _, sh := range []string{"bash", "zsh"} {
		var out, errb bytes.Buffer
		if err := run(context.Background(), []string{"completion", sh}, &out, &errb); err != nil {
			t.Fatalf("completion %s: %v", sh, err)
		}
		for _, w := range []string{"ehrwatch", "validate defaults", "patient user", "hash-token"} {
			if !strings.Contains(out.String(), w) {
				t.Errorf("completion %s lacks %q", sh, w)
			}
		}
	}
}

// A table of bad configurations: each error names the key by its path (or
// the variable by its name), never a Go type.
func TestBadConfigsNameTheKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name, file string
		env        []string
		want       []string
	}{
		{"typo'd key", "kafka:\n  brokerz: [\"a:9092\"]\n", nil,
			[]string{"kafka.brokerz: unknown key (line 2); did you mean kafka.brokers?"}},
		{"typo'd nested key", "log:\n  levl: info\n", nil, []string{"log.levl: unknown key", "did you mean log.level?"}},
		{"wrong type: duration", "pipeline:\n  batch_max_wait: soon\n", nil,
			[]string{`pipeline.batch_max_wait: want a duration such as 500ms, 10s or 1h, got "soon" (line 2)`}},
		{"wrong type: integer", "pipeline:\n  batch_max_rows: many\n", nil,
			[]string{`pipeline.batch_max_rows: want a whole number, got "many"`}},
		{"wrong type: list", "kafka:\n  brokers: a:9092\n", nil, []string{`kafka.brokers: want a list, got "a:9092"`}},
		{"scalar where a section belongs", "kafka: 3\n", nil, []string{"kafka: want a mapping"}},
		{"detection key", "detection:\n  detectors:\n    vip:\n      severty: high\n", nil,
			[]string{"detection.detectors.vip.severty"}},
		{"bad value", "log:\n  level: loud\n", nil, []string{`log.level: want debug, info, warn or error, got "loud"`}},
		{"several at once", "kafka:\n  brokerz: []\nlog:\n  level: loud\n", nil,
			[]string{"kafka.brokerz: unknown key", "log.level: want debug"}},
		{"typo'd env var", "", []string{"EHRWATCH_KAFKA_BROKERZ=a:9092"},
			[]string{"EHRWATCH_KAFKA_BROKERZ: unknown configuration variable; did you mean EHRWATCH_KAFKA_BROKERS?"}},
		{"env var of no key", "", []string{"EHRWATCH_SOMETHING=1"}, []string{"EHRWATCH_SOMETHING: unknown configuration variable"}},
		{"env var for detection", "", []string{"EHRWATCH_DETECTION_ALLOWED_LATENESS=1h"},
			[]string{"EHRWATCH_DETECTION_ALLOWED_LATENESS: the detection section cannot be set from the environment"}},
		{"env var of the wrong type", "", []string{"EHRWATCH_PIPELINE_BATCH_MAX_WAIT=soon"},
			[]string{"pipeline.batch_max_wait (from EHRWATCH_PIPELINE_BATCH_MAX_WAIT): not a duration"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := ""
			if c.file != "" {
				path = write(strings.ReplaceAll(c.name, " ", "_")+".yaml", c.file)
			}
			_, err := LoadConfig(path, c.env)
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error does not contain %q:\n%s", w, msg)
				}
			}
			for _, goType := range []string{"not found in type", "pipeline.", "time.Duration", "cannot unmarshal"} {
				if strings.Contains(strings.ReplaceAll(msg, "pipeline.batch", ""), goType) {
					t.Errorf("error names a Go type (%q):\n%s", goType, msg)
				}
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadConfig(filepath.Join(dir, "nope.yaml"), nil)
		if err == nil || !strings.Contains(err.Error(), "nope.yaml") {
			t.Fatalf("err = %v, want it to name the file", err)
		}
		if !strings.Contains(err.Error(), "hint: check the path, or start from the defaults: ehrwatch config defaults >") {
			t.Errorf("err = %v, want it to say what to do next", err)
		}
	})
	t.Run("config validate via the CLI", func(t *testing.T) {
		var out, errb bytes.Buffer
		err := run(context.Background(), []string{"config", "validate", write("cli.yaml", "kafka:\n  brokerz: []\n")}, &out, &errb)
		if exitCode(err) != 1 || !strings.Contains(err.Error(), "kafka.brokerz") {
			t.Fatalf("exit %d, err %v", exitCode(err), err)
		}
	})
}
