package api

import (
	"testing"
	"time"
)

func TestSessionStoreBounds(t *testing.T) {
	now := time.Date(2026, 3, 10, 12, 0, 0, 0, time.UTC)
	s := newSessionStore(SessionConfig{IdleTimeout: time.Hour, AbsoluteTimeout: 2 * time.Hour, MaxSessions: 3}, func() time.Time { return now })
	var ids []string
	for i := range 4 {
		ids = append(ids, s.create(Principal{Name: string(rune('a' + i))}, ""))
		now = now.Add(time.Second)
	}
	if _, ok := s.lookup(ids[0]); ok {
		t.Fatal("the oldest session survived a full store")
	}
	for _, id := range ids[1:] {
		if p, ok := s.lookup(id); !ok || p.Name == "" {
			t.Fatalf("session %s dropped", id)
		}
	}
	if len(ids[1]) != 43 || ids[1] == ids[2] {
		t.Fatalf("session ids %q %q", ids[1], ids[2])
	}
	// The store keeps hashes, never the ids themselves.
	for k := range s.m {
		for _, id := range ids {
			if string(k[:]) == id {
				t.Fatal("raw session id stored")
			}
		}
	}
	if s.remove(ids[1]) == nil || s.remove(ids[1]) != nil {
		t.Fatal("remove")
	}

	// Sign-ins in progress: bounded the same way, single use, 10 minutes.
	for i := range 4 {
		s.addLogin(string(rune('p'+i))+"-state", &pendingLogin{next: "/"})
		now = now.Add(time.Second)
	}
	if s.takeLogin("p-state") != nil {
		t.Fatal("the oldest sign-in survived a full store")
	}
	if s.takeLogin("q-state") == nil || s.takeLogin("q-state") != nil {
		t.Fatal("a sign-in is good for one callback")
	}
	now = now.Add(loginTTL + time.Second)
	if s.takeLogin("r-state") != nil {
		t.Fatal("expired sign-in accepted")
	}
}

func TestLocalNext(t *testing.T) {
	for in, want := range map[string]string{
		"": "/", "/queue?status=new": "/queue?status=new", "//evil.example/x": "/", "/\\evil.example": "/",
		"https://evil.example/": "/", "queue": "/", "/a\r\nSet-Cookie: x": "/", "/alerts/a-1#history": "/alerts/a-1#history",
	} {
		if got := localNext(in); got != want {
			t.Errorf("localNext(%q) = %q, want %q", in, got, want)
		}
	}
	if got := SignInURL("//evil"); got != "/signin?next=%2F" {
		t.Errorf("SignInURL: %q", got)
	}
}
