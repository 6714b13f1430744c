package cluster_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	var (
		acked atomic.Int64
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 8 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				res, err := lead.n.Propose(ctx, []store.Command{prepare(account(fmt.Sprintf("r-%d-%d", w, i)))})
				cancel()
				if err == nil && res[0].Err == nil {
					acked.Add(1)
				}
			}
		})
	}
	waitFor(t, "writes before the removal", 30*time.Second, func() bool { return acked.Load() > 100 })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := lead.n.RemoveServer(ctx, lead.id); err != nil {
		t.Fatalf("the leader removes itself: %v", err)
	}
	var rest []*testNode
	for _, n := range c.nodes {
		if n != lead {
			rest = append(rest, n)
		}
	}
	c.leaderAmong(rest)
	// The writers through the removed node end.
	done := make(chan struct{})
	go func() { close(stop); wg.Wait(); close(done) }()
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
