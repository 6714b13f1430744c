package cluster_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/store"
)

// keepWriting runs n writers, each calling write with its number and its
// count of writes until write returns false or stop is called; stop
// returns once every writer has ended.
func keepWriting(n int, write func(w, i int) bool) (stop func()) {
	quit := make(chan struct{})
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-quit:
					return
				default:
				}
				if !write(w, i) {
					return
				}
			}
		})
	}
	var once sync.Once
	return func() { once.Do(func() { close(quit) }); wg.Wait() }
}

// others are the cluster's nodes but n.
func (c *testCluster) others(n *testNode) []*testNode {
	var out []*testNode
	for _, o := range c.nodes {
		if o != n {
			out = append(out, o)
		}
	}
	return out
}

// testNode is one gateway of a test cluster: its data folder, its
// journal and its Raft node, on a fixed loopback address so that it can
// restart where the others expect it.
type testNode struct {
	id, dir, addr string
	ln            net.Listener // held from the cluster's making to the first start
	j             *store.Journal
	n             *cluster.Node
	witness       bool        // started as a witness, its journal without a key
	tls           *tls.Config // the cluster port's TLS (nil: plain loopback)
}

type testCluster struct {
	t      testing.TB
	nodes  []*testNode
	peers  []cluster.Peer
	key    string
	tune   func(*cluster.Config)
	logger *slog.Logger
}

// newCluster makes a cluster of size nodes (none started yet) that share
// one journal key.
func newCluster(t testing.TB, size int, tune func(*cluster.Config)) *testCluster {
	t.Helper()
	key := make([]byte, 32)
	rand.Read(key)
	c := &testCluster{t: t, key: fmt.Sprintf("%x\n", key), tune: tune, logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if testing.Verbose() && os.Getenv("CLUSTER_LOG") != "" {
		c.logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	for i := range size {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "journal.key"), []byte(c.key), 0o600); err != nil {
			t.Fatal(err)
		}
		// The node's address, held until it starts: the peers are known
		// before any node runs.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		n := &testNode{id: fmt.Sprintf("gw%d", i+1), dir: dir, addr: addr, ln: ln}
		c.nodes = append(c.nodes, n)
		c.peers = append(c.peers, cluster.Peer{ID: n.id, Addr: addr})
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
			c.stop(n)
			if n.ln != nil {
				n.ln.Close()
			}
		}
	})
	return c
}

func (c *testCluster) startAll() {
	for _, n := range c.nodes {
		c.start(n)
	}
}

// start opens the node's journal and starts its Raft node.
func (c *testCluster) start(n *testNode) {
	c.t.Helper()
	if _, err := c.startErr(n); err != nil {
		c.t.Fatal(err)
	}
}

// startErr is start, returning the node's failure to start.
func (c *testCluster) startErr(n *testNode) (*cluster.Node, error) {
	c.t.Helper()
	keyFile := filepath.Join(n.dir, "journal.key")
	if n.witness {
		keyFile = ""
	}
	j, err := store.Open(filepath.Join(n.dir, "journal"), store.Options{
		KeyFile:              keyFile,
		Replicated:           true,
		HousekeepingInterval: -1,
		Logger:               c.logger,
	})
	if err != nil {
		return nil, fmt.Errorf("open journal of %s: %w", n.id, err)
	}
	ln := n.ln
	n.ln = nil
	// A restart listens again on the port its previous run closed.
	deadline := time.Now().Add(10 * time.Second)
	for ln == nil {
		ln, err = net.Listen("tcp", n.addr)
		if err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(20 * time.Millisecond) // pacing: the port comes free
	}
	if err != nil {
		j.Close()
		return nil, fmt.Errorf("listen for %s: %w", n.id, err)
	}
	cfg := cluster.Config{
		NodeID:   n.id,
		Dir:      filepath.Join(n.dir, "raft"),
		Journal:  j,
		Peers:    c.peers,
		Listener: ln,
		TLS:      n.tls,
		Witness:  n.witness,
		// Raft's default timing (1s heartbeat and election timeouts, 500ms
		// lease): shorter ones make a loaded test machine hold elections
		// it does not need.
		Logger: c.logger.With("node", n.id),
	}
	if c.tune != nil {
		c.tune(&cfg)
	}
	node, err := cluster.Start(cfg)
	if err != nil {
		ln.Close()
		j.Close()
		return nil, fmt.Errorf("start %s: %w", n.id, err)
	}
	n.j, n.n = j, node
	return node, nil
}

// stop shuts the node down and closes its journal.
func (c *testCluster) stop(n *testNode) {
	c.t.Helper()
	if n.n != nil {
		if err := n.n.Shutdown(); err != nil {
			c.t.Errorf("shut down %s: %v", n.id, err)
		}
		n.n = nil
	}
	if n.j != nil {
		if err := n.j.Close(); err != nil {
			c.t.Errorf("close journal of %s: %v", n.id, err)
		}
		n.j = nil
	}
}

func (c *testCluster) running() []*testNode {
	var out []*testNode
	for _, n := range c.nodes {
		if n.n != nil {
			out = append(out, n)
		}
	}
	return out
}

// waitFor polls cond until it holds or the deadline passes.
func waitFor(t testing.TB, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// leader waits until one running node leads and every running node knows
// it.
func (c *testCluster) leader() *testNode { return c.leaderAmong(c.running()) }

// leaderAmong waits until one of nodes leads and all of them know it.
func (c *testCluster) leaderAmong(nodes []*testNode) *testNode {
	c.t.Helper()
	var lead *testNode
	waitFor(c.t, "a leader every running node knows", 20*time.Second, func() bool {
		lead = nil
		for _, n := range nodes {
			if n.n.State() == raft.Leader {
				lead = n
			}
		}
		if lead == nil {
			return false
		}
		for _, n := range nodes {
			if id, _ := n.n.Leader(); id != lead.id {
				return false
			}
		}
		return true
	})
	return lead
}

// propose proposes on the leader, retrying while leadership moves, and
// fails the test on a refusal.
func (c *testCluster) propose(cmds ...store.Command) []cluster.Result {
	c.t.Helper()
	for attempt := 0; ; attempt++ {
		lead := c.leader()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		res, err := lead.n.Propose(ctx, cmds)
		cancel()
		if err == nil {
			for i, r := range res {
				if r.Err != nil {
					c.t.Fatalf("command %d (%s) refused: %v", i, cmds[i].Op, r.Err)
				}
			}
			return res
		}
		if attempt == 5 || !(errors.Is(err, cluster.ErrNotLeader) || errors.Is(err, cluster.ErrNoQuorum)) {
			c.t.Fatalf("propose: %v", err)
		}
	}
}

// state is what must be the same on every node.
type state struct {
	Records  []*store.Record
	Disabled []store.DisabledAccount
	Applied  uint64
	Term     uint64
	LastSeq  uint64
	Pending  int
}

func stateOf(t testing.TB, j *store.Journal) state {
	t.Helper()
	recs, err := j.List(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	dis, err := j.DisabledAccounts()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := j.Stats()
	return state{Records: recs, Disabled: dis, Applied: j.AppliedIndex(), Term: j.DeliveryTerm(), LastSeq: st.LastSeq, Pending: st.Prepared + st.Committed}
}

// converge waits until every running node has applied what the leader
// has, then checks that their journals are the same, and returns it.
func (c *testCluster) converge() state { return c.convergeAmong(c.running()) }

func (c *testCluster) convergeAmong(nodes []*testNode) state {
	c.t.Helper()
	lead := c.leaderAmong(nodes)
	if err := lead.n.Barrier(context.Background()); err != nil {
		c.t.Fatalf("barrier: %v", err)
	}
	target := lead.j.AppliedIndex()
	waitFor(c.t, fmt.Sprintf("every node to apply entry %d", target), 20*time.Second, func() bool {
		for _, n := range nodes {
			if n.j.AppliedIndex() < target {
				return false
			}
		}
		return true
	})
	want := stateOf(c.t, lead.j)
	for _, n := range nodes {
		if got := stateOf(c.t, n.j); !reflect.DeepEqual(got, want) {
			c.t.Fatalf("journal of %s differs from the leader's (%s):\n%+v\nwant\n%+v", n.id, lead.id, got, want)
		}
	}
	return want
}

func account(uid string) *store.Record {
	return &store.Record{
		Actor: "cn=admin,dc=example,dc=org", ClientAddr: "127.0.0.1:40000",
		Kind: store.KindAccount, Op: store.OpModify, DN: "uid=" + uid + ",ou=people,dc=example,dc=org",
		Changes: []store.Change{{Op: "replace", Attr: "mail", Values: []string{uid + "@example.org"}}},
	}
}

func prepare(r *store.Record) store.Command { return store.Command{Op: store.CmdPrepare, Record: r} }

// write journals and commits a record, as the write path does.
func (c *testCluster) write(uid string) uint64 {
	c.t.Helper()
	seq := c.propose(prepare(account(uid)))[0].Seq
	c.propose(store.Command{Op: store.CmdCommit, Seq: seq, EntryKey: "key-" + uid})
	return seq
}

func TestClusterReplicatesToEveryNode(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	lead := c.leader()

	// Every node knows the leader's address as the peer list spells it.
	for _, n := range c.running() {
		if id, addr := n.n.Leader(); id != lead.id || addr != lead.addr {
			t.Fatalf("%s knows the leader as %s at %s, want %s at %s", n.id, id, addr, lead.id, lead.addr)
		}
	}

	// Concurrent proposers, on the leader and on the followers (which
	// forward to the leader): records, passwords, commits, the disabled
	// table.
	nodes := c.running()
	var wg sync.WaitGroup
	seqs := make([][]uint64, 8)
	for w := range 8 {
		wg.Go(func() {
			for i := range 10 {
				r := account(fmt.Sprintf("w%d-%d", w, i))
				if i%3 == 0 {
					r.Op, r.Changes, r.Secret = store.OpPassword, nil, []byte(fmt.Sprintf("pw-%d-%d", w, i))
				}
				tn := nodes[(w+i)%len(nodes)]
				on := tn.n
				res, err := on.Propose(context.Background(), []store.Command{prepare(r)})
				if err != nil || res[0].Err != nil {
					t.Errorf("prepare: %v %v", err, res)
					return
				}
				seq := res[0].Seq
				// The proposing node reads its own change at once.
				if got, err := tn.j.Get(seq); err != nil || got.DN != r.DN {
					t.Errorf("%s right after proposing record %d: %v %+v", tn.id, seq, err, got)
					return
				}
				seqs[w] = append(seqs[w], seq)
				if len(r.Secret) > 0 {
					continue // left prepared: Prepared shows its secret
				}
				if _, err := on.Propose(context.Background(), []store.Command{{Op: store.CmdCommit, Seq: seq}}); err != nil {
					t.Errorf("commit %d: %v", seq, err)
				}
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	c.propose(store.Command{Op: store.CmdPutDisabled, Disabled: store.DisabledAccount{Name: "old", EntryKey: "k-old", Reason: store.DisabledGone, Since: time.Now()}})
	got := c.converge()
	if len(got.Records) != 80 || got.LastSeq != 80 || got.Pending != 80 || len(got.Disabled) != 1 {
		t.Fatalf("state: %d records, last seq %d, %d pending, %d disabled", len(got.Records), got.LastSeq, got.Pending, len(got.Disabled))
	}
	for _, ws := range seqs {
		for i := 1; i < len(ws); i++ {
			if ws[i] <= ws[i-1] {
				t.Fatalf("a proposer's sequence numbers do not rise: %v", ws)
			}
		}
	}
	// Every node reads the same secrets: one key, sealed once by the leader.
	for _, n := range c.running() {
		prepared, err := n.j.Prepared()
		if err != nil {
			t.Fatal(err)
		}
		if len(prepared) != 8*4 {
			t.Fatalf("%s: %d records prepared, want the 32 passwords", n.id, len(prepared))
		}
		for _, r := range prepared {
			var w, i int
			fmt.Sscanf(r.DN, "uid=w%d-%d,", &w, &i)
			if want := fmt.Sprintf("pw-%d-%d", w, i); string(r.Secret) != want || r.SecretState != store.SecretEncrypted {
				t.Fatalf("%s: record %d (%s) holds secret %q (%s), want %q", n.id, r.Seq, r.DN, r.Secret, r.SecretState, want)
			}
		}
	}
	if got.Term == 0 || got.Term != lead.n.Term() {
		t.Fatalf("delivery term %d, leader's term %d", got.Term, lead.n.Term())
	}
}

func TestClusterFailover(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	for i := range 20 {
		c.write(fmt.Sprintf("before-%d", i))
	}
	before := c.converge()
	old := c.leader()
	oldTerm := old.n.Term()
	c.stop(old)

	lead := c.leader()
	if lead == old {
		t.Fatal("the stopped node still leads")
	}
	for i := range 20 {
		c.write(fmt.Sprintf("after-%d", i))
	}
	during := c.converge()
	if during.LastSeq != before.LastSeq+20 || len(during.Records) != 40 {
		t.Fatalf("after failover: last seq %d (was %d), %d records", during.LastSeq, before.LastSeq, len(during.Records))
	}
	if during.Term <= oldTerm {
		t.Fatalf("the new leader did not fence: term %d, old leader's %d", during.Term, oldTerm)
	}

	// The old leader comes back as a follower and catches up.
	c.start(old)
	c.write("back")
	after := c.converge()
	if len(after.Records) != 41 {
		t.Fatalf("%d records after the old leader came back", len(after.Records))
	}
}

// TestClusterKeepsAcknowledgedWrites: writers keep proposing while the
// leader is stopped; every proposal acknowledged, before or after the
// failover, is in every surviving journal under the sequence number it was
// acknowledged with, and none twice.
func TestClusterKeepsAcknowledgedWrites(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.leader()
	nodes := make([]*cluster.Node, len(c.nodes))
	for i, n := range c.nodes {
		nodes[i] = n.n
	}
	var (
		mu      sync.Mutex
		acked   = map[string]uint64{} // DN -> sequence number
		unknown int                   // outcomes the writer cannot know
		count   atomic.Int64
	)
	stopWriters := keepWriting(8, func(w, i int) bool {
		r := account(fmt.Sprintf("ack-%d-%d", w, i))
		res, err := proposeAnywhere(nodes, r)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			acked[r.DN] = res.Seq
			count.Add(1)
		case errors.Is(err, cluster.ErrLeadershipLost), errors.Is(err, cluster.ErrOutcomeUnknown):
			unknown++
		default:
			t.Errorf("propose: %v", err)
			return false
		}
		return true
	})
	waitFor(t, "100 acknowledged writes", 30*time.Second, func() bool { return count.Load() >= 100 })
	old := c.leader()
	c.stop(old)
	waitFor(t, "100 more acknowledged writes after the failover", 30*time.Second, func() bool { return count.Load() >= 200 })
	stopWriters()
	if t.Failed() {
		t.FailNow()
	}
	got := c.converge()
	bySeq := map[uint64]string{}
	byDN := map[string]uint64{}
	for _, r := range got.Records {
		if other, ok := byDN[r.DN]; ok {
			t.Fatalf("%s journaled twice: %d and %d", r.DN, other, r.Seq)
		}
		byDN[r.DN], bySeq[r.Seq] = r.Seq, r.DN
	}
	for dn, seq := range acked {
		if bySeq[seq] != dn {
			t.Fatalf("acknowledged write of %s (record %d) lost: the journal has %q there", dn, seq, bySeq[seq])
		}
	}
	t.Logf("%d writes acknowledged, %d with an unknown outcome, %d journaled", len(acked), unknown, len(got.Records))
}

// proposeAnywhere proposes a Prepare on whichever node leads, waiting for
// one while there is none.
func proposeAnywhere(nodes []*cluster.Node, r *store.Record) (cluster.Result, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		for _, n := range nodes {
			if n.State() != raft.Leader {
				continue
			}
			res, err := n.Propose(context.Background(), []store.Command{prepare(r)})
			if err == nil {
				return res[0], res[0].Err
			}
			if !errors.Is(err, cluster.ErrNotLeader) && !errors.Is(err, cluster.ErrNoQuorum) && !errors.Is(err, cluster.ErrClosed) {
				return cluster.Result{}, err
			}
		}
		if time.Now().After(deadline) {
			return cluster.Result{}, errors.New("no leader for 20s")
		}
		time.Sleep(5 * time.Millisecond) // pacing while an election runs
	}
}

func TestClusterLateNodeGetsSnapshot(t *testing.T) {
	c := newCluster(t, 3, func(cfg *cluster.Config) {
		cfg.TrailingLogs = 8
		cfg.SnapshotThreshold = 16
		cluster.SmallLogSegments(cfg)
	})
	late := c.nodes[2]
	c.start(c.nodes[0])
	c.start(c.nodes[1])
	for i := range 60 {
		c.write(fmt.Sprintf("early-%d", i))
	}
	c.propose(store.Command{Op: store.CmdPutDisabled, Disabled: store.DisabledAccount{Name: "gone", Reason: store.DisabledGone, Since: time.Now()}})
	c.converge()
	for _, n := range c.running() {
		if err := n.n.Snapshot(); err != nil {
			t.Fatal(err)
		}
	}
	// The log before the snapshot is gone: the late node can only start
	// from the snapshot.
	c.start(late)
	c.write("late")
	got := c.converge()
	if late.n.LastSnapshotIndex() == 0 {
		t.Fatal("the late node caught up without a snapshot")
	}
	if len(got.Records) != 61 || len(got.Disabled) != 1 {
		t.Fatalf("%d records, %d disabled", len(got.Records), len(got.Disabled))
	}

	// Restarted, it restores its own snapshot, replays the log after it
	// and applies nothing twice.
	c.stop(late)
	c.start(late)
	c.write("again")
	if got := c.converge(); len(got.Records) != 62 {
		t.Fatalf("%d records after the restart", len(got.Records))
	}
}

func TestClusterWithoutQuorumRefuses(t *testing.T) {
	c := newCluster(t, 3, nil)
	c.startAll()
	c.write("first")
	c.converge()
	lead := c.leader()
	for _, n := range c.running() {
		if n != lead {
			c.stop(n)
		}
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := lead.n.Propose(ctx, []store.Command{prepare(account("minority"))})
	took := time.Since(start)
	if err == nil {
		t.Fatal("a proposal without a quorum succeeded")
	}
	if !errors.Is(err, cluster.ErrLeadershipLost) && !errors.Is(err, cluster.ErrNoQuorum) {
		t.Fatalf("proposal without a quorum: %v", err)
	}
	if took > 5*time.Second {
		t.Fatalf("a proposal without a quorum took %v to fail", took)
	}
	t.Logf("without a quorum: %v after %v", err, took)
	// Once the node has stepped down, proposals fail within the
	// proposal timeout.
	waitFor(t, "the lone leader to step down", 10*time.Second, func() bool { return lead.n.State() != raft.Leader })
	start = time.Now()
	if _, err := lead.n.Propose(context.Background(), []store.Command{prepare(account("minority2"))}); !errors.Is(err, cluster.ErrNoQuorum) {
		t.Fatalf("proposal on a lone follower: %v", err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Fatalf("a proposal on a lone follower took %v to fail", took)
	}
	recs, err := lead.j.List(store.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range recs {
		if r.DN != account("first").DN {
			t.Fatalf("a proposal without a quorum was applied: %+v", r)
		}
	}
}

func TestSingleNodeBootstrapsAndReplays(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.peers = nil // started alone, without peers: today's single gateway
	n := c.nodes[0]
	c.start(n)
	for i := range 10 {
		c.write(fmt.Sprintf("solo-%d", i))
	}
	want := c.converge()
	c.stop(n)
	c.start(n)
	c.leader()
	if got := stateOf(t, n.j); !reflect.DeepEqual(got, want) {
		t.Fatalf("after a restart:\n%+v\nwant\n%+v", got, want)
	}
	if seq := c.write("next"); seq != want.LastSeq+1 {
		t.Fatalf("sequence after restart %d, want %d", seq, want.LastSeq+1)
	}
}

// TestStartListensOnAnAddress: without a stream layer the node listens on
// Config.Listen itself; it refuses a journal that is not replicated.
func TestStartListensOnAnAddress(t *testing.T) {
	dir := t.TempDir()
	opts := store.Options{KeyFile: filepath.Join(dir, "journal.key"), HousekeepingInterval: -1}
	plain, err := store.Open(filepath.Join(dir, "plain"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if _, err := cluster.Start(cluster.Config{NodeID: "gw1", Dir: filepath.Join(dir, "raft0"), Journal: plain, Listen: "127.0.0.1:0"}); err == nil {
		t.Fatal("a node started on a journal that is not replicated")
	}
	opts.Replicated = true
	j, err := store.Open(filepath.Join(dir, "journal"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	n, err := cluster.Start(cluster.Config{NodeID: "gw1", Dir: filepath.Join(dir, "raft"), Journal: j, Listen: "127.0.0.1:0",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Shutdown()
	waitFor(t, "the lone node to lead", 20*time.Second, func() bool { return n.State() == raft.Leader })
	res, err := n.Propose(context.Background(), []store.Command{prepare(account("solo"))})
	if err != nil || res[0].Err != nil || res[0].Seq != 1 {
		t.Fatalf("propose: %v %+v", err, res)
	}
	if _, addr := n.Leader(); addr == "" || addr == "127.0.0.1:0" {
		t.Fatalf("the node advertises %q", addr)
	}
	if err := n.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if _, err := n.Propose(context.Background(), []store.Command{prepare(account("late"))}); !errors.Is(err, cluster.ErrClosed) {
		t.Fatalf("proposal on a shut-down node: %v", err)
	}
}

// TestLargeProposalsSplitAcrossEntries: the leader keeps each entry
// within store.MaxEntryBytes, and refuses a proposal that cannot fit.
func TestLargeProposalsSplitAcrossEntries(t *testing.T) {
	c := newCluster(t, 1, nil)
	c.peers = nil
	c.start(c.nodes[0])
	lead := c.leader()
	big := func(uid string) store.Command {
		r := account(uid)
		r.Changes = []store.Change{{Op: "replace", Attr: "description", Values: []string{strings.Repeat("x", 100<<10)}}}
		return prepare(r)
	}
	before := lead.n.AppliedIndex()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			res, err := lead.n.Propose(context.Background(), []store.Command{big(fmt.Sprint("big", w))})
			if err != nil || res[0].Err != nil {
				t.Errorf("propose: %v %v", err, res)
			}
		})
	}
	wg.Wait()
	if entries := lead.n.AppliedIndex() - before; entries < 2 {
		t.Fatalf("8 records of 100 KiB went into %d entry", entries)
	}
	var cmds []store.Command
	for i := range 6 {
		cmds = append(cmds, big(fmt.Sprint("huge", i)))
	}
	if _, err := lead.n.Propose(context.Background(), cmds); !errors.Is(err, store.ErrTooLarge) {
		t.Fatalf("a proposal of 600 KiB: %v", err)
	}
	if got := c.converge(); len(got.Records) != 8 {
		t.Fatalf("%d records", len(got.Records))
	}
}

// BenchmarkPropose measures the journal's throughput in a 3-node loopback
// cluster with 32 concurrent proposers, each waiting for its proposal to
// be applied before the next, as the write path does (one Prepare per
// intercepted write): the leader gathers what waits into one entry.
// "records=8" proposes 8 records per call, the throughput a leader that
// also gathered 8 writes per proposer could reach. It reports records/s,
// records per entry and each Propose's latency (p50, p99).
func BenchmarkPropose(b *testing.B) {
	for _, per := range []int{1, 8} {
		if os.Getenv("BENCH_ONE") != "" {
			b.Run("proposers=1", func(b *testing.B) { benchPropose(b, 1, 1) })
		}
		b.Run(fmt.Sprintf("proposers=32/records=%d", per), func(b *testing.B) { benchPropose(b, 32, per) })
	}
}

func benchPropose(b *testing.B, proposers, per int) {
	c := newCluster(b, 3, nil)
	c.startAll()
	lead := c.leader()
	c.propose(prepare(account("warm-up")))
	firstIndex := lead.n.AppliedIndex()
	calls := (b.N + per - 1) / per
	var left atomic.Int64
	left.Store(int64(calls))
	latencies := make([][]time.Duration, proposers)
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range proposers {
		wg.Go(func() {
			cmds := make([]store.Command, per)
			for i := 0; left.Add(-1) >= 0; i++ {
				for k := range cmds {
					cmds[k] = prepare(account(fmt.Sprintf("b%d-%d-%d", w, i, k)))
				}
				t0 := time.Now()
				res, err := lead.n.Propose(context.Background(), cmds)
				latencies[w] = append(latencies[w], time.Since(t0))
				if err != nil || res[0].Err != nil {
					b.Errorf("propose: %v %v", err, res)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(calls*per)/elapsed.Seconds(), "records/s")
	if entries := lead.n.AppliedIndex() - firstIndex; entries > 0 {
		b.ReportMetric(float64(calls*per)/float64(entries), "records/entry")
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

// A proposal the leader handed to Raft before shutting down may be in a
// quorum's logs and applied by the next leader: its proposer must learn
// "outcome unknown" (and abort a Prepare by its token), never "not
// applied", which would have it proposed again — a second record for one
// write.
func TestShutdownWithAProposalInFlightIsOutcomeUnknown(t *testing.T) {
	c := newCluster(t, 3, func(cfg *cluster.Config) {
		cfg.LeaderLeaseTimeout, cfg.HeartbeatTimeout, cfg.ElectionTimeout = 2*time.Second, 2*time.Second, 2*time.Second
	})
	c.startAll()
	c.write("first")
	c.converge()
	lead := c.leader()
	for _, n := range c.others(lead) {
		c.stop(n)
	}
	lastIndex := func() uint64 {
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		st, _ := lead.n.Status(ctx) // its own view comes without the others
		return st.LastLogIndex
	}
	before := lastIndex()
	errc := make(chan error, 1)
	go func() {
		_, err := lead.n.Propose(context.Background(), []store.Command{prepare(account("in-flight"))})
		errc <- err
	}()
	waitFor(t, "the proposal in the leader's log", 5*time.Second, func() bool { return lastIndex() > before })
	c.stop(lead)
	select {
	case err := <-errc:
		if !errors.Is(err, store.ErrOutcomeUnknown) || errors.Is(err, cluster.ErrClosed) {
			t.Fatalf("a proposal in the log of a leader that shut down: %v, want outcome unknown", err)
		}
		t.Logf("in flight at shutdown: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("the proposal did not end with its node")
	}
}
