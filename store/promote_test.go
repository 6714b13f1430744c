package store

import (
	"context"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// A batch of changes applied with ApplyAll leaves the same copy as the
// changes applied one by one, repeats are ignored, and a gap fails the
// changes after it.
func TestApplyAllBatchEqualsSource(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = newFakeClock().Now // Stats (compared) measure ages with it
	src := openTest(t, dir, o)
	ctx := context.Background()
	for i := range 20 {
		r := accountRecord("uid=u" + string(rune('a'+i)) + ",ou=people,dc=example,dc=org")
		if i%3 == 0 {
			r.Secret = []byte("pw-" + string(rune('a'+i)))
		}
		seq := mustPrepareCommit(t, src, r, "")
		if i%4 == 0 {
			if err := src.Drop(ctx, seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	evs := feedUntil(t, src, 0, func(ev Event) bool { return ev.Type == EventReady })
	dst := openFollower(t, src)
	if err := dst.Feed().ApplyAll(ctx, evs); err != nil {
		t.Fatalf("apply the snapshot: %v", err)
	}
	// More changes, fed as a batch with an overlap (repeats are ignored).
	before := src.Position()
	for i := range 5 {
		mustPrepareCommit(t, src, accountRecord("uid=late"+string(rune('a'+i))+",ou=people,dc=example,dc=org"), "")
	}
	evs = feedUntil(t, src, before-1, func(ev Event) bool { return ev.Pos == src.Position() })
	if err := dst.Feed().ApplyAll(ctx, evs); err != nil {
		t.Fatalf("apply a batch with overlap: %v", err)
	}
	assertSameJournal(t, src, dst)
	if dst.Position() != src.Position() {
		t.Fatalf("follower at %d, source at %d", dst.Position(), src.Position())
	}

	// A gap: the change after it fails too, and the copy stays as it was.
	mustPrepareCommit(t, src, accountRecord("uid=gap,ou=people,dc=example,dc=org"), "")
	mustPrepareCommit(t, src, accountRecord("uid=gap2,ou=people,dc=example,dc=org"), "")
	tail := feedUntil(t, src, dst.Position(), func(ev Event) bool { return ev.Pos == src.Position() })
	pos := dst.Position()
	if err := dst.Feed().ApplyAll(ctx, tail[1:]); err == nil {
		t.Fatal("a batch that does not follow the copy was applied")
	}
	if dst.Position() != pos {
		t.Fatalf("position moved from %d to %d after a refused batch", pos, dst.Position())
	}
}

// A follower's copy reopened as a normal journal (a standby taking over)
// prepares, commits and delivers, numbers its changes after the copied
// ones, and feeds a new follower that ends identical: the primary's role
// passes over without a conversion step.
func TestFollowerCopyReopenedAsPrimary(t *testing.T) {
	srcDir := t.TempDir()
	so := testOptions(srcDir)
	so.Now = newFakeClock().Now
	src := openTest(t, srcDir, so)
	ctx := context.Background()
	var seqs []uint64
	for i := range 6 {
		r := accountRecord("uid=p" + string(rune('a'+i)) + ",ou=people,dc=example,dc=org")
		r.Secret = []byte("secret-" + string(rune('a'+i)))
		seqs = append(seqs, mustPrepareCommit(t, src, r, ""))
	}
	prepared, err := src.Prepare(ctx, accountRecord("uid=inflight,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	o := testOptions(dir)
	o.KeyFile = src.opts.KeyFile
	o.Now = so.Now
	o.Follower = true
	copyDir := filepath.Join(dir, "journal")
	follower, err := Open(copyDir, o)
	if err != nil {
		t.Fatal(err)
	}
	stop := follow(t, src, follower)
	waitFor(t, "the follower to catch up", 10*time.Second, func() bool { return follower.Position() == src.Position() })
	stop()
	wantPos := follower.Position()
	if err := follower.Close(); err != nil {
		t.Fatal(err)
	}

	o.Follower = false
	promoted, err := Open(copyDir, o)
	if err != nil {
		t.Fatalf("reopen the copy as a primary: %v", err)
	}
	t.Cleanup(func() { promoted.Close() })
	if promoted.Position() != wantPos {
		t.Fatalf("promoted journal at %d, copy was at %d", promoted.Position(), wantPos)
	}
	// The write whose outcome the old primary never learnt is still prepared.
	left, err := promoted.Prepared()
	if err != nil || len(left) != 1 || left[0].Seq != prepared {
		t.Fatalf("prepared after promotion: %v %v; want record %d", left, err, prepared)
	}
	if err := promoted.Commit(ctx, prepared, ""); err != nil {
		t.Fatal(err)
	}
	next := mustPrepareCommit(t, promoted, accountRecord("uid=after,ou=people,dc=example,dc=org"), "")
	if next <= prepared {
		t.Fatalf("new record numbered %d, not after the copied %d", next, prepared)
	}
	// Delivery runs, with the copied secrets readable.
	var mu sync.Mutex
	got := map[uint64]string{}
	startRun(t, promoted, 2, func(_ context.Context, r *Record) error {
		mu.Lock()
		got[r.Seq] = string(r.Secret)
		mu.Unlock()
		return nil
	})
	for _, seq := range append(seqs, prepared, next) {
		waitState(t, promoted, seq, StateDelivered)
	}
	mu.Lock()
	if got[seqs[0]] != "secret-a" {
		t.Errorf("copied secret delivered as %q", got[seqs[0]])
	}
	mu.Unlock()

	// The old primary's successor feeds a new follower.
	again := openFollower(t, promoted)
	follow(t, promoted, again)
	waitFor(t, "the new follower to catch up", 10*time.Second, func() bool { return again.Position() == promoted.Position() })
	assertSameJournal(t, promoted, again)
}
