package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
)

// parseFlags parses args with fs. A help request (-h, -help, --help) prints
// the usage on stdout and returns flag.ErrHelp (exit status 0); any other
// flag mistake is printed with the usage on fs's output and returned as a
// usageError (exit status 2).
func parseFlags(fs *flag.FlagSet, args []string, stdout io.Writer) error {
	if end := slices.Index(args, "--"); end >= 0 {
		if slices.ContainsFunc(args[:end], isHelpFlag) {
			fs.SetOutput(stdout)
		}
	} else if slices.ContainsFunc(args, isHelpFlag) {
		fs.SetOutput(stdout)
	}
	return flagError(fs.Parse(args))
}

func isHelpFlag(arg string) bool { return arg != "help" && isHelp(arg) }

// flagError makes a flag parsing error a usage error (exit status 2); the
// flag package has already printed it with the usage.
func flagError(err error) error {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return err
	}
	return usageError{err.Error()}
}

// subcommand checks that args start with one of subs. A help request
// prints usage on stdout and returns flag.ErrHelp (exit status 0); a
// missing or unknown subcommand prints usage on stderr and returns a usage
// error (exit status 2) that lists subs and names the closest.
func subcommand(cmd string, args []string, usage string, stdout, stderr io.Writer, subs ...string) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return flag.ErrHelp
	}
	if len(args) > 0 && slices.Contains(subs, args[0]) {
		return nil
	}
	fmt.Fprint(stderr, usage)
	want := make([]string, len(subs))
	for i, s := range subs {
		want[i] = "`" + cmd + " " + s + "`"
	}
	msg := cmd + ": want " + want[0]
	if n := len(want); n > 1 {
		msg = cmd + ": want " + strings.Join(want[:n-1], ", ") + " or " + want[n-1]
	}
	if len(args) > 0 {
		if c := closest(args[0], subs, 2); c != "" {
			msg += fmt.Sprintf("; did you mean %s?", c)
		}
	}
	return usageError{msg}
}

// commands is the command tree, for completion scripts: each command with
// its subcommands.
var commands = []struct {
	name string
	subs []string
}{
	{"run", nil},
	{"demo", nil},
	{"gen", nil},
	{"replay", nil},
	{"vocabulary", []string{"suggest"}},
	{"convert", nil},
	{"migrate", nil},
	{"check", []string{"clickhouse"}},
	{"serve", []string{"hash-token"}},
	{"report", []string{"patient", "user"}},
	{"config", []string{"validate", "defaults"}},
	{"bench", benchCommands},
	{"completion", []string{"bash", "zsh"}},
	{"version", nil},
	{"help", nil},
}

const completionUsage = `usage: ehrwatch completion bash|zsh

Prints a completion script for commands and subcommands. For example:
  source <(ehrwatch completion bash)                       # bash, this shell
  ehrwatch completion zsh > "${fpath[1]}/_ehrwatch"        # zsh
`

// runCompletion is `ehrwatch completion bash|zsh`.
func runCompletion(args []string, stdout, stderr io.Writer) error {
	if slices.ContainsFunc(args, isHelp) {
		fmt.Fprint(stdout, completionUsage)
		return flag.ErrHelp
	}
	if len(args) != 1 || (args[0] != "bash" && args[0] != "zsh") {
		fmt.Fprint(stderr, completionUsage)
		return usageError{"completion: want `completion bash` or `completion zsh`"}
	}
	var top []string
	var cases strings.Builder
	for _, c := range commands {
		top = append(top, c.name)
		if len(c.subs) > 0 {
			fmt.Fprintf(&cases, "    %s) words=%q ;;\n", c.name, strings.Join(c.subs, " "))
		}
	}
	if args[0] == "bash" {
		fmt.Fprintf(stdout, `# bash completion for ehrwatch (ehrwatch completion bash)
_ehrwatch() {
  local cur=${COMP_WORDS[COMP_CWORD]} words
  if [ "$COMP_CWORD" -eq 1 ]; then
    words=%q
  elif [ "$COMP_CWORD" -eq 2 ]; then
    case ${COMP_WORDS[1]} in
%s    *) words="--help" ;;
    esac
  else
    words="--help --config"
  fi
  COMPREPLY=($(compgen -W "$words" -- "$cur"))
}
complete -o default -F _ehrwatch ehrwatch
`, strings.Join(top, " "), cases.String())
		return nil
	}
	fmt.Fprintf(stdout, `#compdef ehrwatch
# zsh completion for ehrwatch (ehrwatch completion zsh)
_ehrwatch() {
  local words_
  if (( CURRENT == 2 )); then
    words_=%q
  elif (( CURRENT == 3 )); then
    case ${words[2]} in
%s    *) words_="--help" ;;
    esac
  else
    _files; return
  fi
  compadd -- ${=words_}
}
compdef _ehrwatch ehrwatch
`, strings.Join(top, " "), strings.ReplaceAll(cases.String(), "words=", "words_="))
	return nil
}
