package e2e

import (
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// TestClusterCheckerFindsViolations feeds the cluster checker's audits a
// made-up history with one of each violation, so that a checker that
// finds nothing in the fault tests is known to look.
func TestClusterCheckerFindsViolations(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	fence := 2 * time.Second
	leaders := []leadership{
		{Node: "n4", Term: 1, Elected: at(-5), Delivered: at(-5)}, // the first leader: no fence to wait
		{Node: "n1", Term: 2, Elected: at(0), Delivered: at(2)},
		{Node: "n2", Term: 3, Elected: at(10), Delivered: at(12)},
		{Node: "n3", Term: 4, Elected: at(20), Delivered: at(20.5)}, // delivers before its fence
		{Node: "n1", Term: 5, Elected: at(30), Delivered: at(32)},
		{Node: "n2", Term: 6, Elected: at(40), Delivered: at(42)},
	}
	events := []faultEvent{{At: at(39), What: "pause", Node: "n1"}, {At: at(45), What: "resume", Node: "n1"}}
	seq := uint64(0)
	change := func(label string, s float64) axigensim.Command {
		seq++
		return axigensim.Command{At: at(s), Label: label, Context: "domain-account", Line: "COMMIT",
			Change: &axigensim.Change{Seq: seq, Kind: "account", Name: "u1",
				Account: &axigensim.AccountState{Name: "u1", Contact: map[string]string{"phone": "initial"}}}}
	}
	cmds := []axigensim.Command{
		change("n4", -4),   // the first leader, at once: fine
		change("n1", 5),    // its term: fine
		change("n1", 10.5), // a newer election, within the fence: allowed
		change("n1", 12.5), // after n2's fence: stale
		change("n3", 21),   // before n3's own fence: early
		change("n1", 46),   // after n2's term 6 fence, but n1 was frozen: apart
	}
	var f clusterFigures
	var fd findings
	auditCommands(&f, &fd, cmds, leaders, events, fence)
	if f.StaleMutations != 1 || f.InFenceWindow != 1 || f.EarlyMutations != 1 || f.StalePausedMutations != 1 {
		t.Errorf("command audit: %+v; want one stale, one in the fence window, one early, one from a paused gateway\n%s",
			f, strings.Join(fd.errs, "\n"))
	}

	ledger := &crashLedger{initial: map[string]string{"phone:u1": "initial"}, writes: map[string][]crashWrite{"phone:u1": {
		{value: "v0", outcome: succeeded}, {value: "v1", outcome: succeeded}, {value: "v2", outcome: unknown},
		{value: "v3", outcome: succeeded}, {value: "v4", outcome: failed},
	}}}
	var order []axigensim.Command
	for _, v := range []string{"v0", "v1", "v3", "v2", "v1", "v4", "nobody's"} {
		c := change("n1", 1)
		c.Change.Account.Contact["phone"] = v
		order = append(order, c)
	}
	f, fd = clusterFigures{}, findings{}
	auditOrder(&f, &fd, ledger, order)
	// v2 after v3 is a late unknown (allowed); v1 after v2 goes back;
	// v4 was refused; the last value nobody wrote.
	if f.OrderViolations != 2 || f.RefusedDelivered != 1 {
		t.Errorf("order audit: %d order violations, %d refused delivered; want 2 and 1\n%s",
			f.OrderViolations, f.RefusedDelivered, strings.Join(fd.errs, "\n"))
	}

	writes := []clusterWrite{
		{Node: "n1", Start: at(1), End: at(1.5), Outcome: succeeded}, // before the window
		{Node: "n1", Start: at(11), End: at(12), Outcome: succeeded}, // in it: a violation
		{Node: "n2", Start: at(11), End: at(12), Outcome: succeeded}, // the majority
		{Node: "n1", Start: at(11), End: at(25), Outcome: succeeded}, // after the heal
		{Node: "n1", Start: at(11), End: at(12), Outcome: failed},    // refused
	}
	f, fd = clusterFigures{}, findings{}
	auditMinority(&f, &fd, writes, []faultRound{{Kind: "x", NoAck: []noAckWindow{{Nodes: []string{"n1"}, From: at(10), To: at(20)}}}})
	if f.MinorityAcks != 1 {
		t.Errorf("minority audit: %d, want 1\n%s", f.MinorityAcks, strings.Join(fd.errs, "\n"))
	}
}
