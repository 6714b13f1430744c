package store

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"

	badger "github.com/dgraph-io/badger/v4"
)

// dirtyMapped is, per file of dir with extension .mem or .vlog that this
// process maps, how many kB of the mapping the kernel still counts dirty:
// written through the mapping and not yet written back. Right after a
// sync that made everything Badger wrote durable, every count is zero (a
// page written back is cleaned and write-protected, so a later write
// dirties it again). Files already removed are left out: a removed
// write-ahead file was flushed to a synced table, a removed value-log file
// emptied into a later one.
func dirtyMapped(t *testing.T, dir string) map[string]int {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Skipf("no smaps: %v", err)
	}
	defer f.Close()
	dirty := map[string]int{}
	cur := ""
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if !strings.HasSuffix(fields[0], ":") { // a mapping's header line
			cur = ""
			if len(fields) == 6 && filepath.Dir(fields[5]) == dir {
				if ext := filepath.Ext(fields[5]); ext == ".mem" || ext == ".vlog" {
					cur = filepath.Base(fields[5])
				}
			}
			continue
		}
		if cur != "" && (fields[0] == "Shared_Dirty:" || fields[0] == "Private_Dirty:") && len(fields) >= 2 {
			kb, err := strconv.Atoi(fields[1])
			if err != nil {
				t.Fatalf("smaps: %q: %v", line, err)
			}
			dirty[cur] += kb
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return dirty
}

// assertClean fails the test if a write-ahead or value-log file of dir
// holds pages not written back.
func assertClean(t *testing.T, dir, when string) {
	t.Helper()
	for name, kb := range dirtyMapped(t, dir) {
		if kb != 0 {
			t.Errorf("%s: %s has %d kB not written back: a power cut now loses what the journal acknowledged", when, name, kb)
		}
	}
}

// openSyncTestDB opens a Badger folder with the journal's options and
// small memtables and value-log files, so that both rotate quickly.
func openSyncTestDB(t *testing.T) (*badger.DB, string) {
	t.Helper()
	if runtime.GOOS != "linux" {
		t.Skip("smaps is Linux's")
	}
	dir, err := filepath.Abs(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	db, err := badger.Open(badgerOptions(dir, Options{}, quietLogger()).WithMemTableSize(1 << 20).WithValueLogFileSize(1 << 20))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dir
}

func set(t *testing.T, db *badger.DB, key string, size int) {
	t.Helper()
	if err := db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(key), make([]byte, size)) }); err != nil {
		t.Fatal(err)
	}
}

// TestWALSyncLeavesNothingDirty: after each sync, no page Badger wrote
// into a write-ahead or value-log file is left to write back, whoever
// wrote it: the journal's batches (announced to wrote), through memtable
// and value-log rotations, and a value of the value log written by
// another of Badger's writers (value-log GC rewrites the live values of a
// file into the current one, in a batch of its own, while the journal
// goes on; a journal sync in between makes the pointers to them durable in
// the write-ahead file), and after DropAll, which starts the value log
// again at file 1.
// Also when the files are found by a scan of the folder at each sync
// (inotify unavailable).
func TestWALSyncLeavesNothingDirty(t *testing.T) {
	for _, mode := range []string{"followed", "scanned"} {
		t.Run(mode, func(t *testing.T) { testWALSyncLeavesNothingDirty(t, mode == "scanned") })
	}
}

func testWALSyncLeavesNothingDirty(t *testing.T, scanned bool) {
	db, dir := openSyncTestDB(t)
	s := walSync{noFollow: scanned}
	defer s.close()
	sync := func(when string) {
		t.Helper()
		if err := s.sync(db); err != nil {
			t.Fatal(err)
		}
		assertClean(t, dir, when)
	}
	set(t, db, "first", 100)
	sync("first sync")
	for i := range 3 << 10 { // 3 MiB: memtables of 1 MiB rotate
		set(t, db, fmt.Sprintf("k%06d", i), 1000)
		if i%97 == 0 {
			sync(fmt.Sprintf("small write %d", i))
		}
	}
	sync("after the small writes")
	set(t, db, "big", 20<<10)
	sync("a value of 20 KiB")
	for i := range 3 {
		set(t, db, fmt.Sprintf("gc%d", i), 20<<10) // not announced: as the GC's rewrite
		set(t, db, fmt.Sprintf("small%d", i), 100)
		sync(fmt.Sprintf("a value of 20 KiB written by another writer (%d)", i))
	}
	for i := range 120 { // value-log files of 1 MiB rotate
		set(t, db, fmt.Sprintf("v%06d", i), 20<<10)
		if i%7 == 0 {
			sync(fmt.Sprintf("large write %d", i))
		}
	}
	sync("after the large writes")
	if err := db.DropAll(); err != nil {
		t.Fatal(err)
	}
	set(t, db, "after DropAll", 20<<10)
	sync("a value of 20 KiB after DropAll")
	if scanned && (s.followed != 0 || s.fallbacks == 0) || !scanned && (s.followed == 0 || s.fallbacks != 0) {
		t.Fatalf("%d syncs through the files followed, %d by a scan", s.followed, s.fallbacks)
	}
}

// rotate writes small values without a sync until Badger has rotated its
// memtable: the rotated one's write-ahead file holds unsynced writes.
func rotate(t *testing.T, db *badger.DB, dir, prefix string) {
	t.Helper()
	before := newestWAL(t, dir)
	for i := 0; newestWAL(t, dir) == before; i++ {
		if i > 8<<10 {
			t.Fatal("the memtable never rotated")
		}
		set(t, db, fmt.Sprintf("%s%06d", prefix, i), 1000)
	}
	set(t, db, prefix+"-last", 1000)
}

// TestWALSyncFallbackSyncsRotatedMemtables: when the watch breaks, the
// sync falls back on syncing the whole folder, which takes in a memtable
// rotated out since the last sync (DB.Sync alone would not), and the next
// sync follows the files again.
func TestWALSyncFallbackSyncsRotatedMemtables(t *testing.T) {
	for _, fault := range []string{"watch closed", "queue overflow"} {
		t.Run(fault, func(t *testing.T) {
			db, dir := openSyncTestDB(t)
			var s walSync
			defer s.close()
			set(t, db, "first", 100)
			if err := s.sync(db); err != nil {
				t.Fatal(err)
			}
			rotate(t, db, dir, "k")
			switch fault {
			case "watch closed":
				f := s.follower.(*inotifyFollower)
				syscall.Close(f.fd)
				f.fd = -1
			case "queue overflow":
				max, err := os.ReadFile("/proc/sys/fs/inotify/max_queued_events")
				if err != nil {
					t.Skip(err)
				}
				n, err := strconv.Atoi(strings.TrimSpace(string(max)))
				if err != nil || n > 1<<16 {
					t.Skipf("max_queued_events %q: too many files to make", max)
				}
				for i := range n + 1 {
					if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("x%06d", i)), nil, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			if err := s.sync(db); err != nil {
				t.Fatal(err)
			}
			assertClean(t, dir, "after the fallback")
			if s.fallbacks != 1 || s.follower != nil {
				t.Fatalf("%d whole syncs, follower %v: want 1 and none", s.fallbacks, s.follower)
			}
			rotate(t, db, dir, "m")
			if err := s.sync(db); err != nil {
				t.Fatal(err)
			}
			assertClean(t, dir, "following again")
			if s.followed != 2 || s.follower == nil {
				t.Fatalf("%d syncs through the files followed, want 2 (it follows them again)", s.followed)
			}
		})
	}
}

// TestWALSyncReportsWriteBackError: an fdatasync that fails (EIO from
// the disk) fails the sync, although the fallback's DB.Sync, which does
// not sync the rotated memtable, would succeed. A value goes to the value
// log before the failing sync: one with nothing new there is not synced
// (TestWALSyncSkipsUntouchedValueLog).
func TestWALSyncReportsWriteBackError(t *testing.T) {
	for _, series := range []string{".mem", ".vlog"} {
		t.Run(series, func(t *testing.T) {
			db, dir := openSyncTestDB(t)
			var s walSync
			defer s.close()
			set(t, db, "first", 100)
			if err := s.sync(db); err != nil {
				t.Fatal(err)
			}
			rotate(t, db, dir, "k")
			set(t, db, "big", 20<<10)
			f := s.follower.(*inotifyFollower)
			fs := &f.wal
			if series == ".vlog" {
				fs = &f.vlog
			}
			fs.fdatasync = func(int) error { return syscall.EIO }
			if err := s.sync(db); !errors.Is(err, syscall.EIO) {
				t.Fatalf("sync with a failing fdatasync of the %s files: %v, want EIO", series, err)
			}
			if err := s.sync(db); err != nil {
				t.Fatalf("the sync after: %v", err)
			}
		})
	}
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

// TestWALSyncSkipsUntouchedValueLog: a sync fdatasyncs the value log only
// if a value went there since the last one, whoever wrote it (Badger
// counts them: badger_write_num_vlog), or a value-log file was created;
// the write-ahead file at every sync.
func TestWALSyncSkipsUntouchedValueLog(t *testing.T) {
	db, dir := openSyncTestDB(t)
	count := vlogWriteCount(db.Opts())
	if count == nil {
		t.Fatal("Badger does not count the values written to the value log: every sync syncs it")
	}
	var s walSync
	defer s.close()
	set(t, db, "first", 100)
	if err := s.sync(db); err != nil {
		t.Fatal(err)
	}
	f := s.follower.(*inotifyFollower)
	var walSyncs, vlogSyncs int
	f.wal.fdatasync = func(fd int) error { walSyncs++; return syscall.Fdatasync(fd) }
	f.vlog.fdatasync = func(fd int) error { vlogSyncs++; return syscall.Fdatasync(fd) }
	step := func(when string, wantVlog int) {
		t.Helper()
		walSyncs, vlogSyncs = 0, 0
		if err := s.sync(db); err != nil {
			t.Fatal(err)
		}
		assertClean(t, dir, when)
		if walSyncs == 0 || vlogSyncs != wantVlog {
			t.Fatalf("%s: %d fdatasyncs of write-ahead files, %d of value-log files: want some and %d", when, walSyncs, vlogSyncs, wantVlog)
		}
	}
	for i := range 20 {
		set(t, db, fmt.Sprintf("small%d", i), 1000)
		step(fmt.Sprintf("small value %d", i), 0)
	}
	before := count()
	set(t, db, "big", 20<<10)
	if count() == before {
		t.Fatal("a value of 20 KiB was not counted in badger_write_num_vlog")
	}
	step("a value of 20 KiB", 1)
	set(t, db, "small-after", 1000)
	step("a small value after it", 0)
	rotations := 0
	for i := 0; rotations == 0; i++ { // value-log files of 1 MiB rotate
		if i > 200 {
			t.Fatal("the value log never rotated")
		}
		vlog := newestFile(t, dir, ".vlog")
		set(t, db, fmt.Sprintf("v%06d", i), 20<<10)
		if newestFile(t, dir, ".vlog") != vlog {
			rotations++
		}
	}
	step("after a value-log rotation", 2) // the file rotated out, then the new one
	if s.fallbacks != 0 {
		t.Fatalf("%d syncs by a scan, want none", s.fallbacks)
	}
}
