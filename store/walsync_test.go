package store

import (
	"fmt"
	"os"
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
