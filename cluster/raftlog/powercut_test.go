package raftlog

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"syscall"
	"testing"

	"github.com/hashicorp/raft"
)

// state is what the store holds: logs by index, and the stable keys.
type state struct {
	logs   map[uint64]*raft.Log
	stable map[string]string
}

func (s state) clone() state {
	return state{maps.Clone(s.logs), maps.Clone(s.stable)}
}

// powerCut runs steps on a store in a memFS and, before every call that
// changes the file system, simulates a power cut in every way crashStates
// lists: the store reopened from what is left must hold, for each index
// and key, what it held before the step in flight or after it, and every
// index that step leaves alone.
type powerCut struct {
	t      *testing.T
	fs     *memFS
	dir    string
	opts   Options
	before state // when the step in flight began
	after  state // when it ends, if it succeeds
	step   string
	cuts   int
	failed bool
}

const powerCutDir = "/data/raftlog"

func newPowerCut(t *testing.T, seg int64) *powerCut {
	pc := &powerCut{t: t, fs: newMemFS("/data"), dir: powerCutDir,
		opts:   Options{SegmentSize: seg, Logger: quiet()},
		before: state{map[uint64]*raft.Log{}, map[string]string{}},
	}
	pc.after = pc.before.clone()
	pc.fs.hook = func(op, path string) { pc.cut(op + " " + path) }
	return pc
}

// cut simulates every power cut at this moment; under fs.mu.
func (pc *powerCut) cut(at string) {
	if pc.failed {
		return
	}
	for k, cs := range pc.fs.crashStates() {
		pc.cuts++
		if err := pc.recovered(pc.fs.crashed(cs), true); err != nil {
			pc.failed = true
			pc.t.Errorf("power cut in %s, before %s (state %d): %v", pc.step, at, k, err)
			return
		}
	}
}

// recovered opens what a power cut left and checks it; again, if again,
// after every power cut during that Open's repairs.
func (pc *powerCut) recovered(fs *memFS, again bool) error {
	var errAgain error
	if again {
		fs.hook = func(op, path string) {
			for k, cs := range fs.crashStates() {
				if errAgain != nil {
					return
				}
				pc.cuts++
				if err := pc.recovered(fs.crashed(cs), false); err != nil {
					errAgain = fmt.Errorf("a second power cut, in Open before %s %s (state %d): %w", op, path, k, err)
				}
			}
		}
	}
	s, err := open(context.Background(), pc.dir, pc.opts, fs)
	fs.hook = nil
	if errAgain != nil {
		return errAgain
	}
	if err != nil {
		return fmt.Errorf("open: %w", err)
	}
	defer s.Close()
	first, _ := s.FirstIndex()
	last, _ := s.LastIndex()
	for i := first; i <= last && last != 0; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			return fmt.Errorf("log %d..%d: GetLog(%d): %w", first, last, i, err)
		}
		if b, a := pc.before.logs[i], pc.after.logs[i]; !reflect.DeepEqual(&got, b) && !reflect.DeepEqual(&got, a) {
			return fmt.Errorf("log %d..%d: index %d holds %+v, neither before (%v) nor after (%v)", first, last, i, got, b != nil, a != nil)
		}
	}
	for i, b := range pc.before.logs {
		if reflect.DeepEqual(b, pc.after.logs[i]) && (i < first || i > last || last == 0) {
			return fmt.Errorf("log %d..%d: index %d, acknowledged and not deleted, is gone", first, last, i)
		}
	}
	for k := range merged(pc.before.stable, pc.after.stable) {
		v, err := s.Get([]byte(k))
		got, ok := string(v), err == nil
		b, inB := pc.before.stable[k]
		a, inA := pc.after.stable[k]
		if !(ok == inB && got == b) && !(ok == inA && got == a) {
			return fmt.Errorf("stable %q = %q, %v; before %q, after %q", k, got, err, b, a)
		}
	}
	// The log goes on from there.
	next := last + 1
	if err := s.StoreLogs([]*raft.Log{mkLog(next, 9)}); err != nil {
		return fmt.Errorf("log %d..%d: append %d: %w", first, last, next, err)
	}
	return nil
}

func merged(a, b map[string]string) map[string]string {
	m := maps.Clone(a)
	maps.Copy(m, b)
	return m
}

// do runs one step; change makes pc.after what it holds if it succeeds.
// A step that fails leaves the store as it was.
func (pc *powerCut) do(name string, change func(*state), f func() error) error {
	pc.t.Helper()
	pc.step = name
	change(&pc.after)
	err := f()
	if err != nil {
		pc.after = pc.before.clone()
	} else {
		pc.before = pc.after.clone()
	}
	return err
}

func (pc *powerCut) store(s *Store, from, to uint64, gen int) {
	pc.t.Helper()
	var logs []*raft.Log
	for i := from; i <= to; i++ {
		logs = append(logs, mkLog(i, gen))
	}
	err := pc.do(fmt.Sprintf("StoreLogs(%d..%d)", from, to), func(st *state) {
		if last := maxKey(st.logs); last != 0 && from > last+1 {
			clear(st.logs)
		}
		for _, l := range logs {
			st.logs[l.Index] = l
		}
	}, func() error { return s.StoreLogs(logs) })
	if err != nil {
		pc.t.Fatalf("StoreLogs(%d..%d): %v", from, to, err)
	}
}

func (pc *powerCut) del(s *Store, min, max uint64) {
	pc.t.Helper()
	err := pc.do(fmt.Sprintf("DeleteRange(%d, %d)", min, max), func(st *state) {
		for i := min; i <= max; i++ {
			delete(st.logs, i)
		}
	}, func() error { return s.DeleteRange(min, max) })
	if err != nil {
		pc.t.Fatalf("DeleteRange(%d, %d): %v", min, max, err)
	}
}

func (pc *powerCut) set(s *Store, k, v string) {
	pc.t.Helper()
	err := pc.do(fmt.Sprintf("Set(%s)", k), func(st *state) { st.stable[k] = v },
		func() error { return s.Set([]byte(k), []byte(v)) })
	if err != nil {
		pc.t.Fatalf("Set(%s): %v", k, err)
	}
}

func maxKey(m map[uint64]*raft.Log) uint64 {
	var k uint64
	for i := range m {
		k = max(k, i)
	}
	return k
}

// TestPowerCut simulates a power cut at every file system call of a
// run that rotates segments, compacts the head, cuts the tail across
// several segments, replaces the log past a snapshot, empties it, and
// sets stable keys, starting from a log directory that does not exist.
func TestPowerCut(t *testing.T) {
	pc := newPowerCut(t, 512)
	pc.step = "Open"
	s, err := open(context.Background(), pc.dir, pc.opts, pc.fs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc.set(s, "CurrentTerm", "1")
	pc.store(s, 1, 3, 0)
	pc.store(s, 4, 8, 0)
	for i := uint64(9); i <= 11; i++ {
		pc.store(s, i, i, 0)
	}
	pc.set(s, "LastVoteCand", "node-1")
	for i := uint64(12); i <= 20; i += 3 {
		pc.store(s, i, i+2, 0)
	}
	pc.del(s, 1, 6) // a compaction: the head file
	for i := uint64(21); i <= 25; i++ {
		pc.store(s, i, i, 0)
	}
	if n := len(s.segs); n < 6 {
		t.Fatalf("%d segments (%v); the tail cut must span several", n, s.segs)
	}
	pc.del(s, 10, 25) // a conflicting tail, several segments
	pc.store(s, 10, 14, 1)
	pc.store(s, 30, 33, 1) // past a snapshot: the log replaced
	pc.store(s, 34, 36, 1)
	pc.store(s, 37, 40, 1)
	pc.del(s, 30, 40) // after a snapshot: all of it
	pc.store(s, 50, 55, 2)
	pc.del(s, 50, 52)
	pc.set(s, "CurrentTerm", "2")
	pc.step = "the end"
	pc.fs.mu.Lock()
	pc.cut("nothing")
	pc.fs.mu.Unlock()
	t.Logf("%d power cuts simulated", pc.cuts)
}

// A StoreLogs refused for want of space (ENOSPC part of the way through
// its write) leaves no part of its batch visible, then or after a power
// cut, and leaves FirstIndex and LastIndex as they were, which Raft
// caches; the same indexes are taken once there is space again. The same
// for a new segment that cannot be written, on a full or an empty log.
func TestENOSPCRefusedBatch(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fill   uint64 // logs stored first, one by one
		rotate bool   // and more, until the next batch starts a segment
		op     string // the call that runs out of space
	}{
		{"write in the active segment", 5, false, "write"},
		{"header of a new segment", 1, true, "write"},
		{"first write of an empty log", 0, false, "write"},
		{"segment creation", 1, true, "create"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			pc := newPowerCut(t, 1024)
			s, err := open(context.Background(), pc.dir, pc.opts, pc.fs)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			var fill uint64
			for fill < tc.fill || (tc.rotate && s.segs[len(s.segs)-1].size < 1024) {
				fill++
				pc.store(s, fill, fill, 0)
			}
			first := fill + 1
			full := true
			pc.fs.fault = func(op, path string) error {
				if full && op == tc.op {
					return syscall.ENOSPC
				}
				return nil
			}
			batch := []*raft.Log{mkLog(first, 0), mkLog(first+1, 0), mkLog(first+2, 0)}
			err = pc.do("StoreLogs without space", func(st *state) {
				for _, l := range batch {
					st.logs[l.Index] = l
				}
			}, func() error { return s.StoreLogs(batch) })
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("StoreLogs without space = %v; want ENOSPC", err)
			}
			m := newModel()
			for i := uint64(1); i <= fill; i++ {
				m.store(mkLog(i, 0))
			}
			check(t, s, m, "after the refused batch")
			pc.step = "after the refused batch"
			pc.fs.mu.Lock()
			pc.cut("nothing")
			pc.fs.mu.Unlock()

			full = false
			pc.store(s, first, first+2, 0)
			m.store(batch...)
			check(t, s, m, "once there is space")
			pc.step = "the end"
			pc.fs.mu.Lock()
			pc.cut("nothing")
			pc.fs.mu.Unlock()
		})
	}
}

// A Set refused for want of space does not come back after a power cut:
// Raft was told the term or vote was not stored.
func TestENOSPCRefusedSet(t *testing.T) {
	pc := newPowerCut(t, 0)
	s, err := open(context.Background(), pc.dir, pc.opts, pc.fs)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pc.set(s, "CurrentTerm", "1")
	pc.fs.fault = func(op, path string) error {
		if op == "write" {
			return syscall.ENOSPC
		}
		return nil
	}
	err = pc.do("Set without space", func(st *state) { st.stable["CurrentTerm"] = "2-a-longer-value" },
		func() error { return s.Set([]byte("CurrentTerm"), []byte("2-a-longer-value")) })
	if !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("Set without space = %v; want ENOSPC", err)
	}
	if v, err := s.Get([]byte("CurrentTerm")); err != nil || string(v) != "1" {
		t.Fatalf("CurrentTerm = %q, %v after the refused Set; want 1", v, err)
	}
	pc.step = "after the refused Set"
	pc.fs.mu.Lock()
	pc.cut("nothing")
	pc.fs.mu.Unlock()
	pc.fs.fault = nil
	pc.set(s, "CurrentTerm", "2")
	pc.step = "the end"
	pc.fs.mu.Lock()
	pc.cut("nothing")
	pc.fs.mu.Unlock()
}
