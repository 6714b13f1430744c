package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// writer is the journal's only writer. One goroutine takes every mutation
// waiting at the moment into one Badger transaction, so that one fsync
// serves them all (group commit), and builds the next batch while Badger
// syncs the previous one; a completer goroutine settles the batches in
// order once they are on disk.
//
// It owns the request queue, the batches in flight and the journal's
// counters (last sequence number, a replicated journal's applied index,
// term and restore flag). Locking: mu guards only the counters as settled
// and the failure; closeMu guards closed against a mutation being queued
// while the writer stops. The in-memory index is not the writer's: once a
// batch is settled, the completer hands the batch's effects to the indexer
// (the scheduler) before it publishes the counters, so whoever sees the
// counters also sees the index that goes with them. The writer never holds
// mu while calling out.
type writer struct {
	db    *badger.DB
	opts  Options
	log   *slog.Logger
	index indexer

	wal     walSync // makes the durable batches durable
	reqs    chan *mutation
	settled atomic.Uint64 // last batch settled by the completer
	stats   writerStats
	quit    chan struct{}
	done    chan struct{}

	closeMu sync.RWMutex
	closed  bool // no new mutation

	mu     sync.Mutex
	state  writerState // the counters as of the last settled batch
	failed error       // a write failed: no more changes until reopened
}

// An indexer keeps an in-memory view of the records in step with the
// disk: the writer's completer hands it the effects of each settled batch,
// in order, on one goroutine.
type indexer interface {
	apply(effects []effect)
}

func newWriter(db *badger.DB, opts Options, log *slog.Logger, state writerState, index indexer) *writer {
	return &writer{
		db:    db,
		opts:  opts,
		log:   log,
		index: index,
		reqs:  make(chan *mutation, 1024),
		quit:  make(chan struct{}),
		done:  make(chan struct{}),
		state: state,
	}
}

// start runs the writer goroutine.
func (w *writer) start() { go w.loop() }

// stop lets no new mutation in, carries out those already queued and waits
// until the last batch is settled.
func (w *writer) stop() {
	w.closeMu.Lock()
	w.closed = true
	w.closeMu.Unlock()
	close(w.quit)
	<-w.done
	w.wal.close()
}

// current is the journal's counters as of the last settled batch.
func (w *writer) current() writerState {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.state
}

// setState replaces the counters; only for a restore (Journal.Restore),
// which runs alone on the writer goroutine.
func (w *writer) setState(st writerState) {
	w.mu.Lock()
	w.state = st
	w.mu.Unlock()
}

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
	// (a restore, which drops whole key ranges, or a settled view).
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
	txn     *badger.Txn
	now     time.Time
	seq     uint64 // last sequence number, advanced by Prepare
	loading bool   // a replicated journal half restored (see Restore)
	applied uint64 // a replicated journal's last applied Raft index
	term    uint64 // a replicated journal's delivery term (see CmdFence)
	metaSet bool
	size    int
	writes  int
	broken  error
	opened  map[uint64]bool    // records it prepared (true) or settled (false) (see writerRun.open)
	local   map[uint64]*Record // records written by this batch (nil: deleted)
	recent  *recentCache
	// disabled holds the disabled accounts this batch wrote (nil:
	// removed), by lower-case name; recentDisabled those of the batches
	// still on their way to the disk (see recentCache).
	disabled       map[string]*DisabledAccount
	recentDisabled map[string]recentDisabled
	effects        []effect // in-memory updates, for the indexer once settled
	keys           []byte   // the chunk the batch's keys are cut from (see key)
	// aborted are a replicated journal's tombstones (see PrepareToken),
	// replaced whole when they change; preparedSeqs, when set, lists the
	// records the index holds prepared (see preparedWithToken).
	aborted      []tombstone
	preparedSeqs func() []uint64
	// trackOpen: the batch notes the records it prepares and settles
	// (opened), for writerRun.open; not a replicated journal's.
	trackOpen bool
}

// writerState is the journal's counters: as settled (writer.state), or as
// the writer goroutine has written them, including batches still on their
// way to the disk (writerRun.state).
type writerState struct {
	seq           uint64
	loading       bool
	applied, term uint64      // a replicated journal's (see batch)
	aborted       []tombstone // a replicated journal's; never changed in place
}

// recentDisabled is a disabled account written by a batch not yet known
// to be readable in Badger (nil: removed).
type recentDisabled struct {
	d      *DisabledAccount
	flight uint64
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
	wrote   bool // the batch went to Badger
	// inBadger, when set, is the writer's slot for the batch in Badger,
	// freed once the batch is settled.
	inBadger chan struct{}
	state    writerState   // the journal once this batch is on disk
	result   chan error    // the commit's outcome
	barrier  chan struct{} // set on a drain marker instead of a batch
}

// writerStats counts the batches written and the syncs, for the
// benchmarks and tests.
type writerStats struct {
	batches, mutations, syncs atomic.Uint64
}

// maxFlights bounds the batches waiting for the disk at once.
const maxFlights = 8

// submit queues a mutation and waits for its outcome. ctx bounds only the
// wait for a place in the queue: a queued mutation is always carried out
// (or failed) by the writer, and its caller learns which.
func (w *writer) submit(ctx context.Context, run func(b *batch) error) error {
	return w.enqueue(ctx, &mutation{run: run, done: make(chan error, 1)})
}

// submitLazy is submit for a change that need not be fsynced on its own
// (see mutation.lazy).
func (w *writer) submitLazy(ctx context.Context, run func(b *batch) error) error {
	return w.enqueue(ctx, &mutation{run: run, lazy: true, done: make(chan error, 1)})
}

func (w *writer) enqueue(ctx context.Context, m *mutation) error {
	if err := w.queue(ctx, m); err != nil {
		return err
	}
	return <-m.done
}

// queue hands a mutation to the writer without waiting for its outcome;
// mutations queued by one goroutine run in the order it queued them.
func (w *writer) queue(ctx context.Context, m *mutation) error {
	w.closeMu.RLock()
	defer w.closeMu.RUnlock()
	if w.closed {
		return ErrClosed
	}
	select {
	case w.reqs <- m:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// loop is the writer goroutine (see writer).
func (w *writer) loop() {
	defer close(w.done)
	flights := make(chan *flight, maxFlights)
	completerDone := make(chan struct{})
	go w.completer(flights, completerDone)
	r := &writerRun{w: w, flights: flights, recent: newRecentCache(recentRecords), disabled: map[string]recentDisabled{}, inBadger: make(chan struct{}, 1), open: map[uint64]time.Time{}}
	defer func() {
		r.discardNext()
		close(flights)
		<-completerDone
	}()
	r.state = w.current()
	pending := make([]*mutation, 0, maxBatchMutations)
	for {
		select {
		case m := <-w.reqs:
			pending = append(pending[:0], m)
		case <-w.quit:
			// Close lets no new mutation in once quit is closed; finish
			// those already queued.
			for {
				select {
				case m := <-w.reqs:
					r.process([]*mutation{m})
				default:
					return
				}
			}
		}
	gather:
		for len(pending) < maxBatchMutations {
			select {
			case m := <-w.reqs:
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
		r.process(pending)
	}
}

// writerRun is the writer goroutine's own state.
type writerRun struct {
	w        *writer
	flights  chan *flight
	state    writerState
	recent   *recentCache
	disabled map[string]recentDisabled
	flightID uint64
	inBadger chan struct{} // capacity 1: a batch is being written
	// next is the transaction for the next batch, opened before the
	// current one goes to Badger: opening a transaction waits for every
	// commit in progress, which would undo the overlap. Its reads miss the
	// batches after nextSettled; the recent cache holds their records.
	next        *badger.Txn
	nextSettled uint64
	// sizeHint is the size of the last batch, to size the next one's
	// slices; recsHint the records it wrote, to size its map of them (a
	// replicated journal's mutation is a group of Raft entries: hundreds
	// of records, whose map grew step by step, at 1% of a cluster's CPU
	// time).
	sizeHint int
	recsHint int
	keys     []byte // the chunk the next batch cuts its keys from (see batch.key)
	// open holds the records prepared and not yet settled (committed or
	// aborted), as the writer has written them, with when: writes whose
	// callers are waiting for the directory's answer, and who, if they
	// write again, will send their next Prepare soon (see absorb). One
	// open for longer than Options.openHorizon is not counted (and
	// forgotten): a record left prepared by a settle that failed (a
	// commit that could not be made, a password the directory could not
	// confirm) stays so until the next start, and would otherwise make
	// every Prepare of a lone writer wait for company it does not have.
	//
	// A replicated journal keeps none (see batch.trackOpen): its records
	// are prepared and settled by Apply, whose batches are lazy and never
	// wait for company (linger counts durable mutations only); keeping
	// them cost two map writes per record in the batch and two here, on
	// every node.
	open map[uint64]time.Time
}

// openWrites counts the open writes (see open) at now.
func (w *writerRun) openWrites(now time.Time) int {
	for seq, at := range w.open {
		if now.Sub(at) > w.w.opts.openHorizon {
			delete(w.open, seq)
		}
	}
	return len(w.open)
}

func (w *writerRun) openNext() {
	w.nextSettled = w.w.settled.Load()
	w.next = w.w.db.NewTransaction(true)
}

func (w *writerRun) discardNext() {
	if w.next != nil {
		w.next.Discard()
		w.next = nil
	}
}

func (w *writerRun) process(ms []*mutation) {
	wr := w.w
	for len(ms) > 0 {
		if ms[0].exclusive != nil {
			w.drain()
			w.discardNext()
			ms[0].done <- ms[0].exclusive()
			w.state = wr.current()
			clear(w.open)
			w.recent.clear()
			clear(w.disabled)
			ms = ms[1:]
			continue
		}
		if err := wr.failure(); err != nil {
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
		w.recsHint = len(b.local) + 1
		w.keys = b.keys
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
			f.effects, f.wrote = b.effects, true
			f.state = writerState{seq: b.seq, loading: b.loading, applied: b.applied, term: b.term, aborted: b.aborted}
			for seq, r := range b.local {
				w.recent.put(seq, r, f.id)
			}
			for name, d := range b.disabled {
				w.disabled[name] = recentDisabled{d: d, flight: f.id}
			}
			w.state = f.state
			now := time.Now() // not Options.Now: a test's clock may stand still
			for seq, open := range b.opened {
				if open {
					w.open[seq] = now
				} else {
					delete(w.open, seq)
				}
			}
			// One batch at a time in Badger: it syncs each request of a
			// write group on its own, so two queued batches would cost two
			// fsyncs. Building this batch overlapped the previous one's.
			if !inBadger {
				w.inBadger <- struct{}{}
			}
			f.inBadger = w.inBadger
			w.openNext()
			wr.stats.batches.Add(1)
			wr.stats.mutations.Add(uint64(len(f.taken)))
			b.txn.CommitWith(func(err error) {
				// Badger writes without syncing; a batch with a durable
				// change is synced here, before the next batch enters
				// Badger, so the sync covers it whole (and every lazy
				// batch before it).
				if wr.opts.beforeSync != nil {
					wr.opts.beforeSync()
				}
				if err == nil && durable {
					wr.stats.syncs.Add(1) // or would, without NoSync
					if !wr.opts.NoSync {
						err = wr.wal.sync(wr.db)
					}
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
//
// Then, while other writes are open (prepared, waiting for the
// directory's answer), a durable batch waits, for up to
// Options.GroupCommitDelay, for one more mutation per open write: their
// callers are likely to write again soon, and sharing the fsync is worth
// the wait. Each fsync costs the process far more CPU time than its
// system call (issue 19 measured a third of the extra CPU time of a
// journal on disk in the syncs themselves, two thirds in the scheduler's
// wake-ups around them), and a machine short of CPU makes fewer writes a
// second for it. A lone writer has no other write open when it sends the
// next (its last one was settled), so its Prepares never wait.
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
					case m := <-w.w.reqs:
						if !take(m) {
							return ms, true
						}
						took = true
					default:
						break sweep
					}
				}
			}
			if durable && w.w.opts.GroupCommitDelay > 0 {
				if open := w.openWrites(time.Now()); open > 0 && !w.linger(b, f, len(f.taken)+open, take) {
					return ms, true
				}
			}
			return ms, true
		case m := <-w.w.reqs:
			if !take(m) {
				return ms, false
			}
		}
	}
	return ms, false
}

// linger takes mutations into batch b until it has want of them, for up
// to Options.GroupCommitDelay (see absorb); false: take refused one, stop
// absorbing. Mutations of the other kind (lazy) do not count: take sets
// them aside.
func (w *writerRun) linger(b *batch, f *flight, want int, take func(*mutation) bool) bool {
	t := time.NewTimer(w.w.opts.GroupCommitDelay)
	defer t.Stop()
	for len(f.taken) < want && !b.full(f) {
		select {
		case m := <-w.w.reqs:
			if !take(m) {
				return false
			}
		case <-t.C:
			return true
		case <-w.w.quit:
			return true
		}
	}
	return true
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
	wr := w.w
	if w.next == nil {
		w.openNext()
	}
	txn := w.next
	w.next = nil
	// Evict from the caches only what this transaction can read in Badger.
	w.recent.trim(w.nextSettled)
	for name, d := range w.disabled {
		if d.flight <= w.nextSettled {
			delete(w.disabled, name)
		}
	}
	return &batch{
		txn:            txn,
		now:            wr.opts.Now(),
		seq:            w.state.seq,
		loading:        w.state.loading,
		applied:        w.state.applied,
		term:           w.state.term,
		aborted:        w.state.aborted,
		local:          make(map[uint64]*Record, w.recsHint),
		recent:         w.recent,
		recentDisabled: w.disabled,
		keys:           w.keys,
		trackOpen:      !wr.opts.Replicated,
	}
}

// brokenBatch is a batch discarded because a mutation failed half way.
type brokenBatch struct{ err error }

func (e *brokenBatch) Error() string { return e.err.Error() }
func (e *brokenBatch) Unwrap() error { return e.err }

// completer settles batches in the order they were written: it hands their
// effects to the indexer, publishes the counters and answers the callers
// once on disk.
func (w *writer) completer(flights <-chan *flight, done chan<- struct{}) {
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
			w.fail(err)
		case w.failure() != nil:
			err = w.failure()
		}
		if err == nil && (f.wrote || len(f.effects) > 0) {
			if len(f.effects) > 0 {
				w.index.apply(f.effects)
			}
			if f.wrote {
				w.publish(f.state)
			}
		}
		w.settled.Store(f.id)
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

// publish makes a settled batch's counters current.
func (w *writer) publish(st writerState) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.state = st
}

func (w *writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed == nil {
		w.failed = err
		w.log.Error("journal write failed; the journal takes no more changes until it is reopened", "err", err)
	}
}

func (w *writer) failure() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.failed
}

// key is numKey(prefix, n) for a write of this batch: the keys of the
// batches are cut from shared chunks rather than allocated one by one
// (three or four per record, on every node of a cluster), the next batch
// going on with the last one's chunk. Badger holds them until their
// batch is committed; no part of a chunk is written twice.
func (b *batch) key(prefix []byte, n uint64) []byte {
	if cap(b.keys)-len(b.keys) < len(prefix)+8 {
		b.keys = make([]byte, 0, keyChunk)
	}
	from := len(b.keys)
	b.keys = binary.BigEndian.AppendUint64(append(b.keys, prefix...), n)
	return b.keys[from:len(b.keys):len(b.keys)]
}

// keyChunk is the size of the chunks a batch cuts its keys from.
const keyChunk = 4 << 10

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
	if b.applied != was.applied {
		err = errors.Join(err, b.txn.Set(metaApplied, encodeNum(b.applied)))
	}
	if b.term != was.term {
		err = errors.Join(err, b.txn.Set(metaTerm, encodeNum(b.term)))
	}
	if len(b.aborted) > 0 || len(was.aborted) > 0 {
		if len(b.aborted) != len(was.aborted) || &b.aborted[0] != &was.aborted[0] {
			if len(b.aborted) == 0 {
				err = errors.Join(err, b.txn.Delete(metaAborted))
			} else {
				err = errors.Join(err, b.txn.Set(metaAborted, encodeTombstones(b.aborted)))
			}
		}
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

// effect is an in-memory update of a batch, handed to the indexer once the
// batch is on disk.
type effect struct {
	put     *Record  // a record's new version, for the index
	tokens  []string // put's order tokens, if known (saves the completer the work)
	remove  bool     // record seq is gone from the index
	seq     uint64
	delta   int         // change in the count of delivered records
	release *dispatched // a delivery that has ended
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

// putRecord writes a new version of a record (old is nil for a new one)
// and keeps the indexes and the sealed secret in step with its state.
// sealed, when not nil, is the record's new sealed secret; tokens, when not
// nil, are the record's order tokens (see orderTokens).
func (b *batch) putRecord(old, rec *Record, sealed []byte, tokens []string) error {
	_, err := b.storeRecord(old, rec, sealed, tokens)
	return err
}

// deleteRecord removes a record, its secret and its index keys.
func (b *batch) deleteRecord(old *Record) error { return b.removeRecord(old) }

// storeRecord writes a record version and its index keys, and returns its
// encoding.
func (b *batch) storeRecord(old, rec *Record, sealed []byte, tokens []string) ([]byte, error) {
	rec.makeValidText()
	enc := encodeStoredRecord(rec)
	if len(enc) > maxRecordBytes {
		return nil, fmt.Errorf("record %d: %d bytes: %w", rec.Seq, len(enc), ErrTooLarge)
	}
	seq := rec.Seq
	if err := b.set(b.key(prefixRecord, seq), enc); err != nil {
		return nil, err
	}
	if sealed != nil {
		if err := b.set(b.key(prefixSecret, seq), sealed); err != nil {
			return nil, err
		}
	} else if rec.SecretState != SecretEncrypted && old != nil && old.SecretState == SecretEncrypted {
		if err := b.delete(b.key(prefixSecret, seq)); err != nil {
			return nil, err
		}
	}
	wasDelivered := old != nil && old.State == StateDelivered
	isDelivered := rec.State == StateDelivered
	if !isDelivered && (old == nil || wasDelivered) {
		if err := b.set(b.key(prefixActive, seq), nil); err != nil {
			return nil, err
		}
	}
	if isDelivered && old != nil && !wasDelivered {
		if err := b.delete(b.key(prefixActive, seq)); err != nil {
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
	if rec.State == StatePrepared && (old == nil || old.State != StatePrepared) {
		b.markOpen(seq, true)
	} else if rec.State != StatePrepared && old != nil && old.State == StatePrepared {
		b.markOpen(seq, false)
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

// storeCommit writes rec, the committed version of prepared record old,
// as what the Commit changed (see encodeCommit): the record stays as its
// Prepare stored it.
func (b *batch) storeCommit(old, rec *Record) error {
	// old is a stored version, whose texts are valid (storeRecord makes
	// them so; records stored before that were JSON): only those the
	// Commit gave may not be. Checking the whole record again cost a
	// cluster's nodes 1% of their CPU time (BenchmarkClusterRecords).
	rec.EntryKey, rec.Name = validText(rec.EntryKey), validText(rec.Name)
	commit := encodeCommit(old, rec)
	if n := rec.storedSizeHint() + len(commit); n > maxRecordBytes {
		return fmt.Errorf("record %d: about %d bytes: %w", rec.Seq, n, ErrTooLarge)
	}
	seq := rec.Seq
	if err := b.set(b.key(prefixActive, seq), commit); err != nil {
		return err
	}
	b.markOpen(seq, false)
	b.local[seq] = rec
	b.effects = append(b.effects, effect{put: rec})
	return nil
}

// markOpen notes that record seq was prepared (open) or settled.
func (b *batch) markOpen(seq uint64, open bool) {
	if !b.trackOpen {
		return
	}
	if b.opened == nil {
		b.opened = map[uint64]bool{}
	}
	b.opened[seq] = open
}

func (b *batch) removeRecord(old *Record) error {
	seq := old.Seq
	if err := b.delete(b.key(prefixRecord, seq)); err != nil {
		return err
	}
	if old.SecretState == SecretEncrypted {
		if err := b.delete(b.key(prefixSecret, seq)); err != nil {
			return err
		}
	}
	if old.State == StateDelivered {
		if err := b.delete(deliveredKey(old.DeliveredAt, seq)); err != nil {
			return err
		}
	} else if err := b.delete(b.key(prefixActive, seq)); err != nil {
		return err
	}
	if old.State == StatePrepared {
		b.markOpen(seq, false)
	}
	b.local[seq] = nil
	e := effect{remove: true, seq: seq}
	if old.State == StateDelivered {
		e.delta = -1
	}
	b.effects = append(b.effects, e)
	return nil
}
