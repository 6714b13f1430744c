package e2e

// Attacks on what docs/operations.md promises an operator: the limits
// (bind failures, connections, message size), the gateway's own subtree
// (cn=monitor, cn=changelog), the admin endpoint, the journal commands,
// reload and the logs. Each test drives the built binary over real sockets.

import (
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// bindResults sends n binds of dn with pw on one connection, all in one
// write (a client may send requests without waiting for answers), and
// counts the result codes it gets.
func bindResults(t *testing.T, c *rawConn, n int, dn, pw string) map[int64]int {
	t.Helper()
	var burst []byte
	for i := 1; i <= n; i++ {
		burst = append(burst, bindRequest(int64(i), dn, pw)...)
	}
	c.send(t, burst)
	codes := map[int64]int{}
	for got := 0; got < n; got++ {
		m, err := c.next(20 * time.Second)
		if err != nil {
			t.Fatalf("after %d of %d bind answers: %v (codes so far %v)", got, n, err, codes)
		}
		if m.isNoticeOfDisconnection() {
			t.Fatalf("notice of disconnection after %d bind answers: %v", got, m)
		}
		codes[m.ResultCode]++
	}
	return codes
}

// dialFrom opens a raw connection to the gateway from a given loopback
// address, so tests can play several client addresses.
func dialFrom(t *testing.T, url, from string) *rawConn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", strings.TrimPrefix(url, "ldap://"))
	if err != nil {
		t.Fatalf("dial %s from %s: %v", url, from, err)
	}
	t.Cleanup(func() { c.Close() })
	return &rawConn{c}
}

// The bind-failure limit as documented: after --max-bind-failures failed
// binds an address gets 53 for any bind but an anonymous one, its right
// password included; another address (the admin's) is not locked out.
func TestAttackOpsBindFailureLimitPerAddress(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "3")

	c := dialFrom(t, g.URL, "127.0.0.1")
	for i := int64(1); i <= 3; i++ {
		c.send(t, bindRequest(i, aliceDN, "wrong-guess"))
		c.expectResult(t, i, ldap.LDAPResultInvalidCredentials)
	}
	c.send(t, bindRequest(4, aliceDN, slapd.AlicePassword))
	msgs := c.expectResult(t, 4, ldap.LDAPResultUnwillingToPerform)
	if d := msgs[len(msgs)-1].Diagnostic; !strings.Contains(d, "too many failed binds") {
		t.Errorf("diagnostic of the refused bind: %q", d)
	}
	c.send(t, bindRequest(5, "", ""))
	c.expectResult(t, 5, ldap.LDAPResultSuccess)

	// The admin, from another address, is not locked out.
	other := dialFrom(t, g.URL, "127.0.0.2")
	other.send(t, bindRequest(1, adminDN, adminPW))
	other.expectResult(t, 1, ldap.LDAPResultSuccess)
	if strings.Contains(g.log.String(), "wrong-guess") {
		t.Error("a guessed password is in the gateway's log")
	}
	g.requireAlive(t)
}

// A client that sends its guesses without waiting for the answers (one
// write of many binds on one connection) must not get more of them to the
// directory than the limit allows: the limiter must count binds still
// awaiting their answer, not only those answered.
func TestAttackOpsPipelinedBindsStayWithinTheFailureLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit, burst = 5, 60
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "5")
	codes := bindResults(t, dialRaw(t, g.URL), burst, aliceDN, "guess")
	if codes[ldap.LDAPResultInvalidCredentials] > limit {
		t.Errorf("%d of %d pipelined guesses reached the directory (answered 49), limit %d: %v",
			codes[ldap.LDAPResultInvalidCredentials], burst, limit, codes)
	}
	if codes[ldap.LDAPResultInvalidCredentials]+codes[ldap.LDAPResultUnwillingToPerform] != burst {
		t.Errorf("codes %v: want only 49 and 53", codes)
	}
	g.requireAlive(t)
}

// The same through many connections at once from one address: each bind
// is checked before any failure is counted.
func TestAttackOpsParallelBindsStayWithinTheFailureLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit, conns = 5, 40
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--max-bind-failures", "5")
	var cs []*rawConn
	for range conns {
		cs = append(cs, dialRaw(t, g.URL))
	}
	var mu sync.Mutex
	codes := map[int64]int{}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			_, _ = c.Write(bindRequest(1, aliceDN, "guess"))
			m, err := c.next(20 * time.Second)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				codes[-2]++
				return
			}
			codes[m.ResultCode]++
		}()
	}
	close(start)
	wg.Wait()
	if codes[ldap.LDAPResultInvalidCredentials] > limit {
		t.Errorf("%d of %d parallel guesses reached the directory (answered 49), limit %d: %v",
			codes[ldap.LDAPResultInvalidCredentials], conns, limit, codes)
	}
	if codes[ldap.LDAPResultInvalidCredentials]+codes[ldap.LDAPResultUnwillingToPerform] != conns {
		t.Errorf("codes %v: want only 49 and 53", codes)
	}
	g.requireAlive(t)
}
