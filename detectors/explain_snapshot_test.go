package detectors

import (
	"encoding/json"
	"testing"
)

// explainerStateGolden is the encoded form of explainerStateFixture as
// the Engine snapshot (version 1) has always written it: own continuity
// keyed by patient id, sorted.
const explainerStateGolden = `{"users":{"u1":{"own":{"p2":{"at":7,"enc":"e1"},"p\u003c1\u003e":{"at":5,"enc":"e9"}},"related":{"p3":{"days":2,"last_day":20000}},"breadth":{"day":20001,"today":{"17":true},"days":3,"charts":1.5,"unexplained":0.25}},"u2":{"breadth":{"day":0,"days":0,"charts":0,"unexplained":0}}},"prune_day":19999}`

func explainerStateFixture() explainerState {
	s := explainerState{Users: map[string]*userExplain{}, PruneDay: 19999}
	u1 := &userExplain{Related: map[string]relatedSeen{"p3": {Days: 2, LastDay: 20000}},
		Breadth: breadth{Day: 20001, Today: map[uint64]bool{17: true}, Days: 3, Charts: 1.5, Unexplained: 0.25}}
	setOwn(u1, "p2", ownAccess{At: 7, EncounterID: "e1"})
	setOwn(u1, "p<1>", ownAccess{At: 5, EncounterID: "e9"})
	s.Users["u1"] = u1
	s.Users["u2"] = &userExplain{}
	return s
}

// TestExplainerStateSnapshotForm pins the encoded form of the explainer's
// state inside the Engine snapshot (version 1): a change to its structs
// that changes the bytes must bump engineSnapshotVersion instead.
func TestExplainerStateSnapshotForm(t *testing.T) {
	b, err := json.Marshal(explainerStateFixture())
	if err != nil {
		t.Fatal(err)
	}
	if string(b) != explainerStateGolden {
		t.Fatalf("encoded form changed:\n got %s\nwant %s", b, explainerStateGolden)
	}
	var back explainerState
	if err := json.Unmarshal([]byte(explainerStateGolden), &back); err != nil {
		t.Fatal(err)
	}
	b2, err := json.Marshal(back)
	if err != nil {
		t.Fatal(err)
	}
	if string(b2) != explainerStateGolden {
		t.Fatalf("restored state encodes differently:\n got %s\nwant %s", b2, explainerStateGolden)
	}
	for pid, want := range map[string]ownAccess{"p2": {At: 7, EncounterID: "e1"}, "p<1>": {At: 5, EncounterID: "e9"}} {
		if got, ok := getOwn(back.Users["u1"], pid); !ok || got != want {
			t.Errorf("own[%s] = %+v, %v; want %+v", pid, got, ok, want)
		}
	}
	if _, ok := getOwn(back.Users["u1"], "p3"); ok {
		t.Error("own[p3] found; want absent")
	}
}

func setOwn(us *userExplain, pid string, o ownAccess) {
	if us.Own == nil {
		us.Own = map[string]*ownAccess{}
	}
	us.Own[pid] = &o
}

func getOwn(us *userExplain, pid string) (ownAccess, bool) {
	o, ok := us.Own[pid]
	if !ok || o == nil {
		return ownAccess{}, false
	}
	return *o, true
}
