package axigen

import (
	"bufio"
	"context"
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

// loopReader yields data over and over.
type loopReader struct {
	data []byte
	at   int
}

func (l *loopReader) Read(p []byte) (int, error) {
	n := copy(p, l.data[l.at:])
	l.at = (l.at + n) % len(l.data)
	return n, nil
}

// BenchmarkReadAnswer reads the answer to an account's SHOW of its contact
// info, as a delivery does for each account, with the allocations it makes.
func BenchmarkReadAnswer(b *testing.B) {
	answer := "Contact Info:\r\n" +
		"  firstName = \"User\"\r\n  lastName = \"00001\"\r\n  nickName = \"v123\"\r\n" +
		"  businessEmail = \"user00001@example.com\"\r\n  personalEmail = \"\"\r\n" +
		"  phone = \"+1 555 0001\"\r\n  mobilePhone = \"\"\r\n  homePhone = \"\"\r\n  businessPhone = \"\"\r\n" +
		"  homeAddress = \"\"\r\n  businessAddress = \"\"\r\n" +
		"+OK: command successful\r\n<domain-account-contactInfo#> "
	s := &Session{r: bufio.NewReader(&loopReader{data: []byte(answer)})}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		ans, err := s.readAnswer(ctx, "SHOW", false, false)
		if err != nil || !ans.OK || len(ans.Lines) != 12 || ans.Context != "domain-account-contactInfo" {
			b.Fatalf("answer %+v, %v", ans, err)
		}
	}
}

// BenchmarkNewCommand builds a command with a value, as a plan's SET.
func BenchmarkNewCommand(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewCommand(Keyword("SET nickName"), Value("nickName", "v1234567")); err != nil {
			b.Fatal(err)
		}
	}
}
