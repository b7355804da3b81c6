package console_test

import (
	"strings"
	"testing"

	"github.com/ehrwatch/ehrwatch/pipeline/console"
	"github.com/ehrwatch/ehrwatch/schemas"
)

func TestConfigValidateReportsEveryBadKey(t *testing.T) {
	if err := console.DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := console.DefaultConfig()
	c.QueueRefresh = 0
	c.QueueLimit = 20000
	c.SLA.High = -1
	c.SLA.Info = 0
	err := schemas.UnderKey("console", c.Validate())
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, key := range []string{"console.queue_refresh:", "console.queue_limit:", "console.sla.high:", "console.sla.info:"} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("error lacks %s: %v", key, err)
		}
	}
	if strings.Contains(err.Error(), "sla.critical") {
		t.Errorf("a good key reported: %v", err)
	}
	if got := c.SLAFor("critical"); got != c.SLA.Critical {
		t.Errorf("SLAFor(critical) = %s", got)
	}
	if got := c.SLAFor("bogus"); got != c.SLA.Info {
		t.Errorf("SLAFor(bogus) = %s, want the info SLA", got)
	}
}
