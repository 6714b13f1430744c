package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/store"
)

// Propose has the cluster apply cmds to every node's journal, in order,
// and returns each command's Result once the leader has applied them: a
// quorum of the nodes has them in its log, so no later leader can lose
// them. On the leader the commands go into its pipeline (proposeLocal);
// on a follower they are forwarded to the leader over the cluster's RPC
// (plaintext secrets travel inside the TLS or loopback connection: the
// leader stamps and seals), and the leader's answer is returned with each
// refusal re-created, so that errors.Is finds store's sentinels.
//
// A proposal that certainly did not reach the log (no leader known, the
// node asked was no longer the leader, the leader could not be reached) is
// made again as the leadership settles, for at most Config.ProposeTimeout
// (2 s); then Propose fails with ErrNoQuorum. A proposal that may have
// reached the log is never made again: its outcome is then unknown
// (ErrLeadershipLost, ErrOutcomeUnknown), as when ctx ends after it was
// sent. Every error for a cluster that cannot take the proposal wraps
// store.ErrUnavailable.
//
// A command's Time, a Prepare's sequence number and sealed secret are the
// leader's to choose (see store.Journal.Stamp); the caller's commands are
// not changed.
func (n *Node) Propose(ctx context.Context, cmds []store.Command) ([]Result, error) {
	if len(cmds) == 0 {
		return nil, nil
	}
	size := 0
	for i := range cmds {
		size += cmds[i].SizeHint()
	}
	if size > store.MaxEntryBytes {
		return nil, fmt.Errorf("a proposal of about %d bytes does not fit in one log entry (%d): %w", size, store.MaxEntryBytes, store.ErrTooLarge)
	}
	deadline := time.Now().Add(n.cfg.ProposeTimeout)
	var last error
	for {
		select {
		case <-n.quit:
			return nil, ErrClosed
		default:
		}
		changed := n.watch.wait()
		var (
			res []Result
			err error
		)
		addr, id := n.raft.LeaderWithID()
		switch {
		case n.raft.State() == raft.Leader && !n.cfg.Witness:
			res, _, err = n.proposeLocal(ctx, cmds, false)
		case id != "" && string(id) != n.cfg.NodeID:
			res, err = n.forward(ctx, string(id), string(addr), cmds)
		default:
			err = ErrNoQuorum
		}
		if err == nil || !notApplied(err) {
			return res, err
		}
		last = err
		if ctx.Err() != nil {
			return nil, fmt.Errorf("no leader took the proposal (%v): %w", last, ctx.Err())
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%w (for %v; last: %v)", ErrNoQuorum, n.cfg.ProposeTimeout, last)
		}
		// Wait for the leadership to change, briefly: the observer may
		// miss a change (it drops what it cannot pass on).
		t := time.NewTimer(20 * time.Millisecond)
		select {
		case <-changed:
		case <-t.C:
		case <-ctx.Done():
		case <-n.quit:
		}
		t.Stop()
	}
}

// forward sends cmds to the leader id at addr and waits for its answer.
// The wait ends, with ErrOutcomeUnknown, when the connection breaks or
// when this node has seen another leader, or none, for ProposeTimeout:
// the old leader's answer may never come.
func (n *Node) forward(ctx context.Context, id, addr string, cmds []store.Command) ([]Result, error) {
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
		if timeout <= 0 {
			return nil, fmt.Errorf("%w: %w", errNotSent, context.DeadlineExceeded)
		}
	}
	payload := encodeForward(timeout, cmds)
	defer clear(payload) // plaintext secrets
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	rc, err := n.peers.get(dctx, addr)
	cancel()
	if err != nil {
		return nil, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := n.watchLeader(wctx, id, cancel)
	defer stop()
	answer, err := rc.call(wctx, rpcPropose, payload)
	switch {
	case err == nil:
		res, index, err := decodeResults(answer, len(cmds))
		if err != nil {
			return nil, fmt.Errorf("%w: the leader's answer: %v", ErrOutcomeUnknown, err)
		}
		// Bounded by the leader watch too: cut off from the leader, this
		// node may not apply the entry before the partition heals.
		n.awaitApplied(wctx, index)
		return res, nil
	case errors.Is(err, errNotSent):
		return nil, err
	case errors.Is(err, errConnLost):
		return nil, fmt.Errorf("%w: %v", ErrOutcomeUnknown, err)
	case ctx.Err() != nil:
		return nil, fmt.Errorf("the proposal may still be applied: %w (%w)", ctx.Err(), store.ErrOutcomeUnknown)
	case wctx.Err() != nil:
		return nil, fmt.Errorf("%w: leader %s is no longer this node's leader", ErrOutcomeUnknown, id)
	}
	return nil, err
}

// dialTimeout bounds connecting to another node's cluster port.
const dialTimeout = 2 * time.Second

// watchLeader calls lost once this node has seen a leader other than id,
// or none, for ProposeTimeout, until ctx ends; stop ends the watch.
func (n *Node) watchLeader(ctx context.Context, id string, lost func()) (stop func()) {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		var since time.Time
		for {
			select {
			case <-ctx.Done():
				return
			case <-done:
				return
			case <-n.quit:
				lost()
				return
			case <-t.C:
			}
			if _, lid := n.raft.LeaderWithID(); string(lid) == id {
				since = time.Time{}
				continue
			}
			if since.IsZero() {
				since = time.Now()
			} else if time.Since(since) >= n.cfg.ProposeTimeout {
				lost()
				return
			}
		}
	}()
	return func() { close(done) }
}

// Forwarded proposal, the payload of an rpcPropose request: the time the
// proposer waits (milliseconds, 0: no limit), the commands
// (store.EncodeCommands, which never holds a plaintext secret) and, for
// each command, its Record.Secret (empty without one), each with its
// length as a uvarint.
func encodeForward(timeout time.Duration, cmds []store.Command) []byte {
	enc := store.EncodeCommands(cmds)
	size := len(enc) + 16 + 2*len(cmds)
	for i := range cmds {
		if r := cmds[i].Record; r != nil {
			size += len(r.Secret)
		}
	}
	buf := make([]byte, 0, size)
	buf = binary.AppendUvarint(buf, uint64(timeout.Milliseconds()))
	buf = binary.AppendUvarint(buf, uint64(len(enc)))
	buf = append(buf, enc...)
	buf = binary.AppendUvarint(buf, uint64(len(cmds)))
	for i := range cmds {
		var secret []byte
		if r := cmds[i].Record; r != nil {
			secret = r.Secret
		}
		buf = binary.AppendUvarint(buf, uint64(len(secret)))
		buf = append(buf, secret...)
	}
	return buf
}

var errBadFrame = errors.New("malformed forwarded proposal")

func decodeForward(b []byte) (time.Duration, []store.Command, error) {
	r := reader{b: b}
	ms := r.uvarint()
	enc := r.bytes()
	if r.err != nil {
		return 0, nil, errBadFrame
	}
	cmds, err := store.DecodeCommands(enc)
	if err != nil {
		return 0, nil, fmt.Errorf("%w: %w", errBadFrame, err)
	}
	if r.uvarint() != uint64(len(cmds)) {
		return 0, nil, errBadFrame
	}
	for i := range cmds {
		secret := r.bytes()
		if r.err != nil {
			return 0, nil, errBadFrame
		}
		if len(secret) > 0 {
			if cmds[i].Record == nil {
				return 0, nil, errBadFrame
			}
			cmds[i].Record.Secret = append([]byte(nil), secret...)
		}
	}
	if r.err != nil || len(r.b) != 0 {
		return 0, nil, errBadFrame
	}
	if ms > uint64(24*time.Hour/time.Millisecond) {
		ms = 0
	}
	return time.Duration(ms) * time.Millisecond, cmds, nil
}

// awaitApplied waits until this node's journal has applied the entry at
// index, so that a forwarded proposal's caller reads its own change here,
// or until ctx ends (forward's: also when this node has lost the leader)
// or the node shuts down: the change is the cluster's by then, only not
// yet this node's.
func (n *Node) awaitApplied(ctx context.Context, index uint64) {
	for {
		changed := n.applied.wait()
		if n.cfg.Journal.AppliedIndex() >= index {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		case <-n.quit:
			return
		}
	}
}

// encodeResults is an rpcPropose answer: the index of the entry that
// holds the commands, then for each command its Seq and its refusal
// (appendError).
func encodeResults(res []Result, index uint64) []byte {
	buf := binary.AppendUvarint(nil, index)
	buf = binary.AppendUvarint(buf, uint64(len(res)))
	for _, r := range res {
		buf = binary.AppendUvarint(buf, r.Seq)
		buf = appendError(buf, r.Err)
	}
	return buf
}

func decodeResults(b []byte, want int) ([]Result, uint64, error) {
	r := reader{b: b}
	index := r.uvarint()
	if n := r.uvarint(); n != uint64(want) {
		return nil, 0, fmt.Errorf("%d results for %d commands", n, want)
	}
	res := make([]Result, want)
	for i := range res {
		res[i].Seq = r.uvarint()
		res[i].Err = r.error()
	}
	if r.err != nil || len(r.b) != 0 {
		return nil, 0, errors.New("malformed results")
	}
	return res, index, nil
}

// reader reads uvarints and length-prefixed bytes; the first failure
// sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errBadFrame
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) byte() byte {
	if r.err != nil || len(r.b) == 0 {
		r.err = errBadFrame
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil || n > uint64(len(r.b)) {
		r.err = errBadFrame
		return nil
	}
	s := r.b[:n]
	r.b = r.b[n:]
	return s
}
