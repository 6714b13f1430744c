package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sync"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// testCluster is a Proposer that does what a cluster does, in process:
// the leader (nodes[0]) stamps the commands, then every node applies the
// entry, decoded from its encoding. Refusals and failures come back
// rebuilt from their code and text, as a forwarded proposal's do.
type testCluster struct {
	mu      sync.Mutex
	nodes   []*Journal
	index   uint64
	lastSeq uint64
	fail    error // when set, proposals fail with it
}

func newTestCluster(t *testing.T, nodes ...*Journal) *testCluster {
	t.Helper()
	c := &testCluster{nodes: nodes}
	for _, j := range nodes {
		c.index = max(c.index, j.AppliedIndex())
		st, _ := j.Stats()
		c.lastSeq = max(c.lastSeq, st.LastSeq)
	}
	return c
}

func forwarded(err error) error {
	if err == nil {
		return nil
	}
	return RefusalError(RefusalCode(err), err.Error())
}

func (c *testCluster) Propose(ctx context.Context, cmds []Command) ([]Applied, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fail != nil {
		return nil, forwarded(c.fail)
	}
	leader := c.nodes[0]
	now := leader.opts.Now()
	stamped := make([]Command, len(cmds))
	res := make([]Applied, len(cmds))
	last := c.lastSeq
	for i := range cmds {
		cmd := cmds[i]
		var seq uint64
		if cmd.Op == CmdPrepare {
			last++
			seq = last
		}
		if err := leader.Stamp(&cmd, seq, now); err != nil {
			return nil, forwarded(err)
		}
		stamped[i], res[i].Seq = cmd, cmd.Seq
	}
	c.lastSeq = last
	c.index++
	data := EncodeCommands(stamped)
	for k, j := range c.nodes {
		decoded, err := DecodeCommands(data)
		if err != nil {
			return nil, err
		}
		errs, err := j.Apply(ctx, c.index, decoded)
		if err != nil {
			return nil, err
		}
		if k == 0 {
			for i := range res {
				res[i].Err = forwarded(errs[i])
			}
		}
	}
	return res, nil
}

func (c *testCluster) setFail(err error) {
	c.mu.Lock()
	c.fail = err
	c.mu.Unlock()
}

// replicatedPairWith opens two replicated journals with one key, as
// replicatedPair does, with options tuned by tune.
func replicatedPairWith(t *testing.T, tune func(*Options)) (*Journal, *Journal) {
	t.Helper()
	adir, bdir := t.TempDir(), t.TempDir()
	aopts, bopts := testOptions(adir), testOptions(bdir)
	for _, o := range []*Options{&aopts, &bopts} {
		o.Replicated = true
		tune(o)
	}
	a := openTest(t, adir, aopts)
	key, err := os.ReadFile(aopts.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bopts.KeyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	return a, openTest(t, bdir, bopts)
}

func passwordRecord(dn, secret string) *Record {
	r := accountRecord(dn)
	r.Op, r.Changes, r.Secret = OpPassword, nil, []byte(secret)
	return r
}

// TestProposerChangesAReplicatedJournal: with a Proposer, a replicated
// journal takes the same calls as a journal of its own, every node ends
// alike, and the errors callers test keep their meaning.
func TestProposerChangesAReplicatedJournal(t *testing.T) {
	a, b, _ := replicatedPair(t)
	c := newTestCluster(t, a, b)
	a.SetProposer(c)
	b.SetProposer(c) // b's proposals reach the leader as a follower's would
	ctx := context.Background()

	pw := passwordRecord("uid=ann,ou=people,dc=example,dc=org", "s3cret!")
	s1, err := b.Prepare(ctx, pw)
	if err != nil || s1 != 1 {
		t.Fatalf("prepare: %d, %v", s1, err)
	}
	if string(pw.Secret) != "s3cret!" || pw.Seq != 0 || pw.State != "" {
		t.Fatalf("prepare changed the caller's record: %+v", pw)
	}
	s2, err := a.Prepare(ctx, accountRecord("uid=bob,ou=people,dc=example,dc=org"))
	if err != nil || s2 != 2 {
		t.Fatalf("prepare: %d, %v", s2, err)
	}
	s3, _ := a.Prepare(ctx, accountRecord("uid=cid,ou=people,dc=example,dc=org"))
	for _, r := range []*Journal{a, b} {
		got, err := r.Prepared()
		if err != nil || len(got) != 3 || string(got[0].Secret) != "s3cret!" {
			t.Fatalf("prepared on one node: %v, %v", got, err)
		}
	}
	if err := b.Commit(ctx, s1, "k-ann"); err != nil {
		t.Fatal(err)
	}
	if err := a.Abort(ctx, s2); err != nil {
		t.Fatal(err)
	}
	if err := a.Commit(ctx, s3, ""); err != nil {
		t.Fatal(err)
	}
	if err := b.PutDisabled(ctx, DisabledAccount{Name: "old", EntryKey: "k-old", Reason: DisabledGone, Since: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	if err := a.PutDisabled(ctx, DisabledAccount{Name: "older", Reason: DisabledGone}); err != nil {
		t.Fatal(err)
	}
	if err := b.RemoveDisabled(ctx, "OLDER"); err != nil {
		t.Fatal(err)
	}
	if err := b.Retry(ctx, s3); err != nil {
		t.Fatalf("retry of a committed record: %v", err)
	}

	// Refusals, through the cluster and back.
	if err := b.Commit(ctx, s1, ""); !errors.Is(err, ErrState) {
		t.Fatalf("second commit: %v, want ErrState", err)
	}
	if err := a.Abort(ctx, 99); !errors.Is(err, ErrNotFound) {
		t.Fatalf("abort of nothing: %v, want ErrNotFound", err)
	}
	if err := b.Drop(ctx, s2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("drop of an aborted record: %v, want ErrNotFound", err)
	}
	big := accountRecord("uid=big,dc=x")
	big.Changes = []Change{{Op: "replace", Attr: "description", Values: []string{string(bytes.Repeat([]byte("x"), maxRecordBytes))}}}
	if _, err := b.Prepare(ctx, big); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("prepare of a huge record: %v, want ErrTooLarge", err)
	}
	if err := a.PutDisabled(ctx, DisabledAccount{}); err == nil {
		t.Fatal("a disabled account without a name was proposed")
	}
	c.setFail(fmt.Errorf("the cluster has no leader: %w", ErrUnavailable))
	if _, err := b.Prepare(ctx, accountRecord("uid=dan,dc=x")); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("prepare without quorum: %v, want ErrUnavailable", err)
	}
	if err := a.Commit(ctx, s1, ""); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("commit without quorum: %v, want ErrUnavailable", err)
	}
	c.setFail(nil)
	if err := a.Drop(ctx, s3); err != nil {
		t.Fatal(err)
	}

	sameState(t, a, b)
	st := stateOf(t, a)
	if len(st.Records) != 1 || st.Records[0].State != StateCommitted || st.Records[0].EntryKey != "k-ann" || st.Secrets[1] != "s3cret!" {
		t.Fatalf("records: %+v, secrets %v", st.Records, st.Secrets)
	}
	if len(st.Disabled) != 1 || st.Disabled[0].Name != "old" {
		t.Fatalf("disabled: %+v", st.Disabled)
	}
	if st.LastSeq != 3 {
		t.Fatalf("last seq %d, want 3 (a refused prepare takes no number)", st.LastSeq)
	}

	// Without a proposer, the journal refuses local changes again.
	a.SetProposer(nil)
	if err := a.Commit(ctx, s1, ""); !errors.Is(err, ErrReplicated) {
		t.Fatalf("commit without a proposer: %v, want ErrReplicated", err)
	}
}

// TestProposerRefusalCodes: a refusal sent as code and text comes back
// with its meaning for errors.Is.
func TestProposerRefusalCodes(t *testing.T) {
	for _, r := range refusals {
		err := fmt.Errorf("commit of 7: %w", r.err)
		code := RefusalCode(err)
		if code != r.code {
			t.Errorf("code of %v: %q, want %q", err, code, r.code)
		}
		back := RefusalError(code, err.Error())
		if !errors.Is(back, r.err) || back.Error() != err.Error() {
			t.Errorf("rebuilt %q: %v, Is %v: %v", code, back, r.err, errors.Is(back, r.err))
		}
	}
	if RefusalCode(errors.New("disk full")) != "" || RefusalCode(nil) != "" {
		t.Error("an unknown error has a code")
	}
	plain := RefusalError("", "disk full")
	if plain.Error() != "disk full" || errors.Is(plain, ErrNotFound) {
		t.Errorf("unknown code: %v", plain)
	}
	if err := RefusalError("no-such-code", "odd"); err.Error() != "odd" {
		t.Errorf("unknown code: %v", err)
	}
	// The proposer's own failures are tested the same way.
	if RefusalCode(fmt.Errorf("not leader: %w", ErrUnavailable)) != "unavailable" {
		t.Error("ErrUnavailable has no code")
	}
}

// indexMatchesDisk checks that the scheduler's index is the one Open
// would build from the records on disk.
func indexMatchesDisk(t *testing.T, j *Journal) {
	t.Helper()
	var (
		disk      *index
		delivered int
	)
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		disk, delivered, err = readIndex(txn, nil)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	type view struct {
		State     State
		Tokens    []string
		Time      time.Time
		Next      time.Time
		Coverable bool
	}
	flat := func(x *index) (map[uint64]view, map[string][]uint64) {
		m := map[uint64]view{}
		for seq, e := range x.recs {
			m[seq] = view{e.state, e.madeTokens(), e.time, e.next, e.coverable}
		}
		return m, x.histories()
	}
	j.sched.mu.Lock()
	mem, memQueues := flat(j.sched.idx)
	memDelivered := j.sched.delivered
	j.sched.mu.Unlock()
	want, wantQueues := flat(disk)
	if !reflect.DeepEqual(mem, want) || !reflect.DeepEqual(memQueues, wantQueues) || memDelivered != delivered {
		t.Fatalf("index in memory:\n%+v\n%v\n%d delivered\nbuilt from disk:\n%+v\n%v\n%d delivered", mem, memQueues, memDelivered, want, wantQueues, delivered)
	}
}

// deliveries records what a deliverer was asked to deliver.
type deliveries struct {
	mu   sync.Mutex
	seqs []uint64
	fail map[string]error // by DN
}

func (d *deliveries) Deliver(_ context.Context, r *Record) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.seqs = append(d.seqs, r.Seq)
	return d.fail[r.DN]
}

func (d *deliveries) got() []uint64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.seqs)
}

// runTerm runs j.RunTerm in the background and waits until it delivers;
// stop ends it and returns its error, ended waits until it ends by
// itself.
func runTerm(t *testing.T, j *Journal, term uint64, d Deliverer) (stop, ended func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.RunTerm(ctx, term, 2, d) }()
	waitFor(t, "the run to start", 30*time.Second, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
			return j.sched.delivering() != nil
		}
	})
	var once sync.Once
	var err error
	wait := func(cancelFirst bool) func() error {
		return func() error {
			once.Do(func() {
				if cancelFirst {
					cancel()
				}
				select {
				case err = <-done:
				case <-time.After(30 * time.Second):
					err = errors.New("the run did not end")
				}
				cancel()
			})
			return err
		}
	}
	t.Cleanup(func() { wait(true)() })
	return wait(true), wait(false)
}

// TestRunTermDeliversWhatTheLogMadeDue: a follower's index follows the
// entries it applies, so that, once it leads, it delivers exactly what
// is due: not what was aborted, dropped, delivered, purged, still
// prepared or waiting out a backoff.
func TestRunTermDeliversWhatTheLogMadeDue(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Replicated, opts.Now = true, clock.Now
	j := openTest(t, dir, opts)
	ctx := context.Background()
	at := clock.Now()
	dn := func(uid string) string { return "uid=" + uid + ",ou=people,dc=example,dc=org" }
	var next uint64
	entries := []Entry{
		{Index: 1, Commands: stamped(t, j, &next, at,
			Command{Op: CmdPrepare, Record: accountRecord(dn("ann"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("bob"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("cid"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("dan"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("eve"))},
			Command{Op: CmdPrepare, Record: accountRecord(dn("fay"))},
			Command{Op: CmdPrepare, Record: passwordRecord(dn("ann"), "pw-ann")},
			Command{Op: CmdFence, Term: 1})},
		{Index: 2, Commands: stamped(t, j, &next, at,
			Command{Op: CmdCommit, Seq: 1, EntryKey: "k-ann"},
			Command{Op: CmdCommit, Seq: 2},
			Command{Op: CmdCommit, Seq: 3},
			Command{Op: CmdAbort, Seq: 4},
			Command{Op: CmdCommit, Seq: 5},
			Command{Op: CmdCommit, Seq: 7, EntryKey: "k-ann"})},
		{Index: 3, Commands: stamped(t, j, &next, at.Add(time.Second),
			Command{Op: CmdOutcome, Seq: 1, Term: 1, Outcome: Outcome{Delivered: true}},
			Command{Op: CmdOutcome, Seq: 2, Term: 1, Outcome: Outcome{LastError: "busy", NextAttempt: at.Add(time.Hour)}},
			Command{Op: CmdOutcome, Seq: 3, Term: 1, Outcome: Outcome{LastError: "refused", Dead: true}},
			Command{Op: CmdDrop, Seq: 5})},
		{Index: 4, Commands: stamped(t, j, &next, at.Add(2*time.Second),
			Command{Op: CmdRetry, Seq: 3},
			Command{Op: CmdPurge, Time: at.Add(time.Hour), Seqs: []uint64{1}})},
	}
	results, err := j.ApplyEntries(ctx, entries)
	if err != nil {
		t.Fatal(err)
	}
	for i, res := range results {
		for k, err := range res {
			if err != nil {
				t.Fatalf("entry %d command %d: %v", i+1, k, err)
			}
		}
	}
	indexMatchesDisk(t, j)
	if st, _ := j.Stats(); st.Prepared != 1 || st.Committed != 3 || st.Dead != 0 || st.Delivered != 0 {
		t.Fatalf("stats after the log: %+v", st)
	}

	// This node now leads term 2.
	c := newTestCluster(t, j)
	j.SetProposer(c)
	if _, err := c.Propose(ctx, []Command{{Op: CmdFence, Term: 2}}); err != nil {
		t.Fatal(err)
	}
	clock.Advance(10 * time.Second)
	d := &deliveries{}
	stop, _ := runTerm(t, j, 2, d)
	waitState(t, j, 3, StateDelivered)
	r7 := waitState(t, j, 7, StateDelivered)
	if r7.SecretState != SecretErased || r7.Attempts != 1 {
		t.Fatalf("record 7 delivered: %+v", r7)
	}
	if got := d.got(); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{3, 7}) {
		t.Fatalf("delivered %v, want 3 and 7", got)
	}
	// Record 2 once its backoff is over; record 6 once committed.
	clock.Advance(time.Hour)
	j.sched.kick()
	waitState(t, j, 2, StateDelivered)
	if err := j.Commit(ctx, 6, ""); err != nil {
		t.Fatal(err)
	}
	waitState(t, j, 6, StateDelivered)
	if err := stop(); err != nil {
		t.Fatalf("run term: %v", err)
	}
	if got := d.got(); len(got) != 4 {
		t.Fatalf("deliveries %v, want 3, 7, 2, 6 once each", got)
	}
	indexMatchesDisk(t, j)
	if st, _ := j.Stats(); st.Prepared != 0 || st.Committed != 0 || st.Delivered != 4 || st.InFlight != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// TestRunTermRecordsOutcomesThroughTheCluster: a follower records the
// leader's outcomes (failures with their backoff, dead letters) the same
// way; a run whose term was fenced off by a newer leader stops.
func TestRunTermRecordsOutcomesThroughTheCluster(t *testing.T) {
	clock := newFakeClock()
	a, b := replicatedPairWith(t, func(o *Options) { o.Now, o.MaxAttempts = clock.Now, 2 })
	c := newTestCluster(t, a, b)
	a.SetProposer(c)
	ctx := context.Background()
	if _, err := c.Propose(ctx, []Command{{Op: CmdFence, Term: 4}}); err != nil {
		t.Fatal(err)
	}
	if err := a.RunTerm(ctx, 3, 1, &deliveries{}); !errors.Is(err, ErrStaleTerm) {
		t.Fatalf("run of a fenced-off term: %v", err)
	}
	dn := "uid=poison,dc=example,dc=org"
	d := &deliveries{fail: map[string]error{dn: errors.New("axigen: busy")}}
	_, ended := runTerm(t, a, 4, d)
	ok := mustPrepareCommit(t, a, accountRecord("uid=fine,dc=example,dc=org"), "")
	bad := mustPrepareCommit(t, a, accountRecord(dn), "")
	waitState(t, b, ok, StateDelivered)
	var r *Record
	waitFor(t, "a failed delivery recorded", 30*time.Second, func() bool {
		r, _ = b.Get(bad)
		return r != nil && r.Attempts == 1
	})
	if r.State != StateCommitted || r.LastError != "axigen: busy" || !r.NextAttempt.After(clock.Now()) {
		t.Fatalf("after a failure: %+v", r)
	}
	clock.Advance(time.Hour)
	a.sched.kick()
	r = waitState(t, b, bad, StateDead)
	if r.Attempts != 2 {
		t.Fatalf("dead letter: %+v", r)
	}
	sameState(t, a, b)

	// A newer leader fences the journal: this run's next outcome is
	// refused and the run ends.
	if _, err := c.Propose(ctx, []Command{{Op: CmdFence, Term: 5}}); err != nil {
		t.Fatal(err)
	}
	late := mustPrepareCommit(t, a, accountRecord("uid=late,dc=example,dc=org"), "")
	if err := ended(); !errors.Is(err, ErrStaleTerm) {
		t.Fatalf("run of a fenced-off term: %v, want ErrStaleTerm", err)
	}
	if got := d.got(); len(got) != 4 || got[3] != late {
		t.Fatalf("deliveries %v: the fenced-off run went on delivering", got)
	}
	if r, _ := b.Get(late); r.State != StateCommitted || r.Attempts != 0 {
		t.Fatalf("an outcome of a fenced-off term was recorded: %+v", r)
	}
	indexMatchesDisk(t, a)
	indexMatchesDisk(t, b)
	sameState(t, a, b)
}

// TestRunTermPurgesOnTheDeliveringNode: the node that delivers proposes
// the purges of delivered records past Retention; the others apply them.
func TestRunTermPurgesOnTheDeliveringNode(t *testing.T) {
	clock := newFakeClock()
	a, b := replicatedPairWith(t, func(o *Options) { o.Now, o.Retention = clock.Now, time.Hour })
	c := newTestCluster(t, a, b)
	a.SetProposer(c)
	b.SetProposer(c)
	ctx := context.Background()
	if _, err := c.Propose(ctx, []Command{{Op: CmdFence, Term: 1}}); err != nil {
		t.Fatal(err)
	}
	deliver := DeliverFunc(func(context.Context, *Record) error { return nil })
	stop, _ := runTerm(t, a, 1, deliver)
	var seqs []uint64
	for i := range 5 {
		seqs = append(seqs, mustPrepareCommit(t, b, accountRecord(fmt.Sprintf("uid=u%d,dc=x", i)), ""))
	}
	for _, seq := range seqs {
		waitState(t, b, seq, StateDelivered)
	}
	clock.Advance(2 * time.Hour)
	if res, err := b.Housekeep(ctx); err != nil || res.Purged != 0 {
		t.Fatalf("housekeeping on a node that does not deliver: %+v, %v", res, err)
	}
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if res, err := a.Housekeep(ctx); err != nil || res.Purged != 0 {
		t.Fatalf("housekeeping once the run ended: %+v, %v", res, err)
	}
	for _, j := range []*Journal{a, b} {
		if st, _ := j.Stats(); st.Delivered != 5 {
			t.Fatalf("purged by a node that does not deliver: %+v", st)
		}
	}
	stop, _ = runTerm(t, a, 1, deliver)
	res, err := a.Housekeep(ctx)
	if err != nil || res.Purged != 5 {
		t.Fatalf("housekeeping on the delivering node: %+v, %v", res, err)
	}
	for _, j := range []*Journal{a, b} {
		if st, _ := j.Stats(); st.Delivered != 0 {
			t.Fatalf("after the purge: %+v", st)
		}
		indexMatchesDisk(t, j)
	}
	sameState(t, a, b)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
}

// TestMakeReplicatedKeepsTheJournal: a single gateway's journal becomes
// a cluster's with its records, secrets and disabled table; neither kind
// opens as the other.
func TestMakeReplicatedKeepsTheJournal(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	jdir := filepath.Join(dir, "journal")
	j := openTest(t, dir, opts)
	ctx := context.Background()
	delivered := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "k-ann")
	dead := mustPrepareCommit(t, j, accountRecord("uid=poison,dc=example,dc=org"), "")
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- j.Run(runCtx, 1, DeliverFunc(func(_ context.Context, r *Record) error {
			if r.Seq == dead {
				return Permanent(errors.New("axigen: invalid value"))
			}
			return nil
		}))
	}()
	waitState(t, j, delivered, StateDelivered)
	waitState(t, j, dead, StateDead)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	committed := mustPrepareCommit(t, j, passwordRecord("uid=bob,dc=example,dc=org", "pw-bob"), "")
	prepared, err := j.Prepare(ctx, passwordRecord("uid=cid,dc=example,dc=org", "pw-cid"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.PutDisabled(ctx, DisabledAccount{Name: "old", EntryKey: "k-old", Reason: DisabledGone, Since: time.Now().UTC()}); err != nil {
		t.Fatal(err)
	}
	want := stateOf(t, j)
	if len(want.Secrets) != 2 {
		t.Fatalf("the journal before: %+v", want)
	}
	// A journal written before the cluster also holds the former standby's
	// change log, which the conversion drops.
	err = j.db.Update(func(txn *badger.Txn) error {
		return errors.Join(txn.Set(numKey(prefixEvent, 1), []byte(`{"pos":1}`)),
			txn.Set(metaPos, encodeNum(1)), txn.Set(metaHorizon, encodeNum(1)))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	ropts := opts
	ropts.Replicated = true
	if _, err := Open(jdir, ropts); !errors.Is(err, ErrNotReplicated) {
		t.Fatalf("a local journal opened as replicated: %v, want ErrNotReplicated", err)
	}
	if err := MakeReplicated(jdir, opts); err != nil {
		t.Fatal(err)
	}
	if err := MakeReplicated(jdir, opts); err != nil {
		t.Fatalf("a second conversion: %v", err)
	}
	if _, err := Open(jdir, opts); !errors.Is(err, ErrReplicated) {
		t.Fatalf("a converted journal opened as local: %v, want ErrReplicated", err)
	}
	r := openTest(t, dir, ropts)
	got := stateOf(t, r)
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("after conversion:\n%+v\nwant\n%+v", got, want)
	}
	if r.AppliedIndex() != 0 || r.DeliveryTerm() != 0 {
		t.Fatalf("applied %d, term %d", r.AppliedIndex(), r.DeliveryTerm())
	}
	for _, p := range [][]byte{prefixEvent, metaPos, metaHorizon} {
		if n := countKeys(t, r, p); n != 0 {
			t.Fatalf("%d keys under %q left", n, p)
		}
	}
	ps, err := r.Prepared()
	if err != nil || len(ps) != 1 || ps[0].Seq != prepared || string(ps[0].Secret) != "pw-cid" {
		t.Fatalf("prepared after conversion: %+v, %v", ps, err)
	}
	if w, err := r.recs.getWithSecret(committed); err != nil || string(w.Secret) != "pw-bob" {
		t.Fatalf("secret after conversion: %v", err)
	}

	// The cluster goes on from there: numbers continue, the prepared record
	// is settled, the committed one delivered.
	c := newTestCluster(t, r)
	r.SetProposer(c)
	seq, err := r.Prepare(ctx, accountRecord("uid=dan,dc=example,dc=org"))
	if err != nil || seq != prepared+1 {
		t.Fatalf("prepare after conversion: %d, %v", seq, err)
	}
	if err := r.Commit(ctx, prepared, ""); err != nil {
		t.Fatal(err)
	}
	d := &deliveries{}
	stop, _ := runTerm(t, r, 1, d)
	waitState(t, r, committed, StateDelivered)
	waitState(t, r, prepared, StateDelivered)
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if got := d.got(); !slices.Equal(slices.Sorted(slices.Values(got)), []uint64{committed, prepared}) {
		t.Fatalf("delivered %v", got)
	}
	indexMatchesDisk(t, r)

	// A folder without a journal is left alone.
	if err := MakeReplicated(filepath.Join(dir, "none"), opts); err != nil {
		t.Fatal(err)
	}
}

// TestWitnessAppliesAndSnapshots: a node without the key (a witness)
// applies every command, keeps sealed secrets it cannot open, and takes
// and restores snapshots that keyed nodes can read.
func TestWitnessAppliesAndSnapshots(t *testing.T) {
	a := openReplicated(t, t.TempDir(), "")
	witness := func() *Journal {
		dir := t.TempDir()
		opts := testOptions(dir)
		opts.Replicated, opts.KeyFile = true, ""
		return openTest(t, dir, opts)
	}
	w := witness()
	at := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	var next uint64
	entries := [][]Command{
		stamped(t, a, &next, at,
			Command{Op: CmdFence, Term: 1},
			Command{Op: CmdPrepare, Record: passwordRecord("uid=ann,dc=x", "pw-ann")},
			Command{Op: CmdPrepare, Record: passwordRecord("uid=bob,dc=x", "pw-bob")},
			Command{Op: CmdPrepare, Record: accountRecord("uid=cid,dc=x")},
			Command{Op: CmdPrepare, Record: accountRecord("uid=dan,dc=x")},
			Command{Op: CmdPrepare, Record: passwordRecord("uid=eve,dc=x", "pw-eve")}),
		stamped(t, a, &next, at.Add(time.Second),
			Command{Op: CmdCommit, Seq: 1}, Command{Op: CmdCommit, Seq: 2}, Command{Op: CmdCommit, Seq: 3},
			Command{Op: CmdAbort, Seq: 4},
			Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "old", EntryKey: "k-old", Reason: DisabledGone, Since: at}},
			Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "gone", Reason: DisabledGone, Since: at}}),
		stamped(t, a, &next, at.Add(2*time.Second),
			Command{Op: CmdOutcome, Seq: 1, Term: 1, Outcome: Outcome{Delivered: true}},
			Command{Op: CmdOutcome, Seq: 3, Term: 1, Outcome: Outcome{LastError: "x", Dead: true}},
			Command{Op: CmdRemoveDisabled, Name: "gone"}),
		stamped(t, a, &next, at.Add(3*time.Second),
			Command{Op: CmdRetry, Seq: 3},
			Command{Op: CmdDrop, Seq: 3},
			Command{Op: CmdPurge, Time: at.Add(time.Hour), Seqs: []uint64{1}},
			Command{Op: CmdFence, Term: 2}),
	}
	for i, cmds := range entries {
		for k, err := range applyBoth(t, uint64(i+1), cmds, a, w) {
			if err != nil {
				t.Fatalf("entry %d command %d: %v", i+1, k, err)
			}
		}
	}
	// Alike but for the secrets, which the witness holds sealed.
	same := func(x, y *Journal) {
		t.Helper()
		xs, _ := x.List(Filter{})
		ys, _ := y.List(Filter{})
		xd, _ := x.DisabledAccounts()
		yd, _ := y.DisabledAccounts()
		xst, _ := x.Stats()
		yst, _ := y.Stats()
		xst.OldestPending, yst.OldestPending = 0, 0
		if !reflect.DeepEqual(xs, ys) || !reflect.DeepEqual(xd, yd) || xst != yst ||
			x.AppliedIndex() != y.AppliedIndex() || x.DeliveryTerm() != y.DeliveryTerm() {
			t.Fatalf("journals differ:\n%+v %+v %+v\n%+v %+v %+v", xs, xd, xst, ys, yd, yst)
		}
		for _, r := range xs {
			if r.SecretState == SecretEncrypted && !bytes.Equal(readSealed(t, x, r.Seq), readSealed(t, y, r.Seq)) {
				t.Fatalf("sealed secret of record %d differs", r.Seq)
			}
		}
	}
	same(a, w)
	if recs, _ := w.List(Filter{}); len(recs) != 2 {
		t.Fatalf("witness records: %+v", recs)
	}
	if _, err := w.recs.getWithSecret(2); !errors.Is(err, ErrNoKey) {
		t.Fatalf("the witness opened a secret: %v", err)
	}
	indexMatchesDisk(t, w)

	snapshot := func(j *Journal) []byte {
		s, err := j.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		var buf bytes.Buffer
		if _, err := s.WriteTo(&buf); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	// The witness's snapshot makes a keyed node that reads the secrets.
	k := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	if err := k.Restore(bytes.NewReader(snapshot(w))); err != nil {
		t.Fatal(err)
	}
	sameState(t, a, k)
	// A keyed node's snapshot makes a witness.
	w2 := witness()
	if err := w2.Restore(bytes.NewReader(snapshot(a))); err != nil {
		t.Fatal(err)
	}
	same(a, w2)
	indexMatchesDisk(t, w2)
	// And both go on alike.
	more := stamped(t, a, &next, at.Add(4*time.Second),
		Command{Op: CmdPrepare, Record: passwordRecord("uid=fay,dc=x", "pw-fay")},
		Command{Op: CmdOutcome, Seq: 2, Term: 2, Outcome: Outcome{Delivered: true}})
	for k, err := range applyBoth(t, 5, more, a, w, w2) {
		if err != nil {
			t.Fatalf("command %d: %v", k, err)
		}
	}
	same(a, w)
	same(a, w2)
}
