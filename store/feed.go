package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// EventType says what an Event does to a follower's copy.
type EventType string

// Event types. Put and Delete are the journal's own changes, numbered by
// position. Reset, Load and Ready make up a snapshot, sent to a follower
// that starts from nothing or has fallen behind the change log's horizon.
const (
	EventPut    EventType = "put"    // Record is the record's new version
	EventDelete EventType = "delete" // record Seq is gone (aborted, dropped, purged)
	EventReset  EventType = "reset"  // snapshot begins: forget everything
	EventLoad   EventType = "load"   // snapshot: Record as it was at position Pos
	EventReady  EventType = "ready"  // snapshot done: the copy is at position Pos
)

// Event is one change of the journal, as the replication feed carries it.
// It marshals to JSON as is (for the LDAP changelog the failover follows).
type Event struct {
	Pos    uint64    `json:"pos"`
	Time   time.Time `json:"time"`
	Type   EventType `json:"type"`
	Seq    uint64    `json:"seq"`
	Record *Record   `json:"record,omitempty"`
	// Secret is the record's sealed secret (nonce and AES-256-GCM
	// ciphertext), attached by Feed when the record holds one; a follower
	// needs the same key file to read it. The change log on disk never
	// holds it.
	Secret []byte `json:"sealedSecret,omitempty"`
}

// Feed is the journal's replication feed: a primary streams its changes
// (Stream) and a standby replays them on its own copy (Apply, ApplyAll),
// which then holds an exact copy.
//
// It owns the change log ("e/" keys: the writer appends an entry for each
// change, see logEvent, and housekeeping trims it, see trim), snapshots and
// a follower's reset. It holds no lock and no state of its own: it reads
// the settled position and waits for changes through the writer, reads
// Badger, and replays changes as writer mutations. All of the journal's
// replication is here and in logEvent's two calls, so that it can be
// replaced in one piece.
type Feed struct {
	db    *badger.DB
	w     *writer
	sched *scheduler
	opts  Options
	log   *slog.Logger
}

// feedChunk bounds the changes read in one read transaction.
const feedChunk = 256

// Stream calls fn with every change after position after, in order, then
// waits for more until ctx is done (it then returns nil), fn fails (it
// returns fn's error) or the journal is closed (ErrClosed). A follower
// passes its own Position. From position 0, or from one older than the
// change log keeps (see Retention), the feed starts with a snapshot: Reset,
// a Load per record, Ready. Only changes on disk are sent.
func (fd *Feed) Stream(ctx context.Context, after uint64, fn func(Event) error) error {
	snapshot := true // only the first read may need one
	for {
		changed := fd.w.changes()
		n, next, err := fd.once(after, snapshot, fn)
		if err != nil {
			return err
		}
		snapshot = false
		after = next
		if ctx.Err() != nil {
			return nil
		}
		if n > 0 {
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case <-fd.w.quit:
			return ErrClosed
		case <-changed:
		}
	}
}

// once sends the changes after position after that one read transaction
// holds (or a snapshot, if the follower needs one) and says how many it
// sent and the position of the last.
func (fd *Feed) once(after uint64, mayReset bool, fn func(Event) error) (int, uint64, error) {
	// Badger shows a batch's changes as soon as it has written them, before
	// the batch is synced and settled. Only settled changes are sent, so a
	// follower never holds a durable change (a Prepare) that its primary
	// could still lose; lazy ones are settled once Badger has them.
	settled := fd.w.current().pos
	n := 0
	wantSnapshot := false
	err := fd.db.View(func(txn *badger.Txn) error {
		if _, err := txn.Get(metaLoading); err == nil {
			return nil // a follower mid-snapshot has nothing to pass on yet
		}
		horizon, ok, err := getNum(txn, metaHorizon)
		if err != nil {
			return err
		}
		if !ok {
			horizon = 1
		}
		// A follower behind the change log's horizon (even one that fell
		// behind while following) catches up with a snapshot.
		if (mayReset && after == 0) || after+1 < horizon {
			wantSnapshot = true
			return nil
		}
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixEvent, PrefetchValues: true, PrefetchSize: 64})
		defer it.Close()
		for it.Seek(numKey(prefixEvent, after+1)); it.ValidForPrefix(prefixEvent) && n < feedChunk && keyNum(prefixEvent, it.Item().Key()) <= settled; it.Next() {
			var ev Event
			err := it.Item().Value(func(v []byte) error {
				var err error
				ev, err = decodeEvent(v)
				return err
			})
			if err != nil {
				return fmt.Errorf("feed: change %d: %w", keyNum(prefixEvent, it.Item().Key()), err)
			}
			if ev.Pos != after+1 {
				// A hole is left only by a failed write; a snapshot gets
				// the follower past it.
				fd.log.Warn("change log has a hole: sending a snapshot", "after", after, "next", ev.Pos)
				wantSnapshot = true
				return nil
			}
			if err := attachSecret(txn, &ev); err != nil {
				return err
			}
			if err := fn(ev); err != nil {
				return err
			}
			after = ev.Pos
			n++
		}
		return nil
	})
	if err != nil || !wantSnapshot {
		return n, after, err
	}
	// The snapshot's transaction sees no batch that is written but not yet
	// synced: it is opened on the writer, between batches.
	txn, err := fd.settledView()
	if err != nil {
		return n, after, err
	}
	defer txn.Discard()
	return fd.snapshot(txn, fn)
}

// settledView opens a read transaction that holds only settled changes:
// the writer opens it once every batch handed to Badger is settled.
func (fd *Feed) settledView() (*badger.Txn, error) {
	var txn *badger.Txn
	err := fd.w.enqueue(context.Background(), &mutation{
		exclusive: func() error { txn = fd.db.NewTransaction(false); return nil },
		done:      make(chan error, 1),
	})
	return txn, err
}

func attachSecret(txn *badger.Txn, ev *Event) error {
	if ev.Record == nil || ev.Record.SecretState != SecretEncrypted {
		return nil
	}
	sealed, err := getSealed(txn, ev.Seq)
	ev.Secret = sealed
	return err
}

// snapshot sends the journal as it is in txn: Reset, Load for each record,
// Ready, all at the snapshot's position.
func (fd *Feed) snapshot(txn *badger.Txn, fn func(Event) error) (int, uint64, error) {
	pos, _, err := getNum(txn, metaPos)
	if err != nil {
		return 0, 0, err
	}
	seq, _, err := getNum(txn, metaSeq)
	if err != nil {
		return 0, 0, err
	}
	now := fd.opts.Now()
	if err := fn(Event{Pos: pos, Time: now, Type: EventReset, Seq: seq}); err != nil {
		return 0, 0, err
	}
	n := 1
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		var r *Record
		err := it.Item().Value(func(v []byte) error {
			var err error
			r, err = decodeRecord(v)
			return err
		})
		if err != nil {
			return 0, 0, fmt.Errorf("feed snapshot: %w", err)
		}
		ev := Event{Pos: pos, Time: now, Type: EventLoad, Seq: r.Seq, Record: r}
		if err := attachSecret(txn, &ev); err != nil {
			return 0, 0, err
		}
		if err := fn(ev); err != nil {
			return 0, 0, err
		}
		n++
	}
	if err := fn(Event{Pos: pos, Time: now, Type: EventReady, Seq: seq}); err != nil {
		return 0, 0, err
	}
	return n + 1, pos, nil
}

// ErrGap says a follower was handed a change that does not follow the last
// one it has: it must follow again from its Position.
var ErrGap = errors.New("change does not follow the last one applied")

// Apply replays one change from a primary's Feed on a follower's journal
// (opened with Options.Follower). Changes at or before the follower's
// position are ignored, so a feed can be resumed with overlap.
func (fd *Feed) Apply(ctx context.Context, ev Event) error {
	return fd.ApplyAll(ctx, []Event{ev})
}

// ApplyAll replays consecutive changes in order, as Apply does one by one,
// but queues them all before waiting, so that the journal writes them in
// as few group commits (fsyncs) as it can: a follower keeps up with a
// primary whose many writers share each fsync. It returns the first error;
// changes after a failed one fail too (they no longer follow the last
// applied), and the follower follows again from its Position.
func (fd *Feed) ApplyAll(ctx context.Context, evs []Event) error {
	if !fd.opts.Follower {
		if len(evs) == 0 {
			return errors.New("apply changes: journal is not a follower")
		}
		return fmt.Errorf("apply change %d: journal is not a follower", evs[0].Pos)
	}
	queued := make([]*mutation, 0, len(evs))
	var first error
	for _, ev := range evs {
		m := fd.applyMutation(ev)
		if err := fd.w.queue(ctx, m); err != nil {
			first = fmt.Errorf("apply change %d: %w", ev.Pos, err)
			break
		}
		queued = append(queued, m)
	}
	for i, m := range queued {
		if err := <-m.done; err != nil && first == nil {
			first = fmt.Errorf("apply change %d: %w", evs[i].Pos, err)
		}
	}
	return first
}

// applyMutation is the journal mutation that replays ev.
func (fd *Feed) applyMutation(ev Event) *mutation {
	if ev.Type == EventReset {
		return &mutation{exclusive: func() error { return fd.reset(ev) }, done: make(chan error, 1)}
	}
	return &mutation{done: make(chan error, 1), run: func(b *batch) error {
		switch ev.Type {
		case EventLoad, EventReady:
			if !b.loading || ev.Pos != b.pos {
				return fmt.Errorf("%s at %d outside a snapshot: %w", ev.Type, ev.Pos, ErrGap)
			}
			if ev.Type == EventReady {
				b.loading = false
				b.horizon = ev.Pos + 1
				b.seq = max(b.seq, ev.Seq)
				b.metaSet = true
				b.changed = true
				return nil
			}
			if ev.Record == nil {
				return fmt.Errorf("load of %d has no record", ev.Seq)
			}
			_, err := b.storeRecord(nil, applied(ev), ev.Secret, nil)
			return err
		case EventPut, EventDelete:
			if b.loading {
				return fmt.Errorf("%s at %d during a snapshot: %w", ev.Type, ev.Pos, ErrGap)
			}
			if ev.Pos <= b.pos {
				return nil
			}
			if ev.Pos != b.pos+1 {
				return fmt.Errorf("change %d after %d: %w", ev.Pos, b.pos, ErrGap)
			}
			if ev.Type == EventPut && ev.Record == nil {
				return fmt.Errorf("put of %d has no record", ev.Seq)
			}
			old, err := b.get(ev.Seq)
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			var enc []byte
			if ev.Type == EventPut {
				rec := applied(ev)
				var sealed []byte
				if rec.SecretState == SecretEncrypted {
					sealed = ev.Secret
				}
				if enc, err = b.storeRecord(old, rec, sealed, nil); err != nil {
					return err
				}
			} else if old != nil {
				if err := b.removeRecord(old); err != nil {
					return err
				}
			}
			return b.logEvent(ev.Time, ev.Type, ev.Seq, enc)
		default:
			return fmt.Errorf("change %d: unknown type %q", ev.Pos, ev.Type)
		}
	}}
}

func applied(ev Event) *Record {
	if ev.Record == nil {
		return nil
	}
	r := ev.Record.clone()
	r.Seq = ev.Seq
	return r
}

// reset empties a follower's copy before a snapshot. It runs on the writer
// goroutine with no batch open.
func (fd *Feed) reset(ev Event) error {
	// The table of disabled accounts goes too: it is not in the feed, and
	// rows left from a time as primary would be acted on after a takeover.
	for _, p := range [][]byte{prefixRecord, prefixSecret, prefixActive, prefixDelivered, prefixEvent, prefixDisabled} {
		if err := fd.db.DropPrefix(p); err != nil {
			return fmt.Errorf("reset follower: %w", err)
		}
	}
	err := fd.db.Update(func(txn *badger.Txn) error {
		return errors.Join(
			txn.Set(metaLoading, []byte{1}),
			txn.Set(metaPos, encodeNum(ev.Pos)),
			txn.Set(metaSeq, encodeNum(ev.Seq)),
			txn.Set(metaHorizon, encodeNum(ev.Pos+1)),
		)
	})
	if err != nil {
		return fmt.Errorf("reset follower: %w", err)
	}
	fd.sched.reset()
	fd.w.setState(writerState{seq: ev.Seq, pos: ev.Pos, horizon: ev.Pos + 1, loading: true})
	return nil
}

// logEvent appends a change to the change log at the next position. rec is
// the record's encoding (nil for a delete). Secrets never go into the log:
// Feed attaches a record's sealed secret when it sends the change.
func (b *batch) logEvent(at time.Time, typ EventType, seq uint64, rec []byte) error {
	if b.unlogged {
		return nil
	}
	pos := b.pos + 1
	if err := b.set(numKey(prefixEvent, pos), appendEvent(make([]byte, 0, eventSize(rec)), pos, at, typ, seq, rec)); err != nil {
		return err
	}
	b.pos = pos
	b.changed = true
	return nil
}

// trim removes the oldest change-log entries written before cutoff. The
// horizon moves past them: a follower further behind needs a snapshot.
func (fd *Feed) trim(ctx context.Context, cutoff time.Time) (int, error) {
	var last uint64
	n := 0
	err := fd.db.View(func(txn *badger.Txn) error {
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
	err = fd.w.submitLazy(ctx, func(b *batch) error {
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
