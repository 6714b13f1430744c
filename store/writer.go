package store

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// A mutation changes the journal. It runs on the writer goroutine, inside a
// transaction shared with the other mutations of its batch. It must check
// everything before it writes: an error after a write fails its whole batch.
type mutation struct {
	run func(b *batch) error
	// lazy marks a change whose loss to a power cut (not to a process
	// crash: the OS has it) is harmless by design, so it need not wait for
	// an fsync of its own: it reaches the disk with the next durable batch.
	lazy bool
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
	local   map[uint64]*Record // records written by this batch (nil: deleted)
	recent  *recentCache
	effects []effect // in-memory updates, made under j.mu once committed
	changed bool     // something a feed follower waits for
}

// writerState is the journal as the writer has written it, including
// batches still on their way to the disk.
type writerState struct {
	seq, pos, horizon uint64
	loading           bool
}

// recentCache holds the latest versions of the records the writer wrote
// last. It is how a batch reads the writes of batches still on their way
// to the disk (invisible to its transaction), and it spares decoding a
// record just written (the Commit after a Prepare). Only the writer
// goroutine uses it, and the writer is the journal's only writer, so a
// cached version is always the latest.
type recentCache struct {
	m     map[uint64]recentEntry
	order []recentRef // insertion order, for eviction
	limit int
}

type recentEntry struct {
	rec    *Record // nil: deleted
	flight uint64
}

type recentRef struct{ seq, flight uint64 }

func newRecentCache(limit int) *recentCache {
	return &recentCache{m: map[uint64]recentEntry{}, limit: limit}
}

func (c *recentCache) put(seq uint64, r *Record, flight uint64) {
	c.m[seq] = recentEntry{rec: r, flight: flight}
	c.order = append(c.order, recentRef{seq, flight})
}

// trim evicts the oldest entries beyond the limit, but never one from a
// batch not yet settled (no transaction could read it from Badger).
func (c *recentCache) trim(settled uint64) {
	for len(c.order) > c.limit {
		ref := c.order[0]
		if ref.flight > settled {
			return
		}
		c.order = c.order[1:]
		if e, ok := c.m[ref.seq]; ok && e.flight == ref.flight {
			delete(c.m, ref.seq)
		}
	}
	if cap(c.order) > 4*c.limit && len(c.order) < c.limit {
		c.order = append([]recentRef(nil), c.order...)
	}
}

func (c *recentCache) clear() {
	clear(c.m)
	c.order = nil
}

// recentRecords bounds the writer's cache of recent records.
const recentRecords = 4096

// flight is a batch handed to Badger, waiting for its fsync.
type flight struct {
	id      uint64
	taken   []*mutation
	errs    []error
	effects []effect
	changed bool
	wrote   bool // the batch went to Badger
	// inBadger, when set, is the writer's slot for the batch in Badger,
	// freed once the batch is settled.
	inBadger chan struct{}
	state    writerState   // the journal once this batch is on disk
	result   chan error    // the commit's outcome
	barrier  chan struct{} // set on a drain marker instead of a batch
}

// writerStats counts the batches written, for the benchmarks.
type writerStats struct {
	batches, mutations atomic.Uint64
}

// maxFlights bounds the batches waiting for the disk at once.
const maxFlights = 8

// submit queues a mutation and waits for its outcome. ctx bounds only the
// wait for a place in the queue: a queued mutation is always carried out
// (or failed) by the writer, and its caller learns which.
func (j *Journal) submit(ctx context.Context, run func(b *batch) error) error {
	return j.enqueue(ctx, &mutation{run: run, done: make(chan error, 1)})
}

// submitLazy is submit for a change that need not be fsynced on its own
// (see mutation.lazy).
func (j *Journal) submitLazy(ctx context.Context, run func(b *batch) error) error {
	return j.enqueue(ctx, &mutation{run: run, lazy: true, done: make(chan error, 1)})
}

func (j *Journal) enqueue(ctx context.Context, m *mutation) error {
	if err := j.queue(ctx, m); err != nil {
		return err
	}
	return <-m.done
}

// queue hands a mutation to the writer without waiting for its outcome;
// mutations queued by one goroutine run in the order it queued them.
func (j *Journal) queue(ctx context.Context, m *mutation) error {
	j.closeMu.RLock()
	defer j.closeMu.RUnlock()
	if j.closed {
		return ErrClosed
	}
	select {
	case j.reqs <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// writer is the journal's only writer. It takes every mutation waiting at
// the moment into one transaction, so one fsync serves them all, and
// builds the next batch while Badger syncs the previous one. A completer
// goroutine settles the batches in order once they are on disk.
func (j *Journal) writer() {
	defer close(j.writerDone)
	flights := make(chan *flight, maxFlights)
	completerDone := make(chan struct{})
	go j.completer(flights, completerDone)
	w := &writerRun{j: j, flights: flights, recent: newRecentCache(recentRecords), inBadger: make(chan struct{}, 1)}
	defer func() {
		w.discardNext()
		close(flights)
		<-completerDone
	}()
	w.state = j.currentState()
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
					w.process([]*mutation{m})
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
		// Mutations waiting together come from different callers, so any
		// order is theirs: the lazy ones go first, in a batch of their own
		// that needs no fsync, and their callers are not held up by the
		// durable batch's sync.
		slices.SortStableFunc(pending, func(a, b *mutation) int {
			switch {
			case a.lazy && !b.lazy:
				return -1
			case !a.lazy && b.lazy:
				return 1
			}
			return 0
		})
		w.process(pending)
	}
}

func (j *Journal) currentState() writerState {
	j.mu.Lock()
	defer j.mu.Unlock()
	return writerState{seq: j.lastSeq, pos: j.lastPos, horizon: j.horizon, loading: j.loading}
}

// writerRun is the writer goroutine's own state.
type writerRun struct {
	j        *Journal
	flights  chan *flight
	state    writerState
	recent   *recentCache
	flightID uint64
	inBadger chan struct{} // capacity 1: a batch is being written
	// next is the transaction for the next batch, opened before the
	// current one goes to Badger: opening a transaction waits for every
	// commit in progress, which would undo the overlap. Its reads miss the
	// batches after nextSettled; the recent cache holds their records.
	next        *badger.Txn
	nextSettled uint64
	// sizeHint is the size of the last batch, to size the next one's
	// slices and map.
	sizeHint int
}

func (w *writerRun) openNext() {
	w.nextSettled = w.j.settled.Load()
	w.next = w.j.db.NewTransaction(true)
}

func (w *writerRun) discardNext() {
	if w.next != nil {
		w.next.Discard()
		w.next = nil
	}
}

func (w *writerRun) process(ms []*mutation) {
	j := w.j
	for len(ms) > 0 {
		if ms[0].exclusive != nil {
			w.drain()
			w.discardNext()
			ms[0].done <- ms[0].exclusive()
			w.state = j.currentState()
			w.recent.clear()
			ms = ms[1:]
			continue
		}
		if err := j.failure(); err != nil {
			ms[0].done <- err
			ms = ms[1:]
			continue
		}
		b := w.newBatch()
		f := &flight{result: make(chan error, 1), taken: make([]*mutation, 0, w.sizeHint), errs: make([]error, 0, w.sizeHint)}
		durable := !ms[0].lazy
		for len(ms) > 0 && ms[0].exclusive == nil && ms[0].lazy != durable && !b.full(f) {
			w.run(b, f, ms[0])
			ms = ms[1:]
		}
		inBadger := false
		if b.broken == nil && b.writes > 0 && (len(ms) == 0 || ms[0].lazy == durable) {
			ms, inBadger = w.absorb(b, f, durable, ms)
		}
		w.sizeHint = len(f.taken) + 1
		w.flightID++
		f.id = w.flightID
		if err := b.writeMeta(w.state); err != nil && b.broken == nil {
			b.broken = err
		}
		switch {
		case b.broken != nil:
			if inBadger {
				<-w.inBadger
			}
			b.txn.Discard()
			f.result <- &brokenBatch{b.broken}
		case b.writes == 0 && !b.metaSet:
			// Nothing to write, but maybe something to do in memory (a
			// delivery of a record dropped meanwhile is released).
			if inBadger {
				<-w.inBadger
			}
			b.txn.Discard()
			f.effects = b.effects
			f.result <- nil
		default:
			f.effects, f.changed, f.wrote = b.effects, b.changed, true
			f.state = writerState{seq: b.seq, pos: b.pos, horizon: b.horizon, loading: b.loading}
			for seq, r := range b.local {
				w.recent.put(seq, r, f.id)
			}
			w.state = f.state
			// One batch at a time in Badger: it syncs each request of a
			// write group on its own, so two queued batches would cost two
			// fsyncs. Building this batch overlapped the previous one's.
			if !inBadger {
				w.inBadger <- struct{}{}
			}
			f.inBadger = w.inBadger
			w.openNext()
			j.stats.batches.Add(1)
			j.stats.mutations.Add(uint64(len(f.taken)))
			b.txn.CommitWith(func(err error) {
				// Badger writes without syncing; a batch with a durable
				// change is synced here, before the next batch enters
				// Badger, so the sync covers it whole (and every lazy
				// batch before it).
				if j.opts.beforeSync != nil {
					j.opts.beforeSync()
				}
				if err == nil && durable && !j.opts.NoSync {
					err = j.db.Sync()
				}
				f.result <- err
			})
		}
		w.flights <- f
	}
}

// absorb takes into batch b, until Badger is free for it, the mutations of
// its kind (durable or lazy) that arrive meanwhile: they would otherwise
// wait for the next batch, and its fsync. Those of the other kind are added
// to ms, to go after it. It reports whether it took Badger's slot.
//
// The slot is freed once the previous batch is settled and its callers
// answered, and the writer then yields, again as long as yielding brings
// more: a caller that follows up at once (a Commit after its Prepare)
// joins this batch instead of the one after, which would hold it up by
// another write and fsync.
func (w *writerRun) absorb(b *batch, f *flight, durable bool, ms []*mutation) ([]*mutation, bool) {
	// take runs m in the batch if it may join it; false: stop absorbing.
	take := func(m *mutation) bool {
		switch {
		case m.exclusive != nil:
			// It must run after everything queued before it.
			ms = append(ms, m)
			return false
		case m.lazy == durable:
			ms = append(ms, m)
		default:
			w.run(b, f, m)
		}
		return true
	}
	for !b.full(f) {
		select {
		case w.inBadger <- struct{}{}:
			// Yield while yielding brings more.
			for took := true; took && !b.full(f); {
				runtime.Gosched()
				took = false
			sweep:
				for !b.full(f) {
					select {
					case m := <-w.j.reqs:
						if !take(m) {
							return ms, true
						}
						took = true
					default:
						break sweep
					}
				}
			}
			return ms, true
		case m := <-w.j.reqs:
			if !take(m) {
				return ms, false
			}
		}
	}
	return ms, false
}

// full reports whether batch b of flight f should take no more mutations.
func (b *batch) full(f *flight) bool {
	return b.broken != nil || b.size >= softBatchBytes || len(f.taken) >= maxBatchMutations
}

// run carries out one mutation in batch b of flight f.
func (w *writerRun) run(b *batch, f *flight, m *mutation) {
	before := b.writes
	err := m.run(b)
	if err != nil && b.writes != before && b.broken == nil {
		b.broken = err
	}
	f.taken = append(f.taken, m)
	f.errs = append(f.errs, err)
}

// drain waits until every batch handed to Badger is settled.
func (w *writerRun) drain() {
	f := &flight{barrier: make(chan struct{})}
	w.flights <- f
	<-f.barrier
}

func (w *writerRun) newBatch() *batch {
	j := w.j
	if w.next == nil {
		w.openNext()
	}
	txn := w.next
	w.next = nil
	// Evict from the cache only what this transaction can read in Badger.
	w.recent.trim(w.nextSettled)
	return &batch{
		j:       j,
		txn:     txn,
		now:     j.opts.Now(),
		seq:     w.state.seq,
		pos:     w.state.pos,
		horizon: w.state.horizon,
		loading: w.state.loading,
		local:   make(map[uint64]*Record, w.sizeHint),
		recent:  w.recent,
	}
}

// brokenBatch is a batch discarded because a mutation failed half way.
type brokenBatch struct{ err error }

func (e *brokenBatch) Error() string { return e.err.Error() }
func (e *brokenBatch) Unwrap() error { return e.err }

// completer settles batches in the order they were written: it applies
// their in-memory effects and answers their callers once on disk.
func (j *Journal) completer(flights <-chan *flight, done chan<- struct{}) {
	defer close(done)
	for f := range flights {
		if f.barrier != nil {
			close(f.barrier)
			continue
		}
		err := <-f.result
		var broken *brokenBatch
		switch {
		case errors.As(err, &broken):
			err = broken.err
		case err != nil:
			// A write Badger could not make leaves the journal in doubt: stop
			// taking changes until it is reopened.
			err = fmt.Errorf("journal write: %w", err)
			j.fail(err)
		case j.failure() != nil:
			err = j.failure()
		}
		if err == nil && (f.wrote || len(f.effects) > 0) {
			j.mu.Lock()
			if f.wrote {
				j.lastSeq, j.lastPos, j.horizon, j.loading = f.state.seq, f.state.pos, f.state.horizon, f.state.loading
			}
			for _, e := range f.effects {
				j.apply(e)
			}
			if f.changed {
				close(j.changed)
				j.changed = make(chan struct{})
			}
			j.mu.Unlock()
			j.kick()
		}
		j.settled.Store(f.id)
		for i, m := range f.taken {
			if err != nil {
				m.done <- err
			} else {
				m.done <- f.errs[i]
			}
		}
		if f.inBadger != nil {
			<-f.inBadger
		}
	}
}

func (j *Journal) fail(err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.failed == nil {
		j.failed = err
		j.log.Error("journal write failed; the journal takes no more changes until it is reopened", "err", err)
	}
}

func (j *Journal) failure() error {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.failed
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

// writeMeta stores the counters the batch moved.
func (b *batch) writeMeta(was writerState) error {
	if b.writes == 0 && !b.metaSet {
		return nil
	}
	var err error
	if b.seq != was.seq {
		err = errors.Join(err, b.txn.Set(metaSeq, encodeNum(b.seq)))
	}
	if b.pos != was.pos {
		err = errors.Join(err, b.txn.Set(metaPos, encodeNum(b.pos)))
	}
	if b.horizon != was.horizon {
		err = errors.Join(err, b.txn.Set(metaHorizon, encodeNum(b.horizon)))
	}
	if b.loading != was.loading {
		if b.loading {
			err = errors.Join(err, b.txn.Set(metaLoading, []byte{1}))
		} else {
			err = errors.Join(err, b.txn.Delete(metaLoading))
		}
	}
	if err != nil {
		return fmt.Errorf("journal write: %w", err)
	}
	return nil
}

// effect is an in-memory update of a batch, made once the batch is on disk.
type effect struct {
	put    *Record  // a record's new version, for the index
	tokens []string // put's order tokens, if known (saves the completer the work)
	remove bool     // record seq is gone from the index
	seq    uint64
	delta  int    // change in the count of delivered records
	fn     func() // anything else
}

// apply makes an effect; j.mu is held.
func (j *Journal) apply(e effect) {
	switch {
	case e.put != nil:
		j.idx.put(e.put, e.tokens)
	case e.remove:
		j.idx.remove(e.seq)
	}
	j.delivered += e.delta
	if e.fn != nil {
		e.fn()
	}
}

// kick wakes the dispatcher.
func (j *Journal) kick() {
	select {
	case j.wake <- struct{}{}:
	default:
	}
}

// get reads a record as this batch sees it: its own writes, then those of
// batches still on their way to the disk, then Badger.
func (b *batch) get(seq uint64) (*Record, error) {
	r, ok := b.local[seq]
	if !ok {
		var e recentEntry
		if e, ok = b.recent.m[seq]; ok {
			r = e.rec
		}
	}
	if ok {
		if r == nil {
			return nil, fmt.Errorf("record %d: %w", seq, ErrNotFound)
		}
		return r, nil
	}
	return getRecord(b.txn, seq)
}

// putRecord writes a new version of a record (old is nil for a new one),
// keeps the indexes and the sealed secret in step with its state, and logs
// the change. sealed, when not nil, is the record's new sealed secret;
// tokens, when not nil, are the record's order tokens (see orderTokens).
func (b *batch) putRecord(old, rec *Record, sealed []byte, tokens []string) error {
	enc, err := b.storeRecord(old, rec, sealed, tokens)
	if err != nil {
		return err
	}
	return b.logEvent(b.now, EventPut, rec.Seq, enc)
}

// deleteRecord removes a record, its secret and its index keys, and logs it.
func (b *batch) deleteRecord(old *Record) error {
	if err := b.removeRecord(old); err != nil {
		return err
	}
	return b.logEvent(b.now, EventDelete, old.Seq, nil)
}

// storeRecord writes a record version and its index keys, and returns its
// encoding.
func (b *batch) storeRecord(old, rec *Record, sealed []byte, tokens []string) ([]byte, error) {
	rec.makeValidText()
	enc := encodeRecord(rec)
	if len(enc) > maxRecordBytes {
		return nil, fmt.Errorf("record %d: %d bytes: %w", rec.Seq, len(enc), ErrTooLarge)
	}
	seq := rec.Seq
	if err := b.set(numKey(prefixRecord, seq), enc); err != nil {
		return nil, err
	}
	if sealed != nil {
		if err := b.set(numKey(prefixSecret, seq), sealed); err != nil {
			return nil, err
		}
	} else if rec.SecretState != SecretEncrypted && old != nil && old.SecretState == SecretEncrypted {
		if err := b.delete(numKey(prefixSecret, seq)); err != nil {
			return nil, err
		}
	}
	wasDelivered := old != nil && old.State == StateDelivered
	isDelivered := rec.State == StateDelivered
	if !isDelivered && (old == nil || wasDelivered) {
		if err := b.set(numKey(prefixActive, seq), nil); err != nil {
			return nil, err
		}
	}
	if isDelivered && old != nil && !wasDelivered {
		if err := b.delete(numKey(prefixActive, seq)); err != nil {
			return nil, err
		}
	}
	if wasDelivered && (!isDelivered || !old.DeliveredAt.Equal(rec.DeliveredAt)) {
		if err := b.delete(deliveredKey(old.DeliveredAt, seq)); err != nil {
			return nil, err
		}
	}
	if isDelivered && (!wasDelivered || !old.DeliveredAt.Equal(rec.DeliveredAt)) {
		if err := b.set(deliveredKey(rec.DeliveredAt, seq), nil); err != nil {
			return nil, err
		}
	}
	b.seq = max(b.seq, seq)
	b.local[seq] = rec
	delta := 0
	if isDelivered && !wasDelivered {
		delta = 1
	} else if wasDelivered && !isDelivered {
		delta = -1
	}
	b.effects = append(b.effects, effect{put: rec, tokens: tokens, delta: delta})
	return enc, nil
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
	b.local[seq] = nil
	e := effect{remove: true, seq: seq}
	if old.State == StateDelivered {
		e.delta = -1
	}
	b.effects = append(b.effects, e)
	return nil
}

// logEvent appends a change to the change log at the next position. rec is
// the record's encoding (nil for a delete). Secrets never go into the log:
// Feed attaches a record's sealed secret when it sends the change.
func (b *batch) logEvent(at time.Time, typ EventType, seq uint64, rec []byte) error {
	pos := b.pos + 1
	if err := b.set(numKey(prefixEvent, pos), appendEvent(make([]byte, 0, eventSize(rec)), pos, at, typ, seq, rec)); err != nil {
		return err
	}
	b.pos = pos
	b.changed = true
	return nil
}
