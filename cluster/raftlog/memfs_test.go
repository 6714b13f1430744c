package raftlog

import (
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
)

// memFS is a fileSys in memory that knows what a power cut keeps: a
// file's data as of its last Sync (or, as writeback may have happened,
// any later version of it), and a directory's entries as of its last
// SyncDir plus any subset of the changes made since. It injects faults
// (fault) and calls hook before every call that changes something: the
// crash points.
type memFS struct {
	mu    sync.Mutex
	root  *memNode
	fault func(op, path string) error // an error for this call, or nil
	hook  func(op, path string)       // called under mu
}

type memNode struct {
	dir bool
	// A directory's entries now, as last synced, and the changes since.
	cur, dur map[string]*memNode
	pending  []dirChange
	// A file's data now, as last synced, and each version since (the
	// last is data).
	data, synced []byte
	hist         [][]byte
}

// dirChange is one call's change to a directory: names set to a node, or
// removed (nil); a rename changes two names at once.
type dirChange map[string]*memNode

func newMemFS(dirs ...string) *memFS {
	fs := &memFS{root: newDirNode()}
	for _, d := range dirs {
		parent := fs.root
		for _, name := range strings.Split(strings.Trim(d, "/"), "/") {
			n := parent.cur[name]
			if n == nil {
				n = newDirNode()
				parent.cur[name], parent.dur[name] = n, n
			}
			parent = n
		}
	}
	return fs
}

func newDirNode() *memNode {
	return &memNode{dir: true, cur: map[string]*memNode{}, dur: map[string]*memNode{}}
}

func (fs *memFS) enter(op, path string) error {
	if fs.hook != nil {
		fs.hook(op, path)
	}
	if fs.fault != nil {
		return fs.fault(op, path)
	}
	return nil
}

// lookup returns the directory holding path and the node at path (nil if
// there is none); under mu.
func (fs *memFS) lookup(path string) (parent *memNode, n *memNode, name string) {
	parts := strings.Split(strings.Trim(filepath.Clean(path), "/"), "/")
	d := fs.root
	for _, p := range parts[:len(parts)-1] {
		if d = d.cur[p]; d == nil || !d.dir {
			return nil, nil, ""
		}
	}
	name = parts[len(parts)-1]
	return d, d.cur[name], name
}

func notExist(op, path string) error {
	return &os.PathError{Op: op, Path: path, Err: os.ErrNotExist}
}

func (d *memNode) change(c dirChange) {
	for name, n := range c {
		if n == nil {
			delete(d.cur, name)
		} else {
			d.cur[name] = n
		}
	}
	d.pending = append(d.pending, c)
}

func (f *memNode) setData(b []byte) {
	f.data = b
	f.hist = append(f.hist, slices.Clone(b))
}

func (fs *memFS) OpenFile(name string, flag int, perm os.FileMode) (file, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n, base := fs.lookup(name)
	if d == nil {
		return nil, notExist("open", name)
	}
	if n == nil || flag&os.O_TRUNC != 0 {
		if n == nil && flag&os.O_CREATE == 0 {
			return nil, notExist("open", name)
		}
		if err := fs.enter("create", name); err != nil {
			return nil, err
		}
		if n == nil {
			n = &memNode{}
			d.change(dirChange{base: n})
		} else {
			n.setData(nil)
		}
	}
	if n.dir {
		return nil, &os.PathError{Op: "open", Path: name, Err: os.ErrInvalid}
	}
	return &memFile{fs: fs, n: n, path: name}, nil
}

func (fs *memFS) Remove(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n, base := fs.lookup(name)
	if n == nil {
		return notExist("remove", name)
	}
	if err := fs.enter("remove", name); err != nil {
		return err
	}
	d.change(dirChange{base: nil})
	return nil
}

func (fs *memFS) Rename(oldpath, newpath string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n, oldBase := fs.lookup(oldpath)
	d2, _, newBase := fs.lookup(newpath)
	if n == nil || d2 != d {
		return notExist("rename", oldpath)
	}
	if err := fs.enter("rename", newpath); err != nil {
		return err
	}
	d.change(dirChange{oldBase: nil, newBase: n})
	return nil
}

func (fs *memFS) Mkdir(name string, perm os.FileMode) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	d, n, base := fs.lookup(name)
	if d == nil {
		return notExist("mkdir", name)
	}
	if n != nil {
		return &os.PathError{Op: "mkdir", Path: name, Err: os.ErrExist}
	}
	if err := fs.enter("mkdir", name); err != nil {
		return err
	}
	d.change(dirChange{base: newDirNode()})
	return nil
}

func (fs *memFS) IsDir(name string) (bool, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if filepath.Clean(name) == "/" {
		return true, nil
	}
	_, n, _ := fs.lookup(name)
	return n != nil && n.dir, nil
}

func (fs *memFS) ReadDir(name string) ([]string, error) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	_, n, _ := fs.lookup(name)
	if n == nil || !n.dir {
		return nil, notExist("readdir", name)
	}
	var names []string
	for k := range n.cur {
		names = append(names, k)
	}
	sort.Strings(names)
	return names, nil
}

func (fs *memFS) SyncDir(name string) error {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	n := fs.root
	if filepath.Clean(name) != "/" {
		_, n, _ = fs.lookup(name)
	}
	if n == nil || !n.dir {
		return notExist("sync", name)
	}
	if err := fs.enter("syncdir", name); err != nil {
		return err
	}
	n.dur = map[string]*memNode{}
	for k, v := range n.cur {
		n.dur[k] = v
	}
	n.pending = nil
	return nil
}

type memFile struct {
	fs   *memFS
	n    *memNode
	path string
}

func (f *memFile) ReadAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if off >= int64(len(f.n.data)) {
		if len(b) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	n := copy(b, f.n.data[off:])
	if n < len(b) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes half of b before the error of a fault, as a write that
// runs out of space part of the way does.
func (f *memFile) WriteAt(b []byte, off int64) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	err := f.fs.enter("write", f.path)
	if err != nil {
		b = b[:len(b)/2]
	}
	data := slices.Clone(f.n.data)
	if end := off + int64(len(b)); end > int64(len(data)) {
		data = append(data, make([]byte, end-int64(len(data)))...)
	}
	copy(data[off:], b)
	f.n.setData(data)
	return len(b), err
}

func (f *memFile) Truncate(size int64) error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.enter("truncate", f.path); err != nil {
		return err
	}
	data := slices.Clone(f.n.data)
	if size <= int64(len(data)) {
		data = data[:size]
	} else {
		data = append(data, make([]byte, size-int64(len(data)))...)
	}
	f.n.setData(data)
	return nil
}

func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if err := f.fs.enter("sync", f.path); err != nil {
		return err
	}
	f.n.synced, f.n.hist = slices.Clone(f.n.data), nil
	return nil
}

func (f *memFile) Datasync() error { return f.Sync() }

func (f *memFile) Size() (int64, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	return int64(len(f.n.data)), nil
}

func (f *memFile) Close() error { return nil }

// pendingChange names one unsynced directory change: the directory and
// its position in the directory's pending list.
type pendingChange struct {
	d *memNode
	i int
}

// pendingChanges lists every directory's unsynced changes; under mu.
func (fs *memFS) pendingChanges() []pendingChange {
	var out []pendingChange
	var walk func(d *memNode)
	walk = func(d *memNode) {
		for i := range d.pending {
			out = append(out, pendingChange{d, i})
		}
		names := make([]string, 0, len(d.cur))
		for k := range d.cur {
			names = append(names, k)
		}
		sort.Strings(names)
		for _, k := range names {
			if n := d.cur[k]; n.dir {
				walk(n)
			}
		}
	}
	walk(fs.root)
	return out
}

// crashState is what a power cut leaves: kept says which unsynced
// directory changes survive, data what a file holds (its synced data, or
// a later version).
type crashState struct {
	kept func(d *memNode, i int) bool
	data func(f *memNode) []byte
}

// crashed builds the file system a power cut leaves in state cs; under mu.
func (fs *memFS) crashed(cs crashState) *memFS {
	var build func(d *memNode) *memNode
	build = func(d *memNode) *memNode {
		ents := map[string]*memNode{}
		for k, v := range d.dur {
			ents[k] = v
		}
		for i, c := range d.pending {
			if !cs.kept(d, i) {
				continue
			}
			for name, n := range c {
				if n == nil {
					delete(ents, name)
				} else {
					ents[name] = n
				}
			}
		}
		out := newDirNode()
		for k, n := range ents {
			var c *memNode
			if n.dir {
				c = build(n)
			} else {
				b := slices.Clone(cs.data(n))
				c = &memNode{data: b, synced: slices.Clone(b)}
			}
			out.cur[k], out.dur[k] = c, c
		}
		return out
	}
	return &memFS{root: build(fs.root)}
}

// crashStates lists the power cuts to try at this moment: every subset of
// the unsynced directory changes (or, past 6 of them, every subset of the
// last 6 with the rest kept, and none kept), each with files holding their
// synced data or their latest; and every version of each file written
// since its last sync, with the directory changes all kept or none.
func (fs *memFS) crashStates() []crashState {
	pend := fs.pendingChanges()
	var masks []func(d *memNode, i int) bool
	subset := func(bits uint, from int) func(d *memNode, i int) bool {
		return func(d *memNode, i int) bool {
			for k, p := range pend {
				if p.d == d && p.i == i {
					if k < from {
						return true
					}
					return bits&(1<<(k-from)) != 0
				}
			}
			return false
		}
	}
	from := max(0, len(pend)-6)
	for bits := uint(0); bits < 1<<(len(pend)-from); bits++ {
		masks = append(masks, subset(bits, from))
	}
	if from > 0 {
		masks = append(masks, func(*memNode, int) bool { return false })
	}
	synced := func(f *memNode) []byte { return f.synced }
	latest := func(f *memNode) []byte { return f.data }
	var out []crashState
	for _, m := range masks {
		out = append(out, crashState{m, synced}, crashState{m, latest})
	}
	none := func(*memNode, int) bool { return false }
	all := func(*memNode, int) bool { return true }
	for _, f := range fs.files() {
		for _, v := range f.hist {
			data := func(g *memNode) []byte {
				if g == f {
					return v
				}
				return g.data
			}
			out = append(out, crashState{none, data}, crashState{all, data})
		}
	}
	return out
}

// files lists every file reachable now or as last synced; under mu.
func (fs *memFS) files() []*memNode {
	seen := map[*memNode]bool{}
	var out []*memNode
	var walk func(d *memNode)
	walk = func(d *memNode) {
		for _, ents := range []map[string]*memNode{d.cur, d.dur} {
			for _, n := range ents {
				if seen[n] {
					continue
				}
				seen[n] = true
				if n.dir {
					walk(n)
				} else {
					out = append(out, n)
				}
			}
		}
	}
	walk(fs.root)
	return out
}
