package store

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// BenchmarkPrepareCommit journals b.N records (Prepare, durable with
// fsync, then Commit, lazy) from 1 or 32 concurrent writers, as the gateway
// does for each intercepted write. It reports records/s, Prepare's latency
// and the mutations per batch written.
func BenchmarkPrepareCommit(b *testing.B) {
	for _, writers := range []int{1, 32} {
		b.Run(fmt.Sprintf("writers=%d", writers), func(b *testing.B) { benchPrepareCommit(b, writers) })
	}
}

func benchPrepareCommit(b *testing.B, writers int) {
	dir := b.TempDir()
	var stalls stallCounter
	j, err := Open(filepath.Join(dir, "journal"), Options{
		KeyFile:              filepath.Join(dir, "journal.key"),
		HousekeepingInterval: -1,
		Logger:               slog.New(&stalls),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	var next atomic.Int64
	lat := make([][]time.Duration, writers)
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				r := accountRecord(fmt.Sprintf("uid=user%d,ou=people,dc=example,dc=org", i%1000))
				t0 := time.Now()
				seq, err := j.Prepare(ctx, r)
				lat[w] = append(lat[w], time.Since(t0))
				if err != nil {
					b.Error(err)
					return
				}
				if err := j.Commit(ctx, seq, ""); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	all := slices.Concat(lat...)
	slices.Sort(all)
	if len(all) == 0 {
		return
	}
	b.ReportMetric(float64(len(all))/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(all[len(all)/2].Microseconds()), "p50-prepare-µs")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds()), "p99-prepare-µs")
	b.ReportMetric(float64(stalls.n.Load()), "stalls")
	if n := j.w.stats.batches.Load(); n > 0 {
		b.ReportMetric(float64(j.w.stats.mutations.Load())/float64(n), "mutations/batch")
	}
}

// stallCounter is a log handler that counts Badger's write stalls (each
// holds every Prepare up) and drops everything else.
type stallCounter struct{ n atomic.Int64 }

func (c *stallCounter) Enabled(context.Context, slog.Level) bool { return true }
func (c *stallCounter) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "stalled") {
		c.n.Add(1)
	}
	return nil
}
func (c *stallCounter) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c *stallCounter) WithGroup(string) slog.Handler      { return c }

// BenchmarkGroupCommitDelay journals b.N records (Prepare, then Commit)
// from 8 writers, as the mirror benchmark's clients make them, with and
// without the durable batches' wait for company (Options.GroupCommitDelay),
// and reports the process's CPU time and the fsyncs per record.
func BenchmarkGroupCommitDelay(b *testing.B) {
	for _, delay := range []time.Duration{-1, time.Millisecond} {
		b.Run(fmt.Sprintf("delay=%v", max(delay, 0)), func(b *testing.B) { benchGroupCommitDelay(b, delay) })
	}
}

func benchGroupCommitDelay(b *testing.B, delay time.Duration) {
	dir := b.TempDir()
	j, err := Open(filepath.Join(dir, "journal"), Options{
		KeyFile:              filepath.Join(dir, "journal.key"),
		HousekeepingInterval: -1,
		Logger:               quietLogger(),
		GroupCommitDelay:     delay,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	ctx := context.Background()
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	cpu0 := processCPU()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				seq, err := j.Prepare(ctx, accountRecord(fmt.Sprintf("uid=user%d,ou=people,dc=example,dc=org", i%1000)))
				if err != nil {
					b.Error(err)
					return
				}
				if err := j.Commit(ctx, seq, ""); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	cpu := processCPU() - cpu0
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/record")
	b.ReportMetric(float64(j.w.stats.syncs.Load())/float64(b.N), "syncs/record")
}

// processCPU is the CPU time the process has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkMirroredWrites journals b.N records as the gateway does for the
// mirror benchmark's writes: 8 writers, each preparing a record (durable),
// waiting for the directory's answer (relay: a timer standing for slapd),
// then committing it (lazy), while the journal delivers the committed
// records (a lazy write each) to a deliverer that succeeds at once. It
// reports the process's CPU time per record, the records per sync, the
// batches (group commits) per record, and records/s. The CPU time
// includes the writers' and the timers' own, alike with any change of the
// journal.
func BenchmarkMirroredWrites(b *testing.B) {
	for _, relay := range []time.Duration{0, 2 * time.Millisecond} {
		b.Run(fmt.Sprintf("relay=%v", relay), func(b *testing.B) { benchMirroredWrites(b, relay) })
	}
}

func benchMirroredWrites(b *testing.B, relay time.Duration) {
	dir := b.TempDir()
	j, err := Open(filepath.Join(dir, "journal"), Options{
		KeyFile:              filepath.Join(dir, "journal.key"),
		HousekeepingInterval: -1,
		Logger:               quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	defer j.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var delivered atomic.Int64
	allDelivered := make(chan struct{})
	ran := make(chan error, 1)
	go func() {
		ran <- j.Run(ctx, 4, DeliverFunc(func(context.Context, *Record) error {
			if delivered.Add(1) == int64(b.N) {
				close(allDelivered)
			}
			return nil
		}))
	}()
	defer func() {
		cancel()
		<-ran
	}()
	var next atomic.Int64
	var wg sync.WaitGroup
	syncs0, batches0 := j.w.stats.syncs.Load(), j.w.stats.batches.Load()
	b.ResetTimer()
	start := time.Now()
	cpu0 := processCPU()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var t *time.Timer
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				seq, err := j.Prepare(ctx, accountRecord(fmt.Sprintf("uid=user%d,ou=people,dc=example,dc=org", i%1000)))
				if err != nil {
					b.Error(err)
					return
				}
				if relay > 0 {
					if t == nil {
						t = time.NewTimer(relay)
					} else {
						t.Reset(relay)
					}
					<-t.C
				}
				if err := j.Commit(ctx, seq, ""); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// The deliveries of the last records are part of the work measured.
	select {
	case <-allDelivered:
	case <-time.After(30 * time.Second):
		b.Fatalf("%d of %d records delivered after 30s", delivered.Load(), b.N)
	}
	cpu := processCPU() - cpu0
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-µs/record")
	b.ReportMetric(float64(b.N)/float64(max(1, j.w.stats.syncs.Load()-syncs0)), "records/sync")
	b.ReportMetric(float64(j.w.stats.batches.Load()-batches0)/float64(b.N), "batches/record")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
}
