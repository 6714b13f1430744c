package store

import (
	"sync"

	badger "github.com/dgraph-io/badger/v4"
)

// walSync makes the journal's group commits durable at less cost than
// badger.DB.Sync, which syncs the active memtable's write-ahead file and
// then the value log's current file, every time. The journal's values go
// to the value log only from Badger's ValueThreshold up (16 KiB: a large
// attribute value, a long member list), so nearly every batch leaves the
// value log as it was; syncing it anyway still costs an fsync, and on a
// disk with a write cache a cache flush: issue 19 measured a third of
// the CPU time and twice the wall time of each group commit's sync in
// that second, useless, sync. So a durable batch is synced by fdatasync
// on the memtable write-ahead files alone, and on the value-log files too
// only when the value log may hold something not yet synced. Where the
// files cannot be followed (walsync_other.go, or inotify unavailable),
// every sync is DB.Sync.
//
// Why this is as safe as DB.Sync: a write is in Badger once it is in the
// memtable's write-ahead file (and, for a value from ValueThreshold up,
// in the value log, which the file then points to). Badger writes both
// through shared mappings; on Linux msync(MS_SYNC), which DB.Sync uses,
// is an fsync of the mapped range, and the pages written through a
// shared mapping are already known to the page cache as dirty (from
// their write fault), so fdatasync on the file writes back the same
// pages. Every write-ahead file that may hold unsynced writes is synced
// (the newest one synced last and those created since: a memtable
// rotated out between two syncs is covered too, which DB.Sync, syncing
// the active memtable alone, does not). The value-log files are synced
// the same way (the newest one synced last and those created since)
// whenever the value log may hold something unsynced:
//   - a batch since the last such sync was big enough to hold a value of
//     ValueThreshold or more (the batch's keys and values add up to that
//     much: a bound, so a large batch of small values syncs it too);
//   - a value-log file was created (the log grew) or removed (Badger's
//     garbage collection moved the live values of an old file into the
//     current one, then removed the old one) since.
//
// Against a process crash (kill -9) none of this matters: what Badger
// wrote is in the page cache, which outlives the process
// (store/crash_test.go); the syncs are what a power cut needs.
type walSync struct {
	mu        sync.Mutex
	dirty     bool // the value log may hold unsynced data
	follower  walFollower
	noFollow  bool // following failed: DB.Sync every time
	threshold int
	// walSyncs and fullSyncs count the syncs of the write-ahead files
	// alone, and those of the value log too or DB.Sync (the tests').
	walSyncs, fullSyncs int
}

// wrote notes a batch Badger has written, of about n bytes of keys and
// values (including what its counters add).
func (s *walSync) wrote(db *badger.DB, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.threshold == 0 {
		s.threshold = int(db.Opts().ValueThreshold)
	}
	if n >= s.threshold {
		s.dirty = true
	}
}

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
			s.dirty = true // what was written before the files were followed
		}
	}
	if s.follower == nil {
		s.fullSyncs++
		return db.Sync()
	}
	full, err := s.follower.sync()
	if err == nil && (full || s.dirty) {
		s.fullSyncs++
		if err = s.follower.syncValueLog(); err == nil {
			s.dirty = false
		}
	} else if err == nil {
		s.walSyncs++
	}
	if err != nil {
		// The files could not be followed or synced: DB.Sync from now
		// on, which reports a write-back error of the same pages too.
		s.follower.close()
		s.follower, s.noFollow = nil, true
		s.fullSyncs++
		return db.Sync()
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

// A walFollower knows Badger's memtable write-ahead files as they come.
type walFollower interface {
	// sync fdatasyncs the write-ahead files that may hold writes not yet
	// synced: the newest one synced last and those created since. full
	// says the value log changed meanwhile: it is to be synced too.
	sync() (full bool, err error)
	// syncValueLog fdatasyncs the value-log files that may hold writes
	// not yet synced, as sync the write-ahead files.
	syncValueLog() error
	close()
}
