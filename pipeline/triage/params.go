package triage

import (
	"context"
	"encoding/base64"
	"strconv"
	"strings"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2"
)

// params collects server-side query parameters ({name:Type} in the SQL).
// Values travel as param_<name> next to the query, never inside its text.
type params clickhouse.Parameters

// str sets a String parameter, escaped as ClickHouse parses parameter values
// (the TabSeparated "escaped" format).
func (p params) str(name, v string) { p[name] = escapeParam(v) }

// strs sets an Array(String) parameter.
func (p params) strs(name string, vs []string) {
	var b strings.Builder
	b.WriteByte('[')
	for i, v := range vs {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(quoteLiteral(v))
	}
	b.WriteByte(']')
	// Array parameters are parsed as quoted literals, without the escaping
	// layer plain String parameters go through.
	p[name] = b.String()
}

// time sets a DateTime64(3, 'UTC') parameter.
func (p params) time(name string, t time.Time) { p[name] = formatTime(t) }

// uint sets an unsigned integer parameter.
func (p params) uint(name string, v uint64) { p[name] = strconv.FormatUint(v, 10) }

func (p params) ctx(ctx context.Context) context.Context {
	return clickhouse.Context(ctx, clickhouse.WithParameters(clickhouse.Parameters(p)))
}

// escapeParam escapes a parameter value for ClickHouse's escaped text format.
func escapeParam(s string) string {
	if !strings.ContainsAny(s, "\\\t\n\r\x00") {
		return s
	}
	r := strings.NewReplacer(`\`, `\\`, "\t", `\t`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)
	return r.Replace(s)
}

// quoteLiteral renders s as a single-quoted ClickHouse string literal.
func quoteLiteral(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`, "\t", `\t`, "\n", `\n`, "\r", `\r`, "\x00", `\0`)
	return "'" + r.Replace(s) + "'"
}

func formatTime(t time.Time) string {
	return t.UTC().Format("2006-01-02 15:04:05.000")
}

// cursor is a keyset position: a time and a tie-breaking id.
type cursor struct {
	t  time.Time
	id string
}

const cursorPrefix = "c1."

func encodeCursor(t time.Time, id string) string {
	raw := strconv.FormatInt(t.UnixMilli(), 10) + "|" + id
	return cursorPrefix + base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// decodeCursor parses a cursor from a previous page; "" means the first page.
func decodeCursor(s string) (*cursor, error) {
	if s == "" {
		return nil, nil
	}
	bad := invalid("cursor", "malformed; pass next_cursor from the previous page unchanged")
	if len(s) > 512 || !strings.HasPrefix(s, cursorPrefix) {
		return nil, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(cursorPrefix):])
	if err != nil {
		return nil, bad
	}
	ms, id, ok := strings.Cut(string(raw), "|")
	if !ok || id == "" || CheckID("cursor", id) != nil {
		return nil, bad
	}
	n, err := strconv.ParseInt(ms, 10, 64)
	if err != nil {
		return nil, bad
	}
	return &cursor{t: time.UnixMilli(n).UTC(), id: id}, nil
}
