package console

import (
	"html"
	"html/template"
	"strconv"
	"strings"
)

// queueRowsHTML writes the queue's table rows and the per-row "assign to
// me" forms without html/template: its reflective escaping costs about
// 30 µs a row, which a queue of thousands of alerts cannot afford
// (BenchmarkQueueRender). Every value is escaped here with
// html.EscapeString (text and double-quoted attributes only, no script,
// style or URL-scheme context); hrefs are built from fixed prefixes and
// url.PathEscape'd ids.
func queueRowsHTML(v *queueView) (rows, forms template.HTML) {
	var b, f strings.Builder
	b.Grow(len(v.Rows) * 900)
	e := html.EscapeString
	ret := e(v.Return)
	for i := range v.Rows {
		r := &v.Rows[i]
		id := e(r.ID)
		ver := strconv.FormatUint(r.Version, 10)
		b.WriteString(`<tr><td><input type="checkbox" id="sel-`)
		b.WriteString(id)
		b.WriteString(`" name="alert" value="`)
		b.WriteString(id)
		b.WriteString(`"><label class="visually-hidden" for="sel-`)
		b.WriteString(id)
		b.WriteString(`">Select alert `)
		b.WriteString(id)
		b.WriteString(`</label><input type="hidden" name="version.`)
		b.WriteString(id)
		b.WriteString(`" value="`)
		b.WriteString(ver)
		b.WriteString(`"></td><td><span class="sev sev-`)
		b.WriteString(e(r.Severity))
		b.WriteString(`">`)
		b.WriteString(e(r.Severity))
		b.WriteString(`</span></td><td>`)
		b.WriteString(strconv.Itoa(int(r.Score)))
		b.WriteString(`</td><td><a href="`)
		b.WriteString(e(r.Href))
		b.WriteString(`">`)
		b.WriteString(e(r.Explanation))
		b.WriteString(`</a></td><td>`)
		b.WriteString(e(r.Detector))
		b.WriteString(`</td><td>`)
		b.WriteString(e(r.User))
		b.WriteString(`</td><td>`)
		b.WriteString(e(r.Facility))
		b.WriteString(`</td><td>`)
		if r.PastSLA {
			b.WriteString(`<span class="past-sla">`)
			b.WriteString(e(r.Age))
			b.WriteString(` — past SLA (`)
			b.WriteString(e(r.SLA))
			b.WriteString(`)</span>`)
		} else {
			b.WriteString(e(r.Age))
		}
		b.WriteString(`</td><td>`)
		b.WriteString(e(r.Status))
		b.WriteString(`</td><td>`)
		if r.Assignee != "" {
			b.WriteString(e(r.Assignee))
		} else {
			b.WriteString(`<span class="muted">unassigned</span>`)
		}
		b.WriteString(`</td>`)
		if v.CanTriage {
			b.WriteString(`<td>`)
			if r.CanAssign {
				b.WriteString(`<button type="submit" form="assign-`)
				b.WriteString(id)
				b.WriteString(`">Assign to me<span class="visually-hidden"> (`)
				b.WriteString(id)
				b.WriteString(`)</span></button>`)
				f.WriteString(`<form id="assign-`)
				f.WriteString(id)
				f.WriteString(`" method="post" action="`)
				f.WriteString(e(r.AssignHref))
				f.WriteString(`"><input type="hidden" name="version.`)
				f.WriteString(id)
				f.WriteString(`" value="`)
				f.WriteString(ver)
				f.WriteString(`"><input type="hidden" name="return" value="`)
				f.WriteString(ret)
				f.WriteString(`"></form>`)
			}
			b.WriteString(`</td>`)
		}
		b.WriteString("</tr>\n")
	}
	return template.HTML(b.String()), template.HTML(f.String())
}
