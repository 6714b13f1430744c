package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/cluster"
	"github.com/ldapgate/ldapgate/store"
)

// BenchmarkClusterRecords is issue 18's journal throughput figure: a
// 3-node loopback cluster, 32 writers spread over the three nodes (the
// followers forward to the leader), each journaling its records as the
// write path does — a proposal of Prepares, then one of their Commits
// (with the entry key, as a delivered write's Commit carries) — with
// "records" records per proposal: 1 is one intercepted write per writer,
// 8 and 16 a writer that gathers writes into its proposals.
//
// Besides records/s (one record = its Prepare and its Commit) it reports
// the CPU time of the whole process per record (the three nodes and the
// writers, from getrusage), and what that CPU time would allow if the
// box's 2 cores were the benchmark's alone (records/s-2cores): on a box
// shared with other work, records/s says how much CPU the benchmark got
// as much as what the cluster costs. commands/entry is how many commands
// the leader gathered into each Raft log entry; p50-ms and p99-ms the
// time of a writer's Prepare+Commit round.
//
// Its "commit=background" runs journal as the gateway's write path does:
// a client waits for its write's Prepare (the directory sees the write
// only once a quorum holds it) but not for its Commit, which the mirror
// proposes in the background once the directory answered
// (Mirror.settleInBackground), so that a client's next Prepare goes
// while its last Commit is on its way; each writer keeps at most one
// Commit outstanding, and the clock stops once every Commit is applied.
// Its p50-ms and p99-ms are then the Prepare's, the wait a client sees.
func BenchmarkClusterRecords(b *testing.B) {
	for _, per := range []int{1, 8, 16} {
		b.Run(fmt.Sprintf("writers=32/records=%d", per), func(b *testing.B) { benchRecords(b, 32, per) })
	}
	for _, per := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=32/records=%d/commit=background", per), func(b *testing.B) {
			benchRecordsOpts(b, 32, per, benchOpts{backgroundCommit: true})
		})
	}
}

// BenchmarkClusterRecordsDelivered is BenchmarkClusterRecords with the
// records delivered as well, by the leader (to a deliverer that takes
// everything at once), as a cluster that mirrors to Axigen delivers
// them: each record then also costs its outcome's command, and the
// journal's index holds only the records on their way instead of every
// record written. The figures count each record's delivery: the clock
// stops once every node has applied every outcome.
func BenchmarkClusterRecordsDelivered(b *testing.B) {
	for _, per := range []int{1, 16} {
		b.Run(fmt.Sprintf("writers=32/records=%d", per), func(b *testing.B) { benchRecordsOpts(b, 32, per, benchOpts{deliver: true}) })
	}
}

func benchRecords(b *testing.B, writers, per int) { benchRecordsOpts(b, writers, per, benchOpts{}) }

// benchOpts are the variants of benchRecordsOpts.
type benchOpts struct {
	deliver          bool // the leader delivers every record
	backgroundCommit bool // a writer does not wait for its Commit (see BenchmarkClusterRecords)
}

// instant is a deliverer for which every delivery succeeds at once; it
// takes records in batches of up to 16, as the gateway's mirror does
// (--axigen-batch), so that a batch's outcomes share one proposal.
type instant struct{}

func (instant) Deliver(context.Context, *store.Record) error { return nil }
func (instant) MaxBatch() int                                { return 16 }
func (instant) DeliverBatch(_ context.Context, recs []*store.Record) []error {
	return make([]error, len(recs))
}

func benchRecordsOpts(b *testing.B, writers, per int, o benchOpts) {
	deliver := o.deliver
	var tune func(*cluster.Config)
	if deliver {
		// No leader delivered before: no previous one to wait out.
		tune = func(cfg *cluster.Config) { cfg.FenceDelay = time.Millisecond }
	}
	c := newCluster(b, 3, tune)
	c.startAll()
	if deliver {
		for _, n := range c.nodes {
			n.j.SetProposer(n.n)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			b.Cleanup(func() { cancel(); <-done })
			go func() {
				defer close(done)
				n.n.Deliver(ctx, func(ctx context.Context, term uint64) error {
					return n.j.RunTerm(ctx, term, 8, instant{})
				})
			}()
		}
	}
	lead := c.leader()
	c.write("warm-up")
	firstIndex := lead.n.AppliedIndex()
	rounds := (b.N + per - 1) / per
	var left atomic.Int64
	left.Store(int64(rounds))
	latencies := make([][]time.Duration, writers)
	b.ReportAllocs()
	cpu0 := cpuTime(b)
	b.ResetTimer()
	start := time.Now()
	var wg sync.WaitGroup
	for w := range writers {
		on := c.nodes[w%len(c.nodes)].n
		wg.Go(func() {
			cmds := make([]store.Command, per)
			uids := make([]string, per)
			// commits is the Commit on its way in the background (nil:
			// none), and commitErr its outcome.
			var commits chan struct{}
			var commitErr error
			waitCommit := func() bool {
				if commits == nil {
					return true
				}
				<-commits
				commits = nil
				if commitErr != nil {
					b.Errorf("commit: %v", commitErr)
					return false
				}
				return true
			}
			defer waitCommit()
			for i := 0; left.Add(-1) >= 0; i++ {
				t0 := time.Now()
				for k := range cmds {
					uids[k] = fmt.Sprintf("b%d-%d-%d", w, i, k)
					cmds[k] = prepare(account(uids[k]))
				}
				res, err := on.Propose(context.Background(), cmds)
				if err == nil {
					err = firstRefusal(res)
				}
				if err != nil {
					b.Errorf("prepare: %v", err)
					return
				}
				if o.backgroundCommit {
					latencies[w] = append(latencies[w], time.Since(t0))
					if !waitCommit() {
						return
					}
				}
				commit := make([]store.Command, per)
				for k := range commit {
					commit[k] = store.Command{Op: store.CmdCommit, Seq: res[k].Seq, EntryKey: "key-" + uids[k]}
				}
				propose := func() error {
					res, err := on.Propose(context.Background(), commit)
					if err == nil {
						err = firstRefusal(res)
					}
					return err
				}
				if o.backgroundCommit {
					done := make(chan struct{})
					commits = done
					go func() { defer close(done); commitErr = propose() }()
					continue
				}
				if err := propose(); err != nil {
					b.Errorf("commit: %v", err)
					return
				}
				latencies[w] = append(latencies[w], time.Since(t0))
			}
		})
	}
	wg.Wait()
	if deliver {
		waitFor(b, "every record delivered on every node", 5*time.Minute, func() bool {
			for _, n := range c.nodes {
				if st, err := n.j.Stats(); err != nil || st.Prepared+st.Committed > 0 {
					return false
				}
			}
			return true
		})
	}
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cpuTime(b) - cpu0
	records := float64(rounds * per)
	b.ReportMetric(records/elapsed.Seconds(), "records/s")
	b.ReportMetric(float64(cpu.Microseconds())/records, "cpu-µs/record")
	if cpu > 0 {
		b.ReportMetric(2*records/cpu.Seconds(), "records/s-2cores")
	}
	if entries := lead.n.AppliedIndex() - firstIndex; entries > 0 {
		b.ReportMetric(2*records/float64(entries), "commands/entry")
	}
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	slices.Sort(all)
	if len(all) > 0 {
		b.ReportMetric(float64(all[len(all)/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
	}
}

func firstRefusal(res []store.Applied) error {
	for _, r := range res {
		if r.Err != nil {
			return r.Err
		}
	}
	return nil
}

// cpuTime is the user and system CPU time this process has used.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
