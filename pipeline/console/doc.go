// Package console is ehrwatch's web console: server-rendered pages where
// SOC analysts work the alert queue and privacy officers investigate
// (issue #11). It is served on the API listener (api.Deps.UI) by `ehrwatch
// serve` and `ehrwatch run`, with the API's TLS, authentication (bearer
// tokens, OIDC, the console session) and api_audit trail.
//
// Pages are html/template files under web/templates, rendered into a
// buffer before anything is written; static files (console.css,
// console.js, and the vendored htmx and uPlot under web/static/vendor) are
// embedded with go:embed, so no Node toolchain is needed to build or run.
//
// # Security
//
//   - Every response carries the strict Content-Security-Policy in CSP: no
//     inline script or style (the templates have neither; htmx is told not
//     to inject its indicator style and never to evaluate strings).
//   - Every state change is a POST guarded by net/http's
//     CrossOriginProtection (Sec-Fetch-Site / Origin checks); no GET
//     changes anything.
//   - Patient identifiers never appear in a URL the pages emit: the queue's
//     filters have no patient field and alerts are addressed by alert id.
//   - Authorisation is checked on the server for every route; a caller
//     without the permission gets the 403 page, not just a hidden link.
//   - Every page that shows patient-level data writes its api_audit row
//     (Auth.Audit) before it is sent; if that write fails, the page fails.
//   - The access log carries the request id, route pattern, status and
//     caller, never the URL or form values.
//
// # Pages
//
//	GET  /queue                           open alerts ranked by severity and risk, filters, counts per state
//	GET  /queue/new                       htmx poll: how many alerts arrived since the page was rendered
//	POST /queue/bulk                      assign or close the selected alerts (each at the version seen)
//	GET  /alerts/{alert_id}               explanation, evidence, accesses, related alerts, history, triage form
//	POST /alerts/{alert_id}               status, assignee, disposition, note (optimistic version)
//	POST /alerts/{alert_id}/assign-to-me  assign (and mark a new alert triaged)
//
// The privacy office's pages (investigate.go; privacy officer and admin):
//
//	GET  /cases, POST /cases              list cases; open one over alert ids (cases:write)
//	GET  /cases/{case_id}                 alerts, work form, history (audited: its alerts' patients)
//	POST /cases/{case_id}                 status, assignee, outcome, title, note (optimistic version)
//	POST /cases/{case_id}/alerts[/remove] add alerts, remove one
//	GET  /patients, POST /patients        lookup form; who opened the chart (reports:read, audited)
//	GET  /patients/h/{handle}             the same page by an opaque, short-lived, per-person handle
//	POST /patients/export.csv             the report as CSV (audited)
//	POST /patients/print                  accounting of disclosures, for the browser's print (audited)
//	GET  /users, GET /users/{user_id}     what a user opened, heat map against their baseline, alerts, cases (audited)
//	GET  /allowlist, POST /allowlist      entries and their history; add (allowlist:write, audited)
//	POST /allowlist/{entry_id}/expire|remove
//
// They read and write through InvestigationStore: *triage.Store, or the
// demo's in-memory store (memstore), whose allowlist edits reach no
// detector (the demo's run is over; the allowlist page says so); a store
// without it answers them with 501.
//
// A version conflict is shown as the other person's change (who, what,
// when) with the submitted form offered again, never as a bare 409.
package console
