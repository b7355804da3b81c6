package alerting

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// Output names: the output column of alert_delivery_failures and the
// output metric label.
const (
	OutputAlertmanager = "alertmanager"
	OutputWebhook      = "webhook"
	OutputSlack        = "slack"
	OutputSyslog       = "syslog"
)

type namedNotifier struct {
	name   string
	common outputCommon
	n      notifier
}

// buildNotifiers constructs the enabled outputs, reading secret files.
// Errors name the config key and never quote a secret.
func buildNotifiers(cfg Config, version string, now func() time.Time) ([]namedNotifier, error) {
	var out []namedNotifier
	oc := cfg.Outputs
	links := linker(cfg.APIBaseURL)
	if oc.Alertmanager.Enabled {
		n, err := newAlertmanager(oc.Alertmanager, links, now)
		if err != nil {
			return nil, err
		}
		out = append(out, namedNotifier{OutputAlertmanager, oc.Alertmanager.common(), n})
	}
	if oc.Webhook.Enabled {
		n, err := newWebhook(oc.Webhook, links, now)
		if err != nil {
			return nil, err
		}
		out = append(out, namedNotifier{OutputWebhook, oc.Webhook.common(), n})
	}
	if oc.Slack.Enabled {
		n, err := newSlack(oc.Slack, links, now)
		if err != nil {
			return nil, err
		}
		out = append(out, namedNotifier{OutputSlack, oc.Slack.common(), n})
	}
	if oc.Syslog.Enabled {
		n, err := newSyslog(oc.Syslog, version, links, now)
		if err != nil {
			return nil, err
		}
		out = append(out, namedNotifier{OutputSyslog, oc.Syslog.common(), n})
	}
	return out, nil
}

// linker returns the function giving an alert's link in ehrwatch's API,
// or "" when no API base URL is configured.
func linker(base string) func(id string) string {
	base = strings.TrimRight(base, "/")
	return func(id string) string {
		if base == "" {
			return ""
		}
		return base + "/api/v1/alerts/" + id
	}
}

// text returns what an output may say about a: the full explanation when
// it may carry patient ids, else the summary.
func text(a *Alert, includePatient bool) string {
	if includePatient {
		return a.Explanation
	}
	return a.Summary
}

// httpPoster posts JSON and classifies the outcome.
type httpPoster struct {
	client *http.Client
	url    string
	header http.Header
	now    func() time.Time
}

func newHTTPPoster(key, url string, tlsCfg credentials.TLS, header http.Header, now func() time.Time) (*httpPoster, error) {
	tc, err := tlsCfg.Config()
	if err != nil {
		return nil, fmt.Errorf("%s.tls: %w", key, err)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	tr.Proxy = http.ProxyFromEnvironment
	tr.MaxIdleConnsPerHost = 2
	tr.DialContext = (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext
	return &httpPoster{
		client: &http.Client{
			Transport: tr,
			// Redirects are failures (Standard Webhooks): following one
			// would send the alert somewhere nobody configured.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		url:    url,
		header: header,
		now:    now,
	}, nil
}

// maxResponseDrain bounds how much of a response body is read (and
// discarded: bodies are never logged or stored).
const maxResponseDrain = 64 << 10

func (p *httpPoster) post(ctx context.Context, body []byte, extra http.Header) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url, bytes.NewReader(body))
	if err != nil {
		return &DeliveryError{Class: ClassEncode}
	}
	for k, vs := range p.header {
		req.Header[k] = vs
	}
	for k, vs := range extra {
		req.Header[k] = vs
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "ehrwatch-alerting")
	resp, err := p.client.Do(req)
	if err != nil {
		return transportError(ctx, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxResponseDrain))
	_ = resp.Body.Close()
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return nil
	}
	return statusError(resp.StatusCode, resp.Header.Get("Retry-After"), p.now())
}

func (p *httpPoster) close() error {
	p.client.CloseIdleConnections()
	return nil
}
