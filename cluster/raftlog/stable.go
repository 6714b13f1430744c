package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

const (
	stableName  = "stable"
	stableMagic = "LGRSTB01"
	// stableCompactAt is the size past which Set rewrites the file with
	// one record per key: terms and votes change once per election.
	stableCompactAt = 64 << 10
)

// ErrKeyNotFound is what Get and GetUint64 return for a key never set.
// Raft tells it apart by its text, "not found" (as raft-boltdb's).
var ErrKeyNotFound = errors.New("not found")

// stableFile is the StableStore: a file of appended records, framed as
// the log's are (length, CRC32-C), each a key and its new value; the
// last record of a key wins. A Set is one write and one fdatasync, like
// an append to the log (an election sets the term and the vote).
type stableFile struct {
	mu     sync.Mutex
	fs     fileSys
	dir    string
	path   string
	f      file
	size   int64
	keys   map[string][]byte
	failed error
}

func stableRecord(buf []byte, key, val []byte) []byte {
	start := len(buf)
	buf = append(buf, make([]byte, frameHeader)...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(len(key)))
	buf = append(buf, key...)
	buf = append(buf, val...)
	binary.LittleEndian.PutUint32(buf[start:], uint32(len(buf)-start-frameHeader))
	crc := crc32.Update(0, castagnoli, buf[start:start+4])
	crc = crc32.Update(crc, castagnoli, buf[start+frameHeader:])
	binary.LittleEndian.PutUint32(buf[start+4:], crc)
	return buf
}

// parseStable reads the records of b (after the magic) into keys; it
// returns the end of the last intact record, and whether a bad record
// there is corruption rather than a torn Set: an intact record follows
// it, or it is whole (see tornWrite).
func parseStable(b []byte, keys map[string][]byte) (end int, corrupt bool) {
	p := len(stableMagic)
	for p < len(b) {
		rec, ok := stableAt(b, p)
		if !ok {
			for q := p + 1; q < len(b); q++ {
				if _, ok := stableAt(b, q); ok {
					return p, true
				}
			}
			// Only a Set cut short by a crash is cut off: a whole
			// record gone bad may be the vote Raft relies on.
			torn, _ := tornWrite(b[p:], int64(p), frameHeader+4, func(q int) bool {
				_, ok := stableAt(b, p+q)
				return ok
			})
			return p, !torn
		}
		kl := binary.LittleEndian.Uint32(rec)
		keys[string(rec[4:4+kl])] = append([]byte{}, rec[4+kl:]...)
		p += frameHeader + len(rec)
	}
	return p, false
}

// stableAt returns the payload of the intact record at b[p:].
func stableAt(b []byte, p int) ([]byte, bool) {
	if len(b)-p < frameHeader+4 {
		return nil, false
	}
	n := int(binary.LittleEndian.Uint32(b[p:]))
	if n < 4 || n > len(b)-p-frameHeader {
		return nil, false
	}
	crc := crc32.Update(0, castagnoli, b[p:p+4])
	crc = crc32.Update(crc, castagnoli, b[p+frameHeader:p+frameHeader+n])
	rec := b[p+frameHeader : p+frameHeader+n]
	if crc != binary.LittleEndian.Uint32(b[p+4:]) || uint64(binary.LittleEndian.Uint32(rec)) > uint64(n-4) {
		return nil, false
	}
	return rec, true
}

// loadStable opens the stable file, creating it, and cuts off a torn Set
// at its end.
func loadStable(fsys fileSys, dir string) (*stableFile, error) {
	st := &stableFile{fs: fsys, dir: dir, path: filepath.Join(dir, stableName), keys: map[string][]byte{}}
	b, err := readFile(fsys, st.path)
	if errors.Is(err, os.ErrNotExist) {
		// Open creates the stable file, synced, before any segment: a log
		// without one lost it, and with it the term and the vote, which
		// a fresh one would let this node cast twice.
		names, err := fsys.ReadDir(dir)
		if err != nil {
			return nil, fmt.Errorf("raftlog: %w", err)
		}
		for _, name := range names {
			if strings.HasSuffix(name, ".seg") || name == headFile {
				return nil, fmt.Errorf("raftlog: %s is missing, but %s holds a log (%s)", st.path, dir, name)
			}
		}
		return st, st.rewrite()
	}
	if err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	if len(b) < len(stableMagic) || string(b[:len(stableMagic)]) != stableMagic {
		return nil, fmt.Errorf("raftlog: %s at offset 0: not a stable store", st.path)
	}
	end, corrupt := parseStable(b, st.keys)
	if corrupt {
		return nil, fmt.Errorf("raftlog: %s at offset %d: corrupt record, not a Set cut short by a crash", st.path, end)
	}
	if st.f, err = fsys.OpenFile(st.path, os.O_RDWR, 0); err != nil {
		return nil, fmt.Errorf("raftlog: %w", err)
	}
	st.size = int64(end)
	if end < len(b) {
		// A Set cut short: never acknowledged.
		if err := st.f.Truncate(st.size); err != nil {
			st.f.Close()
			return nil, fmt.Errorf("raftlog: truncate %s: %w", st.path, err)
		}
		if err := st.f.Sync(); err != nil {
			st.f.Close()
			return nil, fmt.Errorf("raftlog: sync %s: %w", st.path, err)
		}
	}
	return st, nil
}

// rewrite replaces the file by one holding one record per key, through
// a temporary file renamed over it (the directory synced), and reopens
// it for appending.
func (st *stableFile) rewrite() error {
	names := make([]string, 0, len(st.keys))
	for k := range st.keys {
		names = append(names, k)
	}
	sort.Strings(names)
	b := []byte(stableMagic)
	for _, k := range names {
		b = stableRecord(b, []byte(k), st.keys[k])
	}
	tmp := st.path + tempSuffix
	f, err := st.fs.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if _, err := f.WriteAt(b, 0); err != nil {
		f.Close()
		return fmt.Errorf("raftlog: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("raftlog: sync %s: %w", tmp, err)
	}
	if err := st.fs.Rename(tmp, st.path); err != nil {
		f.Close()
		return fmt.Errorf("raftlog: %w", err)
	}
	if err := syncDir(st.fs, st.dir); err != nil {
		f.Close()
		return err
	}
	if st.f != nil {
		st.f.Close()
	}
	st.f, st.size = f, int64(len(b))
	return nil
}

func (st *stableFile) close() error {
	if st.f == nil {
		return nil
	}
	err := st.f.Close()
	st.f = nil
	return err
}

// Set stores val under key, durably, before it returns.
func (s *Store) Set(key, val []byte) error {
	st := s.stable
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.failed != nil {
		return st.failed
	}
	if st.f == nil {
		return errClosed
	}
	if st.size > stableCompactAt {
		if err := st.rewrite(); err != nil {
			return err
		}
	}
	rec := stableRecord(nil, key, val)
	if _, err := st.f.WriteAt(rec, st.size); err != nil {
		// As in StoreLogs: the refused Set must not come back.
		if terr := st.f.Truncate(st.size); terr != nil {
			st.failed = fmt.Errorf("raftlog: write %s: %w (and truncating it: %v)", st.path, err, terr)
			return st.failed
		}
		if serr := st.f.Datasync(); serr != nil {
			st.failed = fmt.Errorf("raftlog: write %s: %w (and syncing its truncation: %v)", st.path, err, serr)
			return st.failed
		}
		return fmt.Errorf("raftlog: write %s: %w", st.path, err)
	}
	if err := st.f.Datasync(); err != nil {
		// What the disk holds is unknown until the store is reopened.
		st.failed = fmt.Errorf("raftlog: sync %s: %w", st.path, err)
		return st.failed
	}
	st.size += int64(len(rec))
	st.keys[string(key)] = append([]byte{}, val...)
	return nil
}

// Get returns the value of key, or ErrKeyNotFound.
func (s *Store) Get(key []byte) ([]byte, error) {
	st := s.stable
	st.mu.Lock()
	defer st.mu.Unlock()
	v, ok := st.keys[string(key)]
	if !ok {
		return nil, ErrKeyNotFound
	}
	return append([]byte{}, v...), nil
}

// SetUint64 stores val under key, big-endian as raft-boltdb does, so that
// values copied from a bolt log read back alike.
func (s *Store) SetUint64(key []byte, val uint64) error {
	return s.Set(key, binary.BigEndian.AppendUint64(nil, val))
}

// GetUint64 returns the value of key, or 0 and ErrKeyNotFound.
func (s *Store) GetUint64(key []byte) (uint64, error) {
	v, err := s.Get(key)
	if err != nil {
		return 0, err
	}
	if len(v) != 8 {
		return 0, fmt.Errorf("raftlog: key %q holds %d bytes, not a uint64", key, len(v))
	}
	return binary.BigEndian.Uint64(v), nil
}
