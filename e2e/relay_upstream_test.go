package e2e

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// properFailure reports whether msgs tell the client properly that its
// operation id failed for lack of a directory: a response to id with
// unavailable (52) or busy (51), or a Notice of Disconnection.
func properFailure(msgs []ldapMessage, id int64) bool {
	for _, m := range msgs {
		if m.isNoticeOfDisconnection() {
			return true
		}
		if m.ID == id && (m.ResultCode == ldap.LDAPResultUnavailable || m.ResultCode == ldap.LDAPResultBusy) {
			return true
		}
	}
	return false
}

// TestRelayUpstreamDownAndBack: with the directory gone, clients get a
// proper LDAP answer, not a dropped connection; the gateway keeps running
// and serves again once slapd returns on the same port.
func TestRelayUpstreamDownAndBack(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	gw := startGateway(t, "--upstream", s.URL, "--dial-timeout", "1s")
	if err := gatewayServes(t, gw.URL); err != nil {
		t.Fatal(err)
	}

	// A session bound before the crash.
	live := dialRaw(t, gw.URL)
	live.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	live.expectResult(t, 1, ldap.LDAPResultSuccess)

	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}

	t.Run("session whose upstream died", func(t *testing.T) {
		live.send(t, searchRequest(t, 2, suffix, "(uid=bob)", "mail"))
		msgs, err := live.drain(15 * time.Second)
		if !properFailure(msgs, 2) {
			t.Fatalf("got %v then %v; want unavailable/busy for message 2 or a notice of disconnection", msgs, err)
		}
	})
	t.Run("new session while the directory is down", func(t *testing.T) {
		c := dialRaw(t, gw.URL)
		c.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
		msgs, err := c.next(15 * time.Second)
		if err != nil || !properFailure([]ldapMessage{msgs}, 1) {
			t.Fatalf("bind while down: %v %v; want unavailable/busy or a notice of disconnection", msgs, err)
		}
	})
	t.Run("ldap-utils while the directory is down", func(t *testing.T) {
		r := runTool(t, "", "ldapwhoami", "-x", "-H", gw.URL, "-D", aliceDN, "-w", slapd.AlicePassword)
		if r.Code != ldap.LDAPResultUnavailable && r.Code != ldap.LDAPResultBusy {
			t.Fatalf("ldapwhoami exit %d, want 52 or 51:\n%s", r.Code, r.Out)
		}
		t.Logf("ldapwhoami while down: exit %d: %s", r.Code, r.Out)
	})
	gw.requireAlive(t)

	if err := s.Restart(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "gateway serves again after slapd returned", func() error {
		return gatewayServes(t, gw.URL)
	})
}

// TestRelayUpstreamDiesMidSearch: slapd killed while a large search is
// streaming; the client gets a proper end, not a silent close.
func TestRelayUpstreamDiesMidSearch(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{Users: 5000})
	gw := startGateway(t, "--upstream", s.URL, "--dial-timeout", "1s")
	c := dialRaw(t, gw.URL)
	c.send(t, bindRequest(1, adminDN, adminPW))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)
	// Read slowly enough that the gateway cannot have the whole result yet:
	// take one entry, kill slapd, then read the rest.
	c.send(t, searchRequest(t, 2, suffix, "(objectClass=*)", "*", "+"))
	if m, err := c.next(10 * time.Second); err != nil || m.Op != ldap.ApplicationSearchResultEntry {
		t.Fatalf("first entry: %v %v", m, err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	msgs, err := c.drain(20 * time.Second)
	if len(msgs) > 0 && msgs[len(msgs)-1].ID == 2 && msgs[len(msgs)-1].ResultCode == ldap.LDAPResultSuccess {
		// slapd finished the search before it died: nothing was lost.
		t.Skipf("the whole result (%d entries) reached the gateway before the kill", len(msgs))
	}
	if !properFailure(msgs, 2) {
		last := msgs
		if len(last) > 3 {
			last = last[len(last)-3:]
		}
		t.Fatalf("after %d messages (last %v) the stream ended with %v; want unavailable/busy or a notice of disconnection", len(msgs), last, err)
	}
	gw.requireAlive(t)
}

// TestRelayUpstreamHangs: slapd stopped (SIGSTOP) while an operation is
// outstanding; after --op-timeout the client is told unavailable, and the
// gateway serves again once slapd continues.
func TestRelayUpstreamHangs(t *testing.T) {
	s := slapd.StartT(t, slapd.Options{})
	gw := startGateway(t, "--upstream", s.URL, "--op-timeout", "1s", "--dial-timeout", "1s")
	c := dialRaw(t, gw.URL)
	c.send(t, bindRequest(1, adminDN, adminPW))
	c.expectResult(t, 1, ldap.LDAPResultSuccess)

	pid := s.PID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGCONT) })
	start := time.Now()
	c.send(t, addRequest(2, "uid=hang,"+people, map[string][]string{
		"objectClass": {"inetOrgPerson"}, "uid": {"hang"}, "cn": {"hang"}, "sn": {"hang"}}))
	msgs, err := c.drain(15 * time.Second)
	if !properFailure(msgs, 2) {
		t.Fatalf("add to a hung directory: %v then %v; want unavailable or a notice of disconnection", msgs, err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("answer took %v with --op-timeout 1s", d)
	}
	gw.requireAlive(t)
	if err := syscall.Kill(pid, syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "gateway serves after slapd continued", func() error {
		return gatewayServes(t, gw.URL)
	})
}

// TestRelayUpstreamFailover: with two upstreams, new sessions go to the
// second while the first is down, and to the first again once it is back.
func TestRelayUpstreamFailover(t *testing.T) {
	first := slapd.StartT(t, slapd.Options{})
	second := slapd.StartT(t, slapd.Options{})
	ctx := context.Background()
	// Tell the two apart by an entry only the second holds.
	if err := second.Load(ctx, "dn: uid=second,"+people+"\nobjectClass: inetOrgPerson\nuid: second\ncn: s\nsn: s\n"); err != nil {
		t.Fatal(err)
	}
	gw := startGateway(t, "--upstream", first.URL, "--upstream", second.URL, "--dial-timeout", "1s")
	servedBy := func() (string, error) {
		c, err := ldap.DialURL(gw.URL)
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetTimeout(10 * time.Second)
		if err := c.Bind(adminDN, adminPW); err != nil {
			return "", err
		}
		res, err := c.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 0, 0, false,
			"(uid=second)", []string{"uid"}, nil))
		if err != nil {
			return "", err
		}
		if len(res.Entries) == 1 {
			return "second", nil
		}
		return "first", nil
	}
	expect := func(want string) func() error {
		return func() error {
			got, err := servedBy()
			if err == nil && got != want {
				return errorString("served by the " + got + " upstream")
			}
			return err
		}
	}
	waitFor(t, 10*time.Second, "served by the first upstream", expect("first"))
	if err := first.Kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "served by the second upstream while the first is down", expect("second"))
	if err := first.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 60*time.Second, "served by the first upstream again", expect("first"))
	gw.requireAlive(t)
}

type errorString string

func (e errorString) Error() string { return string(e) }
