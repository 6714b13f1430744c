package e2e

// Less common but ordinary writes are mirrored too.

import (
	"context"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-ldap/ldap/v3"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/store"
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

// The gateway reuses what it read of an entry for the next writes to it
// (a burst of modifies costs the directory one read). An entry deleted and
// added again through the gateway is a new entry with a new key: the next
// write's record carries the new key and reaches the new account.
func TestMirrorEntryReaddedUnderTheSameDN(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	phone := func(v string) string {
		return "dn: " + userDN("bob") + "\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: " + v + "\n"
	}
	e.asAdmin(phone("+1 555 7001"), "ldapmodify")
	e.asAdmin(phone("+1 555 7002"), "ldapmodify")
	oldKey := e.directoryEntry(userDN("bob"), "entryUUID").GetAttributeValue("entryUUID")
	e.asAdmin("", "ldapdelete", userDN("bob"))
	e.asAdmin("dn: "+userDN("bob")+"\nobjectClass: inetOrgPerson\nuid: bob\ncn: Bob\nsn: Again\nmail: bob@example.com\nuserPassword: bob-pw2\n", "ldapadd")
	e.asAdmin(phone("+1 555 7003"), "ldapmodify")
	newKey := e.directoryEntry(userDN("bob"), "entryUUID").GetAttributeValue("entryUUID")
	if newKey == "" || newKey == oldKey {
		t.Fatalf("entryUUID before %q, after the re-add %q: want a new one", oldKey, newKey)
	}
	e.waitAccount("bob", "the re-added entry's phone", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7003" && a.Contact["lastName"] == "Again"
	})
	e.waitMirrored(10*time.Second, false)
	e.waitDrained(10*time.Second, false)
	recs := recordsAbout(runningRecords(t, e.dataDir, "delivered"), userDN("bob"))
	if len(recs) == 0 {
		t.Fatal("no delivered record about bob")
	}
	last := recs[len(recs)-1]
	if last.EntryKey != newKey {
		t.Fatalf("the last write's record has entry key %q, want the re-added entry's %q", last.EntryKey, newKey)
	}
}

// An entry replaced behind the gateway's back (deleted and added again
// straight at the directory) right after a write through the gateway: the
// next write may still carry the old entry's key, and delivery, finding no
// entry by that key but one at the DN, mirrors the entry that is there
// instead of removing its account.
func TestMirrorEntryReplacedBehindTheGateway(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	phone := func(v string) string {
		return "dn: " + userDN("bob") + "\nchangetype: modify\nreplace: telephoneNumber\ntelephoneNumber: " + v + "\n"
	}
	e.asAdmin(phone("+1 555 7101"), "ldapmodify")
	e.waitAccount("bob", "the first phone", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7101"
	})
	direct, err := ldap.DialURL(e.dir.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer direct.Close()
	if err := direct.Bind(e.dir.RootDN, e.dir.RootPW); err != nil {
		t.Fatal(err)
	}
	if err := direct.Del(ldap.NewDelRequest(userDN("bob"), nil)); err != nil {
		t.Fatal(err)
	}
	add := ldap.NewAddRequest(userDN("bob"), nil)
	add.Attribute("objectClass", []string{"inetOrgPerson"})
	add.Attribute("uid", []string{"bob"})
	add.Attribute("cn", []string{"Bob"})
	add.Attribute("sn", []string{"Replaced"})
	add.Attribute("mail", []string{"bob@example.com"})
	if err := direct.Add(add); err != nil {
		t.Fatal(err)
	}
	e.asAdmin(phone("+1 555 7102"), "ldapmodify")
	e.waitAccount("bob", "the replacing entry's state", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["phone"] == "+1 555 7102" && a.Contact["lastName"] == "Replaced"
	})
	// (Its groups lost bob straight at the directory too: that is not the
	// gateway's to see, so Axigen's groups are not compared here.)
}

// A record still waiting for Axigen whose entry is deleted and whose DN is
// taken by a different person (CN reuse) is not delivered to the newcomer:
// the gone entry's account is removed, the newcomer gets an account of its
// own name, and the gone entry's new password reaches neither.
func TestMirrorDNTakenByAnotherEntryWhileQueued(t *testing.T) {
	const dn = "cn=Carl Jones," + mirrorAccountBase
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: " + dn + "\nobjectClass: inetOrgPerson\ncn: Carl Jones\nuid: carl1\nsn: Jones\nmail: carl1@example.com\nuserPassword: carl1-pw\n"},
	})
	e.waitAccount("carl1", "seeded", func(_ axigensim.AccountState, ok bool) bool { return ok })
	if err := e.sim.SetDown(true); err != nil {
		t.Fatal(err)
	}
	e.asAdmin("", "ldappasswd", "-s", "carl1-new-pw", dn)
	e.asAdmin("", "ldapdelete", dn)
	// No password of its own: nothing later in the queue sets one.
	e.asAdmin("dn: "+dn+"\nobjectClass: inetOrgPerson\ncn: Carl Jones\nuid: carl2\nsn: Jones-Two\nmail: carl2@example.com\n", "ldapadd")
	if err := e.sim.SetDown(false); err != nil {
		t.Fatal(err)
	}
	e.waitDrained(30*time.Second, false)
	if a, ok := e.sim.Account(mirrorDomain, "carl1"); ok {
		t.Errorf("the deleted entry's account carl1 is still there: %+v", a)
	}
	e.waitAccount("carl2", "the newcomer's own account", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Contact["lastName"] == "Jones-Two"
	})
	if a, _ := e.sim.Account(mirrorDomain, "carl2"); a.Password == "carl1-new-pw" || a.Password == "carl1-pw" {
		t.Errorf("the newcomer carl2 got the gone entry's password %q", a.Password)
	}
	e.waitMirrored(10*time.Second, false)
}

// Issue 16, item 9: a value Axigen cannot take, written straight into
// slapd behind the gateway's back (a displayName of 300 characters), does
// not hold up the admin's password reset through the gateway: Axigen gets
// the new password, keeps its own nickName, and the reset's record is
// delivered with what was left out, which `ldapgate journal` shows.
func TestMirrorPasswordResetPassesAValueAxigenCannotTake(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{})
	before, _ := e.sim.Account(mirrorDomain, "alice")
	c, err := e.dir.AdminConn(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	behind := ldap.NewModifyRequest(userDN("alice"), nil)
	behind.Replace("displayName", []string{strings.Repeat("A", 300)})
	err = c.Modify(behind)
	c.Close()
	if err != nil {
		t.Fatalf("write the long displayName straight into slapd: %v", err)
	}

	e.asAdmin("", "ldappasswd", "-s", "alice-new-pw", userDN("alice"))
	e.setKnownPassword("alice", "alice-new-pw")
	e.waitAccount("alice", "the reset password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "alice-new-pw"
	})
	if got, _ := e.sim.Account(mirrorDomain, "alice"); got.Contact["nickName"] != before.Contact["nickName"] {
		t.Errorf("Axigen's nickName of alice %q, want its own %q kept", got.Contact["nickName"], before.Contact["nickName"])
	}
	e.waitDrained(20*time.Second, false)
	e.stop()

	recs := recordsAbout(e.journalRecords(), userDN("alice"))
	if len(recs) != 1 || recs[0].State != store.StateDelivered || recs[0].Op != store.OpPassword ||
		!strings.Contains(recs[0].LastError, "not sent: attribute displayName (Axigen nickName)") {
		t.Fatalf("alice's records: %+v; want the reset, delivered, naming the displayName left out", recs)
	}
	seq := strconv.FormatUint(recs[0].Seq, 10)
	// show takes its flags before the record's number: the env's journal
	// helper puts --data-dir last.
	show := exec.Command(gatewayBin, "journal", "show", "--data-dir", e.dataDir, seq)
	show.Env = withoutLDAPGateEnv(os.Environ())
	out, err := show.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "delivered") || !strings.Contains(string(out), "longer than the limit of 255") {
		t.Errorf("`ldapgate journal show %s`: %v; it does not say what was left out:\n%s", seq, err, out)
	}
	if out := e.journal("ls").Out; !strings.Contains(out, "delivered; not sent: attribute displayName") {
		t.Errorf("`ldapgate journal ls` does not say what was left out:\n%s", out)
	}
}
