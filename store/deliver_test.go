package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// orderRecorder is a deliverer that checks per-entry ordering: it records
// the order of deliveries per history and fails the test if two deliveries
// of one history overlap.
type orderRecorder struct {
	t       *testing.T
	mu      sync.Mutex
	active  map[string]bool
	order   map[string][]uint64
	maxPar  int
	current int
	hold    func(r *Record) // called while the delivery is "in progress"
}

func newOrderRecorder(t *testing.T) *orderRecorder {
	return &orderRecorder{t: t, active: map[string]bool{}, order: map[string][]uint64{}}
}

func (o *orderRecorder) deliver(_ context.Context, r *Record) error {
	key := r.EntryKey
	o.mu.Lock()
	if o.active[key] {
		o.t.Errorf("record %d: another delivery of entry %q is in flight", r.Seq, key)
	}
	o.active[key] = true
	o.current++
	o.maxPar = max(o.maxPar, o.current)
	o.mu.Unlock()
	if o.hold != nil {
		o.hold(r)
	}
	o.mu.Lock()
	o.active[key] = false
	o.current--
	o.order[key] = append(o.order[key], r.Seq)
	o.mu.Unlock()
	return nil
}

func TestDeliveryKeepsPerEntryOrderAndRunsEntriesInParallel(t *testing.T) {
	j, _ := newTestJournal(t)
	rec := newOrderRecorder(t)
	// Two entries' first deliveries wait for each other: only a deliverer
	// that runs different entries in parallel gets past this.
	var first sync.WaitGroup
	first.Add(2)
	var seen sync.Map
	rec.hold = func(r *Record) {
		if _, dup := seen.LoadOrStore(r.EntryKey, true); !dup && (r.EntryKey == "e0" || r.EntryKey == "e1") {
			first.Done()
			first.Wait()
		}
	}
	want := map[string][]uint64{}
	for i := range 60 {
		key := fmt.Sprintf("e%d", i%4)
		seq := mustPrepareCommit(t, j, accountRecord("uid="+key+",dc=example,dc=org"), key)
		want[key] = append(want[key], seq)
	}
	startRun(t, j, 4, rec.deliver)
	waitFor(t, "all deliveries", 30*time.Second, func() bool {
		s, _ := j.Stats()
		return s.Delivered == 60
	})
	rec.mu.Lock()
	defer rec.mu.Unlock()
	for key, seqs := range want {
		if !slices.Equal(rec.order[key], seqs) {
			t.Errorf("entry %s delivered in order %v, want %v", key, rec.order[key], seqs)
		}
	}
	if rec.maxPar < 2 {
		t.Errorf("at most %d deliveries ran at once; different entries should run in parallel", rec.maxPar)
	}
}

func TestRenameJoinsOneHistory(t *testing.T) {
	// Records of one entry reach the journal under different names: before
	// its key is known, under its old DN, under its new DN. They form one
	// history, delivered in sequence order, one at a time.
	j, _ := newTestJournal(t)
	ctx := context.Background()
	oldDN, newDN := "uid=ann,ou=people,dc=example,dc=org", "uid=anne,ou=people,dc=example,dc=org"

	add := &Record{Kind: KindAccount, Op: OpAdd, DN: oldDN}
	addSeq, _ := j.Prepare(ctx, add)
	mod := accountRecord(strings.ToUpper(oldDN)) // DN case differs, key unknown
	modSeq, _ := j.Prepare(ctx, mod)
	ren := &Record{Kind: KindAccount, Op: OpRename, DN: oldDN, NewDN: newDN, EntryKey: "uuid-ann"}
	renSeq, _ := j.Prepare(ctx, ren)
	after := accountRecord(newDN) // only the new DN, no key
	afterSeq, _ := j.Prepare(ctx, after)
	other := accountRecord("uid=zed,ou=people,dc=example,dc=org")
	otherSeq, _ := j.Prepare(ctx, other)

	// Commit out of order; the add learns its key only now.
	for _, c := range []struct {
		seq uint64
		key string
	}{{afterSeq, ""}, {renSeq, ""}, {otherSeq, ""}, {modSeq, ""}, {addSeq, "uuid-ann"}} {
		if err := j.Commit(ctx, c.seq, c.key); err != nil {
			t.Fatal(err)
		}
	}

	j.sched.mu.Lock()
	due, _ := j.sched.idx.due(time.Now().Add(time.Hour), 10)
	j.sched.mu.Unlock()
	var dueSeqs []uint64
	for _, d := range due {
		dueSeqs = append(dueSeqs, d.seq)
	}
	slices.Sort(dueSeqs)
	if !slices.Equal(dueSeqs, []uint64{addSeq, otherSeq}) {
		t.Fatalf("deliverable at first: %v, want the add (%d) and the unrelated entry (%d)", dueSeqs, addSeq, otherSeq)
	}
	j.sched.mu.Lock()
	for _, d := range due {
		j.sched.idx.release(d)
	}
	j.sched.mu.Unlock()

	var mu sync.Mutex
	var order []uint64
	var inFlight atomic.Int32
	startRun(t, j, 4, func(_ context.Context, r *Record) error {
		if r.Seq != otherSeq {
			if inFlight.Add(1) > 1 {
				t.Errorf("record %d delivered while another of the same history was in flight", r.Seq)
			}
			defer inFlight.Add(-1)
			mu.Lock()
			order = append(order, r.Seq)
			mu.Unlock()
		}
		return nil
	})
	waitState(t, j, afterSeq, StateDelivered)
	mu.Lock()
	defer mu.Unlock()
	if want := []uint64{addSeq, modSeq, renSeq, afterSeq}; !slices.Equal(order, want) {
		t.Fatalf("history delivered as %v, want %v", order, want)
	}
}

func TestPreparedRecordHoldsBackLaterRecordsOfItsEntry(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	dn := "uid=ann,dc=example,dc=org"
	first, _ := j.Prepare(ctx, accountRecord(dn)) // upstream has not answered yet
	second := mustPrepareCommit(t, j, accountRecord(dn), "")
	other := mustPrepareCommit(t, j, accountRecord("uid=bob,dc=example,dc=org"), "")

	dueNow := func() []uint64 {
		j.sched.mu.Lock()
		defer j.sched.mu.Unlock()
		due, _ := j.sched.idx.due(time.Now().Add(time.Hour), 10)
		var out []uint64
		for _, d := range due {
			out = append(out, d.seq)
			j.sched.idx.release(d)
		}
		slices.Sort(out)
		return out
	}
	if got := dueNow(); !slices.Equal(got, []uint64{other}) {
		t.Fatalf("deliverable while %d is prepared: %v, want only %d", first, got, other)
	}
	if err := j.Abort(ctx, first); err != nil {
		t.Fatal(err)
	}
	if got := dueNow(); !slices.Equal(got, []uint64{second, other}) {
		t.Fatalf("deliverable after abort: %v, want %d and %d", got, second, other)
	}
}

func TestBackoffGrowsWithJitterUpToCap(t *testing.T) {
	base, limit := time.Second, 30*time.Second
	for _, tc := range []struct {
		failures int
		full     time.Duration
	}{{1, 1 * time.Second}, {2, 2 * time.Second}, {3, 4 * time.Second}, {5, 16 * time.Second}, {6, 30 * time.Second}, {40, 30 * time.Second}} {
		if got := backoff(tc.failures, base, limit, 0); got != tc.full {
			t.Errorf("backoff after %d failures, no jitter: %v, want %v", tc.failures, got, tc.full)
		}
		if got := backoff(tc.failures, base, limit, 0.999999); got <= tc.full/2 || got > tc.full {
			t.Errorf("backoff after %d failures, most jitter: %v, want in (%v, %v]", tc.failures, got, tc.full/2, tc.full)
		}
	}
}

func TestFailedDeliveryBacksOffThenRetries(t *testing.T) {
	clock := newFakeClock()
	dir := t.TempDir()
	o := testOptions(dir)
	o.Now = clock.Now
	o.BackoffBase, o.BackoffCap = 10*time.Second, 25*time.Second
	j := openTest(t, dir, o)

	var calls atomic.Int32
	startRun(t, j, 2, func(context.Context, *Record) error {
		if calls.Add(1) <= 3 {
			return errors.New("connection refused")
		}
		return nil
	})
	t0 := clock.Now()
	seq := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "")

	for attempt, full := range []time.Duration{10 * time.Second, 20 * time.Second, 25 * time.Second} {
		var r *Record
		waitFor(t, fmt.Sprintf("failure %d", attempt+1), 30*time.Second, func() bool {
			r, _ = j.Get(seq)
			return r != nil && r.Attempts == attempt+1
		})
		wait := r.NextAttempt.Sub(clock.Now())
		if r.State != StateCommitted || r.LastError != "connection refused" || wait <= full/2 || wait > full {
			t.Fatalf("after failure %d: state %s, error %q, next attempt in %v (want in (%v, %v])", attempt+1, r.State, r.LastError, wait, full/2, full)
		}
		if got := calls.Load(); got != int32(attempt+1) {
			t.Fatalf("retried before the backoff: %d calls after %d failures", got, attempt+1)
		}
		clock.Advance(wait)
		j.sched.kick()
	}
	r := waitState(t, j, seq, StateDelivered)
	if r.Attempts != 4 || !r.DeliveredAt.After(t0) || r.LastError != "" {
		t.Fatalf("delivered record: %+v", r)
	}
}

func TestDeadLetterAfterMaxAttemptsThenRetryAndDrop(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.MaxAttempts = 3
	o.BackoffBase, o.BackoffCap = time.Millisecond, 2*time.Millisecond
	j := openTest(t, dir, o)
	ctx := context.Background()

	var healthy atomic.Bool
	var delivered sync.Map
	startRun(t, j, 2, func(_ context.Context, r *Record) error {
		if r.DN == "uid=poison,dc=example,dc=org" && !healthy.Load() {
			return errors.New("axigen: server busy")
		}
		delivered.Store(r.Seq, true)
		return nil
	})
	dn := "uid=poison,dc=example,dc=org"
	dead := mustPrepareCommit(t, j, accountRecord(dn), "")
	next := mustPrepareCommit(t, j, accountRecord(dn), "")
	r := waitState(t, j, dead, StateDead)
	if r.Attempts != 3 || r.LastError != "axigen: server busy" || !r.NextAttempt.IsZero() {
		t.Fatalf("dead letter: %+v", r)
	}
	// Stuck? No: once the first is dead, the entry's next record goes ahead
	// (and fails the same way, being on the same entry).
	waitState(t, j, next, StateDead)

	dl, err := j.List(Filter{States: []State{StateDead}})
	if err != nil || !slices.Equal(seqsOf(dl), []uint64{dead, next}) {
		t.Fatalf("dead letters: %v, %v", seqsOf(dl), err)
	}

	healthy.Store(true)
	if err := j.Retry(ctx, dead); err != nil {
		t.Fatal(err)
	}
	r = waitState(t, j, dead, StateDelivered)
	if r.Attempts != 1 {
		t.Fatalf("retried record delivered after %d attempts, want 1 (retry resets the count)", r.Attempts)
	}
	if err := j.Drop(ctx, next); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Get(next); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped record: %v, want ErrNotFound", err)
	}
	if _, ok := delivered.Load(next); ok {
		t.Fatal("dropped record was delivered")
	}
	if err := j.Drop(ctx, dead); !errors.Is(err, ErrState) {
		t.Fatalf("drop of a delivered record: %v, want ErrState", err)
	}
	if err := j.Retry(ctx, dead); !errors.Is(err, ErrState) {
		t.Fatalf("retry of a delivered record: %v, want ErrState", err)
	}
	s, _ := j.Stats()
	if s.Dead != 0 || s.Delivered != 1 {
		t.Fatalf("stats after retry and drop: %+v", s)
	}
}

func TestPermanentErrorKillsAtOnce(t *testing.T) {
	j, _ := newTestJournal(t)
	startRun(t, j, 1, func(context.Context, *Record) error {
		return Permanent(errors.New("axigen cannot store this value"))
	})
	seq := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "")
	r := waitState(t, j, seq, StateDead)
	if r.Attempts != 1 || r.LastError != "axigen cannot store this value" {
		t.Fatalf("dead record: attempts %d, error %q", r.Attempts, r.LastError)
	}
}

// A delivery put off (Postpone) is tried again without counting: a journal
// that makes a record dead after one failure puts it off many times, then
// delivers it.
func TestPostponedDeliveryIsNotAnAttempt(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.MaxAttempts, o.BackoffBase = 1, time.Millisecond
	j, err := Open(dir, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { j.Close() })
	var tries atomic.Int64
	startRun(t, j, 1, func(context.Context, *Record) error {
		if tries.Add(1) <= 5 {
			return Postpone(errors.New("a write of the group is on its way"))
		}
		return nil
	})
	seq := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "")
	r := waitState(t, j, seq, StateDelivered)
	if r.Attempts != 1 || tries.Load() != 6 {
		t.Fatalf("delivered after %d tries with %d attempts counted; want 6 tries, 1 attempt", tries.Load(), r.Attempts)
	}
}

// An incomplete delivery (the deliverer skipped a value) is a delivery:
// the record is delivered at once, its secret erased, what was skipped in
// its LastError; the entry's next record is delivered in turn.
func TestIncompleteDeliveryIsDeliveredWithItsNote(t *testing.T) {
	j, _ := newTestJournal(t)
	startRun(t, j, 1, func(_ context.Context, r *Record) error {
		if r.Op == OpPassword {
			return Incomplete(errors.New("skipped displayName: too long"))
		}
		return nil
	})
	first := accountRecord("uid=ann,dc=example,dc=org")
	first.Op, first.Secret = OpPassword, []byte("s3cret")
	seq := mustPrepareCommit(t, j, first, "key-ann")
	r := waitState(t, j, seq, StateDelivered)
	if r.Attempts != 1 || r.LastError != "skipped displayName: too long" || r.SecretState != SecretErased {
		t.Fatalf("incomplete delivery: attempts %d, error %q, secret %q; want 1, the skip, erased", r.Attempts, r.LastError, r.SecretState)
	}
	next := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "key-ann")
	if r := waitState(t, j, next, StateDelivered); r.LastError != "" {
		t.Fatalf("a complete delivery's LastError %q", r.LastError)
	}
}

func TestDeliveryPanicIsAFailure(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	o.MaxAttempts = 1
	j := openTest(t, dir, o)
	startRun(t, j, 1, func(context.Context, *Record) error { panic("bug in the deliverer") })
	seq := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "")
	if r := waitState(t, j, seq, StateDead); !strings.Contains(r.LastError, "bug in the deliverer") {
		t.Fatalf("last error %q does not report the panic", r.LastError)
	}
}

func TestCommitWakesDeliveryAtOnce(t *testing.T) {
	// A dispatcher that polled would show its polling period here; one woken
	// by the commit delivers within scheduling noise.
	j, _ := newTestJournal(t)
	got := make(chan time.Time, 100)
	startRun(t, j, 4, func(context.Context, *Record) error {
		got <- time.Now()
		return nil
	})
	var lat []time.Duration
	for i := range 50 {
		committed := time.Now()
		mustPrepareCommit(t, j, accountRecord(fmt.Sprintf("uid=u%d,dc=example,dc=org", i)), "")
		select {
		case at := <-got:
			lat = append(lat, at.Sub(committed))
		case <-time.After(10 * time.Second):
			t.Fatalf("record %d not delivered within 10s of its commit", i)
		}
	}
	slices.Sort(lat)
	t.Logf("commit to delivery: median %v, slowest %v", lat[len(lat)/2], lat[len(lat)-1])
	if lat[len(lat)/2] > 100*time.Millisecond {
		t.Fatalf("median commit-to-delivery %v; the dispatcher should be woken by the commit", lat[len(lat)/2])
	}
}

func TestShutdownDuringDeliveryIsNotAnAttempt(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx, cancel := context.WithCancel(context.Background())
	started := make(chan struct{})
	done := make(chan error)
	go func() {
		done <- j.Run(ctx, 1, DeliverFunc(func(ctx context.Context, _ *Record) error {
			close(started)
			<-ctx.Done()
			return ctx.Err()
		}))
	}()
	seq := mustPrepareCommit(t, j, accountRecord("uid=ann,dc=example,dc=org"), "")
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	r, _ := j.Get(seq)
	if r.State != StateCommitted || r.Attempts != 0 || r.LastError != "" {
		t.Fatalf("after shutdown: %+v; want committed with no attempt counted", r)
	}
}

func TestOnlyOneRunAtATime(t *testing.T) {
	j, _ := newTestJournal(t)
	startRun(t, j, 1, func(context.Context, *Record) error { return nil })
	waitFor(t, "run to start", 30*time.Second, func() bool {
		j.sched.mu.Lock()
		defer j.sched.mu.Unlock()
		return j.sched.running
	})
	if err := j.Run(context.Background(), 1, nil); !errors.Is(err, ErrRunning) {
		t.Fatalf("second run: %v, want ErrRunning", err)
	}
}

func TestDropDuringDeliveryReleasesTheEntry(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	dn := "uid=ann,dc=example,dc=org"
	first := mustPrepareCommit(t, j, accountRecord(dn), "")
	second := mustPrepareCommit(t, j, accountRecord(dn), "")
	started, finish := make(chan struct{}), make(chan struct{})
	startRun(t, j, 2, func(_ context.Context, r *Record) error {
		if r.Seq == first {
			close(started)
			<-finish
		}
		return nil
	})
	<-started
	if err := j.Drop(ctx, first); err != nil {
		t.Fatal(err)
	}
	close(finish)
	// The dropped record's delivery ends without a trace; the entry's next
	// record must not stay blocked behind it.
	waitState(t, j, second, StateDelivered)
	if _, err := j.Get(first); !errors.Is(err, ErrNotFound) {
		t.Fatalf("dropped record: %v", err)
	}
}

// A prepared record is never dropped: its write may be on its way, or made
// and acknowledged with its outcome not settled yet; dropped, the write
// would never reach Axigen. Once committed it may be.
func TestDropRefusesAPreparedRecord(t *testing.T) {
	j, _ := newTestJournal(t)
	ctx := context.Background()
	seq, err := j.Prepare(ctx, accountRecord("uid=alice,dc=example,dc=org"))
	if err != nil {
		t.Fatal(err)
	}
	if err := j.Drop(ctx, seq); !errors.Is(err, ErrState) || !strings.Contains(err.Error(), "prepared") {
		t.Fatalf("drop of a prepared record: %v, want ErrState saying it is prepared", err)
	}
	if r, err := j.Get(seq); err != nil || r.State != StatePrepared {
		t.Fatalf("after the refused drop: %+v, %v", r, err)
	}
	if err := j.Commit(ctx, seq, ""); err != nil {
		t.Fatal(err)
	}
	if err := j.Drop(ctx, seq); err != nil {
		t.Fatalf("drop of the committed record: %v", err)
	}
}
