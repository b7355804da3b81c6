package main

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"net"
	"time"

	"github.com/ClickHouse/clickhouse-go/v2/lib/driver"
	"github.com/rs/zerolog"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/alerting"
	"github.com/ehrwatch/ehrwatch/pipeline/api"
	webconsole "github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/pipeline/console/memstore"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// demoServed is what `demo --serve` tells its caller (tests) once it
// listens.
type demoServed struct {
	URL   string // http://host:port
	Token string // the sign-in (bearer) token, privacy_officer
	Store string // the store's label
}

// serveDemo keeps the console and the API up on the
// demo's results until ctx ends: on ClickHouse when the demo stored there
// (conn), else on an in-memory store filled from the demo's own events,
// findings, alerts and reference data. It signs in with a fresh random
// token (privacy_officer) that only its hash configures, printed once.
func serveDemo(ctx context.Context, o demoOptions, con *console, h *synth.Hospital, sink *demoSink, conn driver.Conn, log zerolog.Logger) error {
	cfg := api.DefaultConfig()
	cfg.Listen = o.serve
	cfg.FacilityTimeZones = h.TimeZones()
	token, err := newDemoToken()
	if err != nil {
		return err
	}
	cfg.Tokens = []api.TokenConfig{{Name: "demo", Role: api.RolePrivacyOfficer, Hash: api.HashToken(token)}}
	if err := schemas.UnderKey("api", cfg.Validate()); err != nil {
		return usageError{"demo: --serve: " + err.Error()}
	}
	opts := cfg.TriageOptions()
	var st consoleStore
	label := "ClickHouse " + o.clickhouse + ", database " + o.chDatabase
	if conn != nil {
		st = triage.NewStore(conn, opts)
	} else {
		st = memstore.New(memstore.Data{
			Users: h.Users, Patients: h.Patients, Encounters: h.Encounters,
			Events: sink.allEvents(), Findings: sink.allFindings(), Alerts: triageAlerts(sink.allAlerts()),
		}, opts)
		label = memstore.Label
	}
	srv, err := newAPIAndConsole(cfg, webconsole.DefaultConfig(), st, conn == nil, log)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", o.serve)
	if err != nil {
		return fmt.Errorf("demo: --serve: %w", err)
	}
	url := "http://" + ln.Addr().String()
	con.printf("\nServing the console on the results (%s) at %s/ until Ctrl-C.\n", label, url)
	con.printf("  sign in at %s/signin with this token (privacy_officer, valid until the demo stops): %s\n", url, token)
	con.printf("  API: curl -H 'Authorization: Bearer %s' %s/api/v1/alerts\n", token, url)
	if o.onServe != nil {
		o.onServe(demoServed{URL: url, Token: token, Store: label})
	}
	if err := srv.Serve(ctx, ln); err != nil {
		return fmt.Errorf("demo: --serve: %w", err)
	}
	return nil
}

// newDemoToken returns 32 random bytes, base64url: a static token only
// this process knows.
func newDemoToken() (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return "demo-" + base64.RawURLEncoding.EncodeToString(b[:]), nil
}

// triageAlerts turns alerting's alerts into the triage view (every one
// new: the demo has not triaged anything).
func triageAlerts(as []alerting.Alert) []triage.Alert {
	out := make([]triage.Alert, 0, len(as))
	for _, a := range as {
		out = append(out, triage.Alert{AlertID: a.AlertID, Rule: a.Rule, Detector: a.Detector, Severity: string(a.Severity),
			Score: a.Score, FacilityID: a.FacilityID, UserID: a.UserID, PatientID: a.PatientID,
			FirstSeen: a.FirstSeen.UTC().Truncate(time.Millisecond), LastSeen: a.LastSeen.UTC().Truncate(time.Millisecond),
			FindingCount: a.FindingCount, FindingIDs: a.FindingIDs, Explanation: a.Explanation, Revision: a.Version})
	}
	return out
}
