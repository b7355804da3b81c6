package ingest_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/pipeline/ingest"
	"github.com/ehrwatch/ehrwatch/pipeline/ingest/ingesttest"
)

// fhirLogin is a well-formed FHIR R4 login (DICOM 110114/110122): not a
// chart access.
const fhirLogin = `{"resourceType":"AuditEvent","id":"login-%d","type":{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110114"},` +
	`"subtype":[{"system":"http://dicom.nema.org/resources/ontology/DCM","code":"110122"}],"action":"E","recorded":"2026-03-02T08:00:00Z","outcome":"0",` +
	`"agent":[{"who":{"identifier":{"value":"%s"}},"requestor":true}],"source":{"site":"fac-1","observer":{"display":"ehr"}}}`

// TestPipelineIgnoresNonAccesses: logins between chart accesses are
// counted by reason, committed and neither stored nor dead-lettered; a
// malformed message next to them still is.
func TestPipelineIgnoresNonAccesses(t *testing.T) {
	t.Parallel() // own topic, group and database
	h := newHarness(t, 2)
	msgs := ingesttest.Fixture{N: 300, Users: 10, PoisonEvery: 150, Prefix: "ign"}.Messages()
	for i := range 30 {
		user := fmt.Sprintf("user-%04d", i%10)
		msgs = append(msgs, ingesttest.Message{Message: kafka.Message{Key: []byte(user), Value: fmt.Appendf(nil, fhirLogin, i, user)}})
	}
	ingesttest.Produce(t, h.brokers, h.topic, msgs)
	cfg, k := h.configs()
	r := h.start(cfg, k, ingest.Deps{})
	h.waitDrained(2 * time.Minute)

	if c := ingesttest.TableCounts(t, h.conn, "access_events"); c.Rows != 298 || c.Unique != 298 {
		t.Errorf("access_events %+v, want 298", c)
	}
	if c := ingesttest.TableCounts(t, h.conn, "dlq"); c.Rows != 2 {
		t.Errorf("dlq table %+v, want the 2 malformed messages only", c)
	}
	if got := r.metric(t, `ehrwatch_events_ignored_total{reason="authentication"}`); got != 30 {
		t.Errorf("ignored authentication metric %v, want 30", got)
	}
	if got := r.metric(t, "ehrwatch_dlq_messages_total"); got != 2 {
		t.Errorf("dlq metric %v, want 2", got)
	}
}
