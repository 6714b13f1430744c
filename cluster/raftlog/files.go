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

const tempSuffix = ".tmp"

// writeFileAtomic replaces dir/name by data, framed with a CRC32-C: a
// temporary file written and synced, renamed over name, the directory
// synced. A crash leaves the old file or the new one.
func writeFileAtomic(fsys fileSys, dir, name string, data []byte) error {
	if err := stageFile(fsys, dir, name, data); err != nil {
		return err
	}
	return commitFile(fsys, dir, name)
}

// stageFile is writeFileAtomic's first half, the one that may run out of
// space: the temporary file written and synced. It changes nothing a
// reader of dir sees.
func stageFile(fsys fileSys, dir, name string, data []byte) error {
	tmp := filepath.Join(dir, name) + tempSuffix
	f, err := fsys.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	framed := binary.LittleEndian.AppendUint32(append([]byte(nil), data...), crc32.Checksum(data, castagnoli))
	_, err = f.WriteAt(framed, 0)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		fsys.Remove(tmp)
		return fmt.Errorf("raftlog: write %s: %w", tmp, err)
	}
	return nil
}

// commitFile is writeFileAtomic's second half: the staged file renamed
// into place and the directory synced.
func commitFile(fsys fileSys, dir, name string) error {
	path := filepath.Join(dir, name)
	tmp := path + tempSuffix
	if err := fsys.Rename(tmp, path); err != nil {
		fsys.Remove(tmp)
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := syncDir(fsys, dir); err != nil {
		return fmt.Errorf("%w: %w", errUnsynced, err)
	}
	return nil
}

// readFileChecked reads a file written by writeFileAtomic; ok is false if
// there is none.
func readFileChecked(fsys fileSys, dir, name string) (data []byte, ok bool, err error) {
	path := filepath.Join(dir, name)
	b, err := readFile(fsys, path)
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
func removeTemps(fsys fileSys, dir string) error {
	names, err := fsys.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	for _, name := range names {
		if strings.HasSuffix(name, tempSuffix) {
			if err := fsys.Remove(filepath.Join(dir, name)); err != nil {
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

func writeHead(fsys fileSys, dir string, h head) error {
	return writeFileAtomic(fsys, dir, headFile, h.encode())
}

func (h head) encode() []byte {
	b := binary.LittleEndian.AppendUint64(nil, h.segBase)
	return binary.LittleEndian.AppendUint64(b, h.first)
}

func loadHead(fsys fileSys, dir string) (head, bool, error) {
	b, ok, err := readFileChecked(fsys, dir, headFile)
	if err != nil || !ok {
		return head{}, false, err
	}
	if len(b) != 16 {
		return head{}, false, fmt.Errorf("raftlog: %s: %d bytes, not 16", filepath.Join(dir, headFile), len(b))
	}
	h := head{segBase: binary.LittleEndian.Uint64(b), first: binary.LittleEndian.Uint64(b[8:])}
	return h, h.segBase != 0, nil
}
