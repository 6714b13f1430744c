package raftlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// boltLog writes a real raft.db with raft-boltdb: the logs of each run
// (from, to), a DeleteRange of del, and the stable keys raft keeps.
func boltLog(t *testing.T, path string, runs [][2]uint64, del [2]uint64) {
	t.Helper()
	bs, err := raftboltdb.New(raftboltdb.Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	for _, r := range runs {
		var logs []*raft.Log
		for i := r[0]; i <= r[1]; i++ {
			logs = append(logs, mkLog(i, 0))
		}
		if err := bs.StoreLogs(logs); err != nil {
			t.Fatal(err)
		}
	}
	if del != [2]uint64{} {
		if err := bs.DeleteRange(del[0], del[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := bs.SetUint64([]byte("CurrentTerm"), 7); err != nil {
		t.Fatal(err)
	}
	if err := bs.SetUint64([]byte("LastVoteTerm"), 6); err != nil {
		t.Fatal(err)
	}
	if err := bs.Set([]byte("LastVoteCand"), []byte("node-b")); err != nil {
		t.Fatal(err)
	}
}

func TestMigrateBolt(t *testing.T) {
	cases := []struct {
		name        string
		runs        [][2]uint64
		del         [2]uint64
		first, last uint64
	}{
		{name: "a compacted log", runs: [][2]uint64{{1, 700}}, del: [2]uint64{1, 123}, first: 124, last: 700},
		{name: "no logs, only keys", runs: nil},
		// A bolt follower that installed a snapshot past its log keeps its
		// old entries below a gap; they are older than the snapshot.
		{name: "a gap", runs: [][2]uint64{{1, 50}, {400, 460}}, first: 400, last: 460},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			bolt := filepath.Join(dir, "raft.db")
			logDir := filepath.Join(dir, "log")
			boltLog(t, bolt, tc.runs, tc.del)
			ok, err := MigrateBolt(context.Background(), bolt, logDir, Options{Logger: quiet()})
			if err != nil || !ok {
				t.Fatalf("MigrateBolt = %v, %v", ok, err)
			}
			if _, err := os.Stat(bolt); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("raft.db still there: %v", err)
			}
			if _, err := os.Stat(bolt + ".migrated"); err != nil {
				t.Fatal(err)
			}
			// A second start finds nothing to do.
			if ok, err := MigrateBolt(context.Background(), bolt, logDir, Options{}); ok || err != nil {
				t.Fatalf("second MigrateBolt = %v, %v; want false, nil", ok, err)
			}
			s := openT(t, logDir, 0)
			defer s.Close()
			m := newModel()
			for i := tc.first; i <= tc.last && tc.last != 0; i++ {
				m.store(mkLog(i, 0))
			}
			check(t, s, m, "migrated")
			for k, want := range map[string]uint64{"CurrentTerm": 7, "LastVoteTerm": 6} {
				if v, err := s.GetUint64([]byte(k)); err != nil || v != want {
					t.Fatalf("GetUint64(%s) = %d, %v; want %d", k, v, err, want)
				}
			}
			if v, err := s.Get([]byte("LastVoteCand")); err != nil || string(v) != "node-b" {
				t.Fatalf("Get(LastVoteCand) = %q, %v", v, err)
			}
		})
	}
}

func TestMigrateBoltInterrupted(t *testing.T) {
	t.Run("a half-built copy is started over", func(t *testing.T) {
		dir := t.TempDir()
		bolt := filepath.Join(dir, "raft.db")
		logDir := filepath.Join(dir, "log")
		boltLog(t, bolt, [][2]uint64{{1, 100}}, [2]uint64{})
		// What a crash in the middle of the copy leaves.
		s := openT(t, logDir+".migrating", 0)
		if err := s.StoreLogs([]*raft.Log{mkLog(1, 3), mkLog(2, 3)}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if ok, err := MigrateBolt(context.Background(), bolt, logDir, Options{Logger: quiet()}); !ok || err != nil {
			t.Fatalf("MigrateBolt = %v, %v", ok, err)
		}
		s = openT(t, logDir, 0)
		defer s.Close()
		m := newModel()
		for i := uint64(1); i <= 100; i++ {
			m.store(mkLog(i, 0))
		}
		check(t, s, m, "migrated")
		if _, err := os.Stat(logDir + ".migrating"); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the half-built copy is still there: %v", err)
		}
	})
	t.Run("a copy in place with raft.db left", func(t *testing.T) {
		dir := t.TempDir()
		bolt := filepath.Join(dir, "raft.db")
		logDir := filepath.Join(dir, "log")
		boltLog(t, bolt, [][2]uint64{{1, 10}}, [2]uint64{})
		s := openT(t, logDir, 0)
		if err := s.StoreLogs([]*raft.Log{mkLog(1, 4)}); err != nil {
			t.Fatal(err)
		}
		s.Close()
		if ok, err := MigrateBolt(context.Background(), bolt, logDir, Options{Logger: quiet()}); !ok || err != nil {
			t.Fatalf("MigrateBolt = %v, %v", ok, err)
		}
		s = openT(t, logDir, 0)
		defer s.Close()
		m := newModel()
		m.store(mkLog(1, 4))
		check(t, s, m, "the new log untouched")
		if _, err := os.Stat(bolt + ".migrated"); err != nil {
			t.Fatal(err)
		}
	})
}
