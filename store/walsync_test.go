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

// TestWALSyncFollowsMemtables: a group commit of small values is synced
// through the write-ahead file Badger writes into, also once Badger has
// rotated its memtables; a value from the value threshold up, or a new
// value-log file, makes the sync take in the value log's files.
func TestWALSyncFollowsMemtables(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("write-ahead files are followed on Linux only")
	}
	dir := t.TempDir()
	db, err := badger.Open(badgerOptions(dir, Options{}, quietLogger()).WithMemTableSize(1 << 20).WithValueLogFileSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var s walSync
	defer s.close()
	write := func(i, size int) {
		t.Helper()
		err := db.Update(func(txn *badger.Txn) error { return txn.Set(fmt.Appendf(nil, "k%06d", i), make([]byte, size)) })
		if err != nil {
			t.Fatal(err)
		}
		s.wrote(db, size+16)
		if err := s.sync(db); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 100)
	if s.fullSyncs != 1 {
		t.Fatalf("first sync: %d whole syncs, want 1 (what was written before the files were followed)", s.fullSyncs)
	}
	first := newestWAL(t, dir)
	// 4 MiB of small values: several memtables of 1 MiB.
	for i := 1; i <= 4<<10; i++ {
		write(i, 1000)
		f := s.follower.(*inotifyFollower)
		if want := newestWAL(t, dir); f.wal.curID != want {
			t.Fatalf("after write %d the sync follows write-ahead file %d, Badger writes into %d", i, f.wal.curID, want)
		}
	}
	if newestWAL(t, dir) == first {
		t.Fatal("the memtables never rotated: the test proves nothing")
	}
	if s.fullSyncs != 1 || s.walSyncs != 4<<10 {
		t.Fatalf("%d whole syncs and %d of the write-ahead files alone, want 1 and %d", s.fullSyncs, s.walSyncs, 4<<10)
	}
	// A value for the value log: the next sync is whole; the one after
	// is not.
	write(-1, 20<<10)
	if s.fullSyncs != 2 {
		t.Fatalf("a value of 20 KiB: %d whole syncs, want 2", s.fullSyncs)
	}
	write(-2, 100)
	if s.fullSyncs != 2 {
		t.Fatalf("a small value after a large one: %d whole syncs, want 2", s.fullSyncs)
	}
	// Values that fill value-log files of 1 MiB: new files are created,
	// each noted by the watch and synced whole.
	for i := range 200 {
		err := db.Update(func(txn *badger.Txn) error { return txn.Set(fmt.Appendf(nil, "v%06d", i), make([]byte, 20<<10)) })
		if err != nil {
			t.Fatal(err)
		}
	}
	full := s.fullSyncs
	write(-3, 100) // not noted as large: only the watch knows
	if s.fullSyncs != full+1 {
		t.Fatalf("value-log files created behind its back: %d whole syncs, want %d", s.fullSyncs, full+1)
	}
	if got, want := s.follower.(*inotifyFollower).vlog.curID, newestFile(t, dir, ".vlog"); got != want || want < 1 {
		t.Fatalf("the value-log sync follows file %d, Badger writes into %d", got, want)
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
				s.wrote(db, 3*620)
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
