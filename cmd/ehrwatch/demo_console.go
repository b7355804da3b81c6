package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// console serialises what the demo writes: alerts and the summary on
// stdout, the progress bar and logs on stderr. On a terminal the progress
// bar is one line redrawn in place; anything else printed while it is
// shown clears it first and redraws it after.
type console struct {
	mu       sync.Mutex
	out      io.Writer
	err      io.Writer
	tty      bool // stderr is a terminal: redraw the bar in place
	color    bool // stdout gets ANSI colours
	errColor bool // stderr (logs) gets ANSI colours
	bar      string
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func newConsole(stdout, stderr io.Writer, color string) *console {
	c := &console{out: stdout, err: stderr, tty: isTerminal(stderr)}
	_, noColor := os.LookupEnv("NO_COLOR")
	switch color {
	case "always":
		c.color, c.errColor = true, true
	case "auto":
		ok := !noColor && os.Getenv("TERM") != "dumb"
		c.color = ok && isTerminal(stdout)
		c.errColor = ok && c.tty
	}
	return c
}

// clearBar removes the bar from the screen; c.mu is held.
func (c *console) clearBar() {
	if c.tty && c.bar != "" {
		fmt.Fprint(c.err, "\r\x1b[K")
	}
}

// drawBar puts the bar back; c.mu is held.
func (c *console) drawBar() {
	if c.tty && c.bar != "" {
		fmt.Fprint(c.err, "\r"+c.bar)
	}
}

// printf writes a line (or lines) to stdout.
func (c *console) printf(format string, args ...any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.clearBar()
	fmt.Fprintf(c.out, format, args...)
	c.drawBar()
}

// alert writes one alert line to stdout.
func (c *console) alert(line string) { c.printf("%s\n", line) }

// setBar shows text as the progress bar (terminal), or prints it as a
// plain line (otherwise).
func (c *console) setBar(text string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.tty {
		fmt.Fprintln(c.err, text)
		return
	}
	// A bar wider than the terminal would wrap, and "\r" only returns
	// to the start of its last line.
	width := termWidth(c.err)
	if width <= 0 {
		width = 80
	}
	if r := []rune(text); len(r) > width-1 {
		text = string(r[:width-1])
	}
	c.bar = text
	fmt.Fprint(c.err, "\r\x1b[K"+text)
}

// endBar leaves the last bar on screen and moves past it.
func (c *console) endBar() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.tty && c.bar != "" {
		fmt.Fprint(c.err, "\n")
	}
	c.bar = ""
}

// logger is the pipeline's logger: human-readable lines on stderr, drawn
// around the bar, coloured only when stderr is.
func (c *console) logger(level string) zerolog.Logger {
	w := zerolog.ConsoleWriter{Out: consoleLog{c}, TimeFormat: time.TimeOnly, NoColor: !c.errColor}
	lv, err := zerolog.ParseLevel(level)
	if err != nil {
		lv = zerolog.WarnLevel
	}
	return zerolog.New(w).Level(lv).With().Timestamp().Logger()
}

type consoleLog struct{ c *console }

func (l consoleLog) Write(p []byte) (int, error) {
	l.c.mu.Lock()
	defer l.c.mu.Unlock()
	l.c.clearBar()
	n, err := l.c.err.Write(p)
	l.c.drawBar()
	return n, err
}

// ANSI styles.
const (
	ansiReset  = "\x1b[0m"
	ansiBold   = "\x1b[1m"
	ansiDim    = "\x1b[2m"
	ansiRed    = "\x1b[31m"
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiCyan   = "\x1b[36m"
)

// paint wraps s in style when colours are on.
func (c *console) paint(style, s string) string {
	if !c.color || style == "" {
		return s
	}
	return style + s + ansiReset
}

// progress renders the consumption progress: a bar on a terminal, a
// plain line every few seconds otherwise.
type progress struct {
	con      *console
	total    int64
	start    time.Time // first event consumed
	created  time.Time
	lastLine time.Time
	every    time.Duration
}

func newProgress(con *console, total int64) *progress {
	every := 2 * time.Second
	return &progress{con: con, total: total, created: time.Now(), every: every}
}

func (p *progress) elapsed() time.Duration {
	if p.start.IsZero() {
		return 0
	}
	return time.Since(p.start)
}

func (p *progress) text(consumed, findings, alerts int64, final bool) string {
	frac := 0.0
	if p.total > 0 {
		frac = min(1, float64(consumed)/float64(p.total))
	}
	rate := 0.0
	if el := p.elapsed(); el > 100*time.Millisecond {
		rate = float64(consumed) / el.Seconds()
	}
	if !p.con.tty {
		state := "progress"
		if final {
			state = "consumed"
		}
		if consumed == 0 {
			return fmt.Sprintf("%s: waiting for the consumer group (%s)", state, time.Since(p.created).Round(100*time.Millisecond))
		}
		return fmt.Sprintf("%s: %d/%d events (%.0f%%), %.0f events/s, %d findings, %d alerts",
			state, consumed, p.total, 100*frac, rate, findings, alerts)
	}
	const width = 24
	full := int(frac * width)
	bar := strings.Repeat("█", full) + strings.Repeat("░", width-full)
	if consumed == 0 {
		return fmt.Sprintf(" %s  joining the consumer group… %s", bar, time.Since(p.created).Round(100*time.Millisecond))
	}
	return fmt.Sprintf(" %s %3.0f%%  %s/%s events · %s/s · findings %d · alerts %d",
		bar, 100*frac, groupDigits(consumed), groupDigits(p.total), groupDigits(int64(rate)), findings, alerts)
}

func (p *progress) update(consumed, findings, alerts int64) {
	if consumed > 0 && p.start.IsZero() {
		p.start = time.Now()
	}
	if !p.con.tty {
		if time.Since(p.lastLine) < p.every {
			return
		}
		p.lastLine = time.Now()
	}
	p.con.setBar(p.text(consumed, findings, alerts, false))
}

func (p *progress) done(consumed, findings, alerts int64) {
	if consumed > 0 && p.start.IsZero() {
		p.start = time.Now()
	}
	p.con.setBar(p.text(consumed, findings, alerts, true))
	p.con.endBar()
}

// groupDigits writes n with thin thousands separators: 252,426.
func groupDigits(n int64) string {
	s := fmt.Sprint(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, r := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(r)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
