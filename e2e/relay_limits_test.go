package e2e

// Issue 16, item 8: bounded work per client. One address holding thousands
// of idle connections must not lock other clients out.

import (
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// raiseFileLimit lets this process (and the gateway it starts, which
// inherits it) hold at least n descriptors.
func raiseFileLimit(t *testing.T, n uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		t.Skipf("RLIMIT_NOFILE hard limit %d is below the %d descriptors this test needs", lim.Max, n)
	}
	old := lim
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old) })
}

// TestRelayPerAddressConnectionLimit opens 4,100 idle connections from
// 127.0.0.1: beyond --max-connections-per-address (256 by default) they
// get a busy Notice of Disconnection, and a client from 127.0.0.2 is still
// served.
func TestRelayPerAddressConnectionLimit(t *testing.T) {
	const flood = 4100
	raiseFileLimit(t, 3*flood)
	s := slapd.StartT(t, slapd.Options{Users: 1})
	g := startGateway(t, "--upstream", s.URL, "--log-level", "info")
	addr := strings.TrimPrefix(g.URL, "ldap://")

	var idle []net.Conn
	t.Cleanup(func() {
		for _, c := range idle {
			c.Close()
		}
	})
	from1 := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.1")}, Timeout: 5 * time.Second}
	for range flood {
		c, err := from1.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", len(idle)+1, err)
		}
		idle = append(idle, c)
	}
	// The last one is over the limit: the gateway says busy and closes it.
	last := &rawConn{idle[len(idle)-1]}
	m, err := last.next(10 * time.Second)
	if err != nil || !m.isNoticeOfDisconnection() || m.ResultCode != ldap.LDAPResultBusy {
		t.Fatalf("connection %d from one address: got %v, %v; want a busy Notice of Disconnection", flood, m, err)
	}

	from2 := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	conn, err := from2.Dial("tcp", addr)
	if err != nil {
		t.Fatalf("dial from 127.0.0.2: %v", err)
	}
	c := ldap.NewConn(conn, false)
	c.Start()
	defer c.Close()
	c.SetTimeout(10 * time.Second)
	if err := c.Bind(s.RootDN, s.RootPW); err != nil {
		t.Fatalf("bind from 127.0.0.2 while 127.0.0.1 holds %d connections: %v", flood, err)
	}
	res, err := c.Search(ldap.NewSearchRequest(s.Suffix, ldap.ScopeBaseObject, ldap.NeverDerefAliases, 0, 0, false, "(objectClass=*)", nil, nil))
	if err != nil || len(res.Entries) != 1 {
		t.Fatalf("search from 127.0.0.2: %v", err)
	}
	t.Logf("%d idle connections from 127.0.0.1; 127.0.0.2 served", flood)
	g.requireAlive(t)
}
