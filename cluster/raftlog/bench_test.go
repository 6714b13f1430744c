package raftlog

import (
	"fmt"
	"testing"

	"github.com/hashicorp/raft"
)

// BenchmarkStoreLogs is one StoreLogs call of batch logs of 256 bytes:
// one write and one fdatasync, so the disk's sync time bounds it.
func BenchmarkStoreLogs(b *testing.B) {
	for _, batch := range []int{1, 16, 64} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := openT(b, b.TempDir(), 0)
			defer s.Close()
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
