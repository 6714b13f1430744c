package store

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// batchRecorder is a BatchDeliverer that records the batches it was
// handed and fails the records of the DNs in fail.
type batchRecorder struct {
	t       *testing.T
	max     int
	mu      sync.Mutex
	batches [][]uint64
	order   map[string][]uint64 // by entry key
	fail    map[string]error    // by DN
}

func (b *batchRecorder) MaxBatch() int { return b.max }

func (b *batchRecorder) Deliver(ctx context.Context, r *Record) error {
	return b.DeliverBatch(ctx, []*Record{r})[0]
}

func (b *batchRecorder) DeliverBatch(_ context.Context, recs []*Record) []error {
	b.mu.Lock()
	defer b.mu.Unlock()
	var seqs []uint64
	seen := map[string]bool{}
	errs := make([]error, len(recs))
	for i, r := range recs {
		if seen[r.EntryKey] {
			b.t.Errorf("record %d: a batch holds two records of entry %q", r.Seq, r.EntryKey)
		}
		seen[r.EntryKey] = true
		seqs = append(seqs, r.Seq)
		b.order[r.EntryKey] = append(b.order[r.EntryKey], r.Seq)
		errs[i] = b.fail[r.DN]
	}
	b.batches = append(b.batches, seqs)
	return errs
}

// TestBatchDeliveryTakesReadyRecordsOfDifferentEntries: a worker takes the
// records ready at once, of different entries, up to MaxBatch; each entry's
// records stay in order, each record gets its own outcome (an entry's
// permanent failures make its records dead, their neighbours in each
// batch are delivered).
func TestBatchDeliveryTakesReadyRecordsOfDifferentEntries(t *testing.T) {
	j, _ := newTestJournal(t)
	dead := "uid=e3,dc=example,dc=org"
	d := &batchRecorder{t: t, max: 4, order: map[string][]uint64{}, fail: map[string]error{dead: Permanent(errors.New("refused"))}}
	want := map[string][]uint64{}
	var deadSeq uint64
	for i := range 30 {
		key := fmt.Sprintf("e%d", i%6)
		r := accountRecord("uid=" + key + ",dc=example,dc=org")
		r.Op = OpAdd // not coverable: each record is delivered
		seq := mustPrepareCommit(t, j, r, key)
		want[key] = append(want[key], seq)
		if key == "e3" && deadSeq == 0 {
			deadSeq = seq
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx, 1, d) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	waitFor(t, "the deliveries", 30*time.Second, func() bool {
		s, _ := j.Stats()
		return s.Delivered == 25 && s.Dead == 5
	})
	if r, _ := j.Get(deadSeq); r.State != StateDead || r.LastError != "refused" {
		t.Errorf("the failed record: %+v", r)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	largest := 0
	for _, b := range d.batches {
		if len(b) > d.max {
			t.Errorf("batch %v over MaxBatch %d", b, d.max)
		}
		largest = max(largest, len(b))
	}
	if largest != d.max {
		t.Errorf("largest batch %d: with a backlog of six entries a worker takes %d at once (batches %v)", largest, d.max, d.batches)
	}
	for key, seqs := range want {
		if got := d.order[key]; !slices.Equal(got, seqs) {
			t.Errorf("entry %s delivered in order %v, want %v", key, got, seqs)
		}
	}
}

// countingProposer counts the CmdOutcome commands of each proposal.
type countingProposer struct {
	p        Proposer
	mu       sync.Mutex
	outcomes []int
}

func (c *countingProposer) Propose(ctx context.Context, cmds []Command) ([]Applied, error) {
	n := 0
	for _, cmd := range cmds {
		if cmd.Op == CmdOutcome {
			n++
		}
	}
	if n > 0 {
		c.mu.Lock()
		c.outcomes = append(c.outcomes, n)
		c.mu.Unlock()
	}
	return c.p.Propose(ctx, cmds)
}

// TestRunTermProposesABatchsOutcomesTogether: a replicated journal's
// worker proposes the outcomes of one batch in one proposal, and every
// node records each one (a failure with its backoff, a delivery).
func TestRunTermProposesABatchsOutcomesTogether(t *testing.T) {
	a, b := replicatedPairWith(t, func(*Options) {})
	cp := &countingProposer{p: newTestCluster(t, a, b)}
	a.SetProposer(cp)
	failing := "uid=e1,dc=example,dc=org"
	var seqs []uint64
	for i := range 4 {
		key := fmt.Sprintf("e%d", i)
		seqs = append(seqs, mustPrepareCommit(t, a, accountRecord("uid="+key+",dc=example,dc=org"), key))
	}
	d := &batchRecorder{t: t, max: 16, order: map[string][]uint64{}, fail: map[string]error{failing: errors.New("axigen: busy")}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.RunTerm(ctx, 1, 1, d) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	for i, seq := range seqs {
		if i == 1 {
			waitFor(t, "the failure recorded", 30*time.Second, func() bool {
				r, _ := b.Get(seq)
				return r != nil && r.Attempts == 1 && r.State == StateCommitted && r.LastError == "axigen: busy"
			})
			continue
		}
		waitState(t, b, seq, StateDelivered)
	}
	cp.mu.Lock()
	defer cp.mu.Unlock()
	if len(cp.outcomes) == 0 || cp.outcomes[0] != 4 {
		t.Errorf("outcomes per proposal %v, want the batch of 4 in one", cp.outcomes)
	}
}

// stuckDeliverer is a BatchDeliverer whose deliveries of the DN stuck
// block until release is closed; it notes every record delivered.
type stuckDeliverer struct {
	stuck    string
	release  chan struct{}
	inFlight chan struct{} // closed once the stuck delivery began
	once     sync.Once
	mu       sync.Mutex
	done     map[uint64]time.Time
}

func (d *stuckDeliverer) MaxBatch() int { return 4 }

func (d *stuckDeliverer) Deliver(ctx context.Context, r *Record) error {
	return d.DeliverBatch(ctx, []*Record{r})[0]
}

func (d *stuckDeliverer) DeliverBatch(ctx context.Context, recs []*Record) []error {
	for _, r := range recs {
		if r.DN == d.stuck {
			d.once.Do(func() { close(d.inFlight) })
			select {
			case <-d.release:
			case <-ctx.Done():
			}
		}
	}
	d.mu.Lock()
	for _, r := range recs {
		d.done[r.Seq] = time.Now()
	}
	d.mu.Unlock()
	return make([]error, len(recs))
}

// TestStuckBatchHoldsNothingBack: records that become ready while a batch
// is stuck in its delivery (a slow Axigen) are delivered by the other
// workers, not kept behind it, under a steady trickle of writes.
func TestStuckBatchHoldsNothingBack(t *testing.T) {
	j, _ := newTestJournal(t)
	d := &stuckDeliverer{stuck: "uid=stuck,dc=example,dc=org", release: make(chan struct{}),
		inFlight: make(chan struct{}), done: map[uint64]time.Time{}}
	r := accountRecord(d.stuck)
	r.Op = OpAdd
	mustPrepareCommit(t, j, r, "stuck")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- j.Run(ctx, 3, d) }()
	t.Cleanup(func() {
		close(d.release)
		cancel()
		if err := <-done; err != nil {
			t.Errorf("run: %v", err)
		}
	})
	select {
	case <-d.inFlight:
	case <-time.After(10 * time.Second):
		t.Fatal("the stuck record was not delivered")
	}
	committed := map[uint64]bool{}
	for i := range 40 {
		key := fmt.Sprintf("e%d", i%5)
		r := accountRecord("uid=" + key + ",dc=example,dc=org")
		r.Op = OpAdd
		committed[mustPrepareCommit(t, j, r, key)] = true
	}
	waitFor(t, "the records behind the stuck batch", 20*time.Second, func() bool {
		d.mu.Lock()
		defer d.mu.Unlock()
		for seq := range committed {
			if _, ok := d.done[seq]; !ok {
				return false
			}
		}
		return true
	})
}
