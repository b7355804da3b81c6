package grafana_test

import (
	"strings"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/deployments/grafana"
)

// The expansions of the plugin's documentation and of its and the SDK's
// own tests.
func TestExpand(t *testing.T) {
	from := time.Unix(1415792726, 0).UTC()
	to := time.Unix(1447328726, 0).UTC()
	one := func(v string) grafana.Variable { return grafana.Variable{Values: []string{v}} }
	req := grafana.Request{From: from, To: to, Interval: 20 * time.Second, Vars: map[string]grafana.Variable{
		"fac":  {Values: []string{"nyc", "chi"}, Multi: true},
		"all":  {Values: []string{"a", "b"}, Multi: true, All: true},
		"one":  {Values: []string{"nyc"}, Multi: true},
		"pid":  one(`O'Brien "x"`),
		"empt": one(""),
	}}
	for _, c := range []struct{ in, want string }{
		{"WHERE $__timeFilter(t)", "WHERE t >= toDateTime(1415792726) AND t <= toDateTime(1447328726)"},
		{"WHERE $__timeFilter_ms(t)", "WHERE t >= fromUnixTimestamp64Milli(1415792726000) AND t <= fromUnixTimestamp64Milli(1447328726000)"},
		{"WHERE $__dateFilter(d)", "WHERE d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"},
		{"WHERE $__dt(d, t)", "WHERE (d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND (t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))"},
		{"$__fromTime, $__toTime", "toDateTime(1415792726), toDateTime(1447328726)"},
		{"$__fromTime_ms < $__toTime_ms", "fromUnixTimestamp64Milli(1415792726000) < fromUnixTimestamp64Milli(1447328726000)"},
		{"SELECT $__timeInterval(ts) AS time", "SELECT toStartOfInterval(toDateTime(ts), INTERVAL 20 second) AS time"},
		{"$__timeInterval_ms(ts)", "toStartOfInterval(toDateTime64(ts, 3), INTERVAL 20000 millisecond)"},
		{"count() / $__interval_s AS r, count(x)", "count() / 20 AS r, count(x)"},
		{"greatest($__interval_s, 86400)", "greatest(20, 86400)"},
		{"$__timeFilter(toDateTime(a, 'UTC'))", "toDateTime(a, 'UTC') >= toDateTime(1415792726) AND toDateTime(a, 'UTC') <= toDateTime(1447328726)"},
		{"f IN (${fac})", "f IN ('nyc','chi')"},
		{"f IN ($fac)", "f IN ('nyc','chi')"},
		{"f IN ($one)", "f IN ('nyc')"},
		{"$__conditionalAll(f IN (${all}), $all)", "1=1"},
		{"$__conditionalAll(f IN (${fac}), $fac)", "f IN ('nyc','chi')"},
		{"$__conditionalAll(f = $empt, $empt)", "1=1"},
		{"p = ${pid:sqlstring}", `p = 'O''Brien \"x\"'`},
		{"p = ${pid:singlequote}", `p = 'O\'Brien "x"'`},
		{"p = '${pid:raw}'", `p = 'O'Brien "x"'`},
		{"${__from:date:seconds}-${__to}", "1415792726-1447328726000"},
	} {
		got, err := grafana.Expand(c.in, req)
		if err != nil {
			t.Errorf("%s: %v", c.in, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, got, c.want)
		}
	}
	for _, bad := range []string{
		"$__timeGroup(t, 1h)",         // sqlds default, not used by ehrwatch: refuse
		"$__interval",                 // Grafana's global, not emulated
		"${nope}",                     // undefined variable
		"${pid:percentencode}",        // format not emulated
		"$__timeFilter(t",             // unclosed
		"$__conditionalAll(a, b, $x)", // wrong arity
	} {
		if got, err := grafana.Expand(bad, req); err == nil {
			t.Errorf("%s: expanded to %q, want an error", bad, got)
		}
	}
}

func TestAutoInterval(t *testing.T) {
	from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	if got := grafana.AutoInterval(from, from.Add(24*time.Hour), 1000, 0); got != 2*time.Minute {
		t.Errorf("1 day / 1000 points: %s, want 2m", got)
	}
	if got := grafana.AutoInterval(from, from.Add(time.Hour), 1000, time.Minute); got != time.Minute {
		t.Errorf("min interval: %s", got)
	}
	if !strings.Contains(strings.Join(grafana.MacroNames(), ","), "timeFilter") {
		t.Error("MacroNames lacks timeFilter")
	}
}
