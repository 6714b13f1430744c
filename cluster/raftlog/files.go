package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"strings"
)

// syncDir makes dir's entries (created, renamed, removed files) durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("raftlog: sync %s: %w", dir, err)
	}
	return nil
}

const tempSuffix = ".tmp"

// writeFileAtomic replaces dir/name by data, framed with a CRC32-C: a
// temporary file written and synced, renamed over name, the directory
// synced. A crash leaves the old file or the new one.
func writeFileAtomic(dir, name string, data []byte) error {
	path := filepath.Join(dir, name)
	tmp := path + tempSuffix
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	framed := binary.LittleEndian.AppendUint32(append([]byte(nil), data...), crc32.Checksum(data, castagnoli))
	_, err = f.Write(framed)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("raftlog: write %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("%w: %w", errUnsynced, err)
	}
	return nil
}

// readFileChecked reads a file written by writeFileAtomic; ok is false if
// there is none.
func readFileChecked(dir, name string) (data []byte, ok bool, err error) {
	path := filepath.Join(dir, name)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("raftlog: %w", err)
	}
	if len(b) < 4 || crc32.Checksum(b[:len(b)-4], castagnoli) != binary.LittleEndian.Uint32(b[len(b)-4:]) {
		return nil, false, fmt.Errorf("raftlog: %s: checksum mismatch", path)
	}
	return b[:len(b)-4], true, nil
}

// removeTemps removes what an interrupted writeFileAtomic left.
func removeTemps(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), tempSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("raftlog: %w", err)
			}
		}
	}
	return nil
}

const headFile = "head"

// head is where the log starts after a compaction that kept part of a
// segment: the segment's base and the first index kept. Zero: no head,
// the first segment's base is the first index.
type head struct{ segBase, first uint64 }

func writeHead(dir string, h head) error {
	b := binary.LittleEndian.AppendUint64(nil, h.segBase)
	b = binary.LittleEndian.AppendUint64(b, h.first)
	return writeFileAtomic(dir, headFile, b)
}

func loadHead(dir string) (head, bool, error) {
	b, ok, err := readFileChecked(dir, headFile)
	if err != nil || !ok {
		return head{}, false, err
	}
	if len(b) != 16 {
		return head{}, false, fmt.Errorf("raftlog: %s: %d bytes, not 16", filepath.Join(dir, headFile), len(b))
	}
	h := head{segBase: binary.LittleEndian.Uint64(b), first: binary.LittleEndian.Uint64(b[8:])}
	return h, h.segBase != 0, nil
}
