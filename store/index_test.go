package store

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIndexMatchesRebuild changes records at random — Prepares with and
// without an entry key, renames, Commits that name the key, aborts,
// deliveries, dead records and their retries — and checks after each
// change that the index kept up step by step is the one built afresh from
// the records as they stand (as Open builds it): the same histories, in
// the same order, and the same records free to go. A passive index (a
// follower's) takes the same changes and is activated half way: until
// then it makes no order tokens (lazy), and the tokens it would make must
// be the step-by-step index's; from then on it must be the index kept
// step by step too. With and without delivery names
// (Options.DeliveryNames), which a Commit may change (one naming the
// account's name).
func TestIndexMatchesRebuild(t *testing.T) {
	t.Run("names=none", func(t *testing.T) { testIndexMatchesRebuild(t, nil) })
	t.Run("names=some", func(t *testing.T) {
		testIndexMatchesRebuild(t, func(r *Record) []string {
			// The name, and one of the DN's first RDN (and of a rename's
			// new DN's), as DeliveryNames gives for a rename.
			names := []string{r.Name, strings.ToUpper(r.DN[4:5])}
			if r.NewDN != "" {
				names = append(names, r.NewDN[4:5])
			}
			return names
		})
	})
}

func testIndexMatchesRebuild(t *testing.T, names func(*Record) []string) {
	rng := rand.New(rand.NewPCG(1, 2))
	dns := []string{"uid=a,dc=x", "UID=A,DC=X", "uid=b,dc=x", "uid=c,dc=x", "uid=d,dc=x"}
	keys := []string{"", "", "k1", "k2", "k3"}
	accountNames := []string{"", "", "n1", "N1", "n2"}
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	x := newIndex(names)
	passive := newPassiveIndex(names)
	put := func(r *Record) {
		x.put(r, nil)
		passive.put(r, nil)
	}
	live := map[uint64]*Record{}
	var next uint64
	pick := func(states ...State) *Record {
		var seqs []uint64
		for seq, r := range live {
			if slices.Contains(states, r.State) {
				seqs = append(seqs, seq)
			}
		}
		if len(seqs) == 0 {
			return nil
		}
		slices.Sort(seqs)
		return live[seqs[rng.IntN(len(seqs))]]
	}
	for step := range 5000 {
		switch op := rng.IntN(6); {
		case op <= 1 || len(live) == 0:
			next++
			r := accountRecord(dns[rng.IntN(len(dns))])
			r.Seq, r.Time, r.State, r.EntryKey = next, at, StatePrepared, keys[rng.IntN(len(keys))]
			if rng.IntN(5) == 0 {
				r.Op, r.NewDN = OpRename, dns[rng.IntN(len(dns))]
			}
			live[r.Seq] = r
			put(r)
		case op == 2:
			if old := pick(StatePrepared); old != nil {
				r := old.next()
				r.State, r.NextAttempt = StateCommitted, at.Add(time.Duration(step)*time.Second)
				// A Commit's entry key replaces the Prepare's (see
				// commitRecord).
				if k := keys[rng.IntN(len(keys))]; k != "" {
					r.EntryKey = k
				}
				if n := accountNames[rng.IntN(len(accountNames))]; n != "" && r.Name == "" {
					r.Name = n
				}
				live[r.Seq] = r
				put(r)
			}
		case op == 3:
			if old := pick(StatePrepared, StateDead); old != nil {
				delete(live, old.Seq)
				x.remove(old.Seq)
				passive.remove(old.Seq)
			}
		case op == 4:
			if old := pick(StateCommitted); old != nil {
				r := old.next()
				r.State, r.DeliveredAt = StateDelivered, at
				delete(live, r.Seq)
				put(r)
			}
		default:
			if old := pick(StateCommitted, StateDead); old != nil {
				r := old.next()
				if old.State == StateDead {
					r.State = StateCommitted
				} else {
					r.State = StateDead
				}
				live[r.Seq] = r
				put(r)
			}
		}
		fresh := newIndex(names)
		seqs := make([]uint64, 0, len(live))
		for seq := range live {
			seqs = append(seqs, seq)
		}
		slices.Sort(seqs)
		for _, seq := range seqs {
			fresh.put(live[seq], nil)
		}
		if got, want := x.histories(), fresh.histories(); !reflect.DeepEqual(got, want) {
			t.Fatalf("step %d: histories\n%v\nwant\n%v", step, got, want)
		}
		for _, seq := range seqs {
			e, f := x.recs[seq], fresh.recs[seq]
			if e == nil || !slices.Equal(e.tokens, f.tokens) || e.state != f.state || x.eligible(e) != fresh.eligible(f) {
				t.Fatalf("step %d: record %d: %+v, want %+v", step, seq, e, f)
			}
			// Nothing is taken off the heap here: every record free to
			// go must be on it, due at its next attempt.
			if x.eligible(e) && !(e.inHeap && e.heapAt.Equal(e.next)) {
				t.Fatalf("step %d: record %d may go but is not on the ready heap", step, seq)
			}
		}
		if len(x.recs) != len(live) {
			t.Fatalf("step %d: %d records in the index, want %d", step, len(x.recs), len(live))
		}
		if step == 2500 {
			passive.activate()
		}
		if !passive.passive {
			if got, want := passive.histories(), x.histories(); !reflect.DeepEqual(got, want) {
				t.Fatalf("step %d: histories of the activated index\n%v\nwant\n%v", step, got, want)
			}
		}
		for _, seq := range seqs {
			e, p := x.recs[seq], passive.recs[seq]
			if p != nil && p.lazy != passive.passive {
				t.Fatalf("step %d: record %d in the index passive=%v: lazy=%v", step, seq, passive.passive, p.lazy)
			}
			if p == nil || !slices.Equal(e.tokens, p.madeTokens()) || e.state != p.state || !e.next.Equal(p.next) ||
				(!passive.passive && (x.eligible(e) != passive.eligible(p) || passive.eligible(p) && !(p.inHeap && p.heapAt.Equal(p.next)))) {
				t.Fatalf("step %d: record %d in the passive index: %+v, want %+v", step, seq, p, e)
			}
		}
		if len(passive.recs) != len(live) {
			t.Fatalf("step %d: %d records in the passive index, want %d", step, len(passive.recs), len(live))
		}
	}
	if passive.passive || len(passive.ready) == 0 {
		t.Fatalf("the activated index has no ready heap")
	}
}

// madeTokens is e's order tokens, made now if lazy (e is left as it is).
func (e *entry) madeTokens() []string {
	if !e.lazy {
		return e.tokens
	}
	c := *e
	c.makeTokens()
	return c.tokens
}

// TestIndexReadyHeapStaysBounded: a node that never delivers (a cluster's
// follower) still lets go of the records the leader delivered.
func TestIndexReadyHeapStaysBounded(t *testing.T) {
	x := newIndex(nil)
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for seq := uint64(1); seq <= 20000; seq++ {
		r := accountRecord("uid=a,dc=x")
		r.Seq, r.Time, r.State = seq, at, StatePrepared
		x.put(r, nil)
		c := r.next()
		c.State, c.EntryKey, c.NextAttempt = StateCommitted, "k", at
		x.put(c, nil)
		d := c.next()
		d.State, d.DeliveredAt = StateDelivered, at
		x.put(d, nil)
	}
	if len(x.recs) != 0 || len(x.queues) != 0 {
		t.Fatalf("%d records, %d histories left", len(x.recs), len(x.queues))
	}
	if n := len(x.ready); n > minStaleItems+1 {
		t.Fatalf("%d items on the ready heap of an index of no record", n)
	}
}

// waiting: a committed record of the key's history waits; a prepared one
// alone does not (its write may still fail: Journal.Settling says it is
// on its way), nor does a passive index.
func TestIndexWaiting(t *testing.T) {
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	rec := func(seq uint64, key string, st State) *Record {
		r := accountRecord("cn=g,dc=x")
		r.Seq, r.Time, r.State, r.EntryKey = seq, at, st, key
		return r
	}
	x, passive := newIndex(nil), newPassiveIndex(nil)
	for _, r := range []*Record{rec(1, "k1", StatePrepared), rec(2, "k2", StateCommitted)} {
		x.put(r, nil)
		passive.put(r, nil)
	}
	x.put(rec(3, "k4", StatePrepared), nil)
	x.put(rec(4, "k4", StateCommitted), nil)
	for key, want := range map[string]bool{"k1": false, "k2": true, "k3": false, "k4": true} {
		if got := x.waiting(key); got != want {
			t.Errorf("waiting(%s) = %v, want %v", key, got, want)
		}
		if passive.waiting(key) {
			t.Errorf("passive: waiting(%s)", key)
		}
	}
	// unfinished tells the prepared records apart (Journal.Settling).
	for key, want := range map[string][2]bool{"k1": {false, true}, "k2": {true, false}, "k3": {}, "k4": {true, true}} {
		if c, p := x.unfinished(key); c != want[0] || p != want[1] {
			t.Errorf("unfinished(%s) = %v, %v, want %v", key, c, p, want)
		}
	}
}

// TestIndexLookupIsRecs: the index finds a record through lately as in
// recs, whatever the order of its changes and removals, and records that
// share a slot of lately (sequence numbers latelySize apart) stay apart.
func TestIndexLookupIsRecs(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	x := newPassiveIndex(nil)
	live := map[uint64]*Record{}
	const n = 3 * latelySize
	check := func(step int) {
		for seq := uint64(0); seq <= n+1; seq++ {
			if got, want := x.lookup(seq), x.recs[seq]; got != want {
				t.Fatalf("step %d: lookup(%d) = %+v, want %+v", step, seq, got, want)
			}
			if (x.recs[seq] != nil) != (live[seq] != nil) {
				t.Fatalf("step %d: record %d in the index: %v, want %v", step, seq, x.recs[seq] != nil, live[seq] != nil)
			}
		}
	}
	var next uint64
	for step := range 20000 {
		switch op := rng.IntN(4); {
		case op == 0 && next < n:
			next++
			r := accountRecord(fmt.Sprintf("uid=u%d,dc=x", next))
			r.Seq, r.Time, r.State = next, at, StatePrepared
			live[r.Seq] = r
			x.put(r, nil)
		case op == 1 && next > 0:
			seq := 1 + uint64(rng.IntN(int(next)))
			if old := live[seq]; old != nil && old.State == StatePrepared {
				r := old.next()
				r.State, r.EntryKey = StateCommitted, fmt.Sprintf("k%d", seq)
				live[seq] = r
				x.put(r, nil)
				if x.lookup(seq).key != r.EntryKey {
					t.Fatalf("step %d: record %d not updated", step, seq)
				}
			}
		case op == 2 && next > 0:
			seq := 1 + uint64(rng.IntN(int(next)))
			if old := live[seq]; old != nil {
				delete(live, seq)
				if old.State == StateCommitted && rng.IntN(2) == 0 {
					r := old.next()
					r.State, r.DeliveredAt = StateDelivered, at
					x.put(r, nil)
				} else {
					x.remove(seq)
				}
			}
		}
		if step%1000 == 0 {
			check(step)
		}
	}
	check(20000)
}
