package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// rawRecord is record seq as Badger holds it: its "r/" value decoded
// without its commit, and its "a/" value (found false: no "a/" key).
func rawRecord(t *testing.T, j *Journal, seq uint64) (r *Record, commit []byte, found bool) {
	t.Helper()
	err := j.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(numKey(prefixRecord, seq))
		if err != nil {
			return err
		}
		if r, err = itemRecord(item); err != nil {
			return err
		}
		item, err = txn.Get(numKey(prefixActive, seq))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		found = true
		commit, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		t.Fatalf("raw record %d: %v", seq, err)
	}
	return r, commit, found
}

// TestEveryReaderSeesADeltaCommit: a record whose Commit is stored beside
// it (prepared "r/", commit in "a/") is committed, with the Commit's entry
// key, name and due time, to every reader: Get, List (all, by state),
// Range, Prepared, Stats, and after a reopen the index (readIndex) and
// the delivery, which gets the secret and then erases it with the commit.
func TestEveryReaderSeesADeltaCommit(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Now = clock.Now
	j := openTest(t, dir, opts)
	ctx := context.Background()
	committed, err := j.Prepare(ctx, passwordRecord("uid=ann,ou=people,dc=example,dc=org", "pw-ann"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.CommitNamed(ctx, committed, "key-ann", "ann@example.org"); err != nil {
		t.Fatal(err)
	}
	prepared, err := j.Prepare(ctx, accountRecord("uid=bob,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	if r, commit, _ := rawRecord(t, j, committed); r.State != StatePrepared || len(commit) == 0 {
		t.Fatalf("the commit was not stored beside the record: %s, a/ %q", r.State, commit)
	}
	check := func(j *Journal, when string) {
		t.Helper()
		r, err := j.Get(committed)
		if err != nil || r.State != StateCommitted || r.EntryKey != "key-ann" || r.Name != "ann@example.org" || !r.NextAttempt.Equal(clock.Now()) {
			t.Fatalf("%s: Get: %+v, %v", when, r, err)
		}
		all, err := j.List(Filter{})
		if err != nil || len(all) != 2 || all[0].State != StateCommitted || all[0].EntryKey != "key-ann" || all[1].State != StatePrepared {
			t.Fatalf("%s: List: %+v, %v", when, all, err)
		}
		if c, err := j.List(Filter{States: []State{StateCommitted}}); err != nil || !slices.Equal(seqsOf(c), []uint64{committed}) || c[0].Name != "ann@example.org" {
			t.Fatalf("%s: List committed: %v, %v", when, seqsOf(c), err)
		}
		if p, err := j.List(Filter{States: []State{StatePrepared}}); err != nil || !slices.Equal(seqsOf(p), []uint64{prepared}) {
			t.Fatalf("%s: List prepared: %v, %v", when, seqsOf(p), err)
		}
		if p, err := j.Prepared(); err != nil || !slices.Equal(seqsOf(p), []uint64{prepared}) {
			t.Fatalf("%s: Prepared: %v, %v", when, seqsOf(p), err)
		}
		rg, err := j.Range(0, 0, 0)
		if err != nil || len(rg) != 2 || rg[0].State != StateCommitted || rg[0].EntryKey != "key-ann" || rg[0].Name != "ann@example.org" {
			t.Fatalf("%s: Range: %+v, %v", when, rg, err)
		}
		if st, err := j.Stats(); err != nil || st.Prepared != 1 || st.Committed != 1 || st.OldestPendingSeq != committed {
			t.Fatalf("%s: Stats: %+v, %v", when, st, err)
		}
	}
	check(j, "written")
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, dir, opts)
	check(j, "reopened")

	var mu sync.Mutex
	var got []*Record
	var secrets []string // the scheduler wipes a secret once delivered
	startRun(t, j, 1, func(_ context.Context, r *Record) error {
		mu.Lock()
		got, secrets = append(got, r), append(secrets, string(r.Secret))
		mu.Unlock()
		return nil
	})
	waitState(t, j, committed, StateDelivered)
	mu.Lock()
	if len(got) != 1 || got[0].Seq != committed || secrets[0] != "pw-ann" || got[0].EntryKey != "key-ann" || got[0].Name != "ann@example.org" {
		t.Fatalf("delivered %+v (%d)", *got[0], len(got))
	}
	mu.Unlock()
	r, _, found := rawRecord(t, j, committed)
	if r.State != StateDelivered || r.SecretState != SecretErased || found {
		t.Fatalf("delivered record stored as %s, secret %s, a/ key left: %v", r.State, r.SecretState, found)
	}
	if n := countKeys(t, j, prefixSecret); n != 0 {
		t.Fatalf("%d secrets left after the delivery", n)
	}
	if err := j.Abort(ctx, prepared); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, j, prefixActive); n != 0 {
		t.Fatalf("%d a/ keys left once nothing is pending", n)
	}
}

// TestAStaleCommitIsNotMergedOntoALaterVersion: once a record committed
// by a delta is written whole (a failed delivery, a retry, dead), the
// commit left in its "a/" key is never read again, in any reader, nor
// after a reopen; dropping the record takes its keys with it.
func TestAStaleCommitIsNotMergedOntoALaterVersion(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Now = clock.Now
	opts.MaxAttempts = 2
	opts.BackoffBase, opts.BackoffCap = time.Hour, time.Hour
	j := openTest(t, dir, opts)
	ctx := context.Background()
	seq, err := j.Prepare(ctx, passwordRecord("uid=cid,ou=people,dc=example,dc=org", "pw-cid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.CommitNamed(ctx, seq, "key-cid", "cid@example.org"); err != nil {
		t.Fatal(err)
	}
	committedAt := clock.Now()
	// A failed delivery: written whole, committed, due in an hour.
	ctxRun, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- j.Run(ctxRun, 1, DeliverFunc(func(context.Context, *Record) error { return errors.New("busy") }))
	}()
	waitFor(t, "the failed attempt", 30*time.Second, func() bool {
		r, err := j.Get(seq)
		return err == nil && r.Attempts == 1
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	raw, commit, _ := rawRecord(t, j, seq)
	if raw.State != StateCommitted || len(commit) == 0 {
		t.Fatalf("after the failure: stored %s, a/ %q (the test wants the stale commit left)", raw.State, commit)
	}
	check := func(when string, want func(*Record) bool) {
		t.Helper()
		readers := map[string]func() (*Record, error){
			"Get": func() (*Record, error) { return j.Get(seq) },
			"List": func() (*Record, error) {
				rs, err := j.List(Filter{})
				if err != nil || len(rs) != 1 {
					return nil, errors.Join(err, errors.New("not one record"))
				}
				return rs[0], nil
			},
			"List by state": func() (*Record, error) {
				rs, err := j.List(Filter{States: []State{StateCommitted, StateDead}})
				if err != nil || len(rs) != 1 {
					return nil, errors.Join(err, errors.New("not one record"))
				}
				return rs[0], nil
			},
			"Range": func() (*Record, error) {
				rs, err := j.Range(seq, 1, 0)
				if err != nil || len(rs) != 1 {
					return nil, errors.Join(err, errors.New("not one record"))
				}
				return rs[0], nil
			},
		}
		for name, read := range readers {
			r, err := read()
			if err != nil || !want(r) || r.EntryKey != "key-cid" || r.Name != "cid@example.org" {
				t.Fatalf("%s: %s: %+v, %v", when, name, r, err)
			}
		}
	}
	failed := func(r *Record) bool {
		return r.State == StateCommitted && r.Attempts == 1 && r.LastError == "busy" && r.NextAttempt.After(committedAt)
	}
	check("after a failed attempt", failed)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, dir, opts)
	check("reopened", failed)
	if st, _ := j.Stats(); st.Committed != 1 || st.Prepared != 0 {
		t.Fatalf("stats after reopening: %+v", st)
	}

	clock.Advance(time.Minute)
	if err := j.Retry(ctx, seq); err != nil {
		t.Fatal(err)
	}
	check("retried", func(r *Record) bool {
		return r.State == StateCommitted && r.Attempts == 1 && r.NextAttempt.Equal(clock.Now())
	})

	if err := j.Drop(ctx, seq); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{prefixRecord, prefixActive, prefixSecret} {
		if n := countKeys(t, j, p); n != 0 {
			t.Fatalf("%d %s keys left after the drop", n, p)
		}
	}
	if _, err := j.Get(seq); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped record: %v", err)
	}
}

// TestDeltaCommitsAcrossASnapshot: a snapshot sends each record committed
// by a delta whole and committed (what a node of the previous version
// restores), whatever its "a/" holds; the restoring node stores them
// whole with empty "a/" keys, reads what the snapshotting node reads, and
// both go on alike (an outcome, a retry of the restored records).
func TestDeltaCommitsAcrossASnapshot(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	var next uint64
	dn := func(uid string) string { return "uid=" + uid + ",ou=people,dc=example,dc=org" }
	entries := [][]Command{
		stamped(t, a, &next, at,
			Command{Op: CmdPrepare, Record: passwordRecord(dn("ann"), "pw-ann")},
			Command{Op: CmdPrepare, Record: accountRecord(dn("bob"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("cid"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("dan"))},
			Command{Op: CmdFence, Term: 1}),
		stamped(t, a, &next, at.Add(time.Second),
			Command{Op: CmdCommit, Seq: 1, EntryKey: "k-ann", Name: "ann"},
			Command{Op: CmdCommit, Seq: 2, EntryKey: "k-bob"},
			Command{Op: CmdCommit, Seq: 3}),
		// bob fails once: written whole, its commit left stale beside it.
		stamped(t, a, &next, at.Add(2*time.Second),
			Command{Op: CmdOutcome, Seq: 2, Term: 1, Outcome: Outcome{LastError: "busy", NextAttempt: at.Add(time.Hour)}}),
	}
	for i, cmds := range entries {
		applyBoth(t, uint64(i+1), cmds, a, b)
	}
	s, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// The frames hold the records as the previous version stored them.
	sent := map[uint64]*Record{}
	br := bufio.NewReader(bytes.NewReader(buf.Bytes()[len(snapshotMagic)+1:]))
	for {
		tag, payload, err := readFrame(br)
		if err != nil {
			t.Fatal(err)
		}
		if tag == frameEnd {
			break
		}
		if tag != frameRecord {
			continue
		}
		d := decoder{s: string(payload)}
		r, err := decodeRecord([]byte(d.string()))
		if err != nil {
			t.Fatal(err)
		}
		sent[r.Seq] = r
	}
	if len(sent) != 4 || sent[1].State != StateCommitted || sent[1].EntryKey != "k-ann" || sent[1].Name != "ann" ||
		sent[2].State != StateCommitted || sent[2].Attempts != 1 || !sent[2].NextAttempt.Equal(at.Add(time.Hour)) ||
		sent[3].State != StateCommitted || sent[4].State != StatePrepared {
		t.Fatalf("snapshot records: %+v", sent)
	}

	c := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	if err := c.Restore(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	sameState(t, a, c)
	for seq := uint64(1); seq <= 4; seq++ {
		r, commit, found := rawRecord(t, c, seq)
		if !found || len(commit) != 0 || r.State != sent[seq].State {
			t.Fatalf("restored record %d stored %s, a/ %v %q", seq, r.State, found, commit)
		}
	}
	more := [][]Command{
		stamped(t, a, &next, at.Add(3*time.Second),
			Command{Op: CmdOutcome, Seq: 1, Term: 1, Outcome: Outcome{Delivered: true}},
			Command{Op: CmdRetry, Seq: 2},
			Command{Op: CmdCommit, Seq: 4, EntryKey: "k-dan"}),
		stamped(t, a, &next, at.Add(4*time.Second),
			Command{Op: CmdOutcome, Seq: 3, Term: 1, Outcome: Outcome{LastError: "refused", Dead: true}},
			Command{Op: CmdAbort, Seq: 4}),
	}
	for i, cmds := range more {
		res := applyBoth(t, uint64(len(entries)+i+1), cmds, a, b, c)
		if i == 0 {
			for k, err := range res {
				if err != nil {
					t.Fatalf("command %d: %v", k, err)
				}
			}
		}
	}
	sameState(t, a, b)
	sameState(t, a, c)
	if st, _ := c.Stats(); st.Delivered != 1 || st.Committed != 2 || st.Prepared != 0 {
		t.Fatalf("stats of the restored node: %+v", st)
	}
}

// TestADeltaCommitSurvivesReopeningInEveryOrder: a journal reopened
// after a Commit reads the commit in any mix of batches (the Prepare and
// the Commit in one batch, or apart), with the writer's caches empty.
func TestADeltaCommitSurvivesReopeningInEveryOrder(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	j := openTest(t, dir, opts)
	ctx := context.Background()
	var wg sync.WaitGroup
	const n = 64
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			seq, err := j.Prepare(ctx, accountRecord("uid=u"+string(rune('a'+i%26))+",ou=people,dc=example,dc=org"))
			if err == nil && i%3 != 0 {
				err = j.CommitNamed(ctx, seq, "k", "")
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	before := stateOf(t, j)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := Open(filepath.Join(dir, "journal"), opts)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	after := stateOf(t, j)
	if before.Stats.Committed != after.Stats.Committed || before.Stats.Prepared != after.Stats.Prepared || after.Stats.Committed == 0 {
		t.Fatalf("stats before %+v, after reopening %+v", before.Stats, after.Stats)
	}
	for i := range before.Records {
		if b, a := before.Records[i], after.Records[i]; b.State != a.State || b.EntryKey != a.EntryKey {
			t.Fatalf("record %d: %s %q, after reopening %s %q", b.Seq, b.State, b.EntryKey, a.State, a.EntryKey)
		}
	}
}

// TestAFollowerTurnedLeaderKeepsEachHistoryInOrder: a follower's index is
// passive (records and tokens only) while it applies the log, across a
// reopen too; when it leads, its first due builds the histories, which
// must hold each record in sequence order: a record whose Commit named
// the entry key after a later record of that key was committed, a record
// whose Commit replaced the entry key it was prepared with, and histories
// whose records were removed while passive. A record failing ahead of
// others in its history holds them back.
func TestAFollowerTurnedLeaderKeepsEachHistoryInOrder(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Replicated, opts.Now = true, clock.Now
	opts.BackoffBase, opts.BackoffCap = time.Hour, time.Hour
	j := openTest(t, dir, opts)
	ctx := context.Background()
	at := clock.Now()
	dn := func(uid string) string { return "uid=" + uid + ",ou=people,dc=example,dc=org" }
	rekeyed := accountRecord(dn("bob"))
	rekeyed.EntryKey = "k-bob-before"
	var next uint64
	apply := func(index uint64, cmds ...Command) {
		t.Helper()
		res, err := j.Apply(ctx, index, stamped(t, j, &next, at, cmds...))
		if err != nil {
			t.Fatal(err)
		}
		for k, err := range res {
			if err != nil {
				t.Fatalf("entry %d command %d: %v", index, k, err)
			}
		}
	}
	apply(1,
		Command{Op: CmdPrepare, Record: accountRecord(dn("ann"))},     // 1: names k-ann late
		Command{Op: CmdPrepare, Record: accountRecord(dn("ann-bis"))}, // 2: k-ann at once
		Command{Op: CmdPrepare, Record: rekeyed},                      // 3: k-bob-before, then k-bob
		Command{Op: CmdPrepare, Record: accountRecord(dn("bob-bis"))}, // 4: k-bob
		Command{Op: CmdPrepare, Record: accountRecord(dn("cid"))},     // 5: k-cid, dropped
		Command{Op: CmdPrepare, Record: accountRecord(dn("cid-bis"))}, // 6: k-cid
		Command{Op: CmdPrepare, Record: accountRecord(dn("dan"))},     // 7: k-dan, aborted
		Command{Op: CmdPrepare, Record: accountRecord(dn("dan-bis"))}, // 8: k-dan
		Command{Op: CmdFence, Term: 1})
	apply(2,
		Command{Op: CmdCommit, Seq: 2, EntryKey: "k-ann"},
		Command{Op: CmdCommit, Seq: 4, EntryKey: "k-bob"},
		Command{Op: CmdCommit, Seq: 5, EntryKey: "k-cid"},
		Command{Op: CmdCommit, Seq: 6, EntryKey: "k-cid"},
		Command{Op: CmdCommit, Seq: 8, EntryKey: "k-dan"})
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, dir, opts)
	apply(3,
		Command{Op: CmdCommit, Seq: 1, EntryKey: "k-ann"},
		Command{Op: CmdCommit, Seq: 3, EntryKey: "k-bob"},
		Command{Op: CmdDrop, Seq: 5},
		Command{Op: CmdAbort, Seq: 7})
	j.sched.mu.Lock()
	passive := j.sched.idx.passive
	j.sched.mu.Unlock()
	if !passive {
		t.Fatal("the follower's index is not passive: the test would not build the histories at the first due")
	}

	c := newTestCluster(t, j)
	j.SetProposer(c)
	if _, err := c.Propose(ctx, []Command{{Op: CmdFence, Term: 2}}); err != nil {
		t.Fatal(err)
	}
	d := &deliveries{fail: map[string]error{dn("ann"): errors.New("busy"), dn("bob"): errors.New("busy")}}
	stop, _ := runTerm(t, j, 2, d)
	waitState(t, j, 6, StateDelivered)
	waitState(t, j, 8, StateDelivered)
	waitFor(t, "the failures of records 1 and 3", 30*time.Second, func() bool {
		r1, err1 := j.Get(1)
		r3, err3 := j.Get(3)
		return err1 == nil && err3 == nil && r1.Attempts == 1 && r3.Attempts == 1
	})
	if err := stop(); err != nil {
		t.Fatalf("run term: %v", err)
	}
	// 2 and 4 wait behind 1 and 3, which wait out their backoff.
	if got := d.got(); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{1, 3, 6, 8}) {
		t.Fatalf("delivered %v, want 1, 3 (failed), 6 and 8: each history in sequence order", got)
	}
	for _, seq := range []uint64{2, 4} {
		if r, err := j.Get(seq); err != nil || r.State != StateCommitted || r.Attempts != 0 {
			t.Fatalf("record %d: %+v, %v", seq, r, err)
		}
	}
	indexMatchesDisk(t, j)
}

// TestASnapshotWrittenAfterMoreCommitsHoldsItsIndex: Raft writes a
// snapshot (Persist) while the journal goes on applying: the records it
// sends, commits merged, are those of its applied index, not the
// commits, outcomes and aborts applied after it was taken.
func TestASnapshotWrittenAfterMoreCommitsHoldsItsIndex(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 7, 5, 0, 0, 0, time.UTC)
	var next uint64
	dn := func(uid string) string { return "uid=" + uid + ",ou=people,dc=example,dc=org" }
	applyBoth(t, 1, stamped(t, a, &next, at,
		Command{Op: CmdPrepare, Record: passwordRecord(dn("ann"), "pw-ann")},
		Command{Op: CmdPrepare, Record: accountRecord(dn("bob"))},
		Command{Op: CmdPrepare, Record: accountRecord(dn("cid"))},
		Command{Op: CmdFence, Term: 1}), a, b)
	applyBoth(t, 2, stamped(t, a, &next, at.Add(time.Second),
		Command{Op: CmdCommit, Seq: 1, EntryKey: "k-ann"},
		Command{Op: CmdCommit, Seq: 2, EntryKey: "k-bob"}), a, b)
	s, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Applied by a alone, after the snapshot was taken.
	if res, err := a.Apply(context.Background(), 3, stamped(t, a, &next, at.Add(2*time.Second),
		Command{Op: CmdOutcome, Seq: 1, Term: 1, Outcome: Outcome{Delivered: true}},
		Command{Op: CmdOutcome, Seq: 2, Term: 1, Outcome: Outcome{LastError: "busy", NextAttempt: at.Add(time.Hour)}},
		Command{Op: CmdCommit, Seq: 3, EntryKey: "k-cid"})); err != nil || slices.ContainsFunc(res, func(e error) bool { return e != nil }) {
		t.Fatalf("apply 3: %v, %v", res, err)
	}
	var buf bytes.Buffer
	if _, err := s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	c := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	if err := c.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	sameState(t, b, c)
	if r, err := c.Get(1); err != nil || r.State != StateCommitted || r.SecretState != SecretEncrypted {
		t.Fatalf("record 1 restored: %+v, %v", r, err)
	}
}

// TestBatchKeysAreNeverWrittenTwice: the keys a batch cuts from the
// shared chunk (batch.key) stay as they were while the next batches cut
// theirs from the same chunk and beyond it, and appending to one cannot
// spill into the next: Badger holds a batch's keys until its commit.
func TestBatchKeysAreNeverWrittenTwice(t *testing.T) {
	var chunk []byte
	type cut struct {
		key, want []byte
	}
	var cuts []cut
	for batchNo := range 50 {
		b := &batch{keys: chunk}
		for i := range 100 {
			n := uint64(batchNo*1000 + i)
			prefix := [][]byte{prefixRecord, prefixSecret, prefixActive}[i%3]
			k := b.key(prefix, n)
			want := numKey(prefix, n)
			if !bytes.Equal(k, want) || cap(k) != len(k) {
				t.Fatalf("key %x (cap %d), want %x", k, cap(k), want)
			}
			if len(cuts) > 0 {
				_ = append(cuts[len(cuts)-1].key, 0xff) // must not reach k
			}
			cuts = append(cuts, cut{k, want})
		}
		chunk = b.keys // as writerRun.process hands it on
	}
	for i, c := range cuts {
		if !bytes.Equal(c.key, c.want) {
			t.Fatalf("key %d became %x, was %x", i, c.key, c.want)
		}
	}
}
