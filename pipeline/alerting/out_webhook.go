package alerting

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// Standard Webhooks header names (https://www.standardwebhooks.com).
const (
	HeaderWebhookID        = "webhook-id"
	HeaderWebhookTimestamp = "webhook-timestamp"
	HeaderWebhookSignature = "webhook-signature"
)

const webhookSecretPrefix = "whsec_"

// parseWebhookSecrets decodes one or more whitespace-separated secrets,
// each "whsec_" + base64 of 24–64 random bytes.
func parseWebhookSecrets(raw string) ([][]byte, error) {
	fields := strings.Fields(raw)
	if len(fields) == 0 {
		return nil, errors.New("empty")
	}
	keys := make([][]byte, 0, len(fields))
	for i, f := range fields {
		b64, ok := strings.CutPrefix(f, webhookSecretPrefix)
		if !ok {
			return nil, errors.New("secret " + strconv.Itoa(i+1) + ": want the whsec_ prefix")
		}
		key, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, errors.New("secret " + strconv.Itoa(i+1) + ": not base64 after whsec_")
		}
		if len(key) < 24 || len(key) > 64 {
			return nil, errors.New("secret " + strconv.Itoa(i+1) + ": want 24 to 64 bytes, got " + strconv.Itoa(len(key)))
		}
		keys = append(keys, key)
	}
	return keys, nil
}

// SignWebhook returns the webhook-signature header value for a message:
// "v1," + base64(HMAC-SHA256(key, id + "." + timestamp + "." + body)), one
// per key, space-separated (several keys during rotation).
func SignWebhook(keys [][]byte, id string, timestamp int64, body []byte) string {
	sigs := make([]string, len(keys))
	for i, k := range keys {
		mac := hmac.New(sha256.New, k)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(strconv.FormatInt(timestamp, 10)))
		mac.Write([]byte{'.'})
		mac.Write(body)
		sigs[i] = "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
	}
	return strings.Join(sigs, " ")
}

// WebhookID is the webhook-id of an alert version: the idempotency key a
// receiver deduplicates on. It contains no "." (the signed content is
// dot-delimited).
func WebhookID(alertID string, version uint64) string {
	return alertID + "_v" + strconv.FormatUint(version, 10)
}

// WebhookResolvedID is the webhook-id of an alert's closing in triage;
// closeKey is the triage state version the closing followed, so a resend
// of the same closing carries the same id.
func WebhookResolvedID(alertID string, closeKey uint64) string {
	return alertID + "_resolved_s" + strconv.FormatUint(closeKey, 10)
}

// Webhook event types.
const (
	WebhookAlertCreated = "alert.created"
	WebhookAlertUpdated = "alert.updated"
	// WebhookAlertResolved: the alert was closed in triage.
	WebhookAlertResolved = "alert.resolved"
)

// WebhookPayload is the body of a webhook, per the Standard Webhooks
// payload structure.
type WebhookPayload struct {
	Type      string      `json:"type"`
	Timestamp time.Time   `json:"timestamp"`
	Data      WebhookData `json:"data"`
}

// WebhookData is the alert as sent. PatientID is omitted and Explanation
// is the patient-free summary unless include_patient_id is set.
type WebhookData struct {
	AlertID      string    `json:"alert_id"`
	Version      uint64    `json:"version"`
	Change       Change    `json:"change"`
	Rule         string    `json:"rule"`
	Detector     string    `json:"detector"`
	Severity     string    `json:"severity"`
	Score        uint8     `json:"score"`
	FacilityID   string    `json:"facility_id,omitempty"`
	UserID       string    `json:"user_id,omitempty"`
	PatientID    string    `json:"patient_id,omitempty"`
	FirstSeen    time.Time `json:"first_seen"`
	LastSeen     time.Time `json:"last_seen"`
	FindingCount uint32    `json:"finding_count"`
	FindingIDs   []string  `json:"finding_ids"`
	Explanation  string    `json:"explanation"`
	URL          string    `json:"url,omitempty"`
}

type webhook struct {
	cfg   WebhookConfig
	keys  [][]byte
	post  *httpPoster
	links func(string) string
	now   func() time.Time
}

func newWebhook(cfg WebhookConfig, links func(string) string, now func() time.Time) (*webhook, error) {
	const key = "alerting.outputs.webhook"
	raw, err := credentials.Secret(key+".secret", cfg.Secret, cfg.SecretFile)
	if err != nil {
		return nil, err
	}
	keys, err := parseWebhookSecrets(raw)
	if err != nil {
		return nil, errors.New(key + ".secret: " + err.Error())
	}
	p, err := newHTTPPoster(key, cfg.URL, cfg.TLS, nil, now)
	if err != nil {
		return nil, err
	}
	return &webhook{cfg: cfg, keys: keys, post: p, links: links, now: now}, nil
}

func (w *webhook) payload(a *Alert) ([]byte, error) {
	typ := WebhookAlertUpdated
	switch {
	case a.Resolved:
		typ = WebhookAlertResolved
	case a.Change == ChangeNew:
		typ = WebhookAlertCreated
	}
	ids := a.FindingIDs
	if ids == nil {
		ids = []string{}
	}
	d := WebhookData{
		AlertID: a.AlertID, Version: a.Version, Change: a.Change, Rule: a.Rule, Detector: a.Detector,
		Severity: string(a.Severity), Score: a.Score, FacilityID: a.FacilityID, UserID: a.UserID,
		FirstSeen: a.FirstSeen.UTC(), LastSeen: a.LastSeen.UTC(), FindingCount: a.FindingCount, FindingIDs: ids,
		Explanation: text(a, w.cfg.IncludePatientID), URL: w.links(a.AlertID),
	}
	if w.cfg.IncludePatientID {
		d.PatientID = a.PatientID
	}
	ts := a.LastSeen.UTC()
	if a.Resolved {
		d.Change = ChangeResolved
		ts = a.ResolvedAt.UTC()
	}
	return json.Marshal(WebhookPayload{Type: typ, Timestamp: ts, Data: d})
}

func (w *webhook) send(ctx context.Context, a *Alert) error {
	body, err := w.payload(a)
	if err != nil {
		return &DeliveryError{Class: ClassEncode}
	}
	id := WebhookID(a.AlertID, a.Version)
	if a.Resolved {
		id = WebhookResolvedID(a.AlertID, a.CloseKey)
	}
	// The attempt's timestamp: re-signed on every retry.
	ts := w.now().Unix()
	h := http.Header{}
	h.Set(HeaderWebhookID, id)
	h.Set(HeaderWebhookTimestamp, strconv.FormatInt(ts, 10))
	h.Set(HeaderWebhookSignature, SignWebhook(w.keys, id, ts, body))
	return w.post.post(ctx, body, h)
}

func (w *webhook) close() error { return w.post.close() }
