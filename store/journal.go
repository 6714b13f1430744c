// Package store is ldapgate's change journal: the durable record of every
// account and group write, kept between the moment the gateway intercepts it
// and the moment Axigen has it.
//
// Life of a record: Prepare writes it (state prepared) and returns only once
// it is on disk; the gateway then relays the request upstream and calls
// Commit or Abort with the upstream's answer (an aborted record is removed).
// Run delivers committed records: the records of one entry one at a time in
// sequence order, different entries in parallel, failures retried with
// exponential backoff and jitter until MaxAttempts, after which a record is
// dead until Retry or Drop. Delivered records stay for Retention as the audit
// trail, then Housekeep purges them.
//
// Durability: one goroutine writes the journal. It gathers every mutation
// waiting at that moment into a single Badger transaction, so concurrent
// writers share one fsync (group commit); while Badger writes and syncs one
// batch, it builds the next and takes in what arrives until Badger is free,
// and, while other writes are open, a little longer (GroupCommitDelay).
// Prepare, Retry and Drop return once their change is on disk (fsync).
// Commit, Abort, a delivery's outcome and housekeeping return once Badger
// has the change (a process crash loses none of them) and reach the disk
// with the next durable batch (or, if Badger started a new memtable in
// between, when it flushes the previous one to a table, soon after):
// losing one to a power cut is harmless by design, since a record still
// prepared is settled at start-up as after a crash, and a delivery that was
// done again is state-based. Not syncing them on their own spares the disk
// two of every three syncs.
//
// A replicated journal (Options.Replicated) is the state machine of a Raft
// cluster (package cluster): it changes only by applying batches of
// Commands in log order (Apply), each batch with its log index in the same
// transaction, and is copied whole by Snapshot and Restore (see
// command.go, apply.go, snapshot.go). Its own writers propose commands
// through the cluster (Proposer, propose.go), the leader delivers
// (RunTerm) and a single gateway's journal becomes one by MakeReplicated
// (convert.go). The changes of a record's life are the same code for both
// kinds of journal (commitRecord, recordOutcome...), and so is the
// scheduling of deliveries.
//
// Secrets (passwords) are stored apart from the record, AES-256-GCM
// encrypted with the key in Options.KeyFile, and deleted once delivered or
// dropped. Older copies of a deleted ciphertext may stay in Badger's files
// until compaction rewrites them; without the key they are unreadable.
//
// On disk, a gateway's data folder DATA_DIR holds the journal in
// DATA_DIR/journal (Badger files plus ldapgate.lock, held while the journal
// is open) and its key in DATA_DIR/journal.key (64 hex digits, mode 0600,
// created on first start). Every node of a cluster needs a copy of the
// same key file.
//
// Badger keys: "m/..." counters, "r/"+seq the record (see codec.go), "s/"+seq the
// sealed secret, "a/"+seq the index of records not delivered (holding, for
// a record committed since its Prepare, what the Commit changed: see
// encodeCommit), "d/"+time+seq
// the index of delivered records by delivery time, "x/..." the disabled
// accounts (see disabled.go). Numbers are big-endian so that keys sort in
// numeric order. Journals written before the Raft cluster also hold the
// standby's change log ("e/"+pos, "m/pos", "m/horizon"): Open removes it
// (see dropChangeLog).
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// Errors callers may test with errors.Is.
var (
	ErrNotFound  = errors.New("no such record")
	ErrState     = errors.New("record is not in a state that allows this")
	ErrClosed    = errors.New("journal is closed")
	ErrLocked    = errors.New("journal is in use by another process")
	ErrNoJournal = errors.New("no journal")
	ErrNoKey     = errors.New("journal has no key to encrypt secrets")
	ErrWrongKey  = errors.New("journal key does not match the key the journal was written with")
	ErrTooLarge  = errors.New("record too large")
	ErrInFlight  = errors.New("record is being delivered")
	ErrRunning   = errors.New("delivery is already running")
)

// LockedError reports a journal held by another process (a running gateway).
type LockedError struct{ Dir string }

func (e *LockedError) Error() string {
	return fmt.Sprintf("the journal in %s is in use by a running gateway (lock held)", e.Dir)
}

// Is makes errors.Is(err, ErrLocked) true.
func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// Options tune a journal. The zero value is a durable journal with the
// defaults below.
type Options struct {
	// KeyFile is the path of the AES-256 key that encrypts secrets. It is
	// created (mode 0600) when absent, unless MustExist is set. Empty: no
	// key; records carrying a secret are refused and none can be read.
	KeyFile string
	// NoSync skips the fsync on each group commit. A process crash loses
	// nothing; a power loss may. For tests and benchmarks only.
	NoSync bool
	// GroupCommitDelay is how long a durable batch (a Prepare's) may wait,
	// while other writes are open (prepared, not yet committed or
	// aborted, and for less than 5s), for one more change per open
	// write, to share its fsync (see writerRun.absorb). A lone writer
	// never waits (1ms; negative: never wait).
	GroupCommitDelay time.Duration
	// MaxAttempts is how many deliveries fail before a record is dead (25).
	MaxAttempts int
	// BackoffBase and BackoffCap bound the wait before a retry: it doubles
	// from BackoffBase with each failure up to BackoffCap (1s, 10m), then a
	// random part of up to half of it is taken off (jitter).
	BackoffBase, BackoffCap time.Duration
	// Retention is how long delivered records are kept (30 days).
	Retention time.Duration
	// HousekeepingInterval is how often the background purge and value-log
	// garbage collection run (10m). Negative: never (callers run Housekeep).
	HousekeepingInterval time.Duration
	// Replicated opens a Raft cluster's copy (see Command): it changes only
	// through Apply and Restore, in the order of the Raft log. Prepare,
	// Commit and the other changes go through the cluster once a Proposer
	// is set (SetProposer; without one they return ErrReplicated), and
	// delivery is RunTerm's (Run returns ErrReplicated). A single gateway's
	// journal must be converted first (MakeReplicated): Open refuses it
	// (ErrNotReplicated), and refuses a cluster's journal opened without
	// Replicated (ErrReplicated).
	Replicated bool
	// MustExist refuses to create a journal (or a key) that is not there.
	MustExist bool
	// Logger receives the journal's and Badger's warnings (slog.Default()).
	Logger *slog.Logger
	// Now is the clock (time.Now); tests set it.
	Now func() time.Time
	// DeliveryNames, when set, lists the Axigen names a record's delivery
	// may touch: an account record's account names, a group record's group
	// names (its name before the write, the names the write gives it).
	// Each is an order token (compared lower-cased; accounts' and groups'
	// apart): records sharing one are delivered in sequence order, though
	// their entries differ, so that an entry taking the name another entry
	// gives up (a rename of its name attribute, a delete) waits for that
	// entry's record to reach Axigen, instead of updating the account or
	// group that entry still holds there. It is called on the write path
	// and by the delivery scheduler, with the record's texts only: it must
	// be quick, read nothing and keep nothing of the record.
	DeliveryNames func(r *Record) []string

	// uncompressed turns off Badger's table compression, so that a test's
	// search of the files for a plaintext cannot miss a compressed copy.
	uncompressed bool
	// openHorizon is how long a prepared record counts as an open write
	// (see writerRun.open): 5s; tests shorten it.
	openHorizon time.Duration
	// beforeSync, when set, is called with each batch Badger has written,
	// before it is synced: tests hold a batch there.
	beforeSync func()
}

func (o Options) withDefaults() Options {
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = 25
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffCap <= 0 {
		o.BackoffCap = 10 * time.Minute
	}
	if o.BackoffCap < o.BackoffBase {
		o.BackoffCap = o.BackoffBase
	}
	if o.Retention <= 0 {
		o.Retention = 30 * 24 * time.Hour
	}
	if o.HousekeepingInterval == 0 {
		o.HousekeepingInterval = 10 * time.Minute
	}
	if o.GroupCommitDelay == 0 {
		o.GroupCommitDelay = time.Millisecond
	}
	if o.openHorizon <= 0 {
		o.openHorizon = 5 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Journal is an open change journal, and the facade over its parts, each
// with its own state and locking:
//
//   - records (records.go, codec.go): Prepare, Commit, Abort, Retry, Drop,
//     Get, List; no lock of its own, its changes go through the writer.
//   - writer (writer.go): the one goroutine that writes, with group
//     commit; it owns the counters (sequence, applied index, term) under
//     its mutex.
//   - scheduler (scheduler.go, index.go): which records are due and the
//     deliveries (Run); it owns the index of the records not yet delivered
//     under its mutex, kept in step by the writer.
//   - housekeeper (housekeeping.go): purges, value-log GC.
//
// Journal opens Badger, wires the parts and closes them in order; its
// methods are safe for concurrent use.
type Journal struct {
	dir  string
	opts Options
	db   *badger.DB
	lock *os.File

	recs   *records
	w      *writer
	sched  *scheduler
	keeper *housekeeper

	closing atomic.Bool // Close has begun
	// prop is a replicated journal's Proposer (SetProposer).
	prop atomic.Pointer[proposerRef]
}

// Open opens (creating it unless opts.MustExist) the journal in dir.
func Open(dir string, opts Options) (*Journal, error) {
	opts = opts.withDefaults()
	if _, err := os.Stat(dir); err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("journal %s: %w", dir, err)
		}
		if opts.MustExist {
			return nil, fmt.Errorf("%w in %s", ErrNoJournal, dir)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create journal folder: %w", err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	log := opts.Logger.With("component", "journal")
	db, err := badger.Open(badgerOptions(dir, opts, log))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	st, err := load(db, dir, opts)
	if err != nil {
		db.Close()
		lock.Close()
		return nil, err
	}
	sched := newScheduler(st.idx, st.delivered, opts, log)
	w := newWriter(db, opts, log, st.counters, sched)
	recs := &records{db: db, w: w, seal: st.seal, log: log, names: opts.DeliveryNames}
	if opts.Replicated {
		recs.local = ErrReplicated
	}
	sched.recs, sched.w = recs, w
	j := &Journal{
		dir:    dir,
		opts:   opts,
		db:     db,
		lock:   lock,
		recs:   recs,
		w:      w,
		sched:  sched,
		keeper: &housekeeper{db: db, w: w, sched: sched, opts: opts, log: log},
	}
	w.start()
	j.keeper.start()
	return j, nil
}

// Close stops delivery and housekeeping, writes what is queued and closes
// the journal.
func (j *Journal) Close() error {
	if !j.closing.CompareAndSwap(false, true) {
		return nil
	}
	// Stop delivery and housekeeping first: they still record outcomes.
	j.sched.shutdown()
	j.keeper.stop()
	j.w.stop()
	err := j.db.Close()
	if lerr := j.lock.Close(); err == nil && lerr != nil {
		err = lerr
	}
	if err != nil {
		return fmt.Errorf("close journal %s: %w", j.dir, err)
	}
	return nil
}

// Dir is the folder the journal lives in.
func (j *Journal) Dir() string { return j.dir }

// Prepare journals a write before it goes upstream and returns its sequence
// number once the record is on disk. Only r's content counts: Seq, State,
// Attempts and the delivery fields are set by the journal, and r.Secret (if
// any) is stored encrypted. ctx bounds the wait for a place in the write
// queue; once queued, Prepare waits for the disk.
//
// A replicated journal with a Proposer proposes the record to the cluster
// and returns once a quorum holds it and this node has applied it.
func (j *Journal) Prepare(ctx context.Context, r *Record) (uint64, error) {
	if p := j.proposer(); p != nil {
		return j.proposePrepare(ctx, p, r)
	}
	return j.recs.prepare(ctx, r)
}

// Commit records that the upstream accepted the write of a prepared record,
// which makes it deliverable. entryKey, when not empty, sets the entry's
// stable key (known only now for an added entry).
func (j *Journal) Commit(ctx context.Context, seq uint64, entryKey string) error {
	return j.CommitNamed(ctx, seq, entryKey, "")
}

// CommitNamed is Commit for a record prepared before its entry was read:
// name, the entry's name in Axigen as the write found it, becomes the
// record's Name when it has none (a Command's Name, on a cluster).
func (j *Journal) CommitNamed(ctx context.Context, seq uint64, entryKey, name string) error {
	if p := j.proposer(); p != nil {
		return j.proposeChange(ctx, p, "commit", Command{Op: CmdCommit, Seq: seq, EntryKey: entryKey, Name: name})
	}
	return j.recs.commit(ctx, seq, entryKey, name)
}

// Abort removes a prepared record whose write the upstream refused.
func (j *Journal) Abort(ctx context.Context, seq uint64) error {
	if p := j.proposer(); p != nil {
		return j.proposeChange(ctx, p, "abort", Command{Op: CmdAbort, Seq: seq})
	}
	return j.recs.abort(ctx, seq)
}

// Retry makes a dead record deliverable again with a fresh count of
// attempts, or a committed record waiting out a backoff deliverable now.
func (j *Journal) Retry(ctx context.Context, seq uint64) error {
	if p := j.proposer(); p != nil {
		// Only the delivering node knows what is in flight; elsewhere a
		// retry of a record being delivered only moves its next attempt.
		if j.sched.inFlight(seq) {
			return fmt.Errorf("retry: record %d: %w", seq, ErrInFlight)
		}
		return j.proposeChange(ctx, p, "retry", Command{Op: CmdRetry, Seq: seq})
	}
	return j.recs.retry(ctx, seq, j.sched.inFlight)
}

// Drop removes a record that is not delivered (a dead letter, usually),
// with its secret. Delivered records are history and are only purged.
func (j *Journal) Drop(ctx context.Context, seq uint64) error {
	if p := j.proposer(); p != nil {
		if err := j.proposeChange(ctx, p, "drop", Command{Op: CmdDrop, Seq: seq}); err != nil {
			return err
		}
		j.recs.log.Info("record dropped", "seq", seq)
		return nil
	}
	return j.recs.drop(ctx, seq)
}

// Get returns one record (without its secret).
func (j *Journal) Get(seq uint64) (*Record, error) { return j.recs.get(seq) }

// Waiting reports whether a committed record of the entry with key (its
// EntryKey) waits for its delivery: that delivery brings the entry's state
// then, in its turn. False on a journal that is not delivering.
func (j *Journal) Waiting(key string) bool {
	if key == "" {
		return false
	}
	j.sched.mu.Lock()
	defer j.sched.mu.Unlock()
	return j.sched.idx.waiting(key)
}

// Settling reports whether a prepared record of the entry with key (its
// EntryKey) waits for its write's outcome, and no committed one waits for
// its delivery: the write may have changed the entry already (a rename
// the directory made, whose commit is a moment away), and what it becomes
// of it is not known yet. False on a journal that is not delivering.
func (j *Journal) Settling(key string) bool {
	if key == "" {
		return false
	}
	j.sched.mu.Lock()
	defer j.sched.mu.Unlock()
	committed, prepared := j.sched.idx.unfinished(key)
	return prepared && !committed
}

// NameAfter returns, for the delivery of record seq in flight, the name
// its entry had once seq's write (and those of the records the delivery
// takes along, see Coverer) were made: the Name of the record that
// follows them in the entry's history (by entry key), not delivered yet.
// A state-based delivery reads the entry as it is now, whose name may be
// one a later record gave it; that name is the later record's to give, in
// its turn among the records of the names involved (Options.DeliveryNames),
// and as of seq the account or group has the name NameAfter returns. ok is
// false when no record follows (the entry's current name is the one), or
// when the record that follows does not know the name. Call it after the
// delivery has read the entry: a record whose write the read shows is in
// the history by then.
func (j *Journal) NameAfter(seq uint64) (name string, ok bool) {
	j.sched.mu.Lock()
	defer j.sched.mu.Unlock()
	return j.sched.idx.nameAfter(seq)
}

// RenameAfter returns, for the delivery of record seq in flight, the DN
// the entry's next rename (past the records the delivery takes along)
// moved it from: the DN, and so the name, the entry had once seq's write
// was made. waiting says that rename is still prepared (its DN not
// confirmed by the directory yet); ok is false when no rename follows. A
// cluster's deliveries name accounts and groups by it where the name is
// the DN's (see the mirror's delivery): a record's Name, read by one
// gateway, may predate another gateway's rename, but a committed rename's
// DN is the directory's own word. Call it after the delivery has read the
// entry.
func (j *Journal) RenameAfter(seq uint64) (dn string, waiting, ok bool) {
	j.sched.mu.Lock()
	defer j.sched.mu.Unlock()
	return j.sched.idx.renameAfter(seq)
}

// Prepared returns the records still prepared, with their secrets: at
// start-up these are writes whose upstream outcome is unknown, for the
// gateway to settle (Commit or Abort) before it accepts clients.
func (j *Journal) Prepared() ([]*Record, error) {
	return j.recs.withSecrets(j.sched.prepared())
}

// List returns the records matching f in sequence order, without secrets.
func (j *Journal) List(f Filter) ([]*Record, error) { return j.recs.list(f) }

// Range returns, in sequence order and without secrets, the records
// numbered from upward: at most limit of them, and fewer once they add up
// to about maxBytes (one at least). It reads no further, so a reader that
// walks a long journal page by page (the changelog's searches) holds one
// page in memory and no Badger transaction between pages.
func (j *Journal) Range(from uint64, limit, maxBytes int) ([]*Record, error) {
	return j.recs.rangeFrom(from, limit, maxBytes)
}

// Bounds returns the sequence numbers of the oldest and the newest record
// the journal holds; both are 0 when it holds none.
func (j *Journal) Bounds() (first, last uint64, err error) { return j.recs.bounds() }

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
	return j.sched.run(ctx, workers, d)
}

// Housekeep purges the delivered records older than Retention (a
// replicated journal proposes them only on the node that delivers,
// RunTerm) and runs Badger's value-log garbage collection.
// Open runs it every HousekeepingInterval.
func (j *Journal) Housekeep(ctx context.Context) (HousekeepResult, error) {
	return j.keeper.run(ctx)
}

// Stats summarises the journal.
type Stats struct {
	Prepared  int `json:"prepared"`
	Committed int `json:"committed"`
	Delivered int `json:"delivered"`
	Dead      int `json:"dead"`
	// Backlog counts the committed records not yet delivered.
	Backlog int `json:"backlog"`
	// InFlight counts the deliveries running now.
	InFlight int `json:"inFlight"`
	// OldestPending is the age of the oldest committed record not delivered
	// (zero when there is none), OldestPendingSeq its sequence number.
	OldestPending    time.Duration `json:"oldestPendingNanos"`
	OldestPendingSeq uint64        `json:"oldestPendingSeq,omitempty"`
	LastSeq          uint64        `json:"lastSeq"`
}

// Stats counts the records per state and measures the backlog.
func (j *Journal) Stats() (Stats, error) {
	now := j.opts.Now()
	// The counters first: the index is brought up to a batch before the
	// batch's counters are published, so it is at least as new as them.
	st := j.w.current()
	s := j.sched.stats(now)
	s.LastSeq = st.seq
	return s, nil
}
