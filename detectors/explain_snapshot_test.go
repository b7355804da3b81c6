package detectors

import (
	"encoding/json"
	"testing"
)

// explainerStateGoldenV1 is the encoded form of explainerStateFixture as
// version 1 Engine snapshots wrote it: own continuity keyed by patient
// id, sorted. Restore still reads it.
const explainerStateGoldenV1 = `{"users":{"u1":{"own":{"p2":{"at":7,"enc":"e1"},"p\u003c1\u003e":{"at":5,"enc":"e9"}},"related":{"p3":{"days":2,"last_day":20000}},"breadth":{"day":20001,"today":{"17":true},"days":3,"charts":1.5,"unexplained":0.25}},"u2":{"breadth":{"day":0,"days":0,"charts":0,"unexplained":0}}},"prune_day":19999}`

// explainerStateGolden is the encoded form of explainerStateFixture in
// version 2 Engine snapshots: own continuity keyed by the FNV-1a hash of
// the patient id (fnv64a("p<1>") = 6502050037265672802, fnv64a("p2") = 636579882196134151),
// sorted as strings.
const explainerStateGolden = `{"users":{"u1":{"own_h":{"636579882196134151":{"at":7,"enc":"e1"},"6502050037265672802":{"at":5,"enc":"e9"}},"related":{"p3":{"days":2,"last_day":20000}},"breadth":{"day":20001,"today":{"17":true},"days":3,"charts":1.5,"unexplained":0.25}},"u2":{"breadth":{"day":0,"days":0,"charts":0,"unexplained":0}}},"prune_day":19999}`

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
// state inside the Engine snapshot (version 2): a change to its structs
// that changes the bytes must bump engineSnapshotVersion instead. A
// version 1 form still restores to the same state.
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

	var v1 explainerState
	if err := json.Unmarshal([]byte(explainerStateGoldenV1), &v1); err != nil {
		t.Fatal(err)
	}
	for _, us := range v1.Users {
		us.upgradeOwn()
	}
	if b3, err := json.Marshal(v1); err != nil || string(b3) != explainerStateGolden {
		t.Fatalf("the version 1 form restores to a state that encodes as\n%s (%v)\nwant %s", b3, err, explainerStateGolden)
	}
}

func setOwn(us *userExplain, pid string, o ownAccess) {
	if us.Own == nil {
		us.Own = map[uint64]ownAccess{}
	}
	us.Own[fnv64a(pid)] = o
}

func getOwn(us *userExplain, pid string) (ownAccess, bool) {
	o, ok := us.Own[fnv64a(pid)]
	return o, ok
}
