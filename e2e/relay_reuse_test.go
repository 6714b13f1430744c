package e2e

import (
	"fmt"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// gatewayGauges reads the gateway's upstream connections in use and spare
// from its /metrics.
func gatewayGauges(t *testing.T, gw *gatewayProc) (inUse, spare float64) {
	body := scrape(t, gw.DataDir)
	return metric(body, "ldapgate_upstream_connections"), metric(body, "ldapgate_upstream_spare_connections")
}

// settledSpares waits until no session holds an upstream connection (so
// every parking has finished) and returns how many are spare.
func settledSpares(t *testing.T, gw *gatewayProc) float64 {
	t.Helper()
	var spare float64
	waitFor(t, 15*time.Second, "no upstream connection in use", func() error {
		var inUse float64
		inUse, spare = gatewayGauges(t, gw)
		if inUse != 0 {
			return fmt.Errorf("%v upstream connections in use, %v spare", inUse, spare)
		}
		return nil
	})
	return spare
}

// whoAmI asks for the connection's identity.
func whoAmI(id int64) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
	op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, ldap.ControlTypeWhoAmI, "name"))
	return envelope(id, op)
}

func unbindRequest(id int64) []byte {
	return envelope(id, ber.Encode(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationUnbindRequest, nil, "unbind"))
}

// TestRelayReusesCleanUpstreamConnections proves that an upstream
// connection whose session ended cleanly serves the next session (slapd
// accepts no new connection), and that the next session starts anonymous:
// the previous user's identity and rights do not carry over.
func TestRelayReusesCleanUpstreamConnections(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	gw := startGateway(t, "--upstream", s.URL, "--log-level", "info")
	ctx := t.Context()

	sessions := []struct {
		name string
		end  func(c *ldap.Conn)
	}{
		{"unbind", func(c *ldap.Conn) { _ = c.Unbind() }},
		{"close without unbind", func(c *ldap.Conn) { c.Close() }},
	}
	for _, sess := range sessions {
		t.Run(sess.name, func(t *testing.T) {
			c := bindConn(t, gw.URL, aliceDN, slapd.AlicePassword)
			res, err := c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
				"(uid=bob)", []string{"mail"}, nil))
			if err != nil || len(res.Entries) != 1 {
				t.Fatalf("alice finds bob: %v %v", res, err)
			}
			sess.end(c)
			if n := settledSpares(t, gw); n != 1 {
				t.Fatalf("%v spare upstream connections after alice's session, want 1", n)
			}
			total, err := s.TotalConnections(ctx)
			if err != nil {
				t.Fatal(err)
			}

			// The next client, anonymous, gets that connection: slapd sees
			// no new one, and it answers as to anyone anonymous.
			raw := dialRaw(t, gw.URL)
			raw.send(t, whoAmI(1))
			msgs := raw.expectResult(t, 1, ldap.LDAPResultSuccess)
			if who := msgs[len(msgs)-1].ResponseValue; who != "" {
				t.Errorf("the next session is %q, want anonymous", who)
			}
			// Anonymous may only bind: slapd does not even admit that
			// ou=people exists.
			raw.send(t, searchRequest(t, 2, people, "(uid=bob)", "mail"))
			if msgs := raw.expectResult(t, 2, ldap.LDAPResultNoSuchObject); len(msgs) != 1 {
				t.Errorf("anonymous search got %d entries, want none", len(msgs)-1)
			}
			// One more connection: the one that asks.
			if after, err := s.TotalConnections(ctx); err != nil || after != total+1 {
				t.Errorf("slapd accepted %d connections for the next session (%v), want 0: it should reuse the spare", after-total-1, err)
			}
			// Bound as bob on the same connection, it is bob.
			raw.send(t, bindRequest(3, bobDN, slapd.BobPassword))
			raw.expectResult(t, 3, ldap.LDAPResultSuccess)
			raw.send(t, whoAmI(4))
			if msgs := raw.expectResult(t, 4, ldap.LDAPResultSuccess); msgs[len(msgs)-1].ResponseValue != "dn:"+bobDN {
				who := msgs[len(msgs)-1].ResponseValue
				t.Errorf("after bob's bind the session is %q", who)
			}
			raw.send(t, unbindRequest(5))
			if n := settledSpares(t, gw); n != 1 {
				t.Fatalf("%v spare upstream connections after the second session, want 1", n)
			}
		})
	}

	t.Run("spares close after their hold", func(t *testing.T) {
		upstreamBack(t, s, 0)
		if _, spare := gatewayGauges(t, gw); spare != 0 {
			t.Errorf("%v spare connections left", spare)
		}
	})

	t.Run("a spare the directory closed is not used", func(t *testing.T) {
		// Without early dials, the session's first request is what takes
		// the spare: a dead one would fail it.
		gw := startGateway(t, "--upstream", s.URL, "--log-level", "info", "--early-dials", "0")
		c := bindConn(t, gw.URL, aliceDN, slapd.AlicePassword)
		_ = c.Unbind()
		if n := settledSpares(t, gw); n != 1 {
			t.Fatalf("%v spare upstream connections, want 1", n)
		}
		if err := s.Restart(ctx); err != nil {
			t.Fatal(err)
		}
		if err := gatewayServes(t, gw.URL); err != nil {
			t.Fatalf("first session after the directory restarted: %v", err)
		}
	})
	gw.requireAlive(t)
}

// TestRelayDoesNotReuseStatefulUpstreamConnections proves that a session
// that may have left state on its upstream connection beyond its bind has
// that connection closed rather than handed to the next session.
func TestRelayDoesNotReuseStatefulUpstreamConnections(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 500})
	gw := startGateway(t, "--upstream", s.URL, "--log-level", "info")

	paged := ldap.NewControlPaging(10).Encode()
	saslPlain := func(id int64) []byte {
		op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationBindRequest, nil, "bind")
		op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(3), "version"))
		op.AppendChild(octets(""))
		sasl := ber.Encode(ber.ClassContext, ber.TypeConstructed, 3, nil, "sasl")
		sasl.AppendChild(octets("PLAIN"))
		sasl.AppendChild(octets("\x00alice\x00" + slapd.AlicePassword))
		op.AppendChild(sasl)
		return envelope(id, op)
	}
	extended := func(id int64, oid string) []byte {
		op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationExtendedRequest, nil, "extended")
		op.AppendChild(ber.NewString(ber.ClassContext, ber.TypePrimitive, 0, oid, "name"))
		return envelope(id, op)
	}
	abandon := func(id, target int64) []byte {
		return envelope(id, ber.NewInteger(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationAbandonRequest, target, "abandon"))
	}
	searchPeople := func(id int64, controls ...*ber.Packet) []byte {
		p := ber.DecodePacket(searchRequest(t, id, people, "(uid=*)", "uid"))
		return envelope(id, p.Children[1], controls...)
	}

	cases := []struct {
		name    string
		session func(c *rawConn)
		unbinds bool // the session sends its own unbind
	}{
		{"paged search", func(c *rawConn) {
			c.send(t, searchPeople(2, paged))
			c.expectResult(t, 2, ldap.LDAPResultSuccess) // first page; the directory keeps the cookie
		}, false},
		{"abandoned search", func(c *rawConn) {
			c.send(t, append(searchPeople(2), abandon(3, 2)...))
			c.send(t, whoAmI(4))
			for {
				m, err := c.next(15 * time.Second)
				if err != nil {
					t.Fatal(err)
				}
				if m.ID == 4 {
					break
				}
			}
		}, false},
		{"SASL bind", func(c *rawConn) {
			c.send(t, saslPlain(2))
			if m, err := c.next(15 * time.Second); err != nil || m.ID != 2 {
				t.Fatalf("SASL bind: %v %v", m, err)
			}
		}, false},
		{"other extended operation", func(c *rawConn) {
			c.send(t, extended(2, "1.3.6.1.1.21.1")) // start transaction (RFC 5805)
			if m, err := c.next(15 * time.Second); err != nil || m.ID != 2 {
				t.Fatalf("extended operation: %v %v", m, err)
			}
		}, false},
		{"unbind with a search outstanding", func(c *rawConn) {
			// In one write, so that the search is outstanding when the
			// gateway reads the unbind.
			c.send(t, append(searchPeople(2), unbindRequest(9)...))
		}, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := dialRaw(t, gw.URL)
			c.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
			c.expectResult(t, 1, ldap.LDAPResultSuccess)
			tc.session(c)
			if !tc.unbinds {
				c.send(t, unbindRequest(9))
			}
			_, _ = c.drain(15 * time.Second)
			if n := settledSpares(t, gw); n != 0 {
				t.Errorf("%v spare upstream connections after the session, want 0", n)
			}
			upstreamBack(t, s, 0)
		})
	}
	gw.requireAlive(t)
}
