package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/pipeline/testenv"
	"github.com/ehrwatch/ehrwatch/schemas"
)

var genSmall = []string{"gen", "--days", "3", "--users", "150", "--seed", "7"}

func runGenCmd(t *testing.T, extra ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := run(context.Background(), append(append([]string{}, genSmall...), extra...), &out, &errOut); err != nil {
		t.Fatalf("gen %v: %v\n%s", extra, err, errOut.String())
	}
	return out.String()
}

func readLines(t *testing.T, path string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var lines [][]byte
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		lines = append(lines, bytes.Clone(sc.Bytes()))
	}
	return lines
}

func TestGenFiles(t *testing.T) {
	dir := t.TempDir()
	summary := runGenCmd(t, "--out", dir)
	for _, want := range []string{"generated 3 days", "events:", "truth:", "wrote " + dir} {
		if !strings.Contains(summary, want) {
			t.Errorf("summary lacks %q:\n%s", want, summary)
		}
	}
	for _, name := range []string{synth.EventsFile, synth.UsersFile, synth.PatientsFile, synth.EncountersFile, synth.TruthFile, synth.FacilitiesFile} {
		if st, err := os.Stat(filepath.Join(dir, name)); err != nil || st.Size() == 0 {
			t.Errorf("%s missing or empty: %v", name, err)
		}
	}
	events := readLines(t, filepath.Join(dir, synth.EventsFile))
	ids := map[string]bool{}
	var prev time.Time
	for _, line := range events {
		ev, err := schemas.DecodeEvent(line)
		if err != nil {
			t.Fatalf("decode %s: %v", line, err)
		}
		if ev.LoggedTime.Before(prev) {
			t.Fatal("events.ndjson is not in arrival order")
		}
		prev = *ev.LoggedTime
		ids[ev.EventID] = true
	}
	for _, line := range readLines(t, filepath.Join(dir, synth.TruthFile)) {
		var l synth.Label
		if err := json.Unmarshal(line, &l); err != nil {
			t.Fatal(err)
		}
		for _, id := range l.EventIDs {
			if !ids[id] {
				t.Fatalf("label %s names unknown event %s", l.ID, id)
			}
		}
	}

	// Same flags, same bytes; FHIR lines decode to the same events.
	again := t.TempDir()
	runGenCmd(t, "--out", again)
	if !bytes.Equal(readFileT(t, filepath.Join(dir, synth.EventsFile)), readFileT(t, filepath.Join(again, synth.EventsFile))) {
		t.Error("two runs with the same flags wrote different events")
	}
	fhirDir := t.TempDir()
	runGenCmd(t, "--out", fhirDir, "--format", "fhir")
	fhir := readLines(t, filepath.Join(fhirDir, synth.EventsFile))
	if len(fhir) != len(events) {
		t.Fatalf("%d FHIR lines, %d canonical", len(fhir), len(events))
	}
	for i := range fhir {
		a, err := schemas.DecodeEvent(fhir[i])
		if err != nil {
			t.Fatalf("FHIR line %d: %v", i, err)
		}
		b, _ := schemas.DecodeEvent(events[i])
		if !a.Equal(b) {
			t.Fatalf("FHIR line %d decodes to %+v, canonical to %+v", i, a, b)
		}
	}
}

func readFileT(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGenPatients(t *testing.T) {
	dir := t.TempDir()
	runGenCmd(t, "--out", dir, "--patients", "2500")
	if n := len(readLines(t, filepath.Join(dir, synth.PatientsFile))); n != 2500 {
		t.Errorf("--patients 2500 wrote %d patients", n)
	}
	var out, errOut bytes.Buffer
	for _, p := range []string{"100", "-1"} { // 150 users need at least 5 patients each
		err := run(context.Background(), append(append([]string{}, genSmall...), "--out", t.TempDir(), "--patients", p), &out, &errOut)
		if err == nil {
			t.Errorf("--patients %s: no error", p)
		}
	}
}

func TestGenUsage(t *testing.T) {
	for _, args := range [][]string{
		{"gen"},
		{"gen", "--out", t.TempDir(), "--format", "xml"},
		{"gen", "--out", t.TempDir(), "--start", "yesterday"},
		{"gen", "--out", t.TempDir(), "stray"},
	} {
		var out, errOut bytes.Buffer
		err := run(context.Background(), args, &out, &errOut)
		if exitCode(err) != 2 {
			t.Errorf("%v: err %v (exit %d), want a usage error", args, err, exitCode(err))
		}
	}
	var out, errOut bytes.Buffer
	err := run(context.Background(), []string{"gen", "--out", t.TempDir(), "--days", "0"}, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), "synth.days") {
		t.Errorf("--days 0: %v, want an error naming synth.days", err)
	}
}

// TestGenKafka produces to a real broker and checks that every event
// arrives once, keyed by user, each user's events in one partition in
// arrival order.
func TestGenKafka(t *testing.T) {
	brokers := testenv.Kafka(t)
	topic := testenv.NewTopic(t, brokers, 4)
	dir := t.TempDir()
	summary := runGenCmd(t, "--out", dir, "--kafka", brokers, "--topic", topic, "--batch", "500")
	if !strings.Contains(summary, "produced") {
		t.Errorf("summary lacks the Kafka line:\n%s", summary)
	}
	want := readLines(t, filepath.Join(dir, synth.EventsFile))

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	partitionOf := map[string]int{}
	lastLogged := map[int]time.Time{}
	got := 0
	for p := range 4 {
		r := kafka.NewReader(kafka.ReaderConfig{Brokers: strings.Split(brokers, ","), Topic: topic, Partition: p, MaxWait: 200 * time.Millisecond})
		conn, err := kafka.DialLeader(ctx, "tcp", strings.Split(brokers, ",")[0], topic, p)
		if err != nil {
			t.Fatal(err)
		}
		end, err := conn.ReadLastOffset()
		conn.Close()
		if err != nil {
			t.Fatal(err)
		}
		for off := int64(0); off < end; off++ {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				t.Fatal(err)
			}
			ev, err := schemas.DecodeEvent(m.Value)
			if err != nil {
				t.Fatal(err)
			}
			if string(m.Key) != ev.UserID {
				t.Fatalf("message key %q, user %q", m.Key, ev.UserID)
			}
			if q, ok := partitionOf[ev.UserID]; ok && q != p {
				t.Fatalf("user %s in partitions %d and %d", ev.UserID, q, p)
			}
			partitionOf[ev.UserID] = p
			if ev.LoggedTime.Before(lastLogged[p]) {
				t.Fatalf("partition %d out of arrival order at offset %d", p, off)
			}
			lastLogged[p] = *ev.LoggedTime
			got++
		}
		r.Close()
	}
	if got != len(want) {
		t.Errorf("consumed %d messages, generated %d", got, len(want))
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Error("timed out reading the topic")
	}
}
