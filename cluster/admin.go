package cluster

import (
	"cmp"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/hashicorp/raft"
)

const (
	// peerTimeout bounds Status's question to each voter.
	peerTimeout = time.Second
	// statusTimeout bounds a Status asked over the RPC.
	statusTimeout = 5 * time.Second
	// membershipTimeout bounds a membership change asked over the RPC.
	membershipTimeout = 30 * time.Second
)

// PeerStatus is what one node says of itself.
type PeerStatus struct {
	ID      string `json:"id"`
	Role    string `json:"role"` // Leader, Follower, Candidate, Shutdown
	Witness bool   `json:"witness,omitempty"`
	Term    uint64 `json:"term"`
	// LastLogIndex is the last entry in its log, CommitIndex the last it
	// knows committed, AppliedIndex the last applied to its journal.
	LastLogIndex uint64     `json:"lastLogIndex"`
	CommitIndex  uint64     `json:"commitIndex"`
	AppliedIndex uint64     `json:"appliedIndex"`
	LeaderID     string     `json:"leaderID,omitempty"`
	LeaderAddr   string     `json:"leaderAddr,omitempty"`
	Fence        FenceState `json:"fence"`
}

// ServerStatus is one server of the cluster's configuration, as asked by
// Status.
type ServerStatus struct {
	ID       string `json:"id"`
	Addr     string `json:"addr"`
	Suffrage string `json:"suffrage"` // Voter, Nonvoter, Staging
	// Reachable: it answered; otherwise Error says why not.
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	// Its own view, when it answered.
	Role         string `json:"role,omitempty"`
	Witness      bool   `json:"witness,omitempty"`
	Term         uint64 `json:"term,omitempty"`
	CommitIndex  uint64 `json:"commitIndex,omitempty"`
	AppliedIndex uint64 `json:"appliedIndex,omitempty"`
	// Lag is how many committed entries it has not applied yet: the
	// cluster's commit index (the leader's, or the highest known) less
	// its applied index.
	Lag uint64 `json:"lag"`
}

// Status is the cluster as one node sees it: itself, and each server of
// the configuration it knows.
type Status struct {
	PeerStatus
	Addr    string         `json:"addr"`
	Servers []ServerStatus `json:"servers"`
}

// peerStatus is this node's own view.
func (n *Node) peerStatus() PeerStatus {
	addr, id := n.raft.LeaderWithID()
	stats := n.raft.Stats()
	last, _ := strconv.ParseUint(stats["last_log_index"], 10, 64)
	return PeerStatus{
		ID:           n.cfg.NodeID,
		Role:         n.raft.State().String(),
		Witness:      n.cfg.Witness,
		Term:         n.raft.CurrentTerm(),
		LastLogIndex: last,
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.raft.AppliedIndex(),
		LeaderID:     string(id),
		LeaderAddr:   string(addr),
		Fence:        n.Fence(),
	}
}

// Status reports this node's view of the cluster: its role, term, indexes
// and fence, and for each server of the configuration its own answer,
// asked over the RPC (each within a second; a server that does not answer
// is marked unreachable).
func (n *Node) Status(ctx context.Context) (Status, error) {
	st := Status{PeerStatus: n.peerStatus(), Addr: n.mux.advertise.String()}
	future := n.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return st, n.raftErr(err)
	}
	servers := future.Configuration().Servers
	st.Servers = make([]ServerStatus, len(servers))
	var wg sync.WaitGroup
	for i, s := range servers {
		ss := &st.Servers[i]
		*ss = ServerStatus{ID: string(s.ID), Addr: string(s.Address), Suffrage: s.Suffrage.String()}
		if string(s.ID) == n.cfg.NodeID {
			me := st.PeerStatus
			ss.Reachable, ss.Role, ss.Witness, ss.Term, ss.CommitIndex, ss.AppliedIndex = true, me.Role, me.Witness, me.Term, me.CommitIndex, me.AppliedIndex
			continue
		}
		wg.Go(func() {
			pctx, cancel := context.WithTimeout(ctx, peerTimeout)
			defer cancel()
			var ps PeerStatus
			err := n.call(pctx, string(s.Address), rpcPeer, nil, &ps)
			if err != nil {
				ss.Error = err.Error()
				return
			}
			ss.Reachable, ss.Role, ss.Witness, ss.Term, ss.CommitIndex, ss.AppliedIndex = true, ps.Role, ps.Witness, ps.Term, ps.CommitIndex, ps.AppliedIndex
			if ps.ID != ss.ID {
				ss.Error = fmt.Sprintf("the node at this address says it is %q", ps.ID)
			}
		})
	}
	wg.Wait()
	// The leader's commit index is the highest.
	commit := st.CommitIndex
	for _, ss := range st.Servers {
		commit = max(commit, ss.CommitIndex)
	}
	for i := range st.Servers {
		if ss := &st.Servers[i]; ss.Reachable && commit > ss.AppliedIndex {
			ss.Lag = commit - ss.AppliedIndex
		}
	}
	return st, nil
}

// call makes an RPC of kind to the node at addr with a JSON request (nil:
// none) and decodes its JSON answer into out (nil: none).
func (n *Node) call(ctx context.Context, addr string, kind byte, in, out any) error {
	rc, err := n.peers.get(ctx, addr)
	if err != nil {
		return err
	}
	return callJSON(ctx, rc, kind, in, out)
}

func callJSON(ctx context.Context, rc *rpcConn, kind byte, in, out any) error {
	var payload []byte
	if in != nil {
		var err error
		if payload, err = json.Marshal(in); err != nil {
			return err
		}
	}
	answer, err := rc.call(ctx, kind, payload)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	return unmarshal(answer, out)
}

func unmarshal(b []byte, v any) error {
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("malformed RPC payload: %w", err)
	}
	return nil
}

// jsonAnswer answers request id with v as JSON, or with err.
func jsonAnswer(id uint64, v any, err error) frame {
	if err != nil {
		return errorFrame(id, err)
	}
	b, err := json.Marshal(v)
	if err != nil {
		return errorFrame(id, err)
	}
	return frame{id: id, payload: b}
}

// membershipRequest is the payload of rpcAddVoter and rpcRemoveServer.
// Forwarded: a node sends it to the leader it knows, which must not
// forward it again.
type membershipRequest struct {
	ID        string `json:"id"`
	Addr      string `json:"addr,omitempty"`
	Forwarded bool   `json:"forwarded,omitempty"`
}

// AddVoter adds node id, listening at addr, to the cluster as a voter (or
// changes its address), on the leader: a follower forwards the change to
// it. The node must be running with the same journal key; it gets the
// journal from the leader (a snapshot, then the log). Without TLS, addr
// must be a loopback address.
func (n *Node) AddVoter(ctx context.Context, id, addr string) error {
	return n.addVoter(ctx, id, addr, false)
}

func (n *Node) addVoter(ctx context.Context, id, addr string, forwarded bool) error {
	if id == "" || addr == "" {
		return errors.New("cluster: a voter needs an ID and an address")
	}
	if n.cfg.TLS == nil {
		if err := checkPlain(addr); err != nil {
			return err
		}
	}
	return n.membership(ctx, rpcAddVoter, membershipRequest{ID: id, Addr: addr}, forwarded, func(timeout time.Duration) raft.Future {
		if err := n.checkNewVoter(ctx, id, addr); err != nil {
			return errorFuture{err}
		}
		return n.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(addr), 0, timeout)
	})
}

// newVoterTimeout bounds the question to a voter about to be added.
const newVoterTimeout = 5 * time.Second

// checkNewVoter, on the leader, refuses a voter (or a voter's new
// address) that no node answers at as id, or whose node follows or leads
// another cluster: the configuration counts a voter in the quorum as soon
// as it is added, so one that never answers can cost a small cluster its
// quorum for good (nothing can then be committed, not even its removal),
// and a node of another cluster holds another journal.
func (n *Node) checkNewVoter(ctx context.Context, id, addr string) error {
	future := n.raft.GetConfiguration()
	if err := future.Error(); err != nil {
		return err
	}
	members := map[string]bool{}
	for _, s := range future.Configuration().Servers {
		if string(s.ID) == id && string(s.Address) == addr {
			return nil // no change
		}
		members[string(s.ID)] = true
	}
	pctx, cancel := context.WithTimeout(ctx, newVoterTimeout)
	defer cancel()
	var ps PeerStatus
	if err := n.call(pctx, addr, rpcPeer, nil, &ps); err != nil {
		return fmt.Errorf("cluster: no node answers at %s (%v): start %s there first, with the cluster's nodes as its peers and without itself", addr, err, id)
	}
	switch {
	case ps.ID != id:
		return fmt.Errorf("cluster: the node at %s is %q, not %q", addr, ps.ID, id)
	case ps.Role == raft.Leader.String() || (ps.LeaderID != "" && !members[ps.LeaderID]):
		return fmt.Errorf("cluster: %s at %s is a node of another cluster (its leader: %s): a node joins with an empty data folder", id, addr, cmp.Or(ps.LeaderID, id))
	}
	return nil
}

// errorFuture is a membership change refused before Raft saw it.
type errorFuture struct{ err error }

func (f errorFuture) Error() error  { return f.err }
func (f errorFuture) Index() uint64 { return 0 }

// RemoveServer removes node id from the cluster, on the leader: a
// follower forwards the change to it. A leader that removes itself steps
// down once the change is committed.
func (n *Node) RemoveServer(ctx context.Context, id string) error {
	return n.removeServer(ctx, id, false)
}

func (n *Node) removeServer(ctx context.Context, id string, forwarded bool) error {
	if id == "" {
		return errors.New("cluster: which server to remove?")
	}
	return n.membership(ctx, rpcRemoveServer, membershipRequest{ID: id}, forwarded, func(timeout time.Duration) raft.Future {
		// Raft takes the removal of an unknown ID (a typo) as done.
		future := n.raft.GetConfiguration()
		if err := future.Error(); err != nil {
			return errorFuture{err}
		}
		if !slices.ContainsFunc(future.Configuration().Servers, func(s raft.Server) bool { return string(s.ID) == id }) {
			return errorFuture{fmt.Errorf("cluster: no server %q in the cluster", id)}
		}
		return n.raft.RemoveServer(raft.ServerID(id), 0, timeout)
	})
}

// membership makes a configuration change on the leader, here or
// forwarded (once) to the leader this node knows.
func (n *Node) membership(ctx context.Context, kind byte, req membershipRequest, forwarded bool, change func(time.Duration) raft.Future) error {
	if n.raft.State() == raft.Leader {
		err := n.raftErr(change(timeoutOf(ctx)).Error())
		if err != nil {
			return fmt.Errorf("cluster: membership change: %w", err)
		}
		return nil
	}
	if forwarded {
		return n.notLeader()
	}
	addr, id := n.raft.LeaderWithID()
	if id == "" {
		return ErrNoQuorum
	}
	req.Forwarded = true
	if err := n.call(ctx, string(addr), kind, req, nil); err != nil {
		return fmt.Errorf("cluster: membership change on the leader %s: %w", id, err)
	}
	return nil
}

// Client talks to a node's cluster port from outside the cluster (the
// ldapgate cluster command): status and membership. With TLS it must
// present a certificate of the cluster's CA, like a node.
type Client struct {
	rc *rpcConn
}

// Dial connects to the cluster port at addr. tlsConf is the cluster's
// (see TLSConfig); nil: plain TCP, loopback addresses only.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config) (*Client, error) {
	if tlsConf == nil {
		if err := checkPlain(addr); err != nil {
			return nil, err
		}
	}
	c, err := dialKind(ctx, addr, tlsConf, kindRPC, nil)
	if err != nil {
		return nil, fmt.Errorf("cluster: connect to %s: %w", addr, err)
	}
	return &Client{rc: newRPCConn(c)}, nil
}

// Status is Node.Status of the node the client is connected to.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := callJSON(ctx, c.rc, rpcStatus, nil, &st)
	return st, err
}

// AddVoter is Node.AddVoter on the node the client is connected to.
func (c *Client) AddVoter(ctx context.Context, id, addr string) error {
	return callJSON(ctx, c.rc, rpcAddVoter, membershipRequest{ID: id, Addr: addr}, nil)
}

// RemoveServer is Node.RemoveServer on the node the client is connected
// to.
func (c *Client) RemoveServer(ctx context.Context, id string) error {
	return callJSON(ctx, c.rc, rpcRemoveServer, membershipRequest{ID: id}, nil)
}

// Close closes the connection.
func (c *Client) Close() error {
	c.rc.close()
	return nil
}
