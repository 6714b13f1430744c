// Package cluster runs the Raft node that replicates a gateway's journal:
// the gateways of a cluster hold the same journal, changed only through
// entries of the Raft log that a quorum has stored (hashicorp/raft), so
// that no acknowledged write is lost when a gateway fails and a partition
// cannot make two gateways take writes.
//
// The journal (store.Journal opened with Options.Replicated) is the state
// machine; each log entry is a batch of journal commands (store.Command).
// The Raft log and its terms live in DATA_DIR/raft/raft.db (raft-boltdb;
// the snapshots beside it), apart from the journal's Badger. The leader gathers the commands proposed at the same moment
// into one entry, and chooses what every node must apply alike: sequence
// numbers, times, sealed secrets.
//
// Each node has one cluster port (Config.Listen). Raft's traffic and the
// gateway's own RPC share it, told apart by the first byte the dialler
// writes; with Config.TLS (TLSConfig) both go over mutual TLS, any
// certificate of the cluster's CA being a member, and without it every
// address must be on loopback. Over the RPC a follower forwards its
// proposals to the leader (Node.Propose works on every node; a Prepare's
// plaintext secret travels only inside that connection and the leader
// seals it), and nodes answer Status and membership changes (AddVoter,
// RemoveServer, also from a Client that is not a node: Dial).
//
// Only the leader delivers to Axigen: Node.Deliver runs the delivery while
// this node leads, after fencing the journal to its term (CmdFence:
// outcomes of older terms are refused) and waiting Config.FenceDelay, and
// cancels it as soon as the leadership is lost; the deliverer checks
// Node.StillLeader before each Axigen write. A witness (Config.Witness)
// votes and keeps the log and journal but takes no proposal of its own,
// never delivers, and hands the leadership over when elected, so that 2
// gateways and a witness survive the loss of any one of them.
package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/cluster/raftlog"
	"github.com/ldapgate/ldapgate/store"
)

// Peer is a voting member of the cluster.
type Peer struct {
	ID   string // the node's name, unique in the cluster (--node-id)
	Addr string // host:port of its cluster transport
}

// Config configures a Node.
type Config struct {
	// NodeID names this node, unique in the cluster.
	NodeID string
	// Dir holds the Raft log and snapshots (DATA_DIR/raft).
	Dir string
	// Journal is the state machine, opened with store.Options.Replicated.
	// The node does not close it.
	Journal *store.Journal
	// Peers are the cluster's voters, the same list on every node; a new
	// cluster bootstraps with them. Empty: a cluster of this node alone,
	// which elects itself at once. A list without this node: the node
	// joins the running cluster of those peers once one of them adds it
	// (Node.AddVoter), bootstrapping nothing. Peers counts only at the
	// first start: after it, the members are those of the Raft log.
	Peers []Peer

	// Listen is this node's cluster port (host:port): Raft's traffic and
	// the gateway's RPC (forwarded proposals, status, membership) share
	// it. The others reach the node at its address in Peers (Listen may
	// be on every interface).
	Listen string
	// Listener, when set, is the cluster port already open (Listen is
	// then ignored): tests, and a port handed over by the service manager.
	Listener net.Listener
	// TLS is the mutual TLS of the cluster port, for accepting and for
	// dialling (see TLSConfig). Nil: plain TCP, allowed only when the
	// listening address and every peer's are loopback.
	TLS *tls.Config

	// Witness makes this node a witness: a voter that stores the log and
	// applies it to its journal (which needs no key), takes no proposal
	// of its own, never delivers, and hands the leadership to another
	// voter whenever it is elected.
	Witness bool

	// ProposeTimeout bounds how long Propose looks for a leader that
	// takes the proposal before it fails with ErrNoQuorum (2s).
	ProposeTimeout time.Duration
	// FenceDelay is how long a new leader waits, after fencing the
	// journal to its term, before Deliver's run starts: long enough for a
	// previous leader to notice it lost the leadership (its lease) and
	// for its last Axigen command to end (LeaderLeaseTimeout + 10s;
	// serve sets the lease plus the Axigen command timeout). Negative:
	// no delay (tests).
	FenceDelay time.Duration

	// Timing; zero values take hashicorp/raft's defaults (1s heartbeat and
	// election timeouts, 500ms leader lease).
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	// SnapshotInterval and SnapshotThreshold: how often Raft checks for,
	// and how many new entries call for, a snapshot of the journal, after
	// which the log is compacted to TrailingLogs entries (raft's defaults:
	// 2m, 8192, 10240).
	SnapshotInterval  time.Duration
	SnapshotThreshold uint64
	TrailingLogs      uint64

	// MaxBatch bounds the commands the leader puts in one log entry (256).
	MaxBatch int
	// Logger receives the node's and Raft's messages (slog.Default()).
	Logger *slog.Logger
	// Now is the leader's clock for the commands' times (time.Now).
	Now func() time.Time

	// logSegment is the size of the Raft log's segment files (0:
	// raftlog.DefaultSegmentSize); tests make it small to rotate often.
	logSegment int
}

// Node is one member of the cluster: a Raft node whose state machine is
// the journal. Its methods are safe for concurrent use.
type Node struct {
	cfg   Config
	log   *slog.Logger
	raft  *raft.Raft
	trans *raft.NetworkTransport
	mux   *mux
	peers *peerConns
	logs  logStore

	// watch wakes those waiting for a change of role or leader, applied
	// those waiting for the journal to apply more entries.
	watch    watch
	applied  watch
	observer *raft.Observer

	proposals chan *proposal
	quit      chan struct{}
	done      chan struct{} // the proposer goroutines have ended
	bg        sync.WaitGroup

	// fenceMu serialises fence; fencedTerm is the last term this node
	// fenced the journal to as leader, priorTerm the journal's delivery
	// term just before.
	fenceMu    sync.Mutex
	fencedTerm uint64
	priorTerm  uint64

	deliver  deliverState
	verifier verifier

	shutdownOnce sync.Once
	shutdownErr  error
}

// Start opens the node's Raft log in cfg.Dir, restores the journal from
// the last snapshot if it is behind it, replays the log, listens on the
// cluster port and joins the cluster. A node without Raft state
// bootstraps the cluster with cfg.Peers (or itself alone): every node of
// a new cluster does so with the same list, which Raft allows.
func Start(cfg Config) (*Node, error) {
	if cfg.NodeID == "" {
		return nil, errors.New("cluster: a node needs an ID")
	}
	if cfg.Journal == nil || !cfg.Journal.Replicated() {
		return nil, errors.New("cluster: a node needs a journal opened as replicated (store.Options.Replicated)")
	}
	if cfg.MaxBatch <= 0 {
		cfg.MaxBatch = 256
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.ProposeTimeout <= 0 {
		cfg.ProposeTimeout = 2 * time.Second
	}
	if cfg.FenceDelay == 0 {
		cfg.FenceDelay = cmp.Or(cfg.LeaderLeaseTimeout, raft.DefaultConfig().LeaderLeaseTimeout) + 10*time.Second
	}
	log := cfg.Logger.With("component", "cluster", "node", cfg.NodeID)
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	rlog := raftLogger(log)

	// This node's address as the others know it.
	advertise := ""
	for _, p := range cfg.Peers {
		if p.ID == cfg.NodeID {
			advertise = p.Addr
		}
	}
	ln := cfg.Listener
	if ln == nil && cfg.Listen == "" {
		return nil, errors.New("cluster: a node needs an address to listen on")
	}
	if cfg.TLS == nil {
		addrs := []string{cfg.Listen}
		if ln != nil {
			addrs[0] = ln.Addr().String()
		}
		for _, p := range cfg.Peers {
			addrs = append(addrs, p.Addr)
		}
		if err := checkPlain(addrs...); err != nil {
			return nil, err
		}
	}
	if ln == nil {
		var err error
		if ln, err = net.Listen("tcp", cfg.Listen); err != nil {
			return nil, fmt.Errorf("cluster: listen: %w", err)
		}
	}
	if advertise == "" && cfg.Listener == nil {
		// Not among the peers (alone, or joining): the host it listens
		// on, unless that is every interface, with the port it got.
		host, _, _ := net.SplitHostPort(cfg.Listen)
		_, port, _ := net.SplitHostPort(ln.Addr().String())
		if ip := net.ParseIP(host); host != "" && (ip == nil || !ip.IsUnspecified()) {
			advertise = net.JoinHostPort(host, port)
		}
	}
	m, err := newMux(ln, advertise, cfg.TLS, log)
	if err != nil {
		ln.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(transportConfig(raftStream{m}, rlog.Named("transport")))
	n := &Node{cfg: cfg, log: log, trans: trans, mux: m, proposals: make(chan *proposal, 1024), quit: make(chan struct{}), done: make(chan struct{})}
	n.watch.init()
	n.applied.init()
	n.peers = newPeerConns(func(ctx context.Context, addr string) (net.Conn, error) { return m.dial(ctx, addr, kindRPC) })
	if err := n.open(rlog); err != nil {
		trans.Close()
		if n.logs != nil {
			n.logs.Close()
		}
		return nil, err
	}
	obs := make(chan raft.Observation, 16)
	n.observer = raft.NewObserver(obs, false, func(o *raft.Observation) bool {
		switch o.Data.(type) {
		case raft.RaftState, raft.LeaderObservation:
			return true
		}
		return false
	})
	n.raft.RegisterObserver(n.observer)
	n.bg.Go(func() {
		for {
			select {
			case <-obs:
				n.watch.notify()
			case <-n.quit:
				return
			}
		}
	})
	m.start(n.serveRPC)
	go n.propose()
	if cfg.Witness {
		n.bg.Go(n.handOver)
	}
	return n, nil
}

func (n *Node) open(rlog hclog.Logger) error {
	cfg := n.cfg
	logs, err := openLog(cfg.Dir, cfg.logSegment, n.log)
	if err != nil {
		return fmt.Errorf("cluster: open the raft log: %w", err)
	}
	n.logs = logs
	cached, err := raft.NewLogCache(512, logs)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, rlog.Named("snapshots"))
	if err != nil {
		return fmt.Errorf("cluster: open the snapshots: %w", err)
	}
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.NodeID)
	rc.Logger = rlog.Named("raft")
	// Batches of log entries reach the journal in one group commit.
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// A leader that removes itself steps down and stays a working node:
	// added again, it follows the log (Raft's default shuts its Raft down
	// for good, under a gateway that goes on running).
	rc.ShutdownOnRemove = false
	// Raft's defaults, unless set (ValidateConfig refuses what does not fit).
	setIf(&rc.HeartbeatTimeout, cfg.HeartbeatTimeout)
	setIf(&rc.ElectionTimeout, cfg.ElectionTimeout)
	setIf(&rc.LeaderLeaseTimeout, cfg.LeaderLeaseTimeout)
	setIf(&rc.SnapshotInterval, cfg.SnapshotInterval)
	setIf(&rc.SnapshotThreshold, cfg.SnapshotThreshold)
	setIf(&rc.TrailingLogs, cfg.TrailingLogs)
	if err := raft.ValidateConfig(rc); err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	machine := &fsm{j: cfg.Journal, log: n.log, fail: n.fail, applied: n.applied.notify}

	existing, err := raft.HasExistingState(cached, logs, snaps)
	if err != nil {
		return fmt.Errorf("cluster: %w", err)
	}
	var servers []raft.Server
	if !existing {
		if servers, err = n.servers(); err != nil {
			return err
		}
		if servers == nil {
			n.log.Info("joining a cluster: waiting to be added as a voter", "peers", len(n.cfg.Peers))
		}
	}
	if !existing {
		own, err := ownState(cfg.Journal)
		if err != nil {
			return fmt.Errorf("cluster: %w", err)
		}
		switch {
		case own && servers == nil:
			return errors.New("cluster: this node has no Raft state but its journal holds records (a lone gateway's, converted, or a node's whose raft folder was lost), and a node joining a cluster receives the cluster's: start it with an empty data folder (its journal.key only)")
		case own && len(servers) > 1:
			return errors.New("cluster: this node has no Raft state but its journal holds records, which the other peers do not have: were they to elect one of them, the records would be lost. A lone gateway's journal (converted for the cluster): start this node first with only itself as --cluster-peer, then start the others without themselves in their --cluster-peer list and add them (`ldapgate cluster add`): they receive the journal from it. A node of a running cluster whose raft folder was lost: start it with an empty data folder (its journal.key only)")
		case own:
			if err := n.bootstrapFromJournal(snaps, servers); err != nil {
				return fmt.Errorf("cluster: bootstrap from the journal: %w", err)
			}
			n.log.Info("cluster bootstrapped from this node's journal", "voters", len(servers))
		case servers != nil:
			if err := raft.BootstrapCluster(rc, cached, logs, snaps, n.trans, raft.Configuration{Servers: servers}); err != nil {
				return fmt.Errorf("cluster: bootstrap: %w", err)
			}
			n.log.Info("cluster bootstrapped", "voters", len(servers))
		}
	}
	r, err := raft.NewRaft(rc, machine, cached, logs, snaps, n.trans)
	if err != nil {
		return fmt.Errorf("cluster: start raft: %w", err)
	}
	n.raft = r
	return nil
}

// ownState reports whether the journal holds state that no Raft log
// carries: a lone gateway's journal, converted (store.MakeReplicated).
func ownState(j *store.Journal) (bool, error) {
	st, err := j.Stats()
	if err != nil {
		return false, err
	}
	if st.LastSeq > 0 {
		return true, nil
	}
	dis, err := j.DisabledAccounts()
	return len(dis) > 0, err
}

// bootstrapFromJournal makes the journal the state of a new cluster of
// servers: the first Raft snapshot (index 1, which the journal counts as
// applied) rather than a first log entry. A node that joins later then
// receives the journal as that snapshot: with a first log entry, it would
// replay the log from it onto an empty journal, without the records that
// no entry carries. The snapshot, written whole or not at all, is the
// node's Raft state: cut short, this runs again at the next start.
func (n *Node) bootstrapFromJournal(snaps raft.SnapshotStore, servers []raft.Server) error {
	j := n.cfg.Journal
	if _, err := j.ApplyEntries(context.Background(), []store.Entry{{Index: 1}}); err != nil {
		return err
	}
	s, err := j.Snapshot()
	if err != nil {
		return err
	}
	defer s.Close()
	sink, err := snaps.Create(raft.SnapshotVersionMax, 1, 1, raft.Configuration{Servers: servers}, 1, n.trans)
	if err != nil {
		return err
	}
	if _, err := s.WriteTo(sink); err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

// logStore is the Raft log and its stable store (terms, votes).
type logStore interface {
	raft.LogStore
	raft.StableStore
	Close() error
}

// openLog opens the Raft log in dir/log: raftlog, segment files of
// CRC-framed records written for ldapgate, one write and one fdatasync per
// batch of entries (raft-boltdb paid for B+tree pages, two fdatasyncs and
// msgpack on each; raft-wal v0.4.0 cannot reopen a log after some kill -9
// sequences, hashicorp/raft-wal#31). A node upgraded from raft-boltdb
// copies dir/raft.db into the new log once, and keeps it as
// raft.db.migrated. segment is the segment size (0: raftlog's default).
func openLog(dir string, segment int, log *slog.Logger) (logStore, error) {
	ctx := context.Background()
	opts := raftlog.Options{SegmentSize: int64(segment), Logger: log}
	logDir := filepath.Join(dir, "log")
	migrated, err := raftlog.MigrateBolt(ctx, filepath.Join(dir, "raft.db"), logDir, opts)
	if err != nil {
		return nil, err
	}
	if migrated {
		log.Info("cluster: copied the bolt Raft log into the new log store", "dir", logDir)
	}
	return raftlog.Open(ctx, logDir, opts)
}

// setIf sets *dst to v unless v is the zero value.
func setIf[T comparable](dst *T, v T) {
	var zero T
	if v != zero {
		*dst = v
	}
}

// servers is the bootstrap configuration: the peers, or this node alone;
// nil when the peers do not list this node: it joins their cluster, once
// one of them adds it (Node.AddVoter), and bootstraps nothing.
func (n *Node) servers() ([]raft.Server, error) {
	self := raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(n.cfg.NodeID), Address: n.trans.LocalAddr()}
	if len(n.cfg.Peers) == 0 {
		return []raft.Server{self}, nil
	}
	var servers []raft.Server
	seen := map[string]bool{}
	for _, p := range n.cfg.Peers {
		if p.ID == "" || p.Addr == "" {
			return nil, fmt.Errorf("cluster: peer %q at %q: a peer needs an ID and an address", p.ID, p.Addr)
		}
		if seen[p.ID] {
			return nil, fmt.Errorf("cluster: peer %q is listed twice", p.ID)
		}
		seen[p.ID] = true
		servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: raft.ServerAddress(p.Addr)})
	}
	if !seen[n.cfg.NodeID] {
		return nil, nil
	}
	return servers, nil
}

// ID is the node's name.
func (n *Node) ID() string { return n.cfg.NodeID }

// Leader returns the leader's ID and address, empty when none is known.
func (n *Node) Leader() (id, addr string) {
	a, i := n.raft.LeaderWithID()
	return string(i), string(a)
}

// State is the node's role now: Leader, Follower, Candidate or Shutdown.
func (n *Node) State() raft.RaftState { return n.raft.State() }

// Term is the node's current Raft term.
func (n *Node) Term() uint64 { return n.raft.CurrentTerm() }

// AppliedIndex is the index of the last log entry applied to the journal.
func (n *Node) AppliedIndex() uint64 { return n.raft.AppliedIndex() }

// Barrier waits, on the leader, until every entry committed before it is
// applied to the journal.
func (n *Node) Barrier(ctx context.Context) error {
	return n.raftErr(n.raft.Barrier(timeoutOf(ctx)).Error())
}

// Snapshot takes a snapshot of the journal now and compacts the log
// behind it (Raft also does so on its own, see Config.SnapshotThreshold).
func (n *Node) Snapshot() error {
	err := n.raft.Snapshot().Error()
	if errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("snapshot: %w", err)
	}
	return nil
}

// LastSnapshotIndex is the log index of the node's latest snapshot (0:
// none), taken or received from the leader.
func (n *Node) LastSnapshotIndex() uint64 {
	var idx uint64
	fmt.Sscan(n.raft.Stats()["last_snapshot_index"], &idx)
	return idx
}

// Shutdown stops the node: pending proposals fail with ErrClosed, Raft
// stops and the log is closed. The journal stays open (it is the
// caller's).
func (n *Node) Shutdown() error {
	n.shutdownOnce.Do(func() {
		close(n.quit)
		<-n.done
		n.bg.Wait()
		n.raft.DeregisterObserver(n.observer)
		err := n.raft.Shutdown().Error()
		n.peers.close()
		if cerr := n.trans.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
		if cerr := n.logs.Close(); err == nil && cerr != nil {
			err = cerr
		}
		if err != nil {
			n.shutdownErr = fmt.Errorf("cluster: shut down: %w", err)
		}
		n.log.Info("cluster node stopped")
	})
	return n.shutdownErr
}

// fail stops a node whose journal no longer follows the log.
func (n *Node) fail(err error) {
	n.log.Error("cluster node stops: its journal cannot follow the log", "err", err)
	// Not on the FSM goroutine: Raft's shutdown waits for it.
	go n.Shutdown()
}

// raftErr turns Raft's errors into the package's.
func (n *Node) raftErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return n.notLeader()
	case errors.Is(err, raft.ErrLeadershipLost):
		return fmt.Errorf("%w (%v)", ErrLeadershipLost, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return ErrClosed
	}
	return err
}

// watch wakes the goroutines waiting for a change of this node's role or
// of the leader it knows: wait returns a channel that is closed at the
// next change.
type watch struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *watch) init() { w.ch = make(chan struct{}) }

func (w *watch) wait() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.ch
}

func (w *watch) notify() {
	w.mu.Lock()
	defer w.mu.Unlock()
	close(w.ch)
	w.ch = make(chan struct{})
}

// notLeader is the error for a proposal this node cannot take.
func (n *Node) notLeader() error {
	id, addr := n.Leader()
	if id == "" {
		return ErrNoQuorum
	}
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// timeoutOf is what Raft's calls take for ctx: the time left (0: none).
func timeoutOf(ctx context.Context) time.Duration {
	if d, ok := ctx.Deadline(); ok {
		return max(time.Until(d), time.Millisecond)
	}
	return 0
}

// transportConfig is the Raft transport's configuration over stream.
func transportConfig(stream raft.StreamLayer, logger hclog.Logger) *raft.NetworkTransportConfig {
	return &raft.NetworkTransportConfig{
		Stream:  stream,
		MaxPool: 4,
		// No pipelined replication: hashicorp/raft v1.7.2's pipeline
		// deadlocks when a follower's answer ends it (a higher term, a
		// refused append) while one more send is on its way: the sender
		// parks on a queue nobody reads, the leader never replicates to
		// that follower again (its heartbeats go on, so no election heals
		// it) and the node's shutdown hangs for good (a leader SIGSTOPped
		// and resumed did it in TestClusterFaults). One request at a time
		// per follower, each carrying up to MaxAppendEntries entries.
		MaxRPCsInFlight: 1,
		Timeout:         10 * time.Second,
		Logger:          logger,
	}
}
