package alerting_test

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// --- an RFC 5424 / RFC 6587 / CEF reader, written from the RFCs ----------------

// readFrame reads one octet-counted frame (RFC 6587 §3.4.1):
// MSG-LEN SP SYSLOG-MSG, MSG-LEN a decimal without leading zeros.
func readFrame(r *bufio.Reader) (string, error) {
	lenStr, err := r.ReadString(' ')
	if err != nil {
		return "", err
	}
	lenStr = strings.TrimSuffix(lenStr, " ")
	n, err := strconv.Atoi(lenStr)
	if err != nil || n <= 0 || lenStr[0] == '0' {
		return "", fmt.Errorf("bad MSG-LEN %q", lenStr)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return "", err
	}
	return string(buf), nil
}

// syslogMsg is a parsed RFC 5424 message.
type syslogMsg struct {
	pri                                       int
	timestamp                                 time.Time
	hostname, appName, procID, msgID, sd, msg string
}

var rfc5424 = regexp.MustCompile(`^<([0-9]{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) (-|\[.*?\]) (.*)$`)

func parse5424(s string) (syslogMsg, error) {
	m := rfc5424.FindStringSubmatch(s)
	if m == nil {
		return syslogMsg{}, fmt.Errorf("not RFC 5424: %q", s)
	}
	pri, _ := strconv.Atoi(m[1])
	if pri > 191 {
		return syslogMsg{}, fmt.Errorf("PRI %d out of range", pri)
	}
	ts, err := time.Parse(time.RFC3339Nano, m[2])
	if err != nil {
		return syslogMsg{}, fmt.Errorf("TIMESTAMP %q: %v", m[2], err)
	}
	if frac := regexp.MustCompile(`\.(\d+)`).FindStringSubmatch(m[2]); frac != nil && len(frac[1]) > 6 {
		return syslogMsg{}, fmt.Errorf("TIMESTAMP has more than 6 fractional digits")
	}
	for i, limit := range map[int]int{3: 255, 4: 48, 5: 128, 6: 32} {
		if len(m[i]) > limit {
			return syslogMsg{}, fmt.Errorf("header field %d longer than %d", i, limit)
		}
	}
	return syslogMsg{pri, ts, m[3], m[4], m[5], m[6], m[7], m[8]}, nil
}

// cefEvent is a parsed CEF record.
type cefEvent struct {
	header []string // Version … Severity, unescaped
	ext    map[string]string
}

// parseCEF splits the header on unescaped pipes and the extension into
// key=value pairs at unescaped equals signs, then unescapes.
func parseCEF(s string) (cefEvent, error) {
	if !strings.HasPrefix(s, "CEF:") {
		return cefEvent{}, fmt.Errorf("not CEF: %q", s)
	}
	var header []string
	var cur strings.Builder
	i := 0
	for ; i < len(s) && len(header) < 7; i++ {
		switch {
		case s[i] == '\\' && i+1 < len(s) && (s[i+1] == '\\' || s[i+1] == '|'):
			cur.WriteByte(s[i+1])
			i++
		case s[i] == '|':
			header = append(header, cur.String())
			cur.Reset()
		case s[i] == '\n' || s[i] == '\r':
			return cefEvent{}, fmt.Errorf("line break in header")
		default:
			cur.WriteByte(s[i])
		}
	}
	if len(header) != 7 {
		return cefEvent{}, fmt.Errorf("header has %d fields", len(header))
	}
	header[0] = strings.TrimPrefix(header[0], "CEF:")
	rest := s[i:]
	if strings.ContainsAny(rest, "\n\r") {
		return cefEvent{}, fmt.Errorf("raw line break in extension")
	}
	// Positions of unescaped '='.
	var eqs []int
	for j := 0; j < len(rest); j++ {
		if rest[j] == '\\' {
			j++
			continue
		}
		if rest[j] == '=' {
			eqs = append(eqs, j)
		}
	}
	ext := map[string]string{}
	keyStart := func(eq int) int {
		k := eq
		for k > 0 && rest[k-1] != ' ' {
			k--
		}
		return k
	}
	for n, eq := range eqs {
		ks := keyStart(eq)
		end := len(rest)
		if n+1 < len(eqs) {
			end = keyStart(eqs[n+1]) - 1
		}
		key := rest[ks:eq]
		if !regexp.MustCompile(`^[A-Za-z0-9_]+$`).MatchString(key) {
			return cefEvent{}, fmt.Errorf("bad extension key %q", key)
		}
		ext[key] = unescapeCEFValue(rest[eq+1 : end])
	}
	return cefEvent{header, ext}, nil
}

func unescapeCEFValue(v string) string {
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] == '\\' && i+1 < len(v) {
			switch v[i+1] {
			case '\\', '=':
				b.WriteByte(v[i+1])
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			default:
				b.WriteByte(v[i])
				continue
			}
			i++
			continue
		}
		b.WriteByte(v[i])
	}
	return b.String()
}

// --- CEF escaping --------------------------------------------------------------

func TestCEFEscaping(t *testing.T) {
	a := &alerting.Alert{
		AlertID: "abc", Rule: "user_detector", Detector: `odd|det\ector`, Severity: "high", Score: 75,
		UserID: "U=1", PatientID: "P|9", FacilityID: `F\1`, FindingCount: 2, Version: 7,
		FirstSeen: at("09:10"), LastSeen: at("09:20"),
		Explanation: "line one\nline two\r\nkey=value a\\b pipe|here " + patientID(9),
		Summary:     "summary = safe | still\\safe",
	}
	cases := []struct {
		name           string
		includePatient bool
		raw            []string // substrings of the rendered event
		ext            map[string]string
		header5        string
	}{
		{
			name:    "header escapes backslash and pipe",
			raw:     []string{`|odd\|det\\ector|`, `Repeated odd\|det\\ector findings|8|`},
			header5: `Repeated odd|det\ector findings`,
		},
		{
			name: "extension escapes equals and backslash, not pipes",
			raw:  []string{`suser=U\=1`, `cs2=F\\1`, `msg=summary \= safe | still\\safe`},
			ext:  map[string]string{"suser": "U=1", "cs2": `F\1`, "msg": `summary = safe | still\safe`, "externalId": "abc", "cs1": `odd|det\ector`},
		},
		{
			name:           "extension escapes line breaks; patient only when included",
			includePatient: true,
			raw:            []string{`msg=line one\nline two\r\nkey\=value a\\b pipe|here `, `duser=P|9`},
			ext:            map[string]string{"duser": "P|9", "msg": "line one\nline two\r\nkey=value a\\b pipe|here " + patientID(9)},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := alerting.CEF(a, "1.2|3", "https://x/api/v1/alerts/abc", tc.includePatient)
			for _, sub := range tc.raw {
				if !strings.Contains(s, sub) {
					t.Errorf("%q\ndoes not contain %q", s, sub)
				}
			}
			ev, err := parseCEF(s)
			if err != nil {
				t.Fatalf("%v in %q", err, s)
			}
			if ev.header[0] != "0" || ev.header[1] != "ehrwatch" || ev.header[2] != "ehrwatch" || ev.header[3] != "1.2|3" || ev.header[6] != "8" {
				t.Errorf("header %q", ev.header)
			}
			if tc.header5 != "" && ev.header[5] != tc.header5 {
				t.Errorf("name %q, want %q", ev.header[5], tc.header5)
			}
			for k, v := range tc.ext {
				if ev.ext[k] != v {
					t.Errorf("ext %s = %q, want %q", k, ev.ext[k], v)
				}
			}
			if !tc.includePatient && (strings.Contains(s, "PAT-") || ev.ext["duser"] != "") {
				t.Errorf("patient data without include_patient_id: %q", s)
			}
			if ev.ext["rt"] != strconv.FormatInt(at("09:20").UnixMilli(), 10) || ev.ext["cn1"] != "2" || ev.ext["cs3"] != "https://x/api/v1/alerts/abc" {
				t.Errorf("ext %v", ev.ext)
			}
		})
	}
}

func TestCEFSeverityScale(t *testing.T) {
	want := map[string]string{"info": "1", "low": "3", "medium": "5", "high": "8", "critical": "10"}
	for sev, n := range want {
		ev, err := parseCEF(alerting.CEF(&alerting.Alert{Severity: schemas.Severity(sev), Detector: "d", Rule: "r"}, "", "", false))
		if err != nil {
			t.Fatal(err)
		}
		if ev.header[6] != n {
			t.Errorf("%s → %s, want %s", sev, ev.header[6], n)
		}
	}
}

// --- syslog over TCP -------------------------------------------------------------

// collector accepts connections and parses every frame it receives.
type collector struct {
	ln   net.Listener
	mu   sync.Mutex
	msgs []syslogMsg
	errs []error
	// closeAfter closes each connection after this many frames (0: never).
	closeAfter int
	conns      int
	closed     int
}

func newCollector(t testing.TB, ln net.Listener) *collector {
	c := &collector{ln: ln}
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			c.mu.Lock()
			c.conns++
			c.mu.Unlock()
			go c.serve(conn)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return c
}

func (c *collector) serve(conn net.Conn) {
	defer func() {
		conn.Close()
		c.mu.Lock()
		c.closed++
		c.mu.Unlock()
	}()
	r := bufio.NewReader(conn)
	n := 0
	for {
		frame, err := readFrame(r)
		if err != nil {
			if err != io.EOF {
				c.mu.Lock()
				c.errs = append(c.errs, err)
				c.mu.Unlock()
			}
			return
		}
		m, err := parse5424(frame)
		c.mu.Lock()
		if err != nil {
			c.errs = append(c.errs, err)
		} else {
			c.msgs = append(c.msgs, m)
		}
		c.mu.Unlock()
		n++
		if c.closeAfter > 0 && n >= c.closeAfter {
			return
		}
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func syslogConfig(addr string) alerting.Config {
	cfg := rulesOnly()
	cfg.APIBaseURL = "https://ehrwatch.example.org"
	s := &cfg.Outputs.Syslog
	s.Enabled, s.Address, s.Delivery, s.Hostname = true, addr, fastDelivery(3), "ehrwatch-test"
	return cfg
}

func TestSyslogFramingAndCEF(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector(t, ln)
	e := newEnv(t, syslogConfig(ln.Addr().String()))
	var alerts []alerting.Alert
	alerts = append(alerts, e.observe(t, finding("vip", "critical", "U1", 1, at("09:10")))...)
	alerts = append(alerts, e.observe(t, finding("family", "medium", "U2", 2, at("09:11")))...)
	waitFor(t, "two syslog messages", func() bool { return col.count() == 2 })
	col.mu.Lock()
	defer col.mu.Unlock()
	if len(col.errs) > 0 {
		t.Fatalf("collector errors: %v", col.errs)
	}
	for i, m := range col.msgs {
		a := alerts[i]
		wantPRI := 20*8 + map[string]int{"critical": 2, "medium": 4}[string(a.Severity)] // local4
		if m.pri != wantPRI || m.hostname != "ehrwatch-test" || m.appName != "ehrwatch" || m.msgID != "alert" || m.sd != "-" {
			t.Errorf("header: %+v (want PRI %d)", m, wantPRI)
		}
		if time.Since(m.timestamp) > time.Minute || m.procID != strconv.Itoa(os.Getpid()) {
			t.Errorf("timestamp/procid: %+v", m)
		}
		ev, err := parseCEF(m.msg)
		if err != nil {
			t.Fatal(err)
		}
		if ev.header[3] != "1.2.3" || ev.header[4] != a.Detector || ev.ext["externalId"] != a.AlertID || ev.ext["suser"] != a.UserID ||
			ev.ext["msg"] != a.Summary || ev.ext["cs3"] != "https://ehrwatch.example.org/api/v1/alerts/"+a.AlertID {
			t.Errorf("CEF %q for %+v", m.msg, a)
		}
		if strings.Contains(m.msg, "PAT-") {
			t.Errorf("patient data in syslog: %q", m.msg)
		}
	}
	if col.conns != 1 {
		t.Errorf("%d connections, want 1 (reused)", col.conns)
	}
}

func TestSyslogReconnectsAfterCollectorCloses(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector(t, ln)
	col.closeAfter = 1
	e := newEnv(t, syslogConfig(ln.Addr().String()))
	// TCP syslog has no acknowledgements: a message written just as the
	// collector closes is lost (RFC 6587's known limit). What ehrwatch
	// guarantees is that it notices the closed connection and reconnects.
	for i := 0; i < 3; i++ {
		e.observe(t, finding("vip", "high", "U"+strconv.Itoa(i), 1, at("09:10")))
		want := i + 1
		waitFor(t, "message "+strconv.Itoa(want), func() bool { return col.count() == want })
		waitFor(t, "the collector to close", func() bool {
			col.mu.Lock()
			defer col.mu.Unlock()
			return col.closed == want
		})
	}
	col.mu.Lock()
	defer col.mu.Unlock()
	if col.conns != 3 {
		t.Errorf("%d connections, want 3", col.conns)
	}
}

func TestSyslogOverTLS(t *testing.T) {
	caFile, serverCert := selfSignedCert(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{serverCert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	col := newCollector(t, ln)
	cfg := syslogConfig(ln.Addr().String())
	cfg.Outputs.Syslog.TLS = credentials.TLS{Enabled: true, CAFile: caFile}
	cfg.Outputs.Syslog.IncludePatientID = true
	e := newEnv(t, cfg)
	e.observe(t, finding("vip", "high", "U1", 3, at("09:10")))
	waitFor(t, "the message over TLS", func() bool { return col.count() == 1 })
	col.mu.Lock()
	ev, err := parseCEF(col.msgs[0].msg)
	col.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(ev.ext["msg"], patientID(3)) {
		t.Errorf("include_patient_id: msg %q", ev.ext["msg"])
	}

	// Without the CA the handshake fails: a tls-class dead letter.
	cfg2 := syslogConfig(ln.Addr().String())
	cfg2.Outputs.Syslog.TLS = credentials.TLS{Enabled: true}
	cfg2.Outputs.Syslog.Delivery = fastDelivery(2)
	e2 := newEnv(t, cfg2)
	e2.observe(t, finding("vip", "high", "U1", 3, at("09:10")))
	waitFor(t, "the TLS dead letter", func() bool { return len(e2.store.deadLetters()) == 1 })
	if dl := e2.store.deadLetters()[0]; dl.ErrorClass != alerting.ClassTLS || dl.Attempts != 2 {
		t.Errorf("dead letter %+v", dl)
	}
}

// selfSignedCert makes a CA-less self-signed server certificate for
// 127.0.0.1 and returns its PEM file (to trust) and the key pair.
func selfSignedCert(t testing.TB) (string, tls.Certificate) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "collector"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pair, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "ca.pem", string(certPEM)), pair
}
