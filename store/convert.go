package store

import (
	"errors"
	"fmt"
	"os"

	badger "github.com/dgraph-io/badger/v4"
)

// A journal is of one kind for life: a single gateway's or a cluster's
// (Options.Replicated, marked by metaReplicated). Opening one as the other
// is refused: a cluster's journal changed by a gateway started alone would
// fork from the cluster's, and a gateway's journal taken as a cluster's
// state would be applied to without the conversion.

// ErrNotReplicated: a single gateway's journal opened as a cluster's.
var ErrNotReplicated = errors.New("journal is a single gateway's, not a cluster's: convert it first (store.MakeReplicated, which a gateway's first start with --cluster-peer does)")

// checkKind refuses a journal of the other kind than opts says, and marks
// a new cluster's journal as one.
func checkKind(db *badger.DB, dir string, opts Options) error {
	var replicated, marked, blank bool
	err := db.View(func(txn *badger.Txn) error {
		var err error
		replicated, marked, err = kindOf(txn)
		if err != nil || replicated || !opts.Replicated {
			return err
		}
		blank, err = isBlank(txn)
		return err
	})
	if err != nil {
		return fmt.Errorf("read journal %s: %w", dir, err)
	}
	switch {
	case opts.Replicated && !replicated && !blank:
		return fmt.Errorf("open journal %s as a cluster's: %w", dir, ErrNotReplicated)
	case !opts.Replicated && replicated:
		return fmt.Errorf("open journal %s: it is a cluster's journal, to be opened as replicated (a gateway started with its --cluster-peer flags): %w", dir, ErrReplicated)
	case opts.Replicated && !marked:
		// A new journal (or one written before the mark existed).
		if err := db.Update(func(txn *badger.Txn) error { return txn.Set(metaReplicated, []byte{1}) }); err != nil {
			return fmt.Errorf("mark journal %s as a cluster's: %w", dir, err)
		}
	}
	return nil
}

// kindOf says whether the journal is a cluster's, and whether it carries
// the mark (a journal that has applied a Raft entry is a cluster's too).
func kindOf(txn *badger.Txn) (replicated, marked bool, err error) {
	if _, err := txn.Get(metaReplicated); err == nil {
		return true, true, nil
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return false, false, err
	}
	_, applied, err := getNum(txn, metaApplied)
	return applied, false, err
}

// isBlank reports whether the journal holds nothing but its key check.
func isBlank(txn *badger.Txn) (bool, error) {
	it := txn.NewIterator(badger.IteratorOptions{})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		if string(it.Item().Key()) != string(metaKey) {
			return false, nil
		}
	}
	return true, nil
}

// MakeReplicated converts the journal in dir, a single gateway's, into a
// cluster's in place, so that Open with Options.Replicated takes it: the
// first node's state when a gateway becomes a cluster. Its records (in
// whatever state: prepared ones are settled afterwards as after a crash),
// their secrets, the key check and the disabled-accounts table are kept;
// the former standby's change log, which a journal written before the
// cluster may still hold, goes with its counters (see dropChangeLog), and
// the applied Raft index and the delivery term start at 0. It runs with
// the journal closed (it takes the journal's lock) and is a single step as
// far as Open can tell: cut short, it leaves a journal of its own kind, to
// convert again. A journal already a cluster's, or a folder without one,
// is left as it is. opts gives the logger (the key is not needed).
func MakeReplicated(dir string, opts Options) (err error) {
	opts = opts.withDefaults()
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("convert journal %s: %w", dir, err)
	}
	lock, err := lockDir(dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	log := opts.Logger.With("component", "journal")
	db, err := badger.Open(badgerOptions(dir, opts, log))
	if err != nil {
		return fmt.Errorf("convert journal %s: %w", dir, err)
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("convert journal %s: %w", dir, cerr)
		}
	}()
	var (
		replicated, loading bool
		seq                 uint64
	)
	err = db.View(func(txn *badger.Txn) error {
		var err error
		if replicated, _, err = kindOf(txn); err != nil || replicated {
			return err
		}
		if _, err := txn.Get(metaLoading); err == nil {
			loading = true
		} else if !errors.Is(err, badger.ErrKeyNotFound) {
			return err
		}
		seq, _, err = getNum(txn, metaSeq)
		return err
	})
	switch {
	case err != nil:
		return fmt.Errorf("convert journal %s: %w", dir, err)
	case replicated:
		return nil
	case loading:
		// Left by the former standby feed (before the Raft cluster).
		return fmt.Errorf("convert journal %s: it is a standby's copy cut short in the middle of a snapshot, not a journal's state", dir)
	}
	// The change log first: the mark, written last with the counters,
	// makes the conversion count.
	if err := db.DropPrefix(prefixEvent); err != nil {
		return fmt.Errorf("convert journal %s: drop the change log: %w", dir, err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return errors.Join(
			txn.Delete(metaPos),
			txn.Delete(metaHorizon),
			txn.Delete(metaApplied),
			txn.Delete(metaTerm),
			txn.Set(metaReplicated, []byte{1}),
		)
	})
	if err == nil {
		err = db.Sync()
	}
	if err != nil {
		return fmt.Errorf("convert journal %s: %w", dir, err)
	}
	log.Info("journal converted into a cluster's", "dir", dir, "lastSeq", seq)
	return nil
}
