package e2e

// Two entries that touch one Axigen account name are delivered in journal
// order, though nothing else (key, DN) links them.

import (
	"regexp"
	"testing"
	"time"

	"github.com/ldapgate/ldapgate/integration/axigensim"
	"github.com/ldapgate/ldapgate/schema"
)

// Entry A's account name (uid) changes from ivy to ivy2, then a new entry B
// is added with uid ivy and a password, while A's rename keeps failing in
// Axigen. Delivered before A's rename, B's add would find account ivy (still
// A's) and give it B's state and password, which A's rename then carried
// off to ivy2. B's record must wait for A's: in the end ivy2 is A's, with
// A's password, and ivy is B's, with B's.
func TestMirrorAccountNameReusedWaitsForTheRename(t *testing.T) {
	e := newMirrorEnv(t, mirrorOptions{
		LDIF: []string{"dn: cn=Ivy Irons,ou=people,dc=example,dc=com\nobjectClass: inetOrgPerson\ncn: Ivy Irons\nuid: ivy\nsn: Irons\nmail: ivy@example.com\nuserPassword: ivy-pw\n"},
	})
	ivy := "cn=Ivy Irons," + mirrorAccountBase
	ivan := "cn=Ivan New," + mirrorAccountBase
	e.sim.FailMatching(regexp.MustCompile(`(?i)^SET name\b.*ivy2`), "Cannot save the configuration")
	e.asAdmin("dn: "+ivy+"\nchangetype: modify\nreplace: uid\nuid: ivy2\n", "ldapmodify")
	e.asAdmin("dn: "+ivan+"\nobjectClass: inetOrgPerson\ncn: Ivan New\nuid: ivy\nsn: New\nmail: ivan@example.com\nuserPassword: ivan-pw\n", "ldapadd")
	e.setKnownPassword("ivy", "ivan-pw")
	e.setKnownPassword("ivy2", "ivy-pw")
	// A's rename fails again after B's add was committed (B, ready at
	// once, had its chance to go first), or B was delivered already.
	waitFor(e.t, 30*time.Second, "ivy's rename retried, or Ivan's add delivered", func() error {
		for _, r := range runningRecords(t, e.dataDir, "delivered") {
			if schema.EqualDN(r.DN, ivan) {
				return nil
			}
		}
		for _, r := range runningRecords(t, e.dataDir, "committed") {
			if schema.EqualDN(r.DN, ivy) && r.Attempts >= 2 {
				return nil
			}
		}
		return errNotYet
	})
	e.sim.ClearFaults()
	e.waitAccount("ivy2", "Ivy's, renamed from ivy, with her password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "ivy-pw" && a.Contact["lastName"] == "Irons" && a.Contact["businessEmail"] == "ivy@example.com"
	})
	e.waitAccount("ivy", "Ivan's, with his password", func(a axigensim.AccountState, ok bool) bool {
		return ok && a.Password == "ivan-pw" && a.Contact["lastName"] == "New" && a.Contact["businessEmail"] == "ivan@example.com"
	})
	e.waitDrained(20*time.Second, false)
	for _, name := range []string{"ivy", "ivy2"} {
		if _, ok := e.sim.Account(mirrorDomain, name); !ok {
			t.Errorf("account %s is gone once the journal drained", name)
		}
	}
	e.waitMirrored(10*time.Second, false)
}
