package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// housekeepingChunk bounds the keys removed in one mutation.
const housekeepingChunk = 256

func (j *Journal) housekeeping(ctx context.Context) {
	defer j.bg.Done()
	t := time.NewTicker(j.opts.HousekeepingInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if _, err := j.Housekeep(ctx); err != nil && ctx.Err() == nil {
				j.log.Warn("journal housekeeping", "err", err)
			}
		}
	}
}

// HousekeepResult says what one Housekeep pass removed.
type HousekeepResult struct {
	Purged  int // delivered records older than Retention
	Trimmed int // change-log entries older than Retention
	GCRuns  int // value-log files rewritten
}

// Housekeep purges the delivered records older than Retention (a follower
// leaves that to its primary, whose purges it applies), trims the change log
// to Retention and runs Badger's value-log garbage collection. Open runs it
// every HousekeepingInterval.
func (j *Journal) Housekeep(ctx context.Context) (HousekeepResult, error) {
	var res HousekeepResult
	cutoff := j.opts.Now().Add(-j.opts.Retention)
	if !j.opts.Follower {
		for {
			n, err := j.purgeDelivered(ctx, cutoff)
			res.Purged += n
			if err != nil {
				return res, err
			}
			if n < housekeepingChunk {
				break
			}
		}
	}
	for {
		n, err := j.trimLog(ctx, cutoff)
		res.Trimmed += n
		if err != nil {
			return res, err
		}
		if n < housekeepingChunk {
			break
		}
	}
	for ctx.Err() == nil {
		err := j.db.RunValueLogGC(0.5)
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

func (j *Journal) purgeDelivered(ctx context.Context, cutoff time.Time) (int, error) {
	var seqs []uint64
	err := j.db.View(func(txn *badger.Txn) error {
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
	purged := 0
	err = j.submitLazy(ctx, func(b *batch) error {
		for _, seq := range seqs {
			old, err := b.get(seq)
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if old.State != StateDelivered || !old.DeliveredAt.Before(cutoff) {
				continue
			}
			if err := b.deleteRecord(old); err != nil {
				return err
			}
			purged++
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("purge delivered records: %w", err)
	}
	return purged, nil
}

// trimLog removes the oldest change-log entries written before cutoff. The
// horizon moves past them: a follower further behind needs a snapshot.
func (j *Journal) trimLog(ctx context.Context, cutoff time.Time) (int, error) {
	var last uint64
	n := 0
	err := j.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Rewind(); it.Valid() && n < housekeepingChunk; it.Next() {
			var pos uint64
			var at time.Time
			err := it.Item().Value(func(v []byte) error {
				var err error
				pos, at, err = eventPosTime(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("change %d: %w", keyNum(prefixEvent, it.Item().Key()), err)
			}
			if !at.Before(cutoff) {
				break
			}
			last = pos
			n++
		}
		return nil
	})
	if err != nil || n == 0 {
		return 0, err
	}
	err = j.submitLazy(ctx, func(b *batch) error {
		for pos := b.horizon; pos <= last; pos++ {
			if err := b.delete(numKey(prefixEvent, pos)); err != nil {
				return err
			}
		}
		if last+1 > b.horizon {
			b.horizon = last + 1
			b.metaSet = true
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("trim change log: %w", err)
	}
	return n, nil
}
