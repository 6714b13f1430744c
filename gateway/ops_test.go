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
	if !tab.reserve(context.Background(), nil) {
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
	if op, ok := tab.finish(1); !ok || op.tag != ldapwire.TagSearchRequest {
		t.Fatalf("finish 1: %+v %v", op, ok)
	}
	if _, ok := tab.finish(1); ok {
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
	if !tab.reserve(context.Background(), nil) {
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
	if tab.reserve(ctx, func() { flushed = true }) {
		t.Fatal("room beyond the limit")
	}
	if !flushed {
		t.Fatal("beforeWait did not run before waiting")
	}
	got := make(chan bool)
	go func() { got <- tab.reserve(context.Background(), nil) }()
	tab.finish(1)
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
	if !tab.reserve(context.Background(), nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(2, pendingOp{tag: ldapwire.TagCompareRequest, local: true}); first || tab.watching() {
		t.Fatal("a local compare is watched by the op timeout")
	}
	if !tab.reserve(context.Background(), nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(3, pendingOp{tag: ldapwire.TagModifyRequest}); !first || !tab.watching() {
		t.Fatal("a modify is not watched, or not reported as the first watched")
	}
	if !tab.reserve(context.Background(), nil) {
		t.Fatal("no room")
	}
	if first, _ := tab.add(4, pendingOp{tag: ldapwire.TagBindRequest}); first {
		t.Fatal("the second watched operation reported as the first")
	}
	tab.finish(3)
	tab.finish(4)
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

func TestOpTableAbandon(t *testing.T) {
	tab := newOpTable(1)
	addOp(t, tab, 5, ldapwire.TagSearchRequest)
	if _, ok := tab.abandon(5); !ok {
		t.Fatal("abandon of an outstanding operation failed")
	}
	if _, ok := tab.abandon(6); ok {
		t.Fatal("abandon of an unknown ID succeeded")
	}
	// Its room is free.
	addOp(t, tab, 6, ldapwire.TagSearchRequest)
}
