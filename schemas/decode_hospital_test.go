package schemas_test

import (
	"encoding/json"
	"testing"

	"github.com/ehrwatch/ehrwatch/detectors/synth"
	"github.com/ehrwatch/ehrwatch/schemas"
)

// TestDecodeMatchesOracleOnHospitalStream decodes the synthetic hospital's
// stream, as `ehrwatch bench pipeline` produces it (json.Marshal of each
// event), with the decoder and the oracle (decode_diff_test.go), and
// every 97th event also with one byte changed.
func TestDecodeMatchesOracleOnHospitalStream(t *testing.T) {
	cfg := synth.DefaultConfig().WithUsers(100)
	cfg.Days, cfg.WarmupDays = 3, 1
	h, err := synth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	limit := 30000
	if testing.Short() {
		limit = 3000
	}
	n, failed := 0, 0
	for ev := range h.All() {
		data, err := json.Marshal(ev)
		if err != nil {
			t.Fatal(err)
		}
		if d := schemas.DecodeDisagreement(data); d != "" {
			t.Fatalf("event %d: %s", n, d)
		}
		if n%97 == 0 {
			m := append([]byte{}, data...)
			m[n%len(m)] ^= 0x22
			if d := schemas.DecodeDisagreement(m); d != "" {
				t.Fatalf("event %d, mutated: %s", n, d)
			}
			if _, err := schemas.DecodeEvent(m); err != nil {
				failed++
			}
		}
		if n++; n == limit {
			break
		}
	}
	if n < limit/2 || failed == 0 {
		t.Fatalf("%d events, %d mutated ones refused: too few to compare", n, failed)
	}
}
