package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// lockoutPolicy makes slapd lock an account after two failed binds
// (the ppolicy overlay), as a directory in front of a mail server would.
var lockoutPolicy = slapd.Options{
	ExtraConfig: "moduleload ppolicy\noverlay ppolicy\nppolicy_default \"cn=default,ou=policies," + suffix + "\"\nppolicy_use_lockout\n",
	LDIF: []string{
		"dn: ou=policies," + suffix + "\nobjectClass: organizationalUnit\nou: policies",
		"dn: cn=default,ou=policies," + suffix + "\nobjectClass: pwdPolicy\nobjectClass: device\ncn: default\n" +
			"pwdAttribute: userPassword\npwdLockout: TRUE\npwdMaxFailure: 2",
	},
}

// axigenLogin does what Axigen's LDAP authentication does for a login of
// address: the service identity searches (mail=<address>) under people,
// then a new connection binds as the DN found with the password given.
// It returns the bind's result code, or -1 when no entry was found.
func axigenLogin(t *testing.T, url, address, password string) (int, error) {
	t.Helper()
	svc, err := ldap.DialURL(url)
	if err != nil {
		return 0, err
	}
	defer svc.Close()
	svc.SetTimeout(10 * time.Second)
	if err := svc.Bind(adminDN, adminPW); err != nil {
		return 0, fmt.Errorf("service bind: %w", err)
	}
	res, err := svc.Search(ldap.NewSearchRequest(people, ldap.ScopeWholeSubtree, ldap.NeverDerefAliases, 2, 10, false,
		"(mail="+ldap.EscapeFilter(address)+")", []string{"1.1"}, nil))
	if err != nil {
		return 0, fmt.Errorf("search for %s: %w", address, err)
	}
	if len(res.Entries) != 1 {
		return -1, nil
	}
	// A raw bind: go-ldap refuses an empty password itself, and the point
	// is what the directory says to one.
	c := dialRaw(t, url)
	c.send(t, bindRequest(1, res.Entries[0].DN, password))
	m, err := c.next(10 * time.Second)
	if err != nil {
		return 0, fmt.Errorf("bind: %w", err)
	}
	if m.ResultCode == ldap.LDAPResultSuccess {
		// The session is bound as the user: it reads its own entry.
		c.send(t, searchRequest(t, 2, res.Entries[0].DN, "(objectClass=*)", "mail"))
		msgs := c.expectResult(t, 2, 0)
		if len(msgs) != 2 {
			return 0, fmt.Errorf("bound as %s, own entry not readable: %v", res.Entries[0].DN, msgs)
		}
	}
	return int(m.ResultCode), nil
}

// Search-then-bind through the gateway gives the same answers as slapd,
// and an empty password never logs anyone in.
func TestSyncreplAxigenSearchThenBind(t *testing.T) {
	s := slapd.StartT(t, lockoutPolicy)
	g := startGateway(t, "--upstream", s.URL)

	// bob is locked out directly on slapd by two wrong passwords.
	for range 2 {
		c, err := s.Dial(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Bind(bobDN, "wrong"); !ldap.IsErrorWithCode(err, ldap.LDAPResultInvalidCredentials) {
			t.Fatalf("wrong password for bob: %v", err)
		}
		c.Close()
	}

	cases := []struct {
		name, address, password string
		want                    int
	}{
		{"right password", "alice@example.com", slapd.AlicePassword, ldap.LDAPResultSuccess},
		{"wrong password", "alice@example.com", "not-alice-pw", ldap.LDAPResultInvalidCredentials},
		{"unknown user", "nobody@example.com", "whatever", -1},
		{"empty password", "alice@example.com", "", ldap.LDAPResultUnwillingToPerform},
		{"locked account", "bob@example.com", slapd.BobPassword, ldap.LDAPResultInvalidCredentials},
		{"other user", "carol@example.com", slapd.CarolPassword, ldap.LDAPResultSuccess},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			direct, err := axigenLogin(t, s.URL, tc.address, tc.password)
			if err != nil {
				t.Fatalf("direct: %v", err)
			}
			via, err := axigenLogin(t, g.URL, tc.address, tc.password)
			if err != nil {
				t.Fatalf("through the gateway: %v", err)
			}
			if via != direct || via != tc.want {
				t.Errorf("result %d through the gateway, %d direct, want %d", via, direct, tc.want)
			}
		})
	}

	// After a refused empty-password bind the session is anonymous: it
	// sees nothing of the people (the ACLs give anonymous nothing).
	c := dialRaw(t, g.URL)
	c.send(t, bindRequest(1, aliceDN, ""))
	if m, err := c.next(10 * time.Second); err != nil || m.ResultCode == 0 {
		t.Fatalf("empty-password bind: %v %v", m, err)
	}
	c.send(t, searchRequest(t, 2, people, "(uid=alice)", "mail"))
	for {
		m, err := c.next(10 * time.Second)
		if err != nil {
			t.Fatalf("anonymous search: %v", err)
		}
		if m.Op == ldap.ApplicationSearchResultEntry {
			t.Errorf("an anonymous session after the refused bind read alice's entry")
		}
		if m.ID == 2 && m.ResultCode >= 0 {
			// slapd hides what anonymous may not see: noSuchObject or nothing.
			if m.ResultCode != ldap.LDAPResultSuccess && m.ResultCode != ldap.LDAPResultNoSuchObject {
				t.Errorf("anonymous search: %v", m)
			}
			break
		}
	}

	// With the upstream gone, logins fail with unavailable, never succeed.
	if err := s.Kill(); err != nil {
		t.Fatal(err)
	}
	raw := dialRaw(t, g.URL)
	raw.send(t, bindRequest(1, aliceDN, slapd.AlicePassword))
	m, err := raw.next(15 * time.Second)
	if err != nil || m.ID != 1 || m.ResultCode != ldap.LDAPResultUnavailable {
		t.Errorf("bind with the upstream down: %v %v, want result 52", m, err)
	}
	if _, err := axigenLogin(t, g.URL, "alice@example.com", slapd.AlicePassword); err == nil {
		t.Errorf("a login succeeded with the upstream down")
	}
	g.requireAlive(t)
}
