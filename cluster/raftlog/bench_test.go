package raftlog

import (
	"fmt"
	"path/filepath"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
)

// BenchmarkStoreLogs is one StoreLogs call of batch logs of 256 bytes:
// one write and one fdatasync here, so the disk's sync time bounds it.
// store=bolt is raft-boltdb, the store this one replaced, for comparison
// in the same run.
func BenchmarkStoreLogs(b *testing.B) {
	stores := []struct {
		name string
		open func(b *testing.B) raft.LogStore
	}{
		{"raftlog", func(b *testing.B) raft.LogStore {
			s := openT(b, b.TempDir(), 0)
			b.Cleanup(func() { s.Close() })
			return s
		}},
		{"bolt", func(b *testing.B) raft.LogStore {
			s, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(b.TempDir(), "raft.db")})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { s.Close() })
			return s
		}},
	}
	for _, st := range stores {
		for _, batch := range []int{1, 16, 64} {
			b.Run(fmt.Sprintf("store=%s/batch=%d", st.name, batch), func(b *testing.B) {
				s := st.open(b)
				logs := make([]*raft.Log, batch)
				for k := range logs {
					logs[k] = &raft.Log{Term: 1, Type: raft.LogCommand, Data: make([]byte, 256)}
				}
				next := uint64(1)
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					for _, l := range logs {
						l.Index = next
						next++
					}
					if err := s.StoreLogs(logs); err != nil {
						b.Fatal(err)
					}
				}
				b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "logs/s")
			})
		}
	}
}
