package api

import "net/http"

// StatusWriter is an http.ResponseWriter that remembers the status and the
// body size of the response for the access log. The API and the console
// (pipeline/console) wrap every response in one.
type StatusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

// NewStatusWriter wraps w.
func NewStatusWriter(w http.ResponseWriter) *StatusWriter { return &StatusWriter{ResponseWriter: w} }

// WriteHeader records the first status written.
func (w *StatusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *StatusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(b)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Wrote reports whether a status (or any body) has been written.
func (w *StatusWriter) Wrote() bool { return w.status != 0 }

// Status is the response's status: 200 when the handler wrote nothing.
func (w *StatusWriter) Status() int {
	if w.status == 0 {
		return http.StatusOK
	}
	return w.status
}

// Bytes is how many body bytes were written.
func (w *StatusWriter) Bytes() int64 { return w.bytes }

// PageCSP is the Content-Security-Policy of the listener's HTML pages (the
// sign-in pages and the console): no inline script or style, nothing from
// other origins, no framing.
const PageCSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; " +
	"base-uri 'none'; frame-ancestors 'none'; form-action 'self'"

// SetSecurityHeaders sets the headers every response of the listener
// carries: no caching, no MIME sniffing, the Content-Security-Policy csp,
// no Referer, and HSTS over TLS.
func SetSecurityHeaders(w http.ResponseWriter, r *http.Request, csp string) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", csp)
	h.Set("Referrer-Policy", "no-referrer")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
}
