package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// A mutation changes the journal. It runs on the writer goroutine, inside a
// transaction shared with the other mutations of its batch. It must check
// everything before it writes: an error after a write fails its whole batch.
type mutation struct {
	run func(b *batch) error
	// exclusive, when set instead of run, runs alone between batches
	// (a follower's reset, which drops whole key ranges).
	exclusive func() error
	done      chan error
}

const (
	// maxBatchMutations and softBatchBytes keep a batch well inside Badger's
	// transaction limit (15% of the 8 MiB memtable), with room for one more
	// maximal record.
	maxBatchMutations = 512
	softBatchBytes    = 256 << 10
)

// batch is the state of one group commit.
type batch struct {
	j       *Journal
	txn     *badger.Txn
	now     time.Time
	seq     uint64 // last sequence number, advanced by Prepare
	pos     uint64 // last change position
	horizon uint64
	loading bool
	metaSet bool
	size    int
	writes  int
	broken  error
	effects []func() // in-memory updates, run under j.mu once committed
	changed bool     // something a feed follower waits for
}

// submit queues a mutation and waits for its outcome. ctx bounds only the
// wait for a place in the queue: a queued mutation is always carried out
// (or failed) by the writer, and its caller learns which.
func (j *Journal) submit(ctx context.Context, run func(b *batch) error) error {
	return j.enqueue(ctx, &mutation{run: run, done: make(chan error, 1)})
}

func (j *Journal) enqueue(ctx context.Context, m *mutation) error {
	j.closeMu.RLock()
	if j.closed {
		j.closeMu.RUnlock()
		return ErrClosed
	}
	select {
	case j.reqs <- m:
	case <-ctx.Done():
		j.closeMu.RUnlock()
		return ctx.Err()
	}
	j.closeMu.RUnlock()
	return <-m.done
}

// writer is the journal's only writer: it takes every mutation waiting at
// the moment into one transaction, so one fsync serves them all.
func (j *Journal) writer() {
	defer close(j.writerDone)
	pending := make([]*mutation, 0, maxBatchMutations)
	for {
		select {
		case m := <-j.reqs:
			pending = append(pending[:0], m)
		case <-j.quit:
			// Close lets no new mutation in once quit is closed; finish
			// those already queued.
			for {
				select {
				case m := <-j.reqs:
					j.process([]*mutation{m})
				default:
					return
				}
			}
		}
	gather:
		for len(pending) < maxBatchMutations {
			select {
			case m := <-j.reqs:
				pending = append(pending, m)
			default:
				break gather
			}
		}
		j.process(pending)
	}
}

func (j *Journal) process(ms []*mutation) {
	for len(ms) > 0 {
		if ms[0].exclusive != nil {
			ms[0].done <- ms[0].exclusive()
			ms = ms[1:]
			continue
		}
		b := j.newBatch()
		var taken []*mutation
		var errs []error
		for len(ms) > 0 && ms[0].exclusive == nil && b.size < softBatchBytes {
			m := ms[0]
			ms = ms[1:]
			before := b.writes
			err := m.run(b)
			if err != nil && b.writes != before && b.broken == nil {
				b.broken = err
			}
			taken = append(taken, m)
			errs = append(errs, err)
		}
		if err := b.commit(); err != nil {
			for _, m := range taken {
				m.done <- err
			}
			continue
		}
		for i, m := range taken {
			m.done <- errs[i]
		}
	}
}

func (j *Journal) newBatch() *batch {
	j.mu.Lock()
	defer j.mu.Unlock()
	return &batch{
		j:       j,
		txn:     j.db.NewTransaction(true),
		now:     j.opts.Now(),
		seq:     j.lastSeq,
		pos:     j.lastPos,
		horizon: j.horizon,
		loading: j.loading,
	}
}

func (b *batch) set(key, value []byte) error {
	b.writes++
	b.size += len(key) + len(value)
	if err := b.txn.Set(key, value); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	return nil
}

func (b *batch) delete(key []byte) error {
	b.writes++
	b.size += len(key)
	if err := b.txn.Delete(key); err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	return nil
}

// commit writes the batch (one fsync), then updates the in-memory state. On
// failure nothing changed, in memory or on disk.
func (b *batch) commit() error {
	j := b.j
	if b.broken != nil {
		b.txn.Discard()
		return b.broken
	}
	if b.writes == 0 && !b.metaSet {
		b.txn.Discard()
		return nil
	}
	j.mu.Lock()
	oldSeq, oldPos, oldHorizon, oldLoading := j.lastSeq, j.lastPos, j.horizon, j.loading
	j.mu.Unlock()
	var err error
	if b.seq != oldSeq {
		err = errors.Join(err, b.txn.Set(metaSeq, encodeNum(b.seq)))
	}
	if b.pos != oldPos {
		err = errors.Join(err, b.txn.Set(metaPos, encodeNum(b.pos)))
	}
	if b.horizon != oldHorizon {
		err = errors.Join(err, b.txn.Set(metaHorizon, encodeNum(b.horizon)))
	}
	if b.loading != oldLoading {
		if b.loading {
			err = errors.Join(err, b.txn.Set(metaLoading, []byte{1}))
		} else {
			err = errors.Join(err, b.txn.Delete(metaLoading))
		}
	}
	if err == nil {
		err = b.txn.Commit()
	} else {
		b.txn.Discard()
	}
	if err != nil {
		j.log.Error("journal write failed", "err", err)
		return fmt.Errorf("journal write: %w", err)
	}
	j.mu.Lock()
	j.lastSeq, j.lastPos, j.horizon, j.loading = b.seq, b.pos, b.horizon, b.loading
	for _, f := range b.effects {
		f()
	}
	if b.changed {
		close(j.changed)
		j.changed = make(chan struct{})
	}
	j.mu.Unlock()
	j.kick()
	return nil
}

// kick wakes the dispatcher.
func (j *Journal) kick() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// get reads a record as this batch sees it (including its own writes).
func (b *batch) get(seq uint64) (*Record, error) {
	return getRecord(b.txn, seq)
}

// putRecord writes a new version of a record (old is nil for a new one),
// keeps the indexes and the sealed secret in step with its state, and logs
// the change. sealed, when not nil, is the record's new sealed secret.
func (b *batch) putRecord(old, rec *Record, sealed []byte) error {
	if err := b.storeRecord(old, rec, sealed); err != nil {
		return err
	}
	return b.logEvent(&Event{Pos: b.pos + 1, Time: b.now, Type: EventPut, Seq: rec.Seq, Record: rec})
}

// deleteRecord removes a record, its secret and its index keys, and logs it.
func (b *batch) deleteRecord(old *Record) error {
	if err := b.removeRecord(old); err != nil {
		return err
	}
	return b.logEvent(&Event{Pos: b.pos + 1, Time: b.now, Type: EventDelete, Seq: old.Seq})
}

func (b *batch) storeRecord(old, rec *Record, sealed []byte) error {
	enc, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	seq := rec.Seq
	if err := b.set(numKey(prefixRecord, seq), enc); err != nil {
		return err
	}
	if sealed != nil {
		if err := b.set(numKey(prefixSecret, seq), sealed); err != nil {
			return err
		}
	} else if rec.SecretState != SecretEncrypted && old != nil && old.SecretState == SecretEncrypted {
		if err := b.delete(numKey(prefixSecret, seq)); err != nil {
			return err
		}
	}
	wasDelivered := old != nil && old.State == StateDelivered
	isDelivered := rec.State == StateDelivered
	if !isDelivered && (old == nil || wasDelivered) {
		if err := b.set(numKey(prefixActive, seq), nil); err != nil {
			return err
		}
	}
	if isDelivered && old != nil && !wasDelivered {
		if err := b.delete(numKey(prefixActive, seq)); err != nil {
			return err
		}
	}
	if wasDelivered && (!isDelivered || !old.DeliveredAt.Equal(rec.DeliveredAt)) {
		if err := b.delete(deliveredKey(old.DeliveredAt, seq)); err != nil {
			return err
		}
	}
	if isDelivered && (!wasDelivered || !old.DeliveredAt.Equal(rec.DeliveredAt)) {
		if err := b.set(deliveredKey(rec.DeliveredAt, seq), nil); err != nil {
			return err
		}
	}
	b.seq = max(b.seq, seq)
	b.effects = append(b.effects, func() { b.j.idx.put(rec) })
	return nil
}

func (b *batch) removeRecord(old *Record) error {
	seq := old.Seq
	if err := b.delete(numKey(prefixRecord, seq)); err != nil {
		return err
	}
	if old.SecretState == SecretEncrypted {
		if err := b.delete(numKey(prefixSecret, seq)); err != nil {
			return err
		}
	}
	if old.State == StateDelivered {
		if err := b.delete(deliveredKey(old.DeliveredAt, seq)); err != nil {
			return err
		}
	} else if err := b.delete(numKey(prefixActive, seq)); err != nil {
		return err
	}
	b.effects = append(b.effects, func() { b.j.idx.remove(seq) })
	return nil
}

// logEvent appends a change to the change log. Secrets never go into it:
// Feed attaches a record's sealed secret when it sends the change.
func (b *batch) logEvent(ev *Event) error {
	if ev.Pos != b.pos+1 {
		return fmt.Errorf("change log: position %d after %d", ev.Pos, b.pos)
	}
	stored := *ev
	stored.Secret = nil
	enc, err := json.Marshal(&stored)
	if err != nil {
		return fmt.Errorf("encode change %d: %w", ev.Pos, err)
	}
	if err := b.set(numKey(prefixEvent, ev.Pos), enc); err != nil {
		return err
	}
	b.pos = ev.Pos
	b.changed = true
	return nil
}
