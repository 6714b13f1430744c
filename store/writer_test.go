package store

import (
	"context"
	"fmt"
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
