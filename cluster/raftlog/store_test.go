package raftlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func openT(t testing.TB, dir string, seg int64) *Store {
	t.Helper()
	s, err := Open(context.Background(), dir, Options{SegmentSize: seg, Logger: quiet()})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return s
}

// mkLog is the log of index i written in generation gen: every field set,
// and contents that differ between generations, so that a read of a
// truncated tail's stale bytes does not pass for the new log.
func mkLog(i uint64, gen int) *raft.Log {
	size := int(i*7+uint64(gen)*13) % 300
	var data []byte // an empty Data reads back nil, as from raft-boltdb
	if size > 0 {
		data = bytes.Repeat([]byte{byte(i), byte(gen)}, size)
	}
	l := &raft.Log{
		Index:      i,
		Term:       i/10 + 1 + uint64(gen),
		Type:       raft.LogType(i % 7),
		Data:       data,
		AppendedAt: time.Unix(1_700_000_000+int64(i), int64(i*1000+uint64(gen))).UTC(),
	}
	if i%3 == 0 {
		l.Extensions = []byte(fmt.Sprintf("ext-%d-%d", i, gen))
	}
	if i%5 == 0 {
		l.AppendedAt = time.Time{}
		l.Data = nil
	}
	return l
}

// model is what a store should hold.
type model struct {
	logs  map[uint64]*raft.Log
	first uint64
	last  uint64
}

func newModel() *model { return &model{logs: map[uint64]*raft.Log{}} }

func (m *model) store(ls ...*raft.Log) {
	for _, l := range ls {
		if m.last != 0 && l.Index > m.last+1 { // past a snapshot: a new log
			m.logs, m.first, m.last = map[uint64]*raft.Log{}, 0, 0
		}
		m.logs[l.Index] = l
		if m.last == 0 {
			m.first = l.Index
		}
		m.last = l.Index
	}
}

func (m *model) del(min, max uint64) {
	for i := min; i <= max && i <= m.last; i++ {
		delete(m.logs, i)
	}
	if len(m.logs) == 0 {
		m.first, m.last = 0, 0
		return
	}
	for m.logs[m.first] == nil {
		m.first++
	}
	for m.logs[m.last] == nil {
		m.last--
	}
}

func check(t *testing.T, s *Store, m *model, when string) {
	t.Helper()
	first, err := s.FirstIndex()
	if err != nil {
		t.Fatal(err)
	}
	last, err := s.LastIndex()
	if err != nil {
		t.Fatal(err)
	}
	if first != m.first || last != m.last {
		t.Fatalf("%s: first, last = %d, %d; want %d, %d", when, first, last, m.first, m.last)
	}
	for i := first; i <= last && last != 0; i++ {
		var got raft.Log
		if err := s.GetLog(i, &got); err != nil {
			t.Fatalf("%s: GetLog(%d): %v", when, i, err)
		}
		if want := m.logs[i]; !reflect.DeepEqual(&got, want) {
			t.Fatalf("%s: GetLog(%d) = %+v\nwant %+v", when, i, got, *want)
		}
	}
	for _, i := range []uint64{0, first - 1, last + 1, last + 1000} {
		if i >= first && i <= last && last != 0 {
			continue
		}
		var got raft.Log
		if err := s.GetLog(i, &got); !errors.Is(err, raft.ErrLogNotFound) {
			t.Fatalf("%s: GetLog(%d) outside %d..%d = %v; want ErrLogNotFound", when, i, first, last, err)
		}
	}
}

type op struct {
	store      [2]uint64 // from, to (inclusive); zero: none
	batch      int       // logs per StoreLogs call; 0: StoreLog one by one
	del        [2]uint64 // DeleteRange min, max
	wantErr    string    // the op must fail, with this in its error
	bigEntries bool      // 1 MiB entries
}

func TestConformance(t *testing.T) {
	cases := []struct {
		name string
		seg  int64
		ops  []op
	}{
		{name: "empty"},
		{name: "store log", ops: []op{{store: [2]uint64{1, 20}}}},
		{name: "store logs", ops: []op{{store: [2]uint64{1, 500}, batch: 64}}},
		{name: "start past one", ops: []op{{store: [2]uint64{1000, 1100}, batch: 7}}},
		{name: "gap starts a new log", seg: 2048, ops: []op{{store: [2]uint64{1, 100}, batch: 3}, {del: [2]uint64{1, 30}}, {store: [2]uint64{102, 113}, batch: 2}}},
		{name: "overlap refused", ops: []op{{store: [2]uint64{1, 10}, batch: 3}, {store: [2]uint64{10, 11}, batch: 2, wantErr: "gaps"}}},
		{name: "index zero refused", ops: []op{{store: [2]uint64{0, 1}, batch: 2, wantErr: "gaps"}}},
		{name: "rotation", seg: 2048, ops: []op{{store: [2]uint64{1, 400}, batch: 5}}},
		{name: "rotation one by one", seg: 1024, ops: []op{{store: [2]uint64{1, 120}}}},
		{name: "delete head in a segment", ops: []op{{store: [2]uint64{1, 100}, batch: 10}, {del: [2]uint64{1, 40}}}},
		{name: "delete head across segments", seg: 2048, ops: []op{{store: [2]uint64{1, 400}, batch: 5}, {del: [2]uint64{1, 237}}}},
		{name: "delete head twice and again", seg: 2048, ops: []op{{store: [2]uint64{1, 400}, batch: 5}, {del: [2]uint64{1, 100}}, {del: [2]uint64{1, 100}}, {del: [2]uint64{50, 300}}, {del: [2]uint64{1, 10}}}},
		{name: "delete head then append", seg: 2048, ops: []op{{store: [2]uint64{1, 200}, batch: 5}, {del: [2]uint64{1, 150}}, {store: [2]uint64{201, 400}, batch: 9}}},
		{name: "delete tail in a segment", ops: []op{{store: [2]uint64{1, 100}, batch: 10}, {del: [2]uint64{61, 100}}, {store: [2]uint64{61, 90}, batch: 4}}},
		{name: "delete tail across segments", seg: 2048, ops: []op{{store: [2]uint64{1, 400}, batch: 5}, {del: [2]uint64{123, 400}}, {store: [2]uint64{123, 200}, batch: 3}}},
		{name: "delete tail past the end", ops: []op{{store: [2]uint64{1, 50}}, {del: [2]uint64{40, 1000}}, {store: [2]uint64{40, 45}}}},
		{name: "delete tail of one", ops: []op{{store: [2]uint64{1, 50}}, {del: [2]uint64{50, 50}}, {store: [2]uint64{50, 52}}}},
		{name: "delete all", ops: []op{{store: [2]uint64{1, 50}, batch: 50}, {del: [2]uint64{1, 50}}}},
		{name: "delete all then a new start", seg: 2048, ops: []op{{store: [2]uint64{1, 300}, batch: 50}, {del: [2]uint64{1, 150}}, {del: [2]uint64{0, 1 << 62}}, {store: [2]uint64{5000, 5100}, batch: 10}}},
		{name: "delete all then the same start", ops: []op{{store: [2]uint64{10, 30}, batch: 5}, {del: [2]uint64{10, 20}}, {del: [2]uint64{10, 30}}, {store: [2]uint64{10, 12}}}},
		{name: "delete on empty", ops: []op{{del: [2]uint64{1, 100}}}},
		{name: "delete outside", ops: []op{{store: [2]uint64{10, 30}, batch: 5}, {del: [2]uint64{31, 100}}, {del: [2]uint64{1, 9}}, {del: [2]uint64{20, 10}}}},
		{name: "delete middle refused", ops: []op{{store: [2]uint64{1, 30}, batch: 5}, {del: [2]uint64{10, 20}, wantErr: "middle"}}},
		{name: "large entries", seg: 1 << 20, ops: []op{{store: [2]uint64{1, 6}, batch: 2, bigEntries: true}, {del: [2]uint64{1, 2}}, {del: [2]uint64{6, 6}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, tc.seg)
			defer func() { s.Close() }()
			m := newModel()
			check(t, s, m, "new")
			for k, o := range tc.ops {
				gen := k
				var err error
				if o.store != [2]uint64{} {
					var logs []*raft.Log
					for i := o.store[0]; i <= o.store[1]; i++ {
						l := mkLog(i, gen)
						if o.bigEntries {
							l.Data = bytes.Repeat([]byte{byte(i)}, 1<<20)
						}
						logs = append(logs, l)
					}
					if o.batch == 0 {
						for _, l := range logs {
							if err = s.StoreLog(l); err != nil {
								break
							}
							m.store(l)
						}
					} else {
						for len(logs) > 0 && err == nil {
							n := min(o.batch, len(logs))
							if err = s.StoreLogs(logs[:n]); err == nil {
								m.store(logs[:n]...)
							}
							logs = logs[n:]
						}
					}
				} else {
					if err = s.DeleteRange(o.del[0], o.del[1]); err == nil {
						m.del(o.del[0], o.del[1])
					}
				}
				if o.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), o.wantErr) {
						t.Fatalf("op %d: err = %v; want one saying %q", k, err, o.wantErr)
					}
				} else if err != nil {
					t.Fatalf("op %d: %v", k, err)
				}
				check(t, s, m, fmt.Sprintf("after op %d", k))
				if err := s.Close(); err != nil {
					t.Fatal(err)
				}
				s = openT(t, dir, tc.seg)
				check(t, s, m, fmt.Sprintf("reopened after op %d", k))
			}
			// Appends go on after the last op, and after a reopen.
			next := m.last + 1
			if m.last == 0 {
				next = 77
			}
			l := mkLog(next, 99)
			if err := s.StoreLog(l); err != nil {
				t.Fatal(err)
			}
			m.store(l)
			check(t, s, m, "appended at the end")
			s.Close()
			s = openT(t, dir, tc.seg)
			check(t, s, m, "reopened at the end")
		})
	}
}

func TestSegmentFiles(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 1024)
	defer s.Close()
	for i := uint64(1); i <= 100; i++ {
		if err := s.StoreLog(mkLog(i, 0)); err != nil {
			t.Fatal(err)
		}
	}
	bases, err := listSegments(osFS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(bases) < 5 {
		t.Fatalf("%d segments of 1 KiB for 100 logs; want rotation", len(bases))
	}
	for _, b := range bases[:len(bases)-1] {
		fi, err := os.Stat(filepath.Join(dir, segName(b)))
		if err != nil {
			t.Fatal(err)
		}
		// Rotated once past the size: no more than one batch (one log) over.
		if fi.Size() < 1024 || fi.Size() > 1024+int64(recordSize(mkLog(1, 0)))+600 {
			t.Errorf("segment %d holds %d bytes; want about 1 KiB", b, fi.Size())
		}
	}
	if err := s.DeleteRange(1, 60); err != nil {
		t.Fatal(err)
	}
	after, err := listSegments(osFS{}, dir)
	if err != nil {
		t.Fatal(err)
	}
	if after[0] > 61 || len(after) >= len(bases) {
		t.Fatalf("after deleting to 60 the segments start at %v (were %v); want the whole ones below 61 gone and 61 kept", after, bases)
	}
}

func TestStable(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, 0)
	if v, err := s.Get([]byte("missing")); err == nil || err.Error() != "not found" || v != nil {
		// raft tells a missing key by this text (raft.go, api.go).
		t.Fatalf("Get(missing) = %q, %v; want nil, \"not found\"", v, err)
	}
	if v, err := s.GetUint64([]byte("missing")); err == nil || err.Error() != "not found" || v != 0 {
		t.Fatalf("GetUint64(missing) = %d, %v; want 0, \"not found\"", v, err)
	}
	steps := []struct {
		key string
		val []byte
		u   uint64
		isU bool
	}{
		{key: "CurrentTerm", u: 1, isU: true},
		{key: "LastVoteCand", val: []byte("node-a")},
		{key: "LastVoteTerm", u: 1, isU: true},
		{key: "CurrentTerm", u: 1 << 40, isU: true},
		{key: "LastVoteCand", val: []byte("node-b")},
		{key: "empty", val: []byte{}},
	}
	want := map[string][]byte{}
	for _, st := range steps {
		if st.isU {
			if err := s.SetUint64([]byte(st.key), st.u); err != nil {
				t.Fatal(err)
			}
			want[st.key] = []byte{byte(st.u >> 56), byte(st.u >> 48), byte(st.u >> 40), byte(st.u >> 32), byte(st.u >> 24), byte(st.u >> 16), byte(st.u >> 8), byte(st.u)}
		} else {
			if err := s.Set([]byte(st.key), st.val); err != nil {
				t.Fatal(err)
			}
			want[st.key] = st.val
		}
	}
	checkKeys := func(s *Store, when string) {
		for k, v := range want {
			got, err := s.Get([]byte(k))
			if err != nil || !bytes.Equal(got, v) {
				t.Fatalf("%s: Get(%s) = %q, %v; want %q", when, k, got, err, v)
			}
		}
		if u, err := s.GetUint64([]byte("CurrentTerm")); err != nil || u != 1<<40 {
			t.Fatalf("%s: GetUint64(CurrentTerm) = %d, %v", when, u, err)
		}
		if _, err := s.GetUint64([]byte("LastVoteCand")); err == nil {
			t.Fatalf("%s: GetUint64 of a 6-byte value succeeded", when)
		}
	}
	checkKeys(s, "set")
	s.Close()
	s = openT(t, dir, 0)
	defer s.Close()
	checkKeys(s, "reopened")
	// A temporary file left by a crash before the rename is not the state.
	if err := os.WriteFile(filepath.Join(dir, stableName+tempSuffix), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	s.Close()
	s = openT(t, dir, 0)
	checkKeys(s, "reopened past a temp file")
}
