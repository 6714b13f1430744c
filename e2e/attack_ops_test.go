package e2e

// Attacks on what docs/operations.md promises an operator: the limits
// (bind failures, connections, message size), the gateway's own subtree
// (cn=monitor, cn=changelog), the admin endpoint, the journal commands,
// reload and the logs. Each test drives the built binary over real sockets.

import (
	"crypto/tls"
	"fmt"
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

// Connections over the limits must not cost the gateway what the limits
// bound. A client turned away on the ldaps:// port is owed a TLS handshake
// before it can read the busy notice; one that never starts the handshake
// must not keep a descriptor (and a goroutine) for the whole handshake
// time-out each, or a flood of such connections from one address runs the
// gateway out of descriptors and nobody, the admin included, gets in.
func TestAttackOpsRejectedTLSConnectionsDoNotHoldDescriptors(t *testing.T) {
	const flood = 600
	raiseFileLimit(t, 4*flood)
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info",
		"--max-connections-per-address", "4", "--handshake-timeout", "30s")
	if err := gatewayServes(t, g.URL); err != nil {
		t.Fatal(err)
	}
	base := openFDs(t, g.PID)
	addr := strings.TrimPrefix(g.LDAPSURL, "ldaps://")
	var held []net.Conn
	t.Cleanup(func() {
		for _, c := range held {
			c.Close()
		}
	})
	for range flood {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("dial %d: %v", len(held)+1, err)
		}
		held = append(held, c)
	}
	// Every one of them has been accepted (and most turned away) once the
	// gateway counts them; then what it still holds is what counts.
	waitFor(t, 20*time.Second, "the flood accepted", func() error {
		if n := metric(scrape(t, g.DataDir), "ldapgate_connections_accepted_total"); n < flood {
			return fmt.Errorf("%v accepted", n)
		}
		return nil
	})
	if n := openFDs(t, g.PID); n > base+200 {
		t.Errorf("the gateway holds %d descriptors (%d before) for %d connections over a per-address limit of 4", n, base, flood)
	}
	// A client from another address is served meanwhile.
	other := dialFrom(t, g.URL, "127.0.0.2")
	other.send(t, bindRequest(1, adminDN, adminPW))
	other.expectResult(t, 1, ldap.LDAPResultSuccess)

	// Once the flood is gone, a TLS client over the limit that does its
	// handshake still learns why it is turned away.
	for _, c := range held {
		c.Close()
	}
	held = nil
	waitFor(t, 20*time.Second, "the flood's places freed", func() error {
		if n := openFDs(t, g.PID); n > base+10 {
			return fmt.Errorf("%d descriptors", n)
		}
		return nil
	})
	for range 4 {
		c, err := tls.Dial("tcp", addr, testPKI.TLSConfig())
		if err != nil {
			t.Fatalf("ldaps connection within the limit: %v", err)
		}
		held = append(held, c)
	}
	over, err := tls.Dial("tcp", addr, testPKI.TLSConfig())
	if err != nil {
		t.Fatalf("ldaps connection over the limit: %v", err)
	}
	defer over.Close()
	msgs, err := (&rawConn{over}).drain(10 * time.Second)
	if len(msgs) != 1 || !msgs[0].isNoticeOfDisconnection() || msgs[0].ResultCode != ldap.LDAPResultBusy {
		t.Errorf("ldaps connection over the limit: %v, %v; want a busy notice of disconnection", msgs, err)
	}
	g.requireAlive(t)
}
