package gateway

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// pendingOp is an operation relayed upstream and not yet finished.
type pendingOp struct {
	tag           byte
	start         time.Time
	local         bool // answered by the gateway's own subtree
	bindDN        string
	saslMechanism string
	// bindTicket is a bind's count in the failed-bind limiter, settled
	// by its answer.
	bindTicket     bindTicket
	passwordModify bool
	sendNow        bool // WriteRequest.SendNow
	after          Completion
	// strip names the response controls the interceptor asked for
	// (WriteRequest.Append), taken out of the answer the client gets.
	strip []string
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

// opTable is a session's table of outstanding operations by message ID:
// what the upstream's answers are matched against. It bounds how many
// operations a session has outstanding (limit) and counts those the op
// timeout watches.
//
// Three rules keep an answer from being taken for another operation's (a
// forged bind success, a write committed on someone else's answer):
//   - an ID stays reserved until the directory's final answer for it,
//     even after the client abandons the operation, since the answer may
//     already be on its way; a request reusing it is refused. A completed
//     bind releases every operation sent before it on the directory's
//     connection: the directory abandons whatever is outstanding when a
//     bind arrives (slapd answers none of it), and RFC 4511 section
//     4.2.1 lets the client reuse the IDs then. Abandoned operations the
//     directory never answers are bounded apart from the limit (see
//     maxAbandoned): beyond it the oldest is released;
//   - an answer finishes an operation only if its type is the one that
//     answers the request (a bind response a bind, a search done a
//     search, ...);
//   - and only if it came from the connection the request was sent on
//     (the directory's, or the gateway's own subtree's).
//
// An ID released without its answer (by a bind, or beyond maxAbandoned)
// may be reused by the client; a late answer for the old operation is
// then attributed to the new one only if it is of the new one's type.
//
// An awaited operation (an intercepted write) abandoned by the client
// stays watched by the op timeout and is never released by a bind nor
// beyond maxAbandoned: the gateway did not relay the Abandon, so the
// directory's answer will come.
//
// The map and the counts are guarded by the session's mu; reserve and
// unreserve, which may wait, are safe without it.
type opTable struct {
	ops       map[int64]pendingOp
	timed     int
	abandoned int // entries of ops abandoned and not yet answered
	awaiting  int // entries of ops that are awaited (see pendingOp.awaited)
	limit     int
	seq       uint64
	// abandonedOrder lists abandoned operations oldest first, to release
	// the oldest beyond maxAbandoned; entries answered since are skipped.
	abandonedOrder []opRef
	// binds counts the binds outstanding (not abandoned); bindDone is
	// closed when the last of them is answered or released.
	binds    int
	bindDone chan struct{}
	// slots holds one token per operation outstanding (not abandoned) or
	// about to be.
	slots chan struct{}
}

// opRef names one operation of the table: an ID, and the seq that tells
// it from a later operation reusing the ID.
type opRef struct {
	id  int64
	seq uint64
}

// releasedOp is an operation removed from the table without its answer:
// its Completion, if any, must learn that the outcome is unknown.
type releasedOp struct {
	id int64
	op pendingOp
}

// abandonedPerSlot sizes the cap on abandoned operations awaiting an
// answer that may never come, as a multiple of the table's limit. Clients
// that search and abandon (JNDI after a size limit, libldap on cancel) on
// one long-lived connection stay served: beyond the cap the oldest
// abandoned ID is released instead of the session ended.
const abandonedPerSlot = 4

func newOpTable(limit int) *opTable {
	return &opTable{ops: make(map[int64]pendingOp), limit: limit, slots: make(chan struct{}, limit)}
}

// maxAbandoned is how many abandoned operations keep their IDs reserved.
func (t *opTable) maxAbandoned() int { return abandonedPerSlot * t.limit }

// reserve takes room for one more operation. When the table is full it
// calls beforeWait (to flush requests whose answers will make room) and
// waits (backpressure on the client) until there is room or ctx ends;
// every interval (if positive) it asks stillWanted whether to go on
// waiting, so that a client gone meanwhile does not hold the session.
func (t *opTable) reserve(ctx context.Context, beforeWait func(), interval time.Duration, stillWanted func() bool) bool {
	select {
	case t.slots <- struct{}{}:
		return true
	default:
	}
	if beforeWait != nil {
		beforeWait()
	}
	var tick <-chan time.Time
	if interval > 0 && stillWanted != nil {
		ticker := time.NewTicker(interval)
		defer ticker.Stop()
		tick = ticker.C
	}
	for {
		select {
		case t.slots <- struct{}{}:
			return true
		case <-ctx.Done():
			return false
		case <-tick:
			if !stillWanted() {
				return false
			}
		}
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
	if op.tag == ldapwire.TagBindRequest {
		t.binds++
		if t.bindDone == nil {
			t.bindDone = make(chan struct{})
		}
	}
	return firstTimed, nil
}

// lookup returns the operation outstanding under id.
func (t *opTable) lookup(id int64) (pendingOp, bool) {
	op, ok := t.ops[id]
	return op, ok
}

// binding returns a channel closed once no bind is outstanding, or nil if
// none is now.
func (t *opTable) binding() <-chan struct{} {
	if t.binds == 0 {
		return nil
	}
	return t.bindDone
}

// finish removes the operation under id that a final response of type
// respTag, read from the local (subtree) connection or the directory's,
// answers, and frees its room. An answer of another type, or from the
// other connection, finishes nothing: it is not this operation's. A bind's
// answer also releases every operation sent before the bind on the
// directory's connection, which the directory abandoned on the bind;
// they are returned so that their Completions learn the outcome is
// unknown.
func (t *opTable) finish(id int64, respTag byte, local bool) (pendingOp, []releasedOp, bool) {
	op, ok := t.ops[id]
	if !ok || op.local != local || ldapwire.ResponseTag(op.tag) != respTag {
		return pendingOp{}, nil, false
	}
	t.remove(id, op)
	var released []releasedOp
	if op.tag == ldapwire.TagBindRequest && !op.local {
		for eid, eop := range t.ops {
			if !eop.local && eop.seq < op.seq {
				t.remove(eid, eop)
				released = append(released, releasedOp{eid, eop})
			}
		}
	}
	return op, released, true
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
	if op.tag == ldapwire.TagBindRequest {
		t.bindEnded()
	}
	t.unreserve()
}

// bindEnded counts one bind less outstanding.
func (t *opTable) bindEnded() {
	t.binds--
	if t.binds == 0 && t.bindDone != nil {
		close(t.bindDone)
		t.bindDone = nil
	}
}

// abandon marks the operation under id abandoned by the client. Its room
// is freed and the op timeout stops watching it, since the directory
// sends nothing more for an operation it did abandon; its ID stays
// reserved until an answer does come. An awaited operation stays watched:
// its Abandon is not relayed, so its answer must come. It reports whether
// id was outstanding. Beyond maxAbandoned, the oldest abandoned operation
// that is not awaited is released and returned (its Completion must run).
func (t *opTable) abandon(id int64) (released *releasedOp, ok bool) {
	op, ok := t.ops[id]
	if !ok || op.abandoned {
		return nil, false
	}
	if t.abandoned >= t.maxAbandoned() {
		released = t.releaseOldestAbandoned()
	}
	op.abandoned = true
	t.ops[id] = op
	t.abandoned++
	t.abandonedOrder = append(t.abandonedOrder, opRef{id, op.seq})
	t.compactAbandoned()
	if op.timed() && !op.awaited() {
		t.timed--
	}
	if op.tag == ldapwire.TagBindRequest {
		t.bindEnded()
	}
	t.unreserve()
	return released, true
}

// releaseOldestAbandoned removes the abandoned operation abandoned first.
func (t *opTable) releaseOldestAbandoned() *releasedOp {
	var kept []opRef
	for len(t.abandonedOrder) > 0 {
		ref := t.abandonedOrder[0]
		t.abandonedOrder = t.abandonedOrder[1:]
		if op, ok := t.ops[ref.id]; ok && op.abandoned && op.seq == ref.seq {
			if op.awaited() {
				// Its answer will come (its Abandon was not relayed): keep it
				// watched, and look further.
				kept = append(kept, ref)
				continue
			}
			t.abandonedOrder = append(kept, t.abandonedOrder...)
			t.remove(ref.id, op)
			t.compactAbandoned()
			return &releasedOp{ref.id, op}
		}
	}
	t.abandonedOrder = kept
	return nil
}

// compactAbandoned drops the entries of answered operations from
// abandonedOrder once they outnumber the live ones, so that it stays
// bounded by the cap (amortised: a pass at most every other append).
func (t *opTable) compactAbandoned() {
	if len(t.abandonedOrder) <= 2*t.abandoned+16 {
		return
	}
	live := t.abandonedOrder[:0]
	for _, ref := range t.abandonedOrder {
		if op, ok := t.ops[ref.id]; ok && op.abandoned && op.seq == ref.seq {
			live = append(live, ref)
		}
	}
	t.abandonedOrder = slices.Clip(live)
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
	return t.drainWhere(func(pendingOp) bool { return true })
}

// drainLocal removes the operations sent to the gateway's own subtree,
// when its connection is lost, and returns them.
func (t *opTable) drainLocal() map[int64]pendingOp {
	return t.drainWhere(func(op pendingOp) bool { return op.local })
}

func (t *opTable) drainWhere(match func(pendingOp) bool) map[int64]pendingOp {
	drained := make(map[int64]pendingOp)
	for id, op := range t.ops {
		if match(op) {
			t.remove(id, op)
			drained[id] = op
		}
	}
	if len(t.ops) == 0 {
		t.abandonedOrder = nil
	} else {
		t.compactAbandoned()
	}
	return drained
}
