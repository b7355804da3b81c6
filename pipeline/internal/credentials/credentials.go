// Package credentials builds TLS client configurations and reads secrets
// (passwords, tokens) from files, for the Kafka and ClickHouse clients.
package credentials

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/ehrwatch/ehrwatch/schemas"
	"os"
	"strings"
)

// TLS configures a TLS client. Zero value: TLS off.
type TLS struct {
	Enabled bool `yaml:"enabled"`
	// CAFile is a PEM bundle of CAs to trust instead of the system pool.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile give a client certificate for mutual TLS.
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns off certificate checks; for lab use only.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Validate reports every bad setting, keyed relative to the TLS block
// (the caller puts its own key, e.g. "kafka.tls", in front).
func (t TLS) Validate() error {
	if !t.Enabled {
		if t.CAFile != "" || t.CertFile != "" || t.KeyFile != "" {
			return schemas.FieldErrorf("enabled", "must be true when ca_file, cert_file or key_file is set")
		}
		return nil
	}
	var errs []error
	if (t.CertFile == "") != (t.KeyFile == "") {
		errs = append(errs, schemas.FieldErrorf("cert_file, key_file", "set both or neither"))
	}
	for _, f := range []struct{ key, file string }{{"ca_file", t.CAFile}, {"cert_file", t.CertFile}, {"key_file", t.KeyFile}} {
		if f.file == "" {
			continue
		}
		if _, err := os.Stat(f.file); err != nil {
			errs = append(errs, schemas.FieldErrorf(f.key, "%v", err))
		}
	}
	return errors.Join(errs...)
}

// Config returns the *tls.Config to hand to a client, or nil when TLS is off.
func (t TLS) Config() (*tls.Config, error) {
	if !t.Enabled {
		return nil, nil
	}
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify, //nolint:gosec // explicit operator choice
	}
	if t.CAFile != "" {
		pem, err := os.ReadFile(t.CAFile)
		if err != nil {
			return nil, fmt.Errorf("read ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errors.New("ca_file: no PEM certificates found")
		}
		cfg.RootCAs = pool
	}
	if t.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("load client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Secret returns value, or the trimmed content of file when file is set.
// Setting both is an error, so a stale inline secret cannot shadow a file.
func Secret(key, value, file string) (string, error) {
	if file == "" {
		return value, nil
	}
	if value != "" {
		return "", fmt.Errorf("%s and %s_file: set one, not both", key, key)
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s_file: %w", key, err)
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}
