package gateway

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/internal/ldapwire"
)

// addOp reserves room and adds an operation, failing the test if either
// is refused.
func addOp(t *testing.T, tab *opTable, id int64, tag byte) {
	t.Helper()
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatalf("no room for operation %d", id)
	}
	if _, err := tab.add(id, pendingOp{tag: tag}); err != nil {
		t.Fatalf("add %d: %v", id, err)
	}
}

func TestOpTableAddLookupFinish(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	addOp(t, tab, 2, ldapwire.TagModifyRequest)
	if op, ok := tab.lookup(2); !ok || op.tag != ldapwire.TagModifyRequest {
		t.Fatalf("lookup 2: %+v %v", op, ok)
	}
	if _, ok := tab.lookup(3); ok {
		t.Fatal("lookup of an ID never added succeeded")
	}
	if op, _, ok := tab.finish(1, ldapwire.TagSearchDone, false); !ok || op.tag != ldapwire.TagSearchRequest {
		t.Fatalf("finish 1: %+v %v", op, ok)
	}
	if _, _, ok := tab.finish(1, ldapwire.TagSearchDone, false); ok {
		t.Fatal("an operation finished twice")
	}
	if tab.len() != 1 {
		t.Fatalf("%d outstanding, want 1", tab.len())
	}
	// A finished ID may be used again.
	addOp(t, tab, 1, ldapwire.TagBindRequest)
}

func TestOpTableRefusesAnIDInUse(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 7, ldapwire.TagSearchRequest)
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if _, err := tab.add(7, pendingOp{tag: ldapwire.TagBindRequest}); !errors.Is(err, errIDInUse) {
		t.Fatalf("second add of 7: %v, want errIDInUse", err)
	}
	tab.unreserve()
	if op, _ := tab.lookup(7); op.tag != ldapwire.TagSearchRequest {
		t.Fatalf("the refused request replaced the outstanding one: %+v", op)
	}
}

// The limit holds the next request back (backpressure) until an answer
// makes room; beforeWait runs first, to flush what will be answered.
func TestOpTableLimit(t *testing.T) {
	tab := newOpTable(2)
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	addOp(t, tab, 2, ldapwire.TagSearchRequest)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	flushed := false
	if tab.reserve(ctx, func() { flushed = true }, 0, nil) {
		t.Fatal("room beyond the limit")
	}
	if !flushed {
		t.Fatal("beforeWait did not run before waiting")
	}
	got := make(chan bool)
	go func() { got <- tab.reserve(context.Background(), nil, 0, nil) }()
	tab.finish(1, ldapwire.TagSearchDone, false)
	select {
	case ok := <-got:
		if !ok {
			t.Fatal("reserve failed after room was made")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("reserve still waits after an operation finished")
	}
}

// The op timeout watches writes, binds and the like, not searches nor the
// gateway's own subtree.
func TestOpTableWatching(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	if tab.watching() {
		t.Fatal("a search is watched by the op timeout")
	}
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(2, pendingOp{tag: ldapwire.TagCompareRequest, local: true}); first || tab.watching() {
		t.Fatal("a local compare is watched by the op timeout")
	}
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(3, pendingOp{tag: ldapwire.TagModifyRequest}); !first || !tab.watching() {
		t.Fatal("a modify is not watched, or not reported as the first watched")
	}
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(4, pendingOp{tag: ldapwire.TagBindRequest}); first {
		t.Fatal("the second watched operation reported as the first")
	}
	tab.finish(3, ldapwire.TagModifyResponse, false)
	tab.finish(4, ldapwire.TagBindResponse, false)
	if tab.watching() {
		t.Fatal("still watching after the watched operations finished")
	}
}

func TestOpTableDrain(t *testing.T) {
	tab := newOpTable(2)
	addOp(t, tab, 1, ldapwire.TagModifyRequest)
	addOp(t, tab, 2, ldapwire.TagSearchRequest)
	ops := tab.drain()
	if len(ops) != 2 || tab.len() != 0 || tab.watching() {
		t.Fatalf("drained %d, %d left, watching %v", len(ops), tab.len(), tab.watching())
	}
	// Draining freed the room of both.
	addOp(t, tab, 3, ldapwire.TagSearchRequest)
	addOp(t, tab, 4, ldapwire.TagSearchRequest)
}

// An abandoned operation frees its room at once, but its ID stays
// reserved until the directory's answer: a request reusing it is refused,
// and the late answer still finishes the abandoned operation (its
// Completion learns the outcome), not the new request.
func TestOpTableAbandonedIDStaysReserved(t *testing.T) {
	tab := newOpTable(1)
	addOp(t, tab, 2, ldapwire.TagExtendedRequest)
	if released, ok := tab.abandon(2); !ok || released != nil {
		t.Fatalf("abandon of an outstanding operation: %v %v", ok, released)
	}
	if released, ok := tab.abandon(6); ok || released != nil {
		t.Fatalf("abandon of an unknown ID: %v %v", ok, released)
	}
	if tab.len() != 0 || tab.watching() {
		t.Fatalf("an abandoned operation still counts: %d outstanding, watching %v", tab.len(), tab.watching())
	}
	// Its room is free...
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room after an abandon")
	}
	// ...but not its ID.
	if _, err := tab.add(2, pendingOp{tag: ldapwire.TagBindRequest}); !errors.Is(err, errIDInUse) {
		t.Fatalf("reuse of an abandoned ID before its answer: %v, want errIDInUse", err)
	}
	op, _, ok := tab.finish(2, ldapwire.TagExtendedResponse, false)
	if !ok || !op.abandoned || op.tag != ldapwire.TagExtendedRequest {
		t.Fatalf("the late answer: %+v %v", op, ok)
	}
	if _, err := tab.add(2, pendingOp{tag: ldapwire.TagBindRequest}); err != nil {
		t.Fatalf("reuse after the answer: %v", err)
	}
	if tab.len() != 1 {
		t.Fatalf("%d outstanding, want 1", tab.len())
	}
}

// An answer finishes an operation only if it is the type that answers it.
func TestOpTableAnswerMustMatchTheRequest(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 2, ldapwire.TagBindRequest)
	for _, wrong := range []byte{ldapwire.TagExtendedResponse, ldapwire.TagSearchDone, ldapwire.TagModifyResponse, ldapwire.TagCompareResponse} {
		if _, _, ok := tab.finish(2, wrong, false); ok {
			t.Fatalf("a bind finished by 0x%02x", wrong)
		}
	}
	if _, ok := tab.lookup(2); !ok {
		t.Fatal("a wrong answer removed the bind")
	}
	if _, _, ok := tab.finish(2, ldapwire.TagBindResponse, false); !ok {
		t.Fatal("the bind response did not finish the bind")
	}
}

// A completed bind releases the IDs abandoned before it (the directory
// abandons what is outstanding when a bind arrives), not those abandoned
// after it was sent.
func TestOpTableBindReleasesEarlierAbandonedIDs(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	if _, ok := tab.abandon(1); !ok {
		t.Fatal("abandon 1")
	}
	addOp(t, tab, 2, ldapwire.TagBindRequest)
	addOp(t, tab, 3, ldapwire.TagSearchRequest)
	if _, ok := tab.abandon(3); !ok {
		t.Fatal("abandon 3")
	}
	_, released, ok := tab.finish(2, ldapwire.TagBindResponse, false)
	if !ok {
		t.Fatal("bind not finished")
	}
	if _, ok := tab.lookup(1); ok {
		t.Error("an ID abandoned before the bind is still reserved after it")
	}
	if len(released) != 1 || released[0].id != 1 {
		t.Errorf("released %+v, want operation 1", released)
	}
	if op, ok := tab.lookup(3); !ok || !op.abandoned {
		t.Error("an ID abandoned after the bind was sent was released by it")
	}
}

// A bind's answer also releases the operations sent before it that the
// client did not abandon (slapd abandons them on the bind and never
// answers them): they free their room, the op timeout stops watching
// them, and the writes among them are returned for their Completions.
// Operations on the subtree's connection are not the directory's: the
// bind leaves them.
func TestOpTableBindReleasesEverythingBeforeIt(t *testing.T) {
	tab := newOpTable(4)
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if _, err := tab.add(2, pendingOp{tag: ldapwire.TagModifyRequest, after: func(context.Context, Result) {}}); err != nil {
		t.Fatal(err)
	}
	if !tab.reserve(context.Background(), nil, 0, nil) {
		t.Fatal("no room")
	}
	if _, err := tab.add(3, pendingOp{tag: ldapwire.TagSearchRequest, local: true}); err != nil {
		t.Fatal(err)
	}
	addOp(t, tab, 4, ldapwire.TagBindRequest)
	if tab.binding() == nil {
		t.Fatal("a bind is outstanding but binding() is nil")
	}
	done := tab.binding()
	_, released, ok := tab.finish(4, ldapwire.TagBindResponse, false)
	if !ok {
		t.Fatal("bind not finished")
	}
	select {
	case <-done:
	default:
		t.Fatal("binding() not closed when the bind was answered")
	}
	ids := map[int64]bool{}
	for _, r := range released {
		ids[r.id] = true
	}
	if len(released) != 2 || !ids[1] || !ids[2] {
		t.Fatalf("released %+v, want operations 1 and 2", released)
	}
	if tab.len() != 1 || tab.watching() {
		t.Fatalf("%d outstanding (want the subtree's 1), watching %v", tab.len(), tab.watching())
	}
	for range 3 { // the room of the released operations and the bind's is free
		if !tab.reserve(context.Background(), nil, 0, nil) {
			t.Fatal("room not freed")
		}
	}
}

// An answer finishes an operation only if it came from the connection the
// request was sent on: a late SearchDone from the subtree does not finish
// a search on the directory's connection that reuses the ID.
func TestOpTableAnswerMustComeFromItsConnection(t *testing.T) {
	tab := newOpTable(2)
	addOp(t, tab, 5, ldapwire.TagSearchRequest)
	if _, _, ok := tab.finish(5, ldapwire.TagSearchDone, true); ok {
		t.Fatal("an answer from the subtree's connection finished a directory search")
	}
	if _, _, ok := tab.finish(5, ldapwire.TagSearchDone, false); !ok {
		t.Fatal("the directory's answer did not finish its search")
	}
}

// Abandoned operations the directory never answers do not end the
// session: beyond maxAbandoned the oldest is released (returned for its
// Completion), and the client goes on searching and abandoning.
func TestOpTableAbandonLimit(t *testing.T) {
	tab := newOpTable(2)
	max := tab.maxAbandoned()
	id := int64(1)
	for range max {
		addOp(t, tab, id, ldapwire.TagSearchRequest)
		if released, ok := tab.abandon(id); !ok || released != nil {
			t.Fatalf("abandon %d: %v %v", id, ok, released)
		}
		id++
	}
	for range 10 * max {
		addOp(t, tab, id, ldapwire.TagSearchRequest)
		released, ok := tab.abandon(id)
		if !ok || released == nil || released.id != id-int64(max) {
			t.Fatalf("abandon %d beyond the cap: %v %+v, want operation %d released", id, ok, released, id-int64(max))
		}
		id++
	}
	if tab.abandoned != max || len(tab.ops) != max {
		t.Fatalf("%d abandoned, %d in the table; want %d", tab.abandoned, len(tab.ops), max)
	}
	if len(tab.abandonedOrder) > 2*max+16 {
		t.Fatalf("the abandoned order grew to %d", len(tab.abandonedOrder))
	}
	// The released ID is free again; the drain returns the abandoned
	// ones, and frees only the room they still held (none).
	addOp(t, tab, 1, ldapwire.TagSearchRequest)
	if ops := tab.drain(); len(ops) != max+1 {
		t.Fatalf("drained %d, want %d", len(ops), max+1)
	}
	addOp(t, tab, 4, ldapwire.TagSearchRequest)
	addOp(t, tab, 5, ldapwire.TagSearchRequest)
}
