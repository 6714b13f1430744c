package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/store"
)

// Result is what became of one proposed command.
type Result = store.Applied

// Node is the journal's proposer.
var _ store.Proposer = (*Node)(nil)

// proposal is one Propose call on its way through the leader's pipeline.
type proposal struct {
	cmds  []store.Command
	size  int // the commands' SizeHint
	off   int // where its commands start in the entry
	res   []Result
	index uint64 // the entry's, once applied
	err   error
	done  chan struct{}
}

// inFlight is a log entry handed to Raft, waiting for a quorum.
type inFlight struct {
	future raft.ApplyFuture
	taken  []*proposal
}

// enqueueTimeout bounds the wait for a place in Raft's queue, and
// readyTimeout a new leader's catching up (Barrier, fence).
const (
	// maxInFlight bounds the entries of one leader in flight at once:
	// one more lets a round start while the last one's apply ends; more
	// make smaller entries for the same writers, which cost more than
	// they overlap (BenchmarkClusterThroughput).
	maxInFlight    = 2
	enqueueTimeout = 5 * time.Second
	readyTimeout   = 10 * time.Second
)

// proposeLocal is Propose on the leader: it fails with a NotLeaderError
// on a follower (ErrNoQuorum when no leader is known), with ErrWitness on
// a witness, and with ErrLeadershipLost when this node stops being the
// leader before a quorum stored the commands.
//
// The commands of the proposals waiting at the same moment go into one
// log entry, so that concurrent proposers share its round trip and fsync.
// A proposal's commands are applied together, in one entry. ctx bounds
// the wait; a proposal whose ctx ends after it was queued may still be
// applied. ErrClosed (the node shut down) means the proposal never
// reached the log: it may be made again elsewhere. It also returns the
// index of the entry that holds the commands. owned says the caller hands
// cmds over (a forwarded proposal, decoded for this call): the pipeline
// then reads them without a copy, which a caller that may reuse them once
// its ctx ends needs.
func (n *Node) proposeLocal(ctx context.Context, cmds []store.Command, owned bool) ([]Result, uint64, error) {
	if len(cmds) == 0 {
		return nil, 0, nil
	}
	select {
	case <-n.quit:
		return nil, 0, ErrClosed
	default:
	}
	if n.cfg.Witness {
		return nil, 0, ErrWitness
	}
	if n.raft.State() != raft.Leader {
		return nil, 0, n.notLeader()
	}
	if !owned {
		cmds = slices.Clone(cmds)
	}
	p := &proposal{cmds: cmds, done: make(chan struct{})}
	for i := range p.cmds {
		p.size += p.cmds[i].SizeHint()
	}
	if p.size > store.MaxEntryBytes {
		return nil, 0, fmt.Errorf("a proposal of about %d bytes does not fit in one log entry (%d): %w", p.size, store.MaxEntryBytes, store.ErrTooLarge)
	}
	select {
	case n.proposals <- p:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	case <-n.quit:
		return nil, 0, ErrClosed
	}
	select {
	case <-p.done:
		return p.res, p.index, p.err
	case <-n.done:
		select {
		case <-p.done:
			return p.res, p.index, p.err
		default:
			return nil, 0, ErrClosed
		}
	case <-ctx.Done():
		return nil, 0, fmt.Errorf("the proposal may still be applied: %w (%w)", ctx.Err(), store.ErrOutcomeUnknown)
	}
}

// propose is the leader's pipeline: it gathers the proposals waiting,
// stamps their commands in log order (sequence numbers must rise along
// the log) and hands the entry to Raft without waiting for it; wait
// answers the proposers as their entries are applied.
func (n *Node) propose() {
	defer close(n.done)
	flights := make(chan *inFlight, maxInFlight)
	// slots bounds the entries handed to Raft and not yet applied: while
	// they are in flight, the proposals that arrive gather into the next
	// entry instead of an entry each.
	slots := make(chan struct{}, maxInFlight)
	waited := make(chan struct{})
	go n.wait(flights, slots, waited)
	defer func() {
		close(flights)
		<-waited
	}()
	var (
		term    uint64 // the term this node has caught up to as leader
		lastSeq uint64 // the last sequence number handed out
		pending []*proposal
		next    *proposal // taken, but for the entry after this one
		// cmds is the storage of each entry's stamped commands, reused:
		// an entry's commands are encoded, then no longer needed.
		cmds []store.Command
	)
	for {
		if next != nil {
			pending, next = append(pending[:0], next), nil
		} else {
			select {
			case p := <-n.proposals:
				pending = append(pending[:0], p)
			case <-n.quit:
				return
			}
		}
		count, size := len(pending[0].cmds), pending[0].size
		full := count >= n.cfg.MaxBatch
	gather:
		for !full {
			select {
			case slots <- struct{}{}:
				break gather
			case p := <-n.proposals:
				if size+p.size > store.MaxEntryBytes {
					next, full = p, true
					break
				}
				pending = append(pending, p)
				count += len(p.cmds)
				size += p.size
				full = count >= n.cfg.MaxBatch
			}
		}
		if full {
			slots <- struct{}{}
		}
		if err := n.ready(&term, &lastSeq); err != nil {
			for _, p := range pending {
				p.err = err
				close(p.done)
			}
			<-slots
			continue
		}
		now := n.cfg.Now()
		clear(cmds) // the last entry's records
		if cap(cmds) > maxKeptCommands {
			cmds = nil
		}
		cmds = slices.Grow(cmds[:0], count)
		taken := make([]*proposal, 0, len(pending))
		for _, p := range pending {
			p.off = len(cmds)
			p.res = make([]Result, len(p.cmds))
			var err error
			for i := range p.cmds {
				c := p.cmds[i]
				var seq uint64
				if c.Op == store.CmdPrepare {
					lastSeq++
					seq = lastSeq
				}
				if err = n.cfg.Journal.Stamp(&c, seq, now); err != nil {
					break
				}
				p.res[i].Seq = c.Seq
				cmds = append(cmds, c)
			}
			if err != nil {
				cmds = cmds[:p.off]
				p.res, p.err = nil, err
				close(p.done)
				continue
			}
			taken = append(taken, p)
		}
		if len(taken) == 0 {
			<-slots
			continue
		}
		flights <- &inFlight{future: n.raft.Apply(store.EncodeCommands(cmds), enqueueTimeout), taken: taken}
	}
}

// ready checks that this node leads and, in a term the pipeline has not
// led in yet, catches up first (fence): every entry of the previous
// leaders is applied, so that its sequence numbers continue theirs.
func (n *Node) ready(term, lastSeq *uint64) error {
	if n.raft.State() != raft.Leader {
		return n.notLeader()
	}
	if n.raft.CurrentTerm() == *term {
		return nil
	}
	t, err := n.fence()
	if err != nil {
		return err
	}
	st, err := n.cfg.Journal.Stats()
	if err != nil {
		return err
	}
	*lastSeq = max(*lastSeq, st.LastSeq)
	*term = t
	n.log.Info("taking proposals as the leader", "term", t, "lastSeq", *lastSeq)
	return nil
}

// fence makes this node ready to lead in its current term, once per term:
// every entry committed by the previous leaders is applied (Barrier), and
// the journal is fenced to the term (CmdFence), so that outcomes of
// deliveries made under an older term are refused from then on. It
// returns the term, and is shared by the proposal pipeline and Deliver.
func (n *Node) fence() (uint64, error) {
	n.fenceMu.Lock()
	defer n.fenceMu.Unlock()
	if n.raft.State() != raft.Leader {
		return 0, n.notLeader()
	}
	t := n.raft.CurrentTerm()
	if t == n.fencedTerm {
		return t, nil
	}
	if err := n.raft.Barrier(readyTimeout).Error(); err != nil {
		return 0, n.raftErr(err)
	}
	n.priorTerm = n.cfg.Journal.DeliveryTerm()
	cmd := []store.Command{{Op: store.CmdFence, Term: t, Time: n.cfg.Now()}}
	if err := n.raft.Apply(store.EncodeCommands(cmd), readyTimeout).Error(); err != nil {
		return 0, n.raftErr(err)
	}
	// Raft's term may have moved meanwhile: the fence is for t.
	n.fencedTerm = t
	n.log.Info("journal fenced to this leader's term", "term", t, "previous", n.priorTerm)
	return t, nil
}

// wait answers the proposers of each entry, in log order, once it is
// applied (or failed).
func (n *Node) wait(flights <-chan *inFlight, slots <-chan struct{}, done chan<- struct{}) {
	defer close(done)
	for f := range flights {
		err := f.future.Error()
		<-slots
		var refusals []error
		if err == nil {
			switch r := f.future.Response().(type) {
			case []error:
				refusals = r
			case error:
				err = r
			}
		} else if errors.Is(err, raft.ErrRaftShutdown) {
			// Handed to Raft before the shutdown: the entry may be in
			// this node's log and a quorum's, and a later leader may
			// apply it. Not ErrClosed, which re-sends the proposal.
			err = fmt.Errorf("%w (the node shut down after taking it)", ErrOutcomeUnknown)
		} else {
			err = n.raftErr(err)
		}
		for _, p := range f.taken {
			if err != nil {
				p.res, p.err = nil, err
			} else {
				p.index = f.future.Index()
			}
			if err == nil && refusals != nil {
				for i := range p.res {
					p.res[i].Err = refusals[p.off+i]
				}
			}
			close(p.done)
		}
	}
}
