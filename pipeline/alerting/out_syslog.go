package alerting

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
)

// syslogFacilities are the RFC 5424 facility codes by name.
var syslogFacilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14, "clock": 15,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// syslogSeverity maps an alert severity to an RFC 5424 severity code.
func syslogSeverity(s string) int {
	switch s {
	case "critical":
		return 2 // critical
	case "high":
		return 3 // error
	case "medium":
		return 4 // warning
	case "low":
		return 5 // notice
	}
	return 6 // informational
}

// cefSeverity maps an alert severity to CEF's 0–10.
func cefSeverity(s string) int {
	switch s {
	case "critical":
		return 10
	case "high":
		return 8
	case "medium":
		return 5
	case "low":
		return 3
	}
	return 1
}

// cefHeaderEscape escapes a CEF header field: backslash and pipe; line
// breaks, which a header may not hold, become spaces.
func cefHeaderEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '|':
			b.WriteString(`\|`)
		case '\r', '\n':
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cefExtEscape escapes a CEF extension value: backslash, equals sign and
// line breaks (as \n and \r). Pipes need no escaping there.
func cefExtEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '\\':
			b.WriteString(`\\`)
		case '=':
			b.WriteString(`\=`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cefName is the human-readable event name of an alert.
func cefName(a *Alert) string {
	switch a.Rule {
	case RuleUserRisk:
		return "User risk threshold exceeded"
	case RulePatientSurge:
		return "Many unrelated users opened one patient record"
	}
	return "Repeated " + a.Detector + " findings"
}

// CEF renders a as a CEF:0 event. The patient id (as duser) and the full
// explanation are included only when includePatient is set.
func CEF(a *Alert, version, link string, includePatient bool) string {
	if version == "" {
		version = "dev"
	}
	var b strings.Builder
	b.WriteString("CEF:0|ehrwatch|ehrwatch|")
	b.WriteString(cefHeaderEscape(version))
	b.WriteByte('|')
	b.WriteString(cefHeaderEscape(a.Detector))
	b.WriteByte('|')
	b.WriteString(cefHeaderEscape(cefName(a)))
	b.WriteByte('|')
	b.WriteString(strconv.Itoa(cefSeverity(string(a.Severity))))
	b.WriteByte('|')
	first := true
	ext := func(k, v string) {
		if v == "" {
			return
		}
		if !first {
			b.WriteByte(' ')
		}
		first = false
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(cefExtEscape(v))
	}
	ext("rt", strconv.FormatInt(a.LastSeen.UnixMilli(), 10))
	ext("start", strconv.FormatInt(a.FirstSeen.UnixMilli(), 10))
	ext("end", strconv.FormatInt(a.LastSeen.UnixMilli(), 10))
	ext("externalId", a.AlertID)
	ext("cat", a.Rule)
	ext("suser", a.UserID)
	if includePatient {
		ext("duser", a.PatientID)
	}
	ext("cs1Label", "detector")
	ext("cs1", a.Detector)
	if a.FacilityID != "" {
		ext("cs2Label", "facility")
		ext("cs2", a.FacilityID)
	}
	if link != "" {
		ext("cs3Label", "alertUrl")
		ext("cs3", link)
	}
	ext("cs4Label", "alertVersion")
	ext("cs4", strconv.FormatUint(a.Version, 10))
	ext("cn1Label", "findingCount")
	ext("cn1", strconv.FormatUint(uint64(a.FindingCount), 10))
	ext("cn2Label", "score")
	ext("cn2", strconv.Itoa(int(a.Score)))
	ext("msg", text(a, includePatient))
	return b.String()
}

// syslog writes RFC 5424 messages carrying CEF over one TCP (or TLS)
// connection, framed by octet counting (RFC 6587 §3.4.1).
type syslog struct {
	cfg      SyslogConfig
	tls      *tls.Config
	version  string
	hostname string
	procID   string
	links    func(string) string
	now      func() time.Time
	conn     net.Conn // used by the output's single worker only
}

func newSyslog(cfg SyslogConfig, version string, links func(string) string, now func() time.Time) (*syslog, error) {
	tc, err := cfg.TLS.Config()
	if err != nil {
		return nil, errors.New("alerting.outputs.syslog.tls: " + err.Error())
	}
	if tc != nil && tc.ServerName == "" {
		host, _, _ := net.SplitHostPort(cfg.Address)
		tc.ServerName = host
	}
	host := cfg.Hostname
	if host == "" {
		if h, err := os.Hostname(); err == nil && printASCII(h, 255) {
			host = h
		} else {
			host = "-"
		}
	}
	return &syslog{
		cfg: cfg, tls: tc, version: version, hostname: host, procID: strconv.Itoa(os.Getpid()),
		links: links, now: now,
	}, nil
}

// message renders the RFC 5424 SYSLOG-MSG (without framing).
func (s *syslog) message(a *Alert) string {
	pri := syslogFacilities[s.cfg.Facility]*8 + syslogSeverity(string(a.Severity))
	var b strings.Builder
	b.WriteByte('<')
	b.WriteString(strconv.Itoa(pri))
	b.WriteString(">1 ")
	b.WriteString(s.now().UTC().Format("2006-01-02T15:04:05.000000Z"))
	b.WriteByte(' ')
	b.WriteString(s.hostname)
	b.WriteByte(' ')
	b.WriteString(s.cfg.AppName)
	b.WriteByte(' ')
	b.WriteString(s.procID)
	b.WriteString(" alert - ")
	b.WriteString(CEF(a, s.version, s.links(a.AlertID), s.cfg.IncludePatientID))
	return b.String()
}

func (s *syslog) dial(ctx context.Context) (net.Conn, error) {
	d := &net.Dialer{KeepAlive: 30 * time.Second}
	if s.tls != nil {
		td := &tls.Dialer{NetDialer: d, Config: s.tls}
		return td.DialContext(ctx, "tcp", s.cfg.Address)
	}
	return d.DialContext(ctx, "tcp", s.cfg.Address)
}

// alive reports whether the collector has not closed the connection. A
// collector never sends, so a short read times out on a healthy
// connection and returns EOF (or a reset) on a closed one. (Go checks an
// already expired deadline before reading, hence a short future one.)
func alive(c net.Conn) bool {
	if err := c.SetReadDeadline(time.Now().Add(aliveProbe)); err != nil {
		return false
	}
	var buf [1]byte
	_, err := c.Read(buf[:])
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// aliveProbe bounds the liveness read before each write.
const aliveProbe = time.Millisecond

func (s *syslog) send(ctx context.Context, a *Alert) error {
	msg := s.message(a)
	frame := strconv.Itoa(len(msg)) + " " + msg
	if s.conn != nil && !alive(s.conn) {
		_ = s.conn.Close()
		s.conn = nil
	}
	if s.conn == nil {
		c, err := s.dial(ctx)
		if err != nil {
			return transportError(ctx, err)
		}
		s.conn = c
	}
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(30 * time.Second)
	}
	_ = s.conn.SetWriteDeadline(deadline)
	if _, err := s.conn.Write([]byte(frame)); err != nil {
		// A partial frame would desynchronize the collector's framing:
		// start over on a new connection.
		_ = s.conn.Close()
		s.conn = nil
		return transportError(ctx, err)
	}
	return nil
}

func (s *syslog) close() error {
	if s.conn == nil {
		return nil
	}
	err := s.conn.Close()
	s.conn = nil
	return err
}
