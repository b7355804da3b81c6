package console

import (
	"strings"
	"testing"
)

// TestAccessRowsHTMLEscapes: the hand-written rows escape every value.
func TestAccessRowsHTMLEscapes(t *testing.T) {
	hostile := `<script>alert(1)</script>"'&`
	got := string(accessRowsHTML([]accessRowView{{Local: hostile, Who: hostile, Role: hostile, Dept: hostile, Action: hostile,
		BreakGlass: true, BreakGlassReason: hostile, Explained: true, Explanation: hostile, Flags: hostile}}))
	if strings.Contains(got, "<script") || strings.Contains(got, `"'`) {
		t.Fatalf("unescaped: %s", got)
	}
	if n := strings.Count(got, "&lt;script&gt;alert(1)&lt;/script&gt;&#34;&#39;&amp;"); n != 8 {
		t.Fatalf("%d escaped values, want 8: %s", n, got)
	}
	if !strings.HasPrefix(got, `<tr class="row-bg"><td>`) || !strings.Contains(got, `<strong class="bad">yes</strong>: `) {
		t.Fatalf("structure: %s", got)
	}
}
