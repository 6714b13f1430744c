package axigen

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/schema"
)

// BenchmarkApply measures desired-state applies per second against the
// simulator (in the same process, over loopback TCP) with a pool of 1 and
// of 4 sessions: "change" sets one contact field on every apply (read +
// write), "noop" applies a state Axigen already holds (read only). It also
// reports the process's CPU time per apply, the client's and the
// simulator's together: less noisy than the rate on a shared machine.
func BenchmarkApply(b *testing.B) {
	const accounts = 64
	for _, mode := range []string{"change", "noop"} {
		for _, sessions := range []int{1, 4} {
			b.Run(fmt.Sprintf("%s/sessions=%d", mode, sessions), func(b *testing.B) {
				e := newEnv(b, sessions)
				ctx := testCtx(b)
				desired := func(i int64) schema.Account {
					a := schema.Account{Name: "user" + strconv.Itoa(int(i%accounts)), Contact: map[string]string{
						"firstName": "User", "lastName": "Number " + strconv.Itoa(int(i%accounts)), "businessEmail": "user@example.com",
					}}
					if mode == "change" {
						a.Contact["firstName"] = "User " + strconv.FormatInt(i, 10)
					}
					return a
				}
				for i := range int64(accounts) {
					if _, err := e.client.ApplyAccount(ctx, testDomain, desired(i), ""); err != nil {
						b.Fatal(err)
					}
				}
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ReportAllocs()
				cpu0 := processCPU(b)
				b.ResetTimer()
				for range 2 * sessions {
					wg.Add(1)
					go func() {
						defer wg.Done()
						for {
							i := next.Add(1) + accounts
							if i > int64(b.N)+accounts {
								return
							}
							if _, err := e.client.ApplyAccount(ctx, testDomain, desired(i), ""); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
				b.ReportMetric(float64((processCPU(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			})
		}
	}
}

// processCPU is the CPU time (user and system) the process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
