package raftlog

import (
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// What a crash leaves of a write that was in flight, on the file systems
// the store runs on (ext4 with data=ordered, XFS): a file that ends
// inside the write (kill -9 stops a write between pages; a power cut may
// not have extended the size), or blocks that were never written and
// read as zeros (the size was extended, the data not written). Neither
// flips bits inside a record that is whole: that is corruption of what
// was acknowledged, which Open refuses rather than cut away.
const (
	// sectorSize is the smallest unit a device loses in a power cut.
	sectorSize = 512
	// zeroRunMin is the shortest run of zeros, from a sector's start (or
	// the bad record's) to the sector's end or the end of the file, taken
	// for lost sectors: a record legitimately ends in up to 12 zero bytes
	// (zero nanoseconds and empty data and extensions).
	zeroRunMin = 32
)

// tornWrite tells whether rest, the bytes of a file from its first
// record that does not check out to the end of the file, is what a write
// cut short by a crash leaves. fileOff is rest's offset in the file (for
// sector alignment), minRecord the smallest whole record of the format,
// and intactAt reports whether an intact record of the file's format
// starts at rest[p:]. Both the log's and the stable file's records are
// framed alike: a length and a CRC32-C of the length and the payload.
// When it says no, why says what shows the record was whole.
func tornWrite(rest []byte, fileOff int64, minRecord int, intactAt func(p int) bool) (torn bool, why string) {
	if len(rest) < minRecord {
		return true, "" // the file ends before any record could
	}
	n := int64(binary.LittleEndian.Uint32(rest))
	fits := frameHeader+n <= int64(len(rest))
	extent := int64(len(rest))
	if fits {
		extent = frameHeader + n
	}
	if zeroSectorIn(rest, fileOff, extent) {
		return true, ""
	}
	if fits {
		return false, fmt.Sprintf("a whole record of %d bytes whose checksum fails", frameHeader+n)
	}
	// The length runs past the end of the file: the file was cut inside
	// the record, or the length itself went bad, which an intact record
	// after it, or another length that makes its checksum match, shows.
	for p := 1; p+minRecord <= len(rest); p++ {
		if intactAt(p) {
			return false, fmt.Sprintf("its length runs past the end of the file, but an intact record follows at offset %d", fileOff+int64(p))
		}
	}
	cands := []uint32{uint32(len(rest) - frameHeader)}
	for b := range 32 {
		cands = append(cands, uint32(n)^1<<b)
	}
	for _, c := range cands {
		if crcWithLength(rest, c) {
			return false, fmt.Sprintf("its length field reads %d but the record checks out with %d", n, c)
		}
	}
	return true, ""
}

// zeroSectorIn reports whether a sector overlapping rest[:extent] reads
// as zeros from where rest starts in it to its end (or the file's), over
// at least zeroRunMin bytes: blocks a crash left unwritten.
func zeroSectorIn(rest []byte, fileOff, extent int64) bool {
	end := fileOff + int64(len(rest))
	for s := fileOff &^ (sectorSize - 1); s < fileOff+extent; s += sectorSize {
		lo, hi := max(s, fileOff)-fileOff, min(s+sectorSize, end)-fileOff
		if hi-lo >= zeroRunMin && allZero(rest[lo:hi]) {
			return true
		}
	}
	return false
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// crcWithLength reports whether rec's CRC matches for a payload of n
// bytes, whatever its length field says.
func crcWithLength(rec []byte, n uint32) bool {
	if uint64(n) > uint64(len(rec)-frameHeader) {
		return false
	}
	var l [4]byte
	binary.LittleEndian.PutUint32(l[:], n)
	crc := crc32.Update(0, castagnoli, l[:])
	crc = crc32.Update(crc, castagnoli, rec[frameHeader:frameHeader+int(n)])
	return crc == binary.LittleEndian.Uint32(rec[4:])
}
