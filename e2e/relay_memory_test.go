package e2e

// Issue 16, item 8: the gateway's memory stays bounded whatever the
// journal's length and the size of the values written: searches of
// cn=changelog stream from the journal, and Badger is sized for a gateway.

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// procStatusKiB reads one "Vm…:" figure of a process from /proc, in KiB.
func procStatusKiB(pid int, field string) (int, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			return strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", field, pid)
}

// bigValue is n bytes of random letters: values Badger's compression
// cannot shrink.
func bigValue(rng *rand.Rand, n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + rng.IntN(26))
	}
	return string(b)
}

// TestRelayMemoryBounded builds a journal of 3,000 records with 32 KB
// values, then runs 8 concurrent searches of cn=changelog while a flood of
// 32 KB writes goes on: the gateway's peak resident set (VmHWM) must stay
// under 256 MiB.
func TestRelayMemoryBounded(t *testing.T) {
	const (
		users    = 16
		records  = 3000
		valueLen = 32 << 10
		searches = 8
		limitMiB = 256
	)
	e := newMirrorEnv(t, mirrorOptions{Users: users, LogLevel: "warn"})
	pid := e.gw.cmd.Process.Pid
	write := func(c *ldap.Conn, rng *rand.Rand, n int) error {
		uid := slapd.UserUID(n % users)
		mr := ldap.NewModifyRequest(userDN(uid), nil)
		mr.Replace("telephoneNumber", []string{fmt.Sprintf("+1 555 %07d", n)})
		mr.Replace("description", []string{bigValue(rng, valueLen)})
		return c.Modify(mr)
	}
	writers := func(n int, stop *atomic.Bool, count *atomic.Int64) error {
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
				defer c.Close()
				rng := rand.New(rand.NewPCG(uint64(w), uint64(n)))
				for i := w; (n == 0 || i < n) && !stop.Load(); i += 8 {
					if err := write(c, rng, i); err != nil {
						errs <- fmt.Errorf("write %d: %w", i, err)
						return
					}
					count.Add(1)
				}
			}()
		}
		wg.Wait()
		close(errs)
		return <-errs
	}

	start := time.Now()
	var built atomic.Int64
	if err := writers(records, new(atomic.Bool), &built); err != nil {
		t.Fatal(err)
	}
	rssBuilt, _ := procStatusKiB(pid, "VmRSS")
	t.Logf("journal of %d records with %d KB values built in %v; gateway RSS %d MiB", built.Load(), valueLen>>10, time.Since(start).Round(time.Second), rssBuilt>>10)

	// The searches and the flood, with the RSS sampled meanwhile.
	var stop atomic.Bool
	var flooded atomic.Int64
	floodErr := make(chan error, 1)
	go func() { floodErr <- writers(0, &stop, &flooded) }()
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for !stop.Load() {
			if kib, err := procStatusKiB(pid, "VmRSS"); err == nil && int64(kib) > peak.Load() {
				peak.Store(int64(kib))
			}
			time.Sleep(50 * time.Millisecond) // sampling interval
		}
	}()
	var wg sync.WaitGroup
	searchErrs := make(chan error, searches)
	for i := range searches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)
			defer c.Close()
			n, err := countChangelog(c, uint32(50+50*(i%2)))
			if err != nil {
				searchErrs <- fmt.Errorf("search %d: %w", i, err)
				return
			}
			if n < records {
				searchErrs <- fmt.Errorf("search %d: %d entries, want at least %d", i, n, records)
			}
		}()
	}
	wg.Wait()
	stop.Store(true)
	<-sampled
	if err := <-floodErr; err != nil {
		t.Fatal(err)
	}
	close(searchErrs)
	for err := range searchErrs {
		t.Error(err)
	}
	hwm, err := procStatusKiB(pid, "VmHWM")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("gateway memory: peak RSS sampled %d MiB, VmHWM %d MiB (limit %d MiB), with %d searches of cn=changelog and %d writes of %d KB during them",
		peak.Load()>>10, hwm>>10, limitMiB, searches, flooded.Load(), valueLen>>10)
	if hwm>>10 >= limitMiB {
		t.Errorf("the gateway's peak RSS was %d MiB, over %d MiB", hwm>>10, limitMiB)
	}
}

// countChangelog reads every change of cn=changelog, a page at a time (a
// page is all the client holds), and counts them.
func countChangelog(c *ldap.Conn, pageSize uint32) (int, error) {
	paging := ldap.NewControlPaging(pageSize)
	n := 0
	for {
		res, err := c.Search(ldap.NewSearchRequest("cn=changelog", ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
			0, 0, false, "(objectClass=*)", []string{"changeNumber", "changes"}, []ldap.Control{paging}))
		if err != nil {
			return n, err
		}
		n += len(res.Entries)
		next, ok := ldap.FindControl(res.Controls, ldap.ControlTypePaging).(*ldap.ControlPaging)
		if !ok || len(next.Cookie) == 0 {
			return n, nil
		}
		paging.SetCookie(next.Cookie)
	}
}
