package main

import (
	"bufio"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/ehrwatch/ehrwatch/detectors/replay"
	"github.com/ehrwatch/ehrwatch/schemas"
)

const convertUsage = `usage: ehrwatch convert --in FILE [--mapping FILE] [--out FILE] [flags]

Converts an access-log export to canonical ehrwatch events (NDJSON, one
JSON object per line), the form producers write to the Kafka topic:

  --in FILE        the export; "-" reads standard input
  --mapping FILE   a CSV/TSV mapping (YAML: columns, time format and zone,
                   action vocabulary; see docs/feeds.md and deployments/csv/).
                   Without it, --in is NDJSON: canonical events or FHIR
                   R4/R5 AuditEvents, mapped with the fhir section of --config
  --out FILE       canonical NDJSON (default: standard output)

Rows that are not chart accesses (logins, searches without a patient,
actions the mapping marks ignore) are counted by reason and skipped. Bad
rows are reported by line number and error class (never their content)
and skipped; --strict makes them an error.

flags:
`

// ndjsonSource decodes canonical or FHIR NDJSON lines.
type ndjsonSource struct {
	lr  *lineReader
	dec *schemas.Decoder
}

func (s *ndjsonSource) Next() (*schemas.AccessEvent, int, error) {
	for {
		line, lineNo, tooLong, err := s.lr.next()
		if err != nil {
			return nil, lineNo, err
		}
		if tooLong {
			return nil, lineNo, &schemas.DecodeError{Class: schemas.ClassTooLarge, Detail: "line exceeds the maximum message size", Line: lineNo, Offset: -1}
		}
		if isBlankLine(line) {
			continue
		}
		ev, err := s.dec.Decode(line)
		return ev, lineNo, err
	}
}

// csvSource reads a CSV/TSV export with a mapping.
type csvSource struct{ r *schemas.CSVReader }

func (s *csvSource) Next() (*schemas.AccessEvent, int, error) { return s.r.Next() }

// openSource opens in as NDJSON (mapping == "") or as a CSV/TSV export.
func openSource(in io.Reader, mapping string, fhir schemas.FHIRConfig) (replay.Source, error) {
	if mapping == "" {
		dec, err := schemas.NewDecoder(fhir)
		if err != nil {
			return nil, err
		}
		return &ndjsonSource{lr: newLineReader(in, schemas.MaxFHIRMessageSize), dec: dec}, nil
	}
	m, err := schemas.LoadCSVMapping(mapping)
	if err != nil {
		return nil, err
	}
	r, err := schemas.NewCSVReader(bufio.NewReaderSize(in, 1<<20), m)
	if err != nil {
		return nil, err
	}
	return &csvSource{r: r}, nil
}

// printTally writes the "not chart accesses" and "bad lines" summary lines.
func printTally(w io.Writer, t replay.LineTally) {
	if n := t.IgnoredTotal(); n > 0 {
		var parts []string
		for _, r := range sortedStrings(t.Ignored) {
			parts = append(parts, fmt.Sprintf("%s %d", r, t.Ignored[schemas.IgnoreReason(r)]))
		}
		fmt.Fprintf(w, "not chart accesses: %d of %d skipped (%s)\n", n, t.Lines, strings.Join(parts, ", "))
	}
	if t.BadLines > 0 {
		var parts []string
		for _, c := range sortedStrings(t.BadClasses) {
			parts = append(parts, fmt.Sprintf("%s %d", c, t.BadClasses[schemas.ErrorClass(c)]))
		}
		fmt.Fprintf(w, "bad lines: %d of %d skipped (%s)\n", t.BadLines, t.Lines, strings.Join(parts, ", "))
	}
}

type convertOptions struct {
	in, mapping, out, config string
	strict                   bool
	maxErrors                int
}

func runConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var o convertOptions
	fs := flag.NewFlagSet("convert", flag.ContinueOnError)
	fs.SetOutput(stderr)
	commandUsage(fs, convertUsage)
	fs.StringVar(&o.in, "in", "", "export to convert; - for standard input")
	fs.StringVar(&o.mapping, "mapping", "", "CSV/TSV mapping `FILE` (YAML); without it --in is NDJSON (canonical or FHIR)")
	fs.StringVar(&o.out, "out", "", "canonical NDJSON output; default standard output")
	fs.StringVar(&o.config, "config", "", "ehrwatch configuration file: its fhir section maps FHIR input")
	fs.BoolVar(&o.strict, "strict", false, "exit non-zero when any line cannot be decoded")
	fs.IntVar(&o.maxErrors, "max-errors", 20, "bad lines reported one by one before only counting")
	if err := parseFlags(fs, args, stdout); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Sprintf("convert: unexpected argument %q", fs.Arg(0))}
	}
	if o.in == "" {
		fs.Usage()
		return usageError{"convert: --in FILE is required"}
	}
	return convert(ctx, o, stdout, stderr)
}

func convert(ctx context.Context, o convertOptions, stdout, stderr io.Writer) error {
	fhir := schemas.DefaultFHIRConfig()
	if o.config != "" {
		cfg, err := LoadConfig(o.config, os.Environ())
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		fhir = cfg.FHIR
	}
	var in io.Reader = os.Stdin
	if o.in != "-" {
		f, err := os.Open(o.in)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		defer f.Close()
		in = f
	}
	src, err := openSource(in, o.mapping, fhir)
	if err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	out, summary := stdout, stderr
	var outFile *os.File
	if o.out != "" {
		if outFile, err = os.Create(o.out); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		defer outFile.Close()
		out, summary = outFile, stdout
	}
	bw := bufio.NewWriterSize(out, 1<<20)
	t := replay.NewLineTally()
	events := 0
	for {
		ev, line, err := src.Next()
		if err == io.EOF {
			break
		}
		if err != nil && !replay.IsLineError(err) {
			return fmt.Errorf("convert: reading %s: %w", o.in, err)
		}
		if line%4096 == 0 && ctx.Err() != nil {
			return ctx.Err()
		}
		t.Lines++
		if err != nil {
			if t.Count(err) && t.BadLines <= o.maxErrors {
				fmt.Fprintf(stderr, "convert: %s\n", badLineText(o.in, line, err))
			}
			continue
		}
		b, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("convert: %w", err)
		}
		bw.Write(b)
		bw.WriteByte('\n')
		events++
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("convert: %w", err)
	}
	if outFile != nil {
		if err := outFile.Close(); err != nil {
			return fmt.Errorf("convert: %w", err)
		}
	}
	fmt.Fprintf(summary, "converted %d events from %d lines\n", events, t.Lines)
	printTally(summary, t)
	if o.strict && t.BadLines > 0 {
		return fmt.Errorf("convert: %d line(s) could not be decoded (--strict)", t.BadLines)
	}
	return nil
}
