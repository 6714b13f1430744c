package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

func TestPrepareCommitAbortLifecycle(t *testing.T) {
	j, dir := newTestJournal(t)
	ctx := context.Background()

	s1, err := j.Prepare(ctx, accountRecord("uid=ann,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	s2, err := j.Prepare(ctx, accountRecord("uid=bob,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	if s1 != 1 || s2 != 2 {
		t.Fatalf("sequence numbers %d, %d; want 1, 2", s1, s2)
	}
	r, err := j.Get(s1)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != StatePrepared || r.Time.IsZero() || r.Actor != "cn=admin,dc=example,dc=org" || r.ClientAddr != "127.0.0.1:40000" ||
		len(r.Changes) != 1 || r.Changes[0].Values[0] != "+33 1 23 45 67 89" {
		t.Fatalf("prepared record = %+v", r)
	}

	if err := j.Commit(ctx, s1, "uuid-ann"); err != nil {
		t.Fatal(err)
	}
	if r, _ := j.Get(s1); r.State != StateCommitted || r.EntryKey != "uuid-ann" {
		t.Fatalf("after commit: state %s, key %q", r.State, r.EntryKey)
	}
	if err := j.Commit(ctx, s1, ""); !errors.Is(err, ErrState) {
		t.Fatalf("second commit: %v, want ErrState", err)
	}
	if err := j.Abort(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Get(s2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("aborted record: %v, want ErrNotFound", err)
	}
	if err := j.Commit(ctx, s2, ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("commit of aborted record: %v, want ErrNotFound", err)
	}
	if err := j.Abort(ctx, s1); !errors.Is(err, ErrState) {
		t.Fatalf("abort of committed record: %v, want ErrState", err)
	}

	// Sequence numbers are never reused, even that of an aborted last record.
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, dir, testOptions(dir))
	s3, err := j.Prepare(ctx, accountRecord("uid=cy,ou=people,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	if s3 != 3 {
		t.Fatalf("after reopen: seq %d, want 3", s3)
	}
	if r, err := j.Get(s1); err != nil || r.State != StateCommitted {
		t.Fatalf("after reopen record 1: %+v, %v", r, err)
	}
}

func TestPrepareRejectsBadRecords(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	huge := accountRecord("uid=big,dc=example,dc=org")
	huge.Changes = []Change{{Op: "replace", Attr: "description", Values: []string{strings.Repeat("x", maxRecordBytes)}}}
	for name, tc := range map[string]struct {
		rec  *Record
		want error
	}{
		"no DN":        {&Record{Kind: KindAccount, Op: OpModify}, nil},
		"bad kind":     {&Record{Kind: "printer", Op: OpModify, DN: "cn=x"}, nil},
		"rename no DN": {&Record{Kind: KindAccount, Op: OpRename, DN: "cn=x"}, nil},
		"bad change":   {&Record{Kind: KindAccount, Op: OpModify, DN: "cn=x", Changes: []Change{{Op: "frob", Attr: "a"}}}, nil},
		"too large":    {huge, ErrTooLarge},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := j.Prepare(ctx, tc.rec)
			if err == nil {
				t.Fatal("prepare accepted a bad record")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("prepare: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestSecondOpenReportsLock(t *testing.T) {
	_, dir := newTestJournal(t)
	_, err := Open(filepath.Join(dir, "journal"), testOptions(dir))
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("second open: %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), "in use by a running gateway (lock held)") {
		t.Fatalf("lock message %q does not say the journal is in use", err)
	}
}

func TestMustExistRefusesMissingJournal(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.MustExist = true
	if _, err := Open(filepath.Join(dir, "journal"), o); !errors.Is(err, ErrNoJournal) {
		t.Fatalf("open missing journal: %v, want ErrNoJournal", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "journal")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("MustExist created the folder: %v", err)
	}
}

func TestListFiltersAndLimits(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	var committed []uint64
	for i := range 6 {
		seq, err := j.Prepare(ctx, accountRecord("uid=u"+string(rune('a'+i))+",dc=example,dc=org"))
		if err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 {
			if err := j.Commit(ctx, seq, ""); err != nil {
				t.Fatal(err)
			}
			committed = append(committed, seq)
		}
	}
	all, err := j.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	if got := seqsOf(all); !slices.Equal(got, []uint64{1, 2, 3, 4, 5, 6}) {
		t.Fatalf("list all: %v", got)
	}
	got, err := j.List(Filter{States: []State{StateCommitted}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqsOf(got), committed) {
		t.Fatalf("list committed: %v, want %v", seqsOf(got), committed)
	}
	got, err = j.List(Filter{Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqsOf(got), []uint64{5, 6}) {
		t.Fatalf("list newest 2: %v, want [5 6]", seqsOf(got))
	}
	got, err = j.List(Filter{States: []State{StatePrepared}, Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(seqsOf(got), []uint64{6}) {
		t.Fatalf("list newest prepared: %v, want [6]", seqsOf(got))
	}
}

func seqsOf(rs []*Record) []uint64 {
	var out []uint64
	for _, r := range rs {
		out = append(out, r.Seq)
	}
	return out
}

func TestStatsCountsStatesAndBacklog(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = clock.Now
	o.MaxAttempts = 1
	j := openTest(t, dir, o)
	ctx := context.Background()

	if _, err := j.Prepare(ctx, accountRecord("uid=p,dc=example,dc=org")); err != nil {
		t.Fatal(err)
	}
	oldest := mustPrepareCommit(t, j, accountRecord("uid=c1,dc=example,dc=org"), "")
	clock.Advance(time.Minute)
	mustPrepareCommit(t, j, accountRecord("uid=c2,dc=example,dc=org"), "")
	good := mustPrepareCommit(t, j, accountRecord("uid=ok,dc=example,dc=org"), "")
	bad := mustPrepareCommit(t, j, accountRecord("uid=bad,dc=example,dc=org"), "")
	clock.Advance(time.Minute)

	// Deliver the last two only: one succeeds, one dies.
	ctxRun, cancel := context.WithCancel(ctx)
	done := make(chan error)
	go func() {
		done <- j.Run(ctxRun, 4, DeliverFunc(func(ctx context.Context, r *Record) error {
			switch r.Seq {
			case good:
				return nil
			case bad:
				return errors.New("axigen says no")
			}
			<-ctx.Done() // hold the others until the run stops
			return ctx.Err()
		}))
	}()
	waitState(t, j, good, StateDelivered)
	waitState(t, j, bad, StateDead)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	s, err := j.Stats()
	if err != nil {
		t.Fatal(err)
	}
	want := Stats{Prepared: 1, Committed: 2, Delivered: 1, Dead: 1, Backlog: 2, OldestPending: 2 * time.Minute,
		OldestPendingSeq: oldest, LastSeq: 5}
	if s != want {
		t.Fatalf("stats = %+v\nwant    %+v", s, want)
	}
}

// Many writers at once: their changes share batches (a batch waiting for
// Badger takes in what arrives), yet each caller's outcome and the journal
// as reopened from disk are as if they ran one by one.
func TestConcurrentWritersShareBatchesAndKeepEveryGuarantee(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.NoSync = false
	o.Now = newFakeClock().Now
	src := openTest(t, dir, o)
	startRun(t, src, 4, func(context.Context, *Record) error { return nil })
	ctx := context.Background()
	const writers, each = 16, 25
	want := make([][]State, writers) // by writer, by record: the outcome
	seqs := make([][]uint64, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				r := accountRecord(fmt.Sprintf("uid=w%d-%d,ou=people,dc=example,dc=org", w, i%5))
				if i%4 == 0 {
					r.Op, r.Changes, r.Secret = OpPassword, nil, []byte(fmt.Sprintf("pw-%d-%d", w, i))
				}
				seq, err := src.Prepare(ctx, r)
				if err != nil {
					t.Error(err)
					return
				}
				seqs[w] = append(seqs[w], seq)
				if i%3 == 0 {
					err = src.Abort(ctx, seq)
					want[w] = append(want[w], "")
				} else {
					err = src.Commit(ctx, seq, "")
					want[w] = append(want[w], StateDelivered)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	seen := map[uint64]bool{}
	for w := range writers {
		for i, seq := range seqs[w] {
			if seen[seq] {
				t.Fatalf("sequence number %d handed out twice", seq)
			}
			seen[seq] = true
			if want[w][i] == "" {
				if _, err := src.Get(seq); !errors.Is(err, ErrNotFound) {
					t.Fatalf("aborted record %d: %v", seq, err)
				}
				continue
			}
			waitState(t, src, seq, StateDelivered)
		}
	}
	batches, mutations := src.w.stats.batches.Load(), src.w.stats.mutations.Load()
	t.Logf("%d mutations in %d batches", mutations, batches)
	if mutations <= batches {
		t.Fatalf("%d mutations in %d batches: concurrent writers never shared a batch", mutations, batches)
	}
	// What the writers saw is what the disk holds, indexes and all.
	recs, keys := dump(t, src), indexKeys(t, src)
	stats, _ := src.Stats()
	if len(recs) != writers*each-writers*((each+2)/3) {
		t.Fatalf("%d records, want those not aborted", len(recs))
	}
	if err := src.Close(); err != nil {
		t.Fatal(err)
	}
	src = openTest(t, dir, o)
	if got := dump(t, src); !reflect.DeepEqual(got, recs) {
		t.Fatalf("reopened journal differs:\nbefore %v\nafter  %v", recs, got)
	}
	if got := indexKeys(t, src); !slices.Equal(got, keys) {
		t.Fatalf("reopened index keys differ:\nbefore %v\nafter  %v", keys, got)
	}
	if got, _ := src.Stats(); got != stats {
		t.Fatalf("reopened stats %+v, want %+v", got, stats)
	}
}

// A journal written before the Raft cluster holds the change log it kept
// for the former standby ("e/"+pos, with "m/pos" and "m/horizon"), more
// than one housekeeping chunk of it: it opens, the old log and its
// counters are gone, its records are intact and it takes new changes,
// which write no change log.
func TestJournalWithOldChangeLogOpensAndWorks(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = newFakeClock().Now // Stats (compared) measure ages with it
	j := openTest(t, dir, o)
	ctx := context.Background()
	pw := accountRecord("uid=pw,ou=people,dc=example,dc=org")
	pw.Op, pw.Changes, pw.Secret = OpPassword, nil, []byte("old-secret")
	pending, err := j.Prepare(ctx, pw)
	if err != nil {
		t.Fatal(err)
	}
	done := mustPrepareCommit(t, j, accountRecord("uid=done,ou=people,dc=example,dc=org"), "key-done")
	// The change log as the former writer left it: an entry per change
	// (the old encodings: JSON, then binary), the position counter, the
	// horizon of what housekeeping had trimmed.
	const entries = 3*housekeepingChunk + 7
	err = j.db.Update(func(txn *badger.Txn) error {
		for pos := uint64(100); pos < 100+entries; pos++ {
			v := []byte(fmt.Sprintf(`{"pos":%d,"time":"2026-11-28T12:00:00Z","type":"delete","seq":%d}`, pos, pos))
			if pos%2 == 0 {
				v = append([]byte{1}, v...)
			}
			if err := txn.Set(numKey(prefixEvent, pos), v); err != nil {
				return err
			}
		}
		return errors.Join(txn.Set(metaPos, encodeNum(99+entries)), txn.Set(metaHorizon, encodeNum(100)))
	})
	if err != nil {
		t.Fatal(err)
	}
	before, keys := dump(t, j), indexKeys(t, j)
	stats, _ := j.Stats()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = openTest(t, dir, o)
	if n := countKeys(t, j, prefixEvent); n != 0 {
		t.Fatalf("%d change-log entries left after opening", n)
	}
	for _, k := range [][]byte{metaPos, metaHorizon} {
		if n := countKeys(t, j, k); n != 0 {
			t.Fatalf("%s left after opening", k)
		}
	}
	if got := dump(t, j); !reflect.DeepEqual(got, before) {
		t.Fatalf("reopened journal differs:\nbefore %v\nafter  %v", before, got)
	}
	if got := indexKeys(t, j); !slices.Equal(got, keys) {
		t.Fatalf("reopened index keys differ:\nbefore %v\nafter  %v", keys, got)
	}
	if got, _ := j.Stats(); got != stats {
		t.Fatalf("reopened stats %+v, want %+v", got, stats)
	}
	prepared, err := j.Prepared()
	if err != nil || len(prepared) != 1 || prepared[0].Seq != pending || string(prepared[0].Secret) != "old-secret" {
		t.Fatalf("prepared after reopening: %+v, %v", prepared, err)
	}
	if err := j.Commit(ctx, pending, ""); err != nil {
		t.Fatal(err)
	}
	next := mustPrepareCommit(t, j, accountRecord("uid=new,ou=people,dc=example,dc=org"), "")
	if next != done+1 {
		t.Fatalf("new record numbered %d after %d", next, done)
	}
	startRun(t, j, 2, func(context.Context, *Record) error { return nil })
	for _, seq := range []uint64{pending, done, next} {
		waitState(t, j, seq, StateDelivered)
	}
	if _, err := j.Housekeep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, p := range [][]byte{prefixEvent, metaPos, metaHorizon} {
		if n := countKeys(t, j, p); n != 0 {
			t.Fatalf("new changes wrote %d keys under %q", n, p)
		}
	}
}
