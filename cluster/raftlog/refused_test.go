package raftlog

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
)

// A refused append on an empty log leaves the segment it created empty;
// Raft may then append from another index (it installed a snapshot
// meanwhile), and that log must not go in a segment named for the first.
func TestRefusedFirstAppendThenOtherIndex(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 0)
	// Too large: refused after the segment for index 7 was created. Its
	// pages are never touched, so this costs no memory.
	huge := &raft.Log{Index: 7, Term: 1, Data: make([]byte, maxPayload)}
	if err := s.StoreLogs([]*raft.Log{huge}); err == nil {
		t.Fatal("a log past maxPayload was stored")
	}
	if err := s.DeleteRange(1, 100); err != nil { // removeOldLogs on an empty log
		t.Fatal(err)
	}
	m := newModel()
	logs := []*raft.Log{mkLog(101, 0), mkLog(102, 0), mkLog(103, 0)}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	m.store(logs...)
	check(t, s, m, "after the refused append")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, 0)
	defer s.Close()
	check(t, s, m, "reopened")
}

// A failure before anything changed (a segment or the head file that
// cannot be created: EMFILE, ENOSPC) refuses that call only; the store
// goes on once the cause is gone, without a restart.
func TestCreateFailureIsNotFatal(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 1) // a segment per batch
	defer s.Close()
	m := newModel()
	for i := uint64(1); i <= 3; i++ {
		s.StoreLog(mkLog(i, 0))
		m.store(mkLog(i, 0))
	}
	block := func(name string) func() {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		return func() {
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
	}

	unblock := block(segName(4))
	if err := s.StoreLog(mkLog(4, 0)); err == nil {
		t.Fatal("stored in a segment that could not be created")
	}
	unblock()
	if err := s.StoreLog(mkLog(4, 0)); err != nil {
		t.Fatalf("append once the segment can be created: %v", err)
	}
	m.store(mkLog(4, 0))
	check(t, s, m, "after a failed segment creation")

	// A compaction, so that emptying the log must reset the head file.
	if err := s.DeleteRange(1, 1); err != nil {
		t.Fatal(err)
	}
	m.del(1, 1)
	unblock = block(headFile + tempSuffix)
	if err := s.DeleteRange(2, 2); err == nil {
		t.Fatal("compacted without a head file")
	}
	check(t, s, m, "after a failed compaction")
	if err := s.DeleteRange(1, 4); err == nil {
		t.Fatal("emptied without resetting the head file")
	}
	check(t, s, m, "after a failed reset")
	unblock()
	if err := s.DeleteRange(2, 2); err != nil {
		t.Fatalf("compaction once the head can be written: %v", err)
	}
	m.del(2, 2)
	if err := s.StoreLog(mkLog(5, 0)); err != nil {
		t.Fatal(err)
	}
	m.store(mkLog(5, 0))
	check(t, s, m, "after a compaction")
	if err := s.DeleteRange(1, 5); err != nil {
		t.Fatalf("emptying once the head can be written: %v", err)
	}
	m.del(1, 5)
	check(t, s, m, "emptied")
	if err := s.StoreLog(mkLog(9, 0)); err != nil {
		t.Fatal(err)
	}
	m.store(mkLog(9, 0))
	check(t, s, m, "after emptying")
	s.Close()
	s = openT(t, dir, 1)
	defer s.Close()
	check(t, s, m, "reopened")
}

// A node that installed a snapshot past its log and stopped before Raft
// removed the old log (removeOldLogs runs once, after the FSM's restore)
// is sent the entries after the snapshot: the store must take them, or
// the follower refuses every append from then on, restarts included.
func TestAppendPastSnapshotGap(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 2048)
	for i := uint64(1); i <= 50; i++ {
		if err := s.StoreLog(mkLog(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeleteRange(1, 10); err != nil { // a compaction: a head file
		t.Fatal(err)
	}
	if err := s.StoreLogs([]*raft.Log{mkLog(49, 1)}); err == nil {
		t.Fatal("an append over the log's end was taken")
	}
	m := newModel()
	logs := []*raft.Log{mkLog(101, 1), mkLog(102, 1)}
	if err := s.StoreLogs(logs); err != nil {
		t.Fatalf("append after a snapshot past the log: %v", err)
	}
	m.store(logs...)
	check(t, s, m, "after the gap")
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openT(t, dir, 2048)
	defer s.Close()
	check(t, s, m, "reopened")
}
