package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/ldapgate/ldapgate/store"
)

// Every error of a cluster that cannot take a proposal now wraps
// store.ErrUnavailable: the gateway answers those with LDAP's
// "unavailable" and does not relay the write.
// Errors callers may test with errors.Is.
var (
	// ErrNotLeader: only the leader takes proposals of its own (see
	// NotLeaderError); Node.Propose forwards them to the leader.
	ErrNotLeader = fmt.Errorf("this node is not the cluster's leader: %w", store.ErrUnavailable)
	// ErrNoQuorum: no leader is known, the cluster has no quorum now.
	ErrNoQuorum = fmt.Errorf("the cluster has no leader, no quorum of its nodes is reachable: %w", store.ErrUnavailable)
	// ErrLeadershipLost: the leader lost its leadership before a quorum
	// stored the entry. The change is not applied now; a later leader
	// that holds the entry may still apply it (a Prepare's proposer
	// aborts it by its token, see store.PrepareToken).
	ErrLeadershipLost = fmt.Errorf("leadership lost before a quorum stored the change: %w (%w)", store.ErrUnavailable, store.ErrOutcomeUnknown)
	// ErrOutcomeUnknown: a proposal reached the leader, but its answer did
	// not come back (the connection broke, the leader changed). As with
	// ErrLeadershipLost, it may still be applied.
	ErrOutcomeUnknown = fmt.Errorf("the proposal reached the leader but its outcome is unknown: %w (%w)", store.ErrUnavailable, store.ErrOutcomeUnknown)
	// ErrClosed: the node is shut down.
	ErrClosed = fmt.Errorf("cluster node is shut down: %w", store.ErrUnavailable)
	// ErrWitness: a witness neither takes proposals of its own, nor
	// delivers.
	ErrWitness = fmt.Errorf("this node is a witness: %w", store.ErrUnavailable)
)

// NotLeaderError is a proposal made on a node that is not the leader. It
// names the leader, when one is known, for the proposal to go there.
type NotLeaderError struct {
	LeaderID, LeaderAddr string
}

func (e *NotLeaderError) Error() string {
	return fmt.Sprintf("this node is not the cluster's leader (the leader is %s at %s)", e.LeaderID, e.LeaderAddr)
}

// Is makes errors.Is(err, ErrNotLeader) and errors.Is(err,
// store.ErrUnavailable) true.
func (e *NotLeaderError) Is(target error) bool {
	return target == ErrNotLeader || target == store.ErrUnavailable
}

// An error crosses the network as a code and its message; the code
// re-creates the sentinel it wrapped, so that errors.Is works on the
// receiving side: this package's errors by clusterCodes, store's by
// store.RefusalCode and RefusalError. The codes travel between nodes of
// different versions: never change one.
var clusterCodes = [...]struct {
	code string
	err  error
}{
	{"not-leader", ErrNotLeader},
	{"no-quorum", ErrNoQuorum},
	{"leadership-lost", ErrLeadershipLost},
	{"outcome-unknown", ErrOutcomeUnknown},
	{"node-closed", ErrClosed},
	{"witness", ErrWitness},
}

// errorCode is the code of the sentinel err wraps ("" for none).
func errorCode(err error) string {
	for _, c := range clusterCodes {
		if errors.Is(err, c.err) {
			return c.code
		}
	}
	return store.RefusalCode(err)
}

// errorOf re-creates an error from its code and message.
func errorOf(code, msg string) error {
	for _, c := range clusterCodes {
		if c.code == code {
			return &remoteError{msg: msg, sentinel: c.err}
		}
	}
	return store.RefusalError(code, msg)
}

// remoteError is an error of this package that came over the network:
// its message, and the sentinel its code names.
type remoteError struct {
	msg      string
	sentinel error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.sentinel }

// appendError appends err: a flag byte (0: no error, nothing follows),
// then its code and its message, each with its length.
func appendError(buf []byte, err error) []byte {
	if err == nil {
		return append(buf, 0)
	}
	buf = append(buf, 1)
	buf = appendString(buf, errorCode(err))
	return appendString(buf, err.Error())
}

func (r *reader) error() error {
	if r.byte() == 0 {
		return nil
	}
	code := string(r.bytes())
	return errorOf(code, string(r.bytes()))
}

func appendString(buf []byte, s string) []byte {
	buf = binary.AppendUvarint(buf, uint64(len(s)))
	return append(buf, s...)
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
