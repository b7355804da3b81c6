// Package clickhouse reads the ClickHouse SQL files of ehrwatch's deployment
// (access.sql, reference/*.sql) for the deployment tests: it splits a file
// into statements and turns a reference loader (INSERT … SELECT … FROM
// input(…) FORMAT JSONEachRow, fed on stdin by clickhouse-client) into the
// same statement reading a server-side file, which a test can run without a
// client.
package clickhouse

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"strings"
)

// Statements splits SQL text into statements at semicolons outside string
// literals, quoted identifiers and comments. Comments are dropped; empty
// statements are skipped.
func Statements(sql string) ([]string, error) {
	var out []string
	var cur strings.Builder
	flush := func() {
		if s := strings.TrimSpace(cur.String()); s != "" {
			out = append(out, s)
		}
		cur.Reset()
	}
	for i := 0; i < len(sql); i++ {
		c := sql[i]
		switch {
		case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
			for i < len(sql) && sql[i] != '\n' {
				i++
			}
			cur.WriteByte('\n')
		case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return nil, errors.New("unterminated /* comment")
			}
			i += end + 3
			cur.WriteByte(' ')
		case c == '\'' || c == '"' || c == '`':
			j := i + 1
			for ; j < len(sql); j++ {
				if sql[j] == '\\' {
					j++
					continue
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c { // doubled quote
						j++
						continue
					}
					break
				}
			}
			if j >= len(sql) {
				return nil, fmt.Errorf("unterminated %c quote", c)
			}
			cur.WriteString(sql[i : j+1])
			i = j
		case c == ';':
			flush()
		default:
			cur.WriteByte(c)
		}
	}
	flush()
	return out, nil
}

// StatementsFile is Statements on a file.
func StatementsFile(path string) ([]string, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Statements(string(raw))
}

// FileLoader rewrites the reference loader in sqlPath to read dataPath with
// the file() table function instead of input() on stdin, dropping the
// trailing FORMAT clause. The rest of the statement (column mapping,
// settings) is unchanged, so running the result tests the loader itself.
// file() needs a server that may read dataPath (chDB, clickhouse-local, or
// a path under the server's user_files_path).
func FileLoader(sqlPath, dataPath string) (string, error) {
	stmts, err := StatementsFile(sqlPath)
	if err != nil {
		return "", err
	}
	if len(stmts) != 1 {
		return "", fmt.Errorf("%s: want one statement, got %d", sqlPath, len(stmts))
	}
	s := stmts[0]
	const open = "input('"
	i := strings.Index(s, open)
	if i < 0 {
		return "", fmt.Errorf("%s: no input('structure')", sqlPath)
	}
	j := strings.Index(s[i:], "')")
	if j < 0 {
		return "", fmt.Errorf("%s: input( is not closed", sqlPath)
	}
	structure := s[i+len(open) : i+j]
	s = s[:i] + "file('" + strings.ReplaceAll(dataPath, "'", `\'`) + "', 'JSONEachRow', '" + structure + "')" + s[i+j+2:]
	s = strings.TrimSpace(s)
	const format = "FORMAT JSONEachRow"
	if !strings.HasSuffix(s, format) {
		return "", fmt.Errorf("%s: must end with %s (clickhouse-client sends the file after it)", sqlPath, format)
	}
	return strings.TrimSpace(strings.TrimSuffix(s, format)), nil
}

// AccessSQL is access.sql as shipped, built into the binary for
// `ehrwatch check clickhouse` (its password placeholders unrendered).
//
//go:embed access.sql
var AccessSQL string
