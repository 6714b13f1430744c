package e2e

// Password values deleted by name ("delete: userPassword / userPassword:
// <value>"): the directory no longer takes them, and Axigen's password may
// be one of them. Delivery sends a plaintext value the entry has left, or,
// with none left in clear, withdraws Axigen's password (the account is
// disabled until a password is delivered), as for a removed password: a
// password the directory took back never goes on opening the mailbox.

import (
	"crypto/sha1"
	"encoding/base64"
	"fmt"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/internal/testenv/slapd"
)

// setPasswords makes one modify of bob's userPassword through the gateway
// and waits for its delivery.
func (e *mirrorEnv) bobPasswords(t *testing.T, admin *ldap.Conn, what string, f func(m *ldap.ModifyRequest)) {
	t.Helper()
	m := ldap.NewModifyRequest(userDN("bob"), nil)
	f(m)
	if err := admin.Modify(m); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	e.waitDrained(20*time.Second, false)
}

// axigenPasswordBinds waits until bob's Axigen account is enabled with a
// password the directory binds bob with.
func (e *mirrorEnv) axigenPasswordBinds(t *testing.T, want string) {
	t.Helper()
	waitFor(t, 10*time.Second, "Axigen's password for bob one the directory binds with", func() error {
		a, _ := e.sim.Account(mirrorDomain, "bob")
		if !a.Enabled || a.Password != want {
			return fmt.Errorf("Axigen account bob: enabled %v, password %q, want %q", a.Enabled, a.Password, want)
		}
		c, err := ldap.DialURL(e.dir.URL)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Bind(userDN("bob"), a.Password); err != nil {
			return fmt.Errorf("Axigen's password %q: the directory refuses it: %v", a.Password, err)
		}
		return nil
	})
}

func TestMirrorPasswordValuesDeletedByName(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)

	// Two plaintext passwords; Axigen gets one. The one Axigen has is
	// taken back: Axigen gets the other.
	e.bobPasswords(t, admin, "two passwords", func(m *ldap.ModifyRequest) { m.Replace("userPassword", []string{"p-one", "p-two"}) })
	a, _ := e.sim.Account(mirrorDomain, "bob")
	other := map[string]string{"p-one": "p-two", "p-two": "p-one"}[a.Password]
	if other == "" {
		t.Fatalf("Axigen's password for bob after the replace: %q, want p-one or p-two", a.Password)
	}
	e.bobPasswords(t, admin, "the mirrored one deleted", func(m *ldap.ModifyRequest) { m.Delete("userPassword", []string{a.Password}) })
	e.axigenPasswordBinds(t, other)

	// A password added, then taken back: Axigen ends with the one left.
	e.bobPasswords(t, admin, "temp-pw added", func(m *ldap.ModifyRequest) { m.Add("userPassword", []string{"temp-pw"}) })
	e.bobPasswords(t, admin, "temp-pw taken back", func(m *ldap.ModifyRequest) { m.Delete("userPassword", []string{"temp-pw"}) })
	e.axigenPasswordBinds(t, other)
	e.waitMirrored(10*time.Second, false)
}

// ssha is an {SSHA} hash of pw, as slapd stores one.
func ssha(pw string) string {
	salt := []byte("saltsalt")
	sum := sha1.Sum(append([]byte(pw), salt...))
	return "{SSHA}" + base64.StdEncoding.EncodeToString(append(sum[:], salt...))
}

func TestMirrorPasswordValuesDeletedLeavingNoneInClear(t *testing.T) {
	e := newAttackEnv(t, "", nil)
	e.waitMirrored(20*time.Second, false)
	admin := bindConn(t, e.gw.URL, mirrorAdminDN, e.dir.RootPW)

	// The only password deleted by naming it: as the whole attribute
	// deleted (alice), the account is disabled and its password withdrawn.
	for _, who := range []struct{ uid, pw string }{{"alice", slapd.AlicePassword}, {"bob", slapd.BobPassword}} {
		m := ldap.NewModifyRequest(userDN(who.uid), nil)
		if who.uid == "alice" {
			m.Delete("userPassword", nil)
		} else {
			m.Delete("userPassword", []string{who.pw})
		}
		if err := admin.Modify(m); err != nil {
			t.Fatalf("delete %s's password: %v", who.uid, err)
		}
	}
	e.waitDrained(20*time.Second, false)
	for _, who := range []struct{ uid, pw string }{{"alice", slapd.AlicePassword}, {"bob", slapd.BobPassword}} {
		e.waitAccount(who.uid, "disabled, without the old password", func(a axigensim.AccountState, ok bool) bool {
			return ok && !a.Enabled && a.Password != who.pw
		})
	}

	// carol: a plaintext password (Axigen's) and a hash of another; the
	// plaintext one taken back leaves only the hash, which cannot be sent:
	// Axigen's is withdrawn. A new password through the gateway enables
	// the account again.
	admin2 := func(what string, f func(m *ldap.ModifyRequest)) {
		t.Helper()
		m := ldap.NewModifyRequest(userDN("carol"), nil)
		f(m)
		if err := admin.Modify(m); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		e.waitDrained(20*time.Second, false)
	}
	admin2("a password and a hash", func(m *ldap.ModifyRequest) {
		m.Replace("userPassword", []string{"carol-clear", ssha("carol-hashed")})
	})
	e.waitAccount("carol", "the plaintext password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "carol-clear"
	})
	admin2("the plaintext one taken back", func(m *ldap.ModifyRequest) { m.Delete("userPassword", []string{"carol-clear"}) })
	e.waitAccount("carol", "disabled, without the password taken back", func(a axigensim.AccountState, ok bool) bool {
		return ok && !a.Enabled && a.Password != "carol-clear"
	})
	admin2("a new password", func(m *ldap.ModifyRequest) { m.Replace("userPassword", []string{"carol-new"}) })
	e.waitAccount("carol", "enabled with the new password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Enabled && a.Password == "carol-new"
	})
}
