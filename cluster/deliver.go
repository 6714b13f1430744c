package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

// Only the leader delivers to Axigen, and only behind a fence. When a node
// becomes the leader of term T, Deliver first fences the journal (every
// earlier entry applied, then CmdFence T: outcomes of older terms are
// refused), then waits Config.FenceDelay, so that a previous leader that
// has not yet noticed it lost the leadership (its lease) has ended its
// last Axigen command, and only then runs the delivery, with a context
// cancelled as soon as this node stops leading in T. The deliverer also
// asks StillLeader before each Axigen write.

// leaderCheck is how often a delivery's context checks, besides Raft's
// observations, that its node still leads.
const leaderCheck = 100 * time.Millisecond

// verifyFresh is how long a verification of the leadership
// (raft.VerifyLeader, a round of heartbeats) answers StillLeader.
const verifyFresh = 100 * time.Millisecond

// rerunPause is the pause before Deliver runs again a delivery that ended
// on its own while this node still leads.
const rerunPause = time.Second

// FenceState is the delivery fence as this node sees it, for monitoring.
type FenceState struct {
	// Term is the last term this node fenced the journal to as leader
	// (0: never); JournalTerm is the journal's delivery term (the highest
	// fence applied, by any leader).
	Term        uint64 `json:"term"`
	JournalTerm uint64 `json:"journalTerm"`
	// Waiting: the fence delay runs until ReadyAt.
	Waiting bool      `json:"waiting"`
	ReadyAt time.Time `json:"readyAt,omitzero"`
	// Delivering: Deliver's run runs, since Since, in term DeliveryTerm.
	Delivering   bool      `json:"delivering"`
	DeliveryTerm uint64    `json:"deliveryTerm,omitempty"`
	Since        time.Time `json:"since,omitzero"`
}

type deliverState struct {
	mu sync.Mutex
	st FenceState
}

func (d *deliverState) set(f func(*FenceState)) {
	d.mu.Lock()
	f(&d.st)
	d.mu.Unlock()
}

// Fence is the node's delivery fence now.
func (n *Node) Fence() FenceState {
	n.deliver.mu.Lock()
	st := n.deliver.st
	n.deliver.mu.Unlock()
	n.fenceMu.Lock()
	st.Term = n.fencedTerm
	n.fenceMu.Unlock()
	st.JournalTerm = n.cfg.Journal.DeliveryTerm()
	return st
}

// Deliver runs the cluster's delivery on this node whenever it leads,
// until ctx ends (it returns ctx.Err()) or the node shuts down
// (ErrClosed). Each time this node becomes the leader of a term, Deliver
// fences the journal to the term, waits Config.FenceDelay (no delay when
// no leader ever fenced the journal: none can have delivered), then calls
// run with the term and a context that is cancelled as soon as this node
// stops leading in that term (Raft's observations, and a check every
// 100 ms). When run returns while the node still leads, it is run again
// after a pause (its error is logged); when the leadership is lost,
// Deliver waits for the next one. A witness never runs run.
func (n *Node) Deliver(ctx context.Context, run func(ctx context.Context, term uint64) error) error {
	if n.cfg.Witness {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-n.quit:
			return ErrClosed
		}
	}
	var ready uint64 // the term whose fence delay has passed
	for {
		if err := n.awaitLeadership(ctx); err != nil {
			return err
		}
		term, err := n.fence()
		if err != nil {
			n.log.Warn("cannot deliver: fencing the journal failed", "err", err)
			if err := n.pause(ctx, leaderCheck); err != nil {
				return err
			}
			continue
		}
		lctx, cancel := n.leaderContext(ctx, term)
		if ready != term {
			if err := n.fenceDelay(lctx, term); err != nil {
				cancel()
				if ctx.Err() != nil {
					return ctx.Err()
				}
				continue
			}
			ready = term
		}
		n.deliver.set(func(s *FenceState) {
			s.Waiting, s.ReadyAt = false, time.Time{}
			s.Delivering, s.DeliveryTerm, s.Since = true, term, time.Now()
		})
		n.log.Info("delivering as the leader", "term", term)
		err = run(lctx, term)
		n.deliver.set(func(s *FenceState) { s.Delivering, s.DeliveryTerm, s.Since = false, 0, time.Time{} })
		still := lctx.Err() == nil
		cancel()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if still {
			n.log.Warn("delivery ended while this node leads: it runs again", "term", term, "err", err)
			if err := n.pause(ctx, rerunPause); err != nil {
				return err
			}
		} else {
			n.log.Info("delivery stopped: leadership lost", "term", term)
		}
	}
}

// fenceDelay waits the fence delay of term, unless no leader ever fenced
// the journal before this node did.
func (n *Node) fenceDelay(ctx context.Context, term uint64) error {
	n.fenceMu.Lock()
	prior := n.priorTerm
	n.fenceMu.Unlock()
	delay := n.cfg.FenceDelay
	if prior == 0 || delay < 0 {
		return nil
	}
	readyAt := time.Now().Add(delay)
	n.deliver.set(func(s *FenceState) { s.Waiting, s.ReadyAt = true, readyAt })
	defer n.deliver.set(func(s *FenceState) { s.Waiting, s.ReadyAt = false, time.Time{} })
	n.log.Info("waiting for the fence delay before delivering", "term", term, "delay", delay)
	return n.pause(ctx, delay)
}

// pause waits d, or until ctx ends or the node shuts down.
func (n *Node) pause(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quit:
		return ErrClosed
	}
}

// awaitLeadership waits until this node leads.
func (n *Node) awaitLeadership(ctx context.Context) error {
	for {
		changed := n.watch.wait()
		if n.raft.State() == raft.Leader {
			return nil
		}
		t := time.NewTimer(leaderCheck)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-n.quit:
			t.Stop()
			return ErrClosed
		}
		t.Stop()
	}
}

// leads reports whether this node leads in term.
func (n *Node) leads(term uint64) bool {
	return n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term
}

// leaderContext is a child of ctx cancelled as soon as this node stops
// leading in term, or shuts down.
func (n *Node) leaderContext(ctx context.Context, term uint64) (context.Context, context.CancelFunc) {
	lctx, cancel := context.WithCancel(ctx)
	go func() {
		defer cancel()
		t := time.NewTicker(leaderCheck)
		defer t.Stop()
		for {
			changed := n.watch.wait()
			if !n.leads(term) {
				return
			}
			select {
			case <-changed:
			case <-t.C:
			case <-lctx.Done():
				return
			case <-n.quit:
				return
			}
		}
	}()
	return lctx, cancel
}

// StillLeader returns nil only if this node leads in term, as confirmed by
// a quorum of the cluster (raft.VerifyLeader) within the last 100 ms: the
// deliverer asks it before each Axigen write. Concurrent callers share
// one verification. Otherwise it returns an error wrapping ErrNotLeader
// (or ErrWitness, ErrClosed, ctx's error).
func (n *Node) StillLeader(ctx context.Context, term uint64) error {
	if n.cfg.Witness {
		return ErrWitness
	}
	select {
	case <-n.quit:
		return ErrClosed
	default:
	}
	if !n.leads(term) {
		return fmt.Errorf("term %d: %w", term, ErrNotLeader)
	}
	v := n.verifier.get(n)
	select {
	case <-v.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-n.quit:
		return ErrClosed
	}
	if v.err != nil {
		return fmt.Errorf("term %d: %w (%v)", term, ErrNotLeader, v.err)
	}
	if v.term != term || !n.leads(term) {
		return fmt.Errorf("term %d: %w (the node leads term %d)", term, ErrNotLeader, v.term)
	}
	return nil
}

// verifier shares raft.VerifyLeader among StillLeader's callers: a
// verification started less than verifyFresh ago answers them all.
type verifier struct {
	mu   sync.Mutex
	last *verification
}

type verification struct {
	started time.Time
	done    chan struct{}
	err     error
	term    uint64 // the term it confirmed
}

// get returns a verification started less than verifyFresh ago, running
// or done, or starts one.
func (vr *verifier) get(n *Node) *verification {
	vr.mu.Lock()
	defer vr.mu.Unlock()
	if v := vr.last; v != nil && time.Since(v.started) < verifyFresh {
		select {
		case <-v.done:
			if v.err == nil {
				return v
			}
			// A failed one is not shared with later callers.
		default:
			return v
		}
	}
	v := &verification{started: time.Now(), done: make(chan struct{})}
	vr.last = v
	term := n.raft.CurrentTerm()
	go func() {
		defer close(v.done)
		v.err = n.raftErr(n.raft.VerifyLeader().Error())
		if v.err == nil {
			// Leading in the term read before the round: a term change
			// means it stepped down and back up meanwhile.
			if now := n.raft.CurrentTerm(); now != term {
				v.err = fmt.Errorf("the term moved from %d to %d during the verification", term, now)
			}
		}
		v.term = term
	}()
	return v
}

// handOver is a witness's watch: whenever it leads, it transfers the
// leadership to another voter (Raft waits until that voter has the whole
// log), and tries again until one takes it.
func (n *Node) handOver() {
	t := time.NewTicker(leaderCheck)
	defer t.Stop()
	for {
		changed := n.watch.wait()
		if n.raft.State() == raft.Leader {
			var err error
			if id, addr := n.handOverTarget(); id != "" {
				err = n.raft.LeadershipTransferToServer(raft.ServerID(id), raft.ServerAddress(addr)).Error()
			} else {
				err = n.raft.LeadershipTransfer().Error()
			}
			if err != nil {
				n.log.Debug("witness: leadership transfer failed, will retry", "err", err)
			} else {
				n.log.Info("witness: handed the leadership over")
			}
		}
		select {
		case <-changed:
		case <-t.C:
		case <-n.quit:
			return
		}
	}
}

// handOverTarget is the voter a witness hands the leadership to: of the
// other voters that answer and are not witnesses, the one that applied
// the most. None: Raft picks.
func (n *Node) handOverTarget() (id, addr string) {
	future := n.raft.GetConfiguration()
	if future.Error() != nil {
		return "", ""
	}
	var best uint64
	for _, s := range future.Configuration().Servers {
		if s.Suffrage != raft.Voter || string(s.ID) == n.cfg.NodeID {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		var ps PeerStatus
		err := n.call(ctx, string(s.Address), rpcPeer, nil, &ps)
		cancel()
		if err != nil || ps.Witness || ps.ID != string(s.ID) {
			continue
		}
		if id == "" || ps.AppliedIndex > best {
			id, addr, best = string(s.ID), string(s.Address), ps.AppliedIndex
		}
	}
	return id, addr
}
