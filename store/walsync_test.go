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
