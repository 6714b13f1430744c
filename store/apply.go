package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Stamp gives a command what only its proposer chooses, just before the
// proposer puts it in the Raft log: Time (now, unless set), and for a
// Prepare the record's sequence number seq, its time and its sealed
// secret (Record.Secret, sealed with the journal's key and seq, then
// dropped from the command). The record is copied: the caller's is left
// as it was. Commands must reach the log in the order of their sequence
// numbers: Apply refuses a Prepare whose number is not above every number
// applied before it (ErrSeq). A record Prepare would refuse is refused
// here, with the same error.
func (j *Journal) Stamp(c *Command, seq uint64, now time.Time) error {
	if c.Time.IsZero() {
		c.Time = now
	}
	if c.Op != CmdPrepare {
		return nil
	}
	r := c.Record
	if r == nil {
		return errors.New("prepare without a record")
	}
	rec, err := j.recs.preparedCopy(r)
	if err != nil {
		return err
	}
	rec.Seq = seq
	if rec.Time.IsZero() {
		rec.Time = c.Time
	}
	c.Sealed = nil
	if rec.SecretState == SecretEncrypted {
		if c.Sealed, err = j.recs.seal.seal(seq, r.Secret); err != nil {
			return fmt.Errorf("prepare %s of %s: %w", r.Op, r.DN, err)
		}
	}
	c.Seq, c.Record = seq, rec
	return nil
}

// Entry is one Raft log entry's batch of commands, at its index in the log.
type Entry struct {
	Index    uint64
	Commands []Command
}

// Apply applies the commands of the Raft log entry at index (see
// ApplyEntries).
func (j *Journal) Apply(ctx context.Context, index uint64, cmds []Command) ([]error, error) {
	res, err := j.ApplyEntries(ctx, []Entry{{Index: index, Commands: cmds}})
	if len(res) == 0 {
		return nil, err
	}
	return res[0], err
}

// ApplyEntries applies consecutive Raft log entries to a replicated
// journal, in order. Each entry's commands and its index, as the journal's
// applied index, are written in the same Badger transaction; an entry at
// or below the applied index is skipped (its results are nil), so that a
// log replayed after a restart changes nothing twice. It returns, per
// entry, each command's refusal (nil: applied) — a refusal is part of the
// log's outcome, the same on every node — and a non-nil error only when
// the journal could not write (it then takes no more changes, see
// writer.fail) or ctx ended before the entries were queued.
//
// Entries are written without an fsync of their own: the Raft log holds
// them durably, and a journal that loses its last entries to a power cut
// has them applied again from the log. Apply takes ownership of the
// commands' records.
func (j *Journal) ApplyEntries(ctx context.Context, entries []Entry) ([][]error, error) {
	if !j.opts.Replicated {
		return nil, errors.New("apply commands: journal is not replicated")
	}
	results := make([][]error, len(entries))
	sizes := make([]int, len(entries))
	for i := range entries {
		sizes[i] = entrySize(entries[i])
	}
	// Consecutive entries go to the writer together, as one mutation of at
	// most maxGroupCommands commands and MaxEntryBytes (or one entry): a
	// mutation costs a channel round trip and a closure, and Raft hands
	// over many small entries at once (one per round of proposals the
	// leader gathered). Each entry is still applied whole or refused
	// whole, with its own applied index.
	type group struct {
		from, to int    // entries[from:to]
		failed   uint64 // the index of the entry that failed to apply, if any
		m        *mutation
	}
	var groups []*group
	var first error
	for from := 0; from < len(entries); {
		to, size, count := from+1, sizes[from], len(entries[from].Commands)
		for to < len(entries) && size+sizes[to] <= MaxEntryBytes && count+len(entries[to].Commands) <= maxGroupCommands {
			size += sizes[to]
			count += len(entries[to].Commands)
			to++
		}
		g := &group{from: from, to: to, failed: entries[from].Index}
		g.m = &mutation{lazy: true, done: make(chan error, 1), run: func(b *batch) error {
			b.preparedSeqs = j.sched.prepared
			for i := g.from; i < g.to; i++ {
				res, err := b.applyEntry(entries[i], sizes[i])
				if err != nil {
					g.failed = entries[i].Index
					return err
				}
				results[i] = res
			}
			return nil
		}}
		if err := j.w.queue(ctx, g.m); err != nil {
			first = fmt.Errorf("apply entry %d: %w", entries[from].Index, err)
			break
		}
		groups = append(groups, g)
		from = to
	}
	for _, g := range groups {
		if err := <-g.m.done; err != nil && first == nil {
			first = fmt.Errorf("apply entry %d: %w", g.failed, err)
		}
	}
	return results, first
}

// maxGroupCommands bounds the commands of the entries ApplyEntries hands
// the writer as one mutation: as many as the leader puts in one entry by
// default (cluster.Config.MaxBatch), so that a group writes no more in one
// Badger transaction than such an entry (a Commit's SizeHint is far below
// what it writes: the whole record again).
const maxGroupCommands = 256

// entrySize is about the size of an entry's commands (see MaxEntryBytes).
func entrySize(e Entry) int {
	size := 0
	for i := range e.Commands {
		size += e.Commands[i].SizeHint()
	}
	return size
}

// Replicated reports whether the journal was opened as a cluster's copy
// (Options.Replicated).
func (j *Journal) Replicated() bool { return j.opts.Replicated }

// AppliedIndex is the index of the last Raft log entry a replicated
// journal applied (0: none).
func (j *Journal) AppliedIndex() uint64 { return j.w.current().applied }

// DeliveryTerm is the highest term a replicated journal was fenced to
// (CmdFence): outcomes of older terms are refused.
func (j *Journal) DeliveryTerm() uint64 { return j.w.current().term }

// applyEntry applies one entry's commands, of size entrySize, in batch b.
func (b *batch) applyEntry(e Entry, size int) ([]error, error) {
	if b.loading {
		return nil, fmt.Errorf("entry %d: the journal is half restored from a snapshot", e.Index)
	}
	if e.Index <= b.applied {
		return nil, nil
	}
	res := make([]error, len(e.Commands))
	if size > MaxEntryBytes {
		// Refused whole, alike everywhere: it could not be written in one
		// transaction.
		for i := range res {
			res[i] = fmt.Errorf("entry %d of about %d bytes: %w", e.Index, size, ErrTooLarge)
		}
		b.applied = e.Index
		b.metaSet = true
		return res, nil
	}
	for i := range e.Commands {
		c := &e.Commands[i]
		before := b.writes
		if err := b.applyCommand(c); err != nil {
			if b.writes != before {
				// Commands check before they write; a failure after a
				// write is the journal's, not the command's.
				return nil, err
			}
			res[i] = fmt.Errorf("%s of %d: %w", c.Op, c.Seq, err)
		}
	}
	b.applied = e.Index
	b.metaSet = true
	return res, nil
}

// applyCommand makes one command's change, or refuses it before writing
// anything.
func (b *batch) applyCommand(c *Command) error {
	switch c.Op {
	case CmdPrepare:
		return b.applyPrepare(c)
	case CmdCommit:
		return b.applyTo(c.Seq, func(old *Record) error { return b.commitRecord(old, c.EntryKey, c.Name, c.Time) })
	case CmdAbort:
		return b.applyTo(c.Seq, b.abortRecord)
	case CmdOutcome:
		if c.Term < b.term {
			return fmt.Errorf("record %d delivered in term %d, the journal is at term %d: %w", c.Seq, c.Term, b.term, ErrStaleTerm)
		}
		return b.applyTo(c.Seq, func(old *Record) error { return b.recordOutcome(old, c.Outcome, c.Time) })
	case CmdRetry:
		return b.applyTo(c.Seq, func(old *Record) error { return b.retryRecord(old, c.Time) })
	case CmdDrop:
		return b.applyTo(c.Seq, b.dropRecord)
	case CmdPurge:
		_, err := b.purge(c.Seqs, c.Time)
		return err
	case CmdPutDisabled:
		d := c.Disabled
		if d.Name == "" {
			return errors.New("disabled account without a name")
		}
		value, err := json.Marshal(d)
		if err != nil {
			return fmt.Errorf("encode disabled account: %w", err)
		}
		return b.putDisabled(d, value)
	case CmdRemoveDisabled:
		return b.dropDisabled(c.Name)
	case CmdAbortToken:
		return b.applyAbortToken(c)
	case CmdFence:
		if c.Term > b.term {
			b.term = c.Term
			b.metaSet = true
		}
		return nil
	default:
		return fmt.Errorf("unknown command %d", uint8(c.Op))
	}
}

// applyTo runs fn on record seq as this batch sees it.
func (b *batch) applyTo(seq uint64, fn func(old *Record) error) error {
	old, err := b.get(seq)
	if err != nil {
		return err
	}
	return fn(old)
}

func (b *batch) applyPrepare(c *Command) error {
	if c.Record == nil {
		return errors.New("prepare without a record")
	}
	if c.Seq <= b.seq {
		return fmt.Errorf("prepare %d after %d: %w", c.Seq, b.seq, ErrSeq)
	}
	if t := c.Record.Token; !t.IsZero() && tombstoned(b.aborted, t) {
		return fmt.Errorf("prepare with token %s: %w", t, ErrAborted)
	}
	// Apply owns the record (decoded from the log): it is journaled as it
	// is, not copied.
	rec := c.Record
	rec.Secret = nil
	rec.Seq = c.Seq
	rec.State = StatePrepared
	rec.Attempts, rec.NextAttempt, rec.LastError, rec.DeliveredAt = 0, time.Time{}, "", time.Time{}
	if rec.Time.IsZero() {
		rec.Time = c.Time
	}
	var sealed []byte
	rec.SecretState = SecretNone
	if len(c.Sealed) > 0 {
		rec.SecretState, sealed = SecretEncrypted, c.Sealed
	}
	if err := rec.validate(); err != nil {
		return err
	}
	// putRecord makes its texts valid UTF-8 (see makeValidText).
	return b.putRecord(nil, rec, sealed, nil)
}

// The changes of a record's life, shared by a journal of its own (records,
// scheduler, housekeeper) and a replicated one (applyCommand): each takes
// the record as the batch sees it, checks, then writes.

// commitRecord commits a prepared record, due at.
func (b *batch) commitRecord(old *Record, entryKey, name string, at time.Time) error {
	if old.State != StatePrepared {
		return fmt.Errorf("record %d is %s: %w", old.Seq, old.State, ErrState)
	}
	rec := old.next()
	rec.State = StateCommitted
	rec.NextAttempt = at
	if entryKey != "" {
		rec.EntryKey = entryKey
	}
	if name != "" && rec.Name == "" {
		rec.Name = name
	}
	return b.storeCommit(old, rec)
}

// abortRecord removes a prepared record.
func (b *batch) abortRecord(old *Record) error {
	if old.State != StatePrepared {
		return fmt.Errorf("record %d is %s: %w", old.Seq, old.State, ErrState)
	}
	return b.deleteRecord(old)
}

// retryRecord makes a dead or committed record due at, a dead one with a
// fresh count of attempts.
func (b *batch) retryRecord(old *Record, at time.Time) error {
	rec := old.next()
	switch old.State {
	case StateDead:
		rec.State = StateCommitted
		rec.Attempts = 0
	case StateCommitted:
	default:
		return fmt.Errorf("record %d is %s, only dead or committed records can be retried: %w", old.Seq, old.State, ErrState)
	}
	rec.NextAttempt = at
	return b.putRecord(old, rec, nil, nil)
}

// dropRecord removes a record that is not delivered.
func (b *batch) dropRecord(old *Record) error {
	switch old.State {
	case StateDelivered:
		return fmt.Errorf("record %d is delivered: %w", old.Seq, ErrState)
	case StatePrepared:
		// Its write is on its way to the directory, or its outcome is not
		// known yet: the directory may have made it, and the client may
		// have been told so. Dropped, an acknowledged write would never
		// reach Axigen. The gateway settles it (on the directory's answer,
		// at its next start, or in a cluster as an orphan); drop it once
		// committed or dead, if need be.
		return fmt.Errorf("record %d is prepared: its write's outcome is not settled yet (the gateway settles it: on the directory's answer, at its next start, or as an orphan in a cluster); drop it once it is committed or dead: %w", old.Seq, ErrState)
	}
	return b.deleteRecord(old)
}

// purge removes those of records seqs that were delivered before cutoff
// and says how many.
func (b *batch) purge(seqs []uint64, cutoff time.Time) (int, error) {
	var purge []*Record
	for _, seq := range seqs {
		old, err := b.get(seq)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return 0, err
		}
		if old.State == StateDelivered && old.DeliveredAt.Before(cutoff) {
			purge = append(purge, old)
		}
	}
	for _, old := range purge {
		if err := b.deleteRecord(old); err != nil {
			return 0, err
		}
	}
	return len(purge), nil
}

// recordOutcome records a delivery of committed record old at time at:
// delivered (with the committed records it covered), or failed.
func (b *batch) recordOutcome(old *Record, o Outcome, at time.Time) error {
	if old.State != StateCommitted {
		return fmt.Errorf("record %d is %s: %w", old.Seq, old.State, ErrState)
	}
	// Read before anything is written: an error after a write would fail
	// the whole batch.
	var along []*Record
	if o.Delivered {
		for _, seq := range o.Covered {
			r, err := b.get(seq)
			switch {
			case errors.Is(err, ErrNotFound):
			case err != nil:
				return err
			case r.State == StateCommitted && seq != old.Seq:
				along = append(along, r)
			}
		}
	}
	r := old.next()
	if !o.Postponed {
		r.Attempts++
	}
	if o.Delivered {
		// LastError of a delivered record: what an incomplete delivery skipped.
		r.State, r.DeliveredAt, r.NextAttempt, r.LastError = StateDelivered, at, time.Time{}, o.LastError
		if r.SecretState == SecretEncrypted {
			r.SecretState = SecretErased
		}
	} else {
		r.LastError = o.LastError
		if o.Dead {
			r.State, r.NextAttempt = StateDead, time.Time{}
		} else {
			r.NextAttempt = o.NextAttempt
		}
	}
	if err := b.putRecord(old, r, nil, nil); err != nil {
		return err
	}
	for _, a := range along {
		n := a.next()
		n.Attempts++ // the one delivery it shared
		n.State, n.DeliveredAt, n.NextAttempt, n.LastError = StateDelivered, at, time.Time{}, ""
		if err := b.putRecord(a, n, nil, nil); err != nil {
			return err
		}
	}
	return nil
}
