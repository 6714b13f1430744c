package e2e

import (
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/gateway"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// TestRelayBadInputNeverKillsTheGateway sends broken LDAP over real sockets.
// Each case gets a Notice of Disconnection with protocolError (RFC 4511
// 4.1.1: an unrecognised envelope, message ID or request tag, or wrong
// lengths) followed by the end of the connection; the gateway keeps
// running, leaves no upstream connection behind, and serves a normal client
// afterwards.
func TestRelayBadInputNeverKillsTheGateway(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const maxMessage = 64 << 10
	gw := startGateway(t, "--upstream", s.URL, "--max-message-size", fmt.Sprint(maxMessage),
		"--idle-timeout", "3s")
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatal(err)
	}

	validBind := bindRequest(1, aliceDN, slapd.AlicePassword)
	bigAdd := addRequest(2, "uid=big,"+people, map[string][]string{
		"objectClass": {"inetOrgPerson"}, "uid": {"big"}, "cn": {"big"}, "sn": {"big"},
		"description": {strings.Repeat("x", maxMessage)},
	})
	cases := []struct {
		name string
		send []byte
	}{
		{"HTTP request instead of LDAP", []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")},
		{"SET instead of SEQUENCE", append([]byte{0x31}, validBind[1:]...)},
		{"indefinite length", []byte{0x30, 0x80, 0x02, 0x01, 0x01, 0x42, 0x00, 0x00, 0x00}},
		{"length of 9 octets", []byte{0x30, 0x89, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{"length of 4 GiB", []byte{0x30, 0x84, 0xff, 0xff, 0xff, 0xff, 0x02, 0x01, 0x01}},
		{"length over the limit", []byte{0x30, 0x83, 0x10, 0x00, 0x00, 0x02, 0x01, 0x01}},
		{"message over the size limit", bigAdd},
		{"message ID is a string", []byte{0x30, 0x05, 0x04, 0x01, 0x01, 0x42, 0x00}},
		{"negative message ID", []byte{0x30, 0x05, 0x02, 0x01, 0xff, 0x42, 0x00}},
		{"message ID 0", envelopeRaw(0, []byte{0x42, 0x00})},
		{"no protocolOp", []byte{0x30, 0x03, 0x02, 0x01, 0x01}},
		{"inner length past the end", []byte{0x30, 0x05, 0x02, 0x01, 0x01, 0x63, 0x7f}},
		{"response tag from a client", envelopeRaw(3, []byte{0x61, 0x07, 0x0a, 0x01, 0x00, 0x04, 0x00, 0x04, 0x00})},
		{"unknown application tag", envelopeRaw(4, []byte{0x7e, 0x00})},
		{"context tag as protocolOp", envelopeRaw(5, []byte{0xa3, 0x00})},
		{"extended request without a name", envelopeRaw(6, []byte{0x77, 0x02, 0x81, 0x00})},
		{"abandon of no message ID", envelopeRaw(7, []byte{0x50, 0x00})},
		{"garbage after a valid bind", append(append([]byte{}, validBind...), 0xff, 0xff, 0xff, 0xff)},
	}
	base, err := s.CurrentConnections(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, gw.URL)
			c.send(t, tc.send)
			msgs, err := c.drain(10 * time.Second)
			if !isClosed(err) {
				t.Fatalf("connection not closed: %v (received %v)", err, msgs)
			}
			notice := false
			for _, m := range msgs {
				if m.isNoticeOfDisconnection() {
					notice = true
					if m.ResultCode != ldap.LDAPResultProtocolError {
						t.Errorf("notice of disconnection with result %d (%s), want protocolError (2)", m.ResultCode, m.Diagnostic)
					}
				}
			}
			if !notice {
				t.Errorf("no notice of disconnection before the close; received %v", msgs)
			}
			gw.requireAlive(t)
		})
	}

	// A truncated message followed by the client's close, and one whose
	// sender stalls: the session ends without any answer being owed.
	t.Run("truncated then closed", func(t *testing.T) {
		c := dialRaw(t, gw.URL)
		c.send(t, validBind[:len(validBind)-3])
		if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
			t.Fatal(err)
		}
		msgs, err := c.drain(10 * time.Second)
		if !isClosed(err) {
			t.Fatalf("connection not closed: %v (received %v)", err, msgs)
		}
	})
	t.Run("stalled in the middle of a message", func(t *testing.T) {
		c := dialRaw(t, gw.URL)
		c.send(t, validBind[:len(validBind)-3])
		msgs, err := c.drain(10 * time.Second) // idle timeout is 3s
		if !isClosed(err) {
			t.Fatalf("stalled client not disconnected: %v (received %v)", err, msgs)
		}
	})

	gw.requireAlive(t)
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatalf("after bad input: %v", err)
	}
	upstreamBack(t, s, base)
}

// envelopeRaw wraps an already encoded protocolOp into an LDAPMessage.
func envelopeRaw(id byte, op []byte) []byte {
	body := append([]byte{0x02, 0x01, id}, op...)
	return append([]byte{0x30, byte(len(body))}, body...)
}

// TestRelayIdleConnectionsStayCheap opens 2,000 connections that send
// nothing (plus 100 that never finish a TLS handshake) and proves the
// gateway's memory stays bounded, that they hold at most the early-dial
// budget of upstream connections and soon none, and that it still serves a
// normal client.
func TestRelayIdleConnectionsStayCheap(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	// All from one address: the per-address limit is not what this measures.
	gw := startGateway(t, "--upstream", s.URL, "--max-connections", "4096", "--max-connections-per-address", "0", "--log-level", "info")
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatal(err)
	}
	// Let that session's sockets close before counting descriptors.
	upstreamBack(t, s, 0)
	rssBefore := gw.rssKiB(t)
	fdsBefore := openFDs(t, gw.PID)

	const idle, idleTLS = 2000, 100
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	dial := func(url string) {
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(strings.TrimPrefix(url, "ldaps://"), "ldap://"), 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d: %v", len(conns), err)
		}
		conns = append(conns, c)
	}
	for range idle {
		dial(gw.URL)
	}
	for range idleTLS {
		dial(gw.LDAPSURL)
	}
	// The kernel completes connections before the gateway accepts them:
	// wait until the gateway holds them all.
	waitFor(t, 30*time.Second, "gateway accepted every connection", func() error {
		// Slack of 4 for descriptors that were closing when counted (a
		// health check's connection); unaccepted TLS clients would be closed
		// after the gateway's 10s handshake timeout.
		if n := openFDs(t, gw.PID); n < fdsBefore+idle+idleTLS-4 {
			return fmt.Errorf("gateway has %d descriptors, want >= %d", n, fdsBefore+idle+idleTLS-4)
		}
		return nil
	})
	rssAfter := gw.rssKiB(t)
	perConn := float64(rssAfter-rssBefore) * 1024 / (idle + idleTLS)
	t.Logf("gateway RSS %d KiB before, %d KiB with %d idle connections (%.1f KiB per connection)",
		rssBefore, rssAfter, idle+idleTLS, perConn/1024)
	// Bound: a goroutine and small buffers per idle connection (about 8 KiB
	// measured); 32 KiB each would be 66 MiB for 2,100 idle clients.
	if perConn > 32<<10 {
		t.Errorf("idle connections cost %.1f KiB each, want at most 32 KiB", perConn/1024)
	}
	// Early dials (a session dials upstream at accept) are bounded, and
	// closed when their client stays silent.
	if n, err := s.CurrentConnections(t.Context()); err != nil || n > gateway.DefaultEarlyDials+1 {
		t.Errorf("idle clients hold too many upstream connections: slapd counts %d (%v), want at most %d",
			n, err, gateway.DefaultEarlyDials+1)
	}
	upstreamBack(t, s, 0) // the silent clients' early connections are closed
	gw.requireAlive(t)
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatalf("with %d idle connections: %v", idle, err)
	}
}

// TestRelayConnectionLimit proves a client over --max-connections gets a
// Notice of Disconnection with busy (51), and that closed connections free
// their places.
func TestRelayConnectionLimit(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	const limit = 20
	gw := startGateway(t, "--upstream", s.URL, "--max-connections", fmt.Sprint(limit))
	var held []*rawConn
	for range limit {
		c := dialRaw(t, gw.URL)
		c.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
		c.expectResult(t, 1, ldap.LDAPResultSuccess)
		held = append(held, c)
	}
	over := dialRaw(t, gw.URL)
	msgs, err := over.drain(10 * time.Second)
	if !isClosed(err) || len(msgs) != 1 || !msgs[0].isNoticeOfDisconnection() || msgs[0].ResultCode != ldap.LDAPResultBusy {
		t.Fatalf("connection over the limit: %v, %v; want a busy notice of disconnection, then the close", msgs, err)
	}
	for _, c := range held {
		c.Close()
	}
	waitFor(t, 10*time.Second, "a place freed", func() error { return gatewayServes(t, gw.URL) })
}

func openFDs(t testing.TB, pid int) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatalf("list gateway descriptors: %v", err)
	}
	return len(ents)
}
