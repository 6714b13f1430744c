package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"unsafe"
)

// Badger names its memtable write-ahead files %05d.mem and its value-log
// files %06d.vlog, in its folder, and numbers each new file of a kind one
// more than the last (badger v4 memtable.go, value.go). The folder is
// watched with inotify, so that a new memtable (a full one was rotated
// out) or a value-log file created or removed is known at the next sync,
// whatever happened in between. A memtable file removed before it was
// synced was flushed to a table Badger synced; a value-log file removed
// was emptied by Badger's garbage collection into a later one: nothing of
// either is lost.

// inotifyFollower is the walFollower of a Badger folder on Linux.
type inotifyFollower struct {
	dir  string
	fd   int // the inotify instance, non-blocking
	wal  fileSeries
	vlog fileSeries
	full bool // the value log changed, or the watch lost track
	buf  []byte
}

// fileSeries is one kind of Badger's numbered files: the newest one known
// (open, for its syncs) and those created since the last sync.
type fileSeries struct {
	ext, format string
	cur         *os.File
	curID       int
	newer       []int
}

// note records a file of the series found in the folder.
func (fs *fileSeries) note(name string) bool {
	id, ok := fileID(name, fs.ext)
	if ok && id > fs.curID && !slices.Contains(fs.newer, id) {
		fs.newer = append(fs.newer, id)
	}
	return ok
}

// sync fdatasyncs the newest file synced last and those created since,
// in the order Badger made them (each may hold writes made before the
// next one was), and keeps the newest open.
func (fs *fileSeries) sync(dir string) error {
	if fs.cur != nil {
		if err := syscall.Fdatasync(int(fs.cur.Fd())); err != nil {
			return fmt.Errorf("sync %s: %w", fs.cur.Name(), err)
		}
	}
	slices.Sort(fs.newer)
	for len(fs.newer) > 0 {
		id := fs.newer[0]
		file, err := os.Open(filepath.Join(dir, fmt.Sprintf(fs.format, id)))
		if errors.Is(err, os.ErrNotExist) {
			fs.newer = fs.newer[1:] // removed: its writes are elsewhere, synced
			continue
		}
		if err != nil {
			return err
		}
		if err := syscall.Fdatasync(int(file.Fd())); err != nil {
			file.Close()
			return fmt.Errorf("sync %s: %w", file.Name(), err)
		}
		if fs.cur != nil {
			fs.cur.Close()
		}
		fs.cur, fs.curID, fs.newer = file, id, fs.newer[1:]
	}
	return nil
}

func (fs *fileSeries) close() {
	if fs.cur != nil {
		fs.cur.Close()
		fs.cur = nil
	}
}

func followWALs(dir string) (walFollower, error) {
	if dir == "" {
		return nil, errors.New("journal in memory")
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	f := &inotifyFollower{dir: dir, fd: fd, buf: make([]byte, 16<<10),
		wal:  fileSeries{ext: ".mem", format: "%05d.mem", curID: -1},
		vlog: fileSeries{ext: ".vlog", format: "%06d.vlog", curID: -1},
	}
	mask := uint32(syscall.IN_CREATE | syscall.IN_MOVED_TO | syscall.IN_DELETE | syscall.IN_MOVED_FROM)
	if _, err := syscall.InotifyAddWatch(fd, dir, mask); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// Files created from here on are reported; the newest ones already
	// there are where Badger writes now.
	if err := f.rescan(); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// rescan notes the files in the folder.
func (f *inotifyFollower) rescan() error {
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		_ = f.wal.note(e.Name()) || f.vlog.note(e.Name())
	}
	return nil
}

// fileID parses Badger's numbered file name with extension ext.
func fileID(name, ext string) (int, bool) {
	num, ok := strings.CutSuffix(name, ext)
	if !ok || num == "" {
		return 0, false
	}
	id, err := strconv.Atoi(num)
	return id, err == nil && id >= 0
}

// drain reads the events the folder had since the last call.
func (f *inotifyFollower) drain() error {
	for {
		n, err := syscall.Read(f.fd, f.buf)
		if errors.Is(err, syscall.EAGAIN) {
			return nil
		}
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			return fmt.Errorf("inotify read: %w", err)
		}
		for off := 0; off+syscall.SizeofInotifyEvent <= n; {
			ev := (*syscall.InotifyEvent)(unsafe.Pointer(&f.buf[off]))
			nameAt := off + syscall.SizeofInotifyEvent
			end := nameAt + int(ev.Len)
			if end > n {
				break
			}
			name := strings.TrimRight(string(f.buf[nameAt:end]), "\x00")
			off = end
			switch {
			case ev.Mask&(syscall.IN_Q_OVERFLOW|syscall.IN_IGNORED) != 0:
				// Events were lost (or the folder is gone): sync whole and
				// find the newest file again.
				f.full = true
				if ev.Mask&syscall.IN_IGNORED != 0 {
					return errors.New("journal folder no longer watched")
				}
				if err := f.rescan(); err != nil {
					return err
				}
			case ev.Mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0:
				if !f.wal.note(name) && f.vlog.note(name) {
					f.full = true
				}
			case strings.HasSuffix(name, f.vlog.ext):
				f.full = true // removed
			}
		}
	}
}

func (f *inotifyFollower) sync() (bool, error) {
	if err := f.drain(); err != nil {
		return true, err
	}
	if err := f.wal.sync(f.dir); err != nil {
		return true, err
	}
	full := f.full
	f.full = false
	return full, nil
}

func (f *inotifyFollower) syncValueLog() error {
	return f.vlog.sync(f.dir)
}

func (f *inotifyFollower) close() {
	f.wal.close()
	f.vlog.close()
	if f.fd >= 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
}
