package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// records is the journal's records: it turns Prepare, Commit, Abort, Retry
// and Drop into mutations for the writer and reads records (Get, List, the
// secrets a delivery needs) from Badger. It holds no lock and no state of
// its own: its changes are checked and made on the writer goroutine, in
// order with every other change, and its reads are Badger read
// transactions. The secrets' key (sealer) is fixed once the journal is open.
type records struct {
	db   *badger.DB
	w    *writer
	seal *sealer // nil without a key
	log  *slog.Logger
	// local is why the journal takes no change of its own (nil: it does):
	// ErrReplicated for a cluster's (changes come only through Apply).
	local error
	// names is Options.DeliveryNames.
	names func(*Record) []string
}

func (rs *records) prepare(ctx context.Context, r *Record) (uint64, error) {
	if rs.local != nil {
		return 0, rs.local
	}
	// Work done here, by the caller, is work the journal's one writer and
	// the batch's settling need not do.
	rec, err := rs.preparedCopy(r)
	if err != nil {
		return 0, err
	}
	tokens := orderTokens(rec, rs.names)
	var seq uint64
	err = rs.w.submit(ctx, func(b *batch) error {
		b.seq++
		rec.Seq = b.seq
		if rec.Time.IsZero() {
			rec.Time = b.now
		}
		var sealed []byte
		if rec.SecretState == SecretEncrypted {
			var err error
			if sealed, err = rs.seal.seal(rec.Seq, r.Secret); err != nil {
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

// preparedCopy checks a record handed to Prepare (or to a Prepare
// command) and returns the copy to journal: state prepared, no delivery
// fields, the secret's state encrypted when it carries one (sealing it
// needs the sequence number: the caller's). Its texts are made valid
// UTF-8.
func (rs *records) preparedCopy(r *Record) (*Record, error) {
	if err := r.validate(); err != nil {
		return nil, fmt.Errorf("prepare: %w", err)
	}
	rec := r.clone()
	rec.State = StatePrepared
	rec.Attempts, rec.NextAttempt, rec.LastError, rec.DeliveredAt = 0, time.Time{}, "", time.Time{}
	rec.SecretState = SecretNone
	if len(r.Secret) > 0 {
		if rs.seal == nil {
			return nil, fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, ErrNoKey)
		}
		rec.SecretState = SecretEncrypted
	}
	if n := rec.approxSize(); n > maxRecordBytes {
		return nil, fmt.Errorf("prepare %s of %s: about %d bytes: %w", r.Op, r.DN, n, ErrTooLarge)
	}
	rec.makeValidText()
	return rec, nil
}

func (rs *records) commit(ctx context.Context, seq uint64, entryKey, name string) error {
	return rs.change(ctx, "commit", true, seq, func(b *batch, old *Record) error {
		return b.commitRecord(old, entryKey, name, b.now)
	})
}

func (rs *records) abort(ctx context.Context, seq uint64) error {
	return rs.change(ctx, "abort", true, seq, func(b *batch, old *Record) error {
		return b.abortRecord(old)
	})
}

// retry: inFlight says whether a record is being delivered (the
// scheduler knows); it is asked on the writer goroutine.
func (rs *records) retry(ctx context.Context, seq uint64, inFlight func(seq uint64) bool) error {
	return rs.change(ctx, "retry", false, seq, func(b *batch, old *Record) error {
		if old.State == StateCommitted && inFlight(seq) {
			return fmt.Errorf("record %d: %w", seq, ErrInFlight)
		}
		return b.retryRecord(old, b.now)
	})
}

func (rs *records) drop(ctx context.Context, seq uint64) error {
	return rs.change(ctx, "drop", false, seq, func(b *batch, old *Record) error {
		if err := b.dropRecord(old); err != nil {
			return err
		}
		rs.log.Info("record dropped", "seq", seq, "state", old.State, "op", old.Op, "dn", old.DN)
		return nil
	})
}

// change runs fn on record seq as one journal mutation, lazy or durable
// (see mutation.lazy), and names the operation in its error.
func (rs *records) change(ctx context.Context, op string, lazy bool, seq uint64, fn func(b *batch, old *Record) error) error {
	if rs.local != nil {
		return rs.local
	}
	run := func(b *batch) error {
		old, err := b.get(seq)
		if err != nil {
			return err
		}
		return fn(b, old)
	}
	submit := rs.w.submit
	if lazy {
		submit = rs.w.submitLazy
	}
	if err := submit(ctx, run); err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// get returns one record (without its secret).
func (rs *records) get(seq uint64) (*Record, error) {
	var r *Record
	err := rs.db.View(func(txn *badger.Txn) error {
		var err error
		r, err = getRecord(txn, seq)
		return err
	})
	return r, err
}

// getWithSecret returns a record with its secret decrypted, for delivery.
func (rs *records) getWithSecret(seq uint64) (*Record, error) {
	var r *Record
	var sealed []byte
	err := rs.db.View(func(txn *badger.Txn) error {
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
		if rs.seal == nil {
			return nil, fmt.Errorf("secret of record %d: %w", seq, ErrNoKey)
		}
		if sealed == nil {
			return nil, fmt.Errorf("secret of record %d is missing", seq)
		}
		if r.Secret, err = rs.seal.open(seq, sealed); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// withSecrets returns records seqs, in the order given, with their secrets;
// a record gone meanwhile is left out.
func (rs *records) withSecrets(seqs []uint64) ([]*Record, error) {
	out := make([]*Record, 0, len(seqs))
	for _, seq := range seqs {
		r, err := rs.getWithSecret(seq)
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

func (rs *records) list(f Filter) ([]*Record, error) {
	want := map[State]bool{}
	activeOnly := len(f.States) > 0
	for _, s := range f.States {
		want[s] = true
		if s == StateDelivered {
			activeOnly = false
		}
	}
	var out []*Record
	err := rs.db.View(func(txn *badger.Txn) error {
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
				r, err = storedRecord(txn, it.Item(), prefix)
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

func (rs *records) rangeFrom(from uint64, limit, maxBytes int) ([]*Record, error) {
	var out []*Record
	size := 0
	err := rs.db.View(func(txn *badger.Txn) error {
		// Values are read one at a time: a prefetch would hold many large
		// records at once.
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord})
		defer it.Close()
		for it.Seek(numKey(prefixRecord, from)); it.ValidForPrefix(prefixRecord); it.Next() {
			r, err := storedRecord(txn, it.Item(), prefixRecord)
			if err != nil {
				return err
			}
			out = append(out, r)
			size += r.approxSize()
			if (limit > 0 && len(out) >= limit) || (maxBytes > 0 && size >= maxBytes) {
				break
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read journal from %d: %w", from, err)
	}
	return out, nil
}

func (rs *records) bounds() (first, last uint64, err error) {
	err = rs.db.View(func(txn *badger.Txn) error {
		for _, reverse := range []bool{false, true} {
			it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, Reverse: reverse})
			if reverse {
				it.Seek(append(append([]byte(nil), prefixRecord...), 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff))
			} else {
				it.Rewind()
			}
			if it.ValidForPrefix(prefixRecord) {
				n := keyNum(prefixRecord, it.Item().Key())
				if reverse {
					last = n
				} else {
					first = n
				}
			}
			it.Close()
		}
		return nil
	})
	if err != nil {
		return 0, 0, fmt.Errorf("journal bounds: %w", err)
	}
	return first, last, nil
}

func getRecord(txn *badger.Txn, seq uint64) (*Record, error) {
	item, err := txn.Get(numKey(prefixRecord, seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, fmt.Errorf("record %d: %w", seq, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	r, err := itemRecord(item)
	if err == nil {
		err = mergeCommit(txn, seq, r)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	return r, nil
}

// mergeCommit makes record seq, r as stored, what its Commit made it, if
// r is stored prepared and was committed since (see encodeCommit).
func mergeCommit(txn *badger.Txn, seq uint64, r *Record) error {
	if r.State != StatePrepared {
		return nil
	}
	item, err := txn.Get(numKey(prefixActive, seq))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	return item.Value(func(v []byte) error {
		if len(v) == 0 {
			return nil // not committed
		}
		return mergeCommitValue(r, v)
	})
}

// storedRecord is the record whose "r/" item an iterator of txn is at,
// its commit merged (see mergeCommit).
func storedRecord(txn *badger.Txn, item *badger.Item, prefix []byte) (*Record, error) {
	seq := keyNum(prefix, item.Key())
	r, err := itemRecord(item)
	if err == nil {
		err = mergeCommit(txn, seq, r)
	}
	if err != nil {
		return nil, fmt.Errorf("record %d: %w", seq, err)
	}
	return r, nil
}

// itemRecord decodes the record a Badger item holds.
func itemRecord(item *badger.Item) (*Record, error) {
	var r *Record
	err := item.Value(func(v []byte) error {
		var err error
		r, err = decodeRecord(v)
		return err
	})
	return r, err
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
