package store

import (
	"context"
	"fmt"
	"sync"
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
			t.Fatalf("write %d waited for company it did not have", i)
		}
	}
	if got := j.w.stats.syncs.Load(); got != 20 {
		t.Errorf("durable batches = %d, want one per Prepare (20)", got)
	}
}

// TestConcurrentWritersShareALaterSync: once writers are seen to come
// together (a durable batch took more than one Prepare), the next durable
// batch waits for more, and a Prepare sent while it waits shares its sync.
func TestConcurrentWritersShareALaterSync(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.GroupCommitDelay = 2 * time.Second
	var mu sync.Mutex
	var release chan struct{} // set: the next batch is held before its sync
	held := make(chan struct{}, 1)
	o.beforeSync = func() {
		mu.Lock()
		r := release
		release = nil
		mu.Unlock()
		if r != nil {
			held <- struct{}{}
			<-r
		}
	}
	j := openTest(t, dir, o)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs := make(chan error, 4)
	prepare := func(dn string) {
		_, err := j.Prepare(ctx, accountRecord(dn))
		errs <- err
	}
	wait := func(n int) {
		t.Helper()
		for range n {
			if err := <-errs; err != nil {
				t.Fatal(err)
			}
		}
	}

	// A batch held before its sync lets the next two Prepares gather in
	// one batch: company. (They may miss each other, then try again.)
	company := false
	for try := 0; try < 10 && !company; try++ {
		r := make(chan struct{})
		mu.Lock()
		release = r
		mu.Unlock()
		before := j.w.stats.syncs.Load()
		go prepare(fmt.Sprintf("uid=a%d,dc=x", try))
		<-held
		go prepare(fmt.Sprintf("uid=b%d,dc=x", try))
		go prepare(fmt.Sprintf("uid=c%d,dc=x", try))
		waitFor(t, "b and c taken", 10*time.Second, func() bool { return len(j.w.reqs) == 0 })
		close(r)
		wait(3)
		company = j.w.stats.syncs.Load()-before == 2
	}
	if !company {
		t.Fatal("concurrent Prepares never shared a batch")
	}

	// Now a Prepare alone waits for company, and one sent meanwhile joins it.
	before := j.w.stats.syncs.Load()
	go prepare("uid=d,dc=x")
	waitFor(t, "d taken", 10*time.Second, func() bool { return len(j.w.reqs) == 0 })
	go prepare("uid=e,dc=x")
	wait(2)
	if got := j.w.stats.syncs.Load() - before; got != 1 {
		t.Errorf("durable batches for d and e = %d, want 1", got)
	}
}
