package e2e

// The cluster's fault tests (issue 18, acceptance 1 and 2): real gateway
// processes clustered over Raft, real slapd, the Axigen simulator, 16
// clients writing; each fault a subtest of a few rounds (`make test`) or
// LDAPGATE_CLUSTER_ROUNDS of them (`make soak`). Each subtest settles the
// cluster, checks and prints its figures (go test -v shows them).

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterFault is one kind of fault: run injects it once, mid-stream, and
// heals it, returning what the checker needs to know of the round.
type clusterFault struct {
	name string
	run  func(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound
}

func TestClusterFaults(t *testing.T) {
	clusterSupported(t)
	rounds := clusterRounds(t)
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("LDAPGATE_CLUSTER_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("%d rounds per fault, seed %d (LDAPGATE_CLUSTER_SEED reproduces the choices)", rounds, seed)
	faults := []clusterFault{
		{"kill-leader", killLeaderRound},
		{"kill-two", killTwoRound},
		{"kill-all", killAllRound},
		{"sigstop-leader", sigstopLeaderRound},
		{"isolate-leader", isolateLeaderRound},
		{"bridge", bridgeRound},
		{"membership", membershipRound},
	}
	var all []clusterFigures
	for i, fault := range faults {
		t.Run(fault.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(seed, uint64(i)))
			c := newClusterEnv(t, clusterOptions{})
			w := c.startWorkload(16, rng.Uint64())
			var rs []faultRound
			for r := range rounds {
				round := fault.run(c, w, rng, r)
				// A round is over when the cluster delivers again, so
				// that the next fault does not cut this one's recovery.
				c.waitDelivered(round.T0)
				rs = append(rs, round)
			}
			diverged := c.settle(w)
			f := c.check(fault.name, w, rs, diverged)
			t.Log(f.String())
			all = append(all, f)
		})
	}
	if len(all) > 0 {
		var b strings.Builder
		var acks, deliveries []time.Duration
		for _, f := range all {
			fmt.Fprintf(&b, "\n  %-15s rounds %3d  acked %5d refused %4d unknown %3d  lost %d minority %d stale %d (paused %d) diverged %d order %d  leader p99 %v  ack p99 %v  delivery p99 %v  ack->Axigen max %v",
				f.Kind, f.Rounds, f.Acked, f.Refused, f.Unknown, f.AckedLost, f.MinorityAcks, f.StaleMutations, f.StalePausedMutations,
				f.Diverged, f.OrderViolations, quantile(f.FirstLeader, .99).Round(time.Millisecond), quantile(f.FirstAck, .99).Round(time.Millisecond),
				quantile(f.FirstDelivery, .99).Round(time.Millisecond), quantile(f.AckToAxigen, 1).Round(time.Millisecond))
			acks = append(acks, f.FirstAck...)
			deliveries = append(deliveries, f.FirstDelivery...)
		}
		t.Logf("cluster faults, all rounds:%s\n  overall: fault -> first acknowledged write p99 %v, fault -> first Axigen delivery p99 %v (fence delay 2s)",
			b.String(), quantile(acks, .99).Round(time.Millisecond), quantile(deliveries, .99).Round(time.Millisecond))
	}
}

// midStream waits until n more writes were acknowledged, so that the
// fault hits a stream of writes in flight.
func (w *workload) midStream(t testing.TB, n int) {
	t.Helper()
	from := time.Now()
	waitFor(t, 60*time.Second, fmt.Sprintf("%d writes acknowledged", n), func() error {
		k := 0
		for _, cw := range w.all() {
			if cw.Outcome == succeeded && !cw.Start.Before(from) {
				k++
			}
		}
		if k < n {
			return fmt.Errorf("%d so far", k)
		}
		return nil
	})
}

// waitDelivered waits until Axigen took a change after t0 from the
// leader of a term newer than the one in force at t0 (or from anyone, if
// no newer term came).
func (c *clusterEnv) waitDelivered(t0 time.Time) {
	c.t.Helper()
	waitFor(c.t, 60*time.Second, "an Axigen delivery after the fault", func() error {
		if _, ok := firstDelivery(c.e.sim.Commands(), c.readLeaderships(), t0); !ok {
			return errNotYet
		}
		return nil
	})
}

// followers are the running members other than leader.
func (c *clusterEnv) followers(leader *gwNode) []*gwNode {
	var out []*gwNode
	for _, n := range c.members() {
		if n != leader {
			out = append(out, n)
		}
	}
	return out
}

// kill -9 of the leader mid-stream; it is restarted once the others took
// writes again.
func killLeaderRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	w.midStream(c.t, 10+rng.IntN(40))
	t0 := c.kill(leader)
	w.waitAcked(c.t, t0, 30*time.Second, "after kill -9 of leader "+leader.name)
	c.start(leader)
	w.waitAckedVia(c.t, leader.name, time.Now(), 30*time.Second)
	return faultRound{Kind: "kill-leader", T0: t0}
}

// kill -9 of the leader and a follower: the survivor has no quorum and
// must acknowledge nothing; both are restarted (the figures count from the
// restart).
func killTwoRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	fs := c.followers(leader)
	other, survivor := fs[rng.IntN(len(fs))], (*gwNode)(nil)
	for _, f := range fs {
		if f != other {
			survivor = f
		}
	}
	w.midStream(c.t, 10+rng.IntN(40))
	tk := c.kill(leader)
	c.kill(other)
	// The survivor refuses writes (no quorum) within a bounded time.
	waitFor(c.t, 30*time.Second, "a write through the survivor "+survivor.name+" refused", func() error {
		for _, cw := range w.all() {
			if cw.Node == survivor.name && cw.Sent && cw.Outcome == failed && !cw.Start.Before(tk) {
				return nil
			}
		}
		return errNotYet
	})
	t0 := c.note("restart", leader.name+","+other.name)
	c.spawn(leader)
	c.spawn(other)
	c.start2(leader, other)
	w.waitAcked(c.t, t0, 30*time.Second, "after the restart of "+leader.name+" and "+other.name)
	return faultRound{Kind: "kill-two", T0: t0,
		NoAck: []noAckWindow{{Nodes: []string{survivor.name}, From: tk, To: t0}}}
}

// start2 waits until nodes spawned meanwhile listen.
func (c *clusterEnv) start2(nodes ...*gwNode) {
	c.t.Helper()
	for _, n := range nodes {
		waitFor(c.t, 30*time.Second, "gateway "+n.name+" listening", func() error {
			if !n.gw.alive() {
				c.t.Fatalf("gateway %s exited during start-up (%v):\n%s", n.name, n.gw.cmd.ProcessState, tailFile(n.logPath, 4000))
			}
			data, err := os.ReadFile(n.addrFile)
			if err != nil || !strings.Contains(string(data), "ldap://") {
				return errNotYet
			}
			return nil
		})
	}
}

// kill -9 of all three at once, then restart.
func killAllRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	c.waitLeader(30 * time.Second)
	w.midStream(c.t, 10+rng.IntN(40))
	ms := c.members()
	for _, n := range ms {
		_ = n.gw.cmd.Process.Kill()
		c.note("kill", n.name)
	}
	for _, n := range ms {
		<-n.gw.exited
	}
	t0 := c.note("restart", "all")
	for _, n := range ms {
		c.spawn(n)
	}
	c.start2(ms...)
	w.waitAcked(c.t, t0, 30*time.Second, "after the restart of all")
	return faultRound{Kind: "kill-all", T0: t0}
}

// SIGSTOP of the leader for 2–5 s (2–30 s in a soak), then SIGCONT: it
// must step down, and what it sends Axigen after it thaws is counted
// apart.
func sigstopLeaderRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	longest := 5
	if os.Getenv("LDAPGATE_CLUSTER_ROUNDS") != "" {
		longest = 30
	}
	d := time.Duration(2000+rng.IntN((longest-2)*1000)) * time.Millisecond
	w.midStream(c.t, 10+rng.IntN(40))
	t0 := c.pause(leader)
	c.t.Logf("round %d: leader %s stopped for %v", round, leader.name, d)
	w.waitAcked(c.t, t0, 30*time.Second, "after SIGSTOP of leader "+leader.name)
	// The pause's length is the fault itself, not a synchronisation.
	time.Sleep(time.Until(t0.Add(d)))
	tr := c.resume(leader)
	w.waitAckedVia(c.t, leader.name, tr, 30*time.Second)
	return faultRound{Kind: "sigstop-leader", T0: t0}
}

// A partition isolating the leader (both ways, every link): the majority
// elects a leader and takes writes, the old one acknowledges nothing;
// then the network heals.
func isolateLeaderRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	w.midStream(c.t, 10+rng.IntN(40))
	t0 := c.note("isolate", leader.name)
	c.net.Isolate(leader.name)
	w.waitAcked(c.t, t0, 30*time.Second, "after isolating leader "+leader.name)
	// The isolated side answers (refuses) writes within a bounded time.
	waitFor(c.t, 30*time.Second, "a write through the isolated "+leader.name+" answered", func() error {
		for _, cw := range w.all() {
			if cw.Node == leader.name && cw.Sent && cw.Outcome != succeeded && !cw.Start.Before(t0) {
				return nil
			}
		}
		return errNotYet
	})
	th := c.note("heal", "")
	c.net.HealAll()
	w.waitAckedVia(c.t, leader.name, th, 30*time.Second)
	return faultRound{Kind: "isolate-leader", T0: t0,
		NoAck: []noAckWindow{{Nodes: []string{leader.name}, From: t0, To: th}}}
}

// A bridge partition: the leader and one follower lose their link, the
// other follower still reaches both. There is no minority; the cluster
// must keep a quorum and take writes, and heal.
func bridgeRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	fs := c.followers(leader)
	cut := fs[rng.IntN(len(fs))]
	w.midStream(c.t, 10+rng.IntN(40))
	t0 := c.note("cut", leader.name+"-"+cut.name)
	c.net.CutLink(leader.name, cut.name)
	w.waitAcked(c.t, t0, 30*time.Second, "after cutting "+leader.name+"-"+cut.name)
	// Held for several election timeouts, so that the cut side's
	// elections (or pre-votes) play out; the length is the fault itself.
	time.Sleep(time.Until(t0.Add(4 * time.Second)))
	th := c.note("heal", "")
	c.net.HealAll()
	w.waitAckedVia(c.t, cut.name, th, 30*time.Second)
	return faultRound{Kind: "bridge", T0: t0}
}

// A membership change under load: a new gateway is started with the
// running members as its peers (not itself: it bootstraps nothing and
// waits, as docs/operations.md says) and added (`ldapgate cluster add`,
// under the address it advertises: its own, as it is not in its list, so
// it is not behind a proxy), then a member is removed
// (`ldapgate cluster remove`): the leader in even rounds, a follower in
// odd ones; the removed gateway is then stopped. The figures count from
// the removal.
func membershipRound(c *clusterEnv, w *workload, rng *rand.Rand, round int) faultRound {
	leader := c.waitLeader(30 * time.Second)
	w.midStream(c.t, 10+rng.IntN(40))
	names := []string{}
	for _, n := range c.members() {
		names = append(names, n.name)
	}
	nn := c.newNode(fmt.Sprintf("n%d", len(c.allNodes())+1), false)
	nn.peers = c.peerList(names)
	c.start(nn)
	c.note("add", nn.name)
	if out, err := c.clusterCLI(leader, "add", nn.name+"@"+nn.peerAddr); err != nil {
		c.t.Fatalf("add %s: %v", nn.name, err)
	} else {
		c.t.Logf("round %d: %s", round, strings.TrimSpace(out))
	}
	c.setMember(nn, true)
	c.waitCaughtUp(60 * time.Second)
	w.waitAckedVia(c.t, nn.name, time.Now(), 30*time.Second)

	gone := leader
	if round%2 == 1 {
		fs := c.followers(leader)
		gone = fs[rng.IntN(len(fs))]
	}
	via := c.followers(gone)[0]
	t0 := c.note("remove", gone.name)
	if out, err := c.clusterCLI(via, "remove", gone.name); err != nil {
		c.t.Fatalf("remove %s: %v", gone.name, err)
	} else {
		c.t.Logf("round %d: %s", round, strings.TrimSpace(out))
	}
	c.setMember(gone, false)
	w.waitAcked(c.t, t0, 30*time.Second, "after removing "+gone.name)
	c.waitLeader(30 * time.Second)
	c.stop(gone)
	return faultRound{Kind: "membership", T0: t0}
}

// setMember says whether n is in the cluster's configuration (the writers
// use the members).
func (c *clusterEnv) setMember(n *gwNode, member bool) {
	c.mu.Lock()
	n.member = member
	c.mu.Unlock()
}
