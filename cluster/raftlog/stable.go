package raftlog

import (
	"encoding/binary"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
)

const stableName = "stable"

// ErrKeyNotFound is what Get and GetUint64 return for a key never set.
// Raft tells it apart by its text, "not found" (as raft-boltdb's).
var ErrKeyNotFound = errors.New("not found")

// stableFile is the StableStore: a handful of keys that change on an
// election, kept in one small file replaced whole on every Set.
type stableFile struct {
	mu   sync.Mutex
	dir  string
	keys map[string][]byte
}

func loadStable(dir string) (*stableFile, error) {
	st := &stableFile{dir: dir, keys: map[string][]byte{}}
	b, ok, err := readFileChecked(dir, stableName)
	if err != nil || !ok {
		return st, err
	}
	bad := fmt.Errorf("raftlog: %s: malformed", filepath.Join(dir, stableName))
	for len(b) > 0 {
		k, rest, err := lenPrefixed(b)
		if err != nil {
			return st, bad
		}
		v, rest, err := lenPrefixed(rest)
		if err != nil {
			return st, bad
		}
		st.keys[string(k)] = append([]byte{}, v...)
		b = rest
	}
	return st, nil
}

// Set stores val under key, durably, before it returns.
func (s *Store) Set(key, val []byte) error {
	st := s.stable
	st.mu.Lock()
	defer st.mu.Unlock()
	names := make([]string, 0, len(st.keys)+1)
	for k := range st.keys {
		if k != string(key) {
			names = append(names, k)
		}
	}
	names = append(names, string(key))
	sort.Strings(names)
	var b []byte
	for _, k := range names {
		v := st.keys[k]
		if k == string(key) {
			v = val
		}
		b = binary.LittleEndian.AppendUint32(b, uint32(len(k)))
		b = append(b, k...)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
		b = append(b, v...)
	}
	if err := writeFileAtomic(st.dir, stableName, b); err != nil {
		return err
	}
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
