package store

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkIndexPrepareCommit is the index's share of a record in a
// replicated journal: its Prepare (no entry key yet), then its Commit
// naming the entry key, as every node applies them. backlog=all keeps
// every record, as BenchmarkClusterRecords does (its records are never
// delivered); backlog=256 delivers each record once 256 are waiting, as
// a cluster that keeps up with its writes does.
func BenchmarkIndexPrepareCommit(b *testing.B) {
	for _, backlog := range []int{0, 256} {
		name := "backlog=all"
		if backlog > 0 {
			name = fmt.Sprintf("backlog=%d", backlog)
		}
		b.Run(name, func(b *testing.B) {
			x := newIndex(nil)
			at := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
			recs := make([]*Record, b.N)
			for i := range recs {
				r := accountRecord(fmt.Sprintf("uid=b%d,ou=people,dc=example,dc=org", i))
				r.Seq, r.Time, r.State = uint64(i+1), at, StatePrepared
				recs[i] = r
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i, r := range recs {
				x.put(r, nil)
				c := r.next()
				c.State, c.NextAttempt, c.EntryKey = StateCommitted, at, fmt.Sprintf("key-%d", i)
				x.put(c, nil)
				if backlog > 0 && i >= backlog {
					d := recs[i-backlog].next()
					d.State = StateDelivered
					x.put(d, nil)
				}
			}
		})
	}
}
