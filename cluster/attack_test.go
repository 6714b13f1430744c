package cluster_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/store"
)

// lone journals records in n's data folder as a lone gateway does, and
// converts the journal for the cluster, as serve's first clustered start
// does.
func (c *testCluster) lone(n *testNode, uids ...string) {
	c.t.Helper()
	dir := filepath.Join(n.dir, "journal")
	opts := store.Options{KeyFile: filepath.Join(n.dir, "journal.key"), HousekeepingInterval: -1, Logger: c.logger}
	j, err := store.Open(dir, opts)
	if err != nil {
		c.t.Fatal(err)
	}
	ctx := context.Background()
	for _, uid := range uids {
		r := account(uid)
		r.Secret = []byte("pw-" + uid)
		seq, err := j.Prepare(ctx, r)
		if err != nil {
			c.t.Fatal(err)
		}
		if err := j.Commit(ctx, seq, "key-"+uid); err != nil {
			c.t.Fatal(err)
		}
	}
	if err := j.Close(); err != nil {
		c.t.Fatal(err)
	}
	if err := store.MakeReplicated(dir, opts); err != nil {
		c.t.Fatal(err)
	}
}

// TestConvertedJournalReachesEveryNode: a lone gateway's journal,
// converted, is the cluster's state on every node, whichever leads. The
// converted node refuses to bootstrap with other peers (they could elect
// one of them, which has not the records); started alone, it bootstraps
// from its journal, and the nodes it adds receive the journal (without
// the fix they replayed the log from its first entry onto an empty
// journal: a new leader had none of the lone gateway's records, and a
// Prepare's sequence number overwrote one of them on the converted node).
func TestConvertedJournalReachesEveryNode(t *testing.T) {
	c := newCluster(t, 3, nil)
	first := c.nodes[0]
	c.lone(first, "old1", "old2")
	all := c.peers
	if n, err := c.startErr(first); err == nil {
		n.Shutdown()
		t.Fatal("a converted journal bootstrapped a cluster with peers that do not have it")
	} else if !strings.Contains(err.Error(), "only itself") {
		t.Fatalf("converted journal with peers: %v", err)
	}
	// The first node alone; the others join it.
	c.peers = all[:1]
	c.start(first)
	c.leader()
	c.write("new1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, n := range c.nodes[1:] {
		c.start(n)
		if err := first.n.AddVoter(ctx, n.id, n.addr); err != nil {
			t.Fatal(err)
		}
	}
	st := c.converge()
	if len(st.Records) != 3 || st.LastSeq != 3 {
		t.Fatalf("the cluster's journal holds %d records (last seq %d), want the 2 converted and the new one", len(st.Records), st.LastSeq)
	}
	// Another node leads: the records are still the cluster's.
	c.stop(first)
	c.write("new2")
	if st := c.converge(); len(st.Records) != 4 || st.LastSeq != 4 {
		t.Fatalf("under a new leader the journal holds %d records (last seq %d)", len(st.Records), st.LastSeq)
	}
	// Restarted, the first node replays from its snapshot.
	c.start(first)
	if st := c.converge(); len(st.Records) != 4 {
		t.Fatalf("after a restart: %d records", len(st.Records))
	}

	// A node with a converted journal of its own does not join.
	other := newCluster(t, 1, nil)
	other.nodes[0].id = "stray"
	other.lone(other.nodes[0], "stray")
	other.peers = all[:1]
	if n, err := other.startErr(other.nodes[0]); err == nil {
		n.Shutdown()
		t.Fatal("a node with a converted journal joined a cluster")
	}
}

// TestLeaderRemovesItselfUnderLoad: the leader removed from the cluster
// while proposals flow steps down and stays a working node: its Shutdown
// returns, its proposals fail as unavailable (not hang), and the cluster
// keeps every acknowledged write.
func TestLeaderRemovesItselfUnderLoad(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	var acked atomic.Int64
	stopWriters := keepWriting(8, func(w, i int) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := lead.n.Propose(ctx, []store.Command{prepare(account(fmt.Sprintf("r-%d-%d", w, i)))})
		cancel()
		if err == nil && res[0].Err == nil {
			acked.Add(1)
		}
		return true
	})
	waitFor(t, "writes before the removal", 30*time.Second, func() bool { return acked.Load() > 100 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lead.n.RemoveServer(ctx, lead.id); err != nil {
		t.Fatalf("the leader removes itself: %v", err)
	}
	rest := c.others(lead)
	c.leaderAmong(rest)
	// The writers through the removed node end.
	done := make(chan struct{})
	go func() { stopWriters(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("proposals on the removed leader hang")
	}
	stopped := make(chan struct{})
	go func() { lead.n.Shutdown(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(30 * time.Second):
		t.Fatal("the removed leader's Shutdown hangs")
	}
	c.stop(lead)
	if st := c.convergeAmong(rest); int64(len(st.Records)) < acked.Load() {
		t.Fatalf("%d records, %d acknowledged", len(st.Records), acked.Load())
	}
}

// TestClusterPortGarbage: what a peer sends on the cluster port costs the
// node no more memory than it sent, and a frame announced but not sent is
// given up: a first byte of no kind, Raft messages that claim huge
// lengths, RPC frames that claim the largest size and send nothing (each
// held a buffer of that size for as long as the connection stayed open:
// a few thousand of them took the gateway's memory). The node still leads
// and takes proposals after them.
func TestClusterPortGarbage(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.peers = nil
	n := c.nodes[0]
	c.start(n)
	c.leader()
	dial := func(b []byte) net.Conn {
		conn, err := net.Dial("tcp", n.addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Write(b); err != nil {
			t.Fatal(err)
		}
		return conn
	}
	for _, b := range [][]byte{
		[]byte("GET / HTTP/1.1\r\n\r\n"),
		{0},
		// AppendEntries whose Entries claim 2^32-1 elements; a
		// RequestVote and an InstallSnapshot with a 2 GiB field.
		append([]byte{'R', 0, 0x81, 0xa7}, append([]byte("Entries"), 0xdd, 0xff, 0xff, 0xff, 0xff)...),
		append([]byte{'R', 1, 0x81, 0xa9}, append([]byte("Candidate"), 0xc6, 0x7f, 0xff, 0xff, 0xff)...),
		append([]byte{'R', 2, 0x81, 0xa4}, append([]byte("Data"), 0xc6, 0x7f, 0xff, 0xff, 0xff)...),
		// An RPC frame of an unknown kind, and one of a malformed proposal.
		append([]byte{'P'}, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 99, 'x'),
		append([]byte{'P'}, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 2, 1, 0xff, 0xff, 0xff),
	} {
		conn := dial(b)
		if b[0] == 'P' {
			// An error answer, on a connection that stays open.
			conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			h := make([]byte, 13)
			if _, err := io.ReadFull(conn, h); err != nil || h[12] != 1 {
				t.Fatalf("answer to a bad request %q: %v %v", b, h, err)
			}
		} else {
			conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			io.Copy(io.Discard, conn)
		}
		conn.Close()
	}

	var before runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const silent = 100
	var conns []net.Conn
	for range silent {
		h := make([]byte, 14)
		h[0] = 'P'
		binary.BigEndian.PutUint32(h[1:], 1<<20)
		h[13] = 1
		conns = append(conns, dial(h))
	}
	defer func() {
		for _, conn := range conns {
			conn.Close()
		}
	}()
	// Each node reads its header, then waits for the payload.
	time.Sleep(500 * time.Millisecond) // pacing: no event says the headers were read
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	if grown := int64(after.HeapAlloc) - int64(before.HeapAlloc); grown > 32<<20 {
		t.Fatalf("%d connections that announced 1 MiB frames and sent none hold %d MiB", silent, grown>>20)
	}
	// A frame announced and never finished is given up.
	conns[0].SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := conns[0].Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("a connection stuck in a frame: %v", err)
	}
	if _, err := n.n.Propose(context.Background(), []store.Command{prepare(account("after-garbage"))}); err != nil {
		t.Fatalf("propose after the garbage: %v", err)
	}
}

// TestRemovedLeaderRejoins: a leader removed from the cluster (it steps
// down, as RemoveServer says) can be added again without a restart, and
// then follows the log like any voter. (Raft's default shut the removed
// leader's Raft down: the gateway went on running with a node that could
// never take part again until restarted.)
func TestRemovedLeaderRejoins(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	c.write("before")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lead.n.RemoveServer(ctx, lead.id); err != nil {
		t.Fatalf("the leader removes itself: %v", err)
	}
	rest := c.others(lead)
	next := c.leaderAmong(rest)
	if st := lead.n.State(); st == raft.Shutdown || st == raft.Leader {
		t.Fatalf("the removed leader is %s", st)
	}
	if err := next.n.AddVoter(ctx, lead.id, lead.addr); err != nil {
		t.Fatalf("add the removed node again: %v", err)
	}
	c.write("after")
	if st := c.converge(); len(st.Records) != 2 {
		t.Fatalf("%d records", len(st.Records))
	}
}

// TestAddVoterThatDoesNotAnswer: adding a voter that does not run (a
// typo in its address, a node not started yet) is refused, and a node
// that leads a cluster of its own too: added, the first would have cost
// a one-node cluster its quorum for good (the change needs the new
// voter's vote to commit, and without it nothing can remove it again),
// the second would have merged two clusters' different journals.
func TestAddVoterThatDoesNotAnswer(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.peers = nil
	n := c.nodes[0]
	c.start(n)
	c.leader()
	c.write("first")
	nowhere := loopbackAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.n.AddVoter(ctx, "b", nowhere); err == nil {
		t.Fatal("a voter that does not answer was added")
	}
	// Another lone cluster's node.
	other := newCluster(t, 1, nil)
	other.peers = nil
	other.nodes[0].id = "b"
	other.start(other.nodes[0])
	other.leader()
	if err := n.n.AddVoter(ctx, "b", other.nodes[0].addr); err == nil {
		t.Fatal("the leader of another cluster was added")
	}
	// The node still takes writes.
	pctx, pcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer pcancel()
	if res, err := n.n.Propose(pctx, []store.Command{prepare(account("after"))}); err != nil || res[0].Err != nil {
		t.Fatalf("propose after the refused additions: %v %+v", err, res)
	}
	// A node started to join, at the right address, is added.
	joiner := newCluster(t, 1, nil)
	joiner.peers = []cluster.Peer{{ID: n.id, Addr: n.addr}}
	joiner.nodes[0].id = "c"
	joiner.start(joiner.nodes[0])
	if err := n.n.AddVoter(ctx, "c", joiner.nodes[0].addr); err != nil {
		t.Fatalf("add a joining node: %v", err)
	}
	c.nodes = append(c.nodes, joiner.nodes[0])
	c.write("joined")
	c.converge()
}

// loopbackAddr is a loopback address nothing listens on.
func loopbackAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestShutdownWithProposalsInFlight: a node shut down (SIGTERM) while
// proposals are in flight, its own and forwarded ones, on a leader cut off
// from the others or not, stops within a bounded time, every Propose
// returns, and none acknowledged is lost.
func TestShutdownWithProposalsInFlight(t *testing.T) {
	for _, cut := range []bool{false, true} {
		t.Run(fmt.Sprintf("cut-off=%v", cut), func(t *testing.T) {
			c := newCluster(t, 3, nil)
			c.startAll()
			lead := c.leader()
			follower := c.others(lead)[1]
			var (
				acked    sync.Map
				returned sync.WaitGroup
				started  atomic.Int64
			)
			for w := range 16 {
				on := lead
				if w%2 == 1 {
					on = follower
				}
				node := on.n
				returned.Go(func() {
					for i := 0; ; i++ {
						uid := fmt.Sprintf("s-%d-%d", w, i)
						started.Add(1)
						res, err := node.Propose(context.Background(), []store.Command{prepare(account(uid))})
						if err != nil {
							return
						}
						if res[0].Err == nil {
							acked.Store(account(uid).DN, true)
						}
					}
				})
			}
			waitFor(t, "proposals under way", 30*time.Second, func() bool { return started.Load() > 200 })
			if cut {
				cluster.Isolate(lead.n, true)
			}
			stopped := make(chan struct{})
			go func() {
				lead.n.Shutdown()
				follower.n.Shutdown()
				close(stopped)
			}()
			select {
			case <-stopped:
			case <-time.After(30 * time.Second):
				t.Fatal("Shutdown with proposals in flight hangs")
			}
			done := make(chan struct{})
			go func() { returned.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("proposals on shut-down nodes hang")
			}
			c.stop(lead)
			c.stop(follower)
			c.start(lead)
			c.start(follower)
			st := c.converge()
			have := map[string]bool{}
			for _, r := range st.Records {
				have[r.DN] = true
			}
			acked.Range(func(k, _ any) bool {
				if !have[k.(string)] {
					t.Errorf("acknowledged %s lost", k)
				}
				return true
			})
		})
	}
}

// TestRemoveUnknownServer: removing an ID the cluster does not have (a
// typo) is an error, not a success that leaves the intended voter in; the
// last voter cannot be removed.
func TestRemoveUnknownServer(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.peers = nil
	n := c.nodes[0]
	c.start(n)
	c.leader()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.n.RemoveServer(ctx, "gw9"); err == nil || !strings.Contains(err.Error(), "gw9") {
		t.Fatalf("removing an unknown server: %v", err)
	}
	// Nor can the last voter go.
	if err := n.n.RemoveServer(ctx, n.id); err == nil {
		t.Fatal("the last voter was removed")
	}
	c.write("still")
}

// TestForwardedProposalReturnsWhenCutOff: a follower whose proposal the
// leader took, and which is cut off before it applied the entry, returns
// once it has lost the leader: its caller (the gateway's commit, which
// the mirror waits for at shutdown) does not wait for the partition to
// heal. (It waited for its own journal to apply the entry, without bound:
// SIGTERM then hung in the mirror's settling.)
func TestForwardedProposalReturnsWhenCutOff(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()
	follower := c.others(lead)[1]
	var (
		returned sync.WaitGroup
		started  atomic.Int64
		stop     atomic.Bool
	)
	for w := range 16 {
		returned.Go(func() {
			for i := 0; !stop.Load(); i++ {
				started.Add(1)
				if _, err := follower.n.Propose(context.Background(), []store.Command{prepare(account(fmt.Sprintf("f-%d-%d", w, i)))}); err != nil {
					return
				}
			}
		})
	}
	waitFor(t, "proposals under way", 30*time.Second, func() bool { return started.Load() > 300 })
	cluster.Isolate(follower.n, true)
	stop.Store(true)
	done := make(chan struct{})
	go func() { returned.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("forwarded proposals of a follower cut off do not return")
	}
	cluster.Isolate(follower.n, false)
}
