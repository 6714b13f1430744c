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
// batch, it builds the next and takes in what arrives until Badger is free.
// Prepare, Retry, Drop and a standby's Apply return once their change is on
// disk (fsync). Commit, Abort, a delivery's outcome and housekeeping return
// once Badger has the change (a process crash loses none of them) and reach
// the disk with the next durable batch (or, if Badger started a new
// memtable in between, when it flushes the previous one to a table, soon
// after): losing one to a power cut is harmless by design, since a record
// still prepared is settled at start-up as after a crash, and a delivery
// that was done again is state-based. Not syncing them on their own spares
// the disk two of every three syncs. The writer numbers the changes in the
// order they reach the disk. That numbering (the position) is the
// replication feed: Feed streams every change from a position, Apply
// replays it on a standby's journal, which then holds an exact copy.
//
// Secrets (passwords) are stored apart from the record, AES-256-GCM
// encrypted with the key in Options.KeyFile, and deleted once delivered or
// dropped. Older copies of a deleted ciphertext may stay in Badger's files
// until compaction rewrites them; without the key they are unreadable.
//
// On disk, a gateway's data folder DATA_DIR holds the journal in
// DATA_DIR/journal (Badger files plus ldapgate.lock, held while the journal
// is open) and its key in DATA_DIR/journal.key (64 hex digits, mode 0600,
// created on first start). A standby needs a copy of the key file.
//
// Badger keys: "m/..." counters, "r/"+seq the record (see codec.go), "s/"+seq the
// sealed secret, "a/"+seq the index of records not delivered, "d/"+time+seq
// the index of delivered records by delivery time, "e/"+pos the change log.
// Numbers are big-endian so that keys sort in numeric order.
package store

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
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
	ErrFollower  = errors.New("journal is a follower: it only applies the primary's changes")
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
	// MaxAttempts is how many deliveries fail before a record is dead (25).
	MaxAttempts int
	// BackoffBase and BackoffCap bound the wait before a retry: it doubles
	// from BackoffBase with each failure up to BackoffCap (1s, 10m), then a
	// random part of up to half of it is taken off (jitter).
	BackoffBase, BackoffCap time.Duration
	// Retention is how long delivered records are kept (30 days). It also
	// bounds the change log a standby can catch up from without a snapshot.
	Retention time.Duration
	// HousekeepingInterval is how often the background purge and value-log
	// garbage collection run (10m). Negative: never (callers run Housekeep).
	HousekeepingInterval time.Duration
	// Follower opens a standby's copy: it accepts only Apply.
	Follower bool
	// MustExist refuses to create a journal (or a key) that is not there.
	MustExist bool
	// Logger receives the journal's and Badger's warnings (slog.Default()).
	Logger *slog.Logger
	// Now is the clock (time.Now); tests set it.
	Now func() time.Time

	// uncompressed turns off Badger's table compression, so that a test's
	// search of the files for a plaintext cannot miss a compressed copy.
	uncompressed bool
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
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// Journal is an open change journal. Its methods are safe for concurrent use.
type Journal struct {
	dir  string
	opts Options
	log  *slog.Logger
	db   *badger.DB
	lock *os.File
	seal *sealer // nil without a key

	reqs       chan *mutation
	settled    atomic.Uint64 // last batch settled by the completer
	stats      writerStats
	quit       chan struct{}
	writerDone chan struct{}
	closeMu    sync.RWMutex
	closing    bool // Close has begun: no new Run
	closed     bool // no new mutation

	bgCancel context.CancelFunc
	bg       sync.WaitGroup

	wake chan struct{} // capacity 1: something may have become deliverable

	mu        sync.Mutex // guards the fields below
	lastSeq   uint64     // highest sequence number assigned
	lastPos   uint64     // position of the last change
	horizon   uint64     // first position still in the change log
	loading   bool       // follower in the middle of a snapshot
	delivered int        // delivered records kept
	idx       *index
	changed   chan struct{} // closed and replaced after each change (feed waiters)
	running   bool
	stopRun   context.CancelFunc
	runDone   chan struct{}
	failed    error // a write failed: no more changes until reopened
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
	j := &Journal{
		dir:        dir,
		opts:       opts,
		log:        opts.Logger.With("component", "journal"),
		lock:       lock,
		reqs:       make(chan *mutation, 1024),
		quit:       make(chan struct{}),
		writerDone: make(chan struct{}),
		wake:       make(chan struct{}, 1),
		idx:        newIndex(),
		changed:    make(chan struct{}),
	}
	j.db, err = badger.Open(badgerOptions(dir, opts, j.log))
	if err != nil {
		lock.Close()
		return nil, fmt.Errorf("open journal %s: %w", dir, err)
	}
	if err := j.load(); err != nil {
		j.db.Close()
		lock.Close()
		return nil, err
	}
	go j.writer()
	bgCtx, cancel := context.WithCancel(context.Background())
	j.bgCancel = cancel
	if opts.HousekeepingInterval > 0 {
		j.bg.Add(1)
		go j.housekeeping(bgCtx)
	}
	return j, nil
}

// lockDir takes an exclusive lock on the journal folder, so that the CLI
// can tell a journal held by a running gateway from a broken one.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, "ldapgate.lock"), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("journal lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, &LockedError{Dir: dir}
		}
		return nil, fmt.Errorf("journal lock: %w", err)
	}
	return f, nil
}

// badgerOptions is Badger's small embedded profile: a few MiB of memtables
// and caches instead of Badger's server-sized defaults.
func badgerOptions(dir string, opts Options, log *slog.Logger) badger.Options {
	return badger.DefaultOptions(dir).
		WithSyncWrites(false).      // the writer syncs the batches that must be durable
		WithDetectConflicts(false). // one writer goroutine: no conflicts to detect
		WithMemTableSize(8 << 20).
		WithNumMemtables(2).
		WithValueLogFileSize(16 << 20).
		WithBlockCacheSize(8 << 20).
		WithIndexCacheSize(4 << 20).
		WithNumCompactors(2).
		WithNumLevelZeroTables(2).
		WithNumLevelZeroTablesStall(4).
		WithBaseTableSize(1 << 20).
		WithCompression(compression(opts)).
		WithLogger(badgerLogger{log})
}

func compression(opts Options) options.CompressionType {
	if opts.uncompressed {
		return options.None
	}
	return options.Snappy
}

// badgerLogger passes Badger's warnings and errors to slog and drops its
// chatty informational messages.
type badgerLogger struct{ log *slog.Logger }

func (l badgerLogger) Errorf(f string, a ...any) {
	l.log.Error("badger: " + trimNL(fmt.Sprintf(f, a...)))
}
func (l badgerLogger) Warningf(f string, a ...any) {
	l.log.Warn("badger: " + trimNL(fmt.Sprintf(f, a...)))
}

// Infof passes on only the write stalls: a stall holds every Prepare up.
func (l badgerLogger) Infof(f string, a ...any) {
	if msg := fmt.Sprintf(f, a...); strings.Contains(msg, "L0 was stalled") {
		l.log.Warn("badger: " + trimNL(msg))
	}
}

func (badgerLogger) Debugf(string, ...any) {}

func trimNL(s string) string {
	for len(s) > 0 && s[len(s)-1] == '\n' {
		s = s[:len(s)-1]
	}
	return s
}

// Keys.
var (
	metaSeq     = []byte("m/seq")
	metaPos     = []byte("m/pos")
	metaHorizon = []byte("m/horizon")
	metaLoading = []byte("m/loading")
	metaKey     = []byte("m/keycheck")

	prefixRecord    = []byte("r/")
	prefixSecret    = []byte("s/")
	prefixActive    = []byte("a/")
	prefixDelivered = []byte("d/")
	prefixEvent     = []byte("e/")
)

func numKey(prefix []byte, n uint64) []byte {
	k := make([]byte, len(prefix), len(prefix)+8)
	copy(k, prefix)
	return binary.BigEndian.AppendUint64(k, n)
}

func keyNum(prefix, key []byte) uint64 {
	return binary.BigEndian.Uint64(key[len(prefix):])
}

func deliveredKey(at time.Time, seq uint64) []byte {
	k := numKey(prefixDelivered, uint64(at.UnixNano()))
	return binary.BigEndian.AppendUint64(k, seq)
}

func encodeNum(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func getNum(txn *badger.Txn, key []byte) (uint64, bool, error) {
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, err
	}
	var n uint64
	err = item.Value(func(v []byte) error {
		if len(v) != 8 {
			return fmt.Errorf("key %s: bad counter", key)
		}
		n = binary.BigEndian.Uint64(v)
		return nil
	})
	return n, true, err
}

// load reads the counters, checks the key and builds the in-memory index of
// the records not yet delivered.
func (j *Journal) load() error {
	var keyCheck []byte
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		if j.lastSeq, _, err = getNum(txn, metaSeq); err != nil {
			return err
		}
		if j.lastPos, _, err = getNum(txn, metaPos); err != nil {
			return err
		}
		var ok bool
		if j.horizon, ok, err = getNum(txn, metaHorizon); err != nil {
			return err
		} else if !ok {
			j.horizon = 1
		}
		if _, err := txn.Get(metaLoading); err == nil {
			j.loading = true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		if item, err := txn.Get(metaKey); err == nil {
			if keyCheck, err = item.ValueCopy(nil); err != nil {
				return err
			}
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixActive})
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			seq := keyNum(prefixActive, it.Item().Key())
			r, err := getRecord(txn, seq)
			if err != nil {
				return fmt.Errorf("index record %d: %w", seq, err)
			}
			j.idx.put(r, nil)
		}
		// Counting keys reads no values: quick even for a long audit trail.
		dit := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDelivered})
		defer dit.Close()
		for dit.Rewind(); dit.Valid(); dit.Next() {
			j.delivered++
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read journal %s: %w", j.dir, err)
	}
	if j.opts.KeyFile == "" {
		return nil
	}
	// A journal that already has a key must not silently get a new one: its
	// secrets could no longer be read.
	j.seal, err = loadOrCreateKey(j.opts.KeyFile, keyCheck == nil && !j.opts.MustExist)
	if err != nil {
		if keyCheck != nil && errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("journal %s holds secrets encrypted with a key that is missing (%s): %w", j.dir, j.opts.KeyFile, err)
		}
		if j.opts.MustExist && errors.Is(err, os.ErrNotExist) {
			j.seal = nil
			return nil
		}
		return err
	}
	if keyCheck != nil {
		if string(keyCheck) != string(j.seal.check) {
			return fmt.Errorf("%s: %w", j.opts.KeyFile, ErrWrongKey)
		}
		return nil
	}
	return j.db.Update(func(txn *badger.Txn) error { return txn.Set(metaKey, j.seal.check) })
}

func getRecord(txn *badger.Txn, seq uint64) (*Record, error) {
	item, err := txn.Get(numKey(prefixRecord, seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("record %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	var r *Record
	err = item.Value(func(v []byte) error {
		var err error
		r, err = decodeRecord(v)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	return r, nil
}

func getSealed(txn *badger.Txn, seq uint64) ([]byte, error) {
	item, err := txn.Get(numKey(prefixSecret, seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("secret of record %d: %w", seq, err)
	}
	return item.ValueCopy(nil)
}

// Close stops delivery and housekeeping, writes what is queued and closes
// the journal.
func (j *Journal) Close() error {
	j.closeMu.Lock()
	if j.closing {
		j.closeMu.Unlock()
		return nil
	}
	j.closing = true
	j.closeMu.Unlock()

	// Stop delivery and housekeeping first: they still record outcomes.
	j.mu.Lock()
	stop, done := j.stopRun, j.runDone
	j.mu.Unlock()
	if stop != nil {
		stop()
		<-done
	}
	j.bgCancel()
	j.bg.Wait()
	j.closeMu.Lock()
	j.closed = true
	j.closeMu.Unlock()
	close(j.quit)
	<-j.writerDone
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

// Position is the position of the last change in the journal: a follower
// passes it to the primary's Feed to continue where it stopped.
func (j *Journal) Position() uint64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.loading {
		return 0
	}
	return j.lastPos
}

// Prepare journals a write before it goes upstream and returns its sequence
// number once the record is on disk. Only r's content counts: Seq, State,
// Attempts and the delivery fields are set by the journal, and r.Secret (if
// any) is stored encrypted. ctx bounds the wait for a place in the write
// queue; once queued, Prepare waits for the disk.
func (j *Journal) Prepare(ctx context.Context, r *Record) (uint64, error) {
	if j.opts.Follower {
		return 0, ErrFollower
	}
	if err := r.validate(); err != nil {
		return 0, fmt.Errorf("prepare: %w", err)
	}
	rec := r.clone()
	rec.State = StatePrepared
	rec.Attempts, rec.NextAttempt, rec.LastError, rec.DeliveredAt = 0, time.Time{}, "", time.Time{}
	rec.SecretState = SecretNone
	if len(r.Secret) > 0 {
		if j.seal == nil {
			return 0, fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, ErrNoKey)
		}
		rec.SecretState = SecretEncrypted
	}
	if n := rec.approxSize(); n > maxRecordBytes {
		return 0, fmt.Errorf("prepare %s of %s: about %d bytes: %w", r.Op, r.DN, n, ErrTooLarge)
	}
	// Work done here, by the caller, is work the journal's one writer and
	// the batch's settling need not do.
	rec.makeValidText()
	tokens := orderTokens(rec)
	var seq uint64
	err := j.submit(ctx, func(b *batch) error {
		b.seq++
		rec.Seq = b.seq
		if rec.Time.IsZero() {
			rec.Time = b.now
		}
		var sealed []byte
		if rec.SecretState == SecretEncrypted {
			var err error
			if sealed, err = j.seal.seal(rec.Seq, r.Secret); err != nil {
				return err
			}
		}
		if err := b.putRecord(nil, rec, sealed, tokens); err != nil {
			return err
		}
		seq = rec.Seq
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, err)
	}
	return seq, nil
}

// Commit records that the upstream accepted the write of a prepared record,
// which makes it deliverable. entryKey, when not empty, sets the entry's
// stable key (known only now for an added entry).
func (j *Journal) Commit(ctx context.Context, seq uint64, entryKey string) error {
	return j.change(ctx, "commit", true, seq, func(b *batch, old *Record) error {
		if old.State != StatePrepared {
			return fmt.Errorf("record %d is %s: %w", seq, old.State, ErrState)
		}
		rec := old.next()
		rec.State = StateCommitted
		rec.NextAttempt = b.now
		if entryKey != "" {
			rec.EntryKey = entryKey
		}
		return b.putRecord(old, rec, nil, nil)
	})
}

// Abort removes a prepared record whose write the upstream refused.
func (j *Journal) Abort(ctx context.Context, seq uint64) error {
	return j.change(ctx, "abort", true, seq, func(b *batch, old *Record) error {
		if old.State != StatePrepared {
			return fmt.Errorf("record %d is %s: %w", seq, old.State, ErrState)
		}
		return b.deleteRecord(old)
	})
}

// Retry makes a dead record deliverable again with a fresh count of
// attempts, or a committed record waiting out a backoff deliverable now.
func (j *Journal) Retry(ctx context.Context, seq uint64) error {
	return j.change(ctx, "retry", false, seq, func(b *batch, old *Record) error {
		rec := old.next()
		switch old.State {
		case StateDead:
			rec.State = StateCommitted
			rec.Attempts = 0
		case StateCommitted:
			if j.inFlight(seq) {
				return fmt.Errorf("record %d: %w", seq, ErrInFlight)
			}
		default:
			return fmt.Errorf("record %d is %s, only dead or committed records can be retried: %w", seq, old.State, ErrState)
		}
		rec.NextAttempt = b.now
		return b.putRecord(old, rec, nil, nil)
	})
}

// Drop removes a record that is not delivered (a dead letter, usually),
// with its secret. Delivered records are history and are only purged.
func (j *Journal) Drop(ctx context.Context, seq uint64) error {
	return j.change(ctx, "drop", false, seq, func(b *batch, old *Record) error {
		if old.State == StateDelivered {
			return fmt.Errorf("record %d is delivered: %w", seq, ErrState)
		}
		j.log.Info("record dropped", "seq", seq, "state", old.State, "op", old.Op, "dn", old.DN)
		return b.deleteRecord(old)
	})
}

// change runs fn on record seq as one journal mutation, lazy or durable
// (see mutation.lazy), and names the operation in its error.
func (j *Journal) change(ctx context.Context, op string, lazy bool, seq uint64, fn func(b *batch, old *Record) error) error {
	if j.opts.Follower {
		return ErrFollower
	}
	run := func(b *batch) error {
		old, err := b.get(seq)
		if err != nil {
			return err
		}
		return fn(b, old)
	}
	submit := j.submit
	if lazy {
		submit = j.submitLazy
	}
	if err := submit(ctx, run); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

func (j *Journal) inFlight(seq uint64) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	e := j.idx.recs[seq]
	return e != nil && e.inflight
}

// Get returns one record (without its secret).
func (j *Journal) Get(seq uint64) (*Record, error) {
	var r *Record
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		r, err = getRecord(txn, seq)
		return err
	})
	return r, err
}

// getWithSecret returns a record with its secret decrypted, for delivery.
func (j *Journal) getWithSecret(seq uint64) (*Record, error) {
	var r *Record
	var sealed []byte
	err := j.db.View(func(txn *badger.Txn) error {
		var err error
		if r, err = getRecord(txn, seq); err != nil {
			return err
		}
		if r.SecretState == SecretEncrypted {
			sealed, err = getSealed(txn, seq)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if r.SecretState == SecretEncrypted {
		if j.seal == nil {
			return nil, fmt.Errorf("secret of record %d: %w", seq, ErrNoKey)
		}
		if sealed == nil {
			return nil, fmt.Errorf("secret of record %d is missing", seq)
		}
		if r.Secret, err = j.seal.open(seq, sealed); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Prepared returns the records still prepared, with their secrets: at
// start-up these are writes whose upstream outcome is unknown, for the
// gateway to settle (Commit or Abort) before it accepts clients.
func (j *Journal) Prepared() ([]*Record, error) {
	j.mu.Lock()
	var seqs []uint64
	for seq, e := range j.idx.recs {
		if e.state == StatePrepared {
			seqs = append(seqs, seq)
		}
	}
	j.mu.Unlock()
	sortSeqs(seqs)
	out := make([]*Record, 0, len(seqs))
	for _, seq := range seqs {
		r, err := j.getWithSecret(seq)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, nil
}

// Filter selects records for List.
type Filter struct {
	// States keeps only records in these states (all when empty).
	States []State
	// Limit keeps only the newest Limit matching records (all when 0).
	Limit int
}

// List returns the records matching f in sequence order, without secrets.
func (j *Journal) List(f Filter) ([]*Record, error) {
	want := map[State]bool{}
	activeOnly := len(f.States) > 0
	for _, s := range f.States {
		want[s] = true
		if s == StateDelivered {
			activeOnly = false
		}
	}
	var out []*Record
	err := j.db.View(func(txn *badger.Txn) error {
		prefix := prefixRecord
		if activeOnly {
			prefix = prefixActive
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix, Reverse: true, PrefetchValues: !activeOnly})
		defer it.Close()
		last := append(append([]byte(nil), prefix...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff)
		for it.Seek(last); it.ValidForPrefix(prefix); it.Next() {
			var r *Record
			var err error
			if activeOnly {
				r, err = getRecord(txn, keyNum(prefix, it.Item().Key()))
			} else {
				err = it.Item().Value(func(v []byte) error {
					r, err = decodeRecord(v)
					return err
				})
			}
			if err != nil {
				return err
			}
			if len(want) > 0 && !want[r.State] {
				continue
			}
			out = append(out, r)
			if f.Limit > 0 && len(out) == f.Limit {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list journal: %w", err)
	}
	for i, k := 0, len(out)-1; i < k; i, k = i+1, k-1 {
		out[i], out[k] = out[k], out[i]
	}
	return out, nil
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
	Position         uint64        `json:"position"`
}

// Stats counts the records per state and measures the backlog.
func (j *Journal) Stats() (Stats, error) {
	now := j.opts.Now()
	j.mu.Lock()
	s := Stats{LastSeq: j.lastSeq, Position: j.lastPos}
	var oldest time.Time
	for _, e := range j.idx.recs {
		switch e.state {
		case StatePrepared:
			s.Prepared++
		case StateCommitted:
			s.Committed++
			if oldest.IsZero() || e.time.Before(oldest) || (e.time.Equal(oldest) && e.seq < s.OldestPendingSeq) {
				oldest, s.OldestPendingSeq = e.time, e.seq
			}
		case StateDead:
			s.Dead++
		}
		if e.inflight {
			s.InFlight++
		}
	}
	s.Delivered = j.delivered
	j.mu.Unlock()
	s.Backlog = s.Committed
	if !oldest.IsZero() {
		s.OldestPending = max(now.Sub(oldest), 0)
	}
	return s, nil
}
