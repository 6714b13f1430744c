package store

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// A Prepare proposed to a cluster may fail with its outcome unknown: the
// leader that took it died, or its answer was lost, after the entry may
// have reached the log. The gateway refused the write (it was never
// relayed), but a record the directory never saw may still be prepared on
// every node, holding the line of its entry's later records until the
// leader settles it as an orphan. Only its proposer could abort it, and
// it never learnt its sequence number.
//
// So the proposer gives each Prepare a random token (Record.Token) and,
// when the Prepare's outcome is unknown, proposes CmdAbortToken with it:
// applied, it aborts the prepared record holding the token, or, when
// there is none yet, leaves a tombstone so that the Prepare is refused if
// it is applied later (a stale proposal appended after the abort). The
// tombstones are part of the journal's state like its term: the same on
// every node, written with the counters, carried by snapshots.

// PrepareToken names one proposed Prepare (the zero token: none).
type PrepareToken [16]byte

// NewPrepareToken returns a random token.
func NewPrepareToken() (PrepareToken, error) {
	var t PrepareToken
	if _, err := rand.Read(t[:]); err != nil {
		return t, fmt.Errorf("prepare token: %w", err)
	}
	return t, nil
}

// IsZero reports whether t is no token.
func (t PrepareToken) IsZero() bool { return t == PrepareToken{} }

func (t PrepareToken) String() string { return hex.EncodeToString(t[:]) }

// UnknownPrepareError is a replicated Prepare whose outcome is unknown:
// its record may still be prepared on every node (see AbortToken).
type UnknownPrepareError struct {
	Token PrepareToken
	Err   error
}

func (e *UnknownPrepareError) Error() string { return e.Err.Error() }
func (e *UnknownPrepareError) Unwrap() error { return e.Err }

// ErrOutcomeUnknown: a proposal may or may not have been applied (it was
// sent, its answer did not come). A Proposer wraps it in such failures.
var ErrOutcomeUnknown = errors.New("journal: the proposal's outcome is unknown")

// ErrAborted: a Prepare whose token was aborted (CmdAbortToken) before it
// was applied.
var ErrAborted = errors.New("its proposer aborted it")

const (
	// tombstoneTTL is how long a tombstone is kept after its abort, on
	// the clock of the commands that abort (every node prunes alike). A
	// Prepare can be applied after its abort only if the leader that took
	// it appends it after the abort, in the same term: a proposal waits in
	// a leader's pipeline for at most its catching up and Raft's queue
	// (readyTimeout and enqueueTimeout in package cluster, seconds), and
	// entries a deposed leader appends later are never committed. Ten
	// minutes is far beyond that, and beyond clock skew between leaders;
	// a Prepare that still came after its tombstone expired would only
	// be left prepared, to be settled as an orphan, as before tokens.
	tombstoneTTL = 10 * time.Minute
	// maxTombstones bounds the tombstones kept at once (those of a burst
	// of aborts within one TTL); past it the soonest to expire go first.
	maxTombstones = 1024
)

// tombstone is a token aborted before its Prepare was applied.
type tombstone struct {
	token   PrepareToken
	expires int64 // Unix nanoseconds, on the aborting command's clock
}

// tombstoned reports whether ts holds token t.
func tombstoned(ts []tombstone, t PrepareToken) bool {
	for i := range ts {
		if ts[i].token == t {
			return true
		}
	}
	return false
}

// withTombstone returns ts, less the tombstones expired at now, with t's
// added (or renewed). ts is not changed: the writer's settled state may
// share it.
func withTombstone(ts []tombstone, t PrepareToken, now time.Time) []tombstone {
	at := now.UnixNano()
	out := make([]tombstone, 0, len(ts)+1)
	for _, s := range ts {
		if s.expires >= at && s.token != t {
			out = append(out, s)
		}
	}
	out = append(out, tombstone{token: t, expires: now.Add(tombstoneTTL).UnixNano()})
	if len(out) > maxTombstones {
		slices.SortStableFunc(out, func(a, b tombstone) int {
			if c := cmpInt64(a.expires, b.expires); c != 0 {
				return c
			}
			return bytes.Compare(a.token[:], b.token[:])
		})
		out = out[len(out)-maxTombstones:]
	}
	return out
}

func cmpInt64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// encodeTombstones is the stored form of ts: their count, then each
// token and expiry (big-endian).
func encodeTombstones(ts []tombstone) []byte {
	buf := binary.AppendUvarint(make([]byte, 0, 8+24*len(ts)), uint64(len(ts)))
	for _, s := range ts {
		buf = append(buf, s.token[:]...)
		buf = binary.BigEndian.AppendUint64(buf, uint64(s.expires))
	}
	return buf
}

// getTombstones reads the stored tombstones (none: nil).
func getTombstones(txn *badger.Txn) ([]tombstone, error) {
	item, err := txn.Get(metaAborted)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var ts []tombstone
	err = item.Value(func(v []byte) error {
		ts, err = decodeTombstones(v)
		return err
	})
	return ts, err
}

func decodeTombstones(b []byte) ([]tombstone, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > maxTombstones || uint64(len(b)-k) != 24*n {
		return nil, fmt.Errorf("tombstones: %w", errCorrupt)
	}
	b = b[k:]
	ts := make([]tombstone, n)
	for i := range ts {
		copy(ts[i].token[:], b[:16])
		ts[i].expires = int64(binary.BigEndian.Uint64(b[16:24]))
		b = b[24:]
	}
	return ts, nil
}

// applyAbortToken applies CmdAbortToken: the prepared record holding the
// token is aborted; with none, the token is tombstoned, and the
// tombstones expired at the command's time are dropped.
func (b *batch) applyAbortToken(c *Command) error {
	if c.Token.IsZero() {
		return errors.New("abort by token without a token")
	}
	rec, err := b.preparedWithToken(c.Token)
	if err != nil {
		return err
	}
	if rec != nil {
		return b.abortRecord(rec)
	}
	b.aborted = withTombstone(b.aborted, c.Token, c.Time)
	b.metaSet = true
	return nil
}

// preparedWithToken finds the prepared record holding token t as this
// batch sees it (nil: none). The candidates are the records the index
// holds prepared (as of the settled batches), those of the batches still
// on their way to the disk and this batch's own: together every record
// that may be prepared now. Each is read as the batch sees it, so the
// answer is the journal's state, the same on every node.
func (b *batch) preparedWithToken(t PrepareToken) (*Record, error) {
	seen := map[uint64]bool{}
	check := func(seq uint64) (*Record, error) {
		if seen[seq] {
			return nil, nil
		}
		seen[seq] = true
		r, err := b.get(seq)
		if errors.Is(err, ErrNotFound) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if r.State == StatePrepared && r.Token == t {
			return r, nil
		}
		return nil, nil
	}
	var cands []uint64
	for seq, r := range b.local {
		if r != nil && r.Token == t {
			cands = append(cands, seq)
		}
	}
	for seq, e := range b.recent.m {
		if e.rec != nil && e.rec.Token == t {
			cands = append(cands, seq)
		}
	}
	if b.preparedSeqs != nil {
		cands = append(cands, b.preparedSeqs()...)
	}
	for _, seq := range cands {
		r, err := check(seq)
		if r != nil || err != nil {
			return r, err
		}
	}
	return nil, nil
}
