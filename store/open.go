package store

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	badger "github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

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

// badgerOptions is Badger's small embedded profile, sized for a gateway
// rather than a database server: what Badger holds in memory is bounded
// by these figures whatever the journal's length and the size of its
// values (issue 16 measured the process under 70 MiB with 32 KB values):
//
//   - two memtables of 8 MiB (Badger's default is five of 64 MiB), each
//     with its write-ahead file mapped; 32 MiB for a cluster node's
//     (replicated) journal, which every node writes in full: flushing
//     8 MiB memtables cost a 3-node cluster ~8% of its CPU, and the larger
//     ones gave 10% more records/s (BenchmarkClusterRecords, records=16:
//     20,400 vs 18,622, back to back);
//   - values from 16 KiB up (a large attribute value, a long member list)
//     go to the value log and only a pointer to the LSM tree, so large
//     values do not fill the memtables and get rewritten by every
//     compaction (Badger's default threshold is 1 MiB);
//   - 16 MiB value-log files (default 1 GiB, mapped whole);
//   - an 8 MiB block cache and a 4 MiB index cache (default 256 MiB and
//     unbounded).
func badgerOptions(dir string, opts Options, log *slog.Logger) badger.Options {
	memtable := int64(8 << 20)
	if opts.Replicated {
		memtable = 32 << 20
	}
	return badger.DefaultOptions(dir).
		WithSyncWrites(false).      // the writer syncs the batches that must be durable
		WithDetectConflicts(false). // one writer goroutine: no conflicts to detect
		WithMemTableSize(memtable).
		WithNumMemtables(2).
		WithValueThreshold(16 << 10).
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

// loaded is what Open reads of a journal before its parts start.
type loaded struct {
	counters  writerState
	idx       *index // the records not yet delivered
	delivered int    // how many delivered records are kept
	seal      *sealer
}

// load reads the counters, checks the key and builds the in-memory index of
// the records not yet delivered.
func load(db *badger.DB, dir string, opts Options) (loaded, error) {
	st := loaded{idx: newIndex(opts.DeliveryNames)}
	if err := checkKind(db, dir, opts); err != nil {
		return st, err
	}
	if err := dropChangeLog(db, dir, opts.Logger.With("component", "journal")); err != nil {
		return st, err
	}
	var keyCheck []byte
	err := db.View(func(txn *badger.Txn) error {
		var err error
		if st.counters.seq, _, err = getNum(txn, metaSeq); err != nil {
			return err
		}
		if st.counters.applied, _, err = getNum(txn, metaApplied); err != nil {
			return err
		}
		if st.counters.term, _, err = getNum(txn, metaTerm); err != nil {
			return err
		}
		if st.counters.aborted, err = getTombstones(txn); err != nil {
			return err
		}
		if _, err := txn.Get(metaLoading); err == nil {
			st.counters.loading = true
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
		st.idx, st.delivered, err = readIndex(txn, opts.DeliveryNames)
		return err
	})
	if err != nil {
		return st, fmt.Errorf("read journal %s: %w", dir, err)
	}
	st.seal, err = loadKey(db, dir, opts, keyCheck)
	return st, err
}

// dropChangeLog removes what a journal written before the Raft cluster
// kept for the standby it fed: the change log ("e/"+pos, a copy of every
// record version written within Retention) and its counters ("m/pos",
// "m/horizon"). Nothing reads them any more. Badger drops the prefix in
// one pass over the tables that hold it and frees their space at once; a
// tombstone per entry would write as much again and free nothing until
// compaction (a million entries: 0.2 to 0.3 s here, against 5 s in chunks
// of housekeepingChunk). DropPrefix stops writes while it runs, which
// costs nothing here: nothing writes yet. Cut short, it is done again at
// the next Open; a journal without them pays two reads and a seek.
func dropChangeLog(db *badger.DB, dir string, log *slog.Logger) error {
	found := false
	err := db.View(func(txn *badger.Txn) error {
		for _, k := range [][]byte{metaPos, metaHorizon} {
			_, err := txn.Get(k)
			if err == nil {
				found = true
				return nil
			}
			if !errors.Is(err, badger.ErrKeyNotFound) {
				return err
			}
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent})
		defer it.Close()
		it.Rewind()
		found = it.Valid()
		return nil
	})
	if err != nil || !found {
		return err
	}
	start := time.Now()
	if err := db.DropPrefix(prefixEvent); err != nil {
		return fmt.Errorf("journal %s: drop the former change log: %w", dir, err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return errors.Join(txn.Delete(metaPos), txn.Delete(metaHorizon))
	})
	if err != nil {
		return fmt.Errorf("journal %s: drop the former change log: %w", dir, err)
	}
	log.Info("the former standby's change log removed", "dir", dir, "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// readIndex builds the in-memory index of the records not yet delivered
// and counts the delivered ones; names is Options.DeliveryNames.
func readIndex(txn *badger.Txn, names func(*Record) []string) (*index, int, error) {
	idx := newPassiveIndex(names)
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixActive})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		seq := keyNum(prefixActive, it.Item().Key())
		r, err := getRecord(txn, seq)
		if err != nil {
			return nil, 0, fmt.Errorf("index record %d: %w", seq, err)
		}
		idx.put(r, nil)
	}
	// Counting keys reads no values: quick even for a long audit trail.
	delivered := 0
	dit := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDelivered})
	defer dit.Close()
	for dit.Rewind(); dit.Valid(); dit.Next() {
		delivered++
	}
	return idx, delivered, nil
}

// loadKey returns the sealer of the key file (nil without one), checked
// against the journal's keyCheck, and records the key check in a journal
// that has none yet.
func loadKey(db *badger.DB, dir string, opts Options, keyCheck []byte) (*sealer, error) {
	if opts.KeyFile == "" {
		return nil, nil
	}
	// A journal that already has a key must not silently get a new one: its
	// secrets could no longer be read.
	seal, err := loadOrCreateKey(opts.KeyFile, keyCheck == nil && !opts.MustExist)
	if err != nil {
		if keyCheck != nil && errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("journal %s holds secrets encrypted with a key that is missing (%s): %w", dir, opts.KeyFile, err)
		}
		if opts.MustExist && errors.Is(err, os.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	if keyCheck != nil {
		if string(keyCheck) != string(seal.check) {
			return nil, fmt.Errorf("%s: %w", opts.KeyFile, ErrWrongKey)
		}
		return seal, nil
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(metaKey, seal.check) }); err != nil {
		return nil, err
	}
	return seal, nil
}
