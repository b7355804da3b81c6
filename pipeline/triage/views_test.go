package triage

import (
	"context"
	"strings"
	"testing"
	"time"

	tt "github.com/ehrwatch/ehrwatch/pipeline/triage/triagetest"
)

func TestPatientViews(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	s := NewStore(conn, Options{})
	rep, err := s.ReportAll(ctx, ReportQuery{Kind: PatientAccess, SubjectID: tt.PatientMain,
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 5000})
	if err != nil {
		t.Fatal(err)
	}
	sum := rep.Summarize()
	if sum.Accesses != 6 || sum.Explained != 4 || sum.Unexplained != 2 || sum.BreakGlass != 1 || sum.NumDays != 31 {
		t.Fatalf("summary: %+v", sum)
	}
	var order []string
	for _, u := range sum.Users {
		order = append(order, u.UserID)
	}
	if strings.Join(order, ",") != "u-alice,u-bob,u-carol,u-dave" {
		t.Fatalf("users ordered %v", order)
	}
	alice, bob := sum.Users[0], sum.Users[1]
	if alice.Accesses != 3 || alice.By["department"] != 2 || alice.By["unexplained"] != 1 || alice.UserName != "Quillon Marchetti" {
		t.Fatalf("alice: %+v", alice)
	}
	// 2026-03-08 is day 7 of the range, 2026-03-09 day 8.
	if alice.Days[7].Explained != 2 || alice.Days[8].Unexplained != 1 || bob.Days[7].Unexplained != 1 || !bob.Days[7].BreakGlass || bob.Flagged != 1 {
		t.Fatalf("timelines: alice %+v bob %+v", alice.Days[6:9], bob.Days[6:9])
	}
	if sum.Users[3].By["care_team"] != 1 {
		t.Fatalf("dave: %+v", sum.Users[3])
	}

	ds := rep.Disclosures()
	purposes := map[string]string{}
	for _, d := range ds {
		purposes[d.UserID+"/"+d.Action] = d.Purpose
	}
	if len(ds) != 6 || !strings.HasPrefix(purposes["u-bob/view"], "Emergency access (break-glass): =HYPERLINK") ||
		purposes["u-alice/print"] != "Not documented" || purposes["u-dave/view"] != "Treatment: care team of encounter enc-1" ||
		purposes["u-carol/view"] != "Treatment: encounter enc-1 in Cardiology" {
		t.Fatalf("disclosures: %v", purposes)
	}
	if ds[0].Role != "nurse" || ds[0].Department != "Cardiology" || ds[0].UserName != "Quillon Marchetti" {
		t.Fatalf("who: %+v", ds[0])
	}

	urep, err := s.ReportAll(ctx, ReportQuery{Kind: UserActivity, SubjectID: "u-bob",
		From: tt.TS("2026-03-01T00:00:00Z"), To: tt.TS("2026-04-01T00:00:00Z"), Limit: 5000})
	if err != nil {
		t.Fatal(err)
	}
	pats := urep.ByPatient()
	if len(pats) != 2 || pats[0].PatientID != tt.PatientMain || pats[0].Unexplained != 1 || pats[0].BreakGlass != 1 ||
		pats[1].Explanations[0] != "encounter enc-2 in Oncology" {
		t.Fatalf("by patient: %+v", pats)
	}

	refs, err := s.ReferenceCounts(ctx)
	if err != nil || refs.Users != 4 || refs.Encounters != 2 || refs.NoCare() {
		t.Fatalf("reference counts: %+v %v", refs, err)
	}
	empty := NewStore(tt.NewDB(t, tt.Fixture{}), Options{})
	refs, err = empty.ReferenceCounts(ctx)
	if err != nil || !refs.NoCare() {
		t.Fatalf("empty reference: %+v %v", refs, err)
	}
}

func TestUserHeatmap(t *testing.T) {
	conn := tt.NewDB(t, tt.NewFixture())
	ctx := context.Background()
	s := NewStore(conn, Options{})
	h, err := s.UserHeatmap(ctx, "u-alice", tt.TS("2026-03-09T00:00:00Z"), tt.TS("2026-03-10T00:00:00Z"), 28)
	if err != nil {
		t.Fatal(err)
	}
	// ev-5 (Monday 13:00 UTC) in the period; ev-1 and ev-2 (Sunday 06:59
	// and 07:00 UTC) in the baseline, 4 weeks: 0.25 a week each.
	if h.PeriodTotal != 1 || h.Period[0][13] != 1 || h.BaselineTotal != 2 || h.Baseline[6][6] != 0.25 || h.Baseline[6][7] != 0.25 || h.TimeZone != "UTC" {
		t.Fatalf("heatmap: %+v", h)
	}
	// In the facility's zone the same accesses move: 06:59 UTC is 01:59 EST,
	// 07:00 UTC is 03:00 EDT (spring forward), 13:00 UTC Monday is 09:00 EDT.
	ny := NewStore(conn, Options{Location: func(string) *time.Location { return mustZone(t, "America/New_York") }})
	h, err = ny.UserHeatmap(ctx, "u-alice", tt.TS("2026-03-09T00:00:00Z"), tt.TS("2026-03-10T00:00:00Z"), 28)
	if err != nil || h.Period[0][9] != 1 || h.Baseline[6][1] != 0.25 || h.Baseline[6][3] != 0.25 || h.TimeZone != "America/New_York" {
		t.Fatalf("heatmap in New York: %+v %v", h, err)
	}
}

func mustZone(t *testing.T, name string) *time.Location {
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
