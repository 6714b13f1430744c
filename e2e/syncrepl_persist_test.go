package e2e

import (
	"context"
	"errors"
	"testing"
	"time"

	ber "github.com/go-asn1-ber/asn1-ber"
	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// waitIdleNotice opens a connection that binds and then stays silent, and
// waits until the gateway ends it for idleness: proof that an idle timeout
// has passed.
func waitIdleNotice(t *testing.T, url string) {
	t.Helper()
	c := dialRaw(t, url)
	c.send(t, bindRequest(1, adminDN, adminPW))
	c.expectResult(t, 1, 0)
	m, err := c.next(15 * time.Second)
	if err != nil || !m.isNoticeOfDisconnection() {
		t.Fatalf("idle connection: got %v, %v; want a notice of disconnection", m, err)
	}
}

// A refreshAndPersist search outlives the gateway's idle timeout (its
// client is silent, but the operation is outstanding) and keeps delivering
// changes, while an idle connection beside it is closed.
func TestSyncreplPersistentSearchOutlivesIdleTimeout(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 5})
	g := startGateway(t, "--upstream", s.URL, "--idle-timeout", "1s")
	sc := startSyncConsumer(t, t.Context(), g.URL, adminDN, adminPW, ldap.SyncRequestModeRefreshAndPersist, nil)
	sc.waitSeen(t, "uid=user00004,"+people, "uid=user00004")
	// Two idle periods pass, each proven by a connection closed for it.
	waitIdleNotice(t, g.URL)
	waitIdleNotice(t, g.URL)
	admin := bindConn(t, s.URL, adminDN, adminPW)
	if err := modifyDescription(admin, bobDN, "after the idle timeout"); err != nil {
		t.Fatal(err)
	}
	sc.waitSeen(t, bobDN, "description=after the idle timeout")
	g.requireAlive(t)
}

// When the client of a persistent search goes away, the gateway closes its
// upstream connection, so slapd drops the search.
func TestSyncreplPersistentSearchClientLeaves(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 5})
	g := startGateway(t, "--upstream", s.URL)
	ctx := context.Background()
	base, err := s.CurrentConnections(ctx)
	if err != nil {
		t.Fatal(err)
	}
	st := startStreamingTool(t, "ldapsearch", "-x", "-H", g.URL, "-D", adminDN, "-w", adminPW,
		"-b", people, "-E", "sync=rp", "(uid=user0000*)", "uid")
	st.waitOutput(t, "dn: uid=user00004", 1)
	waitFor(t, 10*time.Second, "the search's upstream connection", func() error {
		n, err := s.CurrentConnections(ctx)
		if err == nil && n != base+1 {
			err = errors.New("not yet")
		}
		return err
	})
	st.kill()
	upstreamBack(t, s, base)
	g.requireAlive(t)
}

// syncSearch is a raw refreshAndPersist search request over people.
func syncSearch(id int64) []byte {
	op := ber.Encode(ber.ClassApplication, ber.TypeConstructed, ldap.ApplicationSearchRequest, nil, "search")
	op.AppendChild(octets(people))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.ScopeWholeSubtree), "scope"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagEnumerated, int64(ldap.NeverDerefAliases), "deref"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "sizeLimit"))
	op.AppendChild(ber.NewInteger(ber.ClassUniversal, ber.TypePrimitive, ber.TagInteger, int64(0), "timeLimit"))
	op.AppendChild(ber.NewBoolean(ber.ClassUniversal, ber.TypePrimitive, ber.TagBoolean, false, "typesOnly"))
	f, _ := ldap.CompileFilter("(uid=bob)")
	op.AppendChild(f)
	attrs := ber.Encode(ber.ClassUniversal, ber.TypeConstructed, ber.TagSequence, nil, "attributes")
	attrs.AppendChild(octets("description"))
	op.AppendChild(attrs)
	return envelope(id, op, ldap.NewControlSyncRequest(ldap.SyncRequestModeRefreshAndPersist, nil, false).Encode())
}

func abandonRequest(id, target int64) []byte {
	return envelope(id, ber.NewInteger(ber.ClassApplication, ber.TypePrimitive, ldap.ApplicationAbandonRequest, target, "abandon"))
}

// Abandoning a persistent search reaches slapd: a change that a second,
// live persistent search on the same connection reports is not reported
// for the abandoned one, and the connection goes on.
func TestSyncreplPersistentSearchAbandoned(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	g := startGateway(t, "--upstream", s.URL)
	c := dialRaw(t, g.URL)
	c.send(t, bindRequest(1, adminDN, adminPW))
	c.expectResult(t, 1, 0)
	c.send(t, syncSearch(2))
	c.send(t, syncSearch(3))
	// Each search sends bob, then a Sync Info message ending its refresh.
	refreshed := map[int64]bool{}
	for len(refreshed) < 2 {
		m, err := c.next(10 * time.Second)
		if err != nil {
			t.Fatalf("refresh: %v", err)
		}
		if m.Op == ldap.ApplicationIntermediateResponse {
			refreshed[m.ID] = true
		}
	}
	c.send(t, abandonRequest(4, 2))
	// A search on the same connection completes after the abandon.
	c.send(t, searchRequest(t, 5, people, "(uid=alice)", "uid"))
	c.expectResult(t, 5, 0)

	admin := bindConn(t, s.URL, adminDN, adminPW)
	if err := modifyDescription(admin, bobDN, "after the abandon"); err != nil {
		t.Fatal(err)
	}
	var got []ldapMessage
	for {
		m, err := c.next(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the live search's change: %v (got %v)", err, got)
		}
		got = append(got, m)
		if m.ID == 3 && m.Op == ldap.ApplicationSearchResultEntry {
			break
		}
	}
	// Anything slapd had queued for both searches is in by now; one more
	// round trip flushes the stream.
	c.send(t, searchRequest(t, 6, people, "(uid=alice)", "uid"))
	got = append(got, c.expectResult(t, 6, 0)...)
	for _, m := range got {
		if m.ID == 2 {
			t.Errorf("the abandoned search still delivered %v", m)
		}
	}
}

// When the upstream dies under a persistent search, the client gets a
// final result for it (unavailable) and a notice of disconnection, not a
// hang; afterwards it resumes from its cookie and receives only what
// changed meanwhile.
func TestSyncreplPersistentSearchUpstreamDies(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 50})
	g := startGateway(t, "--upstream", s.URL)
	sc := startSyncConsumer(t, t.Context(), g.URL, adminDN, adminPW, ldap.SyncRequestModeRefreshAndPersist, nil)
	sc.waitSeen(t, "uid=user00049,"+people, "uid=user00049")
	admin := bindConn(t, s.URL, adminDN, adminPW)
	if err := modifyDescription(admin, aliceDN, "before the crash"); err != nil {
		t.Fatal(err)
	}
	sc.waitSeen(t, aliceDN, "description=before the crash")
	cookie := sc.lastCookie()
	if cookie == nil {
		t.Fatal("no cookie before the crash")
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-sc.done:
	case <-time.After(15 * time.Second):
		t.Fatal("the persistent search did not end after the upstream died")
	}
	if !ldap.IsErrorWithCode(sc.err, ldap.LDAPResultUnavailable) {
		t.Errorf("persistent search ended with %v, want result 52 (unavailable)", sc.err)
	}

	if err := s.Restart(context.Background()); err != nil {
		t.Fatalf("restart slapd: %v", err)
	}
	admin = bindConn(t, s.URL, adminDN, adminPW)
	if err := modifyDescription(admin, bobDN, "while the consumer was away"); err != nil {
		t.Fatal(err)
	}
	resumed := startSyncConsumer(t, t.Context(), g.URL, adminDN, adminPW, ldap.SyncRequestModeRefreshOnly, cookie)
	<-resumed.done
	if resumed.err != nil {
		t.Fatalf("resume: %v", resumed.err)
	}
	var entries []syncEvent
	for _, ev := range resumed.snapshot() {
		if ev.Kind == "entry" {
			entries = append(entries, ev)
		}
	}
	if len(entries) != 1 || entries[0].DN != bobDN {
		t.Errorf("resume after the crash returned %d entries, want bob only:\n%s", len(entries), joinEvents(entries))
	}
	g.requireAlive(t)
}
