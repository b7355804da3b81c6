package console

import (
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/ehrwatch/ehrwatch/pipeline/api"
	"github.com/ehrwatch/ehrwatch/pipeline/triage"
)

// heatmapBaselineDays is the baseline of the user page's heat map: the
// four weeks before the period.
const heatmapBaselineDays = 28

type userLookupView struct {
	UserID, From, To, Error string
}

func (c *Console) handleUserLookup(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	q := r.URL.Query()
	v := userLookupView{UserID: q.Get("user_id"), From: q.Get("from"), To: q.Get("to")}
	if v.From == "" && v.To == "" {
		v.From, v.To = c.defaultPeriod()
	}
	if v.UserID != "" {
		if err := triage.CheckID("user_id", v.UserID); err != nil {
			v.Error = err.Error()
		} else if _, _, err := parsePeriod(v.From, v.To); err != nil {
			v.Error = err.Error()
		} else {
			http.Redirect(w, r, "/users/"+pathEscape(v.UserID)+"?"+url.Values{"from": {v.From}, "to": {v.To}}.Encode(), http.StatusSeeOther)
			return nil
		}
	}
	status := http.StatusOK
	if v.Error != "" {
		status = http.StatusBadRequest
	}
	c.render(w, r, rc, status, "users", "Users", "users", v)
	return nil
}

// heatRow is one day of week of the heat map.
type heatRow struct {
	Day   string
	Cells []cell
}

// patientLine is one patient the user opened.
type patientLine struct {
	triage.PatientAccessSummary
	Link string
}

// userView is the user page.
type userView struct {
	UserID, From, To string
	Name, Role, Dept string
	Heat             []heatRow
	Baseline         []heatRow
	Hours            []string
	Map              triage.Heatmap
	Above            int
	Patients         []patientLine
	Accesses         int
	Unexplained      int
	Findings         []triage.FindingSummary
	Alerts           []triage.Alert
	Cases            []triage.Case
	Truncated        bool
	Warning          string
	BaselineDays     int
}

var weekdays = []string{"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"}

func (c *Console) handleUser(w http.ResponseWriter, r *http.Request, rc *reqCtx) error {
	id := r.PathValue("user_id")
	if err := triage.CheckID("user_id", id); err != nil {
		return err
	}
	v := userView{UserID: id, From: r.URL.Query().Get("from"), To: r.URL.Query().Get("to"), BaselineDays: heatmapBaselineDays}
	if v.From == "" && v.To == "" {
		v.From, v.To = c.defaultPeriod()
	}
	from, to, err := parsePeriod(v.From, v.To)
	if err != nil {
		return err
	}
	ctx := r.Context()
	rep, err := c.invs.ReportAll(ctx, triage.ReportQuery{Kind: triage.UserActivity, SubjectID: id, From: from, To: to, Limit: maxPageRows})
	if err != nil {
		return err
	}
	hm, err := c.invs.UserHeatmap(ctx, id, from, to, heatmapBaselineDays)
	if err != nil {
		return err
	}
	alerts, err := c.deps.Store.ListAlerts(ctx, triage.AlertFilter{UserID: id, Limit: 200})
	if err != nil {
		return err
	}
	ids := make([]string, len(alerts.Alerts))
	for i, a := range alerts.Alerts {
		ids[i] = a.AlertID
	}
	cases, err := c.invs.CasesForAlerts(ctx, ids, 100)
	if err != nil {
		return err
	}
	patients := rep.Patients()
	for _, a := range alerts.Alerts {
		if a.PatientID != "" {
			patients = append(patients, a.PatientID)
		}
	}
	if err := c.audit(r, rc, api.AuditEvent{UserID: id, Rows: len(rep.Rows) + len(alerts.Alerts), Patients: uniq(patients),
		Params: map[string]string{"from": v.From, "to": v.To, "view": "page"}}); err != nil {
		return err
	}

	v.Map, v.Alerts, v.Cases, v.Findings, v.Truncated = hm, alerts.Alerts, cases, rep.Findings, rep.NextCursor != ""
	if len(rep.Warnings) > 0 {
		v.Warning = rep.Warnings[0]
	}
	if len(rep.Rows) > 0 {
		v.Name, v.Role, v.Dept = rep.Rows[0].UserName, rep.Rows[0].UserRole, rep.Rows[0].UserDepartment
	}
	v.Accesses = len(rep.Rows)
	for _, p := range rep.ByPatient() {
		v.Unexplained += p.Unexplained
		v.Patients = append(v.Patients, patientLine{PatientAccessSummary: p, Link: c.PatientLink(rc.principal, p.PatientID) + "?" +
			url.Values{"from": {v.From}, "to": {v.To}}.Encode()})
	}
	for h := range 24 {
		v.Hours = append(v.Hours, fmt.Sprintf("%02d", h))
	}
	periodWeeks := to.Sub(from).Hours() / (24 * 7)
	maxP, maxB := 0.0, 0.0
	for d := range 7 {
		for h := range 24 {
			maxP = max(maxP, float64(hm.Period[d][h]))
			maxB = max(maxB, hm.Baseline[d][h])
		}
	}
	for d := range 7 {
		row, brow := heatRow{Day: weekdays[d]}, heatRow{Day: weekdays[d]}
		for h := range 24 {
			n, b := hm.Period[d][h], hm.Baseline[d][h]
			cl := cell{Class: heatClass(float64(n), maxP), Label: strconv.Itoa(n),
				Text: fmt.Sprintf("%s %02d:00: %d accesses; baseline %.1f a week", weekdays[d], h, n, b)}
			// Above the user's own baseline: more than twice the
			// baseline's expected count for the period, and at least 3.
			if expected := b * max(periodWeeks, 1.0/7); n >= 3 && float64(n) > 2*expected {
				cl.Class += " heat-above"
				cl.Label += "▲"
				cl.Text += " (above the baseline)"
				v.Above++
			}
			row.Cells = append(row.Cells, cl)
			brow.Cells = append(brow.Cells, cell{Class: heatClass(b, maxB), Label: strconv.FormatFloat(b, 'f', 1, 64),
				Text: fmt.Sprintf("%s %02d:00: %.1f accesses a week", weekdays[d], h, b)})
		}
		v.Heat = append(v.Heat, row)
		v.Baseline = append(v.Baseline, brow)
	}
	title := "User " + id
	c.render(w, r, rc, http.StatusOK, "user", title, "users", v)
	return nil
}

// heatClass buckets v (0..max) into heat-0 … heat-5.
func heatClass(v, maxV float64) string {
	if v <= 0 || maxV <= 0 {
		return "heat-0"
	}
	return "heat-" + strconv.Itoa(1+int(4.999*v/maxV))
}

func uniq(ids []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, id := range ids {
		if !seen[id] {
			seen[id] = true
			out = append(out, id)
		}
	}
	return out
}
