package store

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	badger "github.com/dgraph-io/badger/v4"
)

// A replicated journal's snapshot is its whole state as of one applied
// Raft index: the records with their sealed secrets, the disabled-accounts
// table and the counters. The indexes (active, delivered) are rebuilt from
// the records on restore.
//
// Format 1: the magic "LGJS" and the format byte, then frames, each a tag
// byte, the payload's length (uvarint) and the payload:
//
//	'h' header: applied index, last sequence number, delivery term
//	    (uvarints), the key check (a string: length and bytes)
//	'r' a record: its stored encoding and its sealed secret (two strings)
//	'x' a disabled account: its JSON
//	't' the tombstones of aborted Prepare tokens (encodeTombstones), only
//	    when there are some: a snapshot without them reads as before
//	'z' the end: the number of 'r', 'x' and 't' frames (uvarint)
//
// The end frame tells a complete snapshot from a truncated one.
var snapshotMagic = []byte("LGJS")

const (
	snapshotFormat1 byte = 1

	frameHeader   byte = 'h'
	frameRecord   byte = 'r'
	frameDisabled byte = 'x'
	frameAborted  byte = 't'
	frameEnd      byte = 'z'

	// maxFrameBytes bounds a frame: a record and its secret.
	maxFrameBytes = 2*maxRecordBytes + 4096
)

// Snapshot is a point-in-time view of a replicated journal, written out
// (WriteTo) while the journal goes on applying entries. Close releases it.
type Snapshot struct {
	txn     *badger.Txn
	applied uint64
}

// Snapshot opens a view of the journal as of its last applied entry. It
// holds no batch that is written but not settled.
func (j *Journal) Snapshot() (*Snapshot, error) {
	if !j.opts.Replicated {
		return nil, errors.New("snapshot: journal is not replicated")
	}
	txn, err := j.w.settledView()
	if err != nil {
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	applied, _, err := getNum(txn, metaApplied)
	if err != nil {
		txn.Discard()
		return nil, fmt.Errorf("snapshot: %w", err)
	}
	if _, err := txn.Get(metaLoading); err == nil {
		txn.Discard()
		return nil, errors.New("snapshot: the journal is half restored")
	}
	return &Snapshot{txn: txn, applied: applied}, nil
}

// settledView opens a read transaction that holds only settled changes.
// Badger shows a batch's changes as soon as it has written them, before the
// batch is synced and settled (and its callers answered): the writer opens
// this one between batches, once every batch handed to Badger is settled.
func (w *writer) settledView() (*badger.Txn, error) {
	var txn *badger.Txn
	err := w.enqueue(context.Background(), &mutation{
		exclusive: func() error { txn = w.db.NewTransaction(false); return nil },
		done:      make(chan error, 1),
	})
	return txn, err
}

// AppliedIndex is the Raft index the snapshot is at.
func (s *Snapshot) AppliedIndex() uint64 { return s.applied }

// Close releases the view.
func (s *Snapshot) Close() { s.txn.Discard() }

// WriteTo writes the snapshot to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	bw := bufio.NewWriterSize(cw, 64<<10)
	err := s.write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return cw.n, fmt.Errorf("write snapshot: %w", err)
	}
	return cw.n, nil
}

func (s *Snapshot) write(w *bufio.Writer) error {
	txn := s.txn
	seq, _, err := getNum(txn, metaSeq)
	if err != nil {
		return err
	}
	term, _, err := getNum(txn, metaTerm)
	if err != nil {
		return err
	}
	var check []byte
	if item, err := txn.Get(metaKey); err == nil {
		if check, err = item.ValueCopy(nil); err != nil {
			return err
		}
	} else if !errors.Is(err, badger.ErrKeyNotFound) {
		return err
	}
	w.Write(snapshotMagic)
	w.WriteByte(snapshotFormat1)
	hdr := binary.AppendUvarint(nil, s.applied)
	hdr = binary.AppendUvarint(hdr, seq)
	hdr = binary.AppendUvarint(hdr, term)
	hdr = appendString(hdr, string(check))
	writeFrame(w, frameHeader, hdr)
	// A record committed since its Prepare goes out whole, its commit
	// merged (see encodeCommit): a snapshot holds records as a node of
	// the previous version reads them.
	commits, err := readCommits(txn)
	if err != nil {
		return err
	}
	var frames uint64
	var frame []byte
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixRecord, PrefetchValues: true, PrefetchSize: 64})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		seq := keyNum(prefixRecord, it.Item().Key())
		sealed, err := getSealed(txn, seq)
		if err != nil {
			return err
		}
		err = it.Item().Value(func(enc []byte) error {
			if commit, ok := commits[seq]; ok {
				r, err := decodeRecord(enc)
				if err != nil {
					return err
				}
				if r.State == StatePrepared {
					if err := mergeCommitValue(r, commit); err != nil {
						return err
					}
					enc = encodeStoredRecord(r)
				}
			}
			frame = appendString(appendString(frame[:0], string(enc)), string(sealed))
			return nil
		})
		if err != nil {
			return fmt.Errorf("record %d: %w", seq, err)
		}
		writeFrame(w, frameRecord, frame)
		frames++
	}
	dit := txn.NewIterator(badger.IteratorOptions{Prefix: prefixDisabledName, PrefetchValues: true})
	defer dit.Close()
	for dit.Rewind(); dit.Valid(); dit.Next() {
		v, err := dit.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		writeFrame(w, frameDisabled, v)
		frames++
	}
	aborted, err := getTombstones(txn)
	if err != nil {
		return err
	}
	if len(aborted) > 0 {
		writeFrame(w, frameAborted, encodeTombstones(aborted))
		frames++
	}
	return writeFrame(w, frameEnd, binary.AppendUvarint(nil, frames))
}

// readCommits returns the commits stored beside the records (see
// encodeCommit), by sequence number.
func readCommits(txn *badger.Txn) (map[uint64][]byte, error) {
	commits := map[uint64][]byte{}
	it := txn.NewIterator(badger.IteratorOptions{Prefix: prefixActive, PrefetchValues: true})
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		item := it.Item()
		if item.ValueSize() == 0 {
			continue
		}
		v, err := item.ValueCopy(nil)
		if err != nil {
			return nil, err
		}
		commits[keyNum(prefixActive, item.Key())] = v
	}
	return commits, nil
}

// writeFrame writes one frame; bufio.Writer keeps the first error, which
// the last call returns.
func writeFrame(w *bufio.Writer, tag byte, payload []byte) error {
	w.WriteByte(tag)
	var n [binary.MaxVarintLen64]byte
	w.Write(n[:binary.PutUvarint(n[:], uint64(len(payload)))])
	_, err := w.Write(payload)
	return err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

type snapshotHeader struct {
	applied, seq, term uint64
	check              []byte
}

// Restore replaces a replicated journal's state with the snapshot read
// from r. A snapshot at or below the journal's applied index is read and
// ignored: the journal already holds that state and the entries after it
// (a node restarting restores its own last snapshot). Otherwise the
// journal is marked as being restored before anything is removed, and
// unmarked in the transaction that writes the snapshot's counters: a
// journal whose restore was cut short (a crash, a truncated snapshot)
// applies nothing until a restore completes, and is never taken for a
// state. A snapshot whose secrets were sealed with another key is refused
// (ErrWrongKey) before anything changes.
func (j *Journal) Restore(r io.Reader) error {
	if !j.opts.Replicated {
		return errors.New("restore: journal is not replicated")
	}
	br := bufio.NewReaderSize(r, 64<<10)
	hdr, err := readSnapshotHeader(br)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if cur := j.w.current(); !cur.loading && cur.applied > 0 && hdr.applied <= cur.applied {
		j.recs.log.Info("snapshot already applied", "snapshot", hdr.applied, "applied", cur.applied)
		if _, err := io.Copy(io.Discard, br); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
		return nil
	}
	var mine []byte
	err = j.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(metaKey)
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		mine, err = item.ValueCopy(nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	if len(mine) > 0 && len(hdr.check) > 0 && !bytes.Equal(mine, hdr.check) {
		return fmt.Errorf("restore: the snapshot's secrets are sealed with another key: %w", ErrWrongKey)
	}
	err = j.w.enqueue(context.Background(), &mutation{
		exclusive: func() error { return j.restore(hdr, br) },
		done:      make(chan error, 1),
	})
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	j.recs.log.Info("journal restored from a snapshot", "applied", hdr.applied, "seq", hdr.seq)
	return nil
}

// restore runs on the writer goroutine with no batch open.
func (j *Journal) restore(hdr snapshotHeader, r *bufio.Reader) error {
	db := j.db
	j.w.setState(writerState{loading: true})
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set(metaLoading, []byte{1}) }); err != nil {
		return err
	}
	j.sched.reset()
	if err := db.DropPrefix(prefixRecord, prefixSecret, prefixActive, prefixDelivered, prefixDisabledName, prefixDisabledKey); err != nil {
		return err
	}
	wb := db.NewWriteBatch()
	defer wb.Cancel()
	var frames uint64
	var aborted []tombstone
	for {
		tag, payload, err := readFrame(r)
		if err != nil {
			return err
		}
		switch tag {
		case frameRecord:
			if err := restoreRecord(wb, payload); err != nil {
				return err
			}
		case frameDisabled:
			var d DisabledAccount
			if err := json.Unmarshal(payload, &d); err != nil || d.Name == "" {
				return fmt.Errorf("disabled account frame: %w", errors.Join(err, errCorrupt))
			}
			if err := wb.Set(disabledNameKey(d.Name), payload); err != nil {
				return err
			}
			if d.EntryKey != "" {
				if err := wb.Set(disabledEntryKey(d.EntryKey), []byte(strings.ToLower(d.Name))); err != nil {
					return err
				}
			}
		case frameAborted:
			if aborted, err = decodeTombstones(payload); err != nil {
				return err
			}
		case frameEnd:
			d := decoder{s: string(payload)}
			if n := d.uvarint(); d.err != nil || n != frames {
				return fmt.Errorf("snapshot holds %d items, its end says %d: %w", frames, n, errCorrupt)
			}
			return j.finishRestore(hdr, aborted, wb)
		default:
			return fmt.Errorf("snapshot frame %q: %w", tag, errCorrupt)
		}
		frames++
	}
}

func restoreRecord(wb *badger.WriteBatch, payload []byte) error {
	d := decoder{s: string(payload)}
	enc, sealed := d.string(), d.string()
	if d.err != nil || d.off != len(d.s) {
		return fmt.Errorf("record frame: %w", errCorrupt)
	}
	rec, err := decodeRecord([]byte(enc))
	if err != nil {
		return err
	}
	seq := rec.Seq
	if err := wb.Set(numKey(prefixRecord, seq), []byte(enc)); err != nil {
		return err
	}
	if sealed != "" {
		if err := wb.Set(numKey(prefixSecret, seq), []byte(sealed)); err != nil {
			return err
		}
	}
	if rec.State == StateDelivered {
		return wb.Set(deliveredKey(rec.DeliveredAt, seq), nil)
	}
	return wb.Set(numKey(prefixActive, seq), nil)
}

// finishRestore writes the snapshot's counters, which ends the restore,
// and rebuilds the in-memory index.
func (j *Journal) finishRestore(hdr snapshotHeader, aborted []tombstone, wb *badger.WriteBatch) error {
	if err := wb.Flush(); err != nil {
		return err
	}
	db := j.db
	err := db.Update(func(txn *badger.Txn) error {
		err := errors.Join(
			txn.Set(metaSeq, encodeNum(hdr.seq)),
			txn.Set(metaApplied, encodeNum(hdr.applied)),
			txn.Set(metaTerm, encodeNum(hdr.term)),
			txn.Delete(metaLoading),
		)
		if err == nil && len(hdr.check) > 0 {
			err = txn.Set(metaKey, hdr.check)
		}
		if err == nil {
			if len(aborted) > 0 {
				err = txn.Set(metaAborted, encodeTombstones(aborted))
			} else {
				err = txn.Delete(metaAborted)
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	if err := db.Sync(); err != nil {
		return err
	}
	var (
		idx       *index
		delivered int
	)
	err = db.View(func(txn *badger.Txn) error {
		var err error
		idx, delivered, err = readIndex(txn, j.opts.DeliveryNames)
		return err
	})
	if err != nil {
		return err
	}
	j.sched.replace(idx, delivered)
	j.w.setState(writerState{seq: hdr.seq, applied: hdr.applied, term: hdr.term, aborted: aborted})
	return nil
}

func readSnapshotHeader(r *bufio.Reader) (snapshotHeader, error) {
	var hdr snapshotHeader
	magic := make([]byte, len(snapshotMagic)+1)
	if _, err := io.ReadFull(r, magic); err != nil {
		return hdr, fmt.Errorf("snapshot header: %w", err)
	}
	if !bytes.Equal(magic[:len(snapshotMagic)], snapshotMagic) || magic[len(snapshotMagic)] != snapshotFormat1 {
		return hdr, errors.New("not a journal snapshot of a known format")
	}
	tag, payload, err := readFrame(r)
	if err != nil {
		return hdr, err
	}
	if tag != frameHeader {
		return hdr, fmt.Errorf("snapshot starts with frame %q: %w", tag, errCorrupt)
	}
	d := decoder{s: string(payload)}
	hdr.applied, hdr.seq, hdr.term = d.uvarint(), d.uvarint(), d.uvarint()
	if check := d.string(); check != "" {
		hdr.check = []byte(check)
	}
	if d.err != nil || d.off != len(d.s) {
		return hdr, fmt.Errorf("snapshot header: %w", errCorrupt)
	}
	return hdr, nil
}

func readFrame(r *bufio.Reader) (byte, []byte, error) {
	tag, err := r.ReadByte()
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot: %w", noEOF(err))
	}
	n, err := binary.ReadUvarint(r)
	if err != nil {
		return 0, nil, fmt.Errorf("snapshot: %w", noEOF(err))
	}
	if n > maxFrameBytes {
		return 0, nil, fmt.Errorf("snapshot frame of %d bytes: %w", n, errCorrupt)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		return 0, nil, fmt.Errorf("snapshot: %w", noEOF(err))
	}
	return tag, payload, nil
}

// noEOF turns the end of a snapshot before its end frame into an
// unexpected one.
func noEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}
