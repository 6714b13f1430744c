package store

import (
	"context"
	"errors"
	"fmt"
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

// A BatchDeliverer is a Deliverer that can also deliver several records of
// different entries at once (the mirror sends their Axigen commands in one
// exchange on one session). The journal's workers hand it up to MaxBatch
// records that are ready at the same time, never two of one entry, and
// never wait for more to come: a lone record is delivered with Deliver.
// Each record has its own outcome, recorded as Deliver's would be, and
// the order of each entry's records is kept, since a record's successor
// becomes ready only once its outcome is recorded.
type BatchDeliverer interface {
	Deliverer
	// MaxBatch is the most records DeliverBatch takes at once; below 2 the
	// journal delivers one record at a time.
	MaxBatch() int
	// DeliverBatch delivers recs and returns one error per record, in
	// their order (nil: delivered), with the meaning of Deliver's.
	DeliverBatch(ctx context.Context, recs []*Record) []error
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

type incompleteError struct{ err error }

func (e *incompleteError) Error() string { return e.err.Error() }
func (e *incompleteError) Unwrap() error { return e.err }

// Incomplete marks the outcome of a delivery that brought the target what
// it could and skipped what err names (a value it cannot take, which no
// retry cures): the record is delivered, not retried, and err's text stays
// in its LastError for operators. Later records of the entry are not held
// up by what was skipped.
func Incomplete(err error) error {
	if err == nil {
		return nil
	}
	return &incompleteError{err: err}
}

// IsIncomplete reports whether err was marked with Incomplete.
func IsIncomplete(err error) bool {
	var p *incompleteError
	return errors.As(err, &p)
}

type postponedError struct{ err error }

func (e *postponedError) Error() string { return e.err.Error() }
func (e *postponedError) Unwrap() error { return e.err }

// Postpone marks a delivery that did not fail but cannot be made yet: what
// it needs is on its way (a write of another entry the delivery depends
// on, whose outcome the journal will know in a moment). The record is
// tried again after Options.BackoffBase, and the attempt is not counted:
// however long the wait, it never makes the record dead.
func Postpone(err error) error {
	if err == nil {
		return nil
	}
	return &postponedError{err: err}
}

// IsPostponed reports whether err was marked with Postpone.
func IsPostponed(err error) bool {
	var p *postponedError
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

func callDeliver(ctx context.Context, deliver Deliverer, r *Record) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("delivery panicked: %v\n%s", p, debug.Stack())
		}
	}()
	return deliver.Deliver(ctx, r)
}

// callDeliverBatch is callDeliver for a batch: a panic fails every record
// of it.
func callDeliverBatch(ctx context.Context, deliver BatchDeliverer, recs []*Record) (errs []error) {
	defer func() {
		if p := recover(); p != nil {
			err := fmt.Errorf("delivery panicked: %v\n%s", p, debug.Stack())
			errs = make([]error, len(recs))
			for i := range errs {
				errs[i] = err
			}
		}
	}()
	errs = deliver.DeliverBatch(ctx, recs)
	if len(errs) != len(recs) {
		err := fmt.Errorf("the deliverer answered %d outcomes for %d records", len(errs), len(recs))
		errs = make([]error, len(recs))
		for i := range errs {
			errs[i] = err
		}
	}
	return errs
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
