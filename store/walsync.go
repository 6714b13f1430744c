package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// walSync makes the journal's group commits durable, and more surely than
// badger.DB.Sync, which syncs the active memtable's write-ahead file and
// the value log's current file only: a memtable Badger rotated out
// between two syncs (ensureRoomForWrite, also in the middle of a write
// group) keeps unsynced writes in its write-ahead file until it is
// flushed to a table, and DB.Sync does not sync that file. So a durable
// batch is synced by fdatasync on every write-ahead file that may hold
// unsynced writes (followed with inotify: the newest one synced last and
// those created since) and on the value-log files the same way.
//
// The value log is synced at every sync, as DB.Sync does, although the
// journal's own batches put something there only from ValueThreshold up:
// other writers do too, behind the journal's back. Value-log GC rewrites
// the live values of an old file into the current one in a batch of its
// own (no sync) and removes the old file; a journal sync in between makes
// the write-ahead file's pointers to the moved values durable, and the
// values must be too (TestWALSyncLeavesNothingDirty). An fdatasync of a
// file with nothing to write back costs little (issue 19's profile: the
// value log's sync was a tenth of DB.Sync's time).
//
// Why fdatasync is as good as DB.Sync's msync: Badger writes both kinds
// of files through shared mappings; on Linux msync(MS_SYNC) is an fsync
// of the mapped range, and the pages written through a shared mapping
// are already known to the page cache as dirty (from their write fault),
// so fdatasync on the file writes back the same pages.
//
// Where the files cannot be followed (walsync_other.go, inotify
// unavailable, the watch lost), a sync fsyncs every write-ahead file in
// the folder and then calls DB.Sync (syncAll). A failed write-back is
// always reported: the batch is not durable, whatever a later sync says.
//
// Against a process crash (kill -9) none of this matters: what Badger
// wrote is in the page cache, which outlives the process
// (store/crash_test.go); the syncs are what a power cut needs.
type walSync struct {
	mu       sync.Mutex
	follower walFollower
	noFollow bool // following cannot start: syncAll every time
	// followed and fallbacks count the syncs through the files followed,
	// and those by syncAll (the tests').
	followed, fallbacks int
}

// errWriteBack marks the error of a file's fdatasync, or of opening a file
// to be synced: writes Badger made may not be durable.
var errWriteBack = errors.New("write-back failed")

// sync makes everything Badger has written so far durable.
func (s *walSync) sync(db *badger.DB) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.noFollow && s.follower == nil {
		f, err := followWALs(db.Opts().Dir)
		if err != nil {
			s.noFollow = true
		} else {
			s.follower = f
		}
	}
	if s.follower == nil {
		s.fallbacks++
		return syncAll(db)
	}
	err := s.follower.sync()
	if err == nil {
		s.followed++
		return nil
	}
	// The watch lost track, or a file could not be synced: sync the
	// whole folder now and follow it anew at the next sync (whose first
	// pass syncs every file present). A write-back error stands even if
	// syncAll succeeds: the write-back error of a file is reported once
	// per open file, and DB.Sync does not sync a rotated memtable's file.
	s.follower.close()
	s.follower = nil
	s.fallbacks++
	serr := syncAll(db)
	if errors.Is(err, errWriteBack) {
		return errors.Join(err, serr)
	}
	return serr
}

// syncAll syncs every memtable write-ahead file in Badger's folder, those
// rotated out and not yet flushed included, then what DB.Sync syncs.
func syncAll(db *badger.DB) error {
	opts := db.Opts()
	if opts.InMemory || opts.ReadOnly || opts.Dir == "" {
		return db.Sync()
	}
	ents, err := os.ReadDir(opts.Dir)
	if err != nil {
		return fmt.Errorf("sync journal: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if _, ok := fileID(e.Name(), ".mem"); !ok {
			continue
		}
		f, err := os.OpenFile(filepath.Join(opts.Dir, e.Name()), os.O_RDWR, 0)
		if errors.Is(err, os.ErrNotExist) {
			continue // flushed to a table Badger synced, then removed
		}
		if err == nil {
			err = f.Sync()
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("sync %s: %w", e.Name(), err))
		}
	}
	errs = append(errs, db.Sync())
	return errors.Join(errs...)
}

// close releases the files followed.
func (s *walSync) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.follower != nil {
		s.follower.close()
		s.follower = nil
	}
}

// A walFollower knows Badger's memtable write-ahead and value-log files as
// they come.
type walFollower interface {
	// sync fdatasyncs the value-log files that may hold writes not yet
	// synced (the newest one synced last and those created since), then
	// the write-ahead files likewise. An error wraps errWriteBack if a file
	// could not be synced.
	sync() error
	close()
}

// fileID parses Badger's numbered file name with extension ext.
func fileID(name, ext string) (int, bool) {
	num, ok := strings.CutSuffix(name, ext)
	if !ok || num == "" {
		return 0, false
	}
	id, err := strconv.Atoi(num)
	return id, err == nil && id >= 0
}
