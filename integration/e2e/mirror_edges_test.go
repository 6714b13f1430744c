package e2e

// Less common but ordinary writes are mirrored too.

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
)

// An add that names objectClass by its OID (2.5.4.0) is an account add like
// any other.
func TestMirrorAddNamingObjectClassByOID(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	e.asAdmin("dn: "+userDN("gina")+"\n2.5.4.0: inetOrgPerson\nuid: gina\ncn: Gina\nsn: Gee\nmail: gina@example.com\nuserPassword: gina-pw\n", "ldapadd")
	if e.directoryEntry(userDN("gina")) == nil {
		t.Fatal("slapd does not hold gina")
	}
	e.waitAccount("gina", "created", func(a axigensim.AccountState, ok bool) bool { return ok && a.Password == "gina-pw" })
	e.waitMirrored(10*time.Second, false)
}

// A password the directory generates (ldappasswd without -s) reaches Axigen.
func TestMirrorPasswordGeneratedByTheDirectory(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	r := e.asAdmin("", "ldappasswd", userDN("bob"))
	m := regexp.MustCompile(`New password: (\S+)`).FindStringSubmatch(r.Out)
	if m == nil {
		t.Fatalf("ldappasswd printed no generated password:\n%s", r.Out)
	}
	e.setKnownPassword("bob", m[1])
	e.waitAccount("bob", "the generated password", func(a axigensim.AccountState, ok bool) bool { return ok && a.Password == m[1] })
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}

// Moving an account out of the account subtree (ldapmodrdn -s) removes it
// from Axigen; moving it back creates it again.
func TestMirrorMoveOutOfScopeAndBack(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: ou=former,dc=example,dc=com\nobjectClass: organizationalUnit\nou: former\n"},
	})
	e.asAdmin("", "ldapmodrdn", "-s", "ou=former,dc=example,dc=com", userDN("bob"), "uid=bob")
	e.waitAccount("bob", "removed once out of scope", func(_ axigensim.AccountState, ok bool) bool { return !ok })
	e.asAdmin("", "ldapmodrdn", "-s", mirrorAccountBase, "uid=bob,ou=former,dc=example,dc=com", "uid=bob")
	e.waitAccount("bob", "back in scope", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 0102"
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}

// Deleting an account that a group lists: slapd's referential integrity
// drops it from the group, and Axigen's group must follow.
func TestMirrorDeletedAccountLeavesItsGroups(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	e.asAdmin("", "ldapdelete", userDN("alice"))
	e.waitAccount("alice", "removed", func(_ axigensim.AccountState, ok bool) bool { return !ok })
	if got := e.directoryEntry(groupDN("staff"), "member").GetAttributeValues("member"); len(got) != 1 {
		t.Fatalf("slapd's staff members after deleting alice: %v", got)
	}
	e.waitGroup("staff", "only bob left", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"bob@example.com"})
	})
	e.waitMirrored(10*time.Second, false)
}

// Changing a member's mail through an alias of mail (rfc822Mailbox) reaches
// the groups listing it, as a change through "mail" does.
func TestMirrorMailChangeThroughAliasReachesGroups(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	e.asAdmin("dn: "+userDN("alice")+"\nchangetype: modify\nreplace: rfc822Mailbox\nrfc822Mailbox: alice.l@example.com\n", "ldapmodify")
	e.waitAccount("alice", "new business address", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["businessEmail"] == "alice.l@example.com"
	})
	e.waitGroup("staff", "alice's new address", func(g axigensim.GroupState, ok bool) bool {
		return ok && equalFoldSets(g.Members, []string{"alice.l@example.com", "bob@example.com"})
	})
	e.waitMirrored(10*time.Second, false)
}

// An account whose DN is named by cn is renamed by changing its uid (the
// name attribute) with ldapmodify; only the admin may do it.
func TestMirrorRenameThroughTheNameAttribute(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: cn=Ivy Irons,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: Ivy Irons\nuid: ivy\nsn: Irons\nmail: ivy@example.com\nuserPassword: ivy-pw\n"},
	})
	ivy := "cn=Ivy Irons," + mirrorAccountBase
	change := "dn: " + ivy + "\nchangetype: modify\nreplace: uid\nuid: ivy2\n"
	r := e.tool(change, "ldapmodify", ivy, "ivy-pw")
	if r.Code != 50 || !strings.Contains(r.Out, `"rename account: admin only"`) {
		t.Errorf("ivy renaming herself: ldapmodify exited %d, want 50 naming the rename rule:\n%s", r.Code, r.Out)
	}
	e.asAdmin(change, "ldapmodify")
	e.waitAccount("ivy2", "renamed from ivy", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "ivy-pw" && a.Contact["businessEmail"] == "ivy@example.com"
	})
	if _, ok := e.sim.Account(mirrorDomain, "ivy"); ok {
		t.Error("account ivy still exists after the rename to ivy2")
	}
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
}
