package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"

	"github.com/hashicorp/raft"
)

// A record is one raft.Log in a segment:
//
//	length  uint32  bytes of the payload
//	crc     uint32  CRC32-C of the length's 4 bytes and the payload
//	payload:
//	  index      uint64
//	  term       uint64
//	  batch      uint32  index - the index of the first log of its StoreLogs call
//	  type       uint8
//	  atSec      int64   AppendedAt, Unix seconds
//	  atNsec     uint32
//	  dataLen    uint32, data
//	  extLen     uint32, extensions
//
// All integers are little-endian. The CRC covers the length, so a flipped
// length byte is caught like any other. batch tells, after a crash, which
// records one write carried: a torn write is one batch, and only the batch
// in flight may be cut off (see cutTail).
const (
	frameHeader = 8
	payloadMin  = 8 + 8 + 4 + 1 + 8 + 4 + 4 + 4
	recordMin   = frameHeader + payloadMin
	// maxPayload bounds a record's length field, so that a corrupt length
	// cannot make the decoder allocate gigabytes.
	maxPayload = 1 << 30
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// errBadRecord is a record whose frame does not check out: short, too
// long, or a CRC mismatch.
var errBadRecord = errors.New("bad record")

// recordSize is the bytes l takes in a segment.
func recordSize(l *raft.Log) int {
	return recordMin + len(l.Data) + len(l.Extensions)
}

// appendRecord appends l's record to buf; batch is l.Index minus the
// index of the first log written with it.
func appendRecord(buf []byte, l *raft.Log, batch uint32) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, frameHeader)...)
	buf = binary.LittleEndian.AppendUint64(buf, l.Index)
	buf = binary.LittleEndian.AppendUint64(buf, l.Term)
	buf = binary.LittleEndian.AppendUint32(buf, batch)
	buf = append(buf, byte(l.Type))
	var sec int64
	var nsec uint32
	if !l.AppendedAt.IsZero() {
		sec, nsec = l.AppendedAt.Unix(), uint32(l.AppendedAt.Nanosecond())
	} else {
		sec = zeroTimeSec
	}
	buf = binary.LittleEndian.AppendUint64(buf, uint64(sec))
	buf = binary.LittleEndian.AppendUint32(buf, nsec)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Data)))
	buf = append(buf, l.Data...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(l.Extensions)))
	buf = append(buf, l.Extensions...)
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(buf)-start-frameHeader))
	crc := crc32.Update(0, castagnoli, buf[start:start+4])
	crc = crc32.Update(crc, castagnoli, buf[start+frameHeader:])
	binary.LittleEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// zeroTimeSec is time.Time{}'s Unix seconds: a log without AppendedAt
// reads back as the zero time, not as 1970.
var zeroTimeSec = time.Time{}.Unix()

// frameLen reads the payload length from a record's first bytes; ok is
// false when it cannot be a record's.
func frameLen(hdr []byte) (n int, ok bool) {
	if len(hdr) < frameHeader {
		return 0, false
	}
	v := binary.LittleEndian.Uint32(hdr)
	if v < payloadMin || v > maxPayload {
		return 0, false
	}
	return int(v), true
}

// checkRecord reports whether rec (frame header and payload, exactly) has
// a matching CRC.
func checkRecord(rec []byte) bool {
	n, ok := frameLen(rec)
	if !ok || len(rec) != frameHeader+n {
		return false
	}
	crc := crc32.Update(0, castagnoli, rec[:4])
	crc = crc32.Update(crc, castagnoli, rec[frameHeader:])
	return crc == binary.LittleEndian.Uint32(rec[4:])
}

// recordIndex reads the index and batch offset of a checked record.
func recordIndex(rec []byte) (index uint64, batch uint32) {
	p := rec[frameHeader:]
	return binary.LittleEndian.Uint64(p), binary.LittleEndian.Uint32(p[16:])
}

// decodeRecord checks rec (one whole record) and decodes it into l. Data
// and Extensions alias rec.
func decodeRecord(rec []byte, l *raft.Log) error {
	if !checkRecord(rec) {
		return errBadRecord
	}
	p := rec[frameHeader:]
	idx := binary.LittleEndian.Uint64(p)
	term := binary.LittleEndian.Uint64(p[8:])
	typ := raft.LogType(p[20])
	sec := int64(binary.LittleEndian.Uint64(p[21:]))
	nsec := binary.LittleEndian.Uint32(p[29:])
	if nsec >= 1e9 {
		return fmt.Errorf("%w: nanoseconds %d", errBadRecord, nsec)
	}
	p = p[33:]
	data, p, err := lenPrefixed(p)
	if err != nil {
		return err
	}
	ext, p, err := lenPrefixed(p)
	if err != nil {
		return err
	}
	if len(p) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errBadRecord, len(p))
	}
	*l = raft.Log{Index: idx, Term: term, Type: typ, Data: data, Extensions: ext}
	if sec != zeroTimeSec || nsec != 0 {
		l.AppendedAt = time.Unix(sec, int64(nsec)).UTC()
	}
	return nil
}

func lenPrefixed(p []byte) (field, rest []byte, err error) {
	if len(p) < 4 {
		return nil, nil, fmt.Errorf("%w: short field", errBadRecord)
	}
	n := binary.LittleEndian.Uint32(p)
	p = p[4:]
	if uint64(n) > uint64(len(p)) {
		return nil, nil, fmt.Errorf("%w: field of %d bytes in %d", errBadRecord, n, len(p))
	}
	if n == 0 {
		return nil, p, nil
	}
	return p[:n:n], p[n:], nil
}
