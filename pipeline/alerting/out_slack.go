package alerting

import (
	"context"
	"encoding/json"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ehrwatch/ehrwatch/pipeline/internal/credentials"
)

// slack posts {"text": …} (and optionally blocks) to an incoming webhook.
// The text is plain: severity in words, no emoji, no patient names (the
// explanations never carry names; patient ids only with
// include_patient_id).
type slack struct {
	cfg   SlackConfig
	post  *httpPoster
	links func(string) string
}

func newSlack(cfg SlackConfig, links func(string) string, now func() time.Time) (*slack, error) {
	const key = "alerting.outputs.slack"
	url, err := credentials.Secret(key+".url", cfg.URL, cfg.URLFile)
	if err != nil {
		return nil, err
	}
	if cfg.URLFile != "" {
		// The file's URL is validated here, never echoed.
		if err := validateHTTPURL(key+".url_file", strings.TrimSpace(url), httpCommon{cfg.TLS, cfg.AllowHTTP}); err != nil {
			return nil, err
		}
	}
	p, err := newHTTPPoster(key, strings.TrimSpace(url), cfg.TLS, nil, now)
	if err != nil {
		return nil, err
	}
	return &slack{cfg: cfg, post: p, links: links}, nil
}

// slackEscape escapes the three characters Slack's text formatting
// reserves.
func slackEscape(s string) string {
	return strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;").Replace(s)
}

type slackMessage struct {
	Text   string       `json:"text"`
	Blocks []slackBlock `json:"blocks,omitempty"`
}

type slackBlock struct {
	Type     string       `json:"type"`
	Text     *slackText   `json:"text,omitempty"`
	Elements []*slackText `json:"elements,omitempty"`
}

type slackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func (s *slack) payload(a *Alert) ([]byte, error) {
	title := "ehrwatch " + summaryLine(a)
	body := text(a, s.cfg.IncludePatientID)
	link := s.links(a.AlertID)
	lines := []string{slackEscape(title), slackEscape(body)}
	if link != "" {
		lines = append(lines, "<"+link+"|Open alert "+a.AlertID+" in ehrwatch>")
	}
	msg := slackMessage{Text: strings.Join(lines, "\n")}
	if s.cfg.Blocks {
		// Block Kit limits: header text 150 characters, section 3000.
		msg.Blocks = []slackBlock{
			{Type: "header", Text: &slackText{Type: "plain_text", Text: truncateRunes(title, 150)}},
			{Type: "section", Text: &slackText{Type: "plain_text", Text: truncateRunes(body, 3000)}},
		}
		if link != "" {
			msg.Blocks = append(msg.Blocks, slackBlock{Type: "context", Elements: []*slackText{{Type: "mrkdwn", Text: "<" + link + "|Open alert " + a.AlertID + " in ehrwatch>"}}})
		}
	}
	return json.Marshal(msg)
}

func (s *slack) send(ctx context.Context, a *Alert) error {
	body, err := s.payload(a)
	if err != nil {
		return &DeliveryError{Class: ClassEncode}
	}
	return s.post.post(ctx, body, nil)
}

func (s *slack) close() error { return s.post.close() }

// truncateRunes cuts s to at most n runes, ending with "…" when cut.
func truncateRunes(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
