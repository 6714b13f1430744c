package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"
)

// tokenPrepare is a Prepare as proposePrepare makes it: the record
// carries a fresh token.
func tokenPrepare(t *testing.T, dn string) (Command, PrepareToken) {
	t.Helper()
	tok, err := NewPrepareToken()
	if err != nil {
		t.Fatal(err)
	}
	r := accountRecord(dn)
	r.Token = tok
	return Command{Op: CmdPrepare, Record: r}, tok
}

func abortToken(tok PrepareToken) Command { return Command{Op: CmdAbortToken, Token: tok} }

// tombstonesOf are the journal's tombstones as its writer last settled
// them.
func tombstonesOf(j *Journal) []tombstone { return j.w.current().aborted }

// preparedCount is how many records j holds prepared.
func preparedCount(t *testing.T, j *Journal) int {
	t.Helper()
	recs, err := j.Prepared()
	if err != nil {
		t.Fatal(err)
	}
	return len(recs)
}

// TestAbortTokenAfterItsPrepare: the abort finds the prepared record by
// its token and removes it on every node; the entry's next record is then
// the oldest of its entry, deliverable; a second abort (a retry after an
// unknown outcome of its own) changes nothing.
func TestAbortTokenAfterItsPrepare(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	var next uint64
	const dn = "uid=ann,ou=people,dc=example,dc=org"
	p, tok := tokenPrepare(t, dn)
	applyBoth(t, 1, stamped(t, a, &next, at, p), a, b)
	if got, _ := a.Get(1); got == nil || got.Token != tok {
		t.Fatalf("record 1 does not hold its Prepare's token: %+v", got)
	}
	if res := applyBoth(t, 2, stamped(t, a, &next, at.Add(time.Second), abortToken(tok)), a, b); res[0] != nil {
		t.Fatalf("abort by token: %v", res[0])
	}
	for _, j := range []*Journal{a, b} {
		if _, err := j.Get(1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record 1 after its abort by token: %v", err)
		}
		if ts := tombstonesOf(j); len(ts) != 0 {
			t.Fatalf("an abort that found its record left tombstones: %v", ts)
		}
	}
	// Again, as a retry would: applied, nothing more to abort.
	if res := applyBoth(t, 3, stamped(t, a, &next, at.Add(2*time.Second), abortToken(tok)), a, b); res[0] != nil {
		t.Fatalf("abort by token again: %v", res[0])
	}
	// The entry takes its next write, which nothing holds back.
	p2, _ := tokenPrepare(t, dn)
	applyBoth(t, 4, stamped(t, a, &next, at.Add(3*time.Second), p2), a, b)
	applyBoth(t, 5, stamped(t, a, &next, at.Add(3*time.Second), Command{Op: CmdCommit, Seq: 2}), a, b)
	for _, j := range []*Journal{a, b} {
		if n := preparedCount(t, j); n != 0 {
			t.Fatalf("%d records still prepared", n)
		}
	}
	sameState(t, a, b)
}

// TestAbortTokenInTheSameBatchAsItsPrepare: entries applied together share
// one Badger transaction; the abort sees the Prepare the batch just wrote,
// and one applied after a restart finds the record through the index.
func TestAbortTokenInTheSameBatchAsItsPrepare(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	var next uint64
	p1, tok1 := tokenPrepare(t, "uid=a,dc=x")
	p2, tok2 := tokenPrepare(t, "uid=b,dc=x")
	entries := []Entry{
		{Index: 1, Commands: stamped(t, a, &next, at, p1, p2)},
		{Index: 2, Commands: stamped(t, a, &next, at, abortToken(tok1))},
	}
	for _, j := range []*Journal{a, b} {
		res, err := j.ApplyEntries(context.Background(), entries)
		if err != nil || res[1][0] != nil {
			t.Fatalf("apply: %v %v", err, res)
		}
		if _, err := j.Get(1); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record 1 after its abort in the same batch: %v", err)
		}
	}
	// After a restart neither the batch nor the writer's cache holds
	// record 2: the index does.
	dir := b.opts.KeyFile[:len(b.opts.KeyFile)-len("/journal.key")]
	opts := b.opts
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, dir, opts)
	applyBoth(t, 3, stamped(t, a, &next, at, abortToken(tok2)), a, b)
	for _, j := range []*Journal{a, b} {
		if _, err := j.Get(2); !errors.Is(err, ErrNotFound) {
			t.Fatalf("record 2 after its abort by token: %v", err)
		}
	}
	sameState(t, a, b)
}

// TestAbortTokenBeforeItsPrepare: an abort applied before its Prepare
// (a stale proposal appended after it) leaves a tombstone, the same on
// every node, through a restart and a snapshot, and the Prepare is
// refused when it comes; other Prepares are not.
func TestAbortTokenBeforeItsPrepare(t *testing.T) {
	a, b, _ := replicatedPair(t)
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	var next uint64
	p, tok := tokenPrepare(t, "uid=ann,dc=x")
	if res := applyBoth(t, 1, stamped(t, a, &next, at, abortToken(tok)), a, b); res[0] != nil {
		t.Fatalf("abort by token of no record: %v", res[0])
	}
	for _, j := range []*Journal{a, b} {
		if ts := tombstonesOf(j); len(ts) != 1 || ts[0].token != tok || ts[0].expires != at.Add(tombstoneTTL).UnixNano() {
			t.Fatalf("tombstones: %+v", ts)
		}
	}

	// Carried by a snapshot, into a node that never saw the abort.
	s, err := a.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var snap bytes.Buffer
	if _, err := s.WriteTo(&snap); err != nil {
		t.Fatal(err)
	}
	s.Close()
	c := openReplicated(t, t.TempDir(), a.opts.KeyFile)
	if err := c.Restore(bytes.NewReader(snap.Bytes())); err != nil {
		t.Fatal(err)
	}
	// And through a restart.
	dir := b.opts.KeyFile[:len(b.opts.KeyFile)-len("/journal.key")]
	opts := b.opts
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	b = openTest(t, dir, opts)
	for name, j := range map[string]*Journal{"restored": c, "reopened": b} {
		if !reflect.DeepEqual(tombstonesOf(j), tombstonesOf(a)) {
			t.Fatalf("%s journal's tombstones: %+v, want %+v", name, tombstonesOf(j), tombstonesOf(a))
		}
	}

	other, _ := tokenPrepare(t, "uid=bob,dc=x")
	res := applyBoth(t, 2, stamped(t, a, &next, at.Add(time.Second), p, other), a, b, c)
	if !errors.Is(res[0], ErrAborted) {
		t.Fatalf("Prepare after its abort: %v, want ErrAborted", res[0])
	}
	if res[1] != nil {
		t.Fatalf("another Prepare: %v", res[1])
	}
	for _, j := range []*Journal{a, b, c} {
		if n := preparedCount(t, j); n != 1 {
			t.Fatalf("%d records prepared, want 1 (bob's)", n)
		}
	}
	sameState(t, a, b)
	sameState(t, a, c)
}

// TestTombstonesExpireAlikeEverywhere: tombstones go once an abort's time
// (the leader's clock, in the command) is past their expiry, whatever
// each node's own clock says; until then the Prepare stays refused.
func TestTombstonesExpireAlikeEverywhere(t *testing.T) {
	clockA, clockB := newFakeClock(), newFakeClock()
	clockB.Advance(48 * time.Hour) // b's clock is far off: it does not count
	a, b := replicatedPairWith(t, func(o *Options) {})
	a.opts.Now, b.opts.Now = clockA.Now, clockB.Now
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	var next uint64
	p1, tok1 := tokenPrepare(t, "uid=a,dc=x")
	_, tok2 := tokenPrepare(t, "uid=b,dc=x")
	p3, tok3 := tokenPrepare(t, "uid=c,dc=x")
	applyBoth(t, 1, stamped(t, a, &next, at, abortToken(tok1)), a, b)
	// Just before tok1's expiry: both kept.
	applyBoth(t, 2, stamped(t, a, &next, at.Add(tombstoneTTL-time.Second), abortToken(tok2)), a, b)
	for _, j := range []*Journal{a, b} {
		if n := len(tombstonesOf(j)); n != 2 {
			t.Fatalf("%d tombstones, want 2", n)
		}
	}
	// Past it: tok1's goes, everywhere.
	applyBoth(t, 3, stamped(t, a, &next, at.Add(tombstoneTTL+time.Second), abortToken(tok3)), a, b)
	for _, j := range []*Journal{a, b} {
		ts := tombstonesOf(j)
		if len(ts) != 2 || tombstoned(ts, tok1) || !tombstoned(ts, tok2) || !tombstoned(ts, tok3) {
			t.Fatalf("tombstones after tok1's expiry: %+v", ts)
		}
	}
	// A Prepare that came that late is taken (left to the orphan settling,
	// as before tokens); one whose tombstone stands is refused.
	res := applyBoth(t, 4, stamped(t, a, &next, at.Add(tombstoneTTL+2*time.Second), p1, p3), a, b)
	if res[0] != nil || !errors.Is(res[1], ErrAborted) {
		t.Fatalf("late Prepares: %v", res)
	}
	sameState(t, a, b)
}

// TestTombstonesAreBounded: a burst of aborts keeps at most
// maxTombstones, the soonest to expire dropped first.
func TestTombstonesAreBounded(t *testing.T) {
	at := time.Date(2026, 12, 7, 2, 0, 0, 0, time.UTC)
	var ts []tombstone
	var first PrepareToken
	for i := range maxTombstones + 10 {
		var tok PrepareToken
		copy(tok[:], fmt.Sprintf("%016d", i))
		if i == 0 {
			first = tok
		}
		ts = withTombstone(ts, tok, at.Add(time.Duration(i)*time.Millisecond))
	}
	if len(ts) != maxTombstones || tombstoned(ts, first) {
		t.Fatalf("%d tombstones (first kept: %v)", len(ts), tombstoned(ts, first))
	}
	back, err := decodeTombstones(encodeTombstones(ts))
	if err != nil || !reflect.DeepEqual(back, ts) {
		t.Fatalf("tombstones do not round-trip: %v", err)
	}
}

// TestTokensInTheEncodings: a record with a token keeps it through its
// encoding; one without is encoded as before tokens; a batch with an
// abort by token is format 2, the others format 1.
func TestTokensInTheEncodings(t *testing.T) {
	r := accountRecord("uid=ann,dc=x")
	r.Seq, r.State = 3, StatePrepared
	plain := encodeRecord(r)
	tok, _ := NewPrepareToken()
	r.Token = tok
	withTok := encodeRecord(r)
	if !bytes.HasPrefix(withTok, plain) || len(withTok) != len(plain)+17 {
		t.Fatalf("a token is not an optional last field: %d bytes, %d without", len(withTok), len(plain))
	}
	got, err := decodeRecord(withTok)
	if err != nil || got.Token != tok {
		t.Fatalf("decode: %v %v", err, got)
	}
	if got, err := decodeRecord(plain); err != nil || !got.Token.IsZero() {
		t.Fatalf("decode without a token: %v %v", err, got)
	}
	prep := EncodeCommands([]Command{{Op: CmdPrepare, Record: r}})
	if prep[0] != commandFormat1 {
		t.Fatalf("a Prepare batch is format %d", prep[0])
	}
	mixed := []Command{{Op: CmdCommit, Seq: 2}, {Op: CmdAbortToken, Token: tok, Time: time.Unix(5, 0).UTC()}}
	enc := EncodeCommands(mixed)
	if enc[0] != commandFormat2 {
		t.Fatalf("an abort by token batch is format %d", enc[0])
	}
	back, err := DecodeCommands(enc)
	if err != nil || back[1].Token != tok || back[1].Op != CmdAbortToken || !back[0].Token.IsZero() {
		t.Fatalf("decode: %v %+v", err, back)
	}
	cmds, err := DecodeCommands(prep)
	if err != nil || cmds[0].Record.Token != tok {
		t.Fatalf("decode a Prepare: %v", err)
	}
}

// lossyProposer applies every proposal and then, when lose is set, says
// the answer was lost, as a cluster whose leader died before answering.
type lossyProposer struct {
	c    *testCluster
	lose bool
}

func (p *lossyProposer) Propose(ctx context.Context, cmds []Command) ([]Applied, error) {
	res, err := p.c.Propose(ctx, cmds)
	if err == nil && p.lose {
		return nil, fmt.Errorf("the leader's answer was lost: %w", ErrOutcomeUnknown)
	}
	return res, err
}

// TestUnknownPrepareIsAbortedByItsToken: a Prepare whose answer is lost
// fails with its token; AbortToken through the cluster removes the
// record it journaled on every node. A failure that certainly did not
// reach the log carries no token (nothing to abort).
func TestUnknownPrepareIsAbortedByItsToken(t *testing.T) {
	a, b, _ := replicatedPair(t)
	p := &lossyProposer{c: newTestCluster(t, a, b), lose: true}
	a.SetProposer(p)
	b.SetProposer(p)
	ctx := context.Background()
	const dn = "uid=ann,ou=people,dc=example,dc=org"
	_, err := b.Prepare(ctx, passwordRecord(dn, "s3cret"))
	var unknown *UnknownPrepareError
	if !errors.As(err, &unknown) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("prepare with a lost answer: %v", err)
	}
	if n := preparedCount(t, a); n != 1 {
		t.Fatalf("%d records prepared, want the one whose answer was lost", n)
	}
	p.lose = false
	if err := b.AbortToken(ctx, unknown.Token); err != nil {
		t.Fatal(err)
	}
	for _, j := range []*Journal{a, b} {
		if n := preparedCount(t, j); n != 0 {
			t.Fatalf("%d records prepared after the abort by token", n)
		}
	}
	sameState(t, a, b)

	p.c.setFail(fmt.Errorf("no leader: %w", ErrUnavailable))
	if _, err := b.Prepare(ctx, accountRecord(dn)); err == nil || errors.As(err, &unknown) {
		t.Fatalf("prepare without a quorum: %v (a token: %v)", err, errors.As(err, &unknown))
	}
	// A journal of its own has no tokens to abort.
	lone, _ := newTestJournal(t)
	if err := lone.AbortToken(ctx, unknown.Token); err == nil {
		t.Fatal("AbortToken on a journal of its own succeeded")
	}
}
