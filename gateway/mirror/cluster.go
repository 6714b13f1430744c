package mirror

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigen"
	"github.com/ldapgate/ldapgate/store"
)

// In a cluster of gateways every gateway intercepts and journals writes,
// but only the leader delivers (RunTerm): it alone talks to Axigen, so
// two deliveries of one entry never cross. Whatever must happen once for
// the cluster (settling records a failed gateway left prepared, the
// delete-after grace, scheduled resyncs) runs on the leader too.

// RunTerm is Run for the leader of a gateway cluster in term (the journal
// is replicated): each record is delivered only after guard said this
// gateway still leads, and its outcome is stored under term, so that a
// gateway that lost its leadership neither writes to Axigen nor records
// what it did. It returns when ctx ends (the leadership is lost).
func (m *Mirror) RunTerm(ctx context.Context, term uint64, guard func(context.Context) error) error {
	if m.cfg.Journal == nil {
		return errors.New("mirror: no journal to deliver from")
	}
	if guard == nil {
		return errors.New("mirror: a cluster's delivery needs a leadership guard")
	}
	return m.cfg.Journal.RunTerm(ctx, term, m.cfg.Workers, fencedDeliverer{deliverer{m}, guard})
}

// fencedDeliverer delivers while its guard allows it.
type fencedDeliverer struct {
	deliverer
	guard func(context.Context) error
}

// Deliver checks the guard before the record's delivery and again before
// each of its Axigen round trips: a leader frozen mid-delivery (a paused
// VM, SIGSTOP) and deposed meanwhile sends nothing more when it wakes.
func (d fencedDeliverer) Deliver(ctx context.Context, rec *store.Record) error {
	if err := d.guard(ctx); err != nil {
		return notLeading(err)
	}
	return d.deliverer.Deliver(axigen.WithGuard(ctx, d.guard), rec)
}

// DeliverBatch is Deliver for a batch: the guard is asked before each
// record's delivery and before each Axigen round trip of the batch.
func (d fencedDeliverer) DeliverBatch(ctx context.Context, recs []*store.Record) []error {
	return d.deliverer.deliverBatch(axigen.WithGuard(ctx, d.guard), recs, d.guard)
}

// notLeading is the error of a delivery not made: the guard said this
// gateway no longer leads.
func notLeading(err error) error {
	return fmt.Errorf("not delivered: this gateway no longer leads the cluster: %w", err)
}

// SettleOrphans settles the records prepared more than age ago: in a
// cluster, the gateway that prepared one may have failed before the
// directory answered it, and no gateway restart will settle it (Recover
// settles only at a lone gateway's start). age must exceed the longest a
// live gateway waits for the directory's answer, so that a write still
// under way is never settled under it.
//
// A record's Time is the clock of the leader that stamped it, which may
// be behind this gateway's (another node, or this one's clock stepped
// forward since): a record is old enough only once this gateway has also
// seen it prepared for age, on its own monotonic clock. So a new leader
// settles nothing younger than age after its first call. guard, when not
// nil, is asked before each record: a deposed leader stops at once.
func (m *Mirror) SettleOrphans(ctx context.Context, age time.Duration, guard func(context.Context) error) (int, error) {
	if m.cfg.Journal == nil {
		return 0, errors.New("mirror: no journal")
	}
	recs, err := m.cfg.Journal.Prepared()
	if err != nil {
		return 0, fmt.Errorf("read prepared records: %w", err)
	}
	now := time.Now()
	cutoff := now.Add(-age)
	seen := m.orphans.see(recs, now)
	n := 0
	for _, rec := range recs {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if rec.Time.After(cutoff) || now.Sub(seen[rec.Seq]) < age {
			continue
		}
		if guard != nil {
			if err := guard(ctx); err != nil {
				return n, err
			}
		}
		m.log.Warn("settling a record a gateway left prepared", "seq", rec.Seq, "dn", rec.DN, "op", rec.Op,
			"prepared", rec.Time.Format(time.RFC3339))
		m.resolve(ctx, rec)
		n++
	}
	return n, nil
}

// orphanWatch remembers when this gateway first saw each record prepared
// (SettleOrphans), by its monotonic clock.
type orphanWatch struct {
	mu   sync.Mutex
	seen map[uint64]time.Time
}

// see notes the records prepared now, forgets those no longer prepared,
// and returns when each was first seen.
func (w *orphanWatch) see(recs []*store.Record, now time.Time) map[uint64]time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	seen := make(map[uint64]time.Time, len(recs))
	for _, rec := range recs {
		first, ok := w.seen[rec.Seq]
		if !ok {
			first = now
		}
		seen[rec.Seq] = first
	}
	w.seen = seen
	return maps.Clone(seen)
}
