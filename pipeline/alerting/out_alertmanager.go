package alerting

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// reservedLabels are set by ehrwatch on every Alertmanager alert.
var reservedLabels = map[string]bool{
	"alertname": true, "rule": true, "detector": true, "severity": true,
	"user_id": true, "facility_id": true, "alert_id": true,
}

// amAlert is Alertmanager's postableAlert (api/v2/openapi.yaml): labels is
// the only required field; times are RFC 3339.
type amAlert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     string            `json:"startsAt,omitempty"`
	EndsAt       string            `json:"endsAt,omitempty"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

type alertmanager struct {
	cfg AlertmanagerConfig
	// firingFor, when set (the lifecycle loop runs), is endsAt's distance
	// from the send time for an open alert.
	firingFor time.Duration
	post      *httpPoster
	links     func(string) string
	now       func() time.Time
}

func newAlertmanager(cfg AlertmanagerConfig, links func(string) string, now func() time.Time) (*alertmanager, error) {
	const key = "alerting.outputs.alertmanager"
	token, err := credentials.Secret(key+".bearer_token", cfg.BearerToken, cfg.BearerTokenFile)
	if err != nil {
		return nil, err
	}
	h := http.Header{}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	url := strings.TrimRight(cfg.URL, "/") + "/api/v2/alerts"
	p, err := newHTTPPoster(key, url, cfg.TLS, h, now)
	if err != nil {
		return nil, err
	}
	return &alertmanager{cfg: cfg, post: p, links: links, now: now}, nil
}

// payload renders a as a one-element postableAlerts array.
func (am *alertmanager) payload(a *Alert) ([]byte, error) {
	return json.Marshal([]amAlert{am.postable(a)})
}

// postable renders a as one postableAlert. Labels carry no patient data;
// the description does only with include_patient_id. endsAt: a closed
// alert's closing time (resolved); with the lifecycle loop, the send time
// plus 3 × lifecycle.interval (firing until refreshed or resolved);
// otherwise resolve_after, or none.
func (am *alertmanager) postable(a *Alert) amAlert {
	labels := map[string]string{}
	for k, v := range am.cfg.Labels {
		labels[k] = v
	}
	set := func(k, v string) {
		if v != "" {
			labels[k] = v
		}
	}
	set("alertname", am.cfg.Alertname)
	set("rule", a.Rule)
	set("detector", a.Detector)
	set("severity", string(a.Severity))
	set("user_id", a.UserID)
	set("facility_id", a.FacilityID)
	set("alert_id", a.AlertID)

	link := am.links(a.AlertID)
	ann := map[string]string{
		"summary":       summaryLine(a),
		"description":   text(a, am.cfg.IncludePatientID),
		"finding_count": strconv.FormatUint(uint64(a.FindingCount), 10),
		"score":         strconv.Itoa(int(a.Score)),
	}
	if link != "" {
		ann["alert_url"] = link
	}
	if am.cfg.IncludePatientID && a.PatientID != "" {
		ann["patient_id"] = a.PatientID
	}
	pa := amAlert{
		Labels:       labels,
		Annotations:  ann,
		StartsAt:     a.FirstSeen.UTC().Format(time.RFC3339Nano),
		GeneratorURL: link,
	}
	now := am.now()
	switch {
	case a.Resolved:
		end := a.ResolvedAt
		if end.IsZero() || end.After(now) {
			end = now
		}
		pa.EndsAt = end.UTC().Format(time.RFC3339Nano)
	case am.firingFor > 0:
		pa.EndsAt = now.Add(am.firingFor).UTC().Format(time.RFC3339Nano)
	case am.cfg.ResolveAfter > 0:
		pa.EndsAt = now.Add(am.cfg.ResolveAfter).UTC().Format(time.RFC3339Nano)
	}
	return pa
}

// sendMany posts several alerts in one request (the lifecycle refresh).
func (am *alertmanager) sendMany(ctx context.Context, as []Alert) error {
	pas := make([]amAlert, len(as))
	for i := range as {
		pas[i] = am.postable(&as[i])
	}
	body, err := json.Marshal(pas)
	if err != nil {
		return &DeliveryError{Class: ClassEncode}
	}
	return am.post.post(ctx, body, nil)
}

func (am *alertmanager) send(ctx context.Context, a *Alert) error {
	body, err := am.payload(a)
	if err != nil {
		return &DeliveryError{Class: ClassEncode}
	}
	return am.post.post(ctx, body, nil)
}

func (am *alertmanager) close() error { return am.post.close() }

// summaryLine is a one-line title without patient data:
// "HIGH vip alert: user U1, 4 findings".
func summaryLine(a *Alert) string {
	var b strings.Builder
	b.WriteString(strings.ToUpper(string(a.Severity)))
	b.WriteString(" ")
	b.WriteString(a.Detector)
	if a.Rule != a.Detector {
		b.WriteString(" (" + a.Rule + ")")
	}
	b.WriteString(" alert")
	if a.UserID != "" {
		b.WriteString(": user " + a.UserID + ",")
	} else {
		b.WriteString(":")
	}
	b.WriteString(" " + plural(int(a.FindingCount), "finding"))
	return b.String()
}
