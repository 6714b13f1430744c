package raftlog

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
)

// writeLogs stores from..to, batch logs per StoreLogs call, in a new
// store in dir, and returns the store's segments' state on close.
func writeLogs(t *testing.T, dir string, seg int64, from, to uint64, batch int) {
	t.Helper()
	s := openT(t, dir, seg)
	defer s.Close()
	for i := from; i <= to; {
		var logs []*raft.Log
		for k := 0; k < batch && i <= to; k++ {
			logs = append(logs, mkLog(i, 0))
			i++
		}
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
}

// recordAt is where index i's record lies: its file and byte range.
func recordAt(t *testing.T, dir string, i uint64) (path string, off, end int64) {
	t.Helper()
	s := openT(t, dir, 0)
	defer s.Close()
	seg := s.segs[s.segFor(i)]
	off = seg.offs[i-seg.base]
	end = seg.size
	if int(i-seg.base)+1 < len(seg.offs) {
		end = seg.offs[i-seg.base+1]
	}
	return seg.path, off, end
}

func copyDir(t *testing.T, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dst
}

func flip(t *testing.T, path string, at int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 1)
	if _, err := f.ReadAt(b, at); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b, at); err != nil {
		t.Fatal(err)
	}
}

// reopenHolds opens dir and checks it holds exactly first..last of
// mkLog's logs, then that an append at last+1 goes on from there.
func reopenHolds(t *testing.T, dir string, first, last uint64, when string) {
	t.Helper()
	s, err := Open(context.Background(), dir, Options{Logger: quiet()})
	if err != nil {
		t.Fatalf("%s: open: %v", when, err)
	}
	defer s.Close()
	m := newModel()
	for i := first; i <= last; i++ {
		m.store(mkLog(i, 0))
	}
	check(t, s, m, when)
	next := mkLog(last+1, 5)
	if err := s.StoreLog(next); err != nil {
		t.Fatalf("%s: append after the repair: %v", when, err)
	}
	m.store(next)
	check(t, s, m, when+", appended")
}

func TestFaultTornLastRecord(t *testing.T) {
	orig := t.TempDir()
	const n = 30
	writeLogs(t, orig, 0, 1, n, 1)
	path, off, end := recordAt(t, orig, n)
	for cut := off; cut < end; cut++ {
		dir := copyDir(t, orig)
		if err := os.Truncate(filepath.Join(dir, filepath.Base(path)), cut); err != nil {
			t.Fatal(err)
		}
		reopenHolds(t, dir, 1, n-1, fmt.Sprintf("cut at %d of %d..%d", cut, off, end))
	}
}

// A bit flipped anywhere in the last record, a whole one, is not what a
// crash leaves (see tornWrite): it was acknowledged, and Open refuses
// rather than cut it away as a torn write.
func TestFaultCorruptLastRecord(t *testing.T) {
	orig := t.TempDir()
	const n = 30
	writeLogs(t, orig, 0, 1, n, 1)
	path, off, end := recordAt(t, orig, n)
	for at := off; at < end; at++ {
		dir := copyDir(t, orig)
		file := filepath.Join(dir, filepath.Base(path))
		flip(t, file, at)
		wantRefused(t, dir, fmt.Sprintf("%s at offset %d", file, off), fmt.Sprintf("byte %d of %d..%d flipped", at, off, end))
	}
}

// wantRefused checks that Open refuses dir with an error holding want.
func wantRefused(t *testing.T, dir, want, when string) {
	t.Helper()
	s, err := Open(context.Background(), dir, Options{Logger: quiet()})
	if err == nil {
		last, _ := s.LastIndex()
		s.Close()
		t.Fatalf("%s: open succeeded with last index %d", when, last)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("%s: %v; want an error naming %q", when, err, want)
	}
}

// A power cut that extended the file but did not write its blocks leaves
// zeros: after the last record, or over part of it.
func TestFaultZeroedTail(t *testing.T) {
	orig := t.TempDir()
	const n = 30
	writeLogs(t, orig, 0, 1, n, 1)
	path, off, end := recordAt(t, orig, n)
	for _, tc := range []struct {
		name     string
		from, to int64 // the zeroed bytes
	}{
		{"zeros after the last record", end, end + 4096},
		// The sector holding the last record's start was written again
		// by its write, which was lost: the disk holds the sector as the
		// write before left it, zeros after that write's end.
		{"zeros over the last record", off, end},
		{"zeros over the last record and past the end", off, end + 1000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, orig)
			file := filepath.Join(dir, filepath.Base(path))
			f, err := os.OpenFile(file, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteAt(make([]byte, tc.to-tc.from), tc.from); err != nil {
				t.Fatal(err)
			}
			f.Close()
			// Kept: the records that end before the zeros.
			var last uint64
			for i := uint64(1); i <= n; i++ {
				if _, _, e := recordAt(t, orig, i); e <= tc.from {
					last = i
				}
			}
			if last == 0 || (tc.from < end && last == n) {
				t.Fatalf("zeros %d..%d: keeps %d", tc.from, tc.to, last)
			}
			reopenHolds(t, dir, 1, last, tc.name)
		})
	}
}

// An acknowledged record that went bad, with intact records after it, is
// never cut away: Open names the file and offset.
func TestFaultCorruptEarlierRecord(t *testing.T) {
	cases := []struct {
		name  string
		seg   int64
		batch int
		index uint64 // the record to corrupt
	}{
		{name: "last segment, the record before the last", batch: 1, index: 29},
		{name: "last segment, the first record", batch: 1, index: 1},
		{name: "an earlier batch", batch: 4, index: 22},
		{name: "a sealed segment", seg: 1024, batch: 1, index: 3},
		{name: "a sealed segment's last record", seg: 1024, batch: 1, index: 0}, // found below
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			orig := t.TempDir()
			writeLogs(t, orig, tc.seg, 1, 30, tc.batch)
			index := tc.index
			if index == 0 {
				bases, err := listSegments(osFS{}, orig)
				if err != nil || len(bases) < 3 {
					t.Fatalf("segments %v, %v", bases, err)
				}
				index = bases[1] - 1
			}
			path, off, end := recordAt(t, orig, index)
			for _, at := range []int64{off, off + 3, off + 4, off + frameHeader, off + frameHeader + 9, end - 1} {
				dir := copyDir(t, orig)
				file := filepath.Join(dir, filepath.Base(path))
				flip(t, file, at)
				s, err := Open(context.Background(), dir, Options{Logger: quiet()})
				if err == nil {
					last, _ := s.LastIndex()
					s.Close()
					t.Fatalf("byte %d of index %d's record flipped: open succeeded with last index %d", at, index, last)
				}
				if want := fmt.Sprintf("%s at offset %d", file, off); !strings.Contains(err.Error(), want) {
					t.Fatalf("byte %d flipped: %v; want an error naming %q", at, err, want)
				}
			}
		})
	}
}

// A power cut may keep a later page of the write in flight and lose an
// earlier one: a bad record where a sector reads as zeros, followed only
// by intact records of its own batch, is that write, never acknowledged,
// and is cut off. A bit flipped in the middle of that last batch, with no
// lost sector, is an acknowledged record gone bad: Open refuses.
func TestFaultTornBatch(t *testing.T) {
	orig := t.TempDir()
	writeLogs(t, orig, 0, 1, 20, 5) // the last batch is 16..20
	path, off16, _ := recordAt(t, orig, 16)
	_, _, end := recordAt(t, orig, 20)
	sector := (off16 + sectorSize) &^ (sectorSize - 1)
	if sector+sectorSize >= end {
		t.Fatalf("the last batch %d..%d holds no whole sector", off16, end)
	}
	dir := copyDir(t, orig)
	file := filepath.Join(dir, filepath.Base(path))
	f, err := os.OpenFile(file, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(make([]byte, sectorSize), sector); err != nil {
		t.Fatal(err)
	}
	f.Close()
	keep := uint64(15)
	for i := uint64(16); i <= 20; i++ {
		if _, off, _ := recordAt(t, orig, i); off <= sector {
			keep = i - 1
		}
	}
	reopenHolds(t, dir, 1, keep, "a sector in the middle of the last batch lost")

	// A bit flipped in the middle of the last batch, and in the batch
	// before it: acknowledged records.
	for _, i := range []uint64{18, 13} {
		_, off, _ := recordAt(t, orig, i)
		dir := copyDir(t, orig)
		file := filepath.Join(dir, filepath.Base(path))
		flip(t, file, off+frameHeader+2)
		wantRefused(t, dir, fmt.Sprintf("%s at offset %d", file, off), fmt.Sprintf("a byte of index %d flipped", i))
	}
}

func TestFaultSegments(t *testing.T) {
	orig := t.TempDir()
	writeLogs(t, orig, 1024, 1, 100, 1)
	bases, err := listSegments(osFS{}, orig)
	if err != nil || len(bases) < 4 {
		t.Fatalf("segments %v, %v", bases, err)
	}
	last := bases[len(bases)-1]

	t.Run("a missing middle segment is a gap", func(t *testing.T) {
		dir := copyDir(t, orig)
		os.Remove(filepath.Join(dir, segName(bases[1])))
		_, err := Open(context.Background(), dir, Options{Logger: quiet()})
		if err == nil || !strings.Contains(err.Error(), "gap") {
			t.Fatalf("open = %v; want a gap error", err)
		}
	})
	t.Run("a segment being created is removed", func(t *testing.T) {
		// Its header is written under a temporary name: a crash leaves
		// that file, of any size, which is not part of the log.
		for _, size := range []int{0, 5, segHeaderSize - 1, segHeaderSize} {
			dir := copyDir(t, orig)
			if err := os.WriteFile(filepath.Join(dir, segName(101)+tempSuffix), segHeader(101)[:size], 0o600); err != nil {
				t.Fatal(err)
			}
			reopenHolds(t, dir, 1, 100, fmt.Sprintf("a new segment's temporary file of %d bytes", size))
			if _, err := os.Stat(filepath.Join(dir, segName(101)+tempSuffix)); !os.IsNotExist(err) {
				t.Fatalf("the temporary file is left: %v", err)
			}
		}
	})
	t.Run("a segment without its whole header is damage", func(t *testing.T) {
		// No crash leaves one (see createSegment): the last segment
		// emptied lost acknowledged records, which Open must not drop
		// as a creation cut short.
		for _, size := range []int{0, 5, segHeaderSize - 1, segHeaderSize} {
			dir := copyDir(t, orig)
			file := filepath.Join(dir, segName(last))
			if size == segHeaderSize {
				flip(t, file, 10) // whole but garbled
			}
			if size < segHeaderSize {
				if err := os.Truncate(file, int64(size)); err != nil {
					t.Fatal(err)
				}
			}
			wantRefused(t, dir, file+" at offset 0", fmt.Sprintf("the last segment's header cut to %d bytes", size))
		}
	})
	t.Run("an empty new segment is kept", func(t *testing.T) {
		dir := copyDir(t, orig)
		if err := os.WriteFile(filepath.Join(dir, segName(101)), segHeader(101), 0o600); err != nil {
			t.Fatal(err)
		}
		reopenHolds(t, dir, 1, 100, "an empty new segment")
	})
	t.Run("a sealed segment's bad header", func(t *testing.T) {
		dir := copyDir(t, orig)
		flip(t, filepath.Join(dir, segName(bases[1])), 3)
		_, err := Open(context.Background(), dir, Options{Logger: quiet()})
		if err == nil || !strings.Contains(err.Error(), segName(bases[1])+" at offset 0") {
			t.Fatalf("open = %v; want an error naming the header", err)
		}
	})
	t.Run("the last segment cut to its header", func(t *testing.T) {
		dir := copyDir(t, orig)
		if err := os.Truncate(filepath.Join(dir, segName(last)), segHeaderSize); err != nil {
			t.Fatal(err)
		}
		reopenHolds(t, dir, 1, last-1, "last segment cut to its header")
	})
	t.Run("a compaction cut short", func(t *testing.T) {
		// The head file written, the segments below not yet removed.
		dir := copyDir(t, orig)
		if err := writeHead(osFS{}, dir, head{segBase: bases[2], first: bases[2] + 1}); err != nil {
			t.Fatal(err)
		}
		reopenHolds(t, dir, bases[2]+1, 100, "head file ahead of the segments")
		left, err := listSegments(osFS{}, dir)
		if err != nil || left[0] != bases[2] {
			t.Fatalf("segments after the repair %v, %v; want those below %d gone", left, err, bases[2])
		}
	})
	t.Run("a compaction cut short after removing some segments", func(t *testing.T) {
		// The head file written, then killed while removing the segments
		// below it: one of them gone, an earlier one left — a gap below
		// the head, not in the log.
		dir := copyDir(t, orig)
		if err := writeHead(osFS{}, dir, head{segBase: bases[2], first: bases[2]}); err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(filepath.Join(dir, segName(bases[1]))); err != nil {
			t.Fatal(err)
		}
		reopenHolds(t, dir, bases[2], 100, "segments below the head partly removed")
		left, err := listSegments(osFS{}, dir)
		if err != nil || left[0] != bases[2] {
			t.Fatalf("segments after the repair %v, %v; want those below %d gone", left, err, bases[2])
		}
	})
	t.Run("a head naming a missing segment", func(t *testing.T) {
		dir := copyDir(t, orig)
		if err := writeHead(osFS{}, dir, head{segBase: 7777, first: 7777}); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(context.Background(), dir, Options{Logger: quiet()}); err == nil || !strings.Contains(err.Error(), headFile) {
			t.Fatalf("open = %v; want an error naming the head file", err)
		}
	})
}

func TestStableFaults(t *testing.T) {
	orig := t.TempDir()
	s := openT(t, orig, 0)
	for term := uint64(1); term <= 3; term++ {
		if err := s.SetUint64([]byte("CurrentTerm"), term); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	path := filepath.Join(orig, stableName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rec := int64(len(stableRecord(nil, []byte("CurrentTerm"), make([]byte, 8))))
	size := int64(len(b))
	term := func(dir string) (uint64, error) {
		s, err := Open(context.Background(), dir, Options{Logger: quiet()})
		if err != nil {
			return 0, err
		}
		defer s.Close()
		return s.GetUint64([]byte("CurrentTerm"))
	}
	// A Set cut short at the end was never acknowledged; a whole one
	// garbled was, and may be the vote Raft relies on: an error.
	for at := size - rec; at < size; at++ {
		dir := copyDir(t, orig)
		if err := os.Truncate(filepath.Join(dir, stableName), at); err != nil {
			t.Fatal(err)
		}
		if v, err := term(dir); err != nil || v != 2 {
			t.Fatalf("cut at %d: term %d, %v; want 2", at, v, err)
		}
		dir = copyDir(t, orig)
		flip(t, filepath.Join(dir, stableName), at)
		if v, err := term(dir); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s at offset %d", filepath.Join(dir, stableName), size-rec)) {
			t.Fatalf("byte %d flipped: term %d, %v; want an error naming the record", at, v, err)
		}
	}
	// Zeros after the last Set: the file was extended, not written.
	dir := copyDir(t, orig)
	if f, err := os.OpenFile(filepath.Join(dir, stableName), os.O_WRONLY|os.O_APPEND, 0); err != nil {
		t.Fatal(err)
	} else {
		f.Write(make([]byte, 600))
		f.Close()
	}
	if v, err := term(dir); err != nil || v != 3 {
		t.Fatalf("zeros after the last Set: term %d, %v; want 3", v, err)
	}
	// An acknowledged one garbled, with a later one intact, is an error.
	dir = copyDir(t, orig)
	flip(t, filepath.Join(dir, stableName), size-2*rec+frameHeader+3)
	if _, err := term(dir); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("%s at offset %d", filepath.Join(dir, stableName), size-2*rec)) {
		t.Fatalf("open = %v; want an error naming the record", err)
	}

	// Many Sets: the file is rewritten, not grown without end.
	s = openT(t, orig, 0)
	for i := range 5000 {
		if err := s.Set([]byte("LastVoteCand"), []byte(fmt.Sprintf("node-%d", i))); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	if fi, err := os.Stat(path); err != nil || fi.Size() > stableCompactAt+100 {
		t.Fatalf("stable file after 5000 Sets: %v, %v", fi.Size(), err)
	}
	s = openT(t, orig, 0)
	defer s.Close()
	if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-4999" {
		t.Fatalf("LastVoteCand = %q, %v after compactions", v, err)
	}
	if v, err := s.GetUint64([]byte("CurrentTerm")); err != nil || v != 3 {
		t.Fatalf("CurrentTerm = %d, %v after compactions", v, err)
	}
}

// Files that no crash leaves, only damage: Open refuses them, naming the
// file, rather than guess.
func TestFaultDamagedFiles(t *testing.T) {
	orig := t.TempDir()
	writeLogs(t, orig, 1024, 1, 100, 1)
	s := openT(t, orig, 1024)
	if err := s.DeleteRange(1, 20); err != nil { // a head file
		t.Fatal(err)
	}
	s.Close()
	bases, err := listSegments(osFS{}, orig)
	if err != nil || len(bases) < 4 {
		t.Fatalf("segments %v, %v", bases, err)
	}
	last := bases[len(bases)-1]
	rename := func(dir string, from, to uint64) {
		if err := os.Rename(filepath.Join(dir, segName(from)), filepath.Join(dir, segName(to))); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		damage func(dir string)
		want   string // in the error
	}{
		{"the head file garbled", func(dir string) { flip(t, filepath.Join(dir, headFile), 3) }, headFile + ": checksum mismatch"},
		{"the head file empty", func(dir string) { os.Truncate(filepath.Join(dir, headFile), 0) }, headFile + ": checksum mismatch"},
		{"the stable file empty", func(dir string) { os.Truncate(filepath.Join(dir, stableName), 0) }, stableName + " at offset 0"},
		{"the stable file missing", func(dir string) { os.Remove(filepath.Join(dir, stableName)) }, stableName + " is missing"},
		{"a sealed segment empty", func(dir string) { os.Truncate(filepath.Join(dir, segName(bases[2])), 0) }, segName(bases[2]) + " at offset 0"},
		{"the last segment renamed", func(dir string) { rename(dir, last, last+1) }, segName(last+1) + " at offset 0"},
		{"a sealed segment renamed", func(dir string) { rename(dir, bases[2], bases[2]+1) }, segName(bases[2]+1) + " at offset 0"},
		{"a segment whose first record is not its name's", func(dir string) {
			// A header that matches the name, records that do not.
			path := filepath.Join(dir, segName(last))
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			os.Remove(path)
			b = append(segHeader(last+1), b[segHeaderSize:]...)
			if err := os.WriteFile(filepath.Join(dir, segName(last+1)), b, 0o600); err != nil {
				t.Fatal(err)
			}
		}, fmt.Sprintf("%s at offset %d: record of index %d where %d belongs", segName(last+1), segHeaderSize, last, last+1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t, orig)
			tc.damage(dir)
			_, err := Open(context.Background(), dir, Options{SegmentSize: 1024, Logger: quiet()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("open = %v; want an error holding %q", err, tc.want)
			}
		})
	}
}

// A log whose only segment, the one the head file names, was cut back to
// its header is an empty log: the head file is reset with it, so that it
// does not apply to a new segment that takes the same name.
func TestFaultHeadSegmentCutToHeader(t *testing.T) {
	dir := t.TempDir()
	writeLogs(t, dir, 0, 1, 20, 1)
	s := openT(t, dir, 0)
	if err := s.DeleteRange(1, 10); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Truncate(filepath.Join(dir, segName(1)), segHeaderSize); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, 0)
	m := newModel()
	check(t, s, m, "the head's segment cut to its header")
	if err := s.StoreLog(mkLog(1, 0)); err != nil { // a segment of that name
		t.Fatal(err)
	}
	s.Close()
	m.store(mkLog(1, 0))
	reopenHolds(t, dir, 1, 1, "a new log in a segment of the same name")
}
