// Package grafana holds ehrwatch's Grafana provisioning (dashboards,
// datasources) and, for its tests, Expand: the query interpolation that
// Grafana and the ClickHouse data source plugin (grafana-clickhouse-datasource
// 4.x) apply to a panel's rawSql before it reaches ClickHouse.
//
// Expand reproduces, in order, what happens to a query:
//
//  1. Frontend, the plugin's applyConditionalAll: every
//     $__conditionalAll(condition, $var) becomes "1=1" when $var is empty
//     or All ("$__all"), else condition (arguments found by bracket
//     counting, the last occurrence first).
//  2. Frontend, Grafana's templateSrv.replace with the plugin's format
//     function: $var, ${var}, ${var:format} and [[var]] are replaced;
//     without a format, a multi-value (or All) variable becomes
//     'a','b' and a single value is inserted raw. Formats: sqlstring
//     (' doubled, " backslashed, quoted), singlequote (' backslashed,
//     quoted), doublequote, raw, csv, text. Unknown names stay as they
//     are (that is how $__timeFilter survives to step 3), except
//     Grafana's global variables $__from/$__to (epoch ms; ${__from:date:seconds}).
//  3. Backend, the plugin's macros through grafana-plugin-sdk-go's
//     sqlutil.Interpolate: a macro matches \$__name\b; its arguments are
//     read only when "(" follows the name directly, split at top-level
//     commas and trimmed. The ClickHouse macros:
//     $__timeFilter(c)    c >= toDateTime(from_s) AND c <= toDateTime(to_s)
//     $__timeFilter_ms(c) c >= fromUnixTimestamp64Milli(from_ms) AND c <= fromUnixTimestamp64Milli(to_ms)
//     $__dateFilter(c)    c >= toDate('YYYY-MM-DD') AND c <= toDate('YYYY-MM-DD')
//     $__dateTimeFilter(d, t) / $__dt(d, t)  both of the above, parenthesised
//     $__fromTime, $__toTime        toDateTime(unix seconds)
//     $__fromTime_ms, $__toTime_ms  fromUnixTimestamp64Milli(unix ms)
//     $__timeInterval(c)     toStartOfInterval(toDateTime(c), INTERVAL n second), n = max(1, interval in s)
//     $__timeInterval_ms(c)  toStartOfInterval(toDateTime64(c, 3), INTERVAL n millisecond)
//     $__interval_s          n
//
// Sources: grafana/clickhouse-datasource pkg/macros/macros.go (backend
// macros) and src/data/CHDatasource.ts (applyConditionalAll, format),
// grafana-plugin-sdk-go data/sqlutil/macros.go (matching and argument
// parsing), Grafana's formatRegistry (sqlstring, singlequote). Anything
// Expand does not know ($__timeGroup, $__table, an unknown format, an
// undefined ${var}) is an error rather than a silent pass, so a dashboard
// cannot use something the tests do not exercise.
package grafana

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Variable is the current value of a dashboard variable.
type Variable struct {
	// Values holds the selected values (one for textbox, constant and
	// single-value variables).
	Values []string
	// Multi marks a multi-value or include-All variable: without a format
	// its values are quoted and comma-joined.
	Multi bool
	// All means "All" is selected: the value is "$__all" (conditionalAll
	// then yields 1=1) and, without a custom all value, the variable
	// expands to every option (Values).
	All bool
}

// Request is one panel query: the dashboard time range, the panel's
// interval and the variables.
type Request struct {
	From, To time.Time
	// Interval is Grafana's computed interval for the panel ($__interval).
	Interval time.Duration
	Vars     map[string]Variable
}

// Expand interpolates rawSQL as Grafana and the ClickHouse plugin would.
func Expand(rawSQL string, r Request) (string, error) {
	s, err := applyConditionalAll(rawSQL, r.Vars)
	if err != nil {
		return "", err
	}
	if s, err = replaceVariables(s, r); err != nil {
		return "", err
	}
	if s, err = applyMacros(s, r); err != nil {
		return "", err
	}
	if i := strings.Index(s, "$__"); i >= 0 {
		return "", fmt.Errorf("unexpanded macro at %q", excerpt(s, i))
	}
	return s, nil
}

func excerpt(s string, i int) string {
	end := min(len(s), i+40)
	return s[i:end]
}

// applyConditionalAll mirrors CHDatasource.applyConditionalAll.
func applyConditionalAll(q string, vars map[string]Variable) (string, error) {
	const macro = "$__conditionalAll("
	for {
		i := strings.LastIndex(q, macro)
		if i < 0 {
			return q, nil
		}
		args, end, err := bracketArgs(q, i+len(macro)-1)
		if err != nil {
			return "", fmt.Errorf("$__conditionalAll: %w", err)
		}
		if len(args) != 2 {
			return "", fmt.Errorf("$__conditionalAll: want 2 arguments, got %d", len(args))
		}
		ref := strings.TrimSpace(args[1])
		name := strings.Trim(strings.TrimPrefix(ref, "$"), "{}")
		v, ok := vars[name]
		if !ok || !strings.HasPrefix(ref, "$") {
			return "", fmt.Errorf("$__conditionalAll: second argument %q is not a dashboard variable", ref)
		}
		phrase := args[0]
		if v.All || len(v.Values) == 0 || (len(v.Values) == 1 && v.Values[0] == "") {
			phrase = "1=1"
		}
		q = q[:i] + phrase + q[end:]
	}
}

// bracketArgs reads the arguments of the parenthesis at open: split at
// commas at depth 1 (untrimmed, like the plugin), and the index after the
// closing parenthesis.
func bracketArgs(q string, open int) ([]string, int, error) {
	if open >= len(q) || q[open] != '(' {
		return nil, 0, errors.New("no opening parenthesis")
	}
	depth, last := 0, open+1
	var args []string
	for i := open; i < len(q); i++ {
		switch q[i] {
		case '(':
			depth++
		case ')':
			depth--
			if depth == 0 {
				return append(args, q[last:i]), i + 1, nil
			}
		case ',':
			if depth == 1 {
				args = append(args, q[last:i])
				last = i + 1
			}
		}
	}
	return nil, 0, errors.New("missing closing parenthesis")
}

// variableRe is Grafana's variable syntax: $name, [[name:fmt]], ${name.field:fmt}.
var variableRe = regexp.MustCompile(`\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}`)

func replaceVariables(q string, r Request) (string, error) {
	var errs []error
	out := variableRe.ReplaceAllStringFunc(q, func(m string) string {
		sub := variableRe.FindStringSubmatch(m)
		name, format := sub[1], ""
		switch {
		case sub[2] != "":
			name, format = sub[2], sub[3]
		case sub[4] != "":
			name, format = sub[4], sub[6]
			if sub[5] != "" {
				errs = append(errs, fmt.Errorf("%s: field paths are not supported", m))
				return m
			}
		}
		if name == "__from" || name == "__to" {
			t := r.From
			if name == "__to" {
				t = r.To
			}
			switch format {
			case "":
				return strconv.FormatInt(t.UnixMilli(), 10)
			case "date:seconds":
				return strconv.FormatInt(t.Unix(), 10)
			}
			errs = append(errs, fmt.Errorf("%s: unsupported format %q", m, format))
			return m
		}
		v, ok := r.Vars[name]
		if !ok {
			if strings.HasPrefix(name, "__") && sub[1] != "" {
				return m // a plugin macro: step 3
			}
			errs = append(errs, fmt.Errorf("%s: no such dashboard variable", m))
			return m
		}
		s, err := formatValue(v, format)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			return m
		}
		return s
	})
	return out, errors.Join(errs...)
}

func formatValue(v Variable, format string) (string, error) {
	vals := v.Values
	multi := v.Multi || v.All || len(vals) > 1
	quoteEach := func(esc func(string) string) string {
		parts := make([]string, len(vals))
		for i, s := range vals {
			parts[i] = "'" + esc(s) + "'"
		}
		return strings.Join(parts, ",")
	}
	switch format {
	case "":
		// The plugin's format function: arrays quoted and joined, scalars raw.
		if multi {
			return "'" + strings.Join(vals, "','") + "'", nil
		}
		return strings.Join(vals, ""), nil
	case "raw", "text":
		return strings.Join(vals, ","), nil
	case "csv":
		return strings.Join(vals, ","), nil
	case "sqlstring":
		return quoteEach(strings.NewReplacer(`'`, `''`, `"`, `\"`).Replace), nil
	case "singlequote":
		return quoteEach(strings.NewReplacer(`'`, `\'`).Replace), nil
	case "doublequote":
		parts := make([]string, len(vals))
		for i, s := range vals {
			parts[i] = `"` + strings.ReplaceAll(s, `"`, `\"`) + `"`
		}
		return strings.Join(parts, ","), nil
	}
	return "", fmt.Errorf("format %q is not emulated", format)
}

// macroFunc expands one backend macro.
type macroFunc func(r Request, args []string) (string, error)

func toDateTime(t time.Time) string { return fmt.Sprintf("toDateTime(%d)", t.Unix()) }
func toDateTime64(t time.Time) string {
	return fmt.Sprintf("fromUnixTimestamp64Milli(%d)", t.UnixMilli())
}
func toDate(t time.Time) string { return fmt.Sprintf("toDate('%s')", t.UTC().Format("2006-01-02")) }

func oneArg(f func(r Request, col string) string) macroFunc {
	return func(r Request, args []string) (string, error) {
		if len(args) != 1 || args[0] == "" {
			return "", fmt.Errorf("expected 1 argument, received %d", len(args))
		}
		return f(r, args[0]), nil
	}
}

func noArgs(f func(r Request) string) macroFunc {
	return func(r Request, _ []string) (string, error) { return f(r), nil }
}

func dateTimeFilter(r Request, args []string) (string, error) {
	if len(args) != 2 {
		return "", fmt.Errorf("expected 2 arguments, received %d", len(args))
	}
	d, t := args[0], args[1]
	return fmt.Sprintf("(%s >= %s AND %s <= %s) AND (%s >= %s AND %s <= %s)",
		d, toDate(r.From), d, toDate(r.To), t, toDateTime(r.From), t, toDateTime(r.To)), nil
}

// macros are the ClickHouse plugin's backend macros (pkg/macros.Macros).
var macros = map[string]macroFunc{
	"fromTime":    noArgs(func(r Request) string { return toDateTime(r.From) }),
	"toTime":      noArgs(func(r Request) string { return toDateTime(r.To) }),
	"fromTime_ms": noArgs(func(r Request) string { return toDateTime64(r.From) }),
	"toTime_ms":   noArgs(func(r Request) string { return toDateTime64(r.To) }),
	"timeFilter": oneArg(func(r Request, c string) string {
		return fmt.Sprintf("%s >= %s AND %s <= %s", c, toDateTime(r.From), c, toDateTime(r.To))
	}),
	"timeFilter_ms": oneArg(func(r Request, c string) string {
		return fmt.Sprintf("%s >= %s AND %s <= %s", c, toDateTime64(r.From), c, toDateTime64(r.To))
	}),
	"dateFilter": oneArg(func(r Request, c string) string {
		return fmt.Sprintf("%s >= %s AND %s <= %s", c, toDate(r.From), c, toDate(r.To))
	}),
	"dateTimeFilter": dateTimeFilter,
	"dt":             dateTimeFilter,
	"timeInterval": oneArg(func(r Request, c string) string {
		return fmt.Sprintf("toStartOfInterval(toDateTime(%s), INTERVAL %d second)", c, IntervalSeconds(r.Interval))
	}),
	"timeInterval_ms": oneArg(func(r Request, c string) string {
		ms := int64(math.Max(float64(r.Interval.Milliseconds()), 1))
		return fmt.Sprintf("toStartOfInterval(toDateTime64(%s, 3), INTERVAL %d millisecond)", c, ms)
	}),
	"interval_s": noArgs(func(r Request) string { return strconv.FormatInt(IntervalSeconds(r.Interval), 10) }),
}

// IntervalSeconds is $__interval_s: the interval in whole seconds, at least 1.
func IntervalSeconds(d time.Duration) int64 { return int64(math.Max(d.Seconds(), 1)) }

// MacroNames lists the backend macros Expand implements.
func MacroNames() []string {
	names := make([]string, 0, len(macros))
	for n := range macros {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

func applyMacros(q string, r Request) (string, error) {
	for _, name := range MacroNames() {
		re := regexp.MustCompile(`\$__` + regexp.QuoteMeta(name) + `\b`)
		for {
			loc := re.FindStringIndex(q)
			if loc == nil {
				break
			}
			var args []string
			end := loc[1]
			if end < len(q) && q[end] == '(' {
				raw, after, err := bracketArgs(q, end)
				if err != nil {
					return "", fmt.Errorf("$__%s: %w", name, err)
				}
				for _, a := range raw {
					args = append(args, strings.TrimSpace(a))
				}
				end = after
			}
			res, err := macros[name](r, args)
			if err != nil {
				return "", fmt.Errorf("$__%s: %w", name, err)
			}
			q = q[:loc[0]] + res + q[end:]
		}
	}
	return q, nil
}

// AutoInterval is Grafana's panel interval for a time range: the range
// divided by maxDataPoints, rounded to Grafana's "nice" steps (a
// simplification of kbn.roundInterval), at least minInterval.
func AutoInterval(from, to time.Time, maxDataPoints int, minInterval time.Duration) time.Duration {
	if maxDataPoints <= 0 {
		maxDataPoints = 1000
	}
	raw := to.Sub(from) / time.Duration(maxDataPoints)
	steps := []time.Duration{
		10 * time.Millisecond, 20 * time.Millisecond, 50 * time.Millisecond, 100 * time.Millisecond,
		200 * time.Millisecond, 500 * time.Millisecond, time.Second, 2 * time.Second, 5 * time.Second,
		10 * time.Second, 15 * time.Second, 20 * time.Second, 30 * time.Second, time.Minute, 2 * time.Minute,
		5 * time.Minute, 10 * time.Minute, 15 * time.Minute, 20 * time.Minute, 30 * time.Minute, time.Hour,
		2 * time.Hour, 3 * time.Hour, 6 * time.Hour, 12 * time.Hour, 24 * time.Hour, 7 * 24 * time.Hour,
		30 * 24 * time.Hour, 365 * 24 * time.Hour,
	}
	iv := steps[len(steps)-1]
	for _, s := range steps {
		if raw <= s {
			iv = s
			break
		}
	}
	return max(iv, minInterval)
}
