package e2e

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// TestRelayEarlyDialOfASilentClient proves that the upstream connection a
// session opens at accept is closed while its client stays silent, and that
// the client's first request, sent afterwards, is still answered.
func TestRelayEarlyDialOfASilentClient(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	gw := startGateway(t, "--upstream", s.URL)
	c := dialRaw(t, gw.URL)
	waitFor(t, 10*time.Second, "the early connection upstream", func() error {
		if n, err := s.CurrentConnections(t.Context()); err != nil || n != 1 {
			return fmt.Errorf("slapd counts %d connections (%v), want 1", n, err)
		}
		return nil
	})
	upstreamBack(t, s, 0) // closed, as the client sent nothing
	c.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	// Waited for, not read once: slapd counts a connection until it has
	// seen its close, and on a busy machine the monitor's own last one
	// (the count's read just before) was still counted (2, once in CI).
	waitFor(t, 10*time.Second, "one connection upstream after the bind", func() error {
		if n, err := s.CurrentConnections(t.Context()); err != nil || n != 1 {
			return fmt.Errorf("after the bind slapd counts %d connections (%v), want 1", n, err)
		}
		return nil
	})
	c.Close()
	upstreamBack(t, s, 0)
	gw.requireAlive(t)
}

// TestRelayClientsThatLeaveAtOnce opens connections that close before
// sending anything (as a load balancer's TCP health check does), many while
// their early upstream dial is still in flight: the upstream is not taken for
// down, no upstream connection or goroutine is left behind.
func TestRelayClientsThatLeaveAtOnce(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	gw := startGateway(t, "--upstream", s.URL)
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatal(err)
	}
	upstreamBack(t, s, 0)
	base := goroutines(t, gw.DataDir)
	addr := strings.TrimPrefix(gw.URL, "ldap://")
	for i := range 200 {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if i%2 == 0 {
			_ = c.(*net.TCPConn).SetLinger(0) // a reset rather than a close
		}
		c.Close()
	}
	upstreamBack(t, s, 0)
	waitFor(t, 15*time.Second, "goroutines back to the baseline", func() error {
		if n := goroutines(t, gw.DataDir); n > base {
			return fmt.Errorf("%d goroutines, %d before", n, base)
		}
		return nil
	})
	if log := gw.log.String(); strings.Contains(log, "upstream is down") {
		t.Errorf("clients leaving made the gateway take its upstream for down:\n%s", log)
	}
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatal(err)
	}
	gw.requireAlive(t)
}
