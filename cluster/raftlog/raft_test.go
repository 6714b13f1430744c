package raftlog

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// countFSM records the commands it applied.
type countFSM struct {
	mu   sync.Mutex
	cmds []string
}

func (f *countFSM) Apply(l *raft.Log) any {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.cmds = append(f.cmds, string(l.Data))
	return nil
}
func (f *countFSM) Snapshot() (raft.FSMSnapshot, error) { return nil, fmt.Errorf("no snapshots here") }
func (f *countFSM) Restore(io.ReadCloser) error         { return fmt.Errorf("no snapshots here") }

func (f *countFSM) applied() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.cmds...)
}

// startRaft runs a one-node Raft on logs, bootstrapping it if new, and
// waits until it leads.
func startRaft(t *testing.T, logs raft.LogStore, stable raft.StableStore, fsm raft.FSM) *raft.Raft {
	t.Helper()
	c := raft.DefaultConfig()
	c.LocalID = "n1"
	c.HeartbeatTimeout = 50 * time.Millisecond
	c.ElectionTimeout = 50 * time.Millisecond
	c.LeaderLeaseTimeout = 50 * time.Millisecond
	c.Logger = hclog.NewNullLogger()
	_, trans := raft.NewInmemTransport("n1")
	snaps := raft.NewInmemSnapshotStore()
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		t.Fatal(err)
	}
	if !existing {
		if err := raft.BootstrapCluster(c, logs, stable, snaps, trans, raft.Configuration{Servers: []raft.Server{{ID: "n1", Address: trans.LocalAddr()}}}); err != nil {
			t.Fatal(err)
		}
	}
	r, err := raft.NewRaft(c, fsm, logs, stable, snaps, trans)
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for r.State() != raft.Leader {
		if time.Now().After(deadline) {
			t.Fatal("no leader in 10s")
		}
		select {
		case <-r.LeaderCh():
		case <-time.After(20 * time.Millisecond):
		}
	}
	return r
}

func apply(t *testing.T, r *raft.Raft, cmds ...string) {
	t.Helper()
	for _, c := range cmds {
		if err := r.Apply([]byte(c), 5*time.Second).Error(); err != nil {
			t.Fatal(err)
		}
	}
}

// A node that ran Raft on raft-boltdb comes back on the migrated store
// with its term, its log, and the commands it had applied.
func TestRaftAfterMigration(t *testing.T) {
	dir := t.TempDir()
	bolt := filepath.Join(dir, "raft.db")
	bs, err := raftboltdb.New(raftboltdb.Options{Path: bolt})
	if err != nil {
		t.Fatal(err)
	}
	fsm := &countFSM{}
	r := startRaft(t, bs, bs, fsm)
	apply(t, r, "a", "b", "c")
	term := r.Stats()["term"]
	if err := r.Shutdown().Error(); err != nil {
		t.Fatal(err)
	}
	lastBolt, _ := bs.LastIndex()
	bs.Close()

	logDir := filepath.Join(dir, "log")
	if ok, err := MigrateBolt(context.Background(), bolt, logDir, Options{Logger: quiet()}); !ok || err != nil {
		t.Fatalf("MigrateBolt = %v, %v", ok, err)
	}
	s := openT(t, logDir, 0)
	defer s.Close()
	if last, _ := s.LastIndex(); last != lastBolt {
		t.Fatalf("migrated last index %d; bolt had %d", last, lastBolt)
	}
	if got, err := s.GetUint64([]byte("CurrentTerm")); err != nil || fmt.Sprint(got) != term {
		t.Fatalf("CurrentTerm = %d, %v; raft was at term %s", got, err, term)
	}
	fsm2 := &countFSM{}
	r = startRaft(t, s, s, fsm2)
	defer r.Shutdown()
	apply(t, r, "d")
	// Without snapshots, a restarted node replays its whole log.
	if got := fmt.Sprint(fsm2.applied()); got != "[a b c d]" {
		t.Fatalf("applied %s after the migration; want [a b c d]", got)
	}
}

// Readers run beside appends, rotations and compactions (go test -race).
func TestConcurrentReaders(t *testing.T) {
	s := openT(t, t.TempDir(), 4096)
	defer s.Close()
	if err := s.StoreLog(mkLog(1, 0)); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 3 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				first, _ := s.FirstIndex()
				last, _ := s.LastIndex()
				for i := last; i >= first && i > last-5 && i > 0; i-- {
					var l raft.Log
					err := s.GetLog(i, &l)
					if err == raft.ErrLogNotFound {
						continue // compacted meanwhile
					}
					if err != nil || l.Index != i {
						errs <- fmt.Errorf("GetLog(%d) = %d, %v", i, l.Index, err)
						return
					}
				}
			}
		})
	}
	for i := uint64(2); i <= 2000; i += 4 {
		logs := []*raft.Log{mkLog(i, 0), mkLog(i+1, 0), mkLog(i+2, 0), mkLog(i+3, 0)}
		if err := s.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
		if i%200 == 2 {
			if err := s.DeleteRange(0, i-100); err != nil {
				t.Fatal(err)
			}
		}
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
