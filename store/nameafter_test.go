package store

import (
	"context"
	"maps"
	"sync"
	"testing"
	"time"
)

// nameAfter: the Name of the record after seq, and after the records its
// delivery takes along, in its entry key's history; none for the last
// record, a record without a key, a follower without a Name, or a passive
// index (no histories).
func TestIndexNameAfter(t *testing.T) {
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	rec := func(seq uint64, key, name string) *Record {
		r := accountRecord("uid=a,dc=x")
		r.Seq, r.Time, r.State, r.EntryKey, r.Name = seq, at, StateCommitted, key, name
		return r
	}
	for _, passive := range []bool{false, true} {
		x := newIndex(nil)
		if passive {
			x = newPassiveIndex(nil)
		}
		x.put(rec(1, "k1", "alice"), nil)
		x.put(rec(2, "k2", "bob"), nil)
		x.put(rec(3, "k1", "tmp"), nil)
		x.put(rec(4, "", "carol"), nil)
		x.put(rec(5, "", "carol2"), nil)
		x.put(rec(6, "k1", "bob"), nil)
		x.put(rec(7, "k1", ""), nil)
		want := map[uint64]string{1: "tmp", 3: "bob"}
		if passive {
			want = map[uint64]string{}
		}
		for seq := uint64(1); seq <= 7; seq++ {
			got, ok := x.nameAfter(seq)
			if w, wok := want[seq]; got != w || ok != wok {
				t.Errorf("passive %v: nameAfter(%d) = %q, %v; want %q, %v", passive, seq, got, ok, w, wok)
			}
		}
		if passive {
			continue
		}
		// A delivery of 1 that takes 3 along: as of them, the entry is
		// named as 6 found it.
		x.recs[1].coveredTo = 3
		if got, ok := x.nameAfter(1); got != "bob" || !ok {
			t.Errorf("nameAfter(1), 3 taken along = %q, %v; want bob", got, ok)
		}
		// Taking 6 along too, the next record (7) does not know the name.
		x.recs[1].coveredTo = 6
		if got, ok := x.nameAfter(1); ok {
			t.Errorf("nameAfter(1), 3 and 6 taken along = %q, want none", got)
		}
	}
}

// Through the journal: a delivery asks, once it has read the entry, for
// its name as of the record; a covering delivery gets the name as of the
// last record it takes along (the Name of the one after them), and the
// last record of the entry none (its current name stands).
func TestJournalNameAfterPastWhatADeliveryTakesAlong(t *testing.T) {
	j, _ := newTestJournal(t)
	const a = "uid=a,ou=people,dc=example,dc=org"
	named := func(name string, secret bool) *Record {
		r := accountRecord(a)
		r.Name = name
		if secret {
			r.Op, r.Changes, r.Secret = OpPassword, nil, []byte("n3w-pw")
		}
		return r
	}
	seqs := []uint64{
		mustPrepareCommit(t, j, named("a", false), "key-a"), // delivered: as of it, "a2" (seq 4's Name)
		mustPrepareCommit(t, j, named("a", false), "key-a"), // taken along
		mustPrepareCommit(t, j, named("a", false), "key-a"), // taken along
		mustPrepareCommit(t, j, named("a2", true), "key-a"), // delivered: as of it, "a3"
		mustPrepareCommit(t, j, named("a3", true), "key-a"), // delivered: the last, none
	}
	var mu sync.Mutex
	asOf := map[uint64]string{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- j.Run(ctx, 1, covering{DeliverFunc(func(_ context.Context, r *Record) error {
			name, ok := j.NameAfter(r.Seq)
			if !ok {
				name = "(none)"
			}
			mu.Lock()
			asOf[r.Seq] = name
			mu.Unlock()
			return nil
		}), func(r *Record) bool { return len(r.Secret) == 0 }})
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	}()
	for _, seq := range seqs {
		waitState(t, j, seq, StateDelivered)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[uint64]string{seqs[0]: "a2", seqs[3]: "a3", seqs[4]: "(none)"}
	if !maps.Equal(asOf, want) {
		t.Errorf("names as of each delivery: %v, want %v", asOf, want)
	}
}

// renameAfter: the DN of the first rename after seq (and the records its
// delivery takes along) in its entry key's history, whether it is still
// prepared; none after the last rename, for a record without a key, or on
// a passive index.
func TestIndexRenameAfter(t *testing.T) {
	at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	rec := func(seq uint64, key, dn, newDN string, st State) *Record {
		r := accountRecord(dn)
		r.Seq, r.Time, r.State, r.EntryKey = seq, at, st, key
		if newDN != "" {
			r.Op, r.NewDN = OpRename, newDN
		}
		return r
	}
	type found struct {
		dn               string
		waiting, present bool
	}
	for _, passive := range []bool{false, true} {
		x := newIndex(nil)
		if passive {
			x = newPassiveIndex(nil)
		}
		x.put(rec(1, "k1", "uid=alice,dc=x", "", StateCommitted), nil)
		x.put(rec(2, "k1", "uid=alice,dc=x", "uid=tmp,dc=x", StateCommitted), nil)
		x.put(rec(3, "k2", "uid=bob,dc=x", "uid=alice,dc=x", StateCommitted), nil)
		x.put(rec(4, "k1", "uid=tmp,dc=x", "", StateCommitted), nil)
		x.put(rec(5, "k1", "uid=tmp,dc=x", "uid=carol,dc=x", StatePrepared), nil)
		x.put(rec(6, "", "uid=dave,dc=x", "uid=eve,dc=x", StateCommitted), nil)
		x.put(rec(7, "k1", "uid=carol,dc=x", "", StatePrepared), nil)
		want := map[uint64]found{
			1: {"uid=alice,dc=x", false, true},
			2: {"uid=tmp,dc=x", true, true},
			4: {"uid=tmp,dc=x", true, true},
		}
		if passive {
			want = map[uint64]found{}
		}
		for seq := uint64(1); seq <= 7; seq++ {
			dn, waiting, ok := x.renameAfter(seq)
			if got := (found{dn, waiting, ok}); got != want[seq] {
				t.Errorf("passive %v: renameAfter(%d) = %+v, want %+v", passive, seq, got, want[seq])
			}
		}
		if passive {
			continue
		}
		// A delivery that takes records along looks past them.
		x.recs[4].coveredTo = 5
		if dn, _, ok := x.renameAfter(4); ok {
			t.Errorf("renameAfter(4), 5 taken along = %q, want none", dn)
		}
	}
}
