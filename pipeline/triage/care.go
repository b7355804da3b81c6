package triage

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"
)

// Care says whether a care relationship explains an access, using the
// detectors' definition: an encounter of the patient whose interval, widened
// to [start − care_slack_before, end + care_slack_after] (open encounters
// never end), contains the access time, and whose care team lists the user
// (preferred) or whose department equals the user's department (compared
// case-insensitively; the event's department, else the users table's).
type Care struct {
	Explained bool `json:"explained"`
	// By is "care_team" or "department" when explained.
	By          string `json:"by,omitempty"`
	EncounterID string `json:"encounter_id,omitempty"`
	Department  string `json:"department,omitempty"`
}

// Explanation renders c for tables and CSV.
func (c Care) Explanation() string {
	switch c.By {
	case "care_team":
		return "care team of encounter " + c.EncounterID
	case "department":
		return "encounter " + c.EncounterID + " in " + c.Department
	}
	return "unexplained"
}

type careEnc struct {
	id, dept   string
	start, end int64 // unix ns; end = MaxInt64 while open
}

// careIndex holds, per patient, the encounters by folded department and by
// care-team member, each sorted by (start, id) — the detectors' layout.
type careIndex map[string]*patientEncs

type patientEncs struct {
	byDept   map[string][]careEnc
	byMember map[string][]careEnc
}

// loadCare reads the encounters of patients that can explain an access
// between minT and maxT.
func (s *Store) loadCare(ctx context.Context, patients []string, minT, maxT time.Time) (careIndex, error) {
	ci := careIndex{}
	if len(patients) == 0 {
		return ci, nil
	}
	p := params{}
	p.strs("patients", patients)
	p.time("start_by", maxT.Add(s.opts.CareSlackBefore))
	p.time("end_from", minT.Add(-s.opts.CareSlackAfter))
	rows, err := s.conn.Query(p.ctx(ctx), `SELECT encounter_id, patient_id, department, start_time, end_time, care_team
FROM encounters FINAL
WHERE has({patients:Array(String)}, patient_id)
  AND NOT deleted
  AND start_time <= {start_by:DateTime64(3, 'UTC')}
  AND (end_time IS NULL OR end_time >= {end_from:DateTime64(3, 'UTC')})`)
	if err != nil {
		return nil, fmt.Errorf("read encounters: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id, patient, dept string
		var start time.Time
		var end *time.Time
		var team []string
		if err := rows.Scan(&id, &patient, &dept, &start, &end, &team); err != nil {
			return nil, fmt.Errorf("read encounters: %w", err)
		}
		ci.add(id, patient, dept, start, end, team)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read encounters: %w", err)
	}
	ci.sort()
	return ci, nil
}

func sortEncs(l []careEnc) {
	slices.SortFunc(l, func(a, b careEnc) int {
		if a.start != b.start {
			if a.start < b.start {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
}

// find mirrors the detectors: of the encounters that start (minus slack) by
// t, take the first one with the latest end; it explains t when it ends
// (plus slack) at or after t.
func find(l []careEnc, t, slackBefore, slackAfter int64) (careEnc, bool) {
	best := -1
	for i, e := range l {
		if e.start-slackBefore > t {
			break
		}
		if best < 0 || e.end > l[best].end {
			best = i
		}
	}
	if best < 0 {
		return careEnc{}, false
	}
	if e := l[best]; e.end == math.MaxInt64 || e.end >= t-slackAfter {
		return e, true
	}
	return careEnc{}, false
}

// explain decides whether the patient's encounters explain userID's access
// at t; dept is the user's department (event, else users table).
func (ci careIndex) explain(s *Store, patient, userID, dept string, t time.Time) Care {
	return ci.explainSlack(patient, userID, dept, t, s.opts.CareSlackBefore, s.opts.CareSlackAfter)
}

func (ci careIndex) explainSlack(patient, userID, dept string, t time.Time, slackBefore, slackAfter time.Duration) Care {
	pe := ci[patient]
	if pe == nil {
		return Care{}
	}
	ns := t.UnixNano()
	sb, sa := int64(slackBefore), int64(slackAfter)
	if e, ok := find(pe.byMember[userID], ns, sb, sa); ok {
		return Care{Explained: true, By: "care_team", EncounterID: e.id, Department: e.dept}
	}
	if d := foldDept(dept); d != "" {
		if e, ok := find(pe.byDept[d], ns, sb, sa); ok {
			return Care{Explained: true, By: "department", EncounterID: e.id, Department: e.dept}
		}
	}
	return Care{}
}

func foldDept(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
