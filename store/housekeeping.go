package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// housekeepingChunk bounds the keys removed in one mutation.
const housekeepingChunk = 256

// housekeeper keeps the journal's size in check: it purges the delivered
// records older than Retention and runs Badger's value-log garbage
// collection, every HousekeepingInterval in the
// background and whenever Journal.Housekeep asks. It holds no lock: what it
// removes it removes through writer mutations, which check again that each
// record may go. A replicated journal's purges are commands (CmdPurge),
// proposed by the node that delivers (RunTerm) and applied by every node;
// its value-log garbage collection is each node's own.
type housekeeper struct {
	db    *badger.DB
	w     *writer
	sched *scheduler // what delivers on this node (a replicated journal's purges)
	opts  Options
	log   *slog.Logger

	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// start runs housekeeping in the background every HousekeepingInterval
// (never when it is negative).
func (h *housekeeper) start() {
	ctx, cancel := context.WithCancel(context.Background())
	h.cancel = cancel
	if h.opts.HousekeepingInterval <= 0 {
		return
	}
	h.bg.Add(1)
	go h.loop(ctx)
}

// stop ends background housekeeping and waits for a pass under way.
func (h *housekeeper) stop() {
	h.cancel()
	h.bg.Wait()
}

func (h *housekeeper) loop(ctx context.Context) {
	defer h.bg.Done()
	t := time.NewTicker(h.opts.HousekeepingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := h.run(ctx); err != nil && ctx.Err() == nil {
				h.log.Warn("journal housekeeping", "err", err)
			}
		}
	}
}

// HousekeepResult says what one Housekeep pass removed.
type HousekeepResult struct {
	Purged int // delivered records older than Retention
	GCRuns int // value-log files rewritten
}

// run is one housekeeping pass (see Journal.Housekeep).
func (h *housekeeper) run(ctx context.Context) (HousekeepResult, error) {
	var res HousekeepResult
	cutoff := h.opts.Now().Add(-h.opts.Retention)
	if purge := h.purger(); purge != nil {
		n, err := inChunks(func() (int, error) { return h.purgeDelivered(ctx, cutoff, purge) })
		res.Purged = n
		if err != nil {
			return res, err
		}
	}
	for ctx.Err() == nil {
		err := h.db.RunValueLogGC(0.5)
		if errors.Is(err, badger.ErrNoRewrite) || errors.Is(err, badger.ErrRejected) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("value-log gc: %w", err)
		}
		res.GCRuns++
	}
	return res, nil
}

// inChunks calls step, which removes up to housekeepingChunk keys, until it
// removes fewer, and adds up what it removed.
func inChunks(step func() (int, error)) (int, error) {
	total := 0
	for {
		n, err := step()
		total += n
		if err != nil || n < housekeepingChunk {
			return total, err
		}
	}
}

// purgeFunc removes those of records seqs delivered before cutoff and
// says how many it removed.
type purgeFunc func(ctx context.Context, seqs []uint64, cutoff time.Time) (int, error)

// purger is how this journal purges its delivered records: through the
// writer (a journal of its own), through the cluster (a replicated
// journal on the node that delivers), or not at all (nil: the other nodes
// of a cluster apply the deliverer's purges).
func (h *housekeeper) purger() purgeFunc {
	switch {
	case h.opts.Replicated:
		p := h.sched.delivering()
		if p == nil {
			return nil
		}
		return func(ctx context.Context, seqs []uint64, cutoff time.Time) (int, error) {
			return h.proposePurge(ctx, p, seqs, cutoff)
		}
	default:
		return h.writePurge
	}
}

func (h *housekeeper) purgeDelivered(ctx context.Context, cutoff time.Time, purge purgeFunc) (int, error) {
	var seqs []uint64
	err := h.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDelivered})
		defer it.Close()
		for it.Rewind(); it.Valid() && len(seqs) < housekeepingChunk; it.Next() {
			k := it.Item().Key()
			at := int64(binary.BigEndian.Uint64(k[len(prefixDelivered):]))
			if at >= cutoff.UnixNano() {
				break
			}
			seqs = append(seqs, binary.BigEndian.Uint64(k[len(prefixDelivered)+8:]))
		}
		return nil
	})
	if err != nil || len(seqs) == 0 {
		return 0, err
	}
	purged, err := purge(ctx, seqs, cutoff)
	if err != nil {
		return 0, fmt.Errorf("purge delivered records: %w", err)
	}
	return purged, nil
}

func (h *housekeeper) writePurge(ctx context.Context, seqs []uint64, cutoff time.Time) (int, error) {
	purged := 0
	err := h.w.submitLazy(ctx, func(b *batch) error {
		var err error
		purged, err = b.purge(seqs, cutoff)
		return err
	})
	return purged, err
}

// proposePurge proposes the purge and counts the records gone from this
// node's journal once the proposal returned (the proposer applied it).
func (h *housekeeper) proposePurge(ctx context.Context, p Proposer, seqs []uint64, cutoff time.Time) (int, error) {
	a, err := proposeOne(ctx, p, Command{Op: CmdPurge, Time: cutoff, Seqs: seqs})
	if err == nil {
		err = a.Err
	}
	if err != nil {
		return 0, err
	}
	gone := 0
	err = h.db.View(func(txn *badger.Txn) error {
		for _, seq := range seqs {
			_, err := txn.Get(numKey(prefixRecord, seq))
			switch {
			case errors.Is(err, badger.ErrKeyNotFound):
				gone++
			case err != nil:
				return err
			}
		}
		return nil
	})
	return gone, err
}
