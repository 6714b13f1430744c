package samba

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"strings"
	"testing"
	"time"
	"unicode/utf16"

	"github.com/go-ldap/ldap/v3"
)

// The package's own tests use 127.0.0.3 so that they never wait for the
// end-to-end suite's domain controller on 127.0.0.2 (go test runs
// packages in parallel).
const testAddr = "127.0.0.3"

func unicodePwd(pw string) string {
	units := utf16.Encode([]rune(`"` + pw + `"`))
	b := make([]byte, 2*len(units))
	for i, u := range units {
		binary.LittleEndian.PutUint16(b[2*i:], u)
	}
	return string(b)
}

// TestDomainController proves what the AD dialect's tests rely on: LDAPS
// and StartTLS verified against the server's CA, a simple bind over plain
// LDAP, AD's user life cycle (created disabled, unicodePwd, enabled, binds
// by DN, UPN and DOMAIN\name), and Reset giving a fresh domain.
func TestDomainController(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	s := StartT(t, Options{Addr: testAddr})

	if s.BaseDN != "DC=example,DC=test" || s.URL != "ldap://"+testAddr {
		t.Fatalf("BaseDN %q, URL %q", s.BaseDN, s.URL)
	}
	t.Run("StartTLS verifies the certificate", func(t *testing.T) {
		c, err := ldap.DialURL(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.StartTLS(s.TLSConfig()); err != nil {
			t.Fatalf("StartTLS: %v", err)
		}
		if err := c.Bind(s.AdminUPN, s.AdminPassword); err != nil {
			t.Fatalf("bind by UPN after StartTLS: %v", err)
		}
	})
	t.Run("a foreign CA is refused", func(t *testing.T) {
		_, err := ldap.DialURL(s.LDAPSURL, ldap.DialWithTLSConfig(&tls.Config{ServerName: testAddr}))
		if err == nil {
			t.Fatal("LDAPS handshake succeeded without trusting the server's CA")
		}
	})
	t.Run("simple bind over plain LDAP", func(t *testing.T) {
		c, err := ldap.DialURL(s.URL)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Bind(s.AdminDN, s.AdminPassword); err != nil {
			t.Fatalf("plain simple bind: %v", err)
		}
	})

	admin, err := s.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	userDN := "CN=Tess Tester,CN=Users," + s.BaseDN
	add := ldap.NewAddRequest(userDN, nil)
	add.Attribute("objectClass", []string{"top", "person", "organizationalPerson", "user"})
	add.Attribute("sAMAccountName", []string{"tess"})
	add.Attribute("mail", []string{"tess@example.com"})
	if err := admin.Add(add); err != nil {
		t.Fatalf("add user: %v", err)
	}
	if uac := readAttr(t, admin, userDN, "userAccountControl"); uac != "546" {
		t.Errorf("a new user's userAccountControl is %s, want 546 (disabled, password not required)", uac)
	}
	mod := ldap.NewModifyRequest(userDN, nil)
	mod.Replace("unicodePwd", []string{unicodePwd("Tess-Passw0rd!")})
	mod.Replace("userAccountControl", []string{"512"})
	if err := admin.Modify(mod); err != nil {
		t.Fatalf("set unicodePwd and enable: %v", err)
	}
	for _, who := range []string{userDN, "tess@example.test", `EXAMPLE\tess`} {
		c, err := s.Dial(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Bind(who, "Tess-Passw0rd!"); err != nil {
			t.Errorf("bind as %s: %v", who, err)
		}
		c.Close()
	}
	guid := readAttr(t, admin, userDN, "objectGUID")
	if len(guid) != 16 {
		t.Errorf("objectGUID is %d bytes, want 16", len(guid))
	}
	admin.Close()

	start := time.Now()
	if err := s.Reset(ctx); err != nil {
		t.Fatalf("Reset: %v", err)
	}
	t.Logf("Reset took %v", time.Since(start).Round(10*time.Millisecond))
	admin, err = s.AdminConn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	_, err = admin.Search(ldap.NewSearchRequest(userDN, ldap.ScopeBaseObject, 0, 0, 0, false, "(objectClass=*)", nil, nil))
	if !ldap.IsErrorWithCode(err, ldap.LDAPResultNoSuchObject) {
		t.Errorf("after Reset, reading the user added before gives %v, want noSuchObject", err)
	}
}

// TestSecondInstanceWaits proves the address lock: a second Start on the
// same address waits until the first instance stops, then serves.
func TestSecondInstanceWaits(t *testing.T) {
	if err := Installed(); err != nil {
		t.Skip(err)
	}
	first := StartT(t, Options{Addr: testAddr})
	started := make(chan *Server, 1)
	errc := make(chan error, 1)
	go func() {
		s, err := Start(context.Background(), Options{Addr: testAddr})
		if err != nil {
			errc <- err
			return
		}
		started <- s
	}()
	select {
	case s := <-started:
		s.Stop()
		t.Fatal("a second instance started while the first one held the address")
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(500 * time.Millisecond):
		// Still waiting for the lock, as it should.
	}
	if err := first.Stop(); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-started:
		defer s.Stop()
		c, err := s.AdminConn(context.Background())
		if err != nil {
			t.Fatalf("second instance: %v", err)
		}
		c.Close()
	case err := <-errc:
		t.Fatal(err)
	case <-time.After(60 * time.Second):
		t.Fatal("the second instance did not start after the first stopped")
	}
}

func readAttr(t *testing.T, c *ldap.Conn, dn, attr string) string {
	t.Helper()
	res, err := c.Search(ldap.NewSearchRequest(dn, ldap.ScopeBaseObject, 0, 0, 0, false, "(objectClass=*)", []string{attr}, nil))
	if err != nil {
		t.Fatalf("read %s of %s: %v", attr, dn, err)
	}
	if len(res.Entries) != 1 {
		t.Fatalf("read %s: %d entries", dn, len(res.Entries))
	}
	return strings.Join(res.Entries[0].GetAttributeValues(attr), ",")
}
