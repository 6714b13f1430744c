package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/hashicorp/raft"

	"github.com/ldapgate/ldapgate/store"
)

// fsm is the Raft state machine: the journal. Each committed log entry is
// a batch of journal commands (store.EncodeCommands), applied in log order
// with its index (store.Journal.ApplyEntries); snapshots are the
// journal's own (store.Journal.Snapshot, Restore).
//
// An entry's response, handed to the proposer's future, is its commands'
// refusals ([]error, nil for each command applied), or an error for an
// entry that could not be decoded — refused alike on every node, so the
// state machines stay the same. A journal that cannot write is another
// matter: its state would no longer follow the log, so the node stops
// (fail) rather than go on as a member that has silently diverged.
type fsm struct {
	j       *store.Journal
	log     *slog.Logger
	fail    func(error)
	applied func() // the journal applied more entries (nil: no one asks)
	// cmds is the storage of the commands decoded for ApplyBatch, reused
	// from one batch to the next (Raft calls it from one goroutine): a
	// command is applied, not kept, and allocating each anew cost as much
	// as a tenth of what a node allocated per record.
	cmds []store.Command
}

// maxKeptCommands bounds the commands' storage an fsm keeps between
// batches.
const maxKeptCommands = 4096

var _ raft.BatchingFSM = (*fsm)(nil)

func (f *fsm) Apply(l *raft.Log) any { return f.ApplyBatch([]*raft.Log{l})[0] }

func (f *fsm) ApplyBatch(logs []*raft.Log) []any {
	resp := make([]any, len(logs))
	entries := make([]store.Entry, 0, len(logs))
	at := make([]int, 0, len(logs)) // entries[k] answers logs[at[k]]
	cmds := f.cmds[:0]
	defer func() {
		// The commands' records are the journal's now: not kept here.
		clear(cmds)
		if cap(cmds) <= maxKeptCommands {
			f.cmds = cmds[:0]
		}
	}()
	for i, l := range logs {
		e := store.Entry{Index: l.Index}
		if l.Type == raft.LogCommand {
			from := len(cmds)
			var err error
			if cmds, err = store.AppendDecodedCommands(cmds, l.Data); err != nil {
				// Still applied (empty): the entry's index is applied.
				resp[i] = fmt.Errorf("entry %d: %w", l.Index, err)
			} else {
				e.Commands = cmds[from:len(cmds):len(cmds)]
			}
		}
		// Configuration changes carry no command, but applying them keeps
		// the journal's applied index at the log's.
		entries = append(entries, e)
		at = append(at, i)
	}
	results, err := f.j.ApplyEntries(context.Background(), entries)
	if err != nil {
		f.fail(fmt.Errorf("the journal cannot apply the log: %w", err))
		for i := range resp {
			resp[i] = err
		}
		return resp
	}
	for k, i := range at {
		if resp[i] == nil {
			resp[i] = results[k]
		}
	}
	if f.applied != nil {
		f.applied()
	}
	return resp
}

func (f *fsm) Snapshot() (raft.FSMSnapshot, error) {
	s, err := f.j.Snapshot()
	if err != nil {
		return nil, err
	}
	return &fsmSnapshot{s: s, log: f.log}, nil
}

func (f *fsm) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	err := f.j.Restore(rc)
	if err == nil && f.applied != nil {
		f.applied()
	}
	return err
}

// fsmSnapshot writes a journal snapshot into Raft's snapshot store; Raft
// calls Persist while the journal goes on applying entries.
type fsmSnapshot struct {
	s   *store.Snapshot
	log *slog.Logger
}

func (s *fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	n, err := s.s.WriteTo(sink)
	if err != nil {
		sink.Cancel()
		return err
	}
	s.log.Debug("journal snapshot written", "applied", s.s.AppliedIndex(), "bytes", n)
	return sink.Close()
}

func (s *fsmSnapshot) Release() { s.s.Close() }
