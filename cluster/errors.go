package cluster

import (
	"context"
	"errors"
	"fmt"

	"github.com/ldapgate/ldapgate/store"
)

// errUnavailable stands for store.ErrUnavailable until package store has
// it: every error of a cluster that cannot take a write now wraps it.
var errUnavailable = errors.New("the gateway cluster is unavailable")

// Errors callers may test with errors.Is.
var (
	// ErrNotLeader: only the leader takes proposals of its own (see
	// NotLeaderError); Node.Propose forwards them to the leader.
	ErrNotLeader = fmt.Errorf("this node is not the cluster's leader: %w", errUnavailable)
	// ErrNoQuorum: no leader is known, the cluster has no quorum now.
	ErrNoQuorum = fmt.Errorf("the cluster has no leader, no quorum of its nodes is reachable: %w", errUnavailable)
	// ErrLeadershipLost: the leader lost its leadership before a quorum
	// stored the entry. The change is not applied now; a later leader
	// that holds the entry may still apply it (a prepared record the
	// directory never saw is settled as after a crash).
	ErrLeadershipLost = fmt.Errorf("leadership lost before a quorum stored the change: %w", errUnavailable)
	// ErrOutcomeUnknown: a proposal reached the leader, but its answer did
	// not come back (the connection broke, the leader changed). As with
	// ErrLeadershipLost, it may still be applied.
	ErrOutcomeUnknown = fmt.Errorf("the proposal reached the leader but its outcome is unknown: %w", errUnavailable)
	// ErrClosed: the node is shut down.
	ErrClosed = fmt.Errorf("cluster node is shut down: %w", errUnavailable)
	// ErrWitness: a witness neither takes proposals of its own, nor
	// delivers.
	ErrWitness = fmt.Errorf("this node is a witness: %w", errUnavailable)
)

// NotLeaderError is a proposal made on a node that is not the leader. It
// names the leader, when one is known, for the proposal to go there.
type NotLeaderError struct {
	LeaderID, LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("this node is not the cluster's leader (the leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) and errors.Is(err, ErrUnavailable)
// true.
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNotLeader || target == errUnavailable
}

// An error crosses the network as a code and its message; the code
// re-creates the sentinel it wrapped, so that errors.Is works on the
// receiving side. The codes travel between nodes of different versions:
// never reuse or renumber one; add new ones at the end.
var errorCodes = []error{
	1:  nil, // an error without a known sentinel
	2:  ErrNotLeader,
	3:  ErrNoQuorum,
	4:  ErrLeadershipLost,
	5:  ErrOutcomeUnknown,
	6:  ErrClosed,
	7:  ErrWitness,
	8:  store.ErrNotFound,
	9:  store.ErrState,
	10: store.ErrTooLarge,
	11: store.ErrSeq,
	12: store.ErrStaleTerm,
	13: store.ErrReplicated,
	14: store.ErrNoKey,
	15: store.ErrClosed,
	16: store.ErrInFlight,
	17: context.DeadlineExceeded,
	18: context.Canceled,
	19: errUnavailable,
}

// errorCode is the code of err's sentinel: the first one of errorCodes
// that err wraps, 1 for none, 0 for no error.
func errorCode(err error) byte {
	if err == nil {
		return 0
	}
	for code, sentinel := range errorCodes {
		if sentinel != nil && errors.Is(err, sentinel) {
			return byte(code)
		}
	}
	return 1
}

// remoteError is an error that came over the network: its message, and
// the sentinel its code names.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// errorOf re-creates an error from its code and message (nil for code 0).
func errorOf(code byte, msg string) error {
	if code == 0 {
		return nil
	}
	var sentinel error
	if int(code) < len(errorCodes) {
		sentinel = errorCodes[code]
	}
	return &remoteError{msg: msg, sentinel: sentinel}
}

// notApplied reports whether err means that a proposal certainly did not
// reach the log, so that it may be made again: no leader, the node asked
// was not (or no longer) the leader before taking it, a witness leads, the
// leader was shutting down (its pipeline fails only proposals it has not
// handed to Raft with ErrClosed).
func notApplied(err error) bool {
	return errors.Is(err, ErrNotLeader) || errors.Is(err, ErrNoQuorum) || errors.Is(err, ErrWitness) ||
		errors.Is(err, ErrClosed) || errors.Is(err, errNotSent)
}

// errNotSent: the request never left this node whole (the dial or the
// write failed): the other end cannot have acted on it.
var errNotSent = errors.New("not sent")
