package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/internal/testenv/testpki"
	"github.com/ldapgate/ldapgate/store"
)

// TestClusterMutualTLS: nodes whose certificates the cluster's CA signed
// replicate and forward over TLS; a node with another CA's certificate
// cannot join, nor can a client of another CA or one speaking plain TCP.
func TestClusterMutualTLS(t *testing.T) {
	ca, err := testpki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	other, err := testpki.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	good, err := cluster.TLSConfig(ca.CertFile, ca.KeyFile, ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	bad, err := cluster.TLSConfig(other.CertFile, other.KeyFile, other.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	c := newCluster(t, 3, nil)
	members, stranger := c.nodes[:2], c.nodes[2]
	members[0].tls, members[1].tls, stranger.tls = good, good, bad
	c.startAll()
	lead := c.leaderAmong(members)
	follower := members[0]
	if follower == lead {
		follower = members[1]
	}

	// A follower's proposal, with a password, goes to the leader over TLS.
	r := account("tls")
	r.Op, r.Changes, r.Secret = store.OpPassword, nil, []byte("secret over TLS")
	res, err := follower.n.Propose(context.Background(), []store.Command{prepare(r)})
	if err != nil || res[0].Err != nil {
		t.Fatalf("propose on the follower: %v %+v", err, res)
	}
	c.convergeAmong(members)
	for _, n := range members {
		got, err := n.j.Prepared()
		if err != nil || len(got) != 1 || got[0].Seq != res[0].Seq || string(got[0].Secret) != "secret over TLS" {
			t.Fatalf("%s: prepared %+v: %v", n.id, got, err)
		}
	}
	if recs, _ := stranger.j.List(store.Filter{}); len(recs) != 0 {
		t.Fatalf("the node of another CA has %d records", len(recs))
	}
	if id, _ := stranger.n.Leader(); id != "" {
		t.Fatalf("the node of another CA follows %s", id)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A client of the cluster's CA sees the stranger as unreachable.
	client, err := cluster.Dial(ctx, follower.addr, good)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != follower.id || st.LeaderID != lead.id || len(st.Servers) != 3 {
		t.Fatalf("status: %+v", st)
	}
	for _, s := range st.Servers {
		if reachable := s.ID != stranger.id; s.Reachable != reachable {
			t.Fatalf("status of %s: reachable %v (%s)", s.ID, s.Reachable, s.Error)
		}
	}
	// A client of another CA is refused (at the handshake, or at the first
	// read with TLS 1.3, where the server checks the client's certificate
	// after the client's handshake is done).
	if sc, err := cluster.Dial(ctx, follower.addr, bad); err == nil {
		_, err = sc.Status(ctx)
		sc.Close()
		if err == nil {
			t.Fatal("a client of another CA got the status")
		}
	}
	// Plain TCP to the TLS port gets nothing.
	if pc, err := cluster.Dial(ctx, follower.addr, nil); err == nil {
		_, err = pc.Status(ctx)
		pc.Close()
		if err == nil {
			t.Fatal("a plain TCP client got the status")
		}
	}
	raw, err := net.Dial("tcp", follower.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	raw.SetDeadline(time.Now().Add(10 * time.Second))
	raw.Write([]byte("P\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x01\x02"))
	if n, err := io.ReadAll(raw); err == nil && len(n) > 0 && n[0] != 0x15 {
		// 0x15: a TLS alert, all a plain client may get back.
		t.Fatalf("plain TCP got %q back", n)
	}
}

// TestPlainTCPOnlyOnLoopback: without TLS, a node refuses to start, and a
// client to dial, when an address is not on loopback.
func TestPlainTCPOnlyOnLoopback(t *testing.T) {
	dir := t.TempDir()
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{KeyFile: filepath.Join(dir, "journal.key"), Replicated: true, HousekeepingInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, cfg := range []cluster.Config{
		{Listen: "127.0.0.1:0", Peers: []cluster.Peer{{ID: "gw1", Addr: "127.0.0.1:7001"}, {ID: "gw2", Addr: "192.0.2.1:7000"}}},
		{Listen: "0.0.0.0:0"},
	} {
		cfg.NodeID, cfg.Dir, cfg.Journal = "gw1", filepath.Join(dir, "raft"), j
		n, err := cluster.Start(cfg)
		if err == nil {
			n.Shutdown()
			t.Fatalf("a plain TCP node started with %+v", cfg.Peers)
		}
		if !strings.Contains(err.Error(), "loopback") {
			t.Fatalf("start: %v", err)
		}
	}
	if _, err := cluster.Dial(context.Background(), "192.0.2.1:7000", nil); err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("plain dial of a remote address: %v", err)
	}
}

// TestFollowerProposalsSurviveLeaderLoss: writers propose on the
// followers while the leader is stopped. Every write is acknowledged,
// refused as certainly not applied (ErrNoQuorum), or of unknown outcome;
// the acknowledged ones are in every journal under their sequence number,
// the refused ones in none, and none twice.
func TestFollowerProposalsSurviveLeaderLoss(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	followers := c.others(lead)
	var (
		mu      sync.Mutex
		acked   = map[string]uint64{}
		refused = map[string]bool{}
		unknown int
		count   atomic.Int64
	)
	stopWriters := keepWriting(8, func(w, i int) bool {
		on := followers[w%2].n
		r := account(fmt.Sprintf("fw-%d-%d", w, i))
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := on.Propose(ctx, []store.Command{prepare(r)})
		cancel()
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil && res[0].Err == nil:
			acked[r.DN] = res[0].Seq
			count.Add(1)
		case errors.Is(err, cluster.ErrNoQuorum):
			refused[r.DN] = true
		case errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrOutcomeUnknown):
			unknown++
		default:
			t.Errorf("propose on a follower: %v %+v", err, res)
		}
		return !t.Failed()
	})
	waitFor(t, "100 acknowledged writes", 30*time.Second, func() bool { return count.Load() >= 100 })
	c.stop(lead)
	waitFor(t, "100 more acknowledged writes after the leader stopped", 60*time.Second, func() bool { return count.Load() >= 200 })
	stopWriters()
	if t.Failed() {
		t.FailNow()
	}
	got := c.converge()
	byDN := map[string]uint64{}
	for _, r := range got.Records {
		if other, ok := byDN[r.DN]; ok {
			t.Fatalf("%s journaled twice: %d and %d", r.DN, other, r.Seq)
		}
		byDN[r.DN] = r.Seq
	}
	for dn, seq := range acked {
		if byDN[dn] != seq {
			t.Fatalf("acknowledged write of %s (record %d) lost: the journal has %d", dn, seq, byDN[dn])
		}
	}
	for dn := range refused {
		if seq, ok := byDN[dn]; ok {
			t.Fatalf("write of %s refused as not applied, but journaled as %d", dn, seq)
		}
	}
	t.Logf("%d acknowledged, %d refused, %d unknown, %d journaled", len(acked), len(refused), unknown, len(got.Records))
}

// runs records the delivery runs of a test cluster's nodes.
type runs struct {
	t   *testing.T
	mu  sync.Mutex
	all []*run
}

type run struct {
	node       string
	term       uint64
	start, end time.Time
}

// deliver runs Deliver on node n until the test ends or the node stops:
// each run waits for its context to end.
func (rs *runs) deliver(n *testNode) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	rs.t.Cleanup(func() { cancel(); <-done })
	node, id := n.n, n.id
	go func() {
		defer close(done)
		err := node.Deliver(ctx, func(ctx context.Context, term uint64) error {
			r := &run{node: id, term: term, start: time.Now()}
			rs.mu.Lock()
			rs.all = append(rs.all, r)
			rs.mu.Unlock()
			<-ctx.Done()
			rs.mu.Lock()
			r.end = time.Now()
			rs.mu.Unlock()
			return ctx.Err()
		})
		if !errors.Is(err, context.Canceled) && !errors.Is(err, cluster.ErrClosed) {
			rs.t.Errorf("Deliver on %s: %v", id, err)
		}
	}()
}

// active is the run of node id under way, nil if none.
func (rs *runs) active(id string) *run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	for _, r := range rs.all {
		if r.node == id && r.end.IsZero() {
			c := *r
			return &c
		}
	}
	return nil
}

// get returns a copy of the runs.
func (rs *runs) get() []run {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	out := make([]run, len(rs.all))
	for i, r := range rs.all {
		out[i] = *r
	}
	return out
}

// checkNoOverlap fails the test if two runs overlapped in time.
func (rs *runs) checkNoOverlap() {
	all := rs.get()
	for i, a := range all {
		for _, b := range all[i+1:] {
			aEnd, bEnd := a.end, b.end
			if aEnd.IsZero() {
				aEnd = time.Now()
			}
			if bEnd.IsZero() {
				bEnd = time.Now()
			}
			if a.start.Before(bEnd) && b.start.Before(aEnd) {
				rs.t.Fatalf("two deliveries overlapped: %+v and %+v", a, b)
			}
		}
	}
}

// TestDeliverWaitsForTheFenceAfterFailover: the first leader of a new
// cluster delivers at once (no leader delivered before it); after a
// failover, the new leader fences the journal and starts delivering only
// once the fence delay has passed.
func TestDeliverWaitsForTheFenceAfterFailover(t *testing.T) {
	const delay = 2 * time.Second
	c := newCluster(t, 3, func(cfg *cluster.Config) { cfg.FenceDelay = delay })
	c.startAll()
	rs := &runs{t: t}
	for _, n := range c.nodes {
		rs.deliver(n)
	}
	lead := c.leader()
	waitFor(t, "the first leader to deliver", 10*time.Second, func() bool { return rs.active(lead.id) != nil })
	first := rs.active(lead.id)
	if first.term != lead.n.Term() {
		t.Fatalf("delivering in term %d, the leader's is %d", first.term, lead.n.Term())
	}
	if f := lead.n.Fence(); !f.Delivering || f.DeliveryTerm != first.term || f.Term != first.term || f.JournalTerm != first.term {
		t.Fatalf("fence state of the leader: %+v", f)
	}
	c.write("before")
	stopped := time.Now()
	c.stop(lead)

	next := c.leader()
	sawWaiting := false
	waitFor(t, "the new leader to deliver", 30*time.Second, func() bool {
		if f := next.n.Fence(); f.Waiting && f.ReadyAt.After(time.Now()) {
			sawWaiting = true
		}
		return rs.active(next.id) != nil
	})
	r := rs.active(next.id)
	if r.term <= first.term {
		t.Fatalf("the new leader delivers in term %d, the old one did in %d", r.term, first.term)
	}
	if waited := r.start.Sub(stopped); waited < delay {
		t.Fatalf("the new leader delivered %v after the old one stopped, before the fence delay (%v)", waited, delay)
	}
	if !sawWaiting {
		t.Fatal("the fence state never showed the delay")
	}
	if err := next.n.StillLeader(context.Background(), r.term); err != nil {
		t.Fatalf("StillLeader on the leader: %v", err)
	}
	if err := next.n.StillLeader(context.Background(), first.term); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("StillLeader for an old term: %v", err)
	}
	for _, n := range c.running() {
		if n != next {
			if err := n.n.StillLeader(context.Background(), r.term); !errors.Is(err, cluster.ErrNotLeader) {
				t.Fatalf("StillLeader on follower %s: %v", n.id, err)
			}
		}
	}
	// Outcomes of the old term are refused once the new leader fenced.
	seq := c.write("after")
	res := c.proposeRaw(store.Command{Op: store.CmdOutcome, Seq: seq, Term: first.term, Outcome: store.Outcome{Delivered: true}})
	if !errors.Is(res[0].Err, store.ErrStaleTerm) {
		t.Fatalf("an outcome of the old term: %v", res[0].Err)
	}
	rs.checkNoOverlap()
}

// proposeRaw proposes on the leader and returns the results, refusals
// included.
func (c *testCluster) proposeRaw(cmds ...store.Command) []cluster.Result {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.leader().n.Propose(ctx, cmds)
	if err != nil {
		c.t.Fatalf("propose: %v", err)
	}
	return res
}

// TestDeliverStopsWhenPartitioned: a leader cut off from the others has
// its delivery cancelled, before the new leader's starts; once the
// partition heals it follows and catches up.
func TestDeliverStopsWhenPartitioned(t *testing.T) {
	c := newCluster(t, 3, func(cfg *cluster.Config) { cfg.FenceDelay = 2 * time.Second })
	c.startAll()
	rs := &runs{t: t}
	for _, n := range c.nodes {
		rs.deliver(n)
	}
	old := c.leader()
	waitFor(t, "the leader to deliver", 10*time.Second, func() bool { return rs.active(old.id) != nil })
	term := rs.active(old.id).term
	c.write("before")

	cluster.Isolate(old.n, true)
	isolated := time.Now()
	waitFor(t, "the isolated leader's delivery to be cancelled", 10*time.Second, func() bool { return rs.active(old.id) == nil })
	t.Logf("the isolated leader stopped delivering after %v", time.Since(isolated))
	if err := old.n.StillLeader(context.Background(), term); err == nil {
		t.Fatal("the isolated leader still says it leads")
	}
	var others []*testNode
	for _, n := range c.nodes {
		if n != old {
			others = append(others, n)
		}
	}
	next := c.leaderAmong(others)
	waitFor(t, "the new leader to deliver", 30*time.Second, func() bool { return rs.active(next.id) != nil })
	rs.checkNoOverlap()

	cluster.Isolate(old.n, false)
	c.write("after")
	got := c.converge()
	if len(got.Records) != 2 {
		t.Fatalf("%d records after the partition healed", len(got.Records))
	}
	rs.checkNoOverlap()
}

// TestWitness: two gateways and a witness. The witness stores and
// applies the log without a key, forwards proposals, never delivers, and
// when it is elected hands the leadership to a gateway; with one gateway
// down the other and the witness keep taking writes.
func TestWitness(t *testing.T) {
	c := newCluster(t, 3, func(cfg *cluster.Config) { cfg.FenceDelay = 200 * time.Millisecond })
	w := c.nodes[2]
	w.witness = true
	c.startAll()
	rs := &runs{t: t}
	for _, n := range c.nodes {
		rs.deliver(n)
	}
	gatewayLeads := func() *testNode {
		var lead *testNode
		waitFor(t, "a gateway to lead", 30*time.Second, func() bool {
			lead = c.leader()
			return lead != w
		})
		return lead
	}
	lead := gatewayLeads()
	// A proposal on the witness is forwarded.
	res, err := w.n.Propose(context.Background(), []store.Command{prepare(account("via-witness"))})
	if err != nil || res[0].Err != nil {
		t.Fatalf("propose on the witness: %v %+v", err, res)
	}
	c.converge()

	// One gateway down: the other and the witness have a quorum.
	other := c.nodes[0]
	if other == lead {
		other = c.nodes[1]
	}
	c.stop(other)
	for i := range 10 {
		c.write(fmt.Sprintf("one-down-%d", i))
	}
	c.converge()

	// The leading gateway stops too, the other comes back behind the
	// witness's log: only the witness can be elected, and it hands the
	// leadership to the gateway once it has caught up.
	c.stop(lead)
	c.start(other)
	rs.deliver(other)
	if got := gatewayLeads(); got != other {
		t.Fatalf("%s leads", got.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for i := 0; ; i++ {
		res, err := other.n.Propose(ctx, []store.Command{prepare(account("after-hand-over"))})
		if err == nil && res[0].Err == nil {
			break
		}
		if !errors.Is(err, cluster.ErrNoQuorum) || i == 10 {
			t.Fatalf("propose after the hand-over: %v %+v", err, res)
		}
	}
	got := c.converge()
	if len(got.Records) != 12 {
		t.Fatalf("%d records", len(got.Records))
	}
	waitFor(t, "the gateway to deliver", 20*time.Second, func() bool { return rs.active(other.id) != nil })
	for _, r := range rs.get() {
		if r.node == w.id {
			t.Fatalf("the witness delivered: %+v", r)
		}
	}
	if err := w.n.StillLeader(context.Background(), w.n.Term()); !errors.Is(err, cluster.ErrWitness) {
		t.Fatalf("StillLeader on the witness: %v", err)
	}
	st, err := w.n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !st.Witness || st.LeaderID != other.id {
		t.Fatalf("the witness's status: %+v", st)
	}
}

// TestMembershipChangeUnderProposals: a fourth node joins (added through
// a follower, which forwards to the leader), one node is removed through
// a client of the cluster port, and proposals on a follower succeed all
// along.
func TestMembershipChangeUnderProposals(t *testing.T) {
	c := newCluster(t, 4, nil)
	c.peers = c.peers[:3] // the fourth joins the running cluster
	for _, n := range c.nodes[:3] {
		c.start(n)
	}
	lead := c.leader()
	var followers []*testNode
	for _, n := range c.nodes[:3] {
		if n != lead {
			followers = append(followers, n)
		}
	}
	writer, victim, newcomer := followers[0], followers[1], c.nodes[3]

	var count atomic.Int64
	stopWriters := keepWriting(4, func(w, i int) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		res, err := writer.n.Propose(ctx, []store.Command{prepare(account(fmt.Sprintf("m-%d-%d", w, i)))})
		cancel()
		if err != nil || res[0].Err != nil {
			t.Errorf("propose during membership changes: %v %+v", err, res)
			return false
		}
		count.Add(1)
		return true
	})
	more := func(what string, n int64) {
		target := count.Load() + n
		waitFor(t, what, 30*time.Second, func() bool { return count.Load() >= target || t.Failed() })
	}
	more("writes before the changes", 50)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c.start(newcomer)
	if err := writer.n.AddVoter(ctx, newcomer.id, newcomer.addr); err != nil {
		t.Fatalf("add a voter: %v", err)
	}
	waitFor(t, "the newcomer to catch up", 30*time.Second, func() bool {
		return newcomer.j.AppliedIndex() > 0 && lead.j.AppliedIndex()-newcomer.j.AppliedIndex() < 50
	})
	more("writes after the addition", 50)

	client, err := cluster.Dial(ctx, newcomer.addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.RemoveServer(ctx, victim.id); err != nil {
		t.Fatalf("remove a server: %v", err)
	}
	c.stop(victim)
	more("writes after the removal", 50)
	stopWriters()
	if t.Failed() {
		t.FailNow()
	}
	got := c.converge()
	if int64(len(got.Records)) != count.Load() {
		t.Fatalf("%d records, %d acknowledged", len(got.Records), count.Load())
	}

	st, err := client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range st.Servers {
		ids = append(ids, s.ID)
		if !s.Reachable || s.Suffrage != raft.Voter.String() || s.AppliedIndex == 0 {
			t.Fatalf("status of %s: %+v", s.ID, s)
		}
	}
	slices.Sort(ids)
	want := []string{lead.id, writer.id, newcomer.id}
	slices.Sort(want)
	if !slices.Equal(ids, want) || st.LeaderID != lead.id || st.ID != newcomer.id {
		t.Fatalf("status after the changes: %+v", st)
	}
}

// TestStatus: a follower's status names the leader and each voter's
// applied index and lag; a stopped voter is marked unreachable.
func TestStatus(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	for i := range 5 {
		c.write(fmt.Sprintf("s-%d", i))
	}
	c.converge()
	lead := c.leader()
	var followers []*testNode
	for _, n := range c.nodes {
		if n != lead {
			followers = append(followers, n)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := followers[0].n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.ID != followers[0].id || st.Addr != followers[0].addr || st.Role != raft.Follower.String() ||
		st.LeaderID != lead.id || st.LeaderAddr != lead.addr || st.Term != lead.n.Term() || st.AppliedIndex == 0 || st.CommitIndex == 0 {
		t.Fatalf("status: %+v", st)
	}
	for _, s := range st.Servers {
		if !s.Reachable || s.AppliedIndex == 0 || s.Lag > 5 {
			t.Fatalf("status of %s: %+v", s.ID, s)
		}
	}
	c.stop(followers[1])
	st, err = lead.n.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range st.Servers {
		if s.Reachable == (s.ID == followers[1].id) {
			t.Fatalf("status of %s after it stopped: %+v", followers[1].id, s)
		}
	}
	if st.Role != raft.Leader.String() || st.Fence.Term != st.Term {
		t.Fatalf("the leader's status: %+v", st)
	}
}

// BenchmarkClusterThroughput: 32 writers on a 3-node loopback cluster,
// each journaling records as the write path does (Prepares, then their
// Commits, each proposal waiting for the quorum), all on the leader or
// spread over the three nodes (followers forward to the leader).
// "records=1" proposes one record at a time, as one intercepted write
// does; "records=8" gathers 8 records in each proposal. It reports
// records/s, commands per log entry and the latency of a Prepare+Commit
// round (p50, p99).
func BenchmarkClusterThroughput(b *testing.B) {
	for _, per := range []int{1, 8} {
		for _, on := range []string{"leader", "any"} {
			b.Run(fmt.Sprintf("writers=32/records=%d/on=%s", per, on), func(b *testing.B) { benchThroughput(b, 32, per, on == "any") })
		}
	}
}

func benchThroughput(b *testing.B, writers, per int, spread bool) {
	c := newCluster(b, 3, nil)
	c.startAll()
	lead := c.leader()
	c.write("warm-up")
	firstIndex := lead.n.AppliedIndex()
	rounds := (b.N + per - 1) / per
	var left atomic.Int64
	left.Store(int64(rounds))
	latencies := make([][]time.Duration, writers)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		on := lead.n
		if spread {
			on = c.nodes[w%len(c.nodes)].n
		}
		wg.Go(func() {
			cmds := make([]store.Command, per)
			for i := 0; left.Add(-1) >= 0; i++ {
				t0 := time.Now()
				for k := range cmds {
					cmds[k] = prepare(account(fmt.Sprintf("b%d-%d-%d", w, i, k)))
				}
				res, err := on.Propose(context.Background(), cmds)
				if err != nil || res[0].Err != nil {
					b.Errorf("prepare: %v %v", err, res)
					return
				}
				for k := range cmds {
					cmds[k] = store.Command{Op: store.CmdCommit, Seq: res[k].Seq}
				}
				res, err = on.Propose(context.Background(), cmds)
				if err != nil || res[0].Err != nil {
					b.Errorf("commit: %v %v", err, res)
					return
				}
				latencies[w] = append(latencies[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(rounds*per)/elapsed.Seconds(), "records/s")
	if entries := lead.n.AppliedIndex() - firstIndex; entries > 0 {
		b.ReportMetric(float64(2*rounds*per)/float64(entries), "commands/entry")
	}
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

// TestJournalThroughAFollower: a follower's journal, with its node as
// proposer, takes the gateway's writes as a lone journal would: its
// Prepare returns a number the journal already holds, a refusal keeps its
// sentinel, and without a quorum the write is refused as unavailable.
func TestJournalThroughAFollower(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	for _, n := range c.nodes {
		n.j.SetProposer(n.n)
	}
	var f *testNode
	for _, n := range c.nodes {
		if n != lead {
			f = n
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	r := account("journal")
	r.Op, r.Changes, r.Secret = store.OpPassword, nil, []byte("pw")
	seq, err := f.j.Prepare(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := f.j.Get(seq); err != nil || got.State != store.StatePrepared {
		t.Fatalf("record %d on the follower: %v %+v", seq, err, got)
	}
	if err := f.j.Commit(ctx, seq, "key"); err != nil {
		t.Fatal(err)
	}
	if err := f.j.Abort(ctx, seq); !errors.Is(err, store.ErrState) {
		t.Fatalf("abort of a committed record: %v", err)
	}
	c.converge()
	for _, n := range c.nodes {
		if n != f {
			c.stop(n)
		}
	}
	if _, err := f.j.Prepare(ctx, account("minority")); !errors.Is(err, store.ErrUnavailable) {
		t.Fatalf("prepare without a quorum: %v", err)
	}
}
