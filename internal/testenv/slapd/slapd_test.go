package slapd

import (
	"context"
	"crypto/tls"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"
)

func search(t *testing.T, c *ldap.Conn, base, filter string, attrs ...string) []*ldap.Entry {
	t.Helper()
	res, err := c.Search(ldap.NewSearchRequest(base, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, filter, attrs, nil))
	if err != nil {
		t.Fatalf("search %s %s: %v", base, filter, err)
	}
	return res.Entries
}

func bindAs(t *testing.T, s *Server, dn, pw string) *ldap.Conn {
	t.Helper()
	c, err := s.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.Bind(dn, pw); err != nil {
		t.Fatalf("bind %s: %v", dn, err)
	}
	return c
}

func TestSampleTreeGeneratedUsersAndACLs(t *testing.T) {
	s := StartT(t, Options{Users: 50, Groups: 3})
	admin := bindAs(t, s, s.RootDN, s.RootPW)

	if got := len(search(t, admin, "ou=people,"+s.Suffix, "(objectClass=inetOrgPerson)")); got != 53 {
		t.Fatalf("people: %d entries, want 50 generated + 3 sample", got)
	}
	staff := search(t, admin, s.Suffix, "(cn=staff)", "member")
	if len(staff) != 1 || len(staff[0].GetAttributeValues("member")) != 2 {
		t.Fatalf("staff group: %v", staff)
	}
	g1 := search(t, admin, s.Suffix, "(cn="+GroupCN(1)+")", "member")
	if len(g1) != 1 || len(g1[0].GetAttributeValues("member")) != 17 { // users 1,4,...,49
		t.Fatalf("group00001 members: %v", g1[0].GetAttributeValues("member"))
	}
	alice := bindAs(t, s, "uid=alice,ou=people,"+s.Suffix, AlicePassword)
	if e := search(t, alice, s.Suffix, "(uid=alice)", "memberOf"); e[0].GetAttributeValue("memberOf") != "cn=staff,ou=groups,"+s.Suffix {
		t.Fatalf("alice memberOf: %v", e[0].GetAttributeValues("memberOf"))
	}
	bindAs(t, s, fmt.Sprintf("uid=%s,ou=people,%s", UserUID(42), s.Suffix), UserPassword(42))

	// Directory ACLs see the real user: alice may change her own phone but
	// not bob's, nor her own uid; carol (admins) may change bob's.
	modPhone := func(c *ldap.Conn, uid, phone string) error {
		m := ldap.NewModifyRequest("uid="+uid+",ou=people,"+s.Suffix, nil)
		m.Replace("telephoneNumber", []string{phone})
		return c.Modify(m)
	}
	if err := modPhone(alice, "alice", "+1 555 9999"); err != nil {
		t.Fatalf("alice modifies her own phone: %v", err)
	}
	if err := modPhone(alice, "bob", "+1 555 9999"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("alice modifies bob's phone: %v, want insufficientAccessRights", err)
	}
	m := ldap.NewModifyRequest("uid=alice,ou=people,"+s.Suffix, nil)
	m.Replace("uid", []string{"alice", "alice2"})
	if err := alice.Modify(m); !ldap.IsErrorWithCode(err, ldap.LDAPResultInsufficientAccessRights) {
		t.Fatalf("alice modifies her uid: %v, want insufficientAccessRights", err)
	}
	carol := bindAs(t, s, "uid=carol,ou=people,"+s.Suffix, CarolPassword)
	if err := modPhone(carol, "bob", "+1 555 7777"); err != nil {
		t.Fatalf("carol (admins) modifies bob: %v", err)
	}
	// Anonymous may bind but not read.
	anon, err := s.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer anon.Close()
	// slapd hides the suffix itself from a client that may not read it.
	_, err = anon.Search(ldap.NewSearchRequest(s.Suffix, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases,
		0, 0, false, "(uid=alice)", nil, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Fatalf("anonymous search: %v, want noSuchObject", err)
	}
}

func TestTLSListenerAndStartTLS(t *testing.T) {
	s := StartT(t, Options{TLS: true})
	if s.LDAPSURL == "" || s.CAFile == "" {
		t.Fatalf("TLS server without LDAPS URL or CA: %+v", s)
	}
	c, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(s.PKI.TLSConfig()))
	if err != nil {
		t.Fatalf("ldaps: %v", err)
	}
	defer c.Close()
	if err := c.Bind(s.RootDN, s.RootPW); err != nil {
		t.Fatalf("bind over ldaps: %v", err)
	}
	plain, err := s.Dial(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.StartTLS(s.PKI.TLSConfig()); err != nil {
		t.Fatalf("StartTLS: %v", err)
	}
	if err := plain.Bind(s.RootDN, s.RootPW); err != nil {
		t.Fatalf("bind after StartTLS: %v", err)
	}
	// A client that trusts another CA refuses the certificate.
	bad, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{ServerName: "127.0.0.1"}))
	if err == nil {
		bad.Close()
		t.Fatal("ldaps with the system roots verified the test certificate")
	}
}

func TestMonitorCountsConnectionsAndLoadRunsOverlays(t *testing.T) {
	s := StartT(t, Options{})
	ctx := context.Background()
	// The readiness probe's connection may take a moment to be reaped.
	waitFor(t, 5*time.Second, func() error {
		base, err := s.CurrentConnections(ctx)
		if err != nil {
			return err
		}
		if base != 0 {
			return fmt.Errorf("idle slapd reports %d connections", base)
		}
		return nil
	})
	c := bindAs(t, s, s.RootDN, s.RootPW)
	// The previous count's own connection may still be closing.
	waitFor(t, 5*time.Second, func() error {
		n, err := s.CurrentConnections(ctx)
		if err == nil && n != 1 {
			err = fmt.Errorf("with one open connection: %d", n)
		}
		return err
	})
	c.Close()
	waitFor(t, 5*time.Second, func() error {
		n, err := s.CurrentConnections(ctx)
		if err == nil && n != 0 {
			err = fmt.Errorf("%d connections", n)
		}
		return err
	})

	err := s.Load(ctx, `dn: cn=devs,ou=groups,dc=example,dc=com
objectClass: groupOfNames
cn: devs
member: uid=bob,ou=people,dc=example,dc=com
`)
	if err != nil {
		t.Fatal(err)
	}
	admin := bindAs(t, s, s.RootDN, s.RootPW)
	got := search(t, admin, s.Suffix, "(uid=bob)", "memberOf")[0].GetAttributeValues("memberOf")
	if len(got) != 2 {
		t.Fatalf("bob memberOf after Load %v, want staff and devs (memberof overlay)", got)
	}
}

func TestKillAndRestartKeepPortAndData(t *testing.T) {
	s := StartT(t, Options{TLS: true})
	ctx := context.Background()
	url, ldaps := s.URL, s.LDAPSURL
	if err := s.Load(ctx, "dn: uid=dave,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\nuid: dave\ncn: Dave\nsn: D\n"); err != nil {
		t.Fatal(err)
	}
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	if s.Running() {
		t.Fatal("running after Kill")
	}
	if _, err := s.AdminConn(ctx); err == nil {
		t.Fatal("connected to a killed slapd")
	}
	if err := s.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if s.URL != url || s.LDAPSURL != ldaps {
		t.Fatalf("URLs changed: %s %s -> %s %s", url, ldaps, s.URL, s.LDAPSURL)
	}
	admin := bindAs(t, s, s.RootDN, s.RootPW)
	if len(search(t, admin, s.Suffix, "(uid=dave)")) != 1 {
		t.Fatal("entry added before the crash is gone")
	}
	if err := s.Restart(ctx); err != nil { // graceful stop + start
		t.Fatal(err)
	}
	if err := s.Stop(); err != nil {
		t.Fatal(err)
	}
	if err := s.Restart(ctx); err == nil {
		t.Fatal("restart after Stop succeeded")
	}
}

func TestTenThousandUsersLoadFast(t *testing.T) {
	start := time.Now()
	s := StartT(t, Options{Users: 10000})
	if d := time.Since(start); d > 15*time.Second {
		t.Errorf("10,000 users took %v to start", d)
	}
	c := bindAs(t, s, "uid="+UserUID(9999)+",ou=people,"+s.Suffix, UserPassword(9999))
	if e := search(t, c, s.Suffix, "(uid="+UserUID(1234)+")", "mail"); len(e) != 1 || e[0].GetAttributeValue("mail") != "user01234@example.com" {
		t.Fatalf("user01234: %v", e)
	}
}

func TestBackLDAPProxy(t *testing.T) {
	upstream := StartT(t, Options{})
	proxy := StartT(t, Options{ProxyTo: upstream.URL})
	c := bindAs(t, proxy, "uid=bob,ou=people,dc=example,dc=com", BobPassword)
	e := search(t, c, "dc=example,dc=com", "(uid=alice)", "mail")
	if len(e) != 1 || e[0].GetAttributeValue("mail") != "alice@example.com" {
		t.Fatalf("alice through back-ldap: %v", e)
	}
	if err := c.Bind("uid=bob,ou=people,dc=example,dc=com", "wrong"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
		t.Fatalf("wrong password through back-ldap: %v", err)
	}
}

func TestStartFailureReportsSlapdError(t *testing.T) {
	_, err := Start(context.Background(), Options{ExtraConfig: "bogusdirective x"})
	if err == nil {
		t.Fatal("a bad configuration started")
	}
	t.Log(err)
}

func waitFor(t *testing.T, d time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met after %v: %v", d, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}

func TestEmptyDatabase(t *testing.T) {
	s := StartT(t, Options{Empty: true, Users: 10})
	admin := bindAs(t, s, s.RootDN, s.RootPW)
	_, err := admin.Search(ldap.NewSearchRequest(s.Suffix, ldap.ScopeBaseObject, ldap.NeverDerefAliases,
		0, 0, false, "(objectClass=*)", nil, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Fatalf("search of the suffix in an empty database: %v, want noSuchObject", err)
	}
	if err := s.Load(context.Background(), "dn: dc=example,dc=com\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: e\n"); err != nil {
		t.Fatal(err)
	}
	if len(search(t, admin, s.Suffix, "(objectClass=*)")) != 1 {
		t.Fatal("suffix entry not loaded")
	}
}
