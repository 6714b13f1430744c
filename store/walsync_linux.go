package store

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"unsafe"
)

// Badger names its memtable write-ahead files %05d.mem and its value-log
// files %06d.vlog, in its folder, and numbers each new file of a kind one
// more than the last (badger v4 memtable.go, value.go), except that
// DropAll starts the value log again at 1. The folder is watched with
// inotify, so that a new memtable (a full one was rotated out) or a new
// value-log file is known at the next sync, whatever happened in between.
// A memtable file removed before it was synced was flushed to a table
// Badger synced; a value-log file removed was emptied by Badger's garbage
// collection into the current one (synced at every sync) or dropped:
// nothing of either is lost.

// inotifyFollower is the walFollower of a Badger folder on Linux.
type inotifyFollower struct {
	dir  string
	fd   int // the inotify instance, non-blocking
	wal  fileSeries
	vlog fileSeries
	buf  []byte
	// vlogWrites reads Badger's count of the values written to value logs
	// (nil: not kept; the value log is synced every time); vlogSynced is
	// the count read before the last value-log sync that succeeded, -1
	// before the first.
	vlogWrites func() int64
	vlogSynced int64
}

// fileSeries is one kind of Badger's numbered files: the newest one known
// (open, for its syncs) and those created since the last sync.
type fileSeries struct {
	ext, format string
	cur         *os.File
	curID       int
	newer       []int
	// fdatasync is syscall.Fdatasync, or a test's fault.
	fdatasync func(fd int) error
}

// note records a file of the series found in the folder by a scan: one
// older than the newest known is no news.
func (fs *fileSeries) note(name string) bool {
	id, ok := fileID(name, fs.ext)
	if ok && id > fs.curID && !slices.Contains(fs.newer, id) {
		fs.newer = append(fs.newer, id)
	}
	return ok
}

// created records a file of the series the watch saw created: whatever its
// number (after DropAll the value log starts again at 1), it is new.
func (fs *fileSeries) created(name string) bool {
	id, ok := fileID(name, fs.ext)
	if ok && id != fs.curID && !slices.Contains(fs.newer, id) {
		fs.newer = append(fs.newer, id)
	}
	return ok
}

// sync fdatasyncs the newest file synced last and those created since,
// in the order Badger made them (each may hold writes made before the
// next one was), and keeps the newest open.
func (fs *fileSeries) sync(dir string) error {
	if fs.cur != nil {
		if err := fs.fdatasync(int(fs.cur.Fd())); err != nil {
			return fmt.Errorf("sync %s: %w: %w", fs.cur.Name(), errWriteBack, err)
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
			return fmt.Errorf("%w: %w", errWriteBack, err)
		}
		if err := fs.fdatasync(int(file.Fd())); err != nil {
			file.Close()
			return fmt.Errorf("sync %s: %w: %w", file.Name(), errWriteBack, err)
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

func followWALs(dir string, vlogWrites func() int64) (walFollower, error) {
	if dir == "" {
		return nil, errors.New("journal in memory")
	}
	fd, err := syscall.InotifyInit1(syscall.IN_NONBLOCK | syscall.IN_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("inotify: %w", err)
	}
	f := &inotifyFollower{dir: dir, fd: fd, buf: make([]byte, 16<<10), vlogWrites: vlogWrites, vlogSynced: -1,
		wal:  fileSeries{ext: ".mem", format: "%05d.mem", curID: -1, fdatasync: syscall.Fdatasync},
		vlog: fileSeries{ext: ".vlog", format: "%06d.vlog", curID: -1, fdatasync: syscall.Fdatasync},
	}
	mask := uint32(syscall.IN_CREATE | syscall.IN_MOVED_TO)
	if _, err := syscall.InotifyAddWatch(fd, dir, mask); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("inotify watch %s: %w", dir, err)
	}
	// Files created from here on are reported; those already there are
	// all synced at the first sync.
	ents, err := os.ReadDir(f.dir)
	if err != nil {
		f.close()
		return nil, err
	}
	for _, e := range ents {
		_ = f.wal.note(e.Name()) || f.vlog.note(e.Name())
	}
	return f, nil
}

// drain reads the events the folder had since the last call. Lost events
// (IN_Q_OVERFLOW) or a watch removed (IN_IGNORED: the folder is gone) are
// an error: the caller syncs the whole folder and follows it anew.
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
				return errors.New("inotify: event cut short")
			}
			name := strings.TrimRight(string(f.buf[nameAt:end]), "\x00")
			off = end
			switch {
			case ev.Mask&syscall.IN_Q_OVERFLOW != 0:
				return errors.New("inotify: events lost (queue overflow)")
			case ev.Mask&syscall.IN_IGNORED != 0:
				return errors.New("journal folder no longer watched")
			case ev.Mask&(syscall.IN_CREATE|syscall.IN_MOVED_TO) != 0:
				_ = f.wal.created(name) || f.vlog.created(name)
			}
		}
	}
}

func (f *inotifyFollower) sync() error {
	if err := f.drain(); err != nil {
		return err
	}
	// The value log first: a pointer in a write-ahead file is then never
	// durable before the value it points to (one moved by GC, say).
	// Skipped when no value went there since the last value-log sync
	// began (see walSync): the count is read before the fdatasync, so
	// every value it counts was in the file when the fdatasync started.
	// Badger counts a value after writing it and before writing its
	// pointer, so a pointer written before the count was read (those of
	// the batches this sync is for: they were written before it began)
	// points to a value synced now or by an earlier sync. A value written
	// after the read is another writer's, and its pointer may be made
	// durable by the write-ahead sync below without it, as when the value
	// log was synced at every sync (its fdatasync could have started just
	// before the value was written). A new value-log file (a rotation,
	// DropAll) is synced whatever the count, for its header.
	count := int64(-1)
	if f.vlogWrites != nil {
		count = f.vlogWrites()
	}
	if count < 0 || count != f.vlogSynced || len(f.vlog.newer) > 0 {
		if err := f.vlog.sync(f.dir); err != nil {
			return err
		}
		f.vlogSynced = count
	}
	return f.wal.sync(f.dir)
}

func (f *inotifyFollower) close() {
	f.wal.close()
	f.vlog.close()
	if f.fd >= 0 {
		syscall.Close(f.fd)
		f.fd = -1
	}
}
