package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// While Axigen refuses connections, 1,000 writes from four concurrent
// ldapmodify processes all succeed for their clients; the backlog is in the
// journal (`ldapgate journal stats` on the stopped gateway's data folder);
// after a restart on the same folder and Axigen's return, everything is
// delivered and Axigen equals the directory.
func TestMirrorAxigenOutageBacklogIsDelivered(t *testing.T) {
	const users, groups, writes, procs = 100, 4, 1000, 4
	e := newMirrorEnv(t, mirrorOptions{Users: users, Groups: groups, LogLevel: "info"})
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}

	uids := []string{"alice", "bob", "carol"}
	for i := range users {
		uids = append(uids, slapd.UserUID(i))
	}
	// Each process owns a share of the entries, so its changes to one entry
	// are made in order; process 0 also moves carol in and out of groups.
	ldifs := make([]strings.Builder, procs)
	counts := make([]int, procs)
	groupWrites := 0
	for i := range writes {
		if i%50 == 49 {
			k := groupWrites
			groupWrites++
			op := "add"
			if (k/groups)%2 == 1 {
				op = "delete"
			}
			fmt.Fprintf(&ldifs[0], "dn: %s\nchangetype: modify\n%s: member\nmember: %s\n\n",
				groupDN(slapd.GroupCN(k%groups)), op, userDN("carol"))
			counts[0]++
			continue
		}
		u := i % len(uids)
		p := u % procs
		fmt.Fprintf(&ldifs[p], "dn: %s\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: +1 555 8%06d\n\n",
			userDN(uids[u]), i)
		counts[p]++
	}

	start := time.Now()
	var wg sync.WaitGroup
	results := make([]toolResult, procs)
	for p := range procs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[p] = e.tool(ldifs[p].String(), "ldapmodify", mirrorAdminDN, e.dir.RootPW)
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	for p, r := range results {
		if r.Code != 0 {
			t.Fatalf("ldapmodify %d exited %d while Axigen was down:\n%s", p, r.Code, r.Out)
		}
		if n := strings.Count(r.Out, "modifying entry"); n != counts[p] {
			t.Fatalf("ldapmodify %d reported %d modified entries, want %d:\n%s", p, n, counts[p], r.Out)
		}
	}
	t.Logf("%d writes through the gateway with Axigen down in %v (%.0f/s)", writes, elapsed, writes/elapsed.Seconds())
	if n := len(e.sim.Accounts(mirrorDomain)); n != len(uids) {
		t.Fatalf("Axigen changed while it was down: %d accounts", n)
	}

	// The backlog, as the operator sees it.
	e.stop()
	haveJournal := !e.journalMissing()
	if haveJournal {
		stats := e.journalStats()
		if stats["committed"] != writes || stats["delivered"] != 0 || stats["dead"] != 0 {
			t.Errorf("journal stats with Axigen down: %v; want %d committed, none delivered or dead", stats, writes)
		}
	}

	e.start()
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	back := time.Now()
	e.waitMirrored(120*time.Second, false)
	e.waitDrained(120*time.Second, false)
	t.Logf("backlog delivered %v after Axigen's return", time.Since(back))

	if !haveJournal {
		return
	}
	e.stop()
	stats := e.journalStats()
	if stats["committed"] != 0 || stats["prepared"] != 0 || stats["delivered"] != writes || stats["dead"] != 0 {
		t.Errorf("journal stats after delivery: %v; want all %d delivered", stats, writes)
	}
}

// journalStats runs `ldapgate journal stats --json` and returns the record
// count of each state (prepared, committed, delivered, dead), wherever the
// output nests them.
func (e *mirrorEnv) journalStats() map[string]int {
	e.t.Helper()
	out := e.journal("stats", "--json").Out
	var v any
	if err := json.Unmarshal([]byte(out), &v); err != nil {
		e.t.Fatalf("decode `ldapgate journal stats --json`: %v\n%s", err, out)
	}
	counts := map[string]int{}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			for k, val := range x {
				if n, ok := val.(float64); ok {
					for _, st := range []string{"prepared", "committed", "delivered", "dead"} {
						if strings.EqualFold(k, st) {
							counts[st] = int(n)
						}
					}
				}
				walk(val)
			}
		case []any:
			for _, val := range x {
				walk(val)
			}
		}
	}
	walk(v)
	if len(counts) == 0 {
		e.t.Fatalf("`ldapgate journal stats --json` names no state counts:\n%s", out)
	}
	return counts
}
