package store

import (
	"context"
	"slices"
	"sync"
	"testing"
)

// With a Coverer, one successful delivery settles the committed modifies
// queued right behind it for the same entry; a record with a secret, a
// record of another kind of change, one the deliverer will not have
// covered, and anything after them are delivered on their own, in order.
func TestCoveringDeliveryTakesAlongTheModifiesBehindIt(t *testing.T) {
	j, _ := newTestJournal(t)
	const a = "uid=a,ou=people,dc=example,dc=org"
	const b = "uid=b,ou=people,dc=example,dc=org"
	password := func(dn string) *Record {
		r := accountRecord(dn)
		r.Op, r.Changes, r.Secret = OpPassword, nil, []byte("n3w-pw")
		return r
	}
	rename := func(dn string) *Record {
		r := accountRecord(dn)
		r.Op, r.NewDN, r.Changes = OpRename, "uid=a2,ou=people,dc=example,dc=org", nil
		return r
	}
	disable := func(dn string) *Record {
		r := accountRecord(dn)
		r.Changes = []Change{{Op: "replace", Attr: "pwdAccountLockedTime", Values: []string{"000001010000Z"}}}
		return r
	}
	seqs := []uint64{
		mustPrepareCommit(t, j, accountRecord(a), "key-a"), // delivered
		mustPrepareCommit(t, j, accountRecord(a), "key-a"), // taken along
		mustPrepareCommit(t, j, accountRecord(a), "key-a"), // taken along
		mustPrepareCommit(t, j, password(a), "key-a"),      // delivered: it carries a password
		mustPrepareCommit(t, j, accountRecord(a), "key-a"), // taken along
		mustPrepareCommit(t, j, disable(a), "key-a"),       // delivered: refused by covers
		mustPrepareCommit(t, j, accountRecord(a), "key-a"), // taken along
		mustPrepareCommit(t, j, rename(a), "key-a"),        // delivered: another history
		mustPrepareCommit(t, j, accountRecord(b), "key-b"), // delivered
	}
	delivered := runRecording(t, j, func(r *Record) bool { return r.Changes[0].Attr != "pwdAccountLockedTime" })
	for _, seq := range seqs {
		waitState(t, j, seq, StateDelivered)
	}
	got := delivered()
	slices.Sort(got)
	want := []uint64{seqs[0], seqs[3], seqs[5], seqs[7], seqs[8]}
	if !slices.Equal(got, want) {
		t.Fatalf("deliveries made: %v, want %v (the others taken along)", got, want)
	}
}

// A record still prepared holds the line: what is committed behind it is
// not in the state a delivery before it reads, so it is not taken along.
func TestCoveringDeliveryStopsAtAPreparedRecord(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	const a = "uid=a,ou=people,dc=example,dc=org"
	first := mustPrepareCommit(t, j, accountRecord(a), "key-a")
	pending, err := j.Prepare(ctx, accountRecord(a))
	if err != nil {
		t.Fatal(err)
	}
	last := mustPrepareCommit(t, j, accountRecord(a), "key-a")
	delivered := runRecording(t, j, func(*Record) bool { return true })
	waitState(t, j, first, StateDelivered)
	if r, err := j.Get(last); err != nil || r.State != StateCommitted {
		t.Fatalf("record %d behind a prepared one: %v, %v; want it committed, waiting", last, r, err)
	}
	if err := j.Commit(ctx, pending, "key-a"); err != nil {
		t.Fatal(err)
	}
	waitState(t, j, last, StateDelivered)
	if got, want := delivered(), []uint64{first, pending}; !slices.Equal(got, want) {
		t.Fatalf("deliveries made: %v, want %v (the last record taken along by the second)", got, want)
	}
}

// covering makes a Coverer of a function pair.
type covering struct {
	DeliverFunc
	covers func(*Record) bool
}

func (c covering) Covers(r *Record) bool { return c.covers(r) }

// runRecording runs covering delivery with one worker and returns what
// lists the records it was called for, in order.
func runRecording(t *testing.T, j *Journal, covers func(*Record) bool) func() []uint64 {
	var mu sync.Mutex
	var seqs []uint64
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- j.Run(ctx, 1, covering{DeliverFunc(func(_ context.Context, r *Record) error {
			mu.Lock()
			seqs = append(seqs, r.Seq)
			mu.Unlock()
			return nil
		}), covers})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	return func() []uint64 {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(seqs)
	}
}

// A long backlog of one entry drains in bounded runs: each delivery takes
// along at most maxCovered records, so its transaction stays small.
func TestCoveringDeliveryTakesAlongABoundedRun(t *testing.T) {
	j, _ := newTestJournal(t)
	const a = "uid=a,ou=people,dc=example,dc=org"
	n := 2*maxCovered + 10
	seqs := make([]uint64, n)
	for i := range seqs {
		seqs[i] = mustPrepareCommit(t, j, accountRecord(a), "key-a")
	}
	delivered := runRecording(t, j, func(*Record) bool { return true })
	waitState(t, j, seqs[n-1], StateDelivered)
	got := delivered()
	want := []uint64{seqs[0], seqs[maxCovered+1], seqs[2*maxCovered+2]}
	if !slices.Equal(got, want) {
		t.Fatalf("deliveries made: %v, want %v", got, want)
	}
	for _, seq := range seqs {
		if r, err := j.Get(seq); err != nil || r.State != StateDelivered {
			t.Fatalf("record %d: %v, %v", seq, r, err)
		}
	}
}
