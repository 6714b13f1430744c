package store

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// scheduler decides which committed records are delivered when and runs
// the deliveries: per-entry order, workers, backoff and covering.
//
// It owns the in-memory index of the records not yet delivered (which also
// answers Stats and Prepared), the count of delivered records and the state
// of Run. Locking: mu guards all of these; it is never held while calling
// the writer or a Deliverer. The writer keeps the index in step with the
// disk by handing the scheduler each settled batch's effects (apply), on
// the writer's completer goroutine; a delivery's outcome is recorded
// through the writer like any other change, and its record is read through
// records.
type scheduler struct {
	recs *records
	w    *writer
	opts Options
	log  *slog.Logger
	wake chan struct{} // capacity 1: something may have become deliverable

	mu        sync.Mutex
	idx       *index
	delivered int  // delivered records kept
	closing   bool // the journal is closing: no new Run
	running   bool
	stopRun   context.CancelFunc
	runDone   chan struct{}
	term      *termRun // the replicated delivery running (RunTerm), if any
	// changed, when not nil, is closed at the next change of the index:
	// PreparedBefore's callers wait on it.
	changed chan struct{}
}

func newScheduler(idx *index, delivered int, opts Options, log *slog.Logger) *scheduler {
	return &scheduler{idx: idx, delivered: delivered, opts: opts, log: log, wake: make(chan struct{}, 1)}
}

// apply makes the effects of a settled batch (see indexer) and wakes the
// dispatcher.
func (s *scheduler) apply(effects []effect) {
	s.mu.Lock()
	for _, e := range effects {
		switch {
		case e.put != nil:
			s.idx.put(e.put, e.tokens)
		case e.remove:
			s.idx.remove(e.seq)
		}
		s.delivered += e.delta
		if e.release != nil {
			s.idx.release(*e.release)
		}
	}
	s.changedLocked()
	s.mu.Unlock()
	s.kick()
}

// changedLocked wakes the callers of PreparedBefore waiting for a change.
func (s *scheduler) changedLocked() {
	if s.changed != nil {
		close(s.changed)
		s.changed = nil
	}
}

// reset forgets every record: the journal is about to be restored from a
// snapshot.
func (s *scheduler) reset() {
	s.mu.Lock()
	s.idx = newPassiveIndex(s.idx.names)
	s.delivered = 0
	s.changedLocked()
	s.mu.Unlock()
}

// replace swaps in an index built anew: a replicated journal restored
// from a snapshot.
func (s *scheduler) replace(idx *index, delivered int) {
	s.mu.Lock()
	s.idx, s.delivered = idx, delivered
	s.changedLocked()
	s.mu.Unlock()
	s.kick()
}

// kick wakes the dispatcher.
func (s *scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func (s *scheduler) inFlight(seq uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.idx.recs[seq]
	return e != nil && e.inflight
}

// prepared lists the records still prepared, in sequence order.
func (s *scheduler) prepared() []uint64 {
	s.mu.Lock()
	var seqs []uint64
	for seq := range s.idx.open {
		seqs = append(seqs, seq)
	}
	s.mu.Unlock()
	sortSeqs(seqs)
	return seqs
}

// stats counts the records per state and measures the backlog at now
// (the counters are the writer's: the caller adds them).
func (s *scheduler) stats(now time.Time) Stats {
	var st Stats
	var oldest time.Time
	s.mu.Lock()
	for _, e := range s.idx.recs {
		switch e.state {
		case StatePrepared:
			st.Prepared++
		case StateCommitted:
			st.Committed++
			if oldest.IsZero() || e.time.Before(oldest) || (e.time.Equal(oldest) && e.seq < st.OldestPendingSeq) {
				oldest, st.OldestPendingSeq = e.time, e.seq
			}
		case StateDead:
			st.Dead++
		}
		if e.inflight {
			st.InFlight++
		}
	}
	st.Delivered = s.delivered
	s.mu.Unlock()
	st.Backlog = st.Committed
	if !oldest.IsZero() {
		st.OldestPending = max(now.Sub(oldest), 0)
	}
	return st
}

// shutdown lets no new Run start and stops the one running, if any, once
// its deliveries in flight have finished.
func (s *scheduler) shutdown() {
	s.mu.Lock()
	s.closing = true
	stop, done := s.stopRun, s.runDone
	s.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
}

// finished is a delivery of record rec, dispatched as d, ready to be
// recorded: derr nil means delivered, with the records covered along.
// secret is the record's secret, for the error text to hide.
type finished struct {
	d       dispatched
	rec     *Record
	derr    error
	covered []uint64
	secret  []byte
}

// recordFunc records what the deliveries of a batch came to and ends each
// delivery once the index holds its record's new version. It returns one
// error per delivery (or nil for none): a delivery whose outcome could not
// be recorded is still the caller's to release.
type recordFunc func(items []finished) []error

// run delivers committed records until ctx is done (see Journal.Run).
func (s *scheduler) run(ctx context.Context, workers int, deliver Deliverer) error {
	if s.opts.Replicated {
		return ErrReplicated
	}
	return s.deliverLoop(ctx, workers, deliver, nil, s.writeOutcomes)
}

// deliverLoop runs the deliveries until ctx is done, each outcome
// recorded by record. term, when set, is the replicated delivery this
// run is (RunTerm): once its term is found over, the run ends with the
// reason.
func (s *scheduler) deliverLoop(ctx context.Context, workers int, deliver Deliverer, term *termRun, record recordFunc) error {
	var covers func(*Record) bool
	if c, ok := deliver.(Coverer); ok {
		covers = c.Covers
	}
	if workers < 1 {
		workers = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		return ErrClosed
	}
	if s.running {
		s.mu.Unlock()
		return ErrRunning
	}
	done := make(chan struct{})
	s.running, s.stopRun, s.runDone, s.term = true, cancel, done, term
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.running, s.stopRun, s.runDone, s.term = false, nil, nil, nil
		s.mu.Unlock()
		close(done)
	}()

	batch := 1
	batcher, _ := deliver.(BatchDeliverer)
	if batcher != nil {
		batch = min(max(batcher.MaxBatch(), 1), maxBatch)
	}
	if batch < 2 {
		batcher = nil
	}
	// A worker takes every record ready when it is free (up to batch, of
	// different entries: due never hands out two of one history), so that
	// a backlog is delivered in batches and a lone record at once. The
	// dispatcher hands out work only while a worker is idle, so that the
	// records ready meanwhile join the next batch rather than queue one by
	// one behind busy workers. No record waits for company: holding the
	// records ready while another batch was delivered (up to 20 ms) saved
	// no CPU measurably and put success→Axigen p50 in a 3-node cluster at
	// 46 ms instead of 12 (`go run ./bench -suites cluster`).
	work := make(chan []dispatched, workers)
	idle := make(chan struct{}, workers)
	quit := make(chan struct{}) // the dispatcher has returned: start nothing more
	finishedWorkers := make(chan struct{}, workers)
	for range workers {
		idle <- struct{}{}
		go func() {
			defer func() { finishedWorkers <- struct{}{} }()
			for items := range work {
				select {
				case <-quit:
					s.releaseAll(items)
					continue
				default:
				}
				s.deliverBatch(ctx, items, deliver, batcher, covers, record)
				idle <- struct{}{}
			}
		}()
	}
	defer func() {
		close(quit)
		close(work)
		for range workers {
			<-finishedWorkers
		}
	}()

	var stopped <-chan struct{} // a replicated run's term is over
	if term != nil {
		stopped = term.stopped
	}
	for {
		select {
		case <-stopped:
			return term.err()
		case <-ctx.Done():
			return nil
		case <-idle:
		}
		now := s.opts.Now()
		s.mu.Lock()
		items, next := s.idx.due(now, batch)
		s.mu.Unlock()
		if len(items) > 0 {
			work <- items // never blocks: a worker is idle, and work holds one batch per worker
			continue
		}
		idle <- struct{}{}
		var timer *time.Timer
		var fire <-chan time.Time
		if !next.IsZero() {
			timer = time.NewTimer(max(next.Sub(now), time.Millisecond))
			fire = timer.C
		}
		select {
		case <-ctx.Done():
			if timer != nil {
				timer.Stop()
			}
			return nil
		case <-stopped:
			if timer != nil {
				timer.Stop()
			}
			return term.err()
		case <-s.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

// maxBatch bounds the records one worker delivers at once.
const maxBatch = 64

// releaseAll gives back deliveries taken but not started.
func (s *scheduler) releaseAll(items []dispatched) {
	s.mu.Lock()
	for _, d := range items {
		s.idx.release(d)
	}
	s.mu.Unlock()
}

// deliverBatch delivers the records of items (of different entries),
// together when batcher is set and more than one can go, and records
// each one's outcome.
func (s *scheduler) deliverBatch(ctx context.Context, items []dispatched, deliver Deliverer, batcher BatchDeliverer, covers func(*Record) bool, record recordFunc) {
	var ready, done []finished // to deliver; settled without a delivery
	for _, d := range items {
		if ctx.Err() != nil {
			s.releaseDelivery(d, time.Time{})
			continue
		}
		rec, err := s.recs.getWithSecret(d.seq)
		switch {
		case errors.Is(err, ErrNotFound):
			s.releaseDelivery(d, time.Time{})
		case err != nil:
			// A secret that cannot be decrypted will not become readable later.
			derr := Permanent(err)
			if rec, err = s.recs.get(d.seq); err != nil {
				s.log.Error("journal record unreadable", "seq", d.seq, "err", err)
				s.releaseDelivery(d, s.opts.Now().Add(s.opts.BackoffCap))
				continue
			}
			done = append(done, finished{d: d, rec: rec, derr: derr})
		default:
			f := finished{d: d, rec: rec}
			if covers != nil {
				f.covered = s.coveredBy(d.seq, covers)
			}
			s.noteCovered(d.seq, f.covered)
			ready = append(ready, f)
		}
	}
	if batcher != nil && len(ready) > 1 {
		recs := make([]*Record, len(ready))
		for i := range ready {
			recs[i] = ready[i].rec
		}
		for i, err := range callDeliverBatch(ctx, batcher, recs) {
			ready[i].derr = err
		}
	} else {
		for i := range ready {
			ready[i].derr = callDeliver(ctx, deliver, ready[i].rec)
		}
	}
	for _, f := range ready {
		if f.derr != nil && ctx.Err() != nil {
			// Cut short by the run's end: not an attempt.
			clear(f.rec.Secret)
			s.releaseDelivery(f.d, time.Time{})
			continue
		}
		done = append(done, f)
	}
	if len(done) == 0 {
		return
	}
	for i := range done {
		done[i].secret, done[i].rec.Secret = done[i].rec.Secret, nil
	}
	errs := record(done)
	for i, f := range done {
		clear(f.secret)
		var err error
		if errs != nil {
			err = errs[i]
		}
		if err != nil {
			level := slog.LevelError
			if errors.Is(err, ErrUnavailable) || ctx.Err() != nil {
				level = slog.LevelWarn
			}
			s.log.Log(context.Background(), level, "journal: recording a delivery failed", "seq", f.d.seq, "err", err)
			s.releaseDelivery(f.d, s.opts.Now().Add(s.opts.BackoffBase))
			continue
		}
		rec, derr := f.rec, f.derr
		switch {
		case derr == nil:
		case IsIncomplete(derr):
			s.log.Warn("delivered in part", "seq", rec.Seq, "dn", rec.DN, "skipped", errorText(derr, nil))
		case IsPermanent(derr):
			s.log.Warn("delivery failed for good: record is dead", "seq", rec.Seq, "dn", rec.DN, "err", errorText(derr, nil))
		case IsPostponed(derr):
			s.log.Info("delivery put off", "seq", rec.Seq, "dn", rec.DN, "why", errorText(derr, nil))
		default:
			s.log.Warn("delivery failed", "seq", rec.Seq, "dn", rec.DN, "attempt", rec.Attempts+1, "err", errorText(derr, nil))
		}
	}
}

// outcome is what a delivery came to, for a record delivered attempts
// times before: delivered (with the records it covered), or a failure
// with the next attempt after a backoff from now, or dead.
func (s *scheduler) outcome(derr error, covered []uint64, attempts int, secret []byte, now time.Time) Outcome {
	if derr == nil {
		return Outcome{Delivered: true, Covered: covered}
	}
	if IsIncomplete(derr) {
		// Delivered, but for what it skipped: kept as its error.
		return Outcome{Delivered: true, Covered: covered, LastError: errorText(derr, secret)}
	}
	o := Outcome{LastError: errorText(derr, secret)}
	if IsPostponed(derr) {
		o.Postponed = true
		o.NextAttempt = now.Add(s.opts.BackoffBase)
		return o
	}
	attempts++
	if IsPermanent(derr) || attempts >= s.opts.MaxAttempts {
		o.Dead = true
	} else {
		o.NextAttempt = now.Add(backoff(attempts, s.opts.BackoffBase, s.opts.BackoffCap, rand.Float64()))
	}
	return o
}

// writeOutcomes records deliveries' outcomes through the writer (a
// journal of its own), which releases each delivery with its record's
// new version. Each outcome is a change of its own, as it would be alone,
// queued before any is waited for, so that they share a batch.
func (s *scheduler) writeOutcomes(items []finished) []error {
	muts := make([]*mutation, len(items))
	errs := make([]error, len(items))
	for i, f := range items {
		d, derr, covered, secret := f.d, f.derr, f.covered, f.secret
		muts[i] = &mutation{lazy: true, done: make(chan error, 1), run: func(b *batch) error {
			b.effects = append(b.effects, effect{release: &d})
			old, err := b.get(d.seq)
			if err != nil || old.State != StateCommitted {
				// Dropped (or otherwise settled) while it was being delivered.
				return nil
			}
			return b.recordOutcome(old, s.outcome(derr, covered, old.Attempts, secret, b.now), b.now)
		}}
		if errs[i] = s.w.queue(context.Background(), muts[i]); errs[i] != nil {
			muts[i] = nil
		}
	}
	for i, m := range muts {
		if m != nil {
			errs[i] = <-m.done
		}
	}
	return errs
}

// maxCovered bounds the records one delivery settles along with its own.
const maxCovered = 128

// coveredBy lists the records a delivery of seq takes along (a Coverer).
// It is called before the delivery reads the entry: only records committed
// by then are in the state it reads.
func (s *scheduler) coveredBy(seq uint64, covers func(*Record) bool) []uint64 {
	// The delivery's outcome and theirs are written in one transaction,
	// which must stay well inside Badger's limit: a long backlog of one
	// entry drains a bounded run per delivery.
	s.mu.Lock()
	candidates := s.idx.covered(seq, maxCovered)
	s.mu.Unlock()
	for i, c := range candidates {
		r, err := s.recs.get(c)
		if err != nil || !covers(r) {
			return candidates[:i]
		}
	}
	return candidates
}

// noteCovered notes the records the delivery of seq takes along, for
// Journal.NameAfter.
func (s *scheduler) noteCovered(seq uint64, covered []uint64) {
	s.mu.Lock()
	if e := s.idx.recs[seq]; e != nil {
		e.coveredTo = 0
		if len(covered) > 0 {
			e.coveredTo = covered[len(covered)-1]
		}
	}
	s.mu.Unlock()
}

// releaseDelivery ends a delivery that left no trace in the journal; a
// non-zero next postpones the record's next attempt (in memory only).
func (s *scheduler) releaseDelivery(d dispatched, next time.Time) {
	s.mu.Lock()
	if e := s.idx.recs[d.seq]; e != nil && !next.IsZero() {
		e.next = next
	}
	s.idx.release(d)
	s.mu.Unlock()
	s.kick()
}
