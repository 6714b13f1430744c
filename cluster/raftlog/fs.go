package raftlog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
)

// fileSys is the file system under a Store: the os package in use, and
// in tests a fake that injects faults and, on a simulated power cut,
// keeps only what was synced (memfs_test.go). Only the calls the store
// makes are here.
type fileSys interface {
	OpenFile(name string, flag int, perm os.FileMode) (file, error)
	Remove(name string) error
	Rename(oldpath, newpath string) error
	// Mkdir creates one directory; its entry in the parent is not synced.
	Mkdir(name string, perm os.FileMode) error
	// IsDir reports whether name exists and is a directory.
	IsDir(name string) (bool, error)
	// ReadDir returns the names in a directory.
	ReadDir(name string) ([]string, error)
	// SyncDir makes the directory's entries (created, renamed, removed
	// files) durable.
	SyncDir(name string) error
}

// file is an open file of a fileSys.
type file interface {
	io.ReaderAt
	io.WriterAt
	Truncate(size int64) error
	// Sync is fsync(2); Datasync is fdatasync(2), which flushes the data
	// and the size, not the times.
	Sync() error
	Datasync() error
	Size() (int64, error)
	Close() error
}

// osFS is the real file system.
type osFS struct{}

type osFile struct{ *os.File }

func (f osFile) Datasync() error { return datasync(f.File) }

func (f osFile) Size() (int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func (osFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return osFile{f}, nil
}

func (osFS) Remove(name string) error                  { return os.Remove(name) }
func (osFS) Rename(oldpath, newpath string) error      { return os.Rename(oldpath, newpath) }
func (osFS) Mkdir(name string, perm os.FileMode) error { return os.Mkdir(name, perm) }

func (osFS) IsDir(name string) (bool, error) {
	fi, err := os.Stat(name)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return fi.IsDir(), nil
}

func (osFS) ReadDir(name string) ([]string, error) {
	ents, err := os.ReadDir(name)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(ents))
	for i, e := range ents {
		names[i] = e.Name()
	}
	return names, nil
}

func (osFS) SyncDir(name string) error {
	d, err := os.Open(name)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// syncDir makes dir's entries (created, renamed, removed files) durable.
func syncDir(fsys fileSys, dir string) error {
	if err := fsys.SyncDir(dir); err != nil {
		return fmt.Errorf("raftlog: sync %s: %w", dir, err)
	}
	return nil
}

// makeDir creates dir and the missing directories above it, each made
// durable in its parent: a log whose directory entry a power cut can take
// away would lose every record acknowledged in it.
func makeDir(fsys fileSys, dir string) error {
	ok, err := fsys.IsDir(dir)
	if err != nil {
		return fmt.Errorf("raftlog: %w", err)
	}
	if ok {
		return nil
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := makeDir(fsys, parent); err != nil {
			return err
		}
	}
	if err := fsys.Mkdir(dir, 0o700); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("raftlog: %w", err)
	}
	return syncDir(fsys, parent)
}

// readFile reads a whole file; its error is the os package's, for
// errors.Is(err, os.ErrNotExist).
func readFile(fsys fileSys, path string) ([]byte, error) {
	f, err := fsys.OpenFile(path, os.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	n, err := f.Size()
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil && !(errors.Is(err, io.EOF) && n == 0) {
		return nil, err
	}
	return b, nil
}
