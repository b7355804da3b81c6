package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthcheck(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/slow":
			time.Sleep(500 * time.Millisecond)
		case r.URL.Path == "/redirect":
			http.Redirect(w, r, "/readyz", http.StatusFound)
		case !ready:
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	for _, c := range []struct {
		args []string
		want int
	}{
		{[]string{srv.URL + "/readyz"}, 0},
		{[]string{"-timeout", "100ms", srv.URL + "/slow"}, 1},
		{[]string{srv.URL + "/redirect"}, 1},
		{[]string{"http://10.1.2.3:9464/readyz"}, 1},
		{[]string{"https://127.0.0.1:9464/readyz"}, 1},
		{[]string{"http://127.0.0.1:1/readyz"}, 1},
		{nil, 2},
	} {
		if got := run(c.args, io.Discard); got != c.want {
			t.Errorf("healthcheck %s: exit %d, want %d", strings.Join(c.args, " "), got, c.want)
		}
	}
	ready = false
	if got := run([]string{srv.URL + "/readyz"}, io.Discard); got != 1 {
		t.Errorf("503: exit %d, want 1", got)
	}
}
