package e2e

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// Upstream failover (issue 7) with two real slapd servers, a provider and
// its syncrepl consumer, behind one mirroring gateway (--upstream provider
// --upstream consumer). Eight go-ldap clients work through the gateway, six
// reading and two writing accounts; the provider is killed under that load.
// Every reader reads again, from the consumer, within 2 s of the kill; no
// operation hangs (each ends within its 10 s bound, none comes near it);
// writes while the provider is down are refused (the consumer is
// read-only), never acknowledged; and every write acknowledged before the
// kill is in the directory (the provider, once back) and in the journal.
func TestFailoverUpstreamReadsMoveToTheOtherServer(t *testing.T) {
	const (
		users   = 12
		readers = 6
		writers = 2
	)
	e := newMirrorEnv(t, mirrorOptions{Users: users, LogLevel: "info"})
	e.stop()
	consumer := startConsumer(t, e.dir.URL, refreshAndPersist)
	waitFor(t, 30*time.Second, "the consumer to hold every user", func() error {
		c, err := consumer.AdminConn(context.Background())
		if err != nil {
			return err
		}
		defer c.Close()
		res, err := c.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
			0, 0, false, "(uid=user*)", []string{"1.1"}, nil))
		if err != nil {
			return err
		}
		if len(res.Entries) != users {
			return fmt.Errorf("%d of %d users", len(res.Entries), users)
		}
		return nil
	})
	e.args = append(e.args, "--upstream", consumer.URL, "--dial-timeout", "1s")
	e.start()

	type readerStats struct {
		firstAfterKill time.Time
		ops            int
	}
	var (
		mu        sync.Mutex
		stats     = make([]readerStats, readers)
		longest   time.Duration
		killedAt  atomic.Int64 // unix nanoseconds; 0 before the kill
		ledger    = &crashLedger{writes: map[string][]crashWrite{}, initial: map[string]string{}}
		opsBefore atomic.Int64
		// refusedAfterKill counts writes answered with an error after the kill.
		refusedAfterKill atomic.Int64
		acked            atomic.Int64
	)
	observe := func(start time.Time) {
		d := time.Since(start)
		mu.Lock()
		longest = max(longest, d)
		mu.Unlock()
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for r := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			uid := slapd.UserUID(r)
			var conn *ldap.Conn
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for ctx.Err() == nil {
				start := time.Now()
				if conn == nil {
					c, err := ldap.DialURL(e.gw.URL)
					if err == nil {
						c.SetTimeout(10 * time.Second)
						if err = c.Bind(userDN(uid), slapd.UserPassword(r)); err != nil {
							c.Close()
						}
					}
					observe(start)
					if err != nil {
						continue // the gateway is there; the directory may not be
					}
					conn = c
				}
				start = time.Now()
				res, err := conn.Search(ldap.NewSearchRequest(mirrorAccountBase, ldap.ScopeSingleLevel, ldap.NeverDerefAliases,
					0, 0, false, "(uid="+uid+")", []string{"mail"}, nil))
				observe(start)
				if err != nil || len(res.Entries) != 1 {
					conn.Close()
					conn = nil
					continue
				}
				opsBefore.Add(1)
				mu.Lock()
				stats[r].ops++
				if k := killedAt.Load(); k != 0 && stats[r].firstAfterKill.IsZero() && start.UnixNano() > k {
					stats[r].firstAfterKill = time.Now()
				}
				mu.Unlock()
			}
		}()
	}
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var conn *ldap.Conn
			defer func() {
				if conn != nil {
					conn.Close()
				}
			}()
			for n := 0; ctx.Err() == nil; n++ {
				uid := slapd.UserUID(readers + w + writers*(n%((users-readers)/writers)))
				key, value := "phone:"+uid, fmt.Sprintf("+1 555 %d%06d", w, n)
				if conn == nil {
					c, err := ldap.DialURL(e.gw.URL)
					if err == nil {
						c.SetTimeout(10 * time.Second)
						if err = c.Bind(mirrorAdminDN, e.dir.RootPW); err != nil {
							c.Close()
						}
					}
					if err != nil {
						ledger.add(key, crashWrite{value: value, outcome: failed, err: err})
						continue
					}
					conn = c
				}
				req := ldap.NewModifyRequest(userDN(uid), nil)
				req.Replace("telephoneNumber", []string{value})
				start := time.Now()
				err := conn.Modify(req)
				observe(start)
				o := classifyWriteError(err)
				ledger.add(key, crashWrite{value: value, outcome: o, err: err})
				if o == succeeded {
					acked.Add(1)
				}
				if o == failed && killedAt.Load() != 0 {
					refusedAfterKill.Add(1)
				}
				if o == unknown || (o == failed && killedAt.Load() != 0) {
					conn.Close()
					conn = nil
				}
			}
		}()
	}

	waitFor(t, 30*time.Second, "reads and writes under way", func() error {
		if opsBefore.Load() < 200 || acked.Load() < 40 {
			return fmt.Errorf("%d reads, %d acknowledged writes", opsBefore.Load(), acked.Load())
		}
		return nil
	})
	killedAt.Store(time.Now().UnixNano())
	killed := time.Now()
	if err := e.dir.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 15*time.Second, "every reader reading again", func() error {
		mu.Lock()
		defer mu.Unlock()
		for r, s := range stats {
			if s.firstAfterKill.IsZero() {
				return fmt.Errorf("reader %d has not read since the kill", r)
			}
		}
		return nil
	})
	waitFor(t, 15*time.Second, "writes refused with the provider down", func() error {
		if n := refusedAfterKill.Load(); n < 2*writers {
			return fmt.Errorf("%d refused", n)
		}
		return nil
	})
	cancel()
	wg.Wait()
	e.requireAlive()

	var worst time.Duration
	for r, s := range stats {
		d := s.firstAfterKill.Sub(killed)
		worst = max(worst, d)
		t.Logf("reader %d: %d reads, first read after the kill %v later", r, s.ops, d.Round(time.Millisecond))
	}
	t.Logf("longest single operation %v", longest.Round(time.Millisecond))
	if worst > 2*time.Second {
		t.Errorf("reads resumed on the consumer %v after the kill; want within 2s", worst)
	}
	if longest >= 10*time.Second {
		t.Errorf("an operation took %v: a client hung", longest)
	}

	// Every write acknowledged is in the directory and in the journal.
	if err := e.dir.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.stop() // `ldapgate journal` reads the journal of a stopped gateway
	recs := e.journalRecords()
	inJournal := map[string]bool{}
	for _, r := range recs {
		for _, c := range r.Changes {
			for _, v := range c.Values {
				inJournal[r.DN+"|"+v] = true
			}
		}
	}
	counts := map[outcome]int{}
	for key, ws := range ledger.writes {
		uid := key[len("phone:"):]
		for _, w := range ws {
			counts[w.outcome]++
			if w.outcome == succeeded && !inJournal[userDN(uid)+"|"+w.value] {
				t.Errorf("acknowledged write %s=%q is not in the journal", key, w.value)
			}
		}
		got := e.directoryEntry(userDN(uid), "telephoneNumber").GetAttributeValue("telephoneNumber")
		allowed := ledger.allowed(key)
		if slices.ContainsFunc(ws, func(w crashWrite) bool { return w.outcome == succeeded }) && !slices.Contains(allowed, got) {
			t.Errorf("%s is %q in the directory; allowed: %q (writes: %s)", key, got, allowed, describeWrites(ws))
		}
	}
	t.Logf("writes: %d acknowledged, %d refused, %d unknown", counts[succeeded], counts[failed], counts[unknown])
	if counts[succeeded] == 0 || counts[failed] == 0 {
		t.Fatalf("want writes acknowledged before the kill and refused after it: %v", counts)
	}
}
