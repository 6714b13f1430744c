package axigen

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ldapgate/ldapgate/schema"
)

// BenchmarkApply measures desired-state applies per second against the
// simulator (in the same process, over loopback TCP) with a pool of 1 and
// of 4 sessions: "change" sets one contact field on every apply (read +
// write), "noop" applies a state Axigen already holds (read only).
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
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "applies/s")
			})
		}
	}
}
