package store

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime/debug"
	"strings"
	"time"
)

// A Deliverer mirrors one committed record into Axigen. Deliver must be
// idempotent: a record can be delivered again after a crash. Its error is
// stored in the record and shown to operators, so it must not hold secrets
// (the journal also blanks out the record's own secret if it appears).
type Deliverer interface {
	Deliver(ctx context.Context, r *Record) error
}

// A Coverer is a Deliverer that brings the target to the entry's state at
// the time it runs rather than replaying one record's changes (the
// gateway's mirror reads the directory). A delivery that succeeds then also
// settles, as delivered, the committed records queued right behind it for
// the same entry that Covers accepts: their changes were in the entry before
// the delivery began, so it took them along, and a backlog drains in one
// delivery per entry. Only modifies without a secret are offered to Covers;
// it must refuse a record whose delivery does more than bring the entry's
// state (a side effect of that change itself). The first record refused,
// and everything after it, waits for its own delivery, in order.
type Coverer interface {
	Deliverer
	Covers(r *Record) bool
}

// DeliverFunc adapts a function to a Deliverer that covers nothing.
type DeliverFunc func(ctx context.Context, r *Record) error

// Deliver calls f.
func (f DeliverFunc) Deliver(ctx context.Context, r *Record) error { return f(ctx, r) }

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks a delivery error that retrying cannot cure (a value Axigen
// cannot take): the record is dead at once.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// IsPermanent reports whether err was marked with Permanent.
func IsPermanent(err error) bool {
	var p *permanentError
	return errors.As(err, &p)
}

// backoff is the wait before attempt n+1 after n failures: base doubled for
// each failure up to max, less a random part of up to half (r in [0,1)).
func backoff(failures int, base, limit time.Duration, r float64) time.Duration {
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d - time.Duration(r*float64(d/2))
}

// maxErrorBytes bounds the error text kept in a record.
const maxErrorBytes = 1024

// Run delivers committed records until ctx is done, with up to workers
// deliveries at once: one at a time and in sequence order per entry,
// different entries in parallel. A new commit is picked up at once. A
// failure is retried after a backoff; after MaxAttempts failures, or at once
// for a Permanent error, the record is dead. A delivered record's secret is
// erased. Run returns nil when ctx is done, after the deliveries in flight
// have finished; a delivery cut short by the shutdown does not count as an
// attempt. A Deliverer that is also a Coverer settles a backlog of one
// entry in one delivery.
func (j *Journal) Run(ctx context.Context, workers int, d Deliverer) error {
	var covers func(*Record) bool
	if c, ok := d.(Coverer); ok {
		covers = c.Covers
	}
	return j.run(ctx, workers, d, covers)
}

func (j *Journal) run(ctx context.Context, workers int, deliver Deliverer, covers func(*Record) bool) error {
	if j.opts.Follower {
		return ErrFollower
	}
	if workers < 1 {
		workers = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	j.closeMu.RLock()
	if j.closing {
		j.closeMu.RUnlock()
		return ErrClosed
	}
	j.mu.Lock()
	if j.running {
		j.mu.Unlock()
		j.closeMu.RUnlock()
		return ErrRunning
	}
	done := make(chan struct{})
	j.running, j.stopRun, j.runDone = true, cancel, done
	j.mu.Unlock()
	j.closeMu.RUnlock()
	defer func() {
		j.mu.Lock()
		j.running, j.stopRun, j.runDone = false, nil, nil
		j.mu.Unlock()
		close(done)
	}()

	work := make(chan dispatched)
	finished := make(chan struct{}, workers)
	for range workers {
		go func() {
			defer func() { finished <- struct{}{} }()
			for d := range work {
				j.deliverOne(ctx, d, deliver, covers)
			}
		}()
	}
	defer func() {
		close(work)
		for range workers {
			<-finished
		}
	}()

	for {
		now := j.opts.Now()
		j.mu.Lock()
		items, next := j.idx.due(now, workers)
		j.mu.Unlock()
		for i, d := range items {
			select {
			case work <- d:
			case <-ctx.Done():
				j.mu.Lock()
				for _, d := range items[i:] {
					j.idx.release(d)
				}
				j.mu.Unlock()
				return nil
			}
		}
		if len(items) > 0 {
			continue
		}
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
		case <-j.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
	}
}

func (j *Journal) deliverOne(ctx context.Context, d dispatched, deliver Deliverer, covers func(*Record) bool) {
	rec, err := j.getWithSecret(d.seq)
	var derr error
	var covered []uint64 // delivered along with it (RunCovering)
	switch {
	case errors.Is(err, ErrNotFound):
		j.releaseDelivery(d, time.Time{})
		return
	case err != nil:
		// A secret that cannot be decrypted will not become readable later.
		derr = Permanent(err)
		rec, err = j.Get(d.seq)
		if err != nil {
			j.log.Error("journal record unreadable", "seq", d.seq, "err", err)
			j.releaseDelivery(d, j.opts.Now().Add(j.opts.BackoffCap))
			return
		}
	default:
		if covers != nil {
			covered = j.coveredBy(d.seq, covers)
		}
		derr = callDeliver(ctx, deliver, rec)
	}
	if derr != nil && ctx.Err() != nil {
		j.releaseDelivery(d, time.Time{})
		return
	}
	secret := rec.Secret
	rec.Secret = nil
	err = j.submitLazy(context.Background(), func(b *batch) error {
		old, err := b.get(d.seq)
		if err != nil || old.State != StateCommitted {
			// Dropped (or otherwise settled) while it was being delivered.
			b.effects = append(b.effects, effect{fn: func() { j.idx.release(d) }})
			return nil
		}
		var along []*Record
		if derr == nil {
			// Read before anything is written: an error after a write would
			// fail the whole batch.
			for _, seq := range covered {
				c, err := b.get(seq)
				switch {
				case errors.Is(err, ErrNotFound):
				case err != nil:
					return err
				case c.State == StateCommitted:
					along = append(along, c)
				}
			}
		}
		r := old.next()
		r.Attempts++
		if derr == nil {
			r.State = StateDelivered
			r.DeliveredAt = b.now
			r.NextAttempt = time.Time{}
			r.LastError = ""
			if r.SecretState == SecretEncrypted {
				r.SecretState = SecretErased
			}
		} else {
			r.LastError = errorText(derr, secret)
			if IsPermanent(derr) || r.Attempts >= j.opts.MaxAttempts {
				r.State = StateDead
				r.NextAttempt = time.Time{}
			} else {
				r.NextAttempt = b.now.Add(backoff(r.Attempts, j.opts.BackoffBase, j.opts.BackoffCap, rand.Float64()))
			}
		}
		b.effects = append(b.effects, effect{fn: func() { j.idx.release(d) }})
		if err := b.putRecord(old, r, nil, nil); err != nil {
			return err
		}
		for _, c := range along {
			n := c.next()
			n.Attempts++ // the one delivery it shared
			n.State, n.DeliveredAt, n.NextAttempt, n.LastError = StateDelivered, b.now, time.Time{}, ""
			if err := b.putRecord(c, n, nil, nil); err != nil {
				return err
			}
		}
		return nil
	})
	clear(secret)
	if err != nil {
		j.log.Error("journal: recording a delivery failed", "seq", d.seq, "err", err)
		j.releaseDelivery(d, j.opts.Now().Add(j.opts.BackoffBase))
		return
	}
	switch {
	case derr == nil:
	case IsPermanent(derr):
		j.log.Warn("delivery failed for good: record is dead", "seq", d.seq, "dn", rec.DN, "err", errorText(derr, nil))
	default:
		j.log.Warn("delivery failed", "seq", d.seq, "dn", rec.DN, "attempt", rec.Attempts+1, "err", errorText(derr, nil))
	}
}

// maxCovered bounds the records one delivery settles along with its own.
const maxCovered = 128

// coveredBy lists the records a delivery of seq takes along (RunCovering).
// It is called before the delivery reads the entry: only records committed
// by then are in the state it reads.
func (j *Journal) coveredBy(seq uint64, covers func(*Record) bool) []uint64 {
	// The delivery's outcome and theirs are written in one transaction,
	// which must stay well inside Badger's limit: a long backlog of one
	// entry drains a bounded run per delivery.
	j.mu.Lock()
	candidates := j.idx.covered(seq, maxCovered)
	j.mu.Unlock()
	for i, c := range candidates {
		r, err := j.Get(c)
		if err != nil || !covers(r) {
			return candidates[:i]
		}
	}
	return candidates
}

// releaseDelivery ends a delivery that left no trace in the journal; a
// non-zero next postpones the record's next attempt (in memory only).
func (j *Journal) releaseDelivery(d dispatched, next time.Time) {
	j.mu.Lock()
	if e := j.idx.recs[d.seq]; e != nil && !next.IsZero() {
		e.next = next
	}
	j.idx.release(d)
	j.mu.Unlock()
	j.kick()
}

func callDeliver(ctx context.Context, deliver Deliverer, r *Record) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("delivery panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return deliver.Deliver(ctx, r)
}

func errorText(err error, secret []byte) string {
	s := err.Error()
	if len(secret) > 0 {
		s = strings.ReplaceAll(s, string(secret), "(secret)")
	}
	if len(s) > maxErrorBytes {
		s = s[:maxErrorBytes] + "…"
	}
	return s
}
