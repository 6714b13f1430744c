package store

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"syscall"
	"testing"
	"time"

	badger "github.com/dgraph-io/badger/v4"
)

// newestWAL is the highest-numbered memtable write-ahead file in dir.
func newestWAL(t *testing.T, dir string) int {
	t.Helper()
	return newestFile(t, dir, ".mem")
}

// newestFile is the highest-numbered Badger file of extension ext in dir.
func newestFile(t *testing.T, dir, ext string) int {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	newest := -1
	for _, e := range ents {
		if fid, ok := fileID(e.Name(), ext); ok && fid > newest {
			newest = fid
		}
	}
	return newest
}

// TestWALSyncFollowsMemtables: a group commit is synced through the
// write-ahead and value-log files Badger writes into, also once Badger has
// rotated its memtables and value-log files.
func TestWALSyncFollowsMemtables(t *testing.T) {
	db, dir := openSyncTestDB(t)
	var s walSync
	defer s.close()
	write := func(i, size int) {
		t.Helper()
		set(t, db, fmt.Sprintf("k%06d", i), size)
		if err := s.sync(db); err != nil {
			t.Fatal(err)
		}
	}
	follows := func(when string) {
		t.Helper()
		f := s.follower.(*inotifyFollower)
		if want := newestWAL(t, dir); f.wal.curID != want {
			t.Fatalf("%s: the sync follows write-ahead file %d, Badger writes into %d", when, f.wal.curID, want)
		}
		if want := newestFile(t, dir, ".vlog"); f.vlog.curID != want {
			t.Fatalf("%s: the sync follows value-log file %d, Badger writes into %d", when, f.vlog.curID, want)
		}
	}
	write(0, 100)
	first := newestWAL(t, dir)
	// 4 MiB of small values: several memtables of 1 MiB.
	for i := 1; i <= 4<<10; i++ {
		write(i, 1000)
		follows(fmt.Sprintf("after write %d", i))
	}
	if newestWAL(t, dir) == first {
		t.Fatal("the memtables never rotated: the test proves nothing")
	}
	// Values that fill value-log files of 1 MiB, written behind its back.
	firstVlog := newestFile(t, dir, ".vlog")
	for i := range 200 {
		set(t, db, fmt.Sprintf("v%06d", i), 20<<10)
	}
	write(-1, 100)
	follows("after value-log files were created")
	if newestFile(t, dir, ".vlog") == firstVlog {
		t.Fatal("the value log never rotated: the test proves nothing")
	}
	if s.fallbacks != 0 || s.followed != 4<<10+2 {
		t.Fatalf("%d syncs through the files followed and %d whole, want %d and 0", s.followed, s.fallbacks, 4<<10+2)
	}
}

// BenchmarkGroupCommitSync compares, for a batch of three small records,
// the sync of badger.DB.Sync with walSync's: wall time per op, and the
// syncing thread's CPU time (cpu-ns/op).
//
//	go test ./store -run '^$' -bench GroupCommitSync -benchtime 500x
func BenchmarkGroupCommitSync(b *testing.B) {
	for _, mode := range []string{"DB.Sync", "walSync"} {
		b.Run(mode, func(b *testing.B) {
			db, err := badger.Open(badgerOptions(b.TempDir(), Options{}, quietLogger()))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			var s walSync
			defer s.close()
			sync := db.Sync
			if mode == "walSync" {
				sync = func() error { return s.sync(db) }
			}
			val := make([]byte, 600)
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			var cpu time.Duration
			b.ResetTimer()
			for i := range b.N {
				err := db.Update(func(txn *badger.Txn) error {
					for j := range 3 {
						if err := txn.Set(fmt.Appendf(nil, "k%d-%d", i, j), val); err != nil {
							return err
						}
					}
					return nil
				})
				if err != nil {
					b.Fatal(err)
				}
				start := threadCPU()
				if err := sync(); err != nil {
					b.Fatal(err)
				}
				cpu += threadCPU() - start
			}
			b.ReportMetric(float64(cpu.Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}

// threadCPU is the calling thread's CPU time.
func threadCPU() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(1, &ru) // RUSAGE_THREAD
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// inotifyFDs counts this process's open inotify instances.
func inotifyFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	n := 0
	for _, e := range ents {
		if target, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && target == "anon_inode:inotify" {
			n++
		}
	}
	return n
}

// TestJournalReopenReleasesWatch: a journal closed releases the watch on
// its folder (and the files it held open for their syncs), however often
// it is opened again.
func TestJournalReopenReleasesWatch(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("write-ahead files are followed on Linux only")
	}
	dir := t.TempDir()
	opts := testOptions(dir)
	opts.NoSync = false
	before := inotifyFDs(t)
	for i := range 5 {
		j, err := Open(filepath.Join(dir, "journal"), opts)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		mustPrepareCommit(t, j, accountRecord(fmt.Sprintf("uid=u%d,dc=example,dc=org", i)), "")
		if n := inotifyFDs(t); n != before+1 {
			t.Errorf("open %d: %d inotify instances, want %d", i, n, before+1)
		}
		if err := j.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
		if n := inotifyFDs(t); n != before {
			t.Fatalf("closed %d times: %d inotify instances, want %d", i+1, n, before)
		}
	}
}
