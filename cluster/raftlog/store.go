// Package raftlog is the cluster's Raft log and stable store: segment
// files of appended, CRC-framed records, written for ldapgate so that a
// StoreLogs call costs one write and one fdatasync (the bolt store it
// replaces paid for B+tree pages, two fdatasyncs and msgpack per call).
//
// Layout of its directory:
//
//	00000000000000000001.seg  a segment: a header, then records (record.go)
//	                          from the index in its name, in order
//	head                      after a compaction: the first index kept
//	stable                    the StableStore's keys (term, vote), appended
//
// Every segment but the last is sealed; only the last is appended to, and
// a new one is started once the last passes Options.SegmentSize. What is
// acknowledged is on disk: a record is written and fdatasynced before
// StoreLogs returns, a new segment's header and directory entry before
// any record goes in it, a truncated tail before DeleteRange returns.
//
// After a crash, Open cuts off a torn write at the end of the last segment
// (the one batch that was in flight); a bad record anywhere else, or a gap
// between segments, is an error naming the file and offset: the node stops
// rather than run on a log with a hole. A torn write is told from an
// acknowledged record gone bad by what a crash can leave (torn.go): the
// file ends inside the bad record and nothing intact follows it, or the
// bad record lies in a sector that reads as zeros (blocks never written);
// intact records after it must all be of its own batch (each record holds
// its offset in its batch). A whole record whose checksum fails — a bit
// flip, even in the last batch — an intact record of a later batch, or a
// length field that went bad (another length makes the checksum match)
// are corruption: Open refuses, naming the file and offset, rather than
// drop acknowledged entries. The stable file follows the same rule. Not
// told apart: acknowledged sectors a file system lost to zeros, and a
// last segment cut back to its header (a torn first batch looks alike).
//
// Directory entries are synced in an order that no power cut can undo in
// part (any subset of the unsynced ones may survive): a new segment's
// entry, the log's directory's in its parent, before any record in it is
// acknowledged (its header written and synced under a temporary name
// first, so that a segment file without its whole header is damage, not
// a creation cut short); a head file before the segments below it go;
// and segments removed from the end one at a time, the last first, so
// that what survives is always a contiguous log.
package raftlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/hashicorp/raft"
)

// DefaultSegmentSize is the size past which the log starts a new segment.
const DefaultSegmentSize = 64 << 20

// Options configure a Store; the zero value is usable.
type Options struct {
	// SegmentSize is the size past which a new segment is started
	// (DefaultSegmentSize); a batch is never split, so a segment may pass
	// it by one batch.
	SegmentSize int64
	// Logger receives what Open repairs (slog.Default()).
	Logger *slog.Logger
}

// Store is a raft.LogStore, raft.StableStore and raft.MonotonicLogStore.
// Its methods are safe for concurrent use: readers (GetLog) run while a
// StoreLogs call waits for its fdatasync.
type Store struct {
	dir     string
	fs      fileSys
	segSize int64
	log     *slog.Logger

	// wmu orders the writers (StoreLogs, DeleteRange, Close); it is held
	// across their disk I/O. mu guards the fields below for readers and is
	// held only briefly, or across a GetLog's pread.
	wmu    sync.Mutex
	buf    []byte // StoreLogs' encoding buffer, under wmu
	head   head   // what the head file holds, under wmu
	failed error  // set once a write or sync failed: the disk state is unknown

	mu          sync.RWMutex
	segs        []*segment
	first, last uint64 // 0, 0 when empty
	closed      bool

	stable *stableFile
}

var (
	_ raft.LogStore          = (*Store)(nil)
	_ raft.StableStore       = (*Store)(nil)
	_ raft.MonotonicLogStore = (*Store)(nil)
)

// errClosed is returned by a closed Store.
var errClosed = errors.New("raftlog: store is closed")

// Open opens the store in dir, creating it if needed, and checks every
// record (see the package comment for what it repairs and what it
// refuses).
func Open(ctx context.Context, dir string, opts Options) (*Store, error) {
	return open(ctx, dir, opts, osFS{})
}

// open is Open on fsys.
func open(ctx context.Context, dir string, opts Options, fsys fileSys) (*Store, error) {
	s := &Store{dir: dir, fs: fsys, segSize: opts.SegmentSize, log: opts.Logger}
	if s.segSize <= 0 {
		s.segSize = DefaultSegmentSize
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := makeDir(fsys, dir); err != nil {
		return nil, err
	}
	if err := removeTemps(fsys, dir); err != nil {
		return nil, err
	}
	var err error
	if s.stable, err = loadStable(fsys, dir); err != nil {
		return nil, err
	}
	if err := s.load(ctx); err != nil {
		s.closeFiles()
		s.stable.close()
		return nil, err
	}
	return s, nil
}

// segName is a segment's file name: its base index, zero-padded so that
// names sort as indexes do.
func segName(base uint64) string { return fmt.Sprintf("%020d.seg", base) }

func listSegments(fsys fileSys, dir string) ([]uint64, error) {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	var bases []uint64
	for _, file := range names {
		name, ok := strings.CutSuffix(file, ".seg")
		if !ok {
			continue
		}
		base, err := strconv.ParseUint(name, 10, 64)
		if err != nil || base == 0 || segName(base) != file {
			return nil, fmt.Errorf("raftlog: %s: not a segment name", filepath.Join(dir, file))
		}
		bases = append(bases, base)
	}
	sort.Slice(bases, func(i, j int) bool { return bases[i] < bases[j] })
	return bases, nil
}

// load opens and checks the segments and sets first and last.
func (s *Store) load(ctx context.Context) error {
	bases, err := listSegments(s.fs, s.dir)
	if err != nil {
		return err
	}
	h, compacted, err := loadHead(s.fs, s.dir)
	if err != nil {
		return err
	}
	if compacted {
		// A compaction that stopped after it wrote the head file left
		// segments below the one it names, maybe not a contiguous run of
		// them (any may have been removed already): finish it before
		// the others are checked for gaps. A head naming no segment is
		// an error: nothing is removed on its word.
		if len(bases) == 0 {
			// An emptied log (deleteAll) whose head file was not reset
			// before a crash: reset it before a new segment takes the
			// name it holds.
			s.log.Warn("raftlog: resetting the head file of an emptied log", "file", filepath.Join(s.dir, headFile))
			return writeHead(s.fs, s.dir, head{})
		}
		s.head = h
		if !slices.Contains(bases, h.segBase) {
			return fmt.Errorf("raftlog: %s says the log starts in segment %s, which is missing",
				filepath.Join(s.dir, headFile), segName(h.segBase))
		}
		var below []uint64
		for len(bases) > 0 && bases[0] < h.segBase {
			below, bases = append(below, bases[0]), bases[1:]
		}
		if err := s.removeBelow(below); err != nil {
			return err
		}
	}
	for i, base := range bases {
		if err := ctx.Err(); err != nil {
			return err
		}
		seg, err := openSegment(s.fs, s.dir, base, i == len(bases)-1, s.log)
		if err != nil {
			return err
		}
		if n := len(s.segs); n > 0 {
			prev := s.segs[n-1]
			if len(prev.offs) == 0 {
				seg.f.Close()
				return fmt.Errorf("raftlog: %s: an empty segment before %s", prev.path, seg.path)
			}
			if seg.base != prev.lastIndex()+1 {
				seg.f.Close()
				return fmt.Errorf("raftlog: gap in the log: %s ends at index %d, %s starts at %d", prev.path, prev.lastIndex(), seg.path, seg.base)
			}
		}
		s.segs = append(s.segs, seg)
	}
	if len(s.segs) == 0 {
		return nil
	}
	lastSeg := s.segs[len(s.segs)-1]
	if len(lastSeg.offs) == 0 && len(s.segs) == 1 {
		// A first segment created and never written: an empty log.
		s.segs = nil
		lastSeg.f.Close()
		if err := s.fs.Remove(lastSeg.path); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		if compacted {
			// The head file named that segment: reset it, as for any
			// emptied log, before a new segment takes the name.
			s.head = head{}
			return writeHead(s.fs, s.dir, head{})
		}
		return syncDir(s.fs, s.dir)
	}
	s.first = s.segs[0].base
	s.last = lastSeg.base + uint64(len(lastSeg.offs)) - 1
	if !compacted {
		return nil
	}
	if s.segs[0].base != h.segBase || h.first < h.segBase || h.first > s.last {
		return fmt.Errorf("raftlog: %s says the log starts at index %d in segment %s, but the segments hold %d to %d",
			filepath.Join(s.dir, headFile), h.first, segName(h.segBase), s.first, s.last)
	}
	s.first = h.first
	return nil
}

// removeBelow removes the segment files of bases, left below the head
// by a compaction cut short, without reading them.
func (s *Store) removeBelow(bases []uint64) error {
	if len(bases) == 0 {
		return nil
	}
	for _, base := range bases {
		path := filepath.Join(s.dir, segName(base))
		s.log.Warn("raftlog: removing a segment a compaction left below the log's head", "file", path)
		if err := s.fs.Remove(path); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
	}
	return syncDir(s.fs, s.dir)
}

// IsMonotonic tells Raft that this log holds no gaps: after installing a
// snapshot it deletes the whole log rather than leaving old entries below
// a gap, and StoreLogs refuses an index at or below LastIndex (an append
// past LastIndex+1 replaces the log: see StoreLogs). A dense log lets the index be a slice of
// offsets, and makes a hole after a crash an error instead of a state.
func (s *Store) IsMonotonic() bool { return true }

// FirstIndex returns the first index held, 0 when the log is empty.
func (s *Store) FirstIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errClosed
	}
	return s.first, nil
}

// LastIndex returns the last index held, 0 when the log is empty.
func (s *Store) LastIndex() (uint64, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return 0, errClosed
	}
	return s.last, nil
}

// GetLog reads the log at index: one pread, and a CRC check.
func (s *Store) GetLog(index uint64, l *raft.Log) error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return errClosed
	}
	if s.last == 0 || index < s.first || index > s.last {
		s.mu.RUnlock()
		return raft.ErrLogNotFound
	}
	seg := s.segs[s.segFor(index)]
	i := index - seg.base
	off := seg.offs[i]
	end := seg.size
	if i+1 < uint64(len(seg.offs)) {
		end = seg.offs[i+1]
	}
	rec := make([]byte, end-off)
	_, err := seg.f.ReadAt(rec, off)
	s.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("raftlog: read index %d from %s at offset %d: %w", index, seg.path, off, err)
	}
	if err := decodeRecord(rec, l); err != nil {
		return fmt.Errorf("raftlog: %s at offset %d (index %d): %w", seg.path, off, index, err)
	}
	if l.Index != index {
		return fmt.Errorf("raftlog: %s at offset %d holds index %d, not %d", seg.path, off, l.Index, index)
	}
	return nil
}

// segFor is the position in segs of the segment holding index, which
// must be held; under mu.
func (s *Store) segFor(index uint64) int {
	return sort.Search(len(s.segs), func(i int) bool { return s.segs[i].base > index }) - 1
}

// StoreLog appends one log.
func (s *Store) StoreLog(l *raft.Log) error { return s.StoreLogs([]*raft.Log{l}) }

// StoreLogs appends logs, which must follow LastIndex without a gap (any
// first index on an empty log), in one write and one fdatasync. Logs
// starting past LastIndex+1 replace the log: Raft sends them after a
// snapshot whose removal of the old log did not happen.
func (s *Store) StoreLogs(logs []*raft.Log) error {
	if len(logs) == 0 {
		return nil
	}
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.mu.RLock()
	first, last := s.first, s.last
	var active *segment
	if n := len(s.segs); n > 0 {
		active = s.segs[n-1]
	}
	s.mu.RUnlock()
	start := logs[0].Index
	if start == 0 || (last != 0 && start <= last) {
		return fmt.Errorf("raftlog: append index %d after %d: the log holds no gaps", start, last)
	}
	for i, l := range logs {
		if l.Index != start+uint64(i) {
			return fmt.Errorf("raftlog: append index %d at position %d of a batch from %d: the log holds no gaps", l.Index, i, start)
		}
	}
	if last != 0 && start > last+1 {
		// Raft appends past the end of the log only when a snapshot holds
		// what lies between: the node installed one past its log and
		// stopped (or failed to delete) before Raft removed the old log,
		// which it does after the FSM's restore and only once (a failure
		// is logged). Refused, that append would be refused for good,
		// restarts included, and the node would take no entry until its
		// leader sent another snapshot; the old log is what Raft meant to
		// remove, all of it below the snapshot.
		s.log.Warn("raftlog: an append past the end of the log: removing the log a snapshot replaced",
			"first", first, "last", last, "append", start)
		if err := s.deleteAll(); err != nil {
			return err
		}
		last, active = 0, nil
	}
	if last == 0 && active != nil && active.base != start {
		// An empty log's segment, created for an append that was then
		// refused (a write that failed, a log too large), and Raft now
		// appends from another index (it installed a snapshot since): a
		// segment's records start at the index in its name, so it goes.
		s.mu.Lock()
		s.segs = nil
		s.mu.Unlock()
		if err := s.removeSegments([]*segment{active}, true); err != nil {
			return s.fail(err)
		}
		active = nil
	}
	if active == nil || active.size >= s.segSize {
		seg, err := createSegment(s.fs, s.dir, start)
		if err != nil {
			return s.failIfUnknown(err)
		}
		s.mu.Lock()
		s.segs = append(s.segs, seg)
		s.mu.Unlock()
		active = seg
	}

	buf := s.buf[:0]
	offs := make([]int64, len(logs))
	for i, l := range logs {
		if recordSize(l)-frameHeader > maxPayload {
			return fmt.Errorf("raftlog: log %d of %d bytes is too large", l.Index, len(l.Data)+len(l.Extensions))
		}
		offs[i] = active.size + int64(len(buf))
		buf = appendRecord(buf, l, uint32(i))
	}
	if cap(buf) <= 4<<20 {
		s.buf = buf // keep an ordinary batch's buffer, not a huge one
	}
	if _, err := active.f.WriteAt(buf, active.size); err != nil {
		// Cut off what part of it was written (ENOSPC part of the way),
		// so that the next append follows the last acknowledged record,
		// and sync the cut: a part written back before it would come
		// back after a power cut, records Raft was told were refused.
		if terr := active.f.Truncate(active.size); terr != nil {
			return s.fail(fmt.Errorf("raftlog: write %s: %w (and truncating it: %v)", active.path, err, terr))
		}
		if serr := active.f.Datasync(); serr != nil {
			return s.fail(fmt.Errorf("raftlog: write %s: %w (and syncing its truncation: %v)", active.path, err, serr))
		}
		return fmt.Errorf("raftlog: write %s: %w", active.path, err)
	}
	if err := active.f.Datasync(); err != nil {
		return s.fail(fmt.Errorf("raftlog: sync %s: %w", active.path, err))
	}
	s.mu.Lock()
	active.offs = append(active.offs, offs...)
	active.size += int64(len(buf))
	if s.last == 0 {
		s.first = start
	}
	s.last = logs[len(logs)-1].Index
	s.mu.Unlock()
	return nil
}

// DeleteRange deletes the logs min to max, inclusive, which must reach
// one end of the log (Raft deletes its head after a snapshot, and a
// follower its tail when the leader's entries conflict with it). What is
// already gone is ignored.
func (s *Store) DeleteRange(min, max uint64) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	if err := s.usable(); err != nil {
		return err
	}
	s.mu.RLock()
	first, last := s.first, s.last
	s.mu.RUnlock()
	switch {
	case last == 0 || min > max || max < first || min > last:
		return nil
	case min <= first && max >= last:
		return s.deleteAll()
	case min <= first:
		return s.deleteHead(max + 1)
	case max >= last:
		return s.deleteTail(min)
	default:
		return fmt.Errorf("raftlog: delete %d to %d from the middle of a log of %d to %d", min, max, first, last)
	}
}

// deleteHead makes first the first index: the head file says so first,
// then whole segments below it go.
func (s *Store) deleteHead(first uint64) error {
	s.mu.RLock()
	k := s.segFor(first)
	base := s.segs[k].base
	s.mu.RUnlock()
	h := head{segBase: base, first: first}
	if err := writeHead(s.fs, s.dir, h); err != nil {
		return s.failIfUnknown(err)
	}
	s.head = h
	s.mu.Lock()
	gone := s.segs[:k:k]
	s.segs = s.segs[k:]
	s.first = first
	s.mu.Unlock()
	// The head file, synced, names the first segment kept: those below
	// it go at the next Open if a power cut keeps some of them.
	return s.fail(s.removeSegments(gone, false))
}

// deleteTail cuts the log before index min (min > first): later segments
// are removed, the last directory entry synced, then the segment holding
// min is truncated and synced; a crash in between leaves a shorter but
// contiguous log.
func (s *Store) deleteTail(min uint64) error {
	s.mu.Lock()
	k := s.segFor(min)
	seg := s.segs[k]
	var gone []*segment
	if min == seg.base {
		gone = append(gone, s.segs[k:]...)
		s.segs = s.segs[:k]
		seg = nil
	} else {
		gone = append(gone, s.segs[k+1:]...)
		s.segs = s.segs[:k+1]
	}
	var cut int64
	if seg != nil {
		cut = seg.offs[min-seg.base]
		seg.offs = seg.offs[:min-seg.base]
		seg.size = cut
	}
	s.last = min - 1
	s.mu.Unlock()
	if err := s.removeSegments(gone, true); err != nil {
		return s.fail(err)
	}
	if seg == nil {
		return nil
	}
	if err := seg.f.Truncate(cut); err != nil {
		return s.fail(fmt.Errorf("raftlog: truncate %s: %w", seg.path, err))
	}
	if err := seg.f.Sync(); err != nil {
		return s.fail(fmt.Errorf("raftlog: sync %s: %w", seg.path, err))
	}
	return nil
}

// deleteAll empties the log: the segments go, the last first and each
// removal synced, so that a power cut leaves a contiguous part of the log
// under the head file (whose segment, the first, goes last); then the
// head file, if there is one, is reset, before any segment of a later log
// can take the name it holds (a head file naming a segment when none is
// left is an empty log to Open). The new head file is written and synced
// first, so that running out of space refuses the call before anything
// changed.
func (s *Store) deleteAll() error {
	compacted := s.head.segBase != 0
	if compacted {
		if err := stageFile(s.fs, s.dir, headFile, head{}.encode()); err != nil {
			return err
		}
	}
	s.mu.Lock()
	gone := s.segs
	s.segs = nil
	s.first, s.last = 0, 0
	s.mu.Unlock()
	if err := s.removeSegments(gone, true); err != nil {
		return s.fail(err)
	}
	if !compacted {
		return nil
	}
	if err := commitFile(s.fs, s.dir, headFile); err != nil {
		return s.fail(err)
	}
	s.head = head{}
	return nil
}

// removeSegments closes and removes segs, last first, and syncs the
// directory; each removal on its own if each: a power cut may keep any
// subset of unsynced removals, and segments removed from the end must
// leave a contiguous log whichever survive. The caller has taken them
// out of s.segs.
func (s *Store) removeSegments(segs []*segment, each bool) error {
	if len(segs) == 0 {
		return nil
	}
	for i := len(segs) - 1; i >= 0; i-- {
		segs[i].f.Close()
		if err := s.fs.Remove(segs[i].path); err != nil {
			return fmt.Errorf("raftlog: %w", err)
		}
		if each && i > 0 {
			if err := syncDir(s.fs, s.dir); err != nil {
				return err
			}
		}
	}
	return syncDir(s.fs, s.dir)
}

// usable returns why the store takes no more writes; under wmu.
func (s *Store) usable() error {
	if s.failed != nil {
		return s.failed
	}
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return errClosed
	}
	return nil
}

// fail records err, if any, as the reason the store takes no more writes:
// after a failed sync the kernel may have dropped the dirty pages, so
// what is on disk is unknown until the store is opened again; under wmu.
func (s *Store) fail(err error) error {
	if err != nil && s.failed == nil {
		s.failed = fmt.Errorf("raftlog: the store failed a write and must be reopened: %w", err)
	}
	return err
}

// errUnsynced marks a failure after which what the disk holds is unknown:
// a failed sync, or one that failed after a rename. Other failures of
// createSegment and writeHead (a file that cannot be created or written:
// EMFILE, ENOSPC) leave the store as it was, and refuse that call only.
var errUnsynced = errors.New("not synced")

// failIfUnknown is fail for an error marked errUnsynced; under wmu.
func (s *Store) failIfUnknown(err error) error {
	if errors.Is(err, errUnsynced) {
		return s.fail(err)
	}
	return err
}

// Close closes the files; everything acknowledged is already on disk.
func (s *Store) Close() error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	s.stable.mu.Lock()
	defer s.stable.mu.Unlock()
	return errors.Join(s.closeFiles(), s.stable.close())
}

func (s *Store) closeFiles() error {
	var errs []error
	for _, seg := range s.segs {
		errs = append(errs, seg.f.Close())
	}
	return errors.Join(errs...)
}
