package raftlog

import (
	"bufio"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
)

// A segment file starts with a header: the magic, a format version, the
// index of its first record (the same as in its name) and a CRC32-C of
// those 16 bytes.
const (
	segMagic      = "LGRLOG"
	segVersion    = 1
	segHeaderSize = 6 + 2 + 8 + 4
)

// segment is one segment file, open for reading and, if it is the last,
// for appending.
type segment struct {
	base uint64
	path string
	f    file
	offs []int64 // offs[i] is the offset of the record of index base+i
	size int64   // the end of its last record
}

// lastIndex is the index of its last record; it must hold one.
func (g *segment) lastIndex() uint64 { return g.base + uint64(len(g.offs)) - 1 }

func segHeader(base uint64) []byte {
	h := make([]byte, 0, segHeaderSize)
	h = append(h, segMagic...)
	h = binary.LittleEndian.AppendUint16(h, segVersion)
	h = binary.LittleEndian.AppendUint64(h, base)
	return binary.LittleEndian.AppendUint32(h, crc32.Checksum(h, castagnoli))
}

// createSegment creates the segment for base with its header, and syncs
// it and its directory entry before any record goes in it. The header is
// written and synced under a temporary name, renamed into place: a file
// with a segment's name always has its whole header, so a segment found
// empty or with a bad header is damage, never a creation cut short (Open
// removes the temporary file of one).
func createSegment(fsys fileSys, dir string, base uint64) (*segment, error) {
	path := filepath.Join(dir, segName(base))
	tmp := path + tempSuffix
	f, err := fsys.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	_, err = f.WriteAt(segHeader(base), 0)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = fsys.Rename(tmp, path)
	}
	if err != nil {
		// Nothing refers to it: the call is refused, the store unchanged.
		f.Close()
		fsys.Remove(tmp)
		return nil, fmt.Errorf("raftlog: create %s: %w", path, err)
	}
	if err := syncDir(fsys, dir); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w: %w", errUnsynced, err)
	}
	return &segment{base: base, path: path, f: f, size: segHeaderSize}, nil
}

// openSegment opens and checks a segment. The last one may end in a torn
// write, which it truncates away.
func openSegment(fsys fileSys, dir string, base uint64, last bool, log *slog.Logger) (*segment, error) {
	path := filepath.Join(dir, segName(base))
	f, err := fsys.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	seg := &segment{base: base, path: path, f: f}
	if err := seg.scan(last, log); err != nil {
		f.Close()
		return nil, err
	}
	return seg, nil
}

// scan reads every record, filling offs and size.
func (g *segment) scan(last bool, log *slog.Logger) error {
	size, err := g.f.Size()
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	hdr := make([]byte, segHeaderSize)
	if _, err := g.f.ReadAt(hdr, 0); err != nil || string(hdr) != string(segHeader(g.base)) {
		return fmt.Errorf("raftlog: %s at offset 0: not the header of a segment from index %d", g.path, g.base)
	}
	r := bufio.NewReaderSize(io.NewSectionReader(g.f, segHeaderSize, size-segHeaderSize), 1<<20)
	off := int64(segHeaderSize)
	expect := g.base
	var rec []byte
	for off < size {
		bad := func() error {
			if !last {
				return fmt.Errorf("raftlog: %s at offset %d (index %d): corrupt record in a sealed segment", g.path, off, expect)
			}
			return g.cutTail(off, size, expect, log)
		}
		if size-off < recordMin {
			return bad()
		}
		rec = append(rec[:0], make([]byte, frameHeader)...)
		if _, err := io.ReadFull(r, rec); err != nil {
			return fmt.Errorf("raftlog: read %s at offset %d: %w", g.path, off, err)
		}
		n, ok := frameLen(rec)
		if !ok || int64(n) > size-off-frameHeader {
			return bad()
		}
		rec = append(rec, make([]byte, n)...)
		if _, err := io.ReadFull(r, rec[frameHeader:]); err != nil {
			return fmt.Errorf("raftlog: read %s at offset %d: %w", g.path, off, err)
		}
		if !checkRecord(rec) {
			return bad()
		}
		if idx, _ := recordIndex(rec); idx != expect {
			return fmt.Errorf("raftlog: %s at offset %d: record of index %d where %d belongs", g.path, off, idx, expect)
		}
		g.offs = append(g.offs, off)
		off += int64(len(rec))
		expect++
	}
	g.size = size
	return nil
}

// cutTail handles a bad record at off in the last segment, where the
// record of index expect belongs. Only the batch in flight at a crash may
// be cut off, and only what a crash leaves (see tornWrite): a file that
// ends inside it, or sectors of it that read as zeros. After a power cut
// the disk may have kept a later page of that write but not an earlier
// one, so intact records of the same batch may follow a torn one. An
// intact record of a later batch means an acknowledged record went bad,
// and so does a whole record whose checksum fails with no lost sector to
// explain it: both are errors, never cut.
func (g *segment) cutTail(off, size int64, expect uint64, log *slog.Logger) error {
	rest := make([]byte, size-off)
	if _, err := g.f.ReadAt(rest, off); err != nil {
		return fmt.Errorf("raftlog: read %s at offset %d: %w", g.path, off, err)
	}
	if at, ok := laterBatch(rest, expect); ok {
		return fmt.Errorf("raftlog: %s at offset %d (index %d): corrupt record followed by intact records (from offset %d)",
			g.path, off, expect, off+int64(at))
	}
	if torn, why := tornLogWrite(rest, off, expect); !torn {
		return fmt.Errorf("raftlog: %s at offset %d (index %d): corrupt record in the last batch, not a torn write: %s",
			g.path, off, expect, why)
	}
	log.Warn("raftlog: cutting off a torn write at the end of the log", "file", g.path, "offset", off, "index", expect, "bytes", len(rest))
	if err := g.f.Truncate(off); err != nil {
		return fmt.Errorf("raftlog: truncate %s: %w", g.path, err)
	}
	if err := g.f.Sync(); err != nil {
		return fmt.Errorf("raftlog: sync %s: %w", g.path, err)
	}
	g.size = off
	return nil
}

// tornLogWrite is tornWrite for the log's records.
func tornLogWrite(rest []byte, off int64, expect uint64) (bool, string) {
	return tornWrite(rest, off, recordMin, func(p int) bool {
		_, ok := intactRecordAt(rest, p, expect)
		return ok
	})
}

// intactRecordAt returns the intact record at rest[p:], if one starts
// there whose index could follow expect's.
func intactRecordAt(rest []byte, p int, expect uint64) ([]byte, bool) {
	n, ok := frameLen(rest[p:])
	if !ok || p+frameHeader+n > len(rest) {
		return nil, false
	}
	rec := rest[p : p+frameHeader+n]
	// Cheap filters before the CRC: a plausible index.
	idx := binary.LittleEndian.Uint64(rec[frameHeader:])
	if idx <= expect || idx > expect+uint64(len(rest)/recordMin) || !checkRecord(rec) {
		return nil, false
	}
	return rec, true
}

// laterBatch looks in rest, the bytes from a bad record where index
// expect belongs, for an intact record written by a later StoreLogs call
// than the one that wrote expect, and returns its position.
func laterBatch(rest []byte, expect uint64) (int, bool) {
	for p := 1; p+recordMin <= len(rest); p++ {
		rec, ok := intactRecordAt(rest, p, expect)
		if !ok {
			continue
		}
		idx, batch := recordIndex(rec)
		if idx-uint64(batch) > expect {
			return p, true
		}
		p += len(rec) - 1
	}
	return 0, false
}
