package store

import (
	"errors"
	"expvar"
	"fmt"
	"os"
	"path/filepath"
	"slices"
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
// The value log is synced whenever anything was written to it since the
// last sync began, by whoever wrote it: the journal's own batches put
// something there only from ValueThreshold up, but other writers do too,
// behind the journal's back. Value-log GC rewrites the live values of an
// old file into the current one in a batch of its own (no sync) and
// removes the old file; a journal sync in between makes the write-ahead
// file's pointers to the moved values durable, and the values must be too
// (TestWALSyncLeavesNothingDirty). Every value Badger puts in a value log,
// whoever's, is counted by Badger's own metric badger_write_num_vlog
// (valueLog.write, after the value is in the file and before its pointer
// goes to the write-ahead file); a sync that finds the count unchanged
// since the last value-log sync began, and no value-log file created
// since, has nothing of the value log to make durable and skips its
// fdatasync. That fdatasync was not free although nothing was written
// back: on ext4 it still flushes the disk's cache (issue 19: 20 to 50 µs
// of CPU time and 50 to 200 µs of waiting per sync on the bench machine,
// at every group commit, while the journal's records hardly ever reach
// the value log). Where the count is not kept (Badger's metrics off, or
// the metric gone from a later Badger), the value log is synced at every
// sync, as before.
//
// Why fdatasync is as good as DB.Sync's msync: Badger writes both kinds
// of files through shared mappings; on Linux msync(MS_SYNC) is an fsync
// of the mapped range, and the pages written through a shared mapping
// are already known to the page cache as dirty (from their write fault),
// so fdatasync on the file writes back the same pages.
//
// Where the files cannot be followed (walsync_other.go, inotify
// unavailable, the watch lost), a sync finds the files by a scan of the
// folder (syncAll), not by DB.Sync, which would miss a memtable or a
// value-log file rotated out since the last sync. A failed write-back is
// always reported: the batch is not durable, whatever a later sync says.
//
// Against a process crash (kill -9) none of this matters: what Badger
// wrote is in the page cache, which outlives the process
// (store/crash_test.go); the syncs are what a power cut needs.
type walSync struct {
	mu       sync.Mutex
	follower walFollower
	noFollow bool // following cannot start: syncAll every time
	vlogFrom int  // syncAll's: the newest value-log file it synced
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
		opts := db.Opts()
		f, err := followWALs(opts.Dir, vlogWriteCount(opts))
		if err == nil && opts.ValueDir != opts.Dir {
			f.close() // the value log is elsewhere: not watched
			err = errors.New("value log outside the journal's folder")
		}
		if err != nil {
			s.noFollow = true
		} else {
			s.follower = f
		}
	}
	if s.follower == nil {
		s.fallbacks++
		return syncAll(db, &s.vlogFrom)
	}
	err := s.follower.sync()
	if err == nil {
		s.followed++
		return nil
	}
	// The watch lost track, or a file could not be synced: sync the
	// whole folder now and follow it anew at the next sync (whose first
	// pass syncs every file present). A write-back error stands even if
	// syncAll succeeds: the kernel reports a file's write-back error to
	// the open files that existed when it happened, not to those syncAll
	// opens after.
	s.follower.close()
	s.follower = nil
	s.fallbacks++
	s.vlogFrom = 0 // what the watch may have missed
	serr := syncAll(db, &s.vlogFrom)
	if errors.Is(err, errWriteBack) {
		return errors.Join(err, serr)
	}
	return serr
}

// vlogWriteCount returns a reader of Badger's count of the values it has
// written to value logs (all of the process's databases together: more
// counted than this journal's is a sync more, never one less), or nil if
// Badger does not keep it.
func vlogWriteCount(opts badger.Options) func() int64 {
	if !opts.MetricsEnabled {
		return nil
	}
	if v, ok := expvar.Get("badger_write_num_vlog").(*expvar.Int); ok {
		return v.Value
	}
	return nil
}

// syncAll syncs, by a scan of Badger's folders, the value-log files that
// may hold writes not yet synced (the newest one synced last and those
// after it: Badger does not sync a value-log file it rotates out, nor does
// DB.Sync), then every memtable write-ahead file, those rotated out and
// not yet flushed included. vlogFrom is the newest value-log file synced
// by the last scan (0: none), updated.
func syncAll(db *badger.DB, vlogFrom *int) error {
	opts := db.Opts()
	if opts.InMemory || opts.ReadOnly || opts.Dir == "" {
		return db.Sync() // nothing of Badger's to sync
	}
	vlogs, err := numbered(opts.ValueDir, ".vlog")
	if err != nil {
		return err
	}
	if len(vlogs) > 0 && vlogs[len(vlogs)-1] < *vlogFrom {
		*vlogFrom = 0 // DropAll started the value log again at 1
	}
	var errs []error
	for _, id := range vlogs {
		if id >= *vlogFrom {
			errs = append(errs, fsyncFile(filepath.Join(opts.ValueDir, fmt.Sprintf("%06d.vlog", id))))
		}
	}
	mems, err := numbered(opts.Dir, ".mem")
	if err != nil {
		return err
	}
	for _, id := range mems {
		errs = append(errs, fsyncFile(filepath.Join(opts.Dir, fmt.Sprintf("%05d.mem", id))))
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(vlogs) > 0 {
		*vlogFrom = vlogs[len(vlogs)-1]
	}
	return nil
}

// numbered lists, in order, the numbers of Badger's files of extension ext
// in dir.
func numbered(dir, ext string) ([]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("sync journal: %w", err)
	}
	var ids []int
	for _, e := range ents {
		if id, ok := fileID(e.Name(), ext); ok {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids, nil
}

// fsyncFile fsyncs the file at path, if it is still there: a memtable file
// removed was flushed to a table Badger synced, a value-log file removed
// was emptied into a later one or dropped.
func fsyncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = f.Sync()
		if cerr := f.Close(); err == nil {
			err = cerr
		}
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", filepath.Base(path), err)
	}
	return nil
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
