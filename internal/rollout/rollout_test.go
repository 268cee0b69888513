package rollout

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

func TestStore(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	grant := func(machine string) bool {
		out, err := s.Serve("web", machine, "acquire 1 applying firewall")
		if err != nil {
			t.Fatal(err)
		}
		var g Grant
		json.Unmarshal(out, &g)
		return g.Granted
	}
	if !grant("m1") || grant("m2") || !grant("m1") {
		t.Fatal("one slot: m1 gets it (twice), m2 waits")
	}
	if _, err := s.Serve("web", "m1", "note health check failed: curl"); err != nil {
		t.Fatal(err)
	}
	st, _ := s.List("web")
	if len(st.Holders) != 1 || st.Holders[0].Reason != "health check failed: curl" {
		t.Fatalf("holders = %+v", st.Holders)
	}
	// m2 cannot release m1's slot: the holder comes from the forced command.
	s.Serve("web", "m2", "release")
	if grant("m2") {
		t.Fatal("m2 released a slot it did not hold")
	}
	s.Serve("web", "m1", "release")
	if !grant("m2") {
		t.Fatal("the freed slot was not granted")
	}
	for _, bad := range []string{"", "acquire", "acquire zero", "rm -rf /"} {
		if _, err := s.Serve("web", "m1", bad); err == nil {
			t.Errorf("Serve(%q) accepted", bad)
		}
	}
}

func TestSlotHistory(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	s.Acquire("web", "m1", 1, "x")
	s.Acquire("web", "m1", 1, "again") // still the same hold
	s.Release("web", "m1")
	s.Release("web", "m1") // not held: not recorded
	st, _ := s.List("web")
	if len(st.Holders) != 0 {
		t.Fatal(st)
	}
	b, _ := readHistory(s, "web")
	if got := strings.Count(b, "acquire m1") + strings.Count(b, "release m1"); got != 2 {
		t.Fatalf("history:\n%s", b)
	}
}

func readHistory(s Store, pool string) (string, error) {
	b, err := os.ReadFile(s.Dir + "/" + pool + ".history")
	return string(b), err
}
