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
	// abandoned says the client abandoned the operation; its ID stays
	// reserved until the directory's final answer.
	abandoned bool
	// seq orders the operations as the client sent them.
	seq uint64
}

// timed reports whether the op timeout watches the operation: searches may
// legitimately run for ever, and the local subtree is in-process.
func (op pendingOp) timed() bool { return op.tag != ldapwire.TagSearchRequest && !op.local }

// awaited reports whether the gateway itself needs the directory's final
// answer to the operation: an intercepted write, whose Completion commits
// or aborts its journal record. Such an operation always finishes: the
// gateway does not relay an Abandon or a Cancel of it, holds a bind or an
// unbind until it is answered, and, when the client leaves, waits for
// its answer before closing the upstream connection.
func (op pendingOp) awaited() bool { return op.after != nil }

// errIDInUse refuses a request whose message ID an outstanding operation
// holds (RFC 4511 section 4.1.1.1).
var errIDInUse = errors.New("message ID is already in use")

// errTooManyAbandoned refuses an Abandon beyond the table's limit of
// abandoned operations still awaiting the directory's answer.
var errTooManyAbandoned = errors.New("too many abandoned operations await the directory's answer")

// opTable is a session's table of outstanding operations by message ID:
// what the upstream's answers are matched against. It bounds how many
// operations a session has outstanding (limit) and counts those the op
// timeout watches.
//
// Two rules keep an answer from being taken for another operation's (a
// forged bind success, a write committed on someone else's answer):
//   - an ID stays reserved until the directory's final answer for it,
//     even after the client abandons the operation, since the answer may
//     already be on its way; a request reusing it is refused. A completed
//     bind releases the IDs abandoned before it: the directory abandons
//     whatever is outstanding when a bind arrives, and RFC 4511 section
//     4.1.1.1 lets the client reuse them then;
//   - an answer finishes an operation only if its type is the one that
//     answers the request (a bind response a bind, a search done a
//     search, ...).
//
// An awaited operation (an intercepted write) abandoned by the client
// stays watched by the op timeout and is never released by a bind: the
// gateway did not relay the Abandon, so the directory's answer will come.
//
// The map and the count are guarded by the session's mu; reserve and
// unreserve, which may wait, are safe without it.
type opTable struct {
	ops       map[int64]pendingOp
	timed     int
	abandoned int // entries of ops abandoned and not yet answered
	awaiting  int // entries of ops that are awaited (see pendingOp.awaited)
	limit     int
	seq       uint64
	// slots holds one token per operation outstanding (not abandoned) or
	// about to be.
	slots chan struct{}
}

func newOpTable(limit int) *opTable {
	return &opTable{ops: make(map[int64]pendingOp), limit: limit, slots: make(chan struct{}, limit)}
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
// still reserved (outstanding, or abandoned and unanswered) is refused
// with errIDInUse; the room stays reserved.
func (t *opTable) add(id int64, op pendingOp) (firstTimed bool, err error) {
	if _, dup := t.ops[id]; dup {
		return false, errIDInUse
	}
	t.seq++
	op.seq, op.abandoned = t.seq, false
	t.ops[id] = op
	if op.awaited() {
		t.awaiting++
	}
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

// finish removes the operation under id that a final response of type
// respTag answers, and frees its room. An answer of another type finishes
// nothing: it is not this operation's.
func (t *opTable) finish(id int64, respTag byte) (pendingOp, bool) {
	op, ok := t.ops[id]
	if !ok || ldapwire.ResponseTag(op.tag) != respTag {
		return pendingOp{}, false
	}
	t.remove(id, op)
	if op.tag == ldapwire.TagBindRequest {
		for aid, aop := range t.ops {
			if aop.abandoned && !aop.awaited() && aop.seq < op.seq {
				t.remove(aid, aop)
			}
		}
	}
	return op, true
}

func (t *opTable) remove(id int64, op pendingOp) {
	delete(t.ops, id)
	if op.awaited() {
		t.awaiting--
	}
	if op.abandoned {
		t.abandoned--
		if op.timed() && op.awaited() {
			t.timed--
		}
		return
	}
	if op.timed() {
		t.timed--
	}
	t.unreserve()
}

// abandon marks the operation under id abandoned by the client. Its room
// is freed and the op timeout stops watching it, since the directory
// sends nothing more for an operation it did abandon; its ID stays
// reserved until an answer does come. An awaited operation stays watched:
// its Abandon is not relayed, so its answer must come. It reports whether id was
// outstanding; beyond limit abandoned operations it refuses with
// errTooManyAbandoned, and the caller ends the session.
func (t *opTable) abandon(id int64) (bool, error) {
	op, ok := t.ops[id]
	if !ok || op.abandoned {
		return false, nil
	}
	if t.abandoned >= t.limit {
		return false, errTooManyAbandoned
	}
	op.abandoned = true
	t.ops[id] = op
	t.abandoned++
	if op.timed() && !op.awaited() {
		t.timed--
	}
	t.unreserve()
	return true, nil
}

// len counts the outstanding operations the client still waits for (not
// those it abandoned).
func (t *opTable) len() int { return len(t.ops) - t.abandoned }

// watching reports whether an outstanding operation is watched by the op
// timeout.
func (t *opTable) watching() bool { return t.timed > 0 }

// awaitingAnswers counts the awaited operations (intercepted writes) the
// directory has not answered yet, abandoned ones included.
func (t *opTable) awaitingAnswers() int { return t.awaiting }

// drain empties the table, freeing the room of every operation, and
// returns what was outstanding, abandoned operations included.
func (t *opTable) drain() map[int64]pendingOp {
	ops := t.ops
	t.ops = make(map[int64]pendingOp)
	t.timed, t.abandoned, t.awaiting = 0, 0, 0
	for _, op := range ops {
		if !op.abandoned {
			t.unreserve()
		}
	}
	return ops
}
