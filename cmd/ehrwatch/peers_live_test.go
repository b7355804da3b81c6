package main

import (
	"strings"
	"testing"
	"time"
)

func TestPeersConfigValidate(t *testing.T) {
	if err := DefaultPeersConfig().Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	c := PeersConfig{Mode: "cluster", StallAfter: -time.Second}
	err := c.Validate()
	if err == nil {
		t.Fatal("bad mode and stall_after accepted")
	}
	for _, want := range []string{"mode", "stall_after"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	c = PeersConfig{Mode: "group", StallAfter: time.Minute}
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "topic") {
		t.Errorf("mode group without a topic: %v", err)
	}
	cfg := DefaultConfig()
	cfg.Peers.Mode = "bogus"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "peers.mode") {
		t.Errorf("Config.Validate: %v, want an error naming peers.mode", err)
	}
}
