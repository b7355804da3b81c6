package credentials

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/ehrwatch/ehrwatch/schemas"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "ehrwatch-test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestTLSValidateNamesKey(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	cases := []struct {
		name    string
		tls     TLS
		wantKey string // "" means valid
	}{
		{"off", TLS{}, ""},
		{"files while off", TLS{CAFile: cert}, "kafka.tls.enabled"},
		{"on with CA", TLS{Enabled: true, CAFile: cert}, ""},
		{"cert without key", TLS{Enabled: true, CertFile: cert}, "kafka.tls.cert_file"},
		{"missing CA file", TLS{Enabled: true, CAFile: filepath.Join(dir, "nope.pem")}, "kafka.tls.ca_file"},
		{"client cert", TLS{Enabled: true, CertFile: cert, KeyFile: key}, ""},
	}
	for _, c := range cases {
		err := schemas.UnderKey("kafka.tls", c.tls.Validate())
		switch {
		case c.wantKey == "" && err != nil:
			t.Errorf("%s: unexpected error %v", c.name, err)
		case c.wantKey != "" && (err == nil || !strings.Contains(err.Error(), c.wantKey)):
			t.Errorf("%s: error %v, want one naming %s", c.name, err, c.wantKey)
		}
	}
}

func TestTLSConfig(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir)
	if cfg, err := (TLS{}).Config(); cfg != nil || err != nil {
		t.Fatalf("TLS off: got %v, %v; want nil, nil", cfg, err)
	}
	cfg, err := TLS{Enabled: true, CAFile: cert, CertFile: cert, KeyFile: key, ServerName: "ch.example"}.Config()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RootCAs == nil || len(cfg.Certificates) != 1 || cfg.ServerName != "ch.example" || cfg.MinVersion < 0x0303 {
		t.Fatalf("config not built from the files: %+v", cfg)
	}
	notPEM := filepath.Join(dir, "junk.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := (TLS{Enabled: true, CAFile: notPEM}).Config(); err == nil {
		t.Fatal("a CA file without certificates was accepted")
	}
}

func TestSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "pw")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := Secret("kafka.sasl.password", "inline", ""); err != nil || got != "inline" {
		t.Errorf("inline: %q, %v", got, err)
	}
	if got, err := Secret("kafka.sasl.password", "", file); err != nil || got != "s3cret" {
		t.Errorf("file: %q, %v (want the trailing newline trimmed)", got, err)
	}
	if _, err := Secret("kafka.sasl.password", "inline", file); err == nil || !strings.Contains(err.Error(), "kafka.sasl.password") {
		t.Errorf("both set: %v, want an error naming the key", err)
	}
	_, err := Secret("clickhouse.password", "", filepath.Join(dir, "missing"))
	if err == nil || !strings.Contains(err.Error(), "clickhouse.password_file") {
		t.Errorf("missing file: %v, want an error naming clickhouse.password_file", err)
	}
	if err != nil && strings.Contains(err.Error(), "s3cret") {
		t.Error("error leaks a secret")
	}
}
