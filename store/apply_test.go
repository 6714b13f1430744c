package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// replicatedPair opens two replicated journals that share one key, as the
// nodes of a cluster do.
func replicatedPair(t *testing.T) (*Journal, *Journal, string) {
	t.Helper()
	a := openReplicated(t, t.TempDir(), "")
	b := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	return a, b, a.opts.KeyFile
}

// openReplicated opens a replicated journal in dir; keyFrom, when set, is
// a key file to copy in first.
func openReplicated(t *testing.T, dir, keyFrom string) *Journal {
	t.Helper()
	opts := testOptions(dir)
	opts.Replicated = true
	if keyFrom != "" {
		key, err := os.ReadFile(keyFrom)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(opts.KeyFile, key, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return openTest(t, dir, opts)
}

// stamped builds the commands a leader proposes: seq numbers from next.
func stamped(t *testing.T, j *Journal, next *uint64, now time.Time, cmds ...Command) []Command {
	t.Helper()
	for i := range cmds {
		seq := uint64(0)
		if cmds[i].Op == CmdPrepare {
			*next++
			seq = *next
		}
		if err := j.Stamp(&cmds[i], seq, now); err != nil {
			t.Fatalf("stamp %s: %v", cmds[i].Op, err)
		}
	}
	return cmds
}

// applyBoth applies an entry, through its encoding, to each journal and
// checks that they refuse the same commands.
func applyBoth(t *testing.T, index uint64, cmds []Command, js ...*Journal) []error {
	t.Helper()
	data := EncodeCommands(cmds)
	var first []error
	for i, j := range js {
		decoded, err := DecodeCommands(data)
		if err != nil {
			t.Fatal(err)
		}
		res, err := j.Apply(context.Background(), index, decoded)
		if err != nil {
			t.Fatalf("apply entry %d: %v", index, err)
		}
		if i == 0 {
			first = res
			continue
		}
		if len(res) != len(first) {
			t.Fatalf("entry %d: %d results on one journal, %d on another", index, len(first), len(res))
		}
		for k := range res {
			if (res[k] == nil) != (first[k] == nil) {
				t.Fatalf("entry %d command %d: %v on one journal, %v on another", index, k, first[k], res[k])
			}
		}
	}
	return first
}

// journalState is what must be the same on every node.
type journalState struct {
	Records  []*Record
	Secrets  map[uint64]string
	Disabled []DisabledAccount
	Applied  uint64
	Term     uint64
	LastSeq  uint64
	Stats    Stats
}

func stateOf(t *testing.T, j *Journal) journalState {
	t.Helper()
	recs, err := j.List(Filter{})
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[uint64]string{}
	for _, r := range recs {
		if r.SecretState == SecretEncrypted {
			w, err := j.recs.getWithSecret(r.Seq)
			if err != nil {
				t.Fatal(err)
			}
			secrets[r.Seq] = string(w.Secret)
		}
	}
	dis, err := j.DisabledAccounts()
	if err != nil {
		t.Fatal(err)
	}
	st, _ := j.Stats()
	st.OldestPending = 0
	return journalState{Records: recs, Secrets: secrets, Disabled: dis, Applied: j.AppliedIndex(), Term: j.DeliveryTerm(), LastSeq: st.LastSeq, Stats: st}
}

func sameState(t *testing.T, a, b *Journal) {
	t.Helper()
	sa, sb := stateOf(t, a), stateOf(t, b)
	if !reflect.DeepEqual(sa, sb) {
		t.Fatalf("journals differ:\n%+v\n%+v", sa, sb)
	}
}

func TestCommandsRoundTrip(t *testing.T) {
	at := time.Date(2026, 12, 6, 21, 0, 0, 123, time.UTC)
	rec := accountRecord("uid=ann,ou=people,dc=example,dc=org")
	rec.Seq, rec.Time, rec.State, rec.Groups = 7, at, StatePrepared, []string{"cn=staff"}
	// A record with names its write may reveal and no token: the token
	// goes empty before them.
	revealing := accountRecord("cn=multi,ou=people,dc=example,dc=org")
	revealing.Seq, revealing.Time, revealing.State, revealing.Name, revealing.MayTake = 10, at, StatePrepared, "m1", []string{"carol", "dave"}
	cmds := []Command{
		{Op: CmdPrepare, Seq: 7, Time: at, Record: rec, Sealed: []byte{1, 2, 3}},
		{Op: CmdCommit, Seq: 7, Time: at, EntryKey: "0f3c"},
		{Op: CmdOutcome, Seq: 7, Time: at, Term: 4, Outcome: Outcome{Delivered: true, Covered: []uint64{8, 9}}},
		{Op: CmdOutcome, Seq: 8, Time: at, Term: 4, Outcome: Outcome{LastError: "refused", Dead: true, NextAttempt: at}},
		{Op: CmdOutcome, Seq: 9, Time: at, Term: 4, Outcome: Outcome{LastError: "put off", Postponed: true, NextAttempt: at}},
		{Op: CmdPurge, Time: at, Seqs: []uint64{1, 2}},
		{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "ann", EntryKey: "0f3c", DN: "uid=ann", Reason: DisabledNoPassword, Since: at, Seq: 7, GraceFrom: at.Add(time.Hour), Scrambled: true, RemovalSeq: 9}},
		{Op: CmdRemoveDisabled, Name: "bob"},
		{Op: CmdFence, Term: 5},
		{Op: CmdAbort, Seq: 1 << 40},
		{Op: CmdPrepare, Seq: 10, Time: at, Record: revealing},
	}
	got, err := DecodeCommands(EncodeCommands(cmds))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, cmds) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, cmds)
	}
	data := EncodeCommands(cmds)
	for n := range len(data) {
		if _, err := DecodeCommands(data[:n]); err == nil {
			t.Fatalf("a batch cut at %d of %d bytes decodes", n, len(data))
		}
	}
	if _, err := DecodeCommands([]byte{9, 0}); err == nil {
		t.Fatal("an unknown format decodes")
	}
}

func TestReplicatedRefusesLocalChanges(t *testing.T) {
	j := openReplicated(t, t.TempDir(), "")
	ctx := context.Background()
	if _, err := j.Prepare(ctx, accountRecord("uid=a,dc=x")); !errors.Is(err, ErrReplicated) {
		t.Fatalf("prepare: %v, want ErrReplicated", err)
	}
	if err := j.Commit(ctx, 1, ""); !errors.Is(err, ErrReplicated) {
		t.Fatalf("commit: %v", err)
	}
	if err := j.PutDisabled(ctx, DisabledAccount{Name: "a"}); !errors.Is(err, ErrReplicated) {
		t.Fatalf("put disabled: %v", err)
	}
	if err := j.Run(ctx, 1, DeliverFunc(func(context.Context, *Record) error { return nil })); !errors.Is(err, ErrReplicated) {
		t.Fatalf("run: %v", err)
	}
	standalone, _ := newTestJournal(t)
	if _, err := standalone.Apply(ctx, 1, nil); err == nil {
		t.Fatal("a standalone journal applies commands")
	}
}

func TestApplyIsDeterministicAndIdempotent(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	var next uint64
	pw := accountRecord("uid=ann,ou=people,dc=example,dc=org")
	pw.Op, pw.Changes, pw.Secret = OpPassword, nil, []byte("s3cret!")
	entries := [][]Command{
		stamped(t, a, &next, at,
			Command{Op: CmdPrepare, Record: accountRecord("uid=ann,ou=people,dc=example,dc=org")},
			Command{Op: CmdPrepare, Record: pw},
			Command{Op: CmdPrepare, Record: accountRecord("uid=bob,ou=people,dc=example,dc=org")},
			Command{Op: CmdPrepare, Record: accountRecord("uid=cid,ou=people,dc=example,dc=org")},
			Command{Op: CmdFence, Term: 2}),
		stamped(t, a, &next, at.Add(time.Second),
			Command{Op: CmdCommit, Seq: 1, EntryKey: "k-ann"},
			Command{Op: CmdCommit, Seq: 2},
			Command{Op: CmdAbort, Seq: 3},
			Command{Op: CmdCommit, Seq: 4},
			Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "Old", EntryKey: "k-old", Reason: DisabledGone, Since: at}},
			Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "gone", Reason: DisabledGone, Since: at}}),
		stamped(t, a, &next, at.Add(2*time.Second),
			Command{Op: CmdOutcome, Seq: 1, Term: 2, Outcome: Outcome{Delivered: true}},
			Command{Op: CmdOutcome, Seq: 4, Term: 2, Outcome: Outcome{LastError: "axigen down", NextAttempt: at.Add(time.Minute)}},
			Command{Op: CmdRemoveDisabled, Name: "GONE"}),
	}
	for i, cmds := range entries {
		for k, err := range applyBoth(t, uint64(i+1), cmds, a, b) {
			if err != nil {
				t.Fatalf("entry %d command %d: %v", i+1, k, err)
			}
		}
	}
	sameState(t, a, b)
	st := stateOf(t, a)
	if st.Applied != 3 || st.LastSeq != 4 || st.Term != 2 || len(st.Records) != 3 {
		t.Fatalf("state: applied %d, last seq %d, term %d, %d records", st.Applied, st.LastSeq, st.Term, len(st.Records))
	}
	if st.Secrets[2] != "s3cret!" {
		t.Fatalf("secret of record 2: %q", st.Secrets[2])
	}
	r1, _ := a.Get(1)
	if r1.State != StateDelivered || !r1.DeliveredAt.Equal(at.Add(2*time.Second)) || r1.EntryKey != "k-ann" || !r1.Time.Equal(at) {
		t.Fatalf("record 1: %+v", r1)
	}
	r4, _ := a.Get(4)
	if r4.State != StateCommitted || r4.Attempts != 1 || r4.LastError != "axigen down" || !r4.NextAttempt.Equal(at.Add(time.Minute)) {
		t.Fatalf("record 4: %+v", r4)
	}
	if len(st.Disabled) != 1 || st.Disabled[0].Name != "Old" {
		t.Fatalf("disabled: %+v", st.Disabled)
	}

	// Entries at or below the applied index change nothing: a replayed log.
	replay := stamped(t, a, &next, at.Add(3*time.Second), Command{Op: CmdDrop, Seq: 4})
	if res, err := a.Apply(context.Background(), 2, replay); err != nil || res != nil {
		t.Fatalf("replayed entry: %v, %v", res, err)
	}
	if r, err := a.Get(4); err != nil || r.State != StateCommitted {
		t.Fatalf("a replayed entry dropped record 4: %v, %v", r, err)
	}

	// Commands that do not fit the state are refused the same way
	// everywhere, and the entry still counts as applied.
	refused := []Command{
		{Op: CmdCommit, Seq: 3, Time: at},                              // aborted
		{Op: CmdPrepare, Seq: 2, Time: at, Record: r1.next()},          // not above the last seq
		{Op: CmdOutcome, Seq: 4, Term: 1, Time: at},                    // fenced-off term
		{Op: CmdRetry, Seq: 1, Time: at},                               // delivered
		{Op: CmdPutDisabled, Disabled: DisabledAccount{}},              // no name
		{Op: CommandOp(200)},                                           // unknown
		{Op: CmdPurge, Time: at, Seqs: []uint64{1}},                    // delivered after the cutoff: kept
		{Op: CmdPurge, Time: at.Add(time.Hour), Seqs: []uint64{1, 99}}, // purged
	}
	res := applyBoth(t, 4, refused, a, b)
	wantErr := []error{ErrNotFound, ErrSeq, ErrStaleTerm, ErrState, nil, nil, nil, nil}
	for k, err := range res {
		switch {
		case k == 4 || k == 5:
			if err == nil {
				t.Errorf("command %d applied", k)
			}
		case wantErr[k] == nil:
			if err != nil {
				t.Errorf("command %d: %v", k, err)
			}
		case !errors.Is(err, wantErr[k]):
			t.Errorf("command %d: %v, want %v", k, err, wantErr[k])
		}
	}
	if _, err := a.Get(1); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record 1 not purged: %v", err)
	}
	sameState(t, a, b)
	if a.AppliedIndex() != 4 {
		t.Fatalf("applied index %d, want 4", a.AppliedIndex())
	}
}

// TestAppliedIndexSurvivesReopen: the applied index is on disk with the
// data it stands for.
func TestAppliedIndexSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.Replicated = true
	j, err := Open(filepath.Join(dir, "journal"), opts)
	if err != nil {
		t.Fatal(err)
	}
	var next uint64
	at := time.Now()
	for i := uint64(1); i <= 20; i++ {
		cmds := stamped(t, j, &next, at, Command{Op: CmdPrepare, Record: accountRecord("uid=a,dc=x")})
		if _, err := j.Apply(context.Background(), i, cmds); err != nil {
			t.Fatal(err)
		}
	}
	want := stateOf(t, j)
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = openTest(t, dir, opts)
	if got := stateOf(t, j); !reflect.DeepEqual(got, want) {
		t.Fatalf("after reopening:\n%+v\nwant\n%+v", got, want)
	}
	if j.AppliedIndex() != 20 {
		t.Fatalf("applied index %d", j.AppliedIndex())
	}
}

func TestSnapshotRestore(t *testing.T) {
	a, b, _ := replicatedPair(t)
	ctx := context.Background()
	at := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	var next uint64
	pw := accountRecord("uid=ann,ou=people,dc=example,dc=org")
	pw.Op, pw.Changes, pw.Secret = OpPassword, nil, []byte("pa55")
	cmds := stamped(t, a, &next, at,
		Command{Op: CmdPrepare, Record: accountRecord("uid=ann,ou=people,dc=example,dc=org")},
		Command{Op: CmdPrepare, Record: pw},
		Command{Op: CmdPrepare, Record: accountRecord("uid=bob,ou=people,dc=example,dc=org")},
		Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "old", EntryKey: "k-old", Reason: DisabledGone, Since: at}},
		Command{Op: CmdFence, Term: 3})
	if _, err := a.Apply(ctx, 10, cmds); err != nil {
		t.Fatal(err)
	}
	later := stamped(t, a, &next, at.Add(time.Second),
		Command{Op: CmdCommit, Seq: 1}, Command{Op: CmdCommit, Seq: 2})
	if _, err := a.Apply(ctx, 11, later); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Apply(ctx, 12, stamped(t, a, &next, at.Add(2*time.Second),
		Command{Op: CmdOutcome, Seq: 1, Term: 3, Outcome: Outcome{Delivered: true}})); err != nil {
		t.Fatal(err)
	}
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
	snap := snapshot(a)

	// b holds something else, which the snapshot replaces whole.
	var otherNext uint64
	if _, err := b.Apply(ctx, 5, stamped(t, b, &otherNext, at,
		Command{Op: CmdPrepare, Record: accountRecord("uid=zed,dc=x")},
		Command{Op: CmdPutDisabled, Disabled: DisabledAccount{Name: "zed", Since: at}})); err != nil {
		t.Fatal(err)
	}
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameState(t, a, b)
	if b.AppliedIndex() != 12 || b.DeliveryTerm() != 3 {
		t.Fatalf("restored applied index %d, term %d", b.AppliedIndex(), b.DeliveryTerm())
	}
	// Both go on alike.
	more := stamped(t, a, &next, at.Add(3*time.Second), Command{Op: CmdPrepare, Record: accountRecord("uid=dan,dc=x")}, Command{Op: CmdAbort, Seq: 3})
	applyBoth(t, 13, more, a, b)
	sameState(t, a, b)

	// An older snapshot than the state is read and ignored.
	if err := b.Restore(bytes.NewReader(snap)); err != nil {
		t.Fatal(err)
	}
	sameState(t, a, b)

	// A truncated snapshot leaves a journal that applies nothing, even
	// after reopening, until a whole snapshot is restored.
	c := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	if err := c.Restore(bytes.NewReader(snap[:len(snap)-3])); err == nil {
		t.Fatal("a truncated snapshot restored")
	}
	if _, err := c.Apply(ctx, 13, more); err == nil {
		t.Fatal("a half-restored journal applied an entry")
	}
	if _, err := c.Snapshot(); err == nil {
		t.Fatal("a half-restored journal gave a snapshot")
	}
	dir := filepath.Dir(c.Dir())
	opts := c.opts
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	c = openTest(t, dir, opts)
	if _, err := c.Apply(ctx, 13, more); err == nil {
		t.Fatal("a half-restored journal applied an entry after reopening")
	}
	if err := c.Restore(bytes.NewReader(snapshot(a))); err != nil {
		t.Fatal(err)
	}
	sameState(t, a, c)

	// Another key's snapshot is refused before anything changes.
	stranger := openReplicated(t, t.TempDir(), "")
	if err := stranger.Restore(bytes.NewReader(snapshot(a))); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("restore under another key: %v", err)
	}
	if _, err := stranger.Snapshot(); err != nil {
		t.Fatalf("the refused restore broke the journal: %v", err)
	}
	if err := b.Restore(io.LimitReader(bytes.NewReader([]byte("not a snapshot")), 100)); err == nil {
		t.Fatal("garbage restored")
	}
}

// TestSnapshotHoldsOnlySettledEntries: Badger shows a batch as soon as it
// has written it, before its sync; a snapshot asked for meanwhile is
// taken once the batch is settled, never before, and holds it.
func TestSnapshotHoldsOnlySettledEntries(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.Replicated = true
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
	ctx := context.Background()
	at := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	var next uint64
	if _, err := j.Apply(ctx, 1, stamped(t, j, &next, at, Command{Op: CmdPrepare, Record: accountRecord("uid=a,dc=x")})); err != nil {
		t.Fatal(err)
	}
	second := stamped(t, j, &next, at, Command{Op: CmdPrepare, Record: accountRecord("uid=b,dc=x")})

	holding.Store(true)
	applied := make(chan error, 1)
	go func() {
		_, err := j.Apply(ctx, 2, second)
		applied <- err
	}()
	<-written // entry 2 is in Badger, not yet synced
	type result struct {
		s   *Snapshot
		err error
	}
	taken := make(chan result, 1)
	go func() {
		s, err := j.Snapshot()
		taken <- result{s, err}
	}()
	// Proving that something does not happen takes a wait: a snapshot
	// taken at once would show in microseconds.
	select {
	case r := <-taken:
		t.Fatalf("snapshot taken while entry 2 waits for its sync: at %d, %v", r.s.AppliedIndex(), r.err)
	case <-time.After(200 * time.Millisecond):
	}
	letGo()
	if err := <-applied; err != nil {
		t.Fatal(err)
	}
	r := <-taken
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer r.s.Close()
	if r.s.AppliedIndex() != 2 {
		t.Fatalf("snapshot at %d, want 2", r.s.AppliedIndex())
	}
	var buf bytes.Buffer
	if _, err := r.s.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	copyOf := openReplicated(t, t.TempDir(), o.KeyFile)
	if err := copyOf.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	sameState(t, j, copyOf)
}

// TestApplyRefusesAnOversizedEntry: an entry too large for one Badger
// transaction is refused whole, alike everywhere, and still counts as
// applied.
func TestApplyRefusesAnOversizedEntry(t *testing.T) {
	a, b, _ := replicatedPair(t)
	var next uint64
	at := time.Now()
	big := func(uid string) Command {
		r := accountRecord("uid=" + uid + ",dc=x")
		r.Changes = []Change{{Op: "replace", Attr: "description", Values: []string{string(bytes.Repeat([]byte("x"), 100<<10))}}}
		return Command{Op: CmdPrepare, Record: r}
	}
	var cmds []Command
	for i := range 6 {
		cmds = append(cmds, big(fmt.Sprint(i)))
	}
	cmds = stamped(t, a, &next, at, cmds...)
	for i, err := range applyBoth(t, 1, cmds, a, b) {
		if !errors.Is(err, ErrTooLarge) {
			t.Fatalf("command %d: %v, want ErrTooLarge", i, err)
		}
	}
	sameState(t, a, b)
	if st := stateOf(t, a); st.Applied != 1 || len(st.Records) != 0 {
		t.Fatalf("applied %d, %d records", st.Applied, len(st.Records))
	}
	// Within the bound, the same records go in.
	for i, err := range applyBoth(t, 2, cmds[:4], a, b) {
		if err != nil {
			t.Fatalf("command %d: %v", i, err)
		}
	}
	sameState(t, a, b)
}
