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
// files %06d.vlog, in its folder, and numbers each new memtable one more
// than the last (badger v4 memtable.go, value.go). The folder is watched
// with inotify, so that a new memtable (a full one was rotated out) or a
// value-log file created or removed is known at the next sync, whatever
// happened in between. A memtable file removed before it was seen was
// flushed to a table Badger synced: nothing of it is lost.
const (
	walExt  = ".mem"
	vlogExt = ".vlog"
)

// inotifyFollower is the walFollower of a Badger folder on Linux.
type inotifyFollower struct {
	dir    string
	fd     int      // the inotify instance, non-blocking
	cur    *os.File // the newest write-ahead file known
	curFid int
	newer  []int // write-ahead files created since the last sync
	full   bool  // the value log changed, or the watch lost track
	buf    []byte
}

func followWALs(dir string) (walFollower, error) {
	if dir == "" {
		return nil, errors.New("journal in memory")
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	f := &inotifyFollower{dir: dir, fd: fd, curFid: -1, buf: make([]byte, 16<<10)}
	mask := uint32(syscall.IN_CREATE | syscall.IN_MOVED_TO | syscall.IN_DELETE | syscall.IN_MOVED_FROM)
	if _, err := syscall.InotifyAddWatch(fd, dir, mask); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// Files created from here on are reported; the newest one already
	// there is where Badger writes now.
	if err := f.rescan(); err != nil {
		f.close()
		return nil, err
	}
	return f, nil
}

// rescan finds the newest write-ahead file by listing the folder.
func (f *inotifyFollower) rescan() error {
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if fid, ok := fileID(e.Name(), walExt); ok && fid > f.curFid && !slices.Contains(f.newer, fid) {
			f.newer = append(f.newer, fid)
		}
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
			case strings.HasSuffix(name, vlogExt):
				f.full = true
			case ev.Mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0:
				if fid, ok := fileID(name, walExt); ok && fid > f.curFid && !slices.Contains(f.newer, fid) {
					f.newer = append(f.newer, fid)
				}
			}
		}
	}
}

func (f *inotifyFollower) sync() (bool, error) {
	if err := f.drain(); err != nil {
		return true, err
	}
	if f.cur != nil {
		if err := syscall.Fdatasync(int(f.cur.Fd())); err != nil {
			return true, fmt.Errorf("sync %s: %w", f.cur.Name(), err)
		}
	}
	// Newer files in the order Badger made them: each may hold writes
	// made before the next one was.
	slices.Sort(f.newer)
	for len(f.newer) > 0 {
		fid := f.newer[0]
		file, err := os.Open(filepath.Join(f.dir, fmt.Sprintf("%05d%s", fid, walExt)))
		if errors.Is(err, os.ErrNotExist) {
			f.newer = f.newer[1:] // flushed into a synced table already
			continue
		}
		if err != nil {
			return true, err
		}
		if err := syscall.Fdatasync(int(file.Fd())); err != nil {
			file.Close()
			return true, fmt.Errorf("sync %s: %w", file.Name(), err)
		}
		if f.cur != nil {
			f.cur.Close()
		}
		f.cur, f.curFid, f.newer = file, fid, f.newer[1:]
	}
	full := f.full
	f.full = false
	return full, nil
}

func (f *inotifyFollower) close() {
	if f.cur != nil {
		f.cur.Close()
		f.cur = nil
	}
	if f.fd >= 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
}
