package cluster

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/store"
)

// TestFSMAppliesEveryEntry: a command entry is applied with its index, an
// entry that does not decode is refused (alike on every node) but counts
// as applied, a configuration entry only moves the applied index, and a
// journal that cannot write stops the node.
func TestFSMAppliesEveryEntry(t *testing.T) {
	dir := t.TempDir()
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	j, err := store.Open(filepath.Join(dir, "journal"), store.Options{KeyFile: filepath.Join(dir, "journal.key"), Replicated: true, HousekeepingInterval: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var failed error
	f := &fsm{j: j, log: quiet, fail: func(err error) { failed = err }}

	cmd := store.Command{Op: store.CmdPrepare, Record: &store.Record{Kind: store.KindAccount, Op: store.OpModify, DN: "uid=a,dc=x"}}
	if err := j.Stamp(&cmd, 1, time.Now()); err != nil {
		t.Fatal(err)
	}
	commit := store.Command{Op: store.CmdCommit, Seq: 7, Time: time.Now()} // no record 7: refused
	resp := f.ApplyBatch([]*raft.Log{
		{Index: 3, Type: raft.LogCommand, Data: store.EncodeCommands([]store.Command{cmd, commit})},
		{Index: 4, Type: raft.LogCommand, Data: []byte{0xff, 1, 2}},
		{Index: 5, Type: raft.LogConfiguration, Data: []byte("configuration")},
	})
	if len(resp) != 3 {
		t.Fatalf("%d responses for 3 entries", len(resp))
	}
	refusals, ok := resp[0].([]error)
	if !ok || len(refusals) != 2 || refusals[0] != nil || !errors.Is(refusals[1], store.ErrNotFound) {
		t.Fatalf("entry 3: %#v", resp[0])
	}
	if err, ok := resp[1].(error); !ok || err == nil {
		t.Fatalf("entry 4 (corrupt): %#v", resp[1])
	}
	if resp[2] != nil && len(resp[2].([]error)) != 0 {
		t.Fatalf("entry 5 (configuration): %#v", resp[2])
	}
	if j.AppliedIndex() != 5 {
		t.Fatalf("applied index %d, want 5", j.AppliedIndex())
	}
	if r, err := j.Get(1); err != nil || r.State != store.StatePrepared {
		t.Fatalf("record 1: %+v, %v", r, err)
	}
	// A replay changes nothing.
	if resp := f.Apply(&raft.Log{Index: 3, Type: raft.LogCommand, Data: store.EncodeCommands([]store.Command{cmd})}); resp != nil && len(resp.([]error)) != 0 {
		t.Fatalf("replayed entry: %#v", resp)
	}

	// A snapshot of the FSM restores into another journal.
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	sink := &memorySink{}
	if err := snap.Persist(sink); err != nil || !sink.closed {
		t.Fatalf("persist: %v (closed %v)", err, sink.closed)
	}
	snap.Release()
	j2, err := store.Open(filepath.Join(dir, "journal2"), store.Options{KeyFile: filepath.Join(dir, "journal.key"), Replicated: true, HousekeepingInterval: -1, Logger: quiet})
	if err != nil {
		t.Fatal(err)
	}
	defer j2.Close()
	f2 := &fsm{j: j2, log: quiet, fail: func(err error) { t.Errorf("fail: %v", err) }}
	if err := f2.Restore(io.NopCloser(bytes.NewReader(sink.Bytes()))); err != nil {
		t.Fatal(err)
	}
	if j2.AppliedIndex() != 5 {
		t.Fatalf("restored applied index %d", j2.AppliedIndex())
	}

	// A journal that cannot write makes the node stop.
	j.Close()
	f.ApplyBatch([]*raft.Log{{Index: 6, Type: raft.LogCommand, Data: store.EncodeCommands([]store.Command{commit})}})
	if failed == nil {
		t.Fatal("a closed journal did not stop the node")
	}
}

type memorySink struct {
	bytes.Buffer
	closed bool
}

func (s *memorySink) ID() string    { return "test" }
func (s *memorySink) Cancel() error { return nil }
func (s *memorySink) Close() error  { s.closed = true; return nil }
