package store

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLoneWriterDoesNotWaitForCompany: a writer alone never waits for
// others to share its sync, however long Options.GroupCommitDelay is.
func TestLoneWriterDoesNotWaitForCompany(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = time.Hour
	j := openTest(t, dir, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i := range 20 {
		writeAlone(ctx, t, j, i, "company it did not have")
	}
	if got := j.w.stats.syncs.Load(); got != 20 {
		t.Errorf("durable batches = %d, want one per Prepare (20)", got)
	}
}

// TestOpenWritesMakeAPrepareWaitForCompany: while another write is open
// (prepared, waiting for the directory), a Prepare waits for one more
// (Options.GroupCommitDelay), and the Prepare that comes shares its sync
// and ends the wait.
func TestOpenWritesMakeAPrepareWaitForCompany(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = 10 * time.Second
	j := openTest(t, dir, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := j.Prepare(ctx, accountRecord("uid=a,dc=x")); err != nil {
		t.Fatal(err) // a stays open: never committed
	}
	before := j.w.stats.syncs.Load()

	// b is queued as Prepare queues it, so that the test knows when the
	// writer has taken it.
	rec, err := j.recs.preparedCopy(accountRecord("uid=b,dc=x"))
	if err != nil {
		t.Fatal(err)
	}
	b := &mutation{done: make(chan error, 1), run: func(b *batch) error {
		b.seq++
		rec.Seq, rec.Time = b.seq, b.now
		return b.putRecord(nil, rec, nil, nil)
	}}
	if err := j.w.queue(ctx, b); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b taken", 10*time.Second, func() bool { return len(j.w.reqs) == 0 })
	// Proving that something does not happen takes a wait: b alone would
	// be settled in microseconds.
	select {
	case err := <-b.done:
		t.Fatalf("b settled alone (%v) while a was open", err)
	case <-time.After(200 * time.Millisecond):
	}

	sent := time.Now()
	if _, err := j.Prepare(ctx, accountRecord("uid=c,dc=x")); err != nil {
		t.Fatal(err)
	}
	if err := <-b.done; err != nil {
		t.Fatal(err)
	}
	if took := time.Since(sent); took > 5*time.Second {
		t.Errorf("c took %v: the wait did not end when it came", took)
	}
	if got := j.w.stats.syncs.Load() - before; got != 1 {
		t.Errorf("durable batches for b and c = %d, want 1", got)
	}
}

// TestOrphanStopsCountingAsOpen: a record left prepared (its settle
// failed: it stays so until the next start) is an open write only for a
// while; after that a lone writer's Prepares no longer wait for company.
func TestOrphanStopsCountingAsOpen(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = time.Hour
	o.openHorizon = 50 * time.Millisecond
	j := openTest(t, dir, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := j.Prepare(ctx, accountRecord("uid=orphan,dc=x")); err != nil {
		t.Fatal(err) // never settled
	}
	// The horizon is what is tested: let it pass.
	time.Sleep(2 * o.openHorizon)
	for i := range 5 {
		writeAlone(ctx, t, j, i, "the orphan's company")
	}
}

// writeAlone prepares and commits write i while no other write of the
// test is open, and fails the test if it takes 10 s: a group commit
// waiting for what (the company it would wait for).
func writeAlone(ctx context.Context, t *testing.T, j *Journal, i int, what string) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		seq, err := j.Prepare(ctx, accountRecord(fmt.Sprintf("uid=u%d,dc=x", i)))
		if err == nil {
			err = j.Commit(ctx, seq, "")
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("write %d waited for %s", i, what)
	}
}

// TestLazyChangesRideWithDurableBatch: a lazy change that comes while a
// durable batch (a Prepare's) waits for the previous sync is written and
// synced with it, not in a batch of its own after it.
func TestLazyChangesRideWithDurableBatch(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = -1
	written := make(chan struct{}, 16)
	release := make(chan struct{})
	var holding atomic.Bool
	o.beforeSync = func() {
		if holding.Load() {
			written <- struct{}{}
			<-release
		}
	}
	j := openTest(t, dir, o)
	var once sync.Once
	letGo := func() { once.Do(func() { holding.Store(false); close(release) }) }
	t.Cleanup(letGo) // before the journal's Close, which waits for the batch
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	holding.Store(true)
	batches := j.w.stats.batches.Load()
	prepared := make(chan error, 1)
	go func() {
		_, err := j.Prepare(ctx, accountRecord("uid=a,dc=x"))
		prepared <- err
	}()
	<-written // a's batch is written, its sync held
	// b (durable) and c (lazy) are queued as Prepare queues its change, so
	// that the test knows when the writer has run each in its batch: b's
	// batch then waits for a's sync.
	put := func(dn string, lazy bool) *mutation {
		rec, err := j.recs.preparedCopy(accountRecord(dn))
		if err != nil {
			t.Fatal(err)
		}
		ran := make(chan struct{})
		m := &mutation{lazy: lazy, done: make(chan error, 1), run: func(b *batch) error {
			defer close(ran)
			b.seq++
			rec.Seq, rec.Time = b.seq, b.now
			return b.putRecord(nil, rec, nil, nil)
		}}
		if err := j.w.queue(ctx, m); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not run in 10s: not taken into a batch while the one before waited for a sync", dn)
		}
		return m
	}
	b := put("uid=b,dc=x", false)
	c := put("uid=c,dc=x", true)
	letGo()
	for _, done := range []chan error{prepared, b.done, c.done} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := j.w.stats.batches.Load() - batches; got != 2 {
		t.Errorf("%d batches for a, b and c: want 2 (a's, then b's with c)", got)
	}
}

// TestRidingCommitEndsTheWaitForCompany: a write whose Commit rides with a
// durable batch (see absorb) no longer makes that batch wait for company
// (Options.GroupCommitDelay): its caller waits for the batch itself and
// cannot write again before it is settled.
func TestRidingCommitEndsTheWaitForCompany(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = time.Hour
	written := make(chan struct{}, 16)
	release := make(chan struct{})
	var holding atomic.Bool
	o.beforeSync = func() {
		if holding.Load() {
			written <- struct{}{}
			<-release
		}
	}
	j := openTest(t, dir, o)
	var once sync.Once
	letGo := func() { once.Do(func() { holding.Store(false); close(release) }) }
	t.Cleanup(letGo) // before the journal's Close, which waits for the batch
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// a's batch (alone: no wait) is held in its sync; b's batch waits
	// for it and takes a's Commit along.
	holding.Store(true)
	type prepared struct {
		seq uint64
		err error
	}
	aDone := make(chan prepared, 1)
	go func() {
		seq, err := j.Prepare(ctx, accountRecord("uid=a,dc=x"))
		aDone <- prepared{seq, err}
	}()
	<-written
	queue := func(what string, lazy bool, run func(b *batch) error) *mutation {
		ran := make(chan struct{})
		m := &mutation{lazy: lazy, done: make(chan error, 1), run: func(b *batch) error {
			defer close(ran)
			return run(b)
		}}
		if err := j.w.queue(ctx, m); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ran:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s not run in 10s", what)
		}
		return m
	}
	rec, err := j.recs.preparedCopy(accountRecord("uid=b,dc=x"))
	if err != nil {
		t.Fatal(err)
	}
	b := queue("b's Prepare", false, func(b *batch) error {
		b.seq++
		rec.Seq, rec.Time = b.seq, b.now
		return b.putRecord(nil, rec, nil, nil)
	})
	aSeq := rec.Seq - 1 // a's, the batch before
	commitA := queue("a's Commit", true, func(b *batch) error {
		old, err := b.get(aSeq)
		if err != nil {
			return err
		}
		committed := *old
		committed.State = StateCommitted
		return b.putRecord(old, &committed, nil, nil)
	})
	letGo()
	if p := <-aDone; p.err != nil || p.seq != aSeq {
		t.Fatalf("a's Prepare: %d, %v: want %d", p.seq, p.err, aSeq)
	}
	// Open beyond b's batch: nothing (a is settled in it). Without seeing
	// that, the batch waits an hour for a's next Prepare.
	for what, m := range map[string]*mutation{"b's Prepare": b, "a's Commit": commitA} {
		select {
		case err := <-m.done:
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s waited for company that could not come", what)
		}
	}
}
