package gateway

import (
	"context"
	"errors"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// pendingOp is an operation relayed upstream and not yet finished.
type pendingOp struct {
	tag            byte
	start          time.Time
	local          bool // answered by the gateway's own subtree
	bindDN         string
	saslMechanism  string
	passwordModify bool
	after          Completion
}

// timed reports whether the op timeout watches the operation: searches may
// legitimately run for ever, and the local subtree is in-process.
func (op pendingOp) timed() bool { return op.tag != ldapwire.TagSearchRequest && !op.local }

// errIDInUse refuses a request whose message ID an outstanding operation
// holds (RFC 4511 section 4.1.1.1).
var errIDInUse = errors.New("message ID is already in use")

// opTable is a session's table of outstanding operations by message ID:
// what the upstream's answers are matched against. It bounds how many
// operations a session has outstanding (limit) and counts those the op
// timeout watches.
//
// The map and the count are guarded by the session's mu; reserve and
// unreserve, which may wait, are safe without it.
type opTable struct {
	ops   map[int64]pendingOp
	timed int
	// slots holds one token per operation outstanding or about to be.
	slots chan struct{}
}

func newOpTable(limit int) *opTable {
	return &opTable{ops: make(map[int64]pendingOp), slots: make(chan struct{}, limit)}
}

// reserve takes room for one more operation. When the table is full it
// calls beforeWait (to flush requests whose answers will make room) and
// waits (backpressure on the client) until there is room or ctx ends.
func (t *opTable) reserve(ctx context.Context, beforeWait func()) bool {
	select {
	case t.slots <- struct{}{}:
		return true
	default:
	}
	if beforeWait != nil {
		beforeWait()
	}
	select {
	case t.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// unreserve gives back room taken by reserve and not used by add.
func (t *opTable) unreserve() { <-t.slots }

// add registers op under id, on room taken by reserve. It reports whether
// op is the first the op timeout watches (the caller then arms it). An ID
// already outstanding is refused with errIDInUse; the room stays reserved.
func (t *opTable) add(id int64, op pendingOp) (firstTimed bool, err error) {
	if _, dup := t.ops[id]; dup {
		return false, errIDInUse
	}
	t.ops[id] = op
	if op.timed() {
		t.timed++
		firstTimed = t.timed == 1
	}
	return firstTimed, nil
}

// lookup returns the operation outstanding under id.
func (t *opTable) lookup(id int64) (pendingOp, bool) {
	op, ok := t.ops[id]
	return op, ok
}

// finish removes the operation under id, answered by the upstream's final
// response, and frees its room.
func (t *opTable) finish(id int64) (pendingOp, bool) {
	op, ok := t.ops[id]
	if !ok {
		return pendingOp{}, false
	}
	delete(t.ops, id)
	if op.timed() {
		t.timed--
	}
	t.unreserve()
	return op, true
}

// abandon forgets the operation under id, which the client abandoned: the
// directory sends nothing more for an abandoned operation.
func (t *opTable) abandon(id int64) (pendingOp, bool) { return t.finish(id) }

// len counts the outstanding operations.
func (t *opTable) len() int { return len(t.ops) }

// watching reports whether an outstanding operation is watched by the op
// timeout.
func (t *opTable) watching() bool { return t.timed > 0 }

// drain empties the table, freeing the room of every operation, and
// returns what was outstanding.
func (t *opTable) drain() map[int64]pendingOp {
	ops := t.ops
	t.ops = make(map[int64]pendingOp)
	t.timed = 0
	for range ops {
		t.unreserve()
	}
	return ops
}
