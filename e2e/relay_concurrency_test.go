package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// TestRelayConcurrentPipelinedClients runs 50 go-ldap connections, each
// bound as a different user and shared by 8 goroutines, so requests are
// pipelined on every connection. Every answer must be the right one: the
// entry searched for, the compare result, and WhoAmI naming the
// connection's own user (no answer crosses sessions).
func TestRelayConcurrentPipelinedClients(t *testing.T) {
	const users, conns, perConn, opsEach = 300, 50, 8, 12
	s := slapd.StartT(t, slapd.Options{Users: users})
	gw := startGateway(t, "--upstream", s.URL, "--log-level", "info")

	var wg sync.WaitGroup
	errs := make(chan error, conns*perConn)
	for ci := range conns {
		uid := slapd.UserUID(ci)
		c := bindConn(t, gw.URL, "uid="+uid+","+people, slapd.UserPassword(ci))
		for g := range perConn {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(ci), uint64(g)))
				for op := range opsEach {
					if err := checkedOp(c, uid, rng, op); err != nil {
						errs <- fmt.Errorf("connection %d goroutine %d op %d: %w", ci, g, op, err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	n := 0
	for err := range errs {
		if n++; n <= 10 {
			t.Error(err)
		}
	}
	if n > 10 {
		t.Errorf("... %d failures in all", n)
	}
	gw.requireAlive(t)
}

// checkedOp runs one of search, compare or WhoAmI and checks its answer.
func checkedOp(c *ldap.Conn, self string, rng *rand.Rand, op int) error {
	target := rng.IntN(300)
	uid := slapd.UserUID(target)
	switch op % 3 {
	case 0:
		res, err := c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(uid="+uid+")", []string{"mail", "telephoneNumber"}, nil))
		if err != nil {
			return err
		}
		if len(res.Entries) != 1 || res.Entries[0].GetAttributeValue("mail") != uid+"@example.com" ||
			res.Entries[0].GetAttributeValue("telephoneNumber") != fmt.Sprintf("+1 555 %07d", target) {
			return fmt.Errorf("search %s: got %d entries %v", uid, len(res.Entries), res.Entries)
		}
	case 1:
		want := rng.IntN(2) == 0
		mail := uid + "@example.com"
		if !want {
			mail = "nobody@example.com"
		}
		got, err := c.Compare("uid="+uid+","+people, "mail", mail)
		if err != nil {
			return err
		}
		if got != want {
			return fmt.Errorf("compare %s mail=%s: %v, want %v", uid, mail, got, want)
		}
	case 2:
		res, err := c.WhoAmI(nil)
		if err != nil {
			return err
		}
		if want := "dn:uid=" + self + "," + people; res.AuthzID != want {
			return fmt.Errorf("whoami: %q, want %q", res.AuthzID, want)
		}
	}
	return nil
}

// TestRelayClientDisconnectMidSearchFreesUpstream proves that a client that
// goes away in the middle of a large search, or of a persistent search,
// leaves no upstream connection behind: slapd's own count of connections
// (cn=Monitor) returns to its baseline.
func TestRelayClientDisconnectMidSearchFreesUpstream(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 5000})
	gw := startGateway(t, "--upstream", s.URL, "--log-level", "info")
	ctx := context.Background()
	base, err := s.CurrentConnections(ctx)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("one session holds one upstream connection", func(t *testing.T) {
		c := dialRaw(t, gw.URL)
		c.send(t, bindRequest(1, adminDN, adminPW))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		if n, err := s.CurrentConnections(ctx); err != nil || n != base+1 {
			t.Fatalf("slapd counts %d connections (%v), want %d", n, err, base+1)
		}
		c.Close()
		upstreamBack(t, s, base)
	})

	t.Run("raw client closes after the first entries", func(t *testing.T) {
		c := dialRaw(t, gw.URL)
		c.send(t, bindRequest(1, adminDN, adminPW))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		c.send(t, searchRequest(t, 2, suffix, "(objectClass=*)", "*", "+"))
		for range 3 {
			if m, err := c.next(10 * time.Second); err != nil || m.Op != ldap.ApplicationSearchResultEntry {
				t.Fatalf("first entries: %v %v", m, err)
			}
		}
		if n, err := s.CurrentConnections(ctx); err != nil || n != base+1 {
			t.Fatalf("mid-search slapd counts %d connections (%v), want %d", n, err, base+1)
		}
		c.Close()
		upstreamBack(t, s, base)
	})

	t.Run("twenty clients close mid-search at once", func(t *testing.T) {
		var wg sync.WaitGroup
		for range 20 {
			c := dialRaw(t, gw.URL)
			c.send(t, append(bindRequest(1, aliceDN, slapd.AlicePassword), searchRequest(t, 2, people, "(uid=*)")...))
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = c.next(10 * time.Second) // the bind response
				_, _ = c.next(10 * time.Second) // an entry, maybe
				c.Close()
			}()
		}
		wg.Wait()
		upstreamBack(t, s, base)
	})

	t.Run("go-ldap client cancels a search", func(t *testing.T) {
		c := bindConn(t, gw.URL, adminDN, adminPW)
		sctx, cancel := context.WithCancel(ctx)
		res := c.SearchAsync(sctx, ldap.NewSearchRequest(suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
			0, 0, false, "(objectClass=*)", nil, nil), 1)
		if !res.Next() {
			t.Fatalf("no first entry: %v", res.Err())
		}
		cancel() // go-ldap sends Abandon
		c.Close()
		upstreamBack(t, s, base)
	})

	t.Run("persistent search client killed", func(t *testing.T) {
		st := startStreamingTool(t, "ldapsearch", "-x", "-H", gw.URL, "-D", adminDN, "-w", adminPW,
			"-b", people, "-E", "sync=rp", "(uid=user0000*)", "uid")
		st.waitOutput(t, "# refresh done, switching to persist stage", 1)
		if n, err := s.CurrentConnections(ctx); err != nil || n != base+1 {
			t.Fatalf("during the persistent search slapd counts %d (%v), want %d", n, err, base+1)
		}
		st.kill()
		upstreamBack(t, s, base)
	})
	gw.requireAlive(t)
}

// TestRelayMaxOpsPerConnQueues proves --max-ops-per-conn makes further
// pipelined requests wait rather than fail: 8 goroutines share one
// connection limited to 2 outstanding operations and all get answers.
func TestRelayMaxOpsPerConnQueues(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 300})
	gw := startGateway(t, "--upstream", s.URL, "--max-ops-per-conn", "2", "--log-level", "info")
	c := bindConn(t, gw.URL, "uid="+slapd.UserUID(7)+","+people, slapd.UserPassword(7))
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for op := range 15 {
				if err := checkedOp(c, slapd.UserUID(7), rng, op); err != nil {
					errs <- fmt.Errorf("goroutine %d op %d: %w", g, op, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	gw.requireAlive(t)
}

// TestRelayIdleTimeout proves --idle-timeout ends a silent session with a
// Notice of Disconnection (unavailable), while a persistent search, which
// has an operation outstanding, is not idle and keeps receiving changes.
func TestRelayIdleTimeout(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 20})
	gw := startGateway(t, "--upstream", s.URL, "--idle-timeout", "1s", "--log-level", "info")
	persist := startStreamingTool(t, "ldapsearch", "-x", "-H", gw.URL, "-D", adminDN, "-w", adminPW,
		"-b", people, "-E", "sync=rp", "(uid=user0000*)", "uid", "description")
	persist.waitOutput(t, "# refresh done, switching to persist stage", 1)

	idle := dialRaw(t, gw.URL)
	idle.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	idle.expectResult(t, 1, ldap.LDAPResultSuccess)
	start := time.Now()
	msgs, err := idle.drain(15 * time.Second)
	if !isClosed(err) || len(msgs) != 1 || !msgs[0].isNoticeOfDisconnection() || msgs[0].ResultCode != ldap.LDAPResultUnavailable {
		t.Fatalf("silent session: %v then %v; want an unavailable notice of disconnection, then the close", msgs, err)
	}
	if d := time.Since(start); d < 900*time.Millisecond {
		t.Fatalf("session closed after %v, before the 1s idle timeout", d)
	}

	// The persistent search outlived the idle timeout and still relays.
	admin := bindConn(t, s.URL, adminDN, adminPW)
	if err := modifyDescription(admin, "uid=user00003,"+people, "after idle"); err != nil {
		t.Fatal(err)
	}
	persist.waitOutput(t, "description: after idle\n", 1)
}
